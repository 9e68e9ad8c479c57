"""Argument helpers shared by the Core ATen ops: tensors, dims, dtypes, type promotion."""
from __future__ import annotations

import numpy as np

from ..params import Param

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
