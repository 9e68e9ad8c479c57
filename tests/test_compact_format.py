"""The compact bundle format (issue 16, item 7): for small models the manifest and the container
cost at most 2 KB + 1 % of the parameter bytes, measured from the file (its size minus the raw
bytes of every weight and constant), and the exact size model still equals the file size."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

import edgecompress_runtime as ecr
from edgecompress_runtime.bundle import read_bundle
from edgecompress_runtime.bundle_layout import ARRAYS
from edgecompress_runtime.bundle_writer import bundle_size, in_memory

FIXED = 2048          # bytes
SHARE = 0.01          # of the parameter bytes


def payload_bytes(path) -> int:
    """The raw bytes of every weight and constant the bundle holds, as the runtime reads them."""
    b = read_bundle(path)
    names = [m for p in b.manifest["params"].values() for m in p["members"].values()]
    names += list(b.manifest.get("constants", {}).values())
    return sum(b.array(n).nbytes for n in names)


def overhead(path) -> tuple[int, int]:
    size, payload = path.stat().st_size, payload_bytes(path)
    return size - payload, payload


def _check_small(res):
    over, payload = overhead(res.path)
    assert over <= FIXED + SHARE * payload, (res.path.name, over, payload, FIXED + SHARE * payload)
    # the exact size model: the compile's figure, and the model applied to what a reader gets back
    b = read_bundle(res.path)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    assert res.size_bytes == res.path.stat().st_size == bundle_size(manifest, b.members)
    assert ecr.load(res.path).check_parity()["ok"]
    return over, payload


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny DLRM (two small tables, 4-wide rows): its weights are a few kB."""
    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.train import train
    data = synthetic_ctr(n=2000, vocab_sizes=(50, 20), dense_dim=3, seed=1)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=4, bottom_mlp=(8,), top_mlp=(8,))
    train(model, tr, epochs=1, batch_size=256, lr=3e-3, progress=False)
    return ec.compile(model, target="local", data=te, output=tmp_path_factory.mktemp("tiny") / "tiny.ecb", plan=[],
                      progress=False)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    """MovieLens-100k DLRM (the issue's small real model), fp32 and int4 rows + int8 Linear."""
    import edgecompress as ec
    from edgecompress.data import movielens_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights
    from edgecompress.train import train
    tr, te = movielens_ctr().split((0.9, 0.1), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=32)
    train(model, tr, epochs=1, batch_size=1024, lr=2e-3, progress=False)
    out = tmp_path_factory.mktemp("ml")
    return {plan: ec.compile(model, target="local", data=te, output=out / f"{plan}.ecb", progress=False,
                             plan=[] if plan == "fp32" else [EmbeddingRowwiseQuant(bits=4), LinearInt8Weights()])
            for plan in ("fp32", "int4")}


def test_a_tiny_model_costs_at_most_2kb_plus_1_percent(tiny):
    over, payload = _check_small(tiny)
    assert payload < 4000          # it is tiny: the fixed part is what is measured


def test_synthetic_dlrm_bundles_cost_at_most_2kb_plus_1_percent(bundles):
    for res in bundles.values():
        _check_small(res)


def test_movielens_dlrm_bundles_cost_at_most_2kb_plus_1_percent(movielens):
    for res in movielens.values():
        _check_small(res)


def test_members_are_packed_and_scale_bias_merged(bundles):
    """A quantized bundle: its zip holds the manifest, its hash and one array member, whatever the
    number of arrays; row-wise tables store scale and bias as one [2, rows] array."""
    path = bundles["int8"].path
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(["manifest.json", "manifest.sha256", ARRAYS])
        stored = json.loads(zf.read("manifest.json"))
    assert stored["format_version"] == ecr.FORMAT_VERSION == 2
    rowwise = [p for p in stored["params"].values() if p["kind"] == "rowwise"]
    assert rowwise and all("sb" in p["a"] and "scale" not in p["a"] for p in rowwise)
    for p in rowwise:
        code, shape = stored["arrays"][p["a"]["sb"]]
        assert code == "f2" and shape == [2, p["shape"][0]]
    # the reader sees the roles of version 1: scale and bias, each [rows]
    b = read_bundle(path)
    p = next(p for p in b.manifest["params"].values() if p["kind"] == "rowwise")
    s, bias = b.array(p["members"]["scale"]), b.array(p["members"]["bias"])
    assert s.shape == bias.shape == (p["shape"][0],) and s.dtype == np.float16 and not s.flags.writeable
    # graph nodes are stored as lists (default value names as 0), read as objects with their names
    assert all(isinstance(n, list) for n in stored["graph"]["nodes"]) and any(n[1] == 0 for n in stored["graph"]["nodes"])
    assert all(isinstance(n["out"], str) for n in b.manifest["graph"]["nodes"])
    assert all(isinstance(n, dict) and {"op", "out", "args"} <= set(n) for n in b.manifest["graph"]["nodes"])


