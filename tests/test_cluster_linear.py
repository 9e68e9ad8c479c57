"""k-means clustered Linear layers (passes/cluster_linear.py): the bundle through numpy, LiteRT and
ExecuTorch computes what a torch model whose Linear weights are rebuilt from the stored indices and
shared values computes, each stored weight has at most K distinct values (per layer or per row), the
pass composes with row-wise and product-quantized tables and int8 Linear layers, the size model is
exact, a plan replayed from the manifest gives the same bytes, and bad configs or arrays are refused."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.graph import lower
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights, PassContext, apply_pass, plan_from_json
from edgecompress.passes.cluster_linear import ClusterLinear
from edgecompress.passes.product_quant import ProductQuant
from edgecompress_runtime.array_checks import check_arrays
from edgecompress_runtime.bundle import read_bundle
from edgecompress_runtime.bundle_writer import bundle_size, npy_bytes
from edgecompress_runtime.errors import BundleError

INPUTS = ("dense", "sparse")


def _weight_from_arrays(codes: np.ndarray, book: np.ndarray, bits: int, cols: int) -> torch.Tensor:
    """The weight rebuilt from the stored arrays, independently of the runtime: the codes are one
    little-endian bit stream per row; row o takes its values from codebook row o (or row 0)."""
    stream = np.unpackbits(codes, axis=1, bitorder="little")[:, :cols * bits].reshape(len(codes), cols, bits)
    idx = torch.from_numpy((stream.astype(np.int64) << np.arange(bits)).sum(-1))
    b = torch.from_numpy(book.astype(np.float32))
    return b[0][idx] if len(b) == 1 else b[torch.arange(len(b))[:, None], idx]


def _reference(model, bundle, m):
    """The source model with every clustered Linear weight replaced by its stored values, tables by the
    bundle's (row-wise / PQ tables read through the runtime, tested in their own files)."""
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in m.manifest["params"].items():
            if p["kind"] == "clustered":
                members = p["members"]
                w = _weight_from_arrays(bundle.array(members["codes"]), bundle.array(members["codebook"]),
                                        p["bits"], p["shape"][1])
                ref.get_parameter(name).copy_(w)
            elif p["kind"] in ("rowwise", "pq"):
                ref.get_parameter(name).copy_(torch.from_numpy(m._backend.params[name].dense()))
    return ref


def _exact_size(res):
    b = read_bundle(res.path)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    assert res.size_bytes == res.path.stat().st_size == bundle_size(manifest, b.members)
    return b


