"""The on-device op profile (``edgecompress-runtime bench --profile``): every node of the
numpy graph timed on this device, aggregated by op and by layer.

One profiled run = the input checks (``inputs.validate``, what ``predict`` does first) and
then the graph through ``GraphExecutor.run_timed``, ``perf_counter`` around each node.
Profiled runs alternate with plain ``predict`` runs, so both see the same machine; a node's
time is its median over the runs, and the sum of the per-node medians is compared to the
whole-model p50 of the plain runs (``sum_vs_whole``: the timers' own cost and ``predict``'s
own bookkeeping make up the difference, small at large batches). The executor's work between
nodes is a row of its own, ``(between nodes)``; the input checks are ``(input checks)``.
A per-node median leaves out stalls that hit a run at a random node (preemption on a busy
board, an emulator's pauses): when they hit most runs the sum falls short of the whole-model
p50, and ``stalled_runs`` (the share of whole runs over 1.5x the sum), ``unstalled_p50_ms``
(the median of the others) and ``profiled_run_p50_ms`` (the median of the profiled runs'
totals) say so.

A node's layer is the module path lowering recorded (``"mod"``) when the graph carries it,
else the module of the parameter it reads (``bottom.0.weight`` -> ``bottom.0``), else
``(forward)`` (glue in the model's own forward(): slices, cat, reshapes, interactions).

LiteRT: ai_edge_litert's Python ``Interpreter`` exposes no op profiler (only whole
invocations; the C++ ``benchmark_model --enable_op_profiling`` has one), so for a bundle
that carries a .tflite the profile lists its ops by type and says per-op times are not
available from Python.
"""
from __future__ import annotations

import time

import numpy as np

INPUT_CHECKS = "(input checks)"
DISPATCH = "(between nodes)"
STALL = 1.5            # a whole run this many times the sum of the per-node medians had a stall


def layer_of(node: dict) -> str:
    if node.get("mod"):
        return str(node["mod"])
    params = []

    def walk(a):
        if isinstance(a, dict) and "p" in a:
            params.append(a["p"])
        elif isinstance(a, list):
            for x in a:
                walk(x)
    walk(node.get("args", []))
    if params:
        name = params[0]
        return name.rsplit(".", 1)[0] if "." in name else name
    return "(forward)"


def profile(path, batch: int = 256, runs: int = 100, warmup: int = 10, min_seconds: float = 0.0,
            model=None, feeds=None) -> dict:
    """Per-node medians over ``runs`` profiled runs (and at least ``min_seconds``) at ``batch``,
    with the whole-model p50 of as many plain ``predict`` runs in between."""
    from .bench import batch_from_reference
    from .inputs import validate
    from .model import load
    model = model or load(path, backend="numpy")
    if model.backend != "numpy":
        from .errors import BackendError
        raise BackendError("the op profile times the numpy graph: load the bundle with backend='numpy'")
    ex = model._backend.executor
    nodes = model.manifest["graph"]["nodes"]
    if feeds is None:
        feeds = batch_from_reference(model.reference()[0], batch)
    clock = time.perf_counter
    spec, oov = model.input_spec, model.stats["oov"]
    for _ in range(max(1, warmup)):
        model.predict(feeds)
        ex.run_timed(validate(spec, feeds, oov), clock, [])
    per_run, whole = [], []
    start = clock()
    while len(per_run) < max(1, runs) or clock() - start < min_seconds:
        t = clock()
        model.predict(feeds)
        whole.append(clock() - t)
        times: list = []
        t = clock()
        checked = validate(spec, feeds, oov)
        t1 = clock()
        times.append(t1 - t)
        ex.run_timed(checked, clock, times)
        times.append(clock() - t1 - sum(times[1:]))      # the executor's own work between nodes
        per_run.append(times)
    med = np.median(np.asarray(per_run, dtype=np.float64), axis=0) * 1e3
    rows = [{"i": -1, "out": INPUT_CHECKS, "op": INPUT_CHECKS, "layer": INPUT_CHECKS, "ms": float(med[0])}]
    rows += [{"i": i, "out": n["out"], "op": n["op"], "layer": layer_of(n), "ms": float(m)}
             for i, (n, m) in enumerate(zip(nodes, med[1:-1]))]
    rows.append({"i": len(nodes), "out": DISPATCH, "op": DISPATCH, "layer": DISPATCH, "ms": float(med[-1])})
    total = float(med.sum())
    whole_p50 = float(np.median(whole) * 1e3)
    run_totals = np.asarray(per_run, dtype=np.float64).sum(axis=1) * 1e3
    whole_ms = np.asarray(whole, dtype=np.float64) * 1e3
    return {"schema": "edgecompress.op-profile/1", "backend": "numpy", "batch": int(batch), "runs": len(per_run),
            "seconds": clock() - start, "nodes": rows, "by_op": _group(rows, "op", total),
            "by_layer": _group(rows, "layer", total), "sum_ms": total, "whole_p50_ms": whole_p50,
            "sum_vs_whole": (total - whole_p50) / whole_p50 if whole_p50 > 0 else None,
            "profiled_run_p50_ms": float(np.median(run_totals)),
            "stalled_runs": float(np.mean(whole_ms > STALL * total)) if total > 0 else 0.0,
            "unstalled_p50_ms": float(np.median(whole_ms[whole_ms <= STALL * total])) if
            np.any(whole_ms <= STALL * total) else None,
            "litert": litert_ops(model.bundle)}


