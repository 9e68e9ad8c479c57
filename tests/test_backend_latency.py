"""Latency per backend: fits of LiteRT / ExecuTorch time measured on the local board,
LatencyModel's backend fallback, and ``load(backend="auto")`` choosing by the measured
estimates a bundle carries (the target's order breaking ties and applying without them)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_calibration import synthetic_table

import edgecompress_runtime as ecr
from edgecompress.plan.latency_table import LatencyTable
from edgecompress_runtime import backends as rb
from edgecompress_runtime.bundle import read_bundle
from edgecompress_runtime.bundle_writer import write_bundle

APP = [b for b in ("litert", "executorch") if b in rb.available()]


def _tiny(seed: int, dim: int, vocab):
    import torch

    from edgecompress.calibrate import ValidationModel
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    data = synthetic_ctr(n=600, vocab_sizes=vocab, dense_dim=4, seed=seed)
    tr, te = data.split((0.7, 0.3), seed=seed)
    torch.manual_seed(seed)
    model = model_for_data("dlrm", tr, embedding_dim=dim, bottom_mlp=(2 * dim, dim), top_mlp=(2 * dim,)).eval()
    return ValidationModel(f"tiny-{dim}x{len(vocab)}", model, tr, te)


@pytest.fixture(scope="module")
def app_board(tmp_path_factory):
    """A local board venv (numpy + the runtime wheel) that also sees this host's app runtimes."""
    from edgecompress.calibrate import app_backends, app_runtimes_board, open_board
    if len(APP) < 2:
        pytest.skip("LiteRT and ExecuTorch runtimes are not both installed on this host")
    runner = open_board(board=app_runtimes_board(progress=lambda m: None))
    have = runner.backends()
    assert have[0] == "numpy" and set(APP) <= set(have), have
    assert app_backends({"backends_installed": have}) == ["litert", "executorch"]
    return runner


@pytest.fixture(scope="module")
def fitted(app_board, tmp_path_factory):
    """Probe models (3 tiny DLRMs, fp32; the fewest a leave-one-model-out choice works with)
    compiled with .tflite and .pte, measured whole on the board through numpy, LiteRT and
    ExecuTorch, and the fits made from them."""
    from edgecompress.calibrate import fit_graph
    table = synthetic_table()          # numpy's sum of parts (the fit's input); the times are measured
    table["batches"] = [1, 16]
    plans = [("fp32", [])]
    models = [_tiny(1, 4, (300, 50, 10)), _tiny(2, 16, (2000, 400, 60, 8)), _tiny(5, 8, (800, 90, 30, 9, 5))]
    out = tmp_path_factory.mktemp("probes")
    fit = fit_graph(app_board, table, target="local", models=models, plans=plans, backends=APP, warmup=3,
                    iters=20, repeat=1, min_seconds=0.05, out_dir=out, progress=print)
    return {"fit": fit, "table": table, "models": models, "plans": plans, "out": out}


def test_backend_fits_from_real_measurements_on_the_local_board(fitted):
    fit = fitted["fit"]
    fits = fit["backend_fits"]
    assert sorted(fits) == ["executorch", "litert"] and fit["backends"] == list(fits)
    for be, f in fits.items():
        probes = f["probes"]
        assert len(probes) == 3 * 2 and {r["backend"] for r in probes} == {be}
        assert all(r["measured_p50_s"] > 0 and r["parts_s"] > 0 and r["nodes"] > 5 for r in probes)
        # each backend's own timings, not numpy's copied over
        numpy_meas = {(r["model"], r["plan"], r["batch"]): r["measured_p50_s"] for r in fit["probes"]}
        assert any(r["measured_p50_s"] != numpy_meas[(r["model"], r["plan"], r["batch"])] for r in probes)
        assert [p["batch"] for p in f["points"]] == [1, 16]
        for p in f["points"]:
            assert p["method"] in ("parts", "scale", "scale+node", "scale+fixed") and p["scale"] > 0
            assert set(p["cv_median_ape"]) == {"parts", "scale", "scale+node", "scale+fixed"}
            # the chosen method is the one with the lowest held-out error
            assert p["cv_median_ape"][p["method"]] == pytest.approx(min(p["cv_median_ape"].values()), abs=1e-3)
            # the fit reproduces the probes it was fitted on: the estimate it gives is what _apes says
            rows = [r for r in probes if r["batch"] == p["batch"]]
            est = [p["scale"] * r["parts_s"] + p["per_node_s"] * r["nodes"] + p["fixed_s"] for r in rows]
            med = float(np.median([abs(e - r["measured_p50_s"]) / r["measured_p50_s"] for e, r in zip(est, rows)]))
            assert med == pytest.approx(p["fit_median_ape"], rel=1e-6)
            assert p["fit_median_ape"] <= p["parts_median_ape"] + 1e-9 or p["method"] == "parts"
    # stored in the table, readable, and used by LatencyModel(backend=...)
    table = dict(fitted["table"], graph_fit={k: v for k, v in fit.items() if k != "backend_fits"},
                 backend_fits=fits)
    t = LatencyTable(json.loads(json.dumps(table)))
    assert t.backends == ["numpy", "executorch", "litert"] and t.has_backend_fit("litert")
    r = fits["litert"]["probes"][0]
    p1 = next(p for p in fits["litert"]["points"] if p["batch"] == r["batch"])
    assert t.backend_estimate("litert", r["batch"], r["parts_s"], r["nodes"]) == pytest.approx(
        max(p1["scale"] * r["parts_s"] + p1["per_node_s"] * r["nodes"] + p1["fixed_s"], 0.05 * r["parts_s"]))
    assert t.backend_estimate("tvm", 1, 1e-3, 10) is None


