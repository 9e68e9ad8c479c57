"""Core ATen ops: elementwise binary."""
from __future__ import annotations

import numpy as np

from ..ops import op
from ._args import _B, _I64, _as, _cat, _operands, _out, _p, _result_type, _t, _to_float

# --- elementwise binary --------------------------------------------------------

def _add(a, b, alpha=1):
    dt, (a, b) = _operands(a, b)
    if alpha != 1:
        b = b * _as(alpha, dt)
    return _out(a + b)


def _sub(a, b, alpha=1):
    dt, (a, b) = _operands(a, b)
    if alpha != 1:
        b = b * _as(alpha, dt)
    return _out(a - b)


def _mul(a, b):
    _, (a, b) = _operands(a, b)
    return _out(a * b)


for _name, _fn in (("add", _add), ("sub", _sub), ("mul", _mul)):
    op(f"{_name}.Tensor")(_fn)
    op(f"{_name}.Scalar")(_fn)


def _true_div(a, b):
    a, b = _p(a), _p(b)
    dt = _to_float(_result_type(a, b))       # integer inputs are cast to float32 first, as torch
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.true_divide(_as(a, dt), _as(b, dt)))


def _trunc_div(a, b):
    """Integer division rounding toward zero (C's /), from numpy's floor division."""
    q = np.floor_divide(a, b)
    return q + ((q * b != a) & ((a < 0) != (b < 0)))


def _check_int_div(dt, b):
    if dt.kind in "iub" and np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")


def _div_mode(a, b, rounding_mode=None):
    if rounding_mode is None:
        return _true_div(a, b)
    dt, (a, b) = _operands(a, b)
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")
    if _cat(dt) == 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            # numpy's float floor_divide is ATen's div_floor_floating (fmod based, same rounding)
            return _out(np.floor_divide(a, b) if rounding_mode == "floor" else np.trunc(a / b))
    _check_int_div(dt, b)
    if dt.kind == "b":
        a, b = a.astype(_I64), b.astype(_I64)
    q = np.floor_divide(a, b) if rounding_mode == "floor" else _trunc_div(a, b)
    return _out(q.astype(dt, copy=False))


op("div.Tensor")(_true_div)
op("div.Scalar")(_true_div)
op("div.Tensor_mode")(_div_mode)
op("div.Scalar_mode")(_div_mode)


def _remainder(a, b):
    """Python's modulo: the result has the divisor's sign."""
    dt, (a, b) = _operands(a, b)
    if _cat(dt) != 2:
        _check_int_div(dt, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.remainder(a, b))


def _fmod(a, b):
    """C's fmod: the result has the dividend's sign."""
    dt, (a, b) = _operands(a, b)
    if _cat(dt) != 2:
        _check_int_div(dt, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.fmod(a, b))


for _name in ("Tensor", "Scalar", "Scalar_Tensor"):
    op(f"remainder.{_name}")(_remainder)
op("fmod.Tensor")(_fmod)
op("fmod.Scalar")(_fmod)


def _pow(a, e):
    dt, (a, e) = _operands(a, e)
    if dt.kind in "iu":
        neg = e < 0
        if np.any(neg):
            # integer powers with negative exponents: 1 -> 1, -1 -> +-1, anything else -> 0 (as ATen)
            r = np.power(a, np.where(neg, 0, e))
            odd = (e % 2) != 0
            special = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
            return _out(np.where(neg, special, r).astype(dt))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _out(np.power(a, e))


op("pow.Tensor_Tensor")(_pow)
op("pow.Tensor_Scalar")(_pow)


@op("pow.Scalar")
def pow_scalar(base, exponent):
    if base == 1:           # ATen: 1 ** anything (NaN included) is 1
        dt = _result_type(base, _p(exponent))
        return np.ones(_t(exponent).shape, dt)
    return _pow(base, exponent)


@op("maximum.default")
def maximum(a, b):
    _, (a, b) = _operands(a, b)
    return _out(np.maximum(a, b))          # NaN propagates, as torch


@op("minimum.default")
def minimum(a, b):
    _, (a, b) = _operands(a, b)
    return _out(np.minimum(a, b))


@op("atan2.default")
def atan2(a, b):
    a, b = _p(a), _p(b)
    dt = _to_float(_result_type(a, b))
    return _out(np.arctan2(_as(a, dt), _as(b, dt)))


def _comparison(fn):
    def compare(a, b):
        _, (a, b) = _operands(a, b)    # compared in the promoted dtype (int64 vs 2.5: in float32)
        return _out(fn(a, b))
    return compare


for _name, _fn in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                   ("gt", np.greater), ("ge", np.greater_equal)):
    op(f"{_name}.Tensor")(_comparison(_fn))
    op(f"{_name}.Scalar")(_comparison(_fn))


def _logical(fn):
    def run(a, b):
        return _out(fn(_t(a), _t(b)))
    return run


for _name, _fn in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
                   ("logical_xor", np.logical_xor)):
    op(f"{_name}.default")(_logical(_fn))


@op("logical_not.default")
def logical_not(x):
    return _out(np.logical_not(_t(x)))


def _bitwise(fn):
    def bitwise(a, b):
        dt, (a, b) = _operands(a, b)
        if _cat(dt) == 2:
            raise TypeError("bitwise ops take bool or integer tensors")
        return _out(fn(a, b))
    return bitwise


for _name, _fn in (("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or),
                   ("bitwise_xor", np.bitwise_xor)):
    for _over in ("Tensor", "Scalar", "Scalar_Tensor"):
        op(f"{_name}.{_over}")(_bitwise(_fn))


@op("bitwise_not.default")
def bitwise_not(x):
    x = _t(x)
    if _cat(x.dtype) == 2:
        raise TypeError("bitwise_not takes bool or integer tensors")
    return _out(np.invert(x))      # on bool: logical not


def _where(condition, a, b):
    cond = _t(condition)
    if cond.dtype != _B:
        cond = cond.astype(_B)
    _, (a, b) = _operands(a, b)
    return _out(np.where(cond, a, b))


for _name in ("self", "ScalarOther", "ScalarSelf", "Scalar"):
    op(f"where.{_name}")(_where)


def _masked_fill(x, mask, value):
    """Result dtype is self's (value cast to it); self and mask broadcast."""
    x = _t(x)
    mask = _t(mask)
    value = _p(value)
    v = _as(value, x.dtype) if not isinstance(value, np.ndarray) else value.astype(x.dtype)
    return _out(np.where(mask.astype(_B, copy=False), v, x))


op("masked_fill.Scalar")(_masked_fill)
op("masked_fill.Tensor")(_masked_fill)


def _clamp(x, min=None, max=None):
    """min(max(x, lo), hi) in the promoted dtype (so hi wins when lo > hi); NaN propagates."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    _, arrays = _operands(x, *[b for b in (min, max) if b is not None])
    x, bounds = arrays[0], iter(arrays[1:])
    if min is not None:
        x = np.maximum(x, next(bounds))
    if max is not None:
        x = np.minimum(x, next(bounds))
    return _out(x)


op("clamp.default")(_clamp)
op("clamp.Tensor")(_clamp)


def _clamp_min(x, m):
    return _clamp(x, m, None)


def _clamp_max(x, m):
    return _clamp(x, None, m)


op("clamp_min.default")(_clamp_min)
op("clamp_min.Tensor")(_clamp_min)
op("clamp_max.default")(_clamp_max)
op("clamp_max.Tensor")(_clamp_max)
