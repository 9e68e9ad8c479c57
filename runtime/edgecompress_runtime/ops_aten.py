"""Core ATen ops: numpy semantics of the overloads ``torch.export(...).run_decompositions()`` emits.

A node's op is the ATen overload name without ``aten.`` (``convolution.default``,
``sum.dim_IntList``) and its args are every argument of that overload's schema, in
schema order, keyword-only ones included, defaults filled in
(``edgecompress.graph.aten.schema_args``). Tensors arrive as numpy arrays (weights may
arrive as ``Param``), dtypes as names ("float32"), device / layout / memory format as
None, int lists as lists, scalars as python numbers. torch's op is the reference: results
have torch's shapes and dtypes (type promotion included: an int64 tensor plus a python
float is float32, a float32 tensor with a python float stays float32, comparisons give
bool, index outputs are int64) and 0-d results are 0-d arrays, not numpy scalars.

Values in a graph are never written in place, so clone / alias / same-dtype casts return
their input and views (expand, permute, slice, ...) stay views (expand's is read-only).
tests/test_op_conformance.py checks every op here against torch.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops import _sum, op     # op registers into ops.OPS
from .params import Param

_B = np.dtype(bool)
_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)


class UnsupportedArgument(NotImplementedError, ValueError):
    """An op is called with an argument value this runtime does not implement."""


# --- argument helpers --------------------------------------------------------

def _t(x):
    """A Tensor argument as an array (weights may arrive as Param, 0-d values as numpy scalars)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, Param):
        return x.dense()
    return np.asarray(x)


def _p(x):
    """Unwrap a Param but keep python scalars (they promote as torch's wrapped numbers)."""
    return x.dense() if isinstance(x, Param) else x


def _out(r):
    """0-d numpy scalars back to 0-d arrays."""
    return r if type(r) is np.ndarray else np.asarray(r)


def _dt(name, default=None):
    return default if name is None else np.dtype(name)


def _cat(dt) -> int:
    """torch's type categories: 0 bool, 1 integer, 2 floating."""
    k = dt.kind
    return 0 if k == "b" else 2 if k in "fc" else 1


