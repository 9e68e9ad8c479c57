"""Models as libraries write them: one dict of tensors in, several heads out (some
already through a sigmoid), casts and in-place ops in forward, BatchNorm after Linear."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import Dataset
from edgecompress.graph import lower
from edgecompress.graph.torch_exec import ProgramModule
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights


class TwoHeads(nn.Module):
    """forward(self, x: dict) -> {"ctr": probability, "cvr": logit}, as MMOE-style libraries do."""

    def __init__(self):
        super().__init__()
        self.emb = nn.ModuleDict({"user": nn.Embedding(50, 8), "item": nn.Embedding(40, 8)})
        self.mlp = nn.Sequential(nn.Linear(17, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True))
        self.heads = nn.Linear(16, 2)

    def forward(self, x):
        h = torch.cat([self.emb["user"](x["user"].long()), self.emb["item"](x["item"]), x["age"].float()], 1)
        out = self.heads(self.mlp(h))
        logit = out[:, 1].clone()
        logit += 0.5                                  # in place, as library code does
        return {"ctr": torch.sigmoid(out[:, 0]), "cvr": logit}


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {"user": rng.integers(0, 50, n), "item": rng.integers(0, 40, n),
              "age": rng.normal(size=(n, 1)).astype(np.float32)}
    z = (inputs["user"] % 7 - 3) * 0.4 + inputs["age"][:, 0]
    label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return Dataset("two_heads", "ctr", inputs, label)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TwoHeads()
    bn = m.mlp[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    return m.eval()


def test_dict_input_heads_and_forms_are_lowered(model):
    data = _data(64)
    prog = lower(model, {k: v[:8] for k, v in data.inputs.items()})
    assert prog.input_names == ["user", "item", "age"]
    assert [(o["name"], o["form"]) for o in prog.outputs] == [("ctr", "probability"), ("cvr", "logit")]
    ops = [n["op"] for n in prog.graph["nodes"]]
    assert "_native_batch_norm_legit_no_training.default" not in ops      # folded into the Linear
    assert ops.count("linear") == 2
    x = {k: torch.as_tensor(v) for k, v in data.inputs.items()}
    with torch.no_grad():
        want = model(x)
        got = ProgramModule(prog)(*[x[k] for k in prog.input_names])
    for (name, w), g in zip(want.items(), got):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=1e-5)


def test_compile_dict_model_predict_returns_named_heads(model, tmp_path):
    data = _data()
    held = data.take(np.arange(1000, 3000))
    res = ec.compile(model, target="local", data=held, output=tmp_path / "fp32.ecb", plan=[], progress=False)
    m = ecr.load(res.path)
    assert [o["name"] for o in m.outputs] == ["ctr", "cvr"]
    batch = {k: v[:1000] for k, v in held.inputs.items()}
    got = m.predict(batch)
    with torch.no_grad():
        want = model({k: torch.as_tensor(v) for k, v in batch.items()})
    assert set(got) == {"ctr", "cvr"}
    for k in got:
        assert got[k].shape == (1000,)
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)
    # the sigmoid head is read as a probability: logloss is of the probabilities themselves
    p = np.clip(want["ctr"].numpy().astype(np.float64), 1e-7, 1 - 1e-7)
    y = held.label[:1000]
    full = ec.compile(model, target="local", data=held.take(np.arange(1000)), output=tmp_path / "b.ecb",
                      plan=[], progress=False)
    assert full.metrics_before["logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
                                                            rel=1e-4)
    proba = ecr.load(full.path).predict_proba(batch)
    np.testing.assert_allclose(proba["ctr"], got["ctr"], atol=1e-6)              # already a probability
    np.testing.assert_allclose(proba["cvr"], 1 / (1 + np.exp(-got["cvr"])), atol=1e-6)


def test_metric_output_selects_the_head(model, tmp_path):
    held = _data().take(np.arange(2000))
    a = ec.compile(model, target="local", data=held, output=tmp_path / "a.ecb", plan=[], progress=False)
    b = ec.compile(model, target="local", data=held, output=tmp_path / "b.ecb", plan=[], progress=False,
                   metric_output="cvr")
    assert a.metrics_before["auc"] != b.metrics_before["auc"]
    assert ecr.load(b.path).manifest["model"]["metric_output"] == 1
    with pytest.raises(ec.DataError, match="metric_output 'nope'"):
        ec.compile(model, target="local", data=held, output=tmp_path / "c.ecb", plan=[], progress=False,
                   metric_output="nope")
    assert not (tmp_path / "c.ecb").exists()


def test_quantized_plan_on_dict_model(model, tmp_path):
    held = _data().take(np.arange(2000))
    res = ec.compile(model, target="local", data=held, output=tmp_path / "q.ecb",
                     plan=[EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()], progress=False)
    assert res.parity["ok"]
    assert abs(res.metrics_after["auc"] - res.metrics_before["auc"]) < 0.01
    # vs the source model (not the compressed program) on 1,000 rows, every head: what int8 costs
    vs = res.vs_source["numpy"]
    with torch.no_grad():
        want = model({k: torch.as_tensor(v[:1000]) for k, v in held.inputs.items()})
    got = ecr.load(res.path).predict({k: v[:1000] for k, v in held.inputs.items()})
    true_max = max(float(np.abs(got[k] - want[k].numpy()).max()) for k in got)
    assert vs["rows"] == 1000 and vs["max_abs_diff"] == pytest.approx(true_max, rel=1e-5)
    assert 1e-5 < vs["max_abs_diff"] < 0.05 and res.parity["max_abs_diff"] < vs["max_abs_diff"]
    assert ecr.load(res.path).manifest["metrics"]["host"]["vs_source"] == res.vs_source


class MaskedHistory(nn.Module):
    """A masked mean over a padded history (pad id 0, nn.Embedding(padding_idx=0)), as DIN-style models pool."""

    def __init__(self):
        super().__init__()
        self.items = nn.Embedding(60, 8, padding_idx=0)
        self.out = nn.Linear(8, 1)

    def forward(self, hist):
        e = self.items(hist)                                         # [B, L, 8]; row 0 is zero by contract
        count = (hist != 0).float().sum(1, keepdim=True)
        pooled = e.sum(1) / (count + 1e-8)                           # empty history: 0 / 1e-8
        return self.out(pooled).squeeze(-1)


def test_padding_rows_stay_exactly_zero_through_every_pass(tmp_path):
    from edgecompress.passes import Distill, EmbeddingRowPrune
    torch.manual_seed(0)
    model = MaskedHistory().eval()
    rng = np.random.default_rng(0)
    hist = rng.integers(1, 60, (3000, 5))
    hist[rng.random((3000, 5)) < 0.5] = 0
    hist[:200] = 0                                                   # empty histories
    data = Dataset("hist", "ctr", {"hist": hist}, (rng.random(3000) < 0.4).astype(np.float32))
    train, held = data.take(np.arange(2000)), data.take(np.arange(2000, 3000))
    prog = lower(model, {"hist": hist[:8]})
    assert prog.padding_rows == {"items.weight": [0]}
    res = ec.compile(model, target="local", data=held, train_data=train, output=tmp_path / "p.ecb",
                     plan=[Distill(epochs=1.0, lr=1e-2), EmbeddingRowPrune(keep_ratio=0.3),
                           EmbeddingRowwiseQuant(bits=8)], progress=False)
    m = ecr.load(res.path)
    row = m._backend.params["items.weight"].gather(np.array([0]))
    assert np.all(row == 0.0)
    # an empty history pools to exactly 0, so the score is the (distilled) output bias, not a 0/1e-8 blow-up
    empty = {"hist": np.zeros((4, 5), dtype=np.int64)}
    bias = float(m._backend.params["out.bias"].dense()[0])
    np.testing.assert_array_equal(m.predict(empty), np.full(4, bias, dtype=np.float32))


def test_cli_lists_every_unsupported_op_exits_2_and_writes_nothing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    from edgecompress.data import save_npz
    rng = np.random.default_rng(0)
    save_npz(Dataset("d", "ctr", {"ids": rng.integers(0, 10, (50, 3))}, rng.integers(0, 2, 50)), tmp_path / "d.npz")
    (tmp_path / "mymodel.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.emb = nn.Embedding(10, 4)\n"
        "    def forward(self, ids):\n"
        "        h = torch.special.bessel_j0(self.emb(ids)) + torch.special.bessel_j0(self.emb(ids) * 2)\n"
        "        return torch.digamma(h.abs() + 1).sum((1, 2))\n")
    exe = Path(sys.executable).with_name("edgecompress")
    r = subprocess.run([str(exe), "compile", "--model", "mymodel:M", "--data", "d.npz", "--target", "local",
                        "-o", "m.ecb", "--fp32", "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "aten.special_bessel_j0.default x2 (your code)" in r.stderr and "aten.digamma.default x1" in r.stderr
    assert "mymodel.py" in r.stderr
    assert not (tmp_path / "m.ecb").exists()


class IndexSelectTable(nn.Module):
    """A table held as a bare Parameter and read with index_select (no nn.Embedding)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(30, 4))
        self.out = nn.Linear(4, 1)

    def forward(self, ids):
        return self.out(torch.index_select(self.table, 0, ids)).squeeze(-1)


