"""An honest on-device benchmark: load time and first inference separately,
warm-up, then per batch size timed runs until both a minimum count (``iters``) and a
minimum duration (``min_seconds``) are met (MLPerf-style), with p50/p90/p99 and their
confidence intervals, mean, CV, IQR, p99/p50, throughput and a stability verdict
(stable / noisy / unusable, with the reasons: see stability.py) from what the machine
did meanwhile; peak RSS, machine facts and parity against the host's outputs.
Optional core pinning (``cores``: big, little or 0-3)."""
from __future__ import annotations

import time

import numpy as np

from .bundle import file_sha256
from .model import load
from .stability import judge, overall, summarize
from .sysinfo import emulation, environment, peak_rss_mb, pin, snapshot, system_facts


def batch_from_reference(ref: dict, batch: int, seed: int = 0) -> dict:
    """A batch of real rows: the stored reference inputs resampled to ``batch``."""
    n = len(next(iter(ref.values())))
    idx = np.random.default_rng(seed).integers(0, n, size=batch) if batch != n else np.arange(n)
    return {k: np.ascontiguousarray(v[idx]) for k, v in ref.items()}


def percentiles(times_s) -> dict:
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    mean = float(t.mean())
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": mean, "min_ms": float(t.min()),
            "cv": float(t.std() / mean) if mean > 0 else 0.0, "iters": int(t.size)}


def time_batch(model, feeds: dict, warmup: int, iters: int, min_seconds: float, emulated: bool = False) -> dict:
    """Warm up, then time ``model.predict(feeds)`` until ``iters`` runs AND ``min_seconds``
    are done; the statistics, the environment meanwhile and their verdict."""
    for _ in range(warmup):
        model.predict(feeds)
    before = snapshot()
    times = []
    start = time.perf_counter()
    while len(times) < max(1, iters) or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        model.predict(feeds)
        times.append(time.perf_counter() - t)
    env = environment(before, snapshot(), emulated)
    stats = summarize(times)
    stats.update(judge(stats, env))
    stats["seconds"] = time.perf_counter() - start
    stats["environment"] = env
    return stats


def bench(path, batches=(1, 64, 256), warmup: int = 20, iters: int = 200, backend: str = "auto",
          min_seconds: float = 0.0, cores: str | None = None) -> dict:
    pinning = pin(cores) if cores else None
    emu = emulation()
    t0 = time.perf_counter()
    model = load(path, backend=backend)
    load_s = time.perf_counter() - t0
    ref_inputs, _ = model.reference()
    first_batch = batch_from_reference(ref_inputs, 1)
    t0 = time.perf_counter()
    model.predict(first_batch)
    first_s = time.perf_counter() - t0
    results = []
    for b in batches:
        stats = time_batch(model, batch_from_reference(ref_inputs, b), warmup, iters, min_seconds,
                           emu["emulated"])
        stats["batch"] = int(b)
        stats["throughput_rows_per_s"] = float(b / (stats["mean_ms"] / 1e3)) if stats["mean_ms"] > 0 else 0.0
        results.append(stats)
    parity = model.check_parity()
    m = model.manifest
    prediction = _prediction(m, model.backend, results)
    return {
        "schema": "edgecompress.bench/1",
        "bundle": {"path": str(path), "sha256": file_sha256(path), "size_bytes": model.bundle.size,
                   "format_version": m.get("format_version"), "model": m.get("model", {}),
                   "plan": [p.get("pass") for p in m.get("plan", [])], "target": m.get("target", {}).get("name"),
                   "signature": getattr(model, "signature", None)},
        "backend": model.backend,
        "backend_reason": getattr(model, "backend_reason", None),
        "load_s": load_s,
        "first_inference_s": first_s,
        "warmup": warmup,
        "min_iters": iters,
        "min_seconds": min_seconds,
        "pinning": pinning,
        "latency": results,
        "stability": overall(results),
        "peak_rss_mb": peak_rss_mb(),
        "parity": parity,
        "system": system_facts(),
        "emulated": emu["emulated"],
        "emulation": emu,
        "prediction": prediction,
    }