def _group(rows: list, key: str, total: float) -> list:
    out: dict = {}
    for r in rows:
        g = out.setdefault(r[key], {key: r[key], "ms": 0.0, "nodes": 0})
        g["ms"] += r["ms"]
        g["nodes"] += 1
    for g in out.values():
        g["share"] = g["ms"] / total if total > 0 else 0.0
    return sorted(out.values(), key=lambda g: -g["ms"])


def litert_ops(bundle) -> dict | None:
    """The .tflite's ops by type, and why there are no per-op times (None: no .tflite)."""
    art = (bundle.manifest.get("artifacts") or {}).get("litert")
    if not art:
        return None
    out = {"per_op_times": False,
           "reason": "ai_edge_litert's Python Interpreter has no op profiler (whole invocations only); "
                     "use the C++ benchmark_model --enable_op_profiling=true for LiteRT per-op times"}
    try:
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_content=bytes(bundle.members[art["member"]]))
        counts: dict = {}
        for d in it._get_ops_details():
            counts[d["op_name"]] = counts.get(d["op_name"], 0) + 1
        out["ops"] = counts
    except Exception as e:          # not installed here, or an older API: the reason says enough
        out["ops_error"] = f"{type(e).__name__}: {e}"[:200]
    return out


def format_profile(prof: dict, top: int = 10, estimates: dict | None = None) -> str:
    """Top ``top`` ops and layers by measured time; with ``estimates`` ({"by_op", "by_layer"}:
    name -> ms, from the host's latency model) the estimate and its error next to each."""
    est = estimates or {}
    lines = [f"op profile (numpy graph, batch {prof['batch']}, median of {prof['runs']} runs): "
             f"sum of nodes {prof['sum_ms']:.3f} ms vs whole model p50 {prof['whole_p50_ms']:.3f} ms "
             f"({_pct(prof['sum_vs_whole'])})"]
    if prof["sum_vs_whole"] is not None and abs(prof["sum_vs_whole"]) > 0.15:
        lines.append(f"  NOTE: the sum is off by more than 15 %: {prof.get('stalled_runs', 0) * 100:.0f}% of whole "
                     f"runs took over {STALL:g}x the sum (stalls: other processes, preemption, an emulator), which "
                     f"the per-node medians leave out; the median profiled run took "
                     f"{_ms(prof.get('profiled_run_p50_ms'))}, the median run without a stall "
                     f"{_ms(prof.get('unstalled_p50_ms'))}. See the stability verdict; re-run on a quiet board.")
    for key, title in (("op", "by op"), ("layer", "by layer")):
        e = est.get(f"by_{key}") or {}
        head = f"  {title:<28} {'nodes':>5} {'measured ms':>11} {'share':>6}"
        if e:
            head += f" {'estimate ms':>11} {'error':>7}"
        lines.append(head)
        for g in prof[f"by_{key}"][:top]:
            line = f"  {str(g[key])[:28]:<28} {g['nodes']:>5} {g['ms']:>11.4f} {g['share'] * 100:>5.1f}%"
            if e:
                p = e.get(g[key])
                line += f" {'-':>11} {'':>7}" if p is None else \
                    f" {p:>11.4f} {_pct((p - g['ms']) / g['ms'] if g['ms'] > 0 else None):>7}"
            lines.append(line)
    if est:
        lines.append(f"  estimate = {est.get('source', 'the latency model')}; error = (estimate - measured) / measured")
    lt = prof.get("litert")
    if lt:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted((lt.get("ops") or {}).items()))
        lines.append(f"  litert: no per-op times ({lt['reason']})" + (f"; its ops: {ops}" if ops else
                     "; ai_edge_litert is not installed here to list its ops" if lt.get("ops_error") else ""))
    return "\n".join(lines)


def _ms(x) -> str:
    return "-" if x is None else f"{x:.3f} ms"


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.0f}%"