def _promote(a, b):
    """torch.promote_types on numpy dtypes (a float beats any integer: int64 + float32 = float32)."""
    if a == b:
        return a
    ca, cb = _cat(a), _cat(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _combine(higher, lower):
    # ATen's combine_categories: a lower priority class only matters when it is of a higher category
    if higher is None:
        return lower
    if lower is None:
        return higher
    if _cat(higher) == 2:
        return higher
    if higher.kind == "b" or _cat(lower) == 2:
        return _promote(higher, lower)
    return higher


def _result_type(*xs):
    """torch.result_type over tensors and python scalars: dimensioned tensors first, then
    0-d tensors, then python numbers (bool -> bool, int -> int64, float -> float32)."""
    dim = zero = wrapped = None
    for x in xs:
        if x is None:
            continue
        if isinstance(x, (np.ndarray, np.generic)):
            if x.ndim:
                dim = x.dtype if dim is None else _promote(dim, x.dtype)
            else:
                zero = x.dtype if zero is None else _promote(zero, x.dtype)
            continue
        if isinstance(x, bool):
            d = _B
        elif isinstance(x, int):
            d = _I64
        elif isinstance(x, float):
            d = _F32
        else:
            raise TypeError(f"unsupported operand {x!r}")
        wrapped = d if wrapped is None else _promote(wrapped, d)
    return _combine(dim, _combine(zero, wrapped))


def _as(x, dt):
    """x (array, numpy or python scalar) as an array of dtype dt (scalars: 0-d, cast like torch)."""
    if isinstance(x, np.ndarray):
        return x if x.dtype == dt else x.astype(dt)
    if dt.kind in "iu" and dt != _I64 and isinstance(x, int):
        return np.asarray(x, _I64).astype(dt)      # wraps like a C cast instead of raising
    return np.asarray(x, dt)


def _to_float(dt):
    """Integer-to-float promotion of unary math ops: bool / ints -> float32."""
    return dt if _cat(dt) == 2 else _F32


def _operands(*xs):
    xs = [_p(x) for x in xs]
    dt = _result_type(*xs)
    return dt, [_as(x, dt) for x in xs]


def _axis(dim: int, ndim: int) -> int:
    """A dim argument as a non-negative axis, range-checked as ATen does (0-d: 0 or -1 -> 0)."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"dimension {dim} out of range for a {ndim}-d tensor")
    return dim % n


def _axes(dims, ndim: int) -> tuple:
    """Reduction dims: None or [] = all dims (ATen's int[1]? convention)."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    if len(dims) == 0:
        return tuple(range(ndim))
    axes = tuple(_axis(d, ndim) for d in dims)
    return axes if ndim else ()


def _nonnegative(index, what):
    """ATen refuses negative indices where numpy would count from the end (take, gather, scatter)."""
    if index.size and index.min() < 0:
        raise IndexError(f"{what}: index {int(index.min())} is out of range")
    return index


def _index_dtype(a):
    return a if a.dtype == _I64 else a.astype(_I64)


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


@op("logical_and.default")
def logical_and(a, b):
    return _out(np.logical_and(_t(a), _t(b)))


@op("logical_or.default")
def logical_or(a, b):
    return _out(np.logical_or(_t(a), _t(b)))


@op("logical_xor.default")
def logical_xor(a, b):
    return _out(np.logical_xor(_t(a), _t(b)))


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


# --- linear algebra ------------------------------------------------------------

@op("mm.default")
def mm(a, b):
    return _out(np.matmul(_t(a), _t(b)))


@op("bmm.default")
def bmm(a, b):
    return _out(np.matmul(_t(a), _t(b)))


@op("matmul.default")
def matmul(a, b):
    return _out(np.matmul(_t(a), _t(b)))


def _add_scaled(prod, x, beta, alpha):
    """beta * self + alpha * prod; beta = 0 ignores self (NaN included), as ATen."""
    t = prod.dtype.type
    if alpha != 1:
        prod *= t(alpha)
    if beta != 0:
        x = _t(x)
        prod = prod + (x if beta == 1 else x * t(beta))
    return _out(prod)


@op("addmm.default")
def addmm(x, mat1, mat2, beta=1, alpha=1):
    return _add_scaled(np.matmul(_t(mat1), _t(mat2)), x, beta, alpha)


@op("linear.default")
def linear_aten(x, weight, bias=None):
    """x @ W.T + b for a weight computed in the graph (e.g. a slice of attention's in_proj_weight);
    stored Linear weights use the quantizable ``linear`` op instead."""
    y = np.matmul(_t(x), _t(weight).T)
    return y + _t(bias) if bias is not None else y


@op("baddbmm.default")
def baddbmm(x, batch1, batch2, beta=1, alpha=1):
    return _add_scaled(np.matmul(_t(batch1), _t(batch2)), x, beta, alpha)


# --- normalisation -------------------------------------------------------------

@op("_native_batch_norm_legit_no_training.default")
def batch_norm_no_training(x, weight, bias, running_mean, running_var, momentum, eps):
    """(out, empty, empty): x * a + b with a = weight / sqrt(var + eps), b = bias - mean * a,
    per channel (dim 1), as ATen computes it."""
    x = _t(x)
    mean, var = _t(running_mean), _t(running_var)
    t = x.dtype.type
    a = np.reciprocal(np.sqrt(var + t(eps)))
    if weight is not None:
        a = a * _t(weight)
    b = -mean * a
    if bias is not None:
        b = b + _t(bias)
    shape = (-1,) + (1,) * (x.ndim - 2)
    out = x * a.reshape(shape).astype(x.dtype, copy=False) + b.reshape(shape).astype(x.dtype, copy=False)
    return out, np.zeros((0,), x.dtype), np.zeros((0,), x.dtype)


@op("native_layer_norm.default")
def native_layer_norm(x, normalized_shape, weight, bias, eps):
    """(out, mean, rstd) over the last len(normalized_shape) dims; mean and rstd keep them as 1s."""
    x = _t(x)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = _mean(x, axes, True)
    d = x - mean
    rstd = np.reciprocal(np.sqrt(_mean(d * d, axes, True) + x.dtype.type(eps)))
    out = d * rstd
    if weight is not None:
        out *= _t(weight)
    if bias is not None:
        out += _t(bias)
    return out, mean, rstd


@op("native_group_norm.default")
def native_group_norm(x, weight, bias, N, C, HxW, group, eps):
    """(out, mean [N, group], rstd [N, group])."""
    x = _t(x)
    xg = x.reshape(N, group, (C // group) * HxW)
    mean = _mean(xg, (2,), True)
    d = xg - mean
    rstd = np.reciprocal(np.sqrt(_mean(d * d, (2,), True) + x.dtype.type(eps)))
    out = (d * rstd).reshape(x.shape)
    shape = (-1,) + (1,) * (x.ndim - 2)
    if weight is not None:
        out *= _t(weight).reshape(shape)
    if bias is not None:
        out += _t(bias).reshape(shape)
    return out, mean.reshape(N, group), rstd.reshape(N, group)


# --- convolution and pooling ---------------------------------------------------

def _ints(v, n):
    """An int or int list argument as n ints (a single value repeats)."""
    if isinstance(v, (int, np.integer)):
        return [int(v)] * n
    v = [int(a) for a in v]
    return v * n if len(v) == 1 else v


@op("convolution.default")
def convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """N-d (1-D and 2-D tested) batched convolution: zero padding, stride, dilation, groups;
    im2col over a sliding-window view, then one batched matmul per group."""
    if transposed:
        raise UnsupportedArgument("convolution.default: transposed convolution is not implemented")
    x, w = _t(x), _t(weight)
    nsp = w.ndim - 2
    if x.ndim != nsp + 2:
        raise ValueError(f"convolution: expected a {nsp + 2}-d input for a {w.ndim}-d weight, got {x.ndim}-d")
    stride, padding, dilation = _ints(stride, nsp), _ints(padding, nsp), _ints(dilation, nsp)
    if any(padding):
        x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    N, C = x.shape[:2]
    O, K = w.shape[0], w.shape[2:]
    G = int(groups)
    Cg, Og = C // G, O // G
    if Cg != w.shape[1] or O % G:
        raise ValueError(f"convolution: input channels {C} / groups {G} do not match weight {w.shape}")
    span = [d * (k - 1) + 1 for d, k in zip(dilation, K)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
              + tuple(slice(None, None, d) for d in dilation)]        # [N, C, out..., K...]
    osz = win.shape[2:2 + nsp]
    win = win.reshape((N, G, Cg) + osz + tuple(K))
    perm = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
    P, CK = math.prod(osz), Cg * math.prod(K)
    cols = win.transpose(perm).reshape(G, N * P, CK)                  # the im2col copy
    wm = w.reshape(G, Og, CK).transpose(0, 2, 1)
    out = np.matmul(cols, wm).reshape((G, N) + osz + (Og,))
    out = out.transpose((1, 0, 2 + nsp) + tuple(range(2, 2 + nsp))).reshape((N, O) + osz)
    if bias is not None:
        out = out + _t(bias).reshape((O,) + (1,) * nsp)
    return out


def _pool_out(size, k, s, p, d, ceil_mode):
    """ATen's pooling_output_shape."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_windows(x, k, s, p, d, ceil_mode, fill):
    """Windows [..., oh, ow, kh, kw] over x padded with fill (extra right padding for ceil_mode)."""
    H, W = x.shape[-2:]
    oh, ow = _pool_out(H, k[0], s[0], p[0], d[0], ceil_mode), _pool_out(W, k[1], s[1], p[1], d[1], ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"pooling: output size {oh}x{ow} is too small for input {H}x{W}")
    span = [d[i] * (k[i] - 1) + 1 for i in range(2)]
    extra = [max(0, (o - 1) * s[i] + span[i] - n - 2 * p[i]) for i, (o, n) in enumerate(((oh, H), (ow, W)))]
    if any(p) or any(extra):
        pad = [(0, 0)] * (x.ndim - 2) + [(p[0], p[0] + extra[0]), (p[1], p[1] + extra[1])]
        x = np.pad(x, pad, constant_values=fill)
    win = sliding_window_view(x, span, axis=(-2, -1))
    win = win[..., ::s[0], ::s[1], ::d[0], ::d[1]][..., :oh, :ow, :, :]
    return win, oh, ow


def _pool_args(kernel_size, stride, padding, dilation=1):
    k = _ints(kernel_size, 2)
    s = _ints(stride, 2) if stride is not None and len(stride) else k
    return k, s, _ints(padding, 2), _ints(dilation, 2)


@op("max_pool2d_with_indices.default")
def max_pool2d_with_indices(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """(values, indices into each H*W plane); padding counts as -inf. The first maximum of a window
    wins; with NaNs in a window the index is the first NaN's (ATen takes the last)."""
    x = _t(x)
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    H, W = x.shape[-2:]
    fill = -np.inf if _cat(x.dtype) == 2 else np.iinfo(x.dtype).min
    win, oh, ow = _pool_windows(x, k, s, p, d, ceil_mode, fill)
    flat = win.reshape(win.shape[:-2] + (k[0] * k[1],))
    am = np.argmax(flat, axis=-1)[..., None]
    vals = np.take_along_axis(flat, am, -1)[..., 0]
    am = am[..., 0]
    rows = (np.arange(oh) * s[0] - p[0])[:, None] + (am // k[1]) * d[0]
    cols = (np.arange(ow) * s[1] - p[1])[None, :] + (am % k[1]) * d[1]
    return vals, _index_dtype(rows * W + cols)


def _avg_divisor(n, o, k, s, p, count_include_pad):
    start = np.arange(o) * s - p
    end = np.minimum(start + k, n + p)
    size = end - start
    if count_include_pad:
        return size
    return np.minimum(end, n) - np.maximum(start, 0)


@op("avg_pool2d.default")
def avg_pool2d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    x = _t(x)
    k, s, p, _ = _pool_args(kernel_size, stride, padding)
    H, W = x.shape[-2:]
    win, oh, ow = _pool_windows(x, k, s, p, (1, 1), ceil_mode, 0)
    total = win.sum(axis=(-2, -1))
    if divisor_override:
        div = np.asarray(divisor_override)
    else:
        div = np.multiply.outer(_avg_divisor(H, oh, k[0], s[0], p[0], count_include_pad),
                                _avg_divisor(W, ow, k[1], s[1], p[1], count_include_pad))
    if _cat(x.dtype) != 2:          # integer pooling: C division (toward zero) of the int64 sum
        return _out(_trunc_div(total, div).astype(x.dtype))
    return _out(total / div.astype(x.dtype))


def _adaptive_avg(x, axis, out):
    """Adaptive average over one axis: bin i covers [floor(i*n/out), ceil((i+1)*n/out))."""
    n = x.shape[axis]
    if n % out == 0:
        shape = x.shape[:axis] + (out, n // out) + x.shape[axis + 1:]
        return x.reshape(shape).mean(axis=axis + 1)
    i = np.arange(out)
    start, end = (i * n) // out, -((-(i + 1) * n) // out)
    cs = np.cumsum(x, axis=axis, dtype=np.float64)
    cs = np.concatenate([np.zeros_like(np.take(cs, [0], axis)), cs], axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out
    s = (np.take(cs, end, axis) - np.take(cs, start, axis)) / (end - start).reshape(shape)
    return s.astype(x.dtype)


@op("adaptive_avg_pool1d.default")
def adaptive_avg_pool1d(x, output_size):
    x = _t(x)
    return _adaptive_avg(x, x.ndim - 1, _ints(output_size, 1)[0])


@op("_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(x, output_size):
    x = _t(x)
    oh, ow = _ints(output_size, 2)
    return _adaptive_avg(_adaptive_avg(x, x.ndim - 1, ow), x.ndim - 2, oh)


# --- views and shapes ----------------------------------------------------------

def _reshape(x, size):
    return np.reshape(_t(x), [int(s) for s in size])


op("view.default")(_reshape)
op("_unsafe_view.default")(_reshape)
op("reshape.default")(_reshape)


@op("permute.default")
def permute(x, dims):
    x = _t(x)
    return np.transpose(x, [_axis(d, x.ndim) for d in dims]) if x.ndim else x


@op("expand.default")
def expand(x, size, implicit=False):
    """-1 keeps a dimension's size; new dimensions are added in front. A read-only view."""
    x = _t(x)
    lead = len(size) - x.ndim
    shape = [x.shape[i - lead] if s == -1 and i >= lead else int(s) for i, s in enumerate(size)]
    return np.broadcast_to(x, shape)


@op("slice.Tensor")
def slice_(x, dim=0, start=None, end=None, step=1):
    """Python slicing: None ends, negative bounds count from the end, bounds clamp to the size."""
    x = _t(x)
    if step <= 0:
        raise ValueError("slice: step must be positive")
    idx = [slice(None)] * x.ndim
    idx[_axis(dim, x.ndim)] = slice(start, end, step)
    return x[tuple(idx)]


@op("select.int")
def select(x, dim, index):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    n = x.shape[ax]
    if not -n <= index < n:
        raise IndexError(f"select: index {index} out of range for size {n}")
    return _out(x[(slice(None),) * ax + (index,)])


@op("unsqueeze.default")
def unsqueeze(x, dim):
    x = _t(x)
    return np.expand_dims(x, _axis(dim, x.ndim + 1))


@op("squeeze.dim")
def squeeze_dim(x, dim):
    return squeeze_dims(x, [dim])


@op("squeeze.dims")
def squeeze_dims(x, dim):
    x = _t(x)
    axes = tuple(a for a in (_axis(d, x.ndim) for d in dim) if x.ndim and x.shape[a] == 1)
    return np.squeeze(x, axis=axes) if axes else x


@op("squeeze.default")
def squeeze_all(x):
    return _out(np.squeeze(_t(x)))


@op("cat.default")
def cat(tensors, dim=0):
    """Dtypes promote; 1-d empty tensors are skipped (ATen's legacy rule)."""
    ts = [_t(t) for t in tensors]
    dt = _result_type(*[t if t.ndim else t.reshape(1) for t in ts])
    kept = [t for t in ts if not (t.ndim == 1 and t.shape[0] == 0)]
    if not kept:
        return np.zeros((0,), dt)
    return np.concatenate([_as(t, dt) for t in kept], axis=_axis(dim, kept[0].ndim))


@op("stack.default")
def stack(tensors, dim=0):
    ts = [_t(t) for t in tensors]
    dt = _result_type(*[t if t.ndim else t.reshape(1) for t in ts])
    return np.stack([_as(t, dt) for t in ts], axis=_axis(dim, ts[0].ndim + 1))


def _split_sizes(x, sizes, dim=0):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    sizes = [int(s) for s in sizes]
    if sum(sizes) != x.shape[ax] or min(sizes, default=0) < 0:
        raise ValueError(f"split: sizes {sizes} do not add up to {x.shape[ax]}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=ax))


op("split_with_sizes.default")(_split_sizes)
op("split.sizes")(_split_sizes)
op("split.default")(_split_sizes)


@op("split.Tensor")
def split(x, split_size, dim=0):
    """Chunks of split_size along dim, the last one smaller."""
    x = _t(x)
    ax = _axis(dim, x.ndim)
    n = x.shape[ax]
    if split_size <= 0 and n:
        raise ValueError("split: split_size must be positive")
    return tuple(np.split(x, list(range(split_size, n, split_size)), axis=ax))


@op("unbind.int")
def unbind(x, dim=0):
    x = np.moveaxis(_t(x), _axis(dim, _t(x).ndim), 0)
    return tuple(x[i, ...] for i in range(x.shape[0]))       # [i, ...]: 0-d arrays, not scalars


@op("t.default")
def t(x):
    x = _t(x)
    return x.T if x.ndim == 2 else x


@op("transpose.int")
def transpose(x, dim0, dim1):
    x = _t(x)
    if x.ndim == 0:
        return x
    return np.swapaxes(x, _axis(dim0, x.ndim), _axis(dim1, x.ndim))


@op("flip.default")
def flip(x, dims):
    x = _t(x)
    axes = tuple(_axis(d, x.ndim) for d in dims)
    return np.flip(x, axis=axes) if axes and x.ndim else x


@op("roll.default")
def roll(x, shifts, dims=()):
    """No dims: roll the flattened tensor."""
    x = _t(x)
    if not dims:
        return np.roll(x.reshape(-1), int(shifts[0])).reshape(x.shape)
    return np.roll(x, [int(s) for s in shifts], axis=[_axis(d, x.ndim) for d in dims])


@op("repeat.default")
def repeat(x, repeats):
    x = _t(x)
    if len(repeats) < x.ndim:
        raise ValueError("repeat: fewer repeats than the tensor has dimensions")
    return np.tile(x, [int(r) for r in repeats])


@op("tril.default")
def tril(x, diagonal=0):
    return np.tril(_t(x), diagonal)


@op("triu.default")
def triu(x, diagonal=0):
    return np.triu(_t(x), diagonal)


@op("constant_pad_nd.default")
def constant_pad_nd(x, pad, value=0):
    """pad = [before_last, after_last, before_second_last, ...]; negative entries crop."""
    x = _t(x)
    n = len(pad) // 2
    if len(pad) % 2 or n > x.ndim:
        raise ValueError(f"constant_pad_nd: bad pad {pad} for a {x.ndim}-d tensor")
    crop = [slice(None)] * x.ndim
    widths = [(0, 0)] * x.ndim
    for i in range(n):
        ax = x.ndim - 1 - i
        lo, hi = int(pad[2 * i]), int(pad[2 * i + 1])
        crop[ax] = slice(max(-lo, 0), x.shape[ax] - max(-hi, 0))
        widths[ax] = (max(lo, 0), max(hi, 0))
    x = x[tuple(crop)]
    return np.pad(x, widths, constant_values=_as(value, x.dtype))


@op("index_select.default")
def index_select(x, dim, index):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    index = _nonnegative(_t(index).reshape(-1), "index_select")
    if x.ndim == 0:
        return np.take(x, index).reshape(())
    return np.take(x, index, axis=ax)


@op("gather.default")
def gather(x, dim, index, sparse_grad=False):
    """out[i][j] = x[index[i][j]][j] (dim 0); index may be smaller than x off dim."""
    x, index = _t(x), _nonnegative(_t(index), "gather")
    ax = _axis(dim, x.ndim)
    if index.ndim == 0 or x.ndim == 0:
        return _out(np.take(x.reshape(-1), index))
    x = x[tuple(slice(None) if a == ax else slice(0, index.shape[a]) for a in range(x.ndim))]
    return np.take_along_axis(x, index, ax)


def _scatter_index(index, ax):
    """Full index tuple: index along dim, the position elsewhere (an open grid)."""
    _nonnegative(index, "scatter")
    grid = list(np.indices(index.shape, sparse=True))
    grid[ax] = index
    return tuple(grid)


def _scatter_src(src, index):
    src = _t(src)
    return src[tuple(slice(0, n) for n in index.shape)] if src.ndim else src


def _scatter(x, dim, index, src, value=False):
    x, index = _t(x), _t(index)
    ax = _axis(dim, x.ndim)
    out = x.copy()
    if x.ndim == 0:
        out[()] = src if value else _t(src)
        return out
    v = _as(src, x.dtype) if value else _scatter_src(src, index)
    out[_scatter_index(index, ax)] = v
    return out


@op("scatter.src")
def scatter_src(x, dim, index, src):
    """Positions written twice get one of the values (torch leaves the order unspecified)."""
    return _scatter(x, dim, index, src)


@op("scatter.value")
def scatter_value(x, dim, index, value):
    return _scatter(x, dim, index, value, value=True)


@op("scatter_add.default")
def scatter_add(x, dim, index, src):
    x, index = _t(x), _t(index)
    if x.ndim == 0:
        return scatter_add(x.reshape(1), 0, index.reshape(-1), _t(src).reshape(-1)).reshape(())
    out = x.copy()
    np.add.at(out, _scatter_index(index, _axis(dim, x.ndim)), _scatter_src(src, index).astype(x.dtype))
    return out


_SCATTER_UFUNC = {"sum": np.add, "mean": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}


@op("scatter_reduce.two")
def scatter_reduce(x, dim, index, src, reduce, include_self=True):
    """sum / prod / mean / amax / amin; include_self=False drops self's value where anything
    is scattered. Integer means round down, as ATen."""
    if reduce not in _SCATTER_UFUNC:
        raise ValueError(f"scatter_reduce: unknown reduce {reduce!r}")
    x, index = _t(x), _t(index)
    if x.ndim == 0:
        x, index, src = x.reshape(1), index.reshape(-1), _t(src).reshape(-1)
        return scatter_reduce(x, 0, index, src, reduce, include_self).reshape(())
    out = x.copy()
    where = _scatter_index(index, _axis(dim, x.ndim))
    v = _scatter_src(src, index).astype(x.dtype, copy=False)
    if not include_self:
        if reduce in ("sum", "mean"):
            init = 0
        elif reduce == "prod":
            init = 1
        elif _cat(x.dtype) == 2:
            init = -np.inf if reduce == "amax" else np.inf
        else:
            info = np.iinfo(x.dtype) if x.dtype != _B else None
            init = (info.min if reduce == "amax" else info.max) if info else reduce == "amin"
        out[where] = init
    _SCATTER_UFUNC[reduce].at(out, where, v)
    if reduce == "mean":
        count = np.ones(x.shape, _I64) if include_self else np.zeros(x.shape, _I64)
        np.add.at(count, where, 1)
        count = np.maximum(count, 1)
        if _cat(x.dtype) == 2:
            out = out / count.astype(x.dtype)
        else:
            out = np.floor_divide(out, count).astype(x.dtype)
    return out


def _index_tuple(indices):
    out = []
    for i in indices:
        if i is None:
            out.append(slice(None))
            continue
        i = _t(i)
        out.append(i.astype(_B) if i.dtype == np.uint8 else i)    # uint8 indices are masks in torch
    return tuple(out)


@op("index.Tensor")
def index(x, indices):
    """Advanced indexing: a list with None for full slices; broadcast index arrays, bool masks,
    separated index arrays move to the front, as numpy (and torch) do."""
    return _out(_t(x)[_index_tuple(indices)])


@op("index_put.default")
def index_put(x, indices, values, accumulate=False):
    x = _t(x)
    out = x.copy()
    where = _index_tuple(indices)
    v = _as(_p(values), x.dtype)
    if accumulate:
        np.add.at(out, where, v)
    else:
        out[where] = v
    return out


@op("embedding.default")
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """Row gather; a Param weight gathers (and dequantizes) only the rows used."""
    indices = _t(indices)
    if isinstance(weight, Param):
        return weight.gather(indices)
    return np.take(weight, _nonnegative(indices, "embedding"), axis=0)


def _sort_indices(x, ax, descending):
    """Stable order (ties keep their order, NaN is the largest value), as torch's CPU sort."""
    if not descending:
        return _index_dtype(np.argsort(x, axis=ax, kind="stable"))
    i = np.argsort(np.flip(x, ax), axis=ax, kind="stable")
    return _index_dtype(x.shape[ax] - 1 - np.flip(i, ax))


def _sort(x, dim=-1, descending=False):
    x = _t(x)
    ax = _axis(dim, x.ndim)
    if x.ndim == 0:
        return x, np.zeros((), _I64)
    i = _sort_indices(x, ax, descending)
    return np.take_along_axis(x, i, ax), i


@op("sort.default")
def sort(x, dim=-1, descending=False):
    return _sort(x, dim, descending)


@op("sort.stable")
def sort_stable(x, stable=None, dim=-1, descending=False):
    return _sort(x, dim, descending)


@op("argsort.default")
def argsort(x, dim=-1, descending=False):
    return _sort(x, dim, descending)[1]


@op("argsort.stable")
def argsort_stable(x, stable=False, dim=-1, descending=False):
    return _sort(x, dim, descending)[1]


@op("topk.default")
def topk(x, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (smallest) along dim, in order; ties keep index order."""
    x = _t(x)
    ax = _axis(dim, x.ndim)
    if x.ndim == 0:
        if k > 1:
            raise ValueError("topk: k out of range")
        return (x, np.zeros((), _I64)) if k else (x.reshape(0), np.zeros(0, _I64))
    if not 0 <= k <= x.shape[ax]:
        raise ValueError(f"topk: k={k} out of range for size {x.shape[ax]}")
    i = _sort_indices(x, ax, largest)
    i = i[(slice(None),) * ax + (slice(0, k),)]
    return np.take_along_axis(x, i, ax), i


@op("sym_size.int")
def sym_size(x, dim):
    x = _t(x)
    return int(x.shape[_axis(dim, x.ndim)])


@op("sym_numel.default")
def sym_numel(x):
    return int(_t(x).size)
