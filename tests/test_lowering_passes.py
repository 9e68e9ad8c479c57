"""Lowering of models outside the zoo, clear errors for unsupported ops, and the passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import Dataset
from edgecompress.graph import lower
from edgecompress.passes import (EmbeddingRowwiseQuant, LinearInt8Weights, PassConfig, apply_plan,
                                 plan_from_json, plan_to_json)
from edgecompress.passes.quantize_embeddings import quantize_rows
from edgecompress.passes.quantize_linear import quantize_channels
from edgecompress_runtime.backends.numpy_graph import GraphExecutor
from edgecompress_runtime.params import pack_bits, unpack_bits


class CrossNet(nn.Module):
    """A DCN-style model no one in the zoo looks like: cross layers, layer of
    softmax attention over fields, a normalize, tanh, mean-pooled history bag."""

    def __init__(self, vocab=(50, 40, 30), d=8, dense_dim=3):
        super().__init__()
        self.tables = nn.ModuleDict({f"f{i}": nn.Embedding(v, d) for i, v in enumerate(vocab)})
        self.hist = nn.EmbeddingBag(vocab[0], d, mode="mean")
        width = d * (len(vocab) + 1) + dense_dim
        self.cross = nn.ModuleList([nn.Linear(width, width) for _ in range(2)])
        self.att = nn.Linear(d, 1)
        self.out = nn.Linear(width + d, 1)

    def forward(self, dense, sparse, history):
        embs = [self.tables[f"f{i}"](sparse[:, i]) for i in range(len(self.tables))]
        e = torch.stack(embs, 1)                                   # [B, F, d]
        w = torch.softmax(self.att(e).squeeze(-1), dim=1)          # [B, F]
        pooled = (e * w.unsqueeze(-1)).sum(1)
        x0 = torch.cat(embs + [self.hist(history), dense], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        x = torch.tanh(x) / 2
        z = torch.cat([x, nn.functional.normalize(pooled, dim=-1)], 1)
        return self.out(z).flatten()


def _crossnet_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {"dense": rng.standard_normal((n, 3)).astype(np.float32),
              "sparse": np.stack([rng.integers(0, v, n) for v in (50, 40, 30)], 1),
              "history": rng.integers(0, 50, (n, 4))}
    label = (rng.random(n) < 0.3).astype(np.float32)
    return Dataset(name="crossnet", task="ctr", inputs=inputs, label=label,
                   vocab={"sparse": [50, 40, 30], "history": [50] * 4}, meta={})


def test_model_outside_the_zoo_compiles(tmp_path):
    torch.manual_seed(0)
    model = CrossNet().eval()
    data = _crossnet_data()
    res = ec.compile(model, target="local", data=data, output=tmp_path / "x.ecb",
                     plan=[EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()], progress=False)
    m = ecr.load(res.path)
    spec = {s["name"]: s for s in m.input_spec}
    assert spec["sparse"]["vocab"] == [50, 40, 30]
    assert spec["history"]["shape"] == [None, 4]
    ops = {n["op"] for n in m.manifest["graph"]["nodes"]}
    assert {"embedding", "embedding_bag", "softmax", "tanh", "vector_norm", "linear"} <= ops
    assert res.parity["max_abs_diff"] < 1e-2
    fp32 = ec.compile(model, target="local", data=data, output=tmp_path / "f.ecb", plan=[], progress=False)
    batch = {k: v[:37] for k, v in data.inputs.items()}
    want = model(**{k: torch.as_tensor(v) for k, v in batch.items()}).detach().numpy()
    np.testing.assert_allclose(ecr.load(fp32.path).predict(batch), want, atol=1e-5)


class UsesUnsupported(nn.Module):
    """Two ops no bundle runtime implements, one used twice, plus a supported tail."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, ids):
        h = self.emb(ids)
        h = torch.special.bessel_j0(h) + torch.special.bessel_j0(h * 2)
        return torch.digamma(h.abs() + 1).sum(1)


