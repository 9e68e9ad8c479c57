"""Core ATen ops: elementwise binary."""
from __future__ import annotations

import math
import numpy as np

from ..ops import op
from ._args import _B, _I64, _as, _axis, _cat, _operands, _out, _p, _result_type, _t, _to_float

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


# --- unary -----------------------------------------------------------------

def _float_unary(name, fn):
    def unary(x):
        x = _t(x)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _out(fn(_as(x, _to_float(x.dtype))))
    unary.__name__ = name
    return op(f"{name}.default")(unary)


for _name, _fn in (("exp", np.exp), ("expm1", np.expm1), ("log", np.log), ("log1p", np.log1p),
                   ("log2", np.log2), ("sqrt", np.sqrt), ("sin", np.sin), ("cos", np.cos),
                   ("tanh", np.tanh), ("reciprocal", np.reciprocal)):
    _float_unary(_name, _fn)


@op("rsqrt.default")
def rsqrt(x):
    x = _t(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.reciprocal(np.sqrt(_as(x, _to_float(x.dtype)))))


def _sigmoid(x):
    # exp of -|x| never overflows; same value as 1 / (1 + exp(-x))
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


@op("sigmoid.default")
def sigmoid(x):
    x = _t(x)
    return _out(_sigmoid(_as(x, _to_float(x.dtype))))


@op("neg.default")
def neg(x):
    x = _t(x)
    if x.dtype == _B:
        raise TypeError("neg of a bool tensor is not supported (use logical_not)")
    return _out(np.negative(x))


@op("abs.default")
def abs_(x):
    x = _t(x)
    if x.dtype == _B:
        raise TypeError("abs of a bool tensor is not supported")
    return _out(np.abs(x))


@op("sign.default")
def sign(x):
    """(x > 0) - (x < 0): NaN gives 0, as ATen."""
    x = _t(x)
    if x.dtype == _B:
        return x
    return _out(np.greater(x, 0).astype(x.dtype) - np.less(x, 0).astype(x.dtype))


@op("relu.default")
def relu(x):
    x = _t(x)
    if x.dtype == _B:
        raise TypeError("relu of a bool tensor is not supported")
    return _out(np.maximum(x, np.zeros((), x.dtype)))


def _rounding(name, fn):
    def rounding(x):
        x = _t(x)
        return _out(fn(x)) if _cat(x.dtype) == 2 else x     # integers are already whole
    rounding.__name__ = name
    return op(f"{name}.default")(rounding)


for _name, _fn in (("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc),
                   ("round", np.rint)):                      # rint: half to even, as nearbyint
    _rounding(_name, _fn)


@op("round.decimals")
def round_decimals(x, decimals=0):
    x = _t(x)
    if _cat(x.dtype) != 2:
        return x
    if decimals >= 0:
        f = x.dtype.type(10.0 ** decimals)
        return _out(np.rint(x * f) / f)
    f = x.dtype.type(10.0 ** -decimals)
    return _out(np.rint(x / f) * f)


@op("isnan.default")
def isnan(x):
    x = _t(x)
    return _out(np.isnan(x)) if _cat(x.dtype) == 2 else np.zeros(x.shape, _B)


@op("isinf.default")
def isinf(x):
    x = _t(x)
    return _out(np.isinf(x)) if _cat(x.dtype) == 2 else np.zeros(x.shape, _B)


# erf without scipy, in float64: a Taylor series below |x| = 1 (12 terms for float32 results,
# truncation < 1e-9; 20 terms otherwise, < 1e-16) and above it Numerical Recipes' erfc (relative
# error < 1.2e-7 of erfc(x) <= 0.16, so < 2e-8 absolute). float32 results are then correctly
# rounded almost everywhere; float64 inputs get ~1e-8, not double accuracy.
_ERF_TAYLOR = [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(20)]
_ERFC_NR = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
            0.09678418, 0.37409196, 1.00002368, -1.26551223)


def _horner(z, coeffs):
    s = np.full_like(z, coeffs[0])
    for c in coeffs[1:]:
        s *= z
        s += c
    return s