def _prediction(manifest: dict, backend: str, results: list) -> dict | None:
    """The compiler's latency estimate for this plan next to what was measured, per batch size:
    the estimate for the backend that ran (manifest ``metrics.latency_by_backend[backend]``,
    whose ``source`` says whether it was measured for that backend), else, for numpy,
    ``metrics.latency_estimate_s``; adds ``predicted_ms`` / ``prediction_error`` to the
    latency rows it covers."""
    from .backends import is_measured
    metrics = manifest.get("metrics") or {}
    entry = (metrics.get("latency_by_backend") or {}).get(backend)
    if isinstance(entry, dict) and isinstance(entry.get("s"), dict) and entry["s"]:
        est, applies = entry["s"], True
        source = entry.get("model") or entry.get("source")
        measured = is_measured(entry)
    else:
        est = metrics.get("latency_estimate_s") or {}
        applies, source, measured = backend == "numpy", metrics.get("latency_model"), None
    if not est:
        return None
    per_batch = {}
    for r in results:
        p = est.get(str(r["batch"]))
        if p is None:
            continue
        err = (p * 1e3 - r["p50_ms"]) / r["p50_ms"] if r["p50_ms"] > 0 else None
        per_batch[str(r["batch"])] = {"predicted_ms": p * 1e3, "measured_p50_ms": r["p50_ms"], "error": err}
        if applies:
            r["predicted_ms"] = p * 1e3
            r["prediction_error"] = err
    return {"source": source, "target": (manifest.get("target") or {}).get("name"),
            "backend": backend if applies else "numpy", "applies": applies, "measured_for_backend": measured,
            "per_batch": per_batch}


def format_table(result: dict) -> str:
    lines = []
    if result.get("backend_reason"):
        lines.append(f"backend {result['backend']}: {result['backend_reason']}")
    lines += [f"backend {result['backend']}  load {result['load_s'] * 1e3:.1f} ms  "
             f"first inference {result['first_inference_s'] * 1e3:.2f} ms  "
             f"peak RSS {result['peak_rss_mb']:.1f} MiB  "
             f"parity max|diff| {result['parity']['max_abs_diff']:.2e} "
             f"({'ok' if result['parity']['ok'] else 'FAIL'})",
             f"{'batch':>6} {'p50 ms':>9} {'p50 95% CI':>19} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} "
             f"{'cv':>6} {'p99/p50':>7} {'rows/s':>11} {'runs':>6} {'verdict':>8}"]
    pred = any("predicted_ms" in r for r in result["latency"])
    if pred:
        lines[-1] += f" {'predicted ms':>13} {'error':>7}"
    for r in result["latency"]:
        line = (f"{r['batch']:>6} {r['p50_ms']:>9.3f} {_ci_text(r, 'p50_ms'):>19} {r['p90_ms']:>9.3f} "
                f"{r['p99_ms']:>9.3f} {r['mean_ms']:>9.3f} {r['cv']:>6.2f} {_num(r.get('p99_p50'), 7, 1)} "
                f"{r['throughput_rows_per_s']:>11.0f} {r['iters']:>6} {r.get('verdict', '?').upper():>8}")
        if "predicted_ms" in r:
            err = r.get("prediction_error")
            line += f" {r['predicted_ms']:>13.3f} {'' if err is None else f'{err * 100:+.0f}%':>7}"
        lines.append(line)
    lines += stability_lines(result)
    p = result.get("prediction")
    if p and p.get("withheld"):
        lines.append(f"(predicted vs measured not compared: {p['withheld']})")
    elif pred and p:
        lines.append(f"predicted = the compiler's latency estimate for target {p.get('target')} "
                     f"({p.get('source') or 'latency model'}; backend {p.get('backend')}"
                     f"{'' if p.get('measured_for_backend') is not False else ', not measured for it'}); "
                     "error = (predicted - p50) / p50")
    elif p and not p.get("applies"):
        lines.append(f"(the bundle carries no latency estimate for {result['backend']}; the compiler's estimate "
                     "covers the numpy backend only)")
    if result.get("emulated"):
        lines.append("EMULATED (qemu-user): these timings describe the emulator on its host, not this "
                     "device's speed")
    return "\n".join(lines)


def _num(v, width: int, digits: int) -> str:
    return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def _ci_text(row: dict, key: str) -> str:
    lo, hi = (row.get("ci") or {}).get(key) or (None, None)
    return f"[{'-' if lo is None else f'{lo:.3f}'}, {'-' if hi is None else f'{hi:.3f}'}]"