def test_unsupported_ops_listed_all_at_once_with_counts_and_places(tmp_path):
    with pytest.raises(ec.UnsupportedOpError) as e:
        lower(UsesUnsupported(), {"ids": np.arange(4)})
    msg = str(e.value)
    assert "2 op(s)" in msg
    assert "aten.special_bessel_j0.default x2 (your code)" in msg
    assert "aten.digamma.default x1 (your code)" in msg
    assert "test_lowering_passes.py" in msg and "torch.digamma" in msg
    assert "docs/ops.md" in msg


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, dense):
        if dense.sum() > 0:
            return self.lin(dense).flatten()
        return -self.lin(dense).flatten()


def test_model_that_does_not_export(tmp_path):
    with pytest.raises(ec.CompileError, match="does not export with torch.export"):
        lower(DataDependent(), {"dense": np.ones((4, 2), np.float32)})


def test_data_that_does_not_match_the_model(tmp_path):
    data = _crossnet_data()
    data.inputs["extra"] = data.inputs.pop("history")
    data.vocab["extra"] = data.vocab.pop("history")
    with pytest.raises(ec.DataError, match="no input 'history'"):
        ec.compile(CrossNet(), target="local", data=data, output=tmp_path / "x.ecb", progress=False)
    assert not (tmp_path / "x.ecb").exists()


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rowwise_quant_bytes_and_error(bits):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1000, 64)).astype(np.float32) * 0.1
    codes, scale, bias, deq = quantize_rows(w, bits)
    assert codes.dtype == np.uint8 and codes.shape == (1000, 64 * bits // 8)
    assert scale.dtype == np.float16 and bias.dtype == np.float16
    assert codes.nbytes + scale.nbytes + bias.nbytes == 1000 * (64 * bits // 8 + 4)
    step = (w.max(1) - w.min(1)) / (2**bits - 1)
    # error within half a step (+ fp16 rounding of scale/bias)
    assert np.all(np.abs(deq - w).max(1) <= 0.5 * step * 1.01 + 1e-3 * np.abs(w).max(1))
    np.testing.assert_array_equal(unpack_bits(codes, bits, 64).max() <= 2**bits - 1, True)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(1)
    for bits in (4, 2):
        c = rng.integers(0, 2**bits, (7, 13)).astype(np.uint8)
        np.testing.assert_array_equal(unpack_bits(pack_bits(c, bits), bits, 13), c)


def test_linear_int8_per_channel():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 32)).astype(np.float32) * np.linspace(0.01, 2, 16)[:, None]
    codes, scale, deq = quantize_channels(w)
    assert codes.dtype == np.int8 and scale.shape == (16,)
    assert np.all(np.abs(deq - w).max(1) <= scale / 2 + 1e-7)


def test_plan_round_trip_and_replay():
    plan = [EmbeddingRowwiseQuant(bits=4), LinearInt8Weights(min_params=10)]
    js = plan_to_json(plan)
    assert js[0] == {"pass": "embedding_rowwise_quant", "version": 1, "bits": 4, "tables": None, "clip_search": False}
    again = plan_from_json(js)
    assert again == plan
    torch.manual_seed(0)
    model = CrossNet().eval()
    ex = {k: v[:8] for k, v in _crossnet_data().inputs.items()}
    a, b = apply_plan(lower(model, ex), plan), apply_plan(lower(model, ex), again)
    for name in a.params:
        for role in a.params[name].arrays:
            np.testing.assert_array_equal(a.params[name].arrays[role], b.params[name].arrays[role])


def test_plan_version_mismatch_fails_loudly():
    with pytest.raises(ec.CompileError, match="version 2 does not match"):
        PassConfig.from_dict({"pass": "embedding_rowwise_quant", "version": 2, "bits": 8})
    with pytest.raises(ec.CompileError, match="unknown pass"):
        PassConfig.from_dict({"pass": "nope", "version": 1})
    with pytest.raises(ec.CompileError, match="unknown settings"):
        PassConfig.from_dict({"pass": "linear_int8_weights", "version": 1, "bitz": 3})