def test_index_select_reads_a_table():
    prog = lower(IndexSelectTable().eval(), {"ids": np.arange(8)})
    assert [n["op"] for n in prog.graph["nodes"]] == ["embedding", "linear", "squeeze"]
    assert prog.roles["table"] == "embedding" and prog.index_sources["table"] == ("ids", None)


def test_data_as_a_path_and_an_untrained_model_is_flagged(tmp_path):
    from edgecompress.data import save_npz
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 30, 20_000)
    save_npz(Dataset("d", "ctr", {"ids": ids}, (ids % 2).astype(np.float32)), tmp_path / "d.npz")
    save_npz(Dataset("r", "ctr", {"ids": ids}, (rng.random(20_000) < 0.5).astype(np.float32)), tmp_path / "r.npz")
    torch.manual_seed(0)
    model = IndexSelectTable().eval()
    # labels the model cannot know (coin flips): it scores at chance and compile says so
    res = ec.compile(model, target="local", data=str(tmp_path / "r.npz"), output=tmp_path / "u.ecb", plan=[],
                     progress=False)
    assert abs(res.metrics_before["auc"] - 0.5) < 0.02
    assert any("looks untrained" in w for w in res.warnings)
    with torch.no_grad():                                # the model made to know labels = ids % 2: no warning
        model.table.zero_()
        model.table[1::2, 0] = 3.0
        model.out.weight.fill_(1.0)
    res = ec.compile(model, target="local", data=tmp_path / "d.npz", output=tmp_path / "t.ecb", plan=[],
                     progress=False)
    assert res.metrics_before["auc"] > 0.99 and not any("untrained" in w for w in res.warnings)


