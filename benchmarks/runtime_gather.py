"""Dequantize-on-gather vs alternatives for row-wise int8 tables in the numpy runtime.

Variants, same table (R x D) and the same ids (Zipf-like, batch B x F fields):
  fp32          plain fp32 table gather (the upper bound on speed, 4x the memory)
  deq_on_gather uint8 codes gathered, then * scale[idx] + bias[idx]   (what the runtime does)
  deq_f16_late  like deq_on_gather but scale/bias kept fp16 and widened per gather
  deq_at_load   the whole table dequantized once at load, then fp32 gathers (fast, no memory saving)
Writes benchmarks/results/runtime_gather.json and prints a table."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgecompress.passes.quantize_embeddings import quantize_rows
from edgecompress_runtime.params import Param

OUT = Path(__file__).parent / "results" / "runtime_gather.json"


def timeit(fn, iters=300, warmup=20):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    t = np.array(t) * 1e6
    return {"p50_us": float(np.percentile(t, 50)), "p99_us": float(np.percentile(t, 99))}


def main():
    rng = np.random.default_rng(0)
    rows = []
    for R, D in ((100_000, 32), (100_000, 64), (1_000_000, 32)):
        w = (rng.standard_normal((R, D)) * 0.05).astype(np.float32)
        codes, scale, bias, _ = quantize_rows(w, 8)
        q = Param("t", "rowwise", {"codes": codes, "scale": scale, "bias": bias}, (R, D), 8)
        f = Param("t", "fp32", {"data": w}, (R, D))
        s32, b32 = scale.astype(np.float32), bias.astype(np.float32)
        full = q.storage_dense()
        for B in (1, 64, 256):
            ids = np.minimum(rng.zipf(1.2, size=(B, 8)) - 1, R - 1)
            variants = {
                "fp32": lambda: f.gather(ids),
                "deq_on_gather": lambda: q.gather(ids),
                "deq_f16_late": lambda: codes[ids].astype(np.float32) * scale[ids].astype(np.float32)[..., None]
                + bias[ids].astype(np.float32)[..., None],
                "deq_at_load": lambda: full[ids],
            }
            res = {k: timeit(v) for k, v in variants.items()}
            rows.append({"rows": R, "dim": D, "batch": B, **{k: v["p50_us"] for k, v in res.items()},
                         "memory_mb": {"fp32": w.nbytes / 1e6, "int8": (codes.nbytes + scale.nbytes * 2) / 1e6,
                                       "int8_widened_scales": (codes.nbytes + s32.nbytes + b32.nbytes) / 1e6}})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"schema": "edgecompress.bench.gather/1", "unit": "p50 microseconds", "rows": rows},
                              indent=1))
    print(f"{'rows':>9} {'dim':>4} {'batch':>5} {'fp32':>8} {'deq_on_gather':>14} {'deq_f16_late':>13} {'deq_at_load':>12}")
    for r in rows:
        print(f"{r['rows']:>9} {r['dim']:>4} {r['batch']:>5} {r['fp32']:>8.1f} {r['deq_on_gather']:>14.1f} "
              f"{r['deq_f16_late']:>13.1f} {r['deq_at_load']:>12.1f}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