def stability_lines(result: dict) -> list[str]:
    """The verdict in words: one line overall, one per batch size that is not stable."""
    st = result.get("stability")
    if not st:
        return []
    out = [f"stability: {st['verdict'].upper()}" + ("" if st["verdict"] == "stable" else
                                                     " -- do not compare these numbers as they are")]
    for r in result["latency"]:
        why = [x["text"] for x in r.get("reasons", []) if x["severity"] != "note"]
        notes = [x["text"] for x in r.get("reasons", []) if x["severity"] == "note"]
        if why:
            out.append(f"  b={r['batch']} {r['verdict']}: " + "; ".join(why))
        if notes and r is result["latency"][0]:
            out.append("  note: " + "; ".join(notes))
    first = result.get("rerun")
    if first:
        why = "; ".join(list(dict.fromkeys(x["text"] for x in first["reasons"] if x["severity"] != "note"))[:3])
        kept = first.get("kept", "second")
        out.append(f"  re-run once after a {first.get('cooldown_s', 0):g} s cooldown; kept the {kept} run; the "
                   f"{'first' if kept == 'second' else 'second'} was {first['verdict']}" + (f" ({why})" if why else ""))
    if result.get("pinning"):
        pn = result["pinning"]
        out.append(f"pinned to cores {pn['cpus']} ({pn['spec']})")
    return out


def runnable_backends(path) -> list[str]:
    """Backends installed here that this bundle carries something for, numpy first."""
    from . import backends
    from .bundle import read_bundle
    bundle = read_bundle(path)
    have = set(backends.available())
    return [b for b in backends.carried(bundle) if b in have]


def bench_all(path, batches=(1, 64, 256), warmup: int = 20, iters: int = 200, min_seconds: float = 0.0,
              cores: str | None = None) -> dict:
    """bench() once per runnable backend, same inputs, in this process.
    (``peak_rss_mb`` is the process's peak so far, so it only grows along the list.)"""
    from .bundle import read_bundle
    arts = read_bundle(path).manifest.get("artifacts") or {}
    results = []
    for name in runnable_backends(path):
        r = bench(path, batches=batches, warmup=warmup, iters=iters, backend=name, min_seconds=min_seconds,
                  cores=cores)
        # bytes this backend runs: its artifact, or the whole bundle for numpy
        r["artifact_bytes"] = int(arts[name]["size_bytes"]) if name in arts else int(r["bundle"]["size_bytes"])
        results.append(r)
    return {"schema": "edgecompress.bench-all/1", "bundle": results[0]["bundle"] if results else {"path": str(path)},
            "backends": [r["backend"] for r in results], "results": results}


def format_side_by_side(res: dict) -> str:
    """One row per backend: size of what it runs, parity, p50/p99 per batch, ratio to the fastest p50."""
    results = res["results"]
    if not results:
        return "no backend can run this bundle here"
    batches = [r["batch"] for r in results[0]["latency"]]
    best = {b: min(r["p50_ms"] for x in results for r in x["latency"] if r["batch"] == b) for b in batches}
    head = f"{'backend':<11} {'artifact':>10} {'load ms':>8} {'parity':>9}"
    for b in batches:
        head += f" {'b=' + str(b) + ' p50/p99 ms':>20} {'x':>5}"
    lines = [head]
    for x in results:
        size = x.get("artifact_bytes", x["bundle"]["size_bytes"])
        line = (f"{x['backend']:<11} {size / 1e6:>8.2f}MB {x['load_s'] * 1e3:>8.1f} "
                f"{x['parity']['max_abs_diff']:>8.1e}{'' if x['parity']['ok'] else '!'}")
        for r in x["latency"]:
            flag = "" if r.get("verdict", "stable") == "stable" else "?"
            line += f" {r['p50_ms']:>9.3f} / {r['p99_ms']:>7.3f} {r['p50_ms'] / best[r['batch']]:>5.2f}{flag}"
        lines.append(line)
    lines.append("x = p50 / fastest p50 at that batch; artifact = bytes the backend runs (numpy: whole bundle)")
    noisy = sorted({f"{x['backend']} b={r['batch']}: {r['verdict']}" for x in results for r in x["latency"]
                    if r.get("verdict", "stable") != "stable"})
    if noisy:
        lines.append("? = a noisy or unusable run, not a reliable comparison (" + "; ".join(noisy) + ")")
    return "\n".join(lines)
