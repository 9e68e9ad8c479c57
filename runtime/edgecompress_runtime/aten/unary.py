"""Core ATen ops: elementwise unary (activations, math functions, casts of one tensor)."""
from __future__ import annotations

import math

import numpy as np

from ..ops import op
from ._args import _B, _as, _axis, _cat, _out, _t, _to_float

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