def test_validation_reports_error_per_backend(app_board, fitted):
    """validate_model on bundles of the probes (reused, two models): per backend median / worst
    APE and the share within +-10 %; LiteRT with its fit, ExecuTorch without one (the numpy
    estimate stands in, and the report says so)."""
    from edgecompress.calibrate import format_validation, validate_model
    fit = fitted["fit"]
    table = dict(fitted["table"], graph_fit={k: v for k, v in fit.items() if k != "backend_fits"},
                 backend_fits={"litert": fit["backend_fits"]["litert"]})
    rep = validate_model(app_board, LatencyTable(table), target="local", models=fitted["models"][:2],
                         plans=fitted["plans"], batches=[1, 16], warmup=3, iters=20, min_seconds=0.05,
                         out_dir=fitted["out"], reuse=True, backends=APP, progress=lambda m: None)
    by = rep["by_backend"]
    assert set(by) == {"numpy", "litert", "executorch"}
    for be in by:
        s = by[be]["after"]
        assert s["n"] == 2 * 2 and 0 <= s["median_ape"] <= s["max_ape"] and 0.0 <= s["within_10pct"] <= 1.0
        rows = [r for r in rep["backend_rows"] if r["backend"] == be] if be != "numpy" else rep["rows"]
        errs = sorted(r["ape_after"] for r in rows)
        assert s["max_ape"] == pytest.approx(errs[-1])
        assert s["within_10pct"] == pytest.approx(sum(e <= 0.1 for e in errs) / len(errs))
    assert by["litert"]["measured"] and "litert fit" in by["litert"]["source"]
    assert not by["executorch"]["measured"]
    assert by["executorch"]["source"].startswith("numpy estimate (no executorch measurement")
    # the fallback's figures are the numpy estimate itself
    ex = [r for r in rep["backend_rows"] if r["backend"] == "executorch"]
    num = {(r["model"], r["plan"], r["batch"]): r["after_s"] for r in rep["rows"]}
    assert all(r["after_s"] == pytest.approx(num[(r["model"], r["plan"], r["batch"])]) for r in ex)
    text = format_validation(rep)
    assert "per backend" in text and "litert" in text and "within10%" in text


def _program():
    from edgecompress.graph import forward_input_names, lower
    vm = _tiny(3, 8, (500, 100, 20))
    return lower(vm.model, {k: np.asarray(vm.test.inputs[k][:8]) for k in forward_input_names(vm.model)})