def test_data_roles_search_on_validation_report_on_test_train_only_on_train(model, tmp_path):
    from edgecompress.passes import Distill
    data = _data(4000, seed=3)
    res = ec.compile(model, target="raspberry-pi-4", data=data, output=tmp_path / "s.ecb", progress=False)
    # one held-out set: half chooses the plan, the other half reports, stratified by label
    assert res.metrics_before["n"] == res.metrics_after["n"] and abs(res.metrics_before["n"] - 2000) <= 1
    assert any("validation rows" in w for w in res.warnings)
    assert res.data_roles["train"] == "none" and "half" in res.data_roles["validation"]
    assert not any(c.NAME == "distill" for c in res.plan)                 # nothing trains on held-out rows
    assert ecr.load(res.path).manifest["metrics"]["host"]["data_roles"] == res.data_roles
    # explicit roles: every figure on the test rows given
    valid, test = data.take(np.arange(1000)), data.take(np.arange(1000, 2500))
    res = ec.compile(model, target="raspberry-pi-4", data=data, valid_data=valid, test_data=test,
                     output=tmp_path / "e.ecb", progress=False)
    assert res.metrics_after["n"] == 1500 and res.data_roles["test"] == "test_data"
    # a plan that trains, without train_data: skipped with a note, not run on held-out rows
    res = ec.compile(model, target="local", data=test, output=tmp_path / "d.ecb", progress=False,
                     plan=[Distill(epochs=1.0), EmbeddingRowwiseQuant(bits=8)])
    assert [c.NAME for c in res.plan] == ["embedding_rowwise_quant"]
    assert any("skipped distill" in w for w in res.warnings)


def test_same_inputs_and_seed_give_a_byte_identical_bundle(model, tmp_path):
    data = _data(3000, seed=5)
    paths = []
    for i in range(2):
        ec.compile(model, target="raspberry-pi-4", data=data, output=tmp_path / f"{i}.ecb", progress=False, seed=3)
        paths.append((tmp_path / f"{i}.ecb").read_bytes())
    assert paths[0] == paths[1]
    assert "created_unix" not in ecr.load(tmp_path / "0.ecb").manifest["provenance"]
    ec.compile(model, target="local", data=data, output=tmp_path / "t.ecb", plan=[], progress=False)
    assert "created_unix" in ecr.load(tmp_path / "t.ecb").manifest["provenance"]
