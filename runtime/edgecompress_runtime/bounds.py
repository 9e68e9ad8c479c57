"""Bounded execution: what one predict() call may cost, found and enforced at load.

How shapes are found: the graph is *run* on zero inputs of the declared spec at probe
batches of 32, 64 and 96 rows (valid ids: 0 is in every vocabulary), under a guard that
estimates each node's new memory and FLOPs from its argument shapes *before* running it
(matmul family exactly; shape-creating ops from their shape arguments; gathers from index
shapes; elementwise ops from the broadcast shape; views cost nothing) and refuses the graph
when a probe would exceed 1/``PROBE_SHARE`` of a limit. After each node the memory it really
kept is counted (arrays' underlying buffers, freed after the value's last use, exactly as
``GraphExecutor.run`` frees them), plus the op's own temporaries (its tracemalloc peak:
numpy reports its buffers there; tracing runs during the probe only). Per node, live bytes
at batches 32, 64, 96 are extrapolated to the maximum batch (quadratically when the second
difference is real -- above 4 kB and 5 % of the slope, i.e. B x B values --, else linearly
with the larger slope); the peak is the largest of them. FLOPs likewise.

Why a guarded probe rather than symbolic shape rules for all 240 ops: the probe uses the ops'
own numpy code, so the inferred shapes cannot disagree with what predict() does, and only the
few ops that can *grow* memory or work need a rule (the guard, cost_rules.py); an op without
one is bounded by its arguments' broadcast shape. A hostile graph is refused before its
expensive node runs (the issue's expand to [1, 8192, 8192] + bmm is refused at the first bmm,
before allocating).
The cost of the probe for a real model is four runs at batch <= 96 (the first a warm-up that
fills the weights' caches): 10-200 ms.

Limits (per predict() call at the maximum batch; env-overridable like bundle.py's):
``MAX_PEAK_BYTES`` (intermediates, inputs included) and ``MAX_FLOPS``. The maximum batch is
the caller's ``load(..., max_batch=)``, else the manifest's ``max_batch``, else the largest
batch within the limits, at most ``DEFAULT_MAX_BATCH``. An explicit maximum the graph cannot
meet is refused at load (``BundleError`` naming the limit and the largest batch that fits);
``Model.predict`` refuses bigger batches (``InputError``).
"""
from __future__ import annotations

import math
import os
import tracemalloc
from dataclasses import dataclass

import numpy as np

from .cost_rules import arrays_in, estimate
from .errors import BundleError

MAX_PEAK_BYTES = 1 << 30            # intermediates of one predict() call at the maximum batch
MAX_FLOPS = 500 * 10**9             # ~10 s of numpy on a small board core
DEFAULT_MAX_BATCH = 65536
PROBE_BATCHES = (32, 64, 96)         # evenly spaced; per-row costs dwarf allocator noise; not 1 (squeeze)
CURVE_BYTES, CURVE_SHARE = 4096, 0.05   # a second difference below both is noise, not B x B growth
PROBE_SHARE = 16                    # a probe batch may use 1/16 of a limit
ENV_MAX_PEAK_BYTES = "EDGECOMPRESS_RUNTIME_MAX_PEAK_BYTES"
ENV_MAX_FLOPS = "EDGECOMPRESS_RUNTIME_MAX_FLOPS"


