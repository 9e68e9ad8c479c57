"""Quotient-remainder embeddings (passes/qr_embedding.py): the bundle through numpy, LiteRT and
ExecuTorch computes what the source model with each table rebuilt from the trained quotient and
remainder tables computes, every gather form (plain, sum / mean / max bags, weighted bags) keeps
padding rows exactly zero, row-wise int4/int8 quantization of the two tables composes, a plan
replayed from the manifest gives the same bytes, and bad configs or plans are refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.graph import lower
from edgecompress.graph.torch_exec import ProgramModule
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import (EmbeddingRowPrune, EmbeddingRowwiseQuant, PassContext, apply_pass, apply_plan,
                                 plan_from_json)
from edgecompress.passes.qr_embedding import EmbeddingQR, collisions_for, qr_rows
from edgecompress.train import train
from edgecompress_runtime.bundle import read_bundle

INPUTS = ("dense", "sparse")
VOCAB = (1200, 700, 60)


@pytest.fixture(scope="module")
def small_dlrm():
    """A multi-hot DLRM (bags of 3 ids padded with id 0), trained briefly: small enough to export fast."""
    data = synthetic_ctr(n=6000, vocab_sizes=VOCAB, dense_dim=4, multi_hot=3, seed=5)
    train_ds, test_ds = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", train_ds, embedding_dim=16, bottom_mlp=(16,), top_mlp=(16,))
    train(model, train_ds, epochs=1, batch_size=256, lr=3e-3, progress=False)
    return model.eval(), train_ds, test_ds


def _compose(q: torch.Tensor, r: torch.Tensor, rows: int, op: str) -> torch.Tensor:
    i = torch.arange(rows)
    return q[i // len(r)] * r[i % len(r)] if op == "mult" else q[i // len(r)] + r[i % len(r)]


def _rebuilt(model, tables: dict, op: str):
    """The source model with each rewritten table replaced by its composed rows, except its padding
    row (``padding_idx``), which keeps the model's value (zero)."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, (q, r) in tables.items():
            w = out.get_parameter(name)
            pad = getattr(out.get_submodule(name.rsplit(".", 1)[0]), "padding_idx", None)
            keep = w[pad].clone() if pad is not None else None
            w.copy_(_compose(torch.from_numpy(np.array(q)), torch.from_numpy(np.array(r)), w.shape[0], op))
            if pad is not None:
                w[pad] = keep
    return out


def _bundle_tables(path) -> dict:
    """table name -> (Q, Rm) as the bundle stores them (fp32)."""
    m = ecr.load(path, backend="numpy")
    b = read_bundle(path)
    params = m.manifest["params"]
    return {n[: -len(".qr_quotient")]: tuple(b.array(params[p]["members"]["data"])
                                             for p in (n, n.replace(".qr_quotient", ".qr_remainder")))
            for n in params if n.endswith(".qr_quotient")}


