"""The compiler: each pass (shapes, bytes, error bounds), plan replay, budgets,
the infeasible-budget message, exact sizes and the report."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.graph import lower
from edgecompress.passes import (Distill, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                                 LinearInt8Dynamic, LinearInt8Static, LinearInt8Weights, LinearSparsePrune,
                                 MLPNeuronPrune, PassContext, apply_plan, find_groups, plan_from_json)
from edgecompress.errors import BudgetError
from edgecompress_runtime.bundle_writer import bundle_size
from edgecompress_runtime.backends.numpy_graph import GraphExecutor

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def program(trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    return lower(trained_dlrm, {k: v[:8] for k, v in test_ds.inputs.items()})


@pytest.fixture(scope="module")
def ctx(trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    return PassContext(teacher=trained_dlrm, train_data=train_ds, calibration_data=test_ds)


def _run(prog, inputs):
    ex = GraphExecutor(prog.graph, {k: v.to_runtime(k) for k, v in prog.params.items()}, prog.constants)
    return np.asarray(ex.run(inputs)).reshape(-1)


@pytest.fixture(scope="module")
def batch(ctr_data):
    return {k: v[:2000] for k, v in ctr_data[1].inputs.items()}


def test_row_prune_keeps_frequent_rows_exactly(program, ctx, ctr_data):
    table = program.tables()[0]
    p = apply_plan(program.copy(), [EmbeddingRowPrune(keep_ratio=0.25, tables=(table,))], ctx)
    sp = p.params[table]
    rows = program.params[table].shape[0]
    keep = round(rows * 0.25)
    assert sp.arrays["data"].shape == (keep + 1, 32) and sp.arrays["remap"].shape == (rows,)
    assert sp.arrays["remap"].dtype == np.int16
    counts = ctx.id_counts(program, table)
    rt, orig = sp.to_runtime(table), program.params[table].arrays["data"]
    top = np.argsort(-counts, kind="stable")[:10]
    np.testing.assert_array_equal(rt.gather(top), orig[top])            # frequent rows untouched
    rare = np.argsort(counts, kind="stable")[:10]
    assert np.allclose(rt.gather(rare), rt.gather(rare[:1]))            # rare rows share the fallback
    assert sp.info["traffic_covered"] > 0.6                             # Zipf: a quarter of rows covers most ids
    assert sp.nbytes == (keep + 1) * 32 * 4 + rows * 2


def test_dim_reduce_is_the_best_low_rank_fit(program):
    table = program.tables()[0]
    p = apply_plan(program.copy(), [EmbeddingDimReduce(dim=8, tables=(table,))])
    sp = p.params[table]
    w = program.params[table].arrays["data"]
    assert sp.arrays["data"].shape == (w.shape[0], 8) and sp.arrays["proj"].shape == (8, 32)
    approx = sp.to_runtime(table).dense()
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    best = np.sqrt((s[8:] ** 2).sum())
    assert np.linalg.norm(approx - w) == pytest.approx(best, rel=1e-3)


def test_mlp_prune_groups_and_widths(program, batch):
    groups = find_groups(program)
    # bottom MLP hidden layer and top MLP hidden layer; the interaction-coupled
    # bottom output and the final logit layer are not prunable groups
    assert len(groups) == 2
    p = apply_plan(program.copy(), [MLPNeuronPrune(keep_ratio=0.5)])
    for g in groups:
        assert p.params[g.producer].shape[0] == program.params[g.producer].shape[0] // 2
        assert p.params[g.consumer].shape[1] == program.params[g.consumer].shape[1] // 2
    out = _run(p, batch)
    assert out.shape == (2000,) and np.isfinite(out).all()


def test_mlp_prune_of_dead_neurons_changes_nothing(program, batch):
    prog = program.copy()
    g = find_groups(prog)[1]
    w1 = prog.params[g.producer]
    data = w1.arrays["data"].copy()
    bias = prog.params[g.bias].arrays["data"].copy()
    data[::2] = 0
    bias[::2] = -1.0                      # relu(0*x - 1) = 0: these neurons never fire
    prog.params[g.producer] = w1.replace(arrays={"data": data})
    prog.params[g.bias] = prog.params[g.bias].replace(arrays={"data": bias})
    want = _run(prog, batch)
    pruned = apply_plan(prog.copy(), [MLPNeuronPrune(keep_ratio=0.5, layers=(g.producer,))])
    np.testing.assert_allclose(_run(pruned, batch), want, atol=1e-5)


def test_taylor_importance_prunes(program, ctx, batch):
    p = apply_plan(program.copy(), [MLPNeuronPrune(keep_ratio=0.5, importance="taylor")], ctx)
    assert np.isfinite(_run(p, batch)).all()


@pytest.mark.parametrize("config,tol", [(LinearInt8Weights(), 0.05), (LinearInt8Dynamic(), 0.1),
                                        (LinearInt8Static(), 0.15)])
def test_linear_int8_modes_error_bounds(program, ctx, batch, config, tol):
    want = _run(program, batch)
    p = apply_plan(program.copy(), [config], ctx)
    got = _run(p, batch)
    assert np.abs(got - want).max() < tol
    assert np.abs(got - want).mean() < tol / 5
    lin = [n for n in p.params if p.roles[n] == "linear"]
    assert all(p.params[n].kind == "channel_int8" for n in lin)


def test_embedding_bits_bytes_and_clip_search(program, batch):
    t = program.tables()[0]
    rows = program.params[t].shape[0]
    errs = {}
    for bits in (8, 4, 2):
        for clip in (False, True):
            p = apply_plan(program.copy(), [EmbeddingRowwiseQuant(bits=bits, tables=(t,), clip_search=clip)])
            assert p.params[t].nbytes == rows * (32 * bits // 8 + 4)
            errs[bits, clip] = p.params[t].info["rms_error"]
    assert errs[8, False] < errs[4, False] < errs[2, False]
    assert errs[4, True] <= errs[4, False] and errs[2, True] < errs[2, False]


def test_sparse_pays_or_stays_dense(program, batch):
    p = apply_plan(program.copy(), [LinearSparsePrune(sparsity=0.8, min_params=0)])
    kinds = {n: p.params[n].kind for n in p.params if p.roles[n] == "linear"}
    assert "csr" in kinds.values()
    for n, k in kinds.items():
        if k == "csr":
            assert p.params[n].nbytes < program.params[n].nbytes
            dense = p.params[n].to_runtime(n).dense()
            assert (dense == 0).mean() >= 0.75
    assert np.isfinite(_run(p, batch)).all()


def test_distill_recovers_after_pruning(program, ctx, ctr_data):
    from edgecompress.metrics import evaluate_ctr
    _, test_ds = ctr_data
    pruned = apply_plan(program.copy(), [EmbeddingDimReduce(dim=4), MLPNeuronPrune(keep_ratio=0.25)])
    distilled = apply_plan(pruned.copy(), [Distill(epochs=1, time_budget_s=20)], ctx)
    auc = lambda p: evaluate_ctr(lambda f: _run(p, f), test_ds)["auc"]
    assert auc(distilled) > auc(pruned)
    log = distilled.log[-1]
    assert log["pass"] == "distill" and log["loss_last"] < log["loss_first"]


def test_planner_fits_budget_and_replays(trained_dlrm, ctr_data, tmp_path):
    train_ds, test_ds = ctr_data
    fp32 = ec.compile(trained_dlrm, target="local", data=test_ds, output=tmp_path / "fp32.ecb", plan=[],
                      progress=False)
    budget = fp32.size_bytes // 12
    res = ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, train_data=train_ds,
                     output=tmp_path / "p.ecb", memory_budget=budget, report=tmp_path / "report", progress=False)
    assert res.size_bytes <= budget
    assert res.size_bytes == (tmp_path / "p.ecb").stat().st_size     # the size model is exact
    assert res.metrics_after["auc"] >= fp32.metrics_after["auc"] - 0.01
    assert res.search is not None and len(res.search.candidates) > 10
    for c in res.search.feasible:
        assert c.size_bytes <= budget and c.latency_s <= res.budgets["latency_s"]
    # replay the stored plan: same weights, bit for bit
    m = ecr.load(res.path)
    plan = plan_from_json(m.manifest["plan"])
    again = ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, train_data=train_ds,
                       output=tmp_path / "again.ecb", plan=plan, progress=False)
    m2 = ecr.load(again.path)
    h1 = {k: v["sha256"] for k, v in m.manifest["members"].items() if k.startswith("arrays/")}
    h2 = {k: v["sha256"] for k, v in m2.manifest["members"].items() if k.startswith("arrays/")}
    assert h1 == h2
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["search"]["evaluated"] == len(res.search.candidates) and rep["slices"]
    assert {t["table"] for t in rep["tables"]} == set(res.search.chosen.state.tables)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<svg" in html and "Pareto" in html and "memory budget" in html


def test_infeasible_budget_names_smallest_and_fastest(trained_dlrm, ctr_data, tmp_path):
    _, test_ds = ctr_data
    out = tmp_path / "never.ecb"
    with pytest.raises(BudgetError) as e:
        ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, output=out, memory_budget="20KB",
                   progress=False)
    msg = str(e.value)
    assert "no plan fits" in msg and "numpy: smallest plan" in msg and "fastest plan" in msg and "--memory-budget" in msg
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag,value,expect", [("--memory-budget", "-1MB", "-1MB"),
                                               ("--latency-budget", "2ms@", "2ms@"),
                                               ("--memory-budget", "lots", "lots")])
def test_bad_budget_strings_exit_cleanly(tmp_path, flag, value, expect, trained_dlrm, ctr_data):
    from edgecompress.data import save_npz
    save_npz(ctr_data[1].take(np.arange(300)), tmp_path / "d.npz")
    r = subprocess.run([str(BIN / "edgecompress"), "compile", "--model", "dlrm", "--data", "d.npz",
                        "-o", "m.ecb", f"{flag}={value}", "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr and expect in r.stderr
    assert not (tmp_path / "m.ecb").exists()


def test_ids_outside_the_tables_in_calibration_data(trained_dlrm, ctr_data, tmp_path):
    _, test_ds = ctr_data
    bad = test_ds.take(np.arange(500))
    bad.inputs["sparse"] = bad.inputs["sparse"].copy()
    bad.inputs["sparse"][7, 4] = 100       # field 4 has 100 rows
    bad.vocab["sparse"] = [3000, 2000, 1000, 500, 101]
    with pytest.raises(ec.DataError, match=r"sparse\[field 4\] holds id 100"):
        ec.compile(trained_dlrm, target="local", data=bad, output=tmp_path / "x.ecb", progress=False)


def test_size_model_matches_written_bundles(bundles):
    for res in bundles.values():
        b = ecr.read_bundle(res.path)
        members = dict(b.members)
        manifest = {k: v for k, v in b.manifest.items() if k not in ("members", "format", "format_version")}
        assert bundle_size(manifest, members) == res.path.stat().st_size


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make test installs it)")
def test_report_renders_in_headless_chromium(trained_dlrm, ctr_data, tmp_path):
    _, test_ds = ctr_data
    ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, output=tmp_path / "r.ecb",
               memory_budget="400KB", report=tmp_path / "rep", progress=False)
    page = tmp_path / "rep" / "report.html"
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0"]
    r = subprocess.run(["chromium", *flags, "--window-size=1000,2400", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    console_errors = [l for l in r.stderr.splitlines() if "CONSOLE" in l and ("Error" in l or "Uncaught" in l)]
    assert not console_errors
    # the page is not blank: many distinct colours, and the plots' colours are there
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50
    pix = set(c for _, c in colors)
    assert any(abs(r - 0xd6) < 8 and abs(g - 0x27) < 8 and abs(b - 0x28) < 8 for r, g, b in pix)   # chosen plan
    assert any(abs(r - 0x1f) < 8 and abs(g - 0x77) < 8 and abs(b - 0xb4) < 8 for r, g, b in pix)   # front/bars
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<svg") >= 3 and "Who pays" in dom and "<table>" in dom
