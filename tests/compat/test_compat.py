"""Models built with two public recommendation libraries compile with no wrapper.

Each model of tests/compat/models.py (deepctr-torch 0.3.0, torch-rechub 0.9.0, the
``compat`` extra) is built with the library's own API, trained briefly, and compiled
twice with fixed plans: fp32, and int8 tables + int8 Linear weights. The searched plan
runs in benchmarks/compat.py (too slow for the test suite)."""
from __future__ import annotations

import numpy as np
import pytest

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import Dataset
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights

models = pytest.importorskip("tests.compat.models", reason="the compat extra is not installed")
if not (models.importlib.util.find_spec("deepctr_torch") and models.importlib.util.find_spec("torch_rechub")):
    pytest.skip("deepctr-torch / torch-rechub not installed (pip install -e '.[compat]')", allow_module_level=True)

CASES = list(models.BUILDERS)
HELD_OUT = 1024          # rows the parity is measured on (the compile's data: the rest of the held-out rows)


def dataset(cm, rows=None) -> Dataset:
    """The held-out rows as a Dataset, labelled with the first task's label."""
    idx = slice(None) if rows is None else rows
    inputs = {k: np.asarray(v)[idx] for k, v in cm.inputs.items()}
    label = np.asarray(cm.label)
    label = label[:, 0] if label.ndim == 2 else label
    return Dataset(f"{cm.library}-{cm.name}", "ctr", inputs, label[idx])


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(lib, name):
        if (lib, name) not in cache:
            cache[(lib, name)] = models.build(lib, name)
        return cache[(lib, name)]
    return get


@pytest.mark.parametrize("lib,name", CASES, ids=[f"{lib}-{name}" for lib, name in CASES])
def test_compiles_without_wrapper(lib, name, built, tmp_path):
    cm = built(lib, name)
    n = len(next(iter(cm.inputs.values())))
    assert n >= HELD_OUT + 500
    parity_rows = {k: np.asarray(v)[:HELD_OUT] for k, v in cm.inputs.items()}
    data = dataset(cm, slice(HELD_OUT, None))
    width = cm.outputs_of({k: v[:4] for k, v in parity_rows.items()}).shape[1]

    fp32 = ec.compile(cm.model, target="local", data=data, output=tmp_path / "fp32.ecb", plan=[], progress=False)
    m = ecr.load(fp32.path)
    want = cm.outputs_of(parity_rows)
    got = models.bundle_outputs(m, parity_rows)
    assert got.shape == want.shape == (HELD_OUT, width)
    # 1e-5 absolute; YoutubeDNN's logits are cosines / 0.02 (|x| up to ~20), where float32 rounding of
    # the cosine alone is ~1e-5: there one part in a million of the value is allowed on top
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6 if name == "YoutubeDNN" else 0)
    forms = {o["form"] for o in m.outputs}
    assert forms == ({"logit"} if name == "YoutubeDNN" else {"probability"})      # sigmoid inside forward()

    q = ec.compile(cm.model, target="local", data=data, output=tmp_path / "int8.ecb",
                   plan=[EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()], progress=False)
    qm = ecr.load(q.path)
    # >= 90 % of the embedding bytes quantized (tables are found in ModuleDicts, shared, 1-wide)
    params = qm.manifest["params"]
    tables = {k: v for k, v in m.manifest["params"].items() if v["role"] == "embedding"}
    emb_bytes = sum(int(np.prod(v["shape"])) * 4 for v in tables.values())
    quant_bytes = sum(int(np.prod(v["shape"])) * 4 for k, v in tables.items() if params[k]["kind"] == "rowwise")
    assert emb_bytes and quant_bytes >= 0.9 * emb_bytes, (quant_bytes, emb_bytes)
    if fp32.metrics_before:
        assert abs(q.metrics_after["auc"] - q.metrics_before["auc"]) <= 0.002, (q.metrics_before, q.metrics_after)
    assert q.size_bytes < fp32.size_bytes


def test_searched_plan_on_float_X_and_multi_column_heads(built, tmp_path):
    """The planner counts id frequencies in deepctr's float X, and asks which column of a [B, 2]
    multi-task head to rank plans by instead of guessing."""
    cm = built("deepctr-torch", "DeepFM")
    data = dataset(cm, slice(HELD_OUT, None))
    train = Dataset("train", "ctr", cm.train_inputs, np.asarray(cm.train_label).reshape(len(cm.train_label), -1)[:, 0])
    res = ec.compile(cm.model, target="raspberry-pi-4", data=data, train_data=train, output=tmp_path / "s.ecb",
                     progress=False)
    assert res.plan and res.size_bytes < res.param_bytes["fp32"]
    spec = {s["name"]: s for s in ecr.load(res.path).input_spec}
    assert spec["X"]["kind"] == "dense" and [c["vocab"] for c in spec["X"]["id_columns"]] == list(models.SPARSE_VOCAB.values())
    mt = built("torch-rechub", "MMOE")
    with pytest.raises(ec.DataError, match=r"metric_output=\"output\[0\]\""):
        ec.compile(mt.model, target="raspberry-pi-4", data=dataset(mt), output=tmp_path / "mt.ecb", progress=False)
    assert not (tmp_path / "mt.ecb").exists()
    # naming the column lets the planner search a multi-task model
    res = ec.compile(mt.model, target="raspberry-pi-4", data=dataset(mt), output=tmp_path / "mt.ecb",
                     progress=False, metric_output="output[0]")
    assert res.plan and ecr.load(res.path).manifest["model"]["metric_output"] == [0, 0]


def test_searched_plan_quantizes_cin_convolutions(built, tmp_path):
    """xDeepFM's CIN is a stack of Conv1d: with int8 Linear layers the planner stores their kernels int8 too."""
    cm = built("deepctr-torch", "xDeepFM")
    train = Dataset("train", "ctr", cm.train_inputs, np.asarray(cm.train_label).reshape(-1))
    res = ec.compile(cm.model, target="raspberry-pi-4", data=dataset(cm, slice(HELD_OUT, None)), train_data=train,
                     output=tmp_path / "x.ecb", progress=False)
    params = ecr.load(res.path).manifest["params"]
    convs = {k: v for k, v in params.items() if v["role"] == "conv"}
    assert convs and "conv_int8_weights" in [c.NAME for c in res.plan]
    assert all(v["kind"] == "channel_int8" for v in convs.values())
    assert res.parity["ok"] and abs(res.metrics_after["auc"] - res.metrics_before["auc"]) < 0.02