def test_bundle_matches_the_trained_qr_model_in_every_backend(tmp_path, small_dlrm):
    model, train_ds, test_ds = small_dlrm
    config = EmbeddingQR(collisions=8, min_rows=500, max_steps=6, lr=0.01)
    res = ec.compile(model, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "qr.ecb",
                     plan=[config], formats=["executorch", "litert"], seed=0, progress=False)
    m = ecr.load(res.path, backend="numpy")
    params = m.manifest["params"]
    tables = _bundle_tables(res.path)
    assert sorted(tables) == ["embeddings.0.weight", "embeddings.1.weight"]      # the 60-row table stays
    assert "embeddings.2.weight" in params and "embeddings.0.weight" not in params
    for name, (q, r) in tables.items():
        rows = model.get_parameter(name).shape[0]
        assert q.shape == (-(-rows // 8), 16) and r.shape == (8, 16)
    # the vocabulary the bundle checks ids against is still the tables' rows, not the quotient's
    assert m.manifest["inputs"][1]["vocab"] == [model.get_parameter(f"embeddings.{i}.weight").shape[0]
                                                for i in range(3)]
    batch = {k: np.asarray(test_ds.inputs[k][:300]) for k in INPUTS}
    with torch.no_grad():
        want = _rebuilt(model, tables, "mult")(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
        fp32 = model(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    for backend in ("numpy", "executorch", "litert"):
        got = ecr.load(res.path, backend=backend).predict(batch).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
        if backend != "numpy":
            assert m.manifest["artifacts"][backend]["approximations"] == []
    assert np.abs(fp32 - want).max() > 1e-3          # QR changed the model: the comparisons above can fail


class _Gathers(nn.Module):
    """Every gather form the rewrite expresses, each with padding id 0."""

    def __init__(self):
        super().__init__()
        self.plain = nn.Embedding(50, 4, padding_idx=0)
        self.mean = nn.EmbeddingBag(40, 4, mode="mean", padding_idx=0)
        self.max = nn.EmbeddingBag(30, 4, mode="max")
        self.weighted = nn.EmbeddingBag(45, 4, mode="sum", padding_idx=0)

    def forward(self, ids, w):
        return torch.cat([self.plain(ids[:, 0]), self.plain(ids[:, :2]).sum(1), self.mean(ids),
                          self.max(ids % 30), self.weighted(ids, per_sample_weights=w)], dim=1)


@pytest.mark.parametrize("op", ["mult", "add"])
def test_every_gather_form_matches_and_padding_rows_stay_exactly_zero(op):
    torch.manual_seed(1)
    model = _Gathers().eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, size=(64, 3))
    ids[:8] = 0                                                    # bags of padding only
    ids[8:16, 1:] = 0                                              # one id and padding
    feeds = {"ids": ids, "w": rng.random((64, 3)).astype(np.float32)}
    prog = lower(model, feeds)
    out = apply_pass(prog.copy(), EmbeddingQR(collisions=4, op=op, min_rows=1, epochs=0))
    tables = {n: (out.params[n + ".qr_quotient"].arrays["data"], out.params[n + ".qr_remainder"].arrays["data"])
              for n in prog.tables()}
    assert len(tables) == 4 and not out.padding_rows
    assert {r["rows"][0] for r in out.log if "rows" in r} == {50, 40, 30, 45}
    with torch.no_grad():
        want = _rebuilt(model, tables, op)(*[torch.as_tensor(feeds[k]) for k in ("ids", "w")]).numpy()
        torch_got = ProgramModule(out)(*[torch.as_tensor(feeds[k]) for k in ("ids", "w")]).numpy()
    env = out.executor().run(feeds, keep=True)
    got = env[out.graph["outputs"][0]]
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(torch_got, want, atol=2e-6)
    # the composed padding row is not zero (so the masks matter) ...
    q, r = tables["plain.weight"]
    assert np.abs(q[0] * r[0] if op == "mult" else q[0] + r[0]).max() > 0
    # ... yet a padding id gathers exactly zero and padding never moves a bag: bags of one id and
    # padding are exactly that id's composed row
    np.testing.assert_array_equal(got[:8, :4], 0)
    np.testing.assert_array_equal(got[:8, 8:12], 0)
    np.testing.assert_array_equal(got[:8, 16:20], 0)
    rows = {n: (q[ids[8:16, 0] // 4] * r[ids[8:16, 0] % 4] if op == "mult"
                else q[ids[8:16, 0] // 4] + r[ids[8:16, 0] % 4]) for n, (q, r) in tables.items()}
    np.testing.assert_array_equal(got[8:16, 4:8], rows["plain.weight"])
    np.testing.assert_array_equal(got[8:16, 8:12], rows["mean.weight"])


@pytest.mark.parametrize("bits", [4, 8])
def test_rowwise_quantization_of_the_two_tables_composes(bits, small_dlrm):
    model, train_ds, test_ds = small_dlrm
    prog = lower(model, {k: np.asarray(train_ds.inputs[k][:8]) for k in INPUTS})
    parts = tuple(f"embeddings.{i}.weight.qr_{p}" for i in (0, 1) for p in ("quotient", "remainder"))
    out = apply_plan(prog.copy(), [EmbeddingQR(collisions=16, min_rows=500, epochs=0),
                                   EmbeddingRowwiseQuant(bits=bits, tables=parts)], PassContext(train_data=train_ds))
    assert sorted(n for n in out.params if ".qr_" in n) == sorted(parts) and {(out.params[n].kind, out.params[n].bits) for n in parts} == {("rowwise", bits)}
    tables = {n[: -len(".qr_quotient")]: tuple(out.params[p].to_runtime(p).storage_dense()
                                               for p in (n, n.replace("quotient", "remainder")))
              for n in parts if n.endswith("quotient")}
    batch = {k: np.asarray(test_ds.inputs[k][:200]) for k in INPUTS}
    with torch.no_grad():
        want = _rebuilt(model, tables, "mult")(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    np.testing.assert_allclose(out.executor().run(batch).reshape(-1), want, atol=2e-5)
    pads = {k: v.copy() for k, v in batch.items()}
    pads["sparse"][:, :2, :] = 0                                  # the rewritten tables' bags: padding only
    env = out.executor().run(pads, keep=True)
    bags = {n.out: n.op for n in out.nodes() if n.out.startswith("embedding_bag") and "__qr" not in n.out}
    assert bags == {"embedding_bag": "sum", "embedding_bag_1": "sum", "embedding_bag_2": "embedding_bag"}
    bags.pop("embedding_bag_2")                                   # the 60-row table stays a table
    for v in bags:
        np.testing.assert_array_equal(env[v], 0)
    fit = [r for r in out.log if r.get("pass") == "embedding_qr"]
    assert all(r["bytes"][1] < r["bytes"][0] / 8 for r in fit) and all(r["fit_rms_error"] > 0 for r in fit)


def test_replaying_the_manifest_plan_gives_the_same_bytes(tmp_path, small_dlrm):
    model, train_ds, test_ds = small_dlrm
    config = EmbeddingQR(collisions=0, ratio=6.0, min_rows=500, max_steps=3, lr=0.01, seed=2)
    kw = dict(target="local", data=test_ds, train_data=train_ds, formats=["numpy"], seed=0, progress=False)
    first = ec.compile(model, output=tmp_path / "a.ecb", plan=[config, EmbeddingRowwiseQuant(bits=8)], **kw)
    plan = plan_from_json(ecr.load(first.path, backend="numpy").manifest["plan"])
    assert plan[0] == config
    ec.compile(model, output=tmp_path / "b.ecb", plan=plan, **kw)
    assert (tmp_path / "a.ecb").read_bytes() == (tmp_path / "b.ecb").read_bytes()
    ec.compile(model, output=tmp_path / "c.ecb", plan=[EmbeddingQR(collisions=0, ratio=6.0, min_rows=500, max_steps=3,
                                                                   lr=0.01, seed=3), EmbeddingRowwiseQuant(bits=8)], **kw)
    assert (tmp_path / "c.ecb").read_bytes() != (tmp_path / "a.ecb").read_bytes()      # the seed matters
    m = collisions_for(1201, 6.0)
    assert 1201 / qr_rows(1201, m) >= 6.0 > 1201 / qr_rows(1201, m - 1)


def test_bad_configs_and_plans_are_refused(small_dlrm):
    model, train_ds, _ = small_dlrm
    with pytest.raises(ec.CompileError, match="set exactly one of collisions"):
        EmbeddingQR(collisions=4, ratio=3.0)
    with pytest.raises(ec.CompileError, match="set exactly one of collisions"):
        EmbeddingQR(collisions=0)
    with pytest.raises(ec.CompileError, match="collisions must be a number in"):
        EmbeddingQR(collisions=1)
    with pytest.raises(ec.CompileError, match="op must be 'mult' or 'add'"):
        EmbeddingQR(op="concat")
    with pytest.raises(ec.CompileError, match="collisions must be a whole number"):
        EmbeddingQR(collisions=2.5)
    assert EmbeddingQR().NEEDS_TRAIN_DATA and not EmbeddingQR(epochs=0).NEEDS_TRAIN_DATA
    prog = lower(model, {k: np.asarray(train_ds.inputs[k][:8]) for k in INPUTS})
    ctx = PassContext(teacher=model, train_data=train_ds)
    with pytest.raises(ec.CompileError, match="'nope' is not an embedding table"):
        apply_pass(prog.copy(), EmbeddingQR(tables=("nope",), epochs=0))
    with pytest.raises(ec.CompileError, match=r"no m reaches ratio 50 on its 61 rows \(at most"):
        apply_pass(prog.copy(), EmbeddingQR(collisions=0, ratio=50.0, tables=("embeddings.2.weight",), epochs=0))
    pruned = apply_pass(prog.copy(), EmbeddingRowPrune(keep_ratio=0.5), ctx=ctx)
    with pytest.raises(ec.CompileError, match="pruned .remap.: put embedding_qr before embedding_row_prune"):
        apply_pass(pruned, EmbeddingQR(tables=("embeddings.0.weight",), epochs=0))
    quantized = apply_pass(prog.copy(), EmbeddingRowwiseQuant(bits=8))
    with pytest.raises(ec.CompileError, match="already rowwise: put embedding_qr before quantization"):
        apply_pass(quantized, EmbeddingQR(tables=("embeddings.0.weight",), epochs=0))
    auto = apply_pass(apply_pass(prog.copy(), EmbeddingRowPrune(keep_ratio=0.5), ctx=ctx),
                      EmbeddingQR(min_rows=500, epochs=0))         # chosen by size: skipped and said why
    assert [r["param"] for r in auto.log if "skipped" in r] == ["embeddings.0.weight", "embeddings.1.weight"]
    with pytest.raises(ec.CompileError, match="needs training rows"):
        apply_pass(prog.copy(), EmbeddingQR(min_rows=500), ctx=PassContext(teacher=model))


def test_train_dense_moves_the_other_weights_and_keeps_their_padding_rows(small_dlrm):
    model, train_ds, _ = small_dlrm
    prog = lower(model, {k: np.asarray(train_ds.inputs[k][:8]) for k in INPUTS})
    ctx = PassContext(teacher=model, train_data=train_ds)
    kw = dict(collisions=8, min_rows=500, max_steps=3, lr=0.01)
    tables_only = apply_pass(prog.copy(), EmbeddingQR(**kw), ctx=ctx)
    dense = apply_pass(prog.copy(), EmbeddingQR(**kw, train_dense=True), ctx=ctx)
    for name in ("top.0.weight", "embeddings.2.weight"):
        before = prog.params[name].arrays["data"]
        assert np.array_equal(tables_only.params[name].arrays["data"], before)
        assert not np.array_equal(dense.params[name].arrays["data"], before)
    assert np.abs(dense.params["embeddings.2.weight"].arrays["data"][0]).max() == 0      # its padding row
    fit = apply_pass(prog.copy(), EmbeddingQR(**{**kw, "epochs": 0}), ctx=ctx)
    q = "embeddings.0.weight.qr_quotient"
    assert not np.array_equal(tables_only.params[q].arrays["data"], fit.params[q].arrays["data"])   # trained
    record = tables_only.log[-1]
    assert record["steps"] == 3 and record["seconds"] > 0 and record["loss_last"] is not None
