"""Latency tables: interpolation, schema checks, the runtime's calibrate JSON, the
planner using a table, and calibration + validation on the local board."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from edgecompress.plan.latency_table import (SCHEMA, SCHEMA_VERSION, LatencyTable, LatencyTableError,
                                             load_for_target, resolve_table, save_table)


def synthetic_table(scale: float = 1.0, **over) -> dict:
    """A complete table whose costs are exact power laws (log-log interpolation is exact)."""
    gather = [{"rows": r, "dim": d, "bits": b, "n": n, "s": scale * 1e-6 * n * d / 8 * (1 if b == 32 else 3)}
              for r in (1000, 100_000) for d in (8, 64) for b in (32, 8, 4) for n in (1, 100, 10_000)]
    linear = [{"in": i, "out": o, "act": a, "batch": b, "s": scale * 1e-9 * i * o * b * (2 if a == "dynamic" else 1)}
              for a in ("fp32", "dynamic") for i in (16, 256) for o in (16, 256) for b in (1, 64)]
    bmm = [{"batch": b, "m": m, "k": k, "n": m, "s": scale * 1e-9 * b * m * k * m}
           for b in (1, 64) for m, k in ((4, 8), (16, 32))]
    t = {"schema": SCHEMA, "version": SCHEMA_VERSION, "backend": "numpy", "quick": True, "label": None,
         "board": {"machine": "x86_64", "cpu_model": "test", "emulated": False}, "batches": [1, 64],
         "dequant_at_load_bytes": 1 << 20, "dispatch_s": 1e-7 * scale, "op_overhead_s": 1e-6 * scale,
         "ops": {"identity": {"fixed_s": 1e-7 * scale, "per_value_s": 0.0},
                 "relu": {"fixed_s": 1e-6 * scale, "per_value_s": 1e-9 * scale}},
         "gather": gather, "linear": linear, "bmm": bmm,
         "remap": [{"n": 1, "s": 1e-7}, {"n": 10_000, "s": 1e-4}],
         "memory": [{"bytes": 1 << 20, "s": 1e-4}],
         "validate": {"c0_s": 1e-6, "dense": {"per_input_s": 1e-6, "per_value_s": 0.0},
                      "ids": {"per_input_s": 1e-6, "per_field_s": 1e-6, "per_value_s": 0.0}},
         "predict_overhead_s": 1e-7}
    t.update(over)
    return t


def test_interpolation_log_log_between_and_outside_the_grid():
    t = LatencyTable(synthetic_table())
    # on grid points: the measurement itself
    assert t.gather(rows=100_000, dim=64, bits=32, n=100) == pytest.approx(1e-6 * 100 * 8)
    # between points: power laws are reproduced exactly by log-log interpolation
    assert t.gather(rows=100_000, dim=32, bits=8, n=1000) == pytest.approx(3e-6 * 1000 * 4, rel=1e-9)
    assert t.linear(in_f=64, out_f=100, act="fp32", batch=8) == pytest.approx(1e-9 * 64 * 100 * 8, rel=1e-9)
    assert t.bmm(batch=8, m=8, k=16, n=8) == pytest.approx(1e-9 * 8 * 8 * 16 * 8, rel=1e-9)
    # outside: the edge slope, clipped to <= 1.25 (here the slope is 1: followed)
    assert t.gather(rows=100_000, dim=64, bits=32, n=100_000) == pytest.approx(1e-6 * 100_000 * 8, rel=1e-9)
    assert t.linear(in_f=256, out_f=256, act="fp32", batch=1024) == pytest.approx(1e-9 * 256 * 256 * 1024,
                                                                                 rel=1e-9)
    # an unmeasured width uses the next wider measured one; weight-only int8 uses fp32
    assert t.gather(rows=100_000, dim=64, bits=2, n=100) == t.gather(rows=100_000, dim=64, bits=4, n=100)
    assert t.linear(in_f=16, out_f=16, act="weights", batch=1) == t.linear(in_f=16, out_f=16, act="fp32", batch=1)
    assert t.linear(in_f=16, out_f=16, act="static", batch=1) is None      # not measured: the caller falls back
    # tables dequantized at load by the runtime (<= 1 MiB as fp32) gather like fp32
    assert t.gather(rows=1000, dim=64, bits=4, n=100) == t.gather(rows=1000, dim=64, bits=32, n=100)
    assert t.gather(rows=100_000, dim=64, bits=4, n=100) == pytest.approx(3 * t.gather(100_000, 64, 32, 100))
    # memory: piecewise linear in bytes from 0, last slope beyond
    assert t.memory(0) == 0 and t.memory(1 << 19) == pytest.approx(5e-5) and t.memory(2 << 20) == pytest.approx(2e-4)
    assert t.op_cost("relu", 1000) == pytest.approx(1e-6 + 1e-6)
    assert t.op_cost("never-measured", 0) == pytest.approx(1e-6)     # the median of measured ops


def test_extrapolation_slope_is_clipped():
    data = synthetic_table()
    for r in data["gather"]:
        r["s"] = 1e-6 * r["n"] ** 2            # a steep, implausible growth: capped at slope 1.25 outside
    t = LatencyTable(data)
    inside = t.gather(rows=1000, dim=8, bits=32, n=10_000)
    assert inside == pytest.approx(1e-6 * 1e8)
    assert t.gather(rows=1000, dim=8, bits=32, n=100_000) == pytest.approx(inside * 10 ** 1.25, rel=1e-9)


def test_schema_mismatch_and_bad_tables_are_refused(tmp_path):
    # a version 1 table (measured before the runtime kept its run memory) is refused, not reinterpreted
    with pytest.raises(LatencyTableError, match="schema version 1 is not the version"):
        LatencyTable(synthetic_table(version=1))
    with pytest.raises(LatencyTableError, match="not a latency table"):
        LatencyTable({"schema": "edgecompress.bench/1", "version": 1})
    bad = synthetic_table()
    bad["gather"] = bad["gather"][1:]
    with pytest.raises(LatencyTableError, match="incomplete"):
        LatencyTable(bad)
    p = tmp_path / "t.json"
    p.write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(p)
    # a stored table with another version is an error at compile time, not silently ignored
    (tmp_path / "local.json").write_text(json.dumps(synthetic_table(version=99)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECOMPRESS_LATENCY_DIR", str(tmp_path))
        with pytest.raises(LatencyTableError, match="version 99"):
            load_for_target("local")
        with pytest.raises(LatencyTableError, match="no latency table for 'nope'"):
            resolve_table("nope")


def test_runtime_calibrate_writes_a_versioned_table(tmp_path, monkeypatch):
    from edgecompress_runtime import calibrate as rc
    small = dict(rc.QUICK, gather_rows=[500, 5000], gather_dims=[8, 16], gather_bits=[32, 8], gather_n=[1, 64],
                 linear_sizes=[8, 32], linear_acts=["fp32", "dynamic"], bmm_mk=[(4, 8)],
                 min_total_s=0.002, max_total_s=0.02)
    monkeypatch.setattr(rc, "QUICK", small)
    monkeypatch.delenv("EDGECOMPRESS_EMULATED", raising=False)
    table = rc.calibrate(batches=[1, 8], quick=True, label="unit")
    assert table["schema"] == SCHEMA and table["version"] == SCHEMA_VERSION and table["quick"]
    assert table["label"] == "unit" and table["board"]["machine"] and "numpy" in table["board"]
    assert table["board"]["emulated"] is False
    assert len(table["gather"]) == 2 * 2 * 2 * 2 and len(table["linear"]) == 2 * 2 * 2 * 2
    assert all(r["s"] > 0 for r in table["gather"] + table["linear"] + table["bmm"])
    assert {"relu", "stack", "cat", "index"} <= set(table["ops"]) and table["mixed"]["fixed_s"]
    t = LatencyTable(json.loads(json.dumps(table)))
    assert t.gather(rows=1000, dim=12, bits=8, n=10) > 0 and not t.emulated
    # the CLI verb, and the emulation probe (forced by the board's environment)
    env = {"EDGECOMPRESS_EMULATED": "qemu-user", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "edgecompress_runtime", "calibrate", "--probe"], capture_output=True,
                       text=True, env=env, timeout=60)
    probe = json.loads(r.stdout)
    assert probe["emulated"] and probe["emulator"] == "qemu-user"


def _small_model():
    import torch

    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    data = synthetic_ctr(n=3000, vocab_sizes=(500, 100, 20), dense_dim=4, seed=2)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    return model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,)).eval(), tr, te


def test_planner_uses_the_device_table(tmp_path, monkeypatch):
    import edgecompress as ec
    from edgecompress.passes import DEFAULT_PLAN
    monkeypatch.setenv("EDGECOMPRESS_LATENCY_DIR", str(tmp_path / "lat"))
    model, tr, te = _small_model()
    kw = dict(target="local", data=te, plan=list(DEFAULT_PLAN), formats=[], progress=False)
    base = ec.compile(model, output=tmp_path / "a.ecb", latency_table=False, **kw)
    slow = synthetic_table(scale=1000.0)            # a device 1000x slower than the toy table
    given = ec.compile(model, output=tmp_path / "b.ecb", latency_table=slow, **kw)
    assert given.latency_estimate["64"] != base.latency_estimate["64"]
    assert given.latency_estimate["64"] > 10 * base.latency_estimate["64"]
    # stored for the target: compile picks it up by itself, and says where the estimate came from
    save_table(slow, ["my-board", "local"])
    auto = ec.compile(model, output=tmp_path / "c.ecb", **kw)
    assert auto.latency_estimate == pytest.approx(given.latency_estimate)
    import edgecompress_runtime as ecr
    assert "measured table" in ecr.load(tmp_path / "c.ecb").manifest["metrics"]["latency_model"]
    by_name = ec.compile(model, output=tmp_path / "d.ecb", latency_table="my-board", **kw)
    assert by_name.latency_estimate == pytest.approx(given.latency_estimate)
    off = ec.compile(model, output=tmp_path / "e.ecb", latency_table="none", **kw)
    assert off.latency_estimate == pytest.approx(base.latency_estimate)


def test_bench_shows_predicted_next_to_measured(bundles):
    from edgecompress_runtime.bench import bench, format_table
    res = bench(bundles["int8"].path, batches=(1, 64), warmup=1, iters=5, backend="numpy")
    p = res["prediction"]
    assert p["applies"] and p["target"] == "local" and p["source"] == "profile coefficients"
    for row in res["latency"]:
        assert row["predicted_ms"] == pytest.approx(bundles["int8"].latency_estimate[str(row["batch"])] * 1e3)
        assert row["prediction_error"] == pytest.approx((row["predicted_ms"] - row["p50_ms"]) / row["p50_ms"])
    text = format_table(res)
    assert "predicted ms" in text and "latency estimate for target local" in text and "EMULATED" not in text


def test_estimate_changes_with_the_plan_under_a_table():
    from edgecompress.graph import forward_input_names, lower
    from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Dynamic, MLPNeuronPrune, apply_plan
    from edgecompress.plan.latency import LatencyModel, shape_profile
    from edgecompress.targets import load_target
    model, tr, te = _small_model()
    ex = {k: np.asarray(te.inputs[k][:8]) for k in forward_input_names(model)}
    prog = lower(model, ex)
    lm = LatencyModel(load_target("local"), shape_profile(prog), table=LatencyTable(synthetic_table()))
    fp32 = lm.estimate(prog, 64)
    assert fp32["source"].startswith("measured table") and "input checks" in fp32["by_op"]
    dyn = lm.estimate(apply_plan(prog.copy(), [LinearInt8Dynamic()]), 64)
    assert dyn["by_op"]["linear"] > fp32["by_op"]["linear"]          # dynamic activations measured 2x slower
    pruned = lm.estimate(apply_plan(prog.copy(), [MLPNeuronPrune(keep_ratio=0.5)]), 64)
    assert pruned["by_op"]["linear"] < fp32["by_op"]["linear"]
    q = lm.estimate(apply_plan(prog.copy(), [EmbeddingRowwiseQuant(bits=4)]), 64)
    assert q["by_op"]["embedding_bag"] == pytest.approx(fp32["by_op"]["embedding_bag"])   # small: dequantized at load
    assert math.isfinite(q["total_s"])


def test_calibrate_and_validate_on_the_local_board(tmp_path, monkeypatch, capsys):
    """End to end on this machine (LocalBoard): quick calibration in the board's venv,
    the table stored for the device and its target, then a small validation."""
    from edgecompress.calibrate import ValidationModel, calibrate, validation_plans
    monkeypatch.setenv("EDGECOMPRESS_LATENCY_DIR", str(tmp_path / "lat"))
    model, tr, te = _small_model()
    plans = [p for p in validation_plans() if p[0] in ("fp32", "rows-int4", "mlp50%")]
    out = calibrate("local", quick=True, batches=[1, 16], validate=True, progress=print,
                    fit_kwargs={"iters": 10, "warmup": 2, "plans": plans},
                    validate_kwargs={"models": [ValidationModel("tiny", model, tr, te)], "plans": plans,
                                     "batches": [1, 16], "iters": 10, "warmup": 2, "out_dir": tmp_path / "b"})
    table = out["table"]
    assert table["device"] == "local" and table["target"] == "local" and table["quick"]
    # the plain local board has the numpy runtime only: no app backend is measured, nor fitted
    assert table["backends_installed"] == ["numpy"] and "backend_fits" not in table
    assert sorted(p.rsplit("/", 1)[-1] for p in out["paths"]) == ["local.json"]
    assert load_for_target("local") is not None
    # the graph fit: probe models (not the validation model) measured whole, one point per batch size
    fit = table["graph_fit"]
    assert [p["batch"] for p in fit["points"]] == [1, 16] and all(p["scale"] > 0 for p in fit["points"])
    assert {r["model"] for r in fit["probes"]} == {"probe-dlrm-8x3", "probe-dlrm-32x6"}
    assert all(r["measured_p50_s"] > 0 and r["parts_s"] > 0 and r["nodes"] > 5 for r in fit["probes"])
    assert LatencyTable(json.loads((tmp_path / "lat" / "local.json").read_text())).has_graph_fit
    v = out["validation"]
    assert v["plans"] == 3 and len(v["rows"]) == 6 and not v["emulated"] and v["graph_fit"]
    assert all(r["parts_s"] > 0 for r in v["rows"])
    assert all(r["measured_p50_s"] > 0 and r["after_s"] > 0 and r["before_s"] > 0 for r in v["rows"])
    assert set(v["by_backend"]) == {"numpy"} and v["by_backend"]["numpy"]["after"]["n"] == 6
    assert "median APE" in capsys.readouterr().out
    from edgecompress.report.calibration_page import render_html
    page = render_html(out)
    assert page.count("<circle") == 2 * len(v["rows"]) and "Graph fit" in page and "EMULATED" not in page
    assert all(f"<td>{r['plan']}</td>" in page for r in v["rows"])


def _fit_rows(scale: float, per_node: float, rng, outlier: bool = False) -> list[dict]:
    rows = []
    for i, (parts, nodes) in enumerate([(1e-4, 20), (2e-4, 20), (5e-4, 40), (1e-3, 40), (3e-4, 60), (8e-4, 80),
                                        (2e-3, 60), (4e-4, 30)]):
        for b in (1, 64):
            meas = (scale * parts + per_node * nodes) * (1 + 0.01 * rng.standard_normal())
            if outlier and i == 2 and b == 64:
                meas *= 2.5               # one disturbed run
            rows.append({"model": f"m{i % 3}", "batch": b, "parts_s": parts, "nodes": nodes,
                         "measured_p50_s": meas})
    return rows


def test_graph_fit_recovers_scale_and_node_term_and_ignores_one_outlier():
    from edgecompress.calibrate import fit_points
    rng = np.random.default_rng(0)
    pts = {p["batch"]: p for p in fit_points(_fit_rows(1.3, 2e-6, rng), [1, 64])}
    assert pts[1]["method"] == "scale+node"
    assert pts[1]["scale"] == pytest.approx(1.3, rel=0.05) and pts[1]["per_node_s"] == pytest.approx(2e-6, rel=0.2)
    assert pts[1]["fit_median_ape"] < 0.02 < pts[1]["parts_median_ape"]
    out = {p["batch"]: p for p in fit_points(_fit_rows(1.3, 2e-6, rng, outlier=True), [1, 64])}
    assert out[64]["scale"] == pytest.approx(1.3, rel=0.05)
    # a pure scale is found as such; probes that disagree (no common bias) leave the sum of parts alone
    assert {p["method"] for p in fit_points(_fit_rows(0.7, 0.0, rng), [1, 64])} == {"scale"}
    noisy = _fit_rows(1.0, 0.0, rng)
    for r in noisy:
        r["measured_p50_s"] *= {"m0": 1.6, "m1": 0.6, "m2": 1.0}[r["model"]]
    assert {(p["method"], p["scale"]) for p in fit_points(noisy, [1, 64])} == {("parts", 1.0)}
    assert fit_points(_fit_rows(1.0, 0.0, rng)[:2], [1]) == []        # too few probes: no point


def test_table_applies_its_graph_fit_and_can_be_told_not_to():
    fit = {"points": [{"batch": 1, "scale": 2.0, "per_node_s": 1e-6}, {"batch": 64, "scale": 1.0, "per_node_s": 0.0}]}
    t = LatencyTable(synthetic_table(graph_fit=fit))
    assert t.has_graph_fit and "graph fit" in t.describe()
    assert t.graph_correction(1, 1e-3, 10) == pytest.approx(2e-3 + 1e-5)
    assert t.graph_correction(64, 1e-3, 10) == pytest.approx(1e-3)
    assert t.graph_correction(8, 1e-3, 0) == pytest.approx(1.5e-3)     # linear in log(batch): 8 is halfway
    assert t.graph_correction(1024, 1e-3, 10) == pytest.approx(1e-3)   # flat beyond the fitted sizes
    raw = LatencyTable(synthetic_table(graph_fit=fit), graph_fit=False)
    assert not raw.has_graph_fit and raw.graph_correction(1, 1e-3, 10) == 1e-3
    # the latency model reports the correction as its own line and adds it to the total
    from edgecompress.graph import forward_input_names, lower
    from edgecompress.plan.latency import LatencyModel, shape_profile
    from edgecompress.targets import load_target
    model, tr, te = _small_model()
    prog = lower(model, {k: np.asarray(te.inputs[k][:8]) for k in forward_input_names(model)})
    est = LatencyModel(load_target("local"), shape_profile(prog), table=t).estimate(prog, 1)
    parts = LatencyModel(load_target("local"), shape_profile(prog), table=raw).estimate(prog, 1)
    assert est["parts_s"] == pytest.approx(parts["total_s"])
    assert est["total_s"] == pytest.approx(2 * parts["total_s"] + 1e-6 * est["nodes"])
    assert est["by_op"]["graph fit"] == pytest.approx(est["total_s"] - parts["total_s"])