@pytest.mark.parametrize("item,message", [
    ({"pass": "embedding_rowwise_quant", "version": 1, "bits": 3},
     "embedding_rowwise_quant: bits must be 8, 4 or 2, got 3"),
    ({"pass": "embedding_row_prune", "version": 1, "keep_ratio": 0},
     r"embedding_row_prune: keep_ratio must be a number in \(0, 1\], got 0"),
    ({"pass": "mlp_neuron_prune", "version": 1, "keep_ratio": 1.5},
     r"mlp_neuron_prune: keep_ratio must be a number in \(0, 1\], got 1.5"),
    ({"pass": "mlp_neuron_prune", "version": 1, "importance": "random"},
     "mlp_neuron_prune: importance must be 'magnitude' or 'taylor', got 'random'"),
    ({"pass": "linear_sparse_prune", "version": 1, "sparsity": 1.0},
     r"linear_sparse_prune: sparsity must be a number in \[0, 1\), got 1.0"),
    ({"pass": "embedding_dim_reduce", "version": 1, "dim": 0},
     "embedding_dim_reduce: dim must be an integer >= 1, got 0"),
    ({"pass": "linear_int8_static", "version": 1, "percentile": 0},
     r"linear_int8_static: percentile must be a number in \(0, 100\], got 0"),
    ({"pass": "distill", "version": 1, "alpha": "half"},
     r"distill: alpha must be a number in \[0, 1\], got 'half'"),
    ({"pass": "embedding_rowwise_quant", "version": 1, "tables": "emb.weight"},
     "embedding_rowwise_quant: tables must be None or a list of parameter names"),
])
def test_a_bad_setting_fails_when_the_plan_is_read(item, message):
    with pytest.raises(ec.CompileError, match=message):
        plan_from_json([{"pass": "embedding_rowwise_quant", "version": 1, "bits": 8}, item])


def test_program_views_name_what_the_graph_holds():
    torch.manual_seed(0)
    model = CrossNet().eval()
    data = _crossnet_data()
    prog = lower(model, {k: v[:8] for k, v in data.inputs.items()})
    linears = prog.nodes_of("linear")
    assert {n.param(1) for n in linears} == {n for n, r in prog.roles.items() if r == "linear"}
    assert prog.linear_bias() == {"cross.0.weight": "cross.0.bias", "cross.1.weight": "cross.1.bias",
                                  "att.weight": "att.bias", "out.weight": "out.bias"}
    readers = prog.param_consumers("hist.weight")
    assert [n.op for n in readers] == ["embedding_bag"] and readers[0].inputs == ["history"]
    users = prog.value_users()
    assert all(n.out in users or n.out in prog.graph["outputs"] for n in prog.nodes())
    feeds = {k: v[:16] for k, v in data.inputs.items()}
    want = model(*[torch.as_tensor(feeds[k]) for k in ("dense", "sparse", "history")]).detach().numpy()
    np.testing.assert_allclose(np.asarray(prog.executor().run(feeds)).reshape(-1), want, atol=1e-5)


def test_one_pass_context_counts_ids_once_for_every_copy():
    from edgecompress.passes import EmbeddingRowPrune, PassContext
    torch.manual_seed(0)
    model = CrossNet().eval()
    data = _crossnet_data()
    prog = lower(model, {k: v[:8] for k, v in data.inputs.items()})
    ctx = PassContext(train_data=data)
    counts = ctx.id_counts(prog, "tables.f1.weight")
    np.testing.assert_array_equal(counts, np.bincount(data.inputs["sparse"][:, 1], minlength=40))
    assert ctx.id_counts(prog.copy(), "tables.f1.weight") is counts
    pruned = apply_plan(prog.copy(), [EmbeddingRowPrune(keep_ratio=0.5, tables=("tables.f1.weight",))], ctx)
    assert pruned.params["tables.f1.weight"].arrays["remap"].shape == (40,)
    assert PassContext().id_counts(prog, "tables.f1.weight") is None       # no training rows: nothing to count
    skipped = apply_plan(prog.copy(), [EmbeddingRowPrune(keep_ratio=0.5)])
    assert all(r.get("skipped") for r in skipped.log)


