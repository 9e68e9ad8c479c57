"""How calibration times a call, and the weights it times calls on."""
from __future__ import annotations

import time

import numpy as np

from ..params import Param, pack_bits, quantize_channels

def timer(fn, cfg) -> float:
    """Median seconds per call of ``fn()`` over many short blocks of calls.

    Blocks are short (~50 us, or one call) so that, like the per-call p50 of
    ``edgecompress-runtime bench``, the median is not inflated when other processes
    share the CPU (a long block is preempted far more often than a short call)."""
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-7)
    number = max(1, int(cfg["min_block_s"] / one))
    blocks, total = [], 0.0
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t
        blocks.append(dt / number)
        total = time.perf_counter() - start
        if (len(blocks) >= 15 and total >= cfg["min_total_s"]) or total >= cfg["max_total_s"] and len(blocks) >= 5:
            break
    return float(np.median(blocks))


def zipf_ids(rng, rows: int, n: int) -> np.ndarray:
    ids = rng.zipf(1.2, size=n) - 1
    return (ids % rows).astype(np.int64)


def table_param(rng, rows: int, dim: int, bits: int) -> Param:
    if bits == 32:
        return Param("t", "fp32", {"data": rng.standard_normal((rows, dim), dtype=np.float32)}, (rows, dim))
    levels = (1 << bits) - 1
    codes = rng.integers(0, levels + 1, size=(rows, dim), dtype=np.uint8)
    p = Param("t", "rowwise", {"codes": pack_bits(codes, bits),
                               "scale": np.full(rows, 0.01, np.float16), "bias": np.zeros(rows, np.float16)},
              (rows, dim), bits=bits)
    p._table = None        # measure the dequantize-on-gather path (the host applies the at-load rule)
    return p



def linear_param(rng, in_f: int, out_f: int, act: str) -> tuple[Param, np.ndarray]:
    w = rng.standard_normal((out_f, in_f), dtype=np.float32) * 0.1
    bias = rng.standard_normal(out_f, dtype=np.float32)
    if act == "fp32":
        return Param("w", "fp32", {"data": w}, w.shape), bias
    codes, scale = quantize_channels(w)
    arrays = {"codes": codes, "scale": scale}
    a = None
    if act == "static":
        arrays["act_scale"] = np.array([0.02], np.float32)
        a = "static"
    elif act == "dynamic":
        a = "dynamic"
    return Param("w", "channel_int8", arrays, w.shape, bits=8, act=a), bias



# Every grid is measured this many times, in separate passes, and each entry keeps the least:
# on a shared VM a slow stretch of tens of ms now and then inflated a whole measurement
# (one pass's Linear costs at batch 256 came out 1.5x), which a median inside one pass
# cannot see. A slow stretch only ever adds time, so the lesser value is the device's.
PASSES = 2


def lesser(passes: list[list[dict]]) -> list[dict]:
    """Rows of the first pass, each with the least ``s`` any pass measured for the same point."""
    best: dict = {}
    for rows in passes:
        for r in rows:
            k = tuple(sorted((f, v) for f, v in r.items() if f != "s"))
            best[k] = min(best.get(k, r["s"]), r["s"])
    return [{**r, "s": best[tuple(sorted((f, v) for f, v in r.items() if f != "s"))]} for r in passes[0]]


def lesser_ops(passes: list[dict]) -> dict:
    """Per op type the least fixed and per-value cost of the passes (raw points of the first)."""
    return {op: {k: (min(p[op][k] for p in passes) if k in ("fixed_s", "per_value_s") else x)
                 for k, x in v.items()} for op, v in passes[0].items()}

