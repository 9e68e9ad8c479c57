"""An honest on-device benchmark: load time and first inference separately,
warm-up, then timed iterations per batch size with p50/p90/p99, mean, CV,
throughput, peak RSS, machine facts and parity against the host's outputs."""
from __future__ import annotations

import hashlib
import time

import numpy as np

from .model import load
from .sysinfo import peak_rss_mb, system_facts


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def bench(path, batches=(1, 64, 256), warmup: int = 20, iters: int = 200, backend: str = "auto",
          min_seconds: float = 0.0) -> dict:
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
        feeds = batch_from_reference(ref_inputs, b)
        for _ in range(warmup):
            model.predict(feeds)
        times = []
        start = time.perf_counter()
        while len(times) < iters or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            model.predict(feeds)
            times.append(time.perf_counter() - t)
        stats = percentiles(times)
        stats["batch"] = int(b)
        stats["throughput_rows_per_s"] = float(b / (np.mean(times))) if times else 0.0
        results.append(stats)
    parity = model.check_parity()
    m = model.manifest
    return {
        "schema": "edgecompress.bench/1",
        "bundle": {"path": str(path), "sha256": _file_sha256(path), "size_bytes": model.bundle.size,
                   "format_version": m.get("format_version"), "model": m.get("model", {}),
                   "plan": [p.get("pass") for p in m.get("plan", [])], "target": m.get("target", {}).get("name")},
        "backend": model.backend,
        "load_s": load_s,
        "first_inference_s": first_s,
        "warmup": warmup,
        "latency": results,
        "peak_rss_mb": peak_rss_mb(),
        "parity": parity,
        "system": system_facts(),
        "emulated": False,
    }


def format_table(result: dict) -> str:
    lines = [f"backend {result['backend']}  load {result['load_s'] * 1e3:.1f} ms  "
             f"first inference {result['first_inference_s'] * 1e3:.2f} ms  "
             f"peak RSS {result['peak_rss_mb']:.1f} MiB  "
             f"parity max|diff| {result['parity']['max_abs_diff']:.2e} "
             f"({'ok' if result['parity']['ok'] else 'FAIL'})",
             f"{'batch':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'cv':>6} {'rows/s':>11}"]
    for r in result["latency"]:
        lines.append(f"{r['batch']:>6} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} "
                     f"{r['mean_ms']:>9.3f} {r['cv']:>6.2f} {r['throughput_rows_per_s']:>11.0f}")
    return "\n".join(lines)
