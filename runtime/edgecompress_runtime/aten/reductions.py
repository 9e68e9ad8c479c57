"""Core ATen ops: reductions."""
from __future__ import annotations

import math
import numpy as np

from ..ops import _sum, op     # op registers into ops.OPS
from ._args import _F32, _I64, _as, _axes, _axis, _cat, _dt, _index_dtype, _out, _t, _to_float

# --- reductions ----------------------------------------------------------------

def _mean(x, axes, keepdim):
    """np.mean's value (float32 pairwise sum / count) without its warning on empty input: NaN."""
    n = x.dtype.type(math.prod(x.shape[a] for a in axes))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(x, axis=axes, keepdims=keepdim) / n


def _acc_dtype(x, dtype):
    """sum / prod / cumsum: integers and bool accumulate in int64 unless dtype says otherwise."""
    if dtype is not None:
        return np.dtype(dtype)
    return _I64 if _cat(x.dtype) < 2 else x.dtype


@op("sum.dim_IntList")
def sum_dim(x, dim=None, keepdim=False, dtype=None):
    x = _t(x)
    axes = _axes(dim, x.ndim)
    dt = _acc_dtype(x, dtype)
    if dt == _F32 and x.dtype == _F32:
        return _out(_sum(x, axes, keepdim))     # ops.py's einsum path for small float32 extents
    return _out(np.sum(x, axis=axes, dtype=dt, keepdims=keepdim))


@op("sum.default")
def sum_default(x, dtype=None):
    return sum_dim(x, None, False, dtype)


@op("mean.dim")
def mean_dim(x, dim=None, keepdim=False, dtype=None):
    x = _t(x)
    dt = _dt(dtype, x.dtype)
    if _cat(dt) != 2:
        raise TypeError(f"mean of a {dt} tensor needs a floating dtype (as torch)")
    return _out(_mean(_as(x, dt), _axes(dim, x.ndim), keepdim))


@op("mean.default")
def mean_default(x, dtype=None):
    return mean_dim(x, None, False, dtype)


@op("amax.default")
def amax(x, dim=(), keepdim=False):
    x = _t(x)
    return _out(np.max(x, axis=_axes(dim, x.ndim), keepdims=keepdim))


@op("amin.default")
def amin(x, dim=(), keepdim=False):
    x = _t(x)
    return _out(np.min(x, axis=_axes(dim, x.ndim), keepdims=keepdim))


@op("max.default")
def max_all(x):
    x = _t(x)
    return _out(np.max(x))


@op("min.default")
def min_all(x):
    x = _t(x)
    return _out(np.min(x))


def _arg_reduce(fn, x, dim, keepdim):
    x = _t(x)
    if dim is None:
        i = np.asarray(fn(x.reshape(-1)), _I64)
        return i.reshape((1,) * x.ndim) if keepdim else i
    ax = _axis(dim, x.ndim)
    if x.ndim == 0:
        return np.zeros((), _I64)
    return _out(_index_dtype(np.asarray(fn(x, axis=ax, keepdims=keepdim))))


def _value_index(fn, x, dim, keepdim):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    if x.ndim == 0:
        return x, np.zeros((), _I64)
    i = _index_dtype(fn(x, axis=ax, keepdims=True))      # first extreme; NaN counts as the extreme
    v = np.take_along_axis(x, i, ax)
    if not keepdim:
        i, v = np.squeeze(i, ax), np.squeeze(v, ax)
    return _out(v), _out(i)


@op("max.dim")
def max_dim(x, dim, keepdim=False):
    return _value_index(np.argmax, x, dim, keepdim)


@op("min.dim")
def min_dim(x, dim, keepdim=False):
    return _value_index(np.argmin, x, dim, keepdim)


@op("argmax.default")
def argmax(x, dim=None, keepdim=False):
    return _arg_reduce(np.argmax, x, dim, keepdim)


@op("argmin.default")
def argmin(x, dim=None, keepdim=False):
    return _arg_reduce(np.argmin, x, dim, keepdim)


@op("var.correction")
def var_correction(x, dim=None, correction=None, keepdim=False):
    """Divisor max(N - correction, 0); correction None = 1."""
    x = _t(x)
    if _cat(x.dtype) != 2:
        raise TypeError("var takes floating tensors")
    c = 1 if correction is None else correction
    axes = _axes(dim, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    d = x - _mean(x, axes, True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.sum(d * d, axis=axes, keepdims=keepdim) / x.dtype.type(max(n - c, 0)))


@op("var.dim")
def var_dim(x, dim=None, unbiased=True, keepdim=False):
    return var_correction(x, dim, 1 if unbiased else 0, keepdim)


@op("var.default")
def var_default(x, unbiased=True):
    return var_correction(x, None, 1 if unbiased else 0, False)


@op("prod.default")
def prod_default(x, dtype=None):
    x = _t(x)
    return _out(np.prod(x, dtype=_acc_dtype(x, dtype)))


@op("prod.dim_int")
def prod_dim(x, dim, keepdim=False, dtype=None):
    x = _t(x)
    return _out(np.prod(x, axis=_axes(dim, x.ndim), dtype=_acc_dtype(x, dtype), keepdims=keepdim))


def _any_all(fn, x, dims, keepdim):
    """bool result (uint8 for uint8 input, as torch); dims [] of the .dims overload reduces nothing."""
    x = _t(x)
    if dims is not None and not isinstance(dims, int) and len(dims) == 0:
        r = x != 0
    else:
        r = fn(x, axis=_axes(dims, x.ndim), keepdims=keepdim)
    r = _out(r)
    return r.astype(np.uint8) if x.dtype == np.uint8 else r


for _name, _fn in (("any", np.any), ("all", np.all)):
    op(f"{_name}.default")(lambda x, _f=_fn: _any_all(_f, x, None, False))
    op(f"{_name}.dim")(lambda x, dim, keepdim=False, _f=_fn: _any_all(_f, x, int(dim), keepdim))
    op(f"{_name}.dims")(lambda x, dim=None, keepdim=False, _f=_fn: _any_all(_f, x, dim, keepdim))


@op("cumsum.default")
def cumsum(x, dim, dtype=None):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    dt = _acc_dtype(x, dtype)
    if x.ndim == 0:
        return _as(x, dt)
    return np.cumsum(x, axis=ax, dtype=dt)


@op("logsumexp.default")
def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x))) with the max subtracted; all -inf gives -inf, any +inf gives +inf."""
    x = _t(x)
    x = _as(x, _to_float(x.dtype))
    axes = _axes(dim, x.ndim)
    with np.errstate(divide="ignore", invalid="ignore"):
        if x.size == 0:
            return _out(np.log(np.sum(np.exp(x), axis=axes, keepdims=keepdim)))
        m = np.max(x, axis=axes, keepdims=True)
        m = np.where(np.isinf(m), np.zeros((), x.dtype), m)
        r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return _out(r if keepdim else np.squeeze(r, axes))