def limit(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise BundleError(f"{env}={raw[:40]!r} is not a number") from None
    if value <= 0:
        raise BundleError(f"{env} must be positive, got {value}")
    return value


@dataclass
class Bounds:
    """The maximum batch and what a call at it costs (estimated at load)."""

    max_batch: int
    source: str                  # "caller", "manifest" or "limits"
    peak_bytes: int              # estimated at max_batch
    flops: int
    limit_bytes: int
    limit_flops: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# --------------------------------------------------------------------------- the probe

class _Live:
    """Bytes held by live values: each underlying buffer counted once, freed with its last user."""

    def __init__(self, exempt: set):
        self.exempt, self.bufs, self.names, self.bytes = exempt, {}, {}, 0

    def add(self, name: str, value) -> None:
        ids = []
        for a in arrays_in([value]):
            if not isinstance(a, np.ndarray):
                continue
            b = a
            while isinstance(b.base, np.ndarray):
                b = b.base
            if id(b) in self.exempt:
                continue
            if id(b) not in self.bufs:
                self.bufs[id(b)] = [b, 0]
                self.bytes += b.nbytes
            self.bufs[id(b)][1] += 1
            ids.append(id(b))
        self.names[name] = ids

    def drop(self, name: str) -> None:
        for i in self.names.pop(name, ()):
            entry = self.bufs[i]
            entry[1] -= 1
            if entry[1] == 0:
                self.bytes -= entry[0].nbytes
                del self.bufs[i]


def probe_feeds(specs: list, batch: int, budget_bytes: int, path: str) -> dict:
    """Zero inputs of the declared shapes and dtypes (0 is a valid id in every field), refused
    before allocating when they alone exceed the probe budget."""
    need = sum(batch * math.prod(s["shape"][1:]) * np.dtype(s["dtype"]).itemsize for s in specs)
    if need > budget_bytes:
        raise BundleError(f"{path}: the declared inputs alone take {_fmt(need)} B at a probe batch of {batch} rows, "
                          f"above the load-time probe budget of {_fmt(budget_bytes)} B "
                          f"(1/{PROBE_SHARE} of ${ENV_MAX_PEAK_BYTES})")
    return {s["name"]: np.zeros([batch] + list(s["shape"][1:]), dtype=np.dtype(s["dtype"])) for s in specs}


def _exempt(executor) -> set:
    ids = set()
    for p in executor._params.values():
        for a in list(p.arrays.values()) + [p._dense, p._wt, p._table, getattr(p, "_qt", None)]:
            if isinstance(a, np.ndarray):
                ids.add(id(a))
    for c in executor._consts.values():
        ids.add(id(c))
    return ids


def _traced_start():
    """Current traced bytes, peak reset (numpy reports its buffers to tracemalloc), or None."""
    if not tracemalloc.is_tracing():
        return None
    tracemalloc.reset_peak()
    return tracemalloc.get_traced_memory()[0]


def _traced_peak(start) -> int:
    return 0 if start is None else max(0, tracemalloc.get_traced_memory()[1] - start)


def run_probe(executor, specs: list, batch: int, budget_bytes: int, budget_flops: int, path: str):
    """Per step: live bytes (peak within the step) and FLOPs, at ``batch`` rows, guarded."""
    env = probe_feeds(specs, batch, budget_bytes, path)
    live = _Live(_exempt(executor))
    for k, v in env.items():
        live.add(k, v)
    peaks, flops, total = [], [], 0
    for i, ((fn, resolvers, out), frees) in enumerate(zip(executor._steps, executor._frees)):
        op = executor.ops[i]
        args = [r(env) for r in resolvers]
        new, work = estimate(op, args)
        total += work
        if live.bytes + new > budget_bytes or total > budget_flops:
            what = (f"{_fmt(live.bytes + new)} B" if live.bytes + new > budget_bytes else f"{_fmt(total)} FLOPs")
            raise BundleError(f"{path}: graph node {i} ({op} -> {out!r}) would need {what} at a probe batch of "
                              f"{batch} row(s), above the load-time probe budget ({_fmt(budget_bytes)} B, "
                              f"{_fmt(budget_flops)} FLOPs: 1/{PROBE_SHARE} of ${ENV_MAX_PEAK_BYTES} / "
                              f"${ENV_MAX_FLOPS}); refused before running it")
        before, traced = live.bytes, _traced_start()
        try:
            with np.errstate(all="ignore"):
                env[out] = fn(*args)
        except BundleError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of a hostile or broken graph is the bundle's
            text = " ".join(str(e).split())[:120]
            raise BundleError(f"{path}: graph node {i} ({op} -> {out!r}) fails on zero inputs of "
                              f"{batch} row(s) ({type(e).__name__}: {text})") from None
        live.add(out, env[out])
        peaks.append(max(live.bytes, before + _traced_peak(traced)))   # the op's own temporaries too
        flops.append(work)
        for k in frees:
            env.pop(k, None)
            live.drop(k)
    _check_outputs([env[o] for o in executor.outputs], executor.outputs, batch, path)
    return peaks, flops


def _check_outputs(outs: list, names: list, batch: int, path: str) -> None:
    """Every output is a number array with one row per input row (what predict() returns)."""
    for name, o in zip(names, outs):
        ok = isinstance(o, np.ndarray) and o.ndim >= 1 and o.shape[0] == batch and o.dtype.kind in "biuf"
        if not ok:
            what = f"shape {list(o.shape)} of {o.dtype}" if isinstance(o, np.ndarray) else type(o).__name__
            raise BundleError(f"{path}: graph output {name!r} is {what[:80]} for a batch of {batch} rows; "
                              "an output needs one row per input row")


def _fit(f1: np.ndarray, f2: np.ndarray, f3: np.ndarray, batch: int) -> np.ndarray:
    """Values at ``batch`` from values at the three evenly spaced probe batches (see the module
    doc); at or below a probe batch, that probe's values (costs do not shrink with more rows)."""
    first, step = PROBE_BATCHES[0], PROBE_BATCHES[1] - PROBE_BATCHES[0]
    x = (batch - first) / step
    if x <= 1:
        return f1 if x <= 0 else f2
    d1, d2 = f2 - f1, f3 - f2
    slope = np.maximum(np.maximum(d1, d2), 0)
    curve = d2 - d1
    lin = f3 + (x - 2) * slope
    # a real second difference (B x B values), not allocator noise of a few bytes per probe
    real = curve > np.maximum(CURVE_BYTES, CURVE_SHARE * slope)
    quad = f1 + x * d1 + x * (x - 1) / 2 * curve
    return np.where(real, np.maximum(quad, lin), lin)


def bound(executor, specs: list, path: str, max_batch: int | None, source: str) -> Bounds:
    """Probe the graph, then check (or choose) the maximum batch against the limits."""
    lb, lf = limit(ENV_MAX_PEAK_BYTES, MAX_PEAK_BYTES), limit(ENV_MAX_FLOPS, MAX_FLOPS)
    own = not tracemalloc.is_tracing()        # an app that traces keeps its tracing (we only read it)
    if own:
        tracemalloc.start()
    try:
        # the first run also fills the weights' one-time caches (dequantized tables): a warm-up
        runs = [run_probe(executor, specs, b, lb // PROBE_SHARE, lf // PROBE_SHARE, path)
                for b in PROBE_BATCHES[:1] + PROBE_BATCHES][1:]
    finally:
        if own:
            tracemalloc.stop()
    mem = [np.asarray(r[0] or [0], dtype=np.float64) for r in runs]
    work = [np.asarray([sum(r[1])], dtype=np.float64) for r in runs]

    def cost(b: int) -> tuple[float, float]:
        return float(_fit(*mem, b).max()), float(_fit(*work, b)[0])

    def fits(b: int) -> bool:
        m, f = cost(b)
        return m <= lb and f <= lf

    if max_batch is not None:
        if not fits(max_batch):
            m, f = cost(max_batch)
            best = _largest(fits, max_batch)
            raise BundleError(f"{path}: at max_batch {max_batch} (from the {source}) this graph needs about "
                              f"{_fmt(m)} B of intermediates and {_fmt(f)} FLOPs per call, above the limits "
                              f"{_fmt(lb)} B (${ENV_MAX_PEAK_BYTES}) / {_fmt(lf)} FLOPs (${ENV_MAX_FLOPS}); "
                              + (f"the largest batch within them is {best}" if best else "no batch fits"))
        m, f = cost(max_batch)
        return Bounds(max_batch, source, int(m), int(f), lb, lf)
    best = _largest(fits, DEFAULT_MAX_BATCH)
    if not best:
        m, f = cost(1)
        raise BundleError(f"{path}: even one row needs about {_fmt(m)} B of intermediates and {_fmt(f)} FLOPs, above "
                          f"the limits {_fmt(lb)} B (${ENV_MAX_PEAK_BYTES}) / {_fmt(lf)} FLOPs (${ENV_MAX_FLOPS})")
    m, f = cost(best)
    return Bounds(best, "limits" if best < DEFAULT_MAX_BATCH else "default", int(m), int(f), lb, lf)


def _largest(fits, most: int) -> int:
    """The largest batch in 1..most that fits (costs grow with the batch), 0 if none."""
    if fits(most):
        return most
    lo, hi = 0, most                 # fits(lo) (or lo == 0), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _fmt(x) -> str:
    x = float(x)
    if not math.isfinite(x):
        return "unbounded"
    return f"{x:.3g}" if x >= 1e6 else str(int(x))
