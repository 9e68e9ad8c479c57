"""Product-quantized tables (passes/product_quant.py): the bundle through numpy, LiteRT and
ExecuTorch computes what a torch model whose rows are rebuilt from the stored codes and
codebooks computes, padding rows stay exactly zero, the size model is exact, a plan replayed
from the manifest gives the same bytes, and bad configs or arrays are refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.graph import lower
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import PassContext, apply_pass, plan_from_json
from edgecompress.passes.product_quant import ProductQuant
from edgecompress_runtime.array_checks import check_arrays
from edgecompress_runtime.bundle import read_bundle
from edgecompress_runtime.bundle_writer import bundle_size
from edgecompress_runtime.errors import BundleError

INPUTS = ("dense", "sparse")


def _program(model, ds):
    return lower(model, {k: np.asarray(ds.inputs[k][:8]) for k in INPUTS})


def _torch_rows(codes: np.ndarray, books: np.ndarray, bits: int) -> torch.Tensor:
    """The table rebuilt in torch from the stored arrays: unpack the codes, look up each sub-space."""
    c = torch.from_numpy(codes.astype(np.int64))
    m = books.shape[0]
    if bits == 4:
        c = torch.stack([c & 15, c >> 4], dim=-1).flatten(1)[:, :m]
    b = torch.from_numpy(books.astype(np.float32))
    return b[torch.arange(m), c].reshape(len(c), -1)        # [R, M, d/M] -> [R, d]


def test_bundle_matches_the_rebuilt_rows_in_every_backend(tmp_path, trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    config = ProductQuant(sub_vectors=8, bits=4, finetune_epochs=1, max_steps=4, lr=0.01)
    res = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "pq.ecb",
                     plan=[config], formats=["executorch", "litert"], seed=0, progress=False)
    b = read_bundle(res.path)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    assert res.size_bytes == res.path.stat().st_size == bundle_size(manifest, b.members)
    m = ecr.load(res.path, backend="numpy")
    reference = copy.deepcopy(trained_dlrm).eval()
    tables = [n for n, p in m.manifest["params"].items() if p["kind"] == "pq"]
    assert len(tables) == 5 and all(m.manifest["params"][n]["bits"] == 4 for n in tables)
    with torch.no_grad():
        for name in tables:
            members = m.manifest["params"][name]["members"]
            codes, books = b.array(members["codes"]), b.array(members["codebooks"])
            assert codes.shape[1] == 4 and books.shape[:2] == (8, 16) and books.dtype == np.float16
            reference.get_parameter(name).copy_(_torch_rows(codes, books, 4))
        batch = {k: np.asarray(test_ds.inputs[k][:300]) for k in INPUTS}
        want = reference(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
        fp32 = trained_dlrm.eval()(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    for backend in ("numpy", "executorch", "litert"):
        got = ecr.load(res.path, backend=backend).predict(batch).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
        if backend != "numpy":
            assert m.manifest["artifacts"][backend]["approximations"] == []
    assert np.abs(fp32 - want).max() > 1e-3          # PQ changed the model: the comparisons above can fail


def test_padding_rows_stay_exact_and_finetuning_moves_the_other_entries():
    data = synthetic_ctr(n=2000, vocab_sizes=(300, 200), dense_dim=3, multi_hot=3, seed=1)
    torch.manual_seed(0)
    model = model_for_data("dlrm", data, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,)).eval()
    prog = _program(model, data)
    assert prog.padding_rows, "the multi-hot DLRM has padding rows"
    ctx = PassContext(teacher=model, train_data=data)
    kmeans_only = apply_pass(prog.copy(), ProductQuant(sub_vectors=4, bits=4), ctx=ctx)
    tuned = apply_pass(prog.copy(), ProductQuant(sub_vectors=4, bits=4, finetune_epochs=1, max_steps=5,
                                                 batch_size=256, lr=0.05), ctx=ctx)
    for table, rows in prog.padding_rows.items():
        assert np.abs(prog.params[table].arrays["data"][list(rows)]).max() == 0
        for out in (kmeans_only, tuned):
            p = out.params[table]
            assert p.kind == "pq" and p.bits == 4
            np.testing.assert_array_equal(p.to_runtime(table).gather(np.array(list(rows))),
                                          np.zeros((len(rows), 8), np.float32))
        a, b = kmeans_only.params[table].arrays, tuned.params[table].arrays
        np.testing.assert_array_equal(a["codes"], b["codes"])             # codes fixed while fine-tuning
        assert not np.array_equal(a["codebooks"], b["codebooks"])         # entries moved: the checks can fail
        assert kmeans_only.params[table].info["rms_error"] > 0
    dense = apply_pass(prog.copy(), ProductQuant(sub_vectors=4, bits=4, finetune_epochs=1, max_steps=3, lr=0.05,
                                                 train_dense=True), ctx=ctx)
    for table, rows in prog.padding_rows.items():
        np.testing.assert_array_equal(dense.params[table].to_runtime(table).gather(np.array(list(rows))),
                                      np.zeros((len(rows), 8), np.float32))
    linear = [n for n in prog.params if prog.roles.get(n) == "linear"]
    assert all(dense.params[n].kind == "fp32" for n in linear)
    assert not np.array_equal(dense.params[linear[0]].arrays["data"], prog.params[linear[0]].arrays["data"])
    assert np.array_equal(tuned.params[linear[0]].arrays["data"], prog.params[linear[0]].arrays["data"])


def test_replaying_the_manifest_plan_gives_the_same_bytes(tmp_path, trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    config = ProductQuant(sub_vectors=8, bits=8, entries=32, kmeans_iters=4, finetune_epochs=1, max_steps=3, seed=3)
    first = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "a.ecb",
                       plan=[config], formats=["numpy"], seed=0, progress=False)
    plan = plan_from_json(ecr.load(first.path, backend="numpy").manifest["plan"])
    assert plan == [config]
    ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "b.ecb",
               plan=plan, formats=["numpy"], seed=0, progress=False)
    assert (tmp_path / "a.ecb").read_bytes() == (tmp_path / "b.ecb").read_bytes()
    ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "c.ecb",
               plan=[ProductQuant(sub_vectors=8, bits=8, entries=32, kmeans_iters=4, finetune_epochs=1, max_steps=3, seed=4)],
               formats=["numpy"], seed=0, progress=False)
    assert (tmp_path / "c.ecb").read_bytes() != (tmp_path / "a.ecb").read_bytes()      # the seed matters


def test_bad_configs_and_arrays_are_refused(trained_dlrm, ctr_data):
    train_ds, _ = ctr_data
    with pytest.raises(ec.CompileError, match="product_quant: bits must be 8 or 4, got 2"):
        ProductQuant(bits=2)
    with pytest.raises(ec.CompileError, match=r"entries must be a number in \[2, 16\], got 32"):
        ProductQuant(bits=4, entries=32)
    with pytest.raises(ec.CompileError, match="sub_vectors must be"):
        ProductQuant(sub_vectors=0)
    with pytest.raises(ec.CompileError, match="sub_vectors must be"):
        ProductQuant(sub_vectors=2.5)
    prog = _program(trained_dlrm, train_ds)
    with pytest.raises(ec.CompileError, match="width 32, not divisible by sub_vectors=5"):
        apply_pass(prog.copy(), ProductQuant(sub_vectors=5))
    with pytest.raises(ec.CompileError, match="needs training rows"):
        apply_pass(prog.copy(), ProductQuant(finetune_epochs=1), ctx=PassContext(teacher=trained_dlrm))
    assert ProductQuant(finetune_epochs=1).NEEDS_TRAIN_DATA and not ProductQuant().NEEDS_TRAIN_DATA
    books = np.zeros((2, 10, 4), np.float16)                  # K = 10 entries of 16 possible 4-bit codes
    ok = np.array([[0x99]], np.uint8)                         # codes 9, 9
    check_arrays("t", "pq", (1, 8), 4, {"codes": ok, "codebooks": books})
    with pytest.raises(BundleError, match="values must be in 0..9"):
        check_arrays("t", "pq", (1, 8), 4, {"codes": np.array([[0x9A]], np.uint8), "codebooks": books})
    with pytest.raises(BundleError, match="codebooks"):
        check_arrays("t", "pq", (1, 12), 4, {"codes": ok, "codebooks": books})