def test_what_the_host_measures_is_what_a_reader_gets(bundles):
    b = read_bundle(bundles["int8"].path)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    again = in_memory(manifest, b.members)
    assert again.manifest == b.manifest and again.manifest_bytes == b.manifest_bytes
    assert again.size == b.size == bundles["int8"].path.stat().st_size
    assert all(np.array_equal(again.array(n), b.array(n)) for n in b.members if n.startswith(("arrays/", "reference/")))


def test_reference_rows_are_sized_to_the_model(tiny, bundles):
    from edgecompress.compile import REFERENCE_ROWS
    from edgecompress.export.assemble import MIN_REFERENCE_ROWS
    rows = {}
    for name, res in (("tiny", tiny), ("fp32", bundles["fp32"])):
        inputs, _ = ecr.load(res.path).reference()
        rows[name] = len(next(iter(inputs.values())))
    assert rows["tiny"] == MIN_REFERENCE_ROWS < rows["fp32"] <= REFERENCE_ROWS


def test_a_version_1_bundle_is_refused_naming_both_versions(bundles, tmp_path):
    import hashlib
    src = bundles["fp32"].path
    with zipfile.ZipFile(src) as zf:
        m = json.loads(zf.read("manifest.json"))
        rest = {n: zf.read(n) for n in zf.namelist() if not n.startswith("manifest.")}
    m["format_version"] = 1
    mbytes = json.dumps(m).encode()
    old = tmp_path / "v1.ecb"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("manifest.json", mbytes)
        zf.writestr("manifest.sha256", hashlib.sha256(mbytes).hexdigest() + "\n")
        for n, d in rest.items():
            zf.writestr(n, d)
    with pytest.raises(ecr.BundleError, match=r"format version 1 is older than the version this runtime reads \(2\)"):
        ecr.load(old)


def test_large_reference_rows_go_to_the_array_member(tmp_path):
    """A score per item (retrieval) is too many values to inline: those rows are arrays of arrays.bin."""
    from edgecompress_runtime.bundle_layout import INLINE_VALUES
    from edgecompress_runtime.bundle_writer import write_bundle
    manifest = {"model": {"class": "T", "task": "retrieval"}, "graph": [],
                "inputs": [{"name": "u", "dtype": "int64", "shape": [None, 1], "kind": "ids", "vocab": [10]}],
                "params": {"w": {"kind": "fp32", "shape": [10, 3], "bits": 32, "members": {"data": "arrays/w.data"}}},
                "reference": {"inputs": {"u": "ri"}, "outputs": "ro", "tolerance": 0.0}}
    for n, inline in ((8, True), (INLINE_VALUES, False)):
        members = {"arrays/w.data": np.arange(30, dtype=np.float32).reshape(10, 3), "ri": np.arange(4).reshape(4, 1),
                   "ro": np.linspace(-1, 1, 4 * n).astype(np.float32)}
        path = tmp_path / f"r{n}.ecb"
        assert write_bundle(path, manifest, members) == bundle_size(manifest, members) == path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            stored = json.loads(zf.read("manifest.json"))["reference"]
        assert isinstance(stored["outputs"], list) == inline
        b = read_bundle(path)
        assert np.array_equal(b.array(b.manifest["reference"]["outputs"]), members["ro"])
        assert np.array_equal(b.array(b.manifest["reference"]["inputs"]["u"]), members["ri"])
