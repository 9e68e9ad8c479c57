"""Validation: compile other plans, benchmark them on the board and compare the
latency model's estimates (profile coefficients before calibration, the table
after; per app backend its fit) with the measured p50s."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ..plan.latency_table import LatencyTable
from .measure import EMULATED_NOTE, app_backends, bench_plans
from .probes import programs, validation_models, validation_plans


def validate_model(board, table: LatencyTable, *, target: str = "local", models=None, plans=None,
                   batches=None, warmup: int = 10, iters: int = 100, small: bool = False, out_dir=None,
                   reuse: bool = False, repeat: int = 1, min_seconds: float = 0.3, backends=None,
                   progress=print) -> dict:
    """Compile each (model, plan), bench it on the board, and compare the latency
    model's estimates (profile coefficients vs the table) with the measured p50.
    ``reuse``: keep bundles already in ``out_dir`` (same models and plans); ``repeat``:
    benchmark each bundle that many times (separate processes) and use the median p50.
    ``backends``: app backends to validate as well (default: those the board runs and
    this host exports, see ``app_backends``); each is compared with
    ``LatencyModel(backend=...)``, i.e. the table's fit for it, or the numpy estimate
    when the table has none (reported as such)."""
    from ..targets import load_target
    tgt = load_target(target)
    batches = list(batches or tgt.batch_sizes)
    plans = plans or validation_plans()
    models = models or validation_models(small=small)
    if backends is None:
        backends = app_backends({"backends_installed": board.backends()})
    backends = [b for b in backends if b != "numpy"]
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ec-validate-")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, app_rows, skipped = [], [], []
    t0 = time.perf_counter()
    try:
        for vm in models:
            _validate_one(board, vm, table, tgt, plans, batches, backends, rows, app_rows, skipped, progress,
                          warmup=warmup, iters=iters, repeat=repeat, out_dir=out_dir, reuse=reuse,
                          min_seconds=min_seconds)
    finally:
        if tmp is not None:
            tmp.cleanup()
    rep = {"device": board.name, "target": tgt.name, "emulated": table.emulated,
           "note": EMULATED_NOTE if table.emulated else "native timings",
           "plans": len({(r["model"], r["plan"]) for r in rows}), "batches": batches, "repeat": repeat,
           "iters": iters,
           "before": summarize(rows, "ape_before"), "after": summarize(rows, "ape_after"),
           "after_parts_only": summarize(rows, "ape_parts"), "graph_fit": table.has_graph_fit,
           "by_batch": {str(b): {"before": summarize([r for r in rows if r["batch"] == b], "ape_before"),
                                 "after": summarize([r for r in rows if r["batch"] == b], "ape_after")}
                        for b in batches},
           "by_backend": _by_backend(table, rows, app_rows, skipped, backends, batches), "backend_rows": app_rows,
           "rows": rows, "skipped": skipped, "seconds": time.perf_counter() - t0}
    progress(format_validation(rep))
    return rep


def _validate_one(board, vm, table, tgt, plans, batches, backends, rows, app_rows, skipped, progress, *,
                  warmup, iters, repeat, out_dir, reuse, min_seconds) -> None:
    """Bench every plan of one model; append a row per (plan, batch) to ``rows`` and per
    (plan, batch, app backend) to ``app_rows``."""
    from ..plan.latency import LatencyModel, shape_profile
    base, progs = programs(vm, plans)
    prof = shape_profile(base)
    before = LatencyModel(tgt, prof, table=None)
    after = LatencyModel(tgt, prof, table=table)
    # the table without its graph fit: what the per-part sum alone gets (reported, not used)
    parts = LatencyModel(tgt, prof, table=LatencyTable(table.data, graph_fit=False)) \
        if table.has_graph_fit else None
    per_backend = {be: LatencyModel(tgt, prof, table=table, backend=be) for be in backends}
    for pname, prog, path, runs, by_be in bench_plans(board, vm, progs, tgt, batches, warmup, iters, repeat,
                                                      out_dir, reuse, skipped, progress, min_seconds,
                                                      backends=backends):
        meas = by_be["numpy"]
        for b in batches:
            pb, pa = before.estimate(prog, b)["total_s"], after.estimate(prog, b)["total_s"]
            rows.append({"model": vm.name, "plan": pname, "batch": b, "measured_p50_s": meas[b],
                         "before_s": pb, "after_s": pa, "ape_before": ape(pb, meas[b]),
                         "ape_after": ape(pa, meas[b]), "bytes": path.stat().st_size,
                         "parity_ok": all(bool(run.get("parity", {}).get("ok")) for run in runs),
                         "repeats_p50_s": [next(r["p50_ms"] / 1e3 for r in run["latency"]
                                                if int(r["batch"]) == b) for run in runs]})
            rows[-1]["nodes"] = len(prog.graph["nodes"])
            if parts is not None:
                rows[-1]["parts_s"] = parts.estimate(prog, b)["total_s"]
                rows[-1]["ape_parts"] = ape(rows[-1]["parts_s"], meas[b])
            for be in backends:
                if be not in by_be:
                    continue
                est = per_backend[be].estimate(prog, b)
                app_rows.append({"model": vm.name, "plan": pname, "batch": b, "backend": be,
                                 "measured_p50_s": by_be[be][b], "after_s": est["total_s"],
                                 "ape_after": ape(est["total_s"], by_be[be][b]),
                                 "measured": bool(est.get("measured")), "source": est["source"],
                                 "numpy_measured_p50_s": meas[b]})
        progress(f"  {vm.name:<10} {pname:<13} " + "  ".join(
            f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (model {r['before_s'] * 1e3:.3f} -> "
            f"{r['after_s'] * 1e3:.3f})" for r in rows if r["model"] == vm.name and r["plan"] == pname))
        for be in backends:
            mine = [r for r in app_rows if r["model"] == vm.name and r["plan"] == pname and r["backend"] == be]
            if mine:
                progress(f"  {'':<10} {'':<13} {be}: " + "  ".join(
                    f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (model {r['after_s'] * 1e3:.3f})"
                    for r in mine))


def _by_backend(table, rows, app_rows, skipped, backends, batches) -> dict:
    """Per backend (numpy and each app backend) the error summary, or why it was skipped."""
    by_backend = {"numpy": {"source": table.describe(), "measured": True, "after": summarize(rows, "ape_after"),
                            "by_batch": {str(b): summarize([r for r in rows if r["batch"] == b], "ape_after")
                                         for b in batches}}}
    for be in backends:
        mine = [r for r in app_rows if r["backend"] == be]
        if not mine:
            by_backend[be] = {"skipped": "no plan could be measured through it",
                              "errors": [x["error"][:200] for x in skipped if x.get("backend") == be][:3]}
            continue
        by_backend[be] = {"source": mine[0]["source"], "measured": all(r["measured"] for r in mine),
                          "plans": len({(r["model"], r["plan"]) for r in mine}),
                          "after": summarize(mine, "ape_after"),
                          "by_batch": {str(b): summarize([r for r in mine if r["batch"] == b], "ape_after")
                                       for b in batches}}
    return by_backend


def format_validation(rep: dict) -> str:
    b, a = rep["before"], rep["after"]
    lines = [f"latency model vs measured p50 on {rep['device']} ({rep['plans']} plans x batches "
             f"{','.join(map(str, rep['batches']))}){' [' + EMULATED_NOTE + ']' if rep['emulated'] else ''}",
             f"  before calibration (profile {rep['target']} coefficients): median APE {b['median_ape'] * 100:.1f}%, "
             f"mean {b['mean_ape'] * 100:.1f}%, max {b['max_ape'] * 100:.1f}%",
             f"  after calibration (measured table{' + graph fit' if rep.get('graph_fit') else ''}):  "
             f"median APE {a['median_ape'] * 100:.1f}%, mean {a['mean_ape'] * 100:.1f}%, max {a['max_ape'] * 100:.1f}%"]
    p = rep.get("after_parts_only")
    if p:
        lines.append(f"  (the table's sum of parts without the graph fit: median APE {p['median_ape'] * 100:.1f}%, "
                     f"mean {p['mean_ape'] * 100:.1f}%)")
    by = rep.get("by_backend") or {}
    if by:
        lines.append("  per backend (after calibration; APE over every plan x batch):")
        lines.append(f"    {'backend':<11} {'plans':>5} {'median':>7} {'worst':>7} {'within10%':>9}  estimate")
        for be, v in by.items():
            if "after" not in v:
                lines.append(f"    {be:<11} skipped: {v.get('skipped')}")
                continue
            s = v["after"]
            lines.append(f"    {be:<11} {v.get('plans', rep['plans']):>5} {s['median_ape'] * 100:>6.1f}% "
                         f"{s['max_ape'] * 100:>6.1f}% {s['within_10pct'] * 100:>8.0f}%  {v.get('source')}")
    return "\n".join(lines)


def ape(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas


def summarize(rows: list[dict], key: str) -> dict:
    """median / mean / worst absolute percentage error of ``key`` and the share within +-10 %."""
    errs = [r[key] for r in rows if r.get(key) is not None]
    if not errs:
        return {}
    return {"median_ape": float(statistics.median(errs)), "mean_ape": float(statistics.fmean(errs)),
            "max_ape": float(max(errs)), "within_10pct": float(sum(e <= 0.10 for e in errs) / len(errs)),
            "n": len(errs)}