def _erfc_nr(a):
    """erfc(a) for a >= 0, in a's dtype (Numerical Recipes' erfcc: relative error < 1.2e-7 in
    float64 arithmetic, ~1e-6 in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = 1.0 / (1.0 + 0.5 * a)
        p = _horner(t, _ERFC_NR)
        p -= a * a
        return t * np.exp(p, out=p)


def _erf(x):
    """erf of a float array, in its dtype."""
    x64 = x.astype(np.float64).reshape(-1)
    a = np.abs(x64)
    small = a < 1.0
    out = np.empty_like(a)
    z = a[small]
    terms = _ERF_TAYLOR[:12] if x.dtype.itemsize <= 4 else _ERF_TAYLOR
    out[small] = z * _horner(z * z, terms[::-1])
    big = ~small                                   # NaN lands here and stays NaN
    if big.any():
        out[big] = 1.0 - _erfc_nr(a[big])
    return np.copysign(out, x64).reshape(x.shape).astype(x.dtype, copy=False)


@op("erf.default")
def erf(x):
    x = _t(x)
    return _out(_erf(_as(x, _to_float(x.dtype))))


@op("gelu.default")
def gelu(x, approximate="none"):
    """approximate "none": x/2 (1 + erf(x / sqrt 2)); "tanh": the tanh approximation."""
    x = _t(x)
    x = _as(x, _to_float(x.dtype))
    t = x.dtype.type
    if approximate == "tanh":
        inner = t(math.sqrt(2 / math.pi)) * (x + t(0.044715) * x * x * x)
        return _out(t(0.5) * x * (t(1) + np.tanh(inner)))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    # 1 + erf(u) = erfc(-u): one erfc evaluation, in float32 for float32 input (3x faster than
    # float64; relative error ~1e-6 everywhere, where torch's float32 1 + erf loses digits for x << 0)
    ct = np.float64 if x.dtype == np.float64 else np.float32
    xc = x.astype(ct, copy=False)
    u = xc * ct(math.sqrt(0.5))
    e = _erfc_nr(np.abs(u))
    return _out((xc * ct(0.5) * np.where(u >= 0, ct(2) - e, e)).astype(x.dtype, copy=False))


@op("silu.default")
def silu(x):
    x = _t(x)
    x = _as(x, _to_float(x.dtype))
    return _out(x * _sigmoid(x))


@op("leaky_relu.default")
def leaky_relu(x, negative_slope=0.01):
    x = _t(x)
    return _out(np.where(x > 0, x, x * _as(negative_slope, x.dtype)))


@op("hardtanh.default")
def hardtanh(x, min_val=-1, max_val=1):
    x = _t(x)
    return _out(np.minimum(np.maximum(x, _as(min_val, x.dtype)), _as(max_val, x.dtype)))


@op("elu.default")
def elu(x, alpha=1, scale=1, input_scale=1):
    """x > 0: scale * x; else scale * alpha * (exp(x * input_scale) - 1)."""
    x = _t(x)
    t = x.dtype.type
    neg = np.expm1(np.minimum(x, t(0)) * t(input_scale)) * t(alpha * scale)
    return _out(np.where(x <= 0, neg, x * t(scale)))


@op("_prelu_kernel.default")
def _prelu_kernel(x, weight):
    """weight already broadcastable to x."""
    x, w = _t(x), _t(weight)
    return _out(np.where(x > 0, x, w * x))


@op("prelu.default")
def prelu(x, weight):
    """weight: one value, or one per channel (dim 1)."""
    x, w = _t(x), _t(weight)
    if w.size != 1:
        w = w.reshape((-1,) + (1,) * (x.ndim - 2))
    elif x.ndim:
        w = w.reshape(())
    return _out(np.where(x > 0, x, w * x))


@op("hardsigmoid.default")
def hardsigmoid(x):
    x = _t(x)
    t = x.dtype.type
    return _out(np.minimum(np.maximum(x + t(3), t(0)), t(6)) / t(6))


@op("hardswish.default")
def hardswish(x):
    x = _t(x)
    t = x.dtype.type
    return _out(x * np.minimum(np.maximum(x + t(3), t(0)), t(6)) / t(6))


@op("softplus.default")
def softplus(x, beta=1, threshold=20):
    """x * beta > threshold: x; else log1p(exp(x * beta)) / beta."""
    x = _t(x)
    t = x.dtype.type
    xb = x * t(beta)
    with np.errstate(over="ignore"):
        soft = np.log1p(np.exp(np.minimum(xb, t(threshold)))) / t(beta)
    return _out(np.where(xb > t(threshold), x, soft))


def _softmax_prep(x, dim):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    return x, ax


@op("_softmax.default")
def _softmax(x, dim, half_to_float=False):
    x, ax = _softmax_prep(x, dim)
    if x.ndim == 0:
        return np.ones((), x.dtype)
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore"):         # rows of -inf give NaN, as torch
        e = np.exp(x - np.max(x, axis=ax, keepdims=True))
        e /= e.sum(axis=ax, keepdims=True)
    return e


@op("_log_softmax.default")
def _log_softmax(x, dim, half_to_float=False):
    x, ax = _softmax_prep(x, dim)
    if x.ndim == 0:
        return np.zeros((), x.dtype)
    if x.size == 0:
        return x.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        s = x - np.max(x, axis=ax, keepdims=True)
        s -= np.log(np.exp(s).sum(axis=ax, keepdims=True))
    return s