def test_bundle_matches_the_declustered_model_in_every_backend(tmp_path, trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    config = ClusterLinear(bits=3, finetune_epochs=1, max_steps=4, lr=0.01)
    res = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "cl.ecb",
                     plan=[EmbeddingRowwiseQuant(bits=4), config], formats=["executorch", "litert"], seed=0,
                     progress=False)
    b = _exact_size(res)
    m = ecr.load(res.path, backend="numpy")
    params = m.manifest["params"]
    layers = [n for n, p in params.items() if p["kind"] == "clustered"]
    assert len(layers) == 4 and layers == [n for n, p in params.items() if p["role"] == "linear"]
    for name in layers:
        p = params[name]
        codes, book = b.array(p["members"]["codes"]), b.array(p["members"]["codebook"])
        assert p["bits"] == 3 and book.shape == (1, 8) and book.dtype == np.float16
        assert codes.shape == (p["shape"][0], math.ceil(p["shape"][1] * 3 / 8))       # 3 bits a weight, packed
        assert len(np.unique(m._backend.params[name].dense())) <= 8
    reference = _reference(trained_dlrm, b, m)
    batch = {k: np.asarray(test_ds.inputs[k][:300]) for k in INPUTS}
    with torch.no_grad():
        want = reference(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
        fp32 = trained_dlrm.eval()(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    for backend in ("numpy", "executorch", "litert"):
        got = ecr.load(res.path, backend=backend).predict(batch).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
        if backend != "numpy":
            art = m.manifest["artifacts"][backend]
            assert art["approximations"] == []
            assert any(s["pass"] == "cluster_linear" and s["exact"] and "de-clustered fp32" in s["as"]
                       for s in art["recipe"])
    assert np.abs(fp32 - want).max() > 1e-3          # clustering changed the model: the comparisons can fail
    tuned = [r for r in m.manifest["plan"] if r["pass"] == "cluster_linear"]
    assert tuned == [config.to_dict()]


def test_per_channel_values_finetuning_and_composition():
    data = synthetic_ctr(n=2000, vocab_sizes=(300, 200), dense_dim=3, multi_hot=3, seed=1)
    torch.manual_seed(0)
    model = model_for_data("dlrm", data, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,)).eval()
    prog = lower(model, {k: np.asarray(data.inputs[k][:8]) for k in INPUTS})
    ctx = PassContext(teacher=model, train_data=data)
    linears = sorted(prog.linear_bias())
    kmeans_only = apply_pass(prog.copy(), ClusterLinear(bits=2, per_channel=True), ctx=ctx)
    tuned = apply_pass(prog.copy(), ClusterLinear(bits=2, per_channel=True, finetune_epochs=1, max_steps=5,
                                                  batch_size=256, lr=0.05), ctx=ctx)
    for name in linears:
        w = kmeans_only.params[name].to_runtime(name).dense()
        assert max(len(np.unique(row)) for row in w) <= 4 and (len(np.unique(w)) > 4 or len(w) == 1)   # per row
        a, t = kmeans_only.params[name].arrays, tuned.params[name].arrays
        np.testing.assert_array_equal(a["codes"], t["codes"])              # assignments fixed while fine-tuning
        assert not np.array_equal(a["codebook"], t["codebook"])            # shared values moved
        assert kmeans_only.params[name].info["rms_error"] > 0
        (o, i), k = prog.params[name].shape, min(4, prog.params[name].shape[1])
        assert kmeans_only.params[name].nbytes == o * math.ceil(i * 2 / 8) + o * k * 2     # codes + fp16 values
    assert any(r.get("steps") == 5 and r["pass"] == "cluster_linear" for r in tuned.log)
    # with PQ tables and int8 Linear: only the named layers are clustered, the others int8
    plan = [ProductQuant(sub_vectors=4, bits=4), ClusterLinear(bits=4, layers=tuple(linears[:2])), LinearInt8Weights()]
    out = prog.copy()
    for cfg in plan:
        apply_pass(out, cfg, ctx=ctx)
    assert [out.params[n].kind for n in linears] == ["clustered", "clustered", "channel_int8", "channel_int8"]
    assert {out.params[t].kind for t in out.tables()} == {"pq"}
    assert out.quantized_linears() == linears[2:]          # the exporters int8-quantize only those


def test_replaying_the_manifest_plan_gives_the_same_bytes(tmp_path, trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    plan = [ProductQuant(sub_vectors=8, bits=8, entries=32, kmeans_iters=4),
            ClusterLinear(bits=5, per_channel=True, finetune_epochs=1, max_steps=3, seed=3)]

    def compile_(name, p):
        return ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / name,
                          plan=p, formats=["numpy"], seed=0, progress=False)
    first = compile_("a.ecb", plan)
    _exact_size(first)
    replay = plan_from_json(ecr.load(first.path, backend="numpy").manifest["plan"])
    assert replay == plan
    compile_("b.ecb", replay)
    assert (tmp_path / "a.ecb").read_bytes() == (tmp_path / "b.ecb").read_bytes()
    prog = lower(trained_dlrm, {k: np.asarray(train_ds.inputs[k][:8]) for k in INPUTS})
    ctx = PassContext(teacher=trained_dlrm, train_data=train_ds)
    books = [apply_pass(prog.copy(), dataclasses.replace(plan[1], seed=s), ctx=ctx).params["top.0.weight"]
             .arrays["codebook"] for s in (3, 3, 4)]
    assert np.array_equal(books[0], books[1]) and not np.array_equal(books[0], books[2])    # the seed matters


def test_bad_configs_are_refused(trained_dlrm, ctr_data):
    train_ds, _ = ctr_data
    for bad, match in ((dict(bits=1), "bits must be 2, 3"), (dict(bits=9), "bits must be 2, 3"),
                       (dict(bits=4.0), "bits must be a whole number"), (dict(per_channel=1.5), "per_channel"),
                       (dict(kmeans_iters=0), "kmeans_iters"), (dict(layers="top.0.weight"), "layers must be"),
                       (dict(distill_weight=2), "distill_weight")):
        with pytest.raises(ec.CompileError, match=match):
            ClusterLinear(**bad)
    prog = lower(trained_dlrm, {k: np.asarray(train_ds.inputs[k][:8]) for k in INPUTS})
    with pytest.raises(ec.CompileError, match="'embeddings.0.weight' is not a Linear weight"):
        apply_pass(prog.copy(), ClusterLinear(layers=("embeddings.0.weight",)))
    with pytest.raises(ec.CompileError, match="needs training rows"):
        apply_pass(prog.copy(), ClusterLinear(finetune_epochs=1), ctx=PassContext(teacher=trained_dlrm))
    assert ClusterLinear(finetune_epochs=1).NEEDS_TRAIN_DATA and not ClusterLinear().NEEDS_TRAIN_DATA


def test_bad_arrays_are_refused_at_load(tmp_path, trained_dlrm, ctr_data):
    from fuzz_mutants import build_logical, logical_of
    book = np.zeros((1, 6), np.float16)                       # K = 6 of 8 possible 3-bit codes
    ok = np.array([[0b101101]], np.uint8)                     # two codes: 5, 5
    check_arrays("w", "clustered", (1, 2), 3, {"codes": ok, "codebook": book})
    with pytest.raises(BundleError, match=r"codes.*values must be in 0\.\.5"):
        check_arrays("w", "clustered", (1, 2), 3, {"codes": np.array([[0b110101]], np.uint8), "codebook": book})
    with pytest.raises(BundleError, match=r"codes.*must be uint8 \[1, 1\]"):
        check_arrays("w", "clustered", (1, 2), 3, {"codes": np.zeros((1, 2), np.uint8), "codebook": book})
    with pytest.raises(BundleError, match=r"codebook.*K <= 8"):
        check_arrays("w", "clustered", (1, 2), 3, {"codes": ok, "codebook": np.zeros((1, 9), np.float16)})
    with pytest.raises(BundleError, match=r"codebook.*\[1 or 1, K"):
        check_arrays("w", "clustered", (1, 2), 3, {"codes": ok, "codebook": np.zeros((2, 6), np.float16)})
    with pytest.raises(BundleError, match="a clustered weight is 2-D"):
        check_arrays("w", "clustered", (2,), 3, {"codes": ok, "codebook": book})
    # a whole bundle whose author wrote codes outside the codebook (hashes recomputed): refused at load
    _, test_ds = ctr_data
    res = ec.compile(trained_dlrm, target="local", data=test_ds, output=tmp_path / "ok.ecb", formats=["numpy"],
                     plan=[ClusterLinear(bits=4, per_channel=True)], progress=False)
    man, mem = logical_of(res.path)
    name = next(n for n, p in man["params"].items() if p["kind"] == "clustered")
    p = man["params"][name]
    small = read_bundle(res.path).array(p["members"]["codebook"])[:, :3]      # K = 3: codes up to 15 now out of range
    mem[p["members"]["codebook"]] = npy_bytes(np.ascontiguousarray(small))
    (tmp_path / "bad.ecb").write_bytes(build_logical(man, mem))
    with pytest.raises(ecr.BundleError, match=r'params\["[^"]+"\]\.members\["codes"\]: values must be in 0\.\.2'):
        ecr.load(tmp_path / "bad.ecb")
    man, mem = logical_of(res.path)
    man["params"][name]["shape"] = [man["params"][name]["shape"][0], man["params"][name]["shape"][1] + 4]
    (tmp_path / "shape.ecb").write_bytes(build_logical(man, mem))
    with pytest.raises(ecr.BundleError, match=r'members\["codes"\]: must be uint8'):
        ecr.load(tmp_path / "shape.ecb")
