"""Core ATen ops: casts and factories."""
from __future__ import annotations

import math
import numpy as np

from ..ops import op
from ._args import _B, _F32, _I64, _as, _cat, _dt, _t

# --- casts and factories -----------------------------------------------------

@op("_to_copy.default")
def _to_copy(x, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, memory_format=None):
    x = _t(x)
    return x if dtype is None else _as(x, np.dtype(dtype))


def _fill_dtype(v):
    return _B if isinstance(v, (bool, np.bool_)) else _I64 if isinstance(v, (int, np.integer)) else _F32


@op("full.default")
def full(size, fill_value, dtype=None, layout=None, device=None, pin_memory=None):
    return np.full([int(s) for s in size], fill_value, dtype=_dt(dtype, _fill_dtype(fill_value)))


@op("full_like.default")
def full_like(x, fill_value, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    x = _t(x)
    return np.full(x.shape, fill_value, dtype=_dt(dtype, x.dtype))


@op("zeros_like.default")
def zeros_like(x, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    x = _t(x)
    return np.zeros(x.shape, dtype=_dt(dtype, x.dtype))


@op("ones_like.default")
def ones_like(x, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    x = _t(x)
    return np.ones(x.shape, dtype=_dt(dtype, x.dtype))


@op("empty.memory_format")
def empty(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    """Uninitialised in torch; zeros here."""
    return np.zeros([int(s) for s in size], dtype=_dt(dtype, _F32))


@op("new_zeros.default")
def new_zeros(x, size, dtype=None, layout=None, device=None, pin_memory=None):
    return np.zeros([int(s) for s in size], dtype=_dt(dtype, _t(x).dtype))


@op("new_ones.default")
def new_ones(x, size, dtype=None, layout=None, device=None, pin_memory=None):
    return np.ones([int(s) for s in size], dtype=_dt(dtype, _t(x).dtype))


@op("new_full.default")
def new_full(x, size, fill_value, dtype=None, layout=None, device=None, pin_memory=None):
    return np.full([int(s) for s in size], fill_value, dtype=_dt(dtype, _t(x).dtype))


@op("scalar_tensor.default")
def scalar_tensor(s, dtype=None, layout=None, device=None, pin_memory=None):
    return np.asarray(s, dtype=_dt(dtype, _F32))   # float32 whatever the scalar's type, as torch


def _arange(start, end, step, dtype):
    if dtype is None:
        dt = _F32 if any(isinstance(v, (float, np.floating)) for v in (start, end, step)) else _I64
    else:
        dt = np.dtype(dtype)
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if _cat(dt) == 2:    # torch computes start + i * step in double, then rounds
        n = max(0, math.ceil((float(end) - float(start)) / float(step)))
        return (np.arange(n, dtype=np.float64) * float(step) + float(start)).astype(dt)
    start, end, step = int(start), int(end), int(step)      # integer dtypes: bounds truncated first
    n = max(0, -((start - end) // step))
    return (np.arange(n, dtype=_I64) * step + start).astype(dt, copy=False)


@op("arange.default")
def arange_default(end, dtype=None, layout=None, device=None, pin_memory=None):
    return _arange(0, end, 1, dtype)


@op("arange.start")
def arange_start(start, end, dtype=None, layout=None, device=None, pin_memory=None):
    return _arange(start, end, 1, dtype)


@op("arange.start_step")
def arange_start_step(start, end, step=1, dtype=None, layout=None, device=None, pin_memory=None):
    return _arange(start, end, step, dtype)


@op("clone.default")
def clone(x, memory_format=None):
    return _t(x)


@op("alias.default")
def alias(x):
    return _t(x)


@op("lift_fresh_copy.default")
def lift_fresh_copy(x):
    return _t(x)


@op("copy.default")
def copy(x, src, non_blocking=False):
    """self's shape and dtype, src's values (broadcast)."""
    x = _t(x)
    return np.broadcast_to(_as(_t(src), x.dtype), x.shape)
