"""Log-log interpolation over a measured grid (``plan/latency_table.py``): costs are roughly
power laws of sizes and span decades, so values and axes are interpolated as logs."""
from __future__ import annotations

import bisect
import itertools
import math

from ..errors import LatencyTableError

MAX_SLOPE = 1.25      # outside the grid a cost grows at most a little faster than linearly


def _interp1(x0: float, x1: float, y0: float, y1: float, x: float, lo: float, hi: float) -> float:
    """Linear in logs between (x0, y0) and (x1, y1); outside [lo, hi] (the axis range)
    the slope is clipped to [0, MAX_SLOPE]."""
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
    if x < lo:
        return y0 + min(max(slope, 0.0), MAX_SLOPE) * (x - x0)
    if x > hi:
        return y1 + min(max(slope, 0.0), MAX_SLOPE) * (x - x1)
    return y0 + slope * (x - x0)


class Grid:
    """seconds on a full grid of positive axes; ``__call__`` interpolates log-log,
    axis by axis (multilinear inside the grid, clipped edge slopes outside)."""

    def __init__(self, axes: list[list[float]], points: dict[tuple, float], what: str):
        self.raw_axes = [sorted(set(a)) for a in axes]
        self.axes = [[math.log(v) for v in a] for a in self.raw_axes]
        index = [{v: i for i, v in enumerate(a)} for a in self.raw_axes]
        self.vals: dict[tuple, float] = {}
        for k, s in points.items():
            self.vals[tuple(index[d][k[d]] for d in range(len(k)))] = math.log(max(float(s), 1e-9))
        full = 1
        for a in self.raw_axes:
            full *= len(a)
        if len(self.vals) != full:
            for idx in itertools.product(*[range(len(a)) for a in self.raw_axes]):
                if idx not in self.vals:
                    at = tuple(self.raw_axes[d][i] for d, i in enumerate(idx))
                    raise LatencyTableError(f"latency table: {what} grid is incomplete (no point at {at})")

    def _cell(self, d: int, lx: float) -> int:
        ax = self.axes[d]
        if len(ax) == 1:
            return 0
        return min(max(bisect.bisect_left(ax, lx) - 1, 0), len(ax) - 2)

    def _value(self, d: int, prefix: tuple, lx: list) -> float:
        if d == len(lx):
            return self.vals[prefix]
        ax = self.axes[d]
        if len(ax) == 1:
            return self._value(d + 1, prefix + (0,), lx)
        i = self._cell(d, lx[d])
        y0 = self._value(d + 1, prefix + (i,), lx)
        y1 = self._value(d + 1, prefix + (i + 1,), lx)
        return _interp1(ax[i], ax[i + 1], y0, y1, lx[d], ax[0], ax[-1])

    def __call__(self, *x) -> float:
        lx = [math.log(max(float(v), 1e-12)) for v in x]
        return math.exp(self._value(0, (), lx))