def test_latency_model_backend_fallback_says_so():
    from edgecompress.plan.latency import LatencyModel, estimates_by_backend, shape_profile
    from edgecompress.targets import load_target
    prog = _program()
    tgt, prof = load_target("local"), shape_profile(prog)
    fits = {"litert": {"points": [{"batch": 1, "scale": 0.25, "per_node_s": 0.0, "fixed_s": 2e-5},
                                  {"batch": 64, "scale": 0.5, "per_node_s": 0.0, "fixed_s": 0.0}]}}
    t = LatencyTable(synthetic_table(backend_fits=fits))
    numpy = LatencyModel(tgt, prof, table=t).estimate(prog, 1)
    lit = LatencyModel(tgt, prof, table=t, backend="litert").estimate(prog, 1)
    assert numpy["backend"] == "numpy" and numpy["measured"]
    assert lit["measured"] and lit["source"].endswith("litert fit") and lit["backend"] == "litert"
    assert lit["total_s"] == pytest.approx(0.25 * lit["parts_s"] + 2e-5)
    assert LatencyModel(tgt, prof, table=t, backend="litert").estimate(prog, 64)["total_s"] == pytest.approx(
        0.5 * LatencyModel(tgt, prof, table=t).estimate(prog, 64)["parts_s"])
    # a table without an executorch fit: the numpy estimate, and the source says so
    ex = LatencyModel(tgt, prof, table=t, backend="executorch").estimate(prog, 1)
    assert ex["total_s"] == pytest.approx(numpy["total_s"]) and not ex["measured"] and ex["estimated_as"] == "numpy"
    assert ex["source"].startswith("numpy estimate (no executorch measurement; measured table")
    # no table at all: the profile's coefficients, for numpy and (as a stand-in) for litert
    none = LatencyModel(tgt, prof, table=None, backend="litert").estimate(prog, 1)
    assert none["source"] == "numpy estimate (no litert measurement; profile coefficients)"
    assert none["total_s"] == pytest.approx(LatencyModel(tgt, prof).estimate(prog, 1)["total_s"])
    with pytest.raises(ValueError, match="unknown backend"):
        LatencyModel(tgt, prof, backend="tvm")
    # what compile() stores in the manifest
    by = estimates_by_backend(prog, "local", t, batches=[1, 64], backends=["numpy", "litert", "executorch"])
    assert by["numpy"]["source"] == by["litert"]["source"] == "table:" + (t.device or "<dict>")
    assert by["executorch"]["source"] == "numpy-estimate:" + by["numpy"]["source"]
    assert by["litert"]["s"]["1"] == pytest.approx(lit["total_s"]) and set(by["numpy"]["s"]) == {"1", "64"}
    assert by["executorch"]["s"] == by["numpy"]["s"] and "no executorch measurement" in by["executorch"]["model"]
    prof_only = estimates_by_backend(prog, "local", None, batches=[1], backends=["numpy", "litert"])
    assert prof_only["numpy"]["source"] == "profile" and prof_only["litert"]["source"] == "numpy-estimate:profile"
    assert [rb.is_measured(v) for v in (by["numpy"], by["litert"], by["executorch"], prof_only["numpy"])] == \
        [True, True, False, False]


def test_old_tables_without_backend_fits_still_load():
    t = LatencyTable(synthetic_table())
    assert t.backends == ["numpy"] and not t.has_backend_fit("litert")
    assert t.backend_estimate("litert", 1, 1e-3, 10) is None


# ---------------------------------------------------------------------------- load(backend="auto")


@pytest.fixture(scope="module")
def app_bundle(fitted):
    """A tiny DLRM compiled with .tflite and .pte: one of the probe bundles above (a compile
    with both exports costs ~10 s; the tests below edit its manifest)."""
    path = fitted["out"] / "tiny-8x5-fp32+litert+executorch.ecb"
    assert set(rb.carried(read_bundle(path))) == {"numpy", "litert", "executorch"}
    return path


def _with(src, dst, target_backends, by_backend=None, batch=64):
    b = read_bundle(src)
    man = json.loads(json.dumps(b.manifest))
    man["target"]["backends"] = list(target_backends)
    metrics = man.setdefault("metrics", {})
    metrics.pop("latency_by_backend", None)
    metrics.pop("latency_batch", None)
    if by_backend is not None:
        metrics["latency_by_backend"] = by_backend
        metrics["latency_batch"] = batch
    members = {k: v for k, v in b.members.items()}
    write_bundle(dst, man, members)
    return dst


def _est(source, **s):
    return {"source": source, "s": {k[1:]: v for k, v in s.items()}}


def test_auto_picks_the_backend_measured_fastest(app_bundle, tmp_path):
    order = ["numpy", "executorch", "litert"]
    by = {"numpy": _est("table:local", b1=2e-4, b64=9e-4), "litert": _est("table:local", b1=5e-5, b64=3e-4),
          "executorch": _est("table:local", b1=9e-5, b64=6e-4)}
    m = ecr.load(_with(app_bundle, tmp_path / "a.ecb", order, by), backend="auto")
    assert m.backend == "litert"
    assert m.backend_reason.startswith("measured fastest at batch 64: litert 0.300 ms < executorch 0.600 ms "
                                       "< numpy 0.900 ms (table:local)")
    assert m.check_parity()["ok"]
    # at another latency batch another backend is fastest
    by["executorch"]["s"]["1"] = 1e-5
    m1 = ecr.load(_with(app_bundle, tmp_path / "b.ecb", order, by, batch=1))
    assert m1.backend == "executorch" and "at batch 1" in m1.backend_reason
    # the measured choice overrides the target's order; an explicit backend is never overridden
    e = ecr.load(tmp_path / "a.ecb", backend="numpy")
    assert e.backend == "numpy" and e.backend_reason == "requested explicitly"