def test_a_new_pass_is_one_module_with_its_export_hook():
    """What a pass added outside passes/ needs: a config, a registered function, and (only if the
    artifacts express it differently) an export hook. compile, plans and recipes pick it up."""
    import dataclasses

    from edgecompress.export.recipe import recipe
    from edgecompress.passes import base
    from edgecompress.passes.base import ExportStep, export_hook, register

    @dataclasses.dataclass(frozen=True)
    class ScaleOutput(PassConfig):
        NAME = "test_scale_output"
        VERSION = 1
        factor: float = 1.0

        def __post_init__(self):
            self.check_range("factor", 0, 10, lo_open=True)

    @register(ScaleOutput)
    def scale_output_(program, config, ctx, filter_fn):
        w = program.params["out.weight"]
        program.params["out.weight"] = w.replace(arrays={"data": w.arrays["data"] * config.factor})
        return program

    torch.manual_seed(0)
    model = CrossNet().eval()
    data = _crossnet_data()
    prog = lower(model, {k: v[:8] for k, v in data.inputs.items()})
    plan = plan_from_json([{"pass": "test_scale_output", "version": 1, "factor": 2.0},
                           {"pass": "embedding_rowwise_quant", "version": 1, "bits": 4}])
    out = apply_plan(prog.copy(), plan)
    np.testing.assert_array_equal(out.params["out.weight"].arrays["data"], prog.params["out.weight"].arrays["data"] * 2)
    steps, approx = recipe(out, plan, "litert")
    assert steps[0] == {"pass": "test_scale_output", "exact": True,
                        "as": "already applied to the graph and weights (shapes, remap, projections, sparse "
                              "weights densified): exported as the host program computes it"}
    assert steps[1]["pass"] == "embedding_rowwise_quant" and steps[1]["as"].startswith("4-bit rows")
    assert approx == []

    @export_hook(ScaleOutput)
    def export_scale(config, view):
        return ExportStep(f"output weights scaled by {config.factor:g} in {view.fmt}", False,
                          ("scaled in float",))
    steps, approx = recipe(out, plan, "executorch")
    assert steps[0] == {"pass": "test_scale_output", "as": "output weights scaled by 2 in executorch", "exact": False}
    assert approx == ["scaled in float"]
    with pytest.raises(ec.CompileError, match=r"test_scale_output: factor must be a number in \(0, 10\], got 0"):
        plan_from_json([{"pass": "test_scale_output", "version": 1, "factor": 0}])
    base._REGISTRY.pop(ScaleOutput.NAME)            # this test's pass is not one the package ships
    base._EXPORT_HOOKS.pop(ScaleOutput.NAME)


def test_jagged_bags_with_offsets_run():
    class Jagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = nn.EmbeddingBag(20, 4, mode="sum")

        def forward(self, ids, offsets):
            return self.bag(ids, offsets).sum(1)

    torch.manual_seed(0)
    m = Jagged().eval()
    ids = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    offsets = np.array([0, 3, 3, 5, 6, 7, 7, 8])
    prog = lower(m, {"ids": ids, "offsets": offsets})
    assert any(n["op"] == "embedding_bag_offsets" for n in prog.graph["nodes"])
    ex = GraphExecutor(prog.graph, {k: v.to_runtime(k) for k, v in prog.params.items()}, prog.constants)
    want = m(torch.as_tensor(ids), torch.as_tensor(offsets)).detach().numpy()
    np.testing.assert_allclose(ex.run({"ids": ids, "offsets": offsets}), want, atol=1e-6)


def test_docs_list_every_op():
    from pathlib import Path

    from edgecompress_runtime.ops import OPS
    text = (Path(__file__).resolve().parent.parent / "docs" / "ops.md").read_text()
    missing = [name for name in OPS if f"| `{name}` |" not in text]
    assert not missing, f"docs/ops.md lacks {missing}"
