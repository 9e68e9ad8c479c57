"""Recommenders written from standard layers, outside the compatibility suite: GRU + target
attention (EdgeRec-style), stacked LSTM, a behaviour-sequence transformer (BST), multi-head
attention with a key padding mask, Conv2d + adaptive pooling over field embeddings (CCPM-like),
weighted EmbeddingBag, GroupNorm + PReLU. Each compiles with no wrapper and matches the source
model on held-out rows through the numpy runtime; two also through LiteRT and ExecuTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import Dataset
from edgecompress.export.artifacts import available_formats

B, L, V, D = 1600, 6, 100, 16


class GRUAtt(nn.Module):   # EdgeRec-style: GRU over behaviour + target attention
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D,padding_idx=0); s.gru=nn.GRU(D,D,batch_first=True); s.att=nn.Linear(2*D,1); s.out=nn.Linear(2*D,1)
    def forward(s, hist, target):
        h,_=s.gru(s.e(hist)); t=s.e(target).unsqueeze(1).expand(-1,h.shape[1],-1)
        w=torch.softmax(s.att(torch.cat([h,t],-1)).squeeze(-1).masked_fill(hist==0,-1e9),1)
        return s.out(torch.cat([(h*w.unsqueeze(-1)).sum(1), s.e(target)],-1)).squeeze(-1)
class LSTMRec(nn.Module):
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.rnn=nn.LSTM(D,D,num_layers=2,batch_first=True); s.out=nn.Linear(D,1)
    def forward(s, hist, target):
        o,(h,c)=s.rnn(s.e(hist)); return (s.out(h[-1])*1.0).squeeze(-1) + (o[:,-1]*s.e(target)).sum(-1)
class BST(nn.Module):     # behaviour sequence transformer
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.pos=nn.Parameter(torch.randn(L+1,D)*0.1)
        s.enc=nn.TransformerEncoderLayer(D,2,32,dropout=0.0,batch_first=True); s.out=nn.Sequential(nn.Linear((L+1)*D,32),nn.LeakyReLU(),nn.Linear(32,1))
    def forward(s, hist, target):
        x=torch.cat([s.e(hist), s.e(target).unsqueeze(1)],1)+s.pos
        return s.out(s.enc(x).flatten(1)).squeeze(-1)
class MHA(nn.Module):
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.mha=nn.MultiheadAttention(D,4,batch_first=True); s.ln=nn.LayerNorm(D); s.out=nn.Linear(D,1)
    def forward(s, hist, target):
        q=s.e(target).unsqueeze(1); kv=s.e(hist); a,_=s.mha(q,kv,kv,key_padding_mask=(hist==0))
        return s.out(s.ln(a.squeeze(1)+q.squeeze(1))).squeeze(-1)
class ConvTower(nn.Module):   # CCPM-like conv2d over field embeddings + GELU/SiLU/ELU/Hardswish
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.c=nn.Conv2d(1,4,(3,1),padding=(1,0)); s.p=nn.AdaptiveAvgPool2d((3,D)); s.out=nn.Sequential(nn.Linear(4*3*D,16),nn.GELU(),nn.Linear(16,8),nn.SiLU(),nn.Linear(8,8),nn.ELU(),nn.Hardswish(),nn.Linear(8,1))
    def forward(s, hist, target):
        x=torch.cat([s.e(hist), s.e(target).unsqueeze(1)],1).unsqueeze(1)
        return s.out(s.p(torch.tanh(s.c(x))).flatten(1)).squeeze(-1)
class WeightedBag(nn.Module):
    def __init__(s):
        super().__init__(); s.bag=nn.EmbeddingBag(V,D,mode="sum"); s.w=nn.Embedding(V,1); s.out=nn.Linear(D,1)
    def forward(s, hist, target):
        return s.out(s.bag(hist, per_sample_weights=torch.sigmoid(s.w(hist).squeeze(-1)))).squeeze(-1)+s.w(target).squeeze(-1)
class GroupNormPRelu(nn.Module):
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.l=nn.Linear(D,16); s.gn=nn.GroupNorm(4,16); s.a=nn.PReLU(); s.out=nn.Linear(16,1)
    def forward(s, hist, target):
        x=s.e(hist).mean(1)*s.e(target)
        return s.out(s.a(s.gn(s.l(x)))).squeeze(-1)


def _data():
    rng = np.random.default_rng(0)
    hist = rng.integers(1, V, (B, L))
    hist[rng.random((B, L)) < 0.3] = 0
    hist[:, 0] = np.maximum(hist[:, 0], 1)
    inputs = {"hist": hist, "target": rng.integers(1, V, B)}
    return Dataset("seq", "ctr", inputs, (rng.random(B) < 0.5).astype(np.float32))


MODELS = [GRUAtt, LSTMRec, BST, MHA, ConvTower, WeightedBag, GroupNormPRelu]


@pytest.mark.parametrize("cls", MODELS, ids=[c.__name__ for c in MODELS])
def test_compiles_and_matches_on_held_out_rows(cls, tmp_path):
    data = _data()
    compile_rows, held = data.take(np.arange(600)), data.take(np.arange(600, B))
    torch.manual_seed(0)
    model = cls().eval()
    res = ec.compile(model, target="local", data=compile_rows, output=tmp_path / "m.ecb", plan=[], progress=False)
    with torch.no_grad():
        want = model(**{k: torch.as_tensor(v) for k, v in held.inputs.items()}).numpy()
    got = ecr.load(res.path).predict(held.inputs)
    assert got.shape == want.shape == (1000,)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [MHA, GRUAtt], ids=["MHA", "GRUAtt"])
def test_app_formats_run_sequence_models(cls, tmp_path):
    have = [f for f, why in available_formats().items() if why is None]
    if len(have) < 2:
        pytest.skip(f"app toolchains not installed: {available_formats()}")
    data = _data()
    torch.manual_seed(0)
    model = cls().eval()
    res = ec.compile(model, target="local", data=data.take(np.arange(600)), output=tmp_path / "m.ecb", plan=[],
                     progress=False, formats=["executorch", "litert"])
    held = {k: v[600:1624] for k, v in data.inputs.items()}
    with torch.no_grad():
        want = model(**{k: torch.as_tensor(v) for k, v in held.items()}).numpy()
    for backend in ("litert", "executorch"):
        got = ecr.load(res.path, backend=backend).predict(held)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=backend)


def test_conv_weights_int8_per_channel(tmp_path):
    from edgecompress.passes import ConvInt8Weights, EmbeddingRowwiseQuant, LinearInt8Weights
    data = _data()
    torch.manual_seed(0)
    model = ConvTower().eval()
    plan = [EmbeddingRowwiseQuant(bits=8), LinearInt8Weights(), ConvInt8Weights()]
    res = ec.compile(model, target="local", data=data.take(np.arange(600)), output=tmp_path / "q.ecb", plan=plan,
                     progress=False)
    m = ecr.load(res.path)
    conv = m.manifest["params"]["c.weight"]
    assert conv["role"] == "conv" and conv["kind"] == "channel_int8" and conv["shape"] == [4, 1, 3, 1]
    w = model.c.weight.detach().numpy()
    got = m._backend.params["c.weight"].dense()
    assert got.shape == w.shape and np.abs(got - w).max() <= np.abs(w).max() / 127 / 2 + 1e-7   # half a step
    held = {k: v[600:1600] for k, v in data.inputs.items()}
    with torch.no_grad():
        want = model(**{k: torch.as_tensor(v) for k, v in held.items()}).numpy()
    assert np.abs(m.predict(held) - want).max() < 0.05
    assert res.parity["ok"]