def test_auto_ties_and_missing_measurements_follow_the_target(app_bundle, tmp_path):
    # within 5 %: a tie, broken by the target's order
    tie = {"numpy": _est("table:local", b64=1.00e-3), "litert": _est("table:local", b64=0.98e-3),
           "executorch": _est("table:local", b64=5e-3)}
    m = ecr.load(_with(app_bundle, tmp_path / "t.ecb", ["numpy", "litert"], tie))
    assert m.backend == "numpy"
    assert "within 5% of the fastest for numpy, litert" in m.backend_reason and "breaks the tie" in m.backend_reason
    assert rb.candidates(read_bundle(tmp_path / "t.ecb")) == ["numpy", "litert", "executorch"]
    # no estimates at all: the target's order, and the reason says so
    m = ecr.load(_with(app_bundle, tmp_path / "n.ecb", ["executorch", "litert", "numpy"]))
    assert m.backend == "executorch"
    assert m.backend_reason == ("the target's order (executorch, litert, numpy): no measured latency estimates in "
                                "the bundle")
    # estimates that were not measured (profile, numpy stand-ins) do not count
    unmeasured = {"numpy": _est("profile", b64=9e-3), "litert": _est("numpy-estimate:profile", b64=1e-6),
                  "executorch": _est("numpy-estimate:table:local", b64=1e-6)}
    m = ecr.load(_with(app_bundle, tmp_path / "u.ecb", ["numpy", "litert"], unmeasured))
    assert m.backend == "numpy" and "no usable backend has a measured estimate at batch 64" in m.backend_reason
    # one measured backend alone is no comparison: the target's order
    one = dict(unmeasured, litert=_est("table:local", b64=1e-6))
    m = ecr.load(_with(app_bundle, tmp_path / "o.ecb", ["numpy", "litert"], one))
    assert m.backend == "numpy" and "only litert has a measured estimate" in m.backend_reason
    # measured estimates only for the latency batch count: none at batch 256 -> the target's order
    m = ecr.load(_with(app_bundle, tmp_path / "x.ecb", ["litert", "numpy"], tie, batch=256))
    assert m.backend == "litert" and "at batch 256" in m.backend_reason


def test_auto_skips_backends_not_installed_here(app_bundle, tmp_path, monkeypatch):
    by = {"numpy": _est("table:local", b64=9e-4), "litert": _est("table:local", b64=3e-4),
          "executorch": _est("table:local", b64=6e-4)}
    path = _with(app_bundle, tmp_path / "h.ecb", ["numpy"], by)
    monkeypatch.setenv("EDGECOMPRESS_HIDE_PACKAGES", "ai_edge_litert,tflite_runtime")
    m = ecr.load(path)
    assert m.backend == "executorch" and "executorch 0.600 ms < numpy 0.900 ms" in m.backend_reason
    assert "litert" not in m.backend_reason


def test_bench_says_why_it_chose_and_predicts_that_backend(app_bundle, tmp_path):
    from edgecompress_runtime.bench import bench, format_table
    by = {"numpy": _est("table:local", b1=2e-4, b64=9e-4), "litert": _est("table:local", b1=5e-5, b64=3e-4)}
    path = _with(app_bundle, tmp_path / "b.ecb", ["numpy", "litert"], by)
    res = bench(path, batches=(1,), warmup=1, iters=5)
    assert res["backend"] == "litert" and res["backend_reason"].startswith("measured fastest at batch 64")
    assert res["latency"][0]["predicted_ms"] == pytest.approx(5e-5 * 1e3)
    text = format_table(res)
    assert text.splitlines()[0].startswith("backend litert: measured fastest at batch 64: litert 0.300 ms")
    assert "backend litert" in text.splitlines()[-1] or any("backend litert)" in ln for ln in text.splitlines())
    # the runtime CLI prints the same reason
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "edgecompress_runtime", "info", str(path)], capture_output=True,
                       text=True, timeout=300)
    assert "backend  litert: measured fastest at batch 64" in r.stdout, r.stderr[-500:]
