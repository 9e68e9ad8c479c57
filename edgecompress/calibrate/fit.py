"""The graph correction and the per-backend fits: probe models measured whole on
the board, compared with the table's sum of parts, and per batch size the
correction (a scale, a per-node term, a fixed term) with the lowest
leave-one-model-out error (``graph_fit`` / ``backend_fits``, see
plan/latency_table.py)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import DeployError
from ..plan.latency_table import LatencyTable
from .measure import app_backends, bench_plans
from .probes import probe_models, probe_plans, programs


# the terms of each fit method: scale * parts_s (+ per_node_s * nodes) (+ fixed_s)
_TERMS = {"parts": (), "scale": ("parts_s",), "scale+node": ("parts_s", "nodes"), "scale+fixed": ("parts_s", "one")}
FIT_METHODS = ("parts", "scale", "scale+node")
# app backends: their time is a fraction of numpy's sum of parts plus a fixed cost per call
# (the interpreter's invoke) that numpy's per-node sum does not have
BACKEND_FIT_METHODS = ("parts", "scale", "scale+node", "scale+fixed")
GRAPH_SCALE_CLIP = (0.2, 5.0)
BACKEND_SCALE_CLIP = (0.01, 20.0)


def _fit(rows: list[dict], how: str, clip=GRAPH_SCALE_CLIP) -> tuple[float, float, float]:
    """(scale, per_node_s, fixed_s) of one method, least squares on the relative error, one refit
    without points off by more than 3x the median residual (a disturbed run)."""
    if how == "parts" or not rows:
        return 1.0, 0.0, 0.0
    terms = _TERMS[how]
    meas = np.array([r["measured_p50_s"] for r in rows])
    a = np.array([[1.0 if t == "one" else r[t] for t in terms] for r in rows]) / meas[:, None]
    keep = np.ones(len(rows), bool)
    fit = (1.0, 0.0, 0.0)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], np.ones(int(keep.sum())), rcond=None)
        c = dict(zip(terms, (float(x) for x in coef)))
        scale = float(np.clip(c["parts_s"], *clip))
        fit = (scale, c.get("nodes", 0.0), c.get("one", 0.0))
        res = np.abs(np.array(_apes(rows, fit)))
        if len(rows) < 6:
            break
        keep = res <= max(3 * float(np.median(res)), 0.05)
    return fit


def _apes(rows: list[dict], fit) -> list[float]:
    scale, per_node, fixed = (tuple(fit) + (0.0, 0.0))[:3]
    return [abs(scale * r["parts_s"] + per_node * r["nodes"] + fixed - r["measured_p50_s"]) / r["measured_p50_s"]
            for r in rows]


def fit_points(rows: list[dict], batches, methods=FIT_METHODS, clip=GRAPH_SCALE_CLIP) -> list[dict]:
    """Per batch size the correction ``scale * parts_s + per_node_s * nodes (+ fixed_s)`` of the
    method (none, a scale, a scale and a per-node term; for app backends also a scale and a
    fixed term) with the lowest leave-one-model-out error: each probe model is predicted by
    the fit on the others, so a correction that does not carry over to models it was not
    fitted on is not used."""
    out = []
    for b in batches:
        pts = [r for r in rows if r["batch"] == b]
        models = sorted({r["model"] for r in pts})
        if len(pts) < 3 or len(models) < 2:
            continue
        cv = {}
        for how in methods:
            errs = []
            for m in models:
                errs += _apes([r for r in pts if r["model"] == m],
                              _fit([r for r in pts if r["model"] != m], how, clip))
            cv[how] = float(np.median(errs))
        how = min(methods, key=lambda k: (round(cv[k], 3), methods.index(k)))
        scale, per_node, fixed = _fit(pts, how, clip)
        out.append({"batch": int(b), "method": how, "scale": scale, "per_node_s": per_node, "fixed_s": fixed,
                    "n": len(pts), "cv_median_ape": cv,
                    "fit_median_ape": float(np.median(_apes(pts, (scale, per_node, fixed)))),
                    "parts_median_ape": float(np.median(_apes(pts, (1.0, 0.0, 0.0))))})
    return out


def fit_graph(board, table: dict, *, target: str, quick: bool = False, warmup: int = 10, iters: int = 100,
              repeat: int = 1, min_seconds: float = 0.3, out_dir=None, models=None, plans=None, backends=(),
              progress=print) -> dict:
    """Measure whole probe models on the board and fit the table's graph correction
    (``graph_fit``, see plan/latency_table.py). The probes are other models than the
    validation set of ``--validate``, so validation measures the fitted model honestly.
    ``backends``: app backends (litert, executorch) to measure the same probes through;
    their fits come back under ``backend_fits`` (a per-backend map of the numpy sum of
    parts to that backend's measured time)."""
    from ..plan.latency import LatencyModel, shape_profile
    from ..targets import load_target
    tgt = load_target(target)
    batches = [int(b) for b in table["batches"]]
    raw = LatencyTable(table, graph_fit=False)
    backends = [b for b in backends if b != "numpy"]
    rows, skipped = [], []
    app_rows: dict[str, list] = {b: [] for b in backends}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ec-graph-fit-") as tmp:
        for vm in models or probe_models(quick=quick):
            base, progs = programs(vm, plans or probe_plans(int(vm.model.config["embedding_dim"])))
            model = LatencyModel(tgt, shape_profile(base), table=raw)
            for pname, prog, _path, _runs, by_be in bench_plans(board, vm, progs, tgt, batches, warmup, iters,
                                                                  repeat, Path(out_dir or tmp), False, skipped,
                                                                  progress, min_seconds, backends=backends):
                meas = by_be["numpy"]
                for b in batches:
                    est = model.estimate(prog, b)
                    rows.append({"model": vm.name, "plan": pname, "batch": b, "measured_p50_s": meas[b],
                                 "parts_s": est["parts_s"], "nodes": est["nodes"]})
                    for be in backends:
                        if be in by_be:
                            app_rows[be].append({**rows[-1], "backend": be, "measured_p50_s": by_be[be][b]})
                progress(f"  probe {vm.name:<18} {pname:<13} " + "  ".join(
                    f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (parts {r['parts_s'] * 1e3:.3f}"
                    + "".join(f", {be} {by_be[be][r['batch']] * 1e3:.3f}" for be in backends if be in by_be) + ")"
                    for r in rows if r["model"] == vm.name and r["plan"] == pname))
    points = fit_points(rows, batches)
    if not points:
        raise DeployError(f"graph fit on {board.name}: too few probe models could be measured "
                          f"({len(skipped)} skipped: {'; '.join(x['error'][:80] for x in skipped[:3])})")
    backend_fits = {}
    for be in backends:
        pts = fit_points(app_rows[be], batches, methods=BACKEND_FIT_METHODS, clip=BACKEND_SCALE_CLIP)
        if pts:
            backend_fits[be] = {
                "base": "numpy sum of parts (the table without its graph fit)",
                "method": "estimate = scale * parts + per_node_s * nodes + fixed_s per batch size; least squares "
                          "on the relative error; per batch the method (parts / scale / scale+node / "
                          "scale+fixed) with the lowest leave-one-model-out error",
                "points": pts, "probes": app_rows[be],
                "skipped": [x for x in skipped if x.get("backend") == be]}
        else:
            progress(f"  {be}: too few probes measured for a fit ({len(app_rows[be])} points); no {be} fit")
    return {"method": "estimate = scale * parts + per_node_s * nodes per batch size; least squares on the relative "
                      "error; per batch the method (parts / scale / scale+node) with the lowest leave-one-model-out "
                      "error",
            "points": points, "probes": rows, "skipped": [x for x in skipped if not x.get("backend")],
            "repeat": repeat, "iters": iters, "backends": list(backend_fits), "backend_fits": backend_fits,
            "seconds": time.perf_counter() - t0}


def add_graph_fit(board, table: dict, *, target: str, progress=print, **kw) -> dict:
    """``fit_graph`` with defaults for the board (emulated: fewer, repeated runs); stores it in the table."""
    if table.get("board", {}).get("emulated"):      # qemu: ~10-100x slower, noisy from run to run
        kw.setdefault("warmup", 10)                  # qemu translates each new code path on first use
        kw.setdefault("iters", 60)
        kw.setdefault("min_seconds", 1.0)
    # the median of 3 runs per probe: under qemu about 1 process in 4 runs 1.5-1.9x slower
    # throughout, and with 2 runs the "median" is their mean, which one such run drags up 35 %
    kw.setdefault("repeat", 3)
    kw.setdefault("quick", bool(table.get("quick")))
    if "backends" not in kw:
        kw["backends"] = app_backends(table)
    progress(f"fitting the graph correction on {board.name} (probe models measured whole"
             f"{'; also through ' + ', '.join(kw['backends']) if kw['backends'] else ''})")
    fit = fit_graph(board, table, target=target, progress=progress, **kw)
    fits = fit.pop("backend_fits", {})
    table["graph_fit"] = fit
    progress("  numpy: " + _describe_points(table["graph_fit"]["points"]))
    if fits:
        table["backend_fits"] = fits
        for be, f in fits.items():
            progress(f"  {be}: " + _describe_points(f["points"]))
    else:
        table.pop("backend_fits", None)
    LatencyTable(table, source=f"table from {board.name}")      # refuse what we could not use
    return table


def _describe_points(points: list[dict]) -> str:
    return ", ".join(f"b={p['batch']}: {p['method']} x{p['scale']:.2f} {p['per_node_s'] * 1e6:+.2f} us/node"
                     f"{' %+.1f us' % (p.get('fixed_s', 0.0) * 1e6) if p.get('fixed_s') else ''} "
                     f"(probes {p['parts_median_ape'] * 100:.0f}% -> {p['fit_median_ape'] * 100:.0f}%, "
                     f"held out {p['cv_median_ape'][p['method']] * 100:.0f}%)" for p in points)
