"""The memory budget holds for every format that ships (the numpy bundle, the .pte, the .tflite),
in exact bytes; a plan or a budget that cannot hold is refused per format; held-out rows that
repeat training rows are called out."""
from __future__ import annotations

import dataclasses
import json
import zipfile

import pytest

import edgecompress as ec
from edgecompress.export.artifacts import available_formats
from edgecompress.passes import DEFAULT_PLAN
from edgecompress.errors import BudgetError
from edgecompress.targets import load_target

needs_export = pytest.mark.skipif(any(available_formats()[f] for f in ("executorch", "litert")),
                                  reason="needs pip install 'edgecompress[export]'")


@pytest.fixture(scope="module")
def target():
    # two LiteRT signatures keep the exports quick
    return dataclasses.replace(load_target("local"), batch_sizes=(1, 64))


def _members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename: i.file_size for i in z.infolist()}


@needs_export
def test_searched_plan_fits_every_shipped_format_in_exact_bytes(trained_dlrm, ctr_data, bundles, target, tmp_path):
    train_ds, test_ds = ctr_data
    budget = bundles["fp32"].model_bytes // 4
    res = ec.compile(trained_dlrm, target=target, data=test_ds, train_data=train_ds, output=tmp_path / "m.ecb",
                     memory_budget=budget, latency_budget="1s@64", formats=["executorch", "litert"], progress=False)
    members = _members(res.path)
    assert set(res.formats) == {"numpy", "executorch", "litert"}
    assert members["artifacts/model.pte"] == res.formats["executorch"]["bytes"] <= budget
    assert members["artifacts/model.tflite"] == res.formats["litert"]["bytes"] <= budget
    assert res.formats["numpy"]["bytes"] == res.model_bytes <= budget
    for fmt, row in res.formats.items():
        assert row["fits"] and row["memory_budget"] == budget
        assert 0.5 < row["metrics"]["auc"] < 1 and abs(row["metrics"]["auc"] - res.metrics_after["auc"]) <= 5e-4
        assert row["vs_source"]["rows"] == 1000
    # the tensors are part of each artifact; the rest is its graph
    assert all(res.search.chosen.tensor_bytes[f] < res.formats[f]["bytes"] for f in ("executorch", "litert"))


@needs_export
def test_given_plan_over_budget_in_one_format_is_refused_and_nothing_written(trained_dlrm, ctr_data, bundles,
                                                                              target, tmp_path):
    _, test_ds = ctr_data
    numpy_bytes = bundles["int8"].model_bytes      # the same plan, numpy only
    out = tmp_path / "m.ecb"
    with pytest.raises(BudgetError) as info:
        ec.compile(trained_dlrm, target=target, data=test_ds, output=out, plan=list(DEFAULT_PLAN),
                   memory_budget=numpy_bytes + 1000, formats=["litert"], progress=False)
    msg = str(info.value)
    assert info.value.exit_code == 3
    import re
    got = int(re.search(r"numpy bundle ([\d,]+) B;", msg).group(1).replace(",", ""))
    assert abs(got - numpy_bytes) < 200          # the same plan; the manifest names another target
    tflite = int(re.search(r"litert artifact ([\d,]+) B \(over\)", msg).group(1).replace(",", ""))
    assert tflite > numpy_bytes + 1000
    assert not out.exists()


@needs_export
def test_no_plan_fits_names_each_format_and_still_writes_the_report(trained_dlrm, ctr_data, target, tmp_path):
    train_ds, test_ds = ctr_data
    with pytest.raises(BudgetError) as info:
        ec.compile(trained_dlrm, target=target, data=test_ds, train_data=train_ds, output=tmp_path / "m.ecb",
                   memory_budget=20_000, latency_budget="1s@64", formats=["executorch"], report=tmp_path / "rep",
                   progress=False)
    msg = str(info.value)
    assert "numpy: smallest plan" in msg and "executorch: smallest plan" in msg and "over the memory budget" in msg
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["budgets"]["memory_bytes"] == 20_000 and set(rep["formats"]) == {"numpy", "executorch"}
    assert len(rep["plans"]) > 10 and all(max(p["bytes"].values()) > 20_000 for p in rep["plans"])
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Bytes per shipped format" in page and "(over)" in page and "<svg" in page
    assert not (tmp_path / "m.ecb").exists()


def test_held_out_rows_that_repeat_train_rows_are_called_out(trained_dlrm, ctr_data, tmp_path):
    train_ds, test_ds = ctr_data
    import numpy as np
    leaked = train_ds.take(np.arange(300))
    res = ec.compile(trained_dlrm, target="local", data=leaked, train_data=train_ds, output=tmp_path / "m.ecb",
                     plan=list(DEFAULT_PLAN), progress=False)
    assert any("300 of 300 test rows also appear among the train rows" in w for w in res.warnings)
    clean = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "c.ecb",
                       plan=list(DEFAULT_PLAN), progress=False)
    assert not any("also appear among the train rows" in w for w in clean.warnings)


@needs_export
def test_default_format_no_plan_fits_is_left_out_with_a_note(trained_dlrm, ctr_data, bundles, tmp_path, monkeypatch):
    train_ds, test_ds = ctr_data
    monkeypatch.delenv("EDGECOMPRESS_FORMATS", raising=False)       # the target's formats: numpy + litert
    tgt = dataclasses.replace(load_target("local"), batch_sizes=(1, 64), backends=("numpy", "litert"))
    budget = bundles["fp32"].model_bytes // 16
    res = ec.compile(trained_dlrm, target=tgt, data=test_ds, train_data=train_ds, output=tmp_path / "m.ecb",
                     memory_budget=budget, latency_budget="1s@64", progress=False)
    note = [w for w in res.warnings if w.startswith("litert artifact not produced")]
    assert note and f"memory budget of {budget:,} B in litert (smallest" in note[0], res.warnings
    assert set(res.formats) == {"numpy"} and res.model_bytes <= budget
    assert not any(m.startswith("artifacts/") for m in _members(res.path))
