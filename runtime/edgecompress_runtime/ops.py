"""The bundle op set and its numpy semantics.

A bundle's graph is a list of nodes ``{"op": NAME, "args": [...], "out": VALUE}``;
each NAME is one function below. The host lowers ``torch.export`` graphs to these
ops (see ``edgecompress.graph``), so the two sides agree on one definition: this
file. Semantics follow the ATen op of the same name unless a docstring says
otherwise. Arguments arrive already resolved: arrays, python scalars, lists, or a
parameter object (``Param``) for weights that may be stored quantized.

Adding an op: write the function, register it with ``@op("name")``, document it
in docs/ops.md, and bump nothing (unknown ops in a bundle are refused at load
with the op's name, so old runtimes fail loudly on new graphs).

Why this module is long: it is the op table of the bundle's own op set, one short
function per op name, in the order docs/ops.md lists them; spread over files, one
op's semantics and its neighbours' would be looked for in several places. (The Core
ATen ops live in ``aten/``, one module per kind.)
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .params import Param

OPS: dict[str, Callable] = {}
# Ops whose output is a view of their input: a run keeps no new memory for them (the host's
# latency model and the runtime's calibration count kept bytes with this set).
VIEW_OPS = frozenset({"slice", "transpose", "permute", "squeeze", "unsqueeze", "reshape", "flatten", "expand",
                      "expand_as", "identity", "getitem", "size", "numel", "unbind"})


def op(name: str):
    def register(fn):
        OPS[name] = fn
        return fn

    return register


def _axes(dims, ndim):
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    return tuple(d % ndim for d in dims)


# --- parameters: weights that may be stored quantized -----------------------

@op("linear")
def linear(x, weight: Param, bias=None):
    """y = x @ W.T + b. int8 weights are dequantized once at load (MLP weights
    are small next to the tables); with int8 activations (weight.act dynamic or
    static) x is rounded to int8 first and multiplied with the int8 codes."""
    wt = weight.matmul_ready()  # [in, out], C-contiguous
    if weight.act is not None:
        x = _quantize_activations(x, weight)
        wt = weight.int8_matmul_ready()
        y = x[0] @ wt if x[0].ndim == 2 else np.matmul(x[0], wt)
        y *= x[1]
        y *= weight.arrays["scale"]
        if bias is not None:
            y += bias.dense() if isinstance(bias, Param) else bias
        return y
    y = x @ wt if x.ndim == 2 else np.matmul(x, wt)
    if bias is not None:
        y += bias.dense() if isinstance(bias, Param) else bias
    return y


def _quantize_activations(x, weight: Param):
    """Symmetric int8 activations: per row at run time ("dynamic") or with the
    calibrated scale ("static"). Returns (integer-valued float32 x, scale)."""
    if weight.act == "static":
        scale = weight.arrays["act_scale"].reshape(()).astype(np.float32)
    else:
        amax = np.max(np.abs(x), axis=-1, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(x / scale), -127, 127).astype(np.float32)
    return q, scale


@op("embedding")
def embedding(weight: Param, indices):
    """Row gather; quantized tables dequantize only the gathered rows."""
    return weight.gather(indices)


@op("embedding_bag")
def embedding_bag(weight: Param, indices, mode: int = 0, padding_idx=None, per_sample_weights=None):
    """Fixed-size bags: ``indices`` is [B, L]; reduce over L.
    mode 0 = sum, 1 = mean, 2 = max (as ATen). Rows equal to padding_idx are skipped.
    ``per_sample_weights`` [B, L] (sum mode only, as ATen) scales each row before the sum."""
    rows = weight.gather(indices)  # [B, L, D]
    if per_sample_weights is not None:
        w = np.asarray(per_sample_weights, dtype=rows.dtype)
        if padding_idx is not None:
            w = w * (indices != padding_idx)
        return np.einsum("bld,bl->bd", rows, w)
    if mode != 2 and rows.dtype == np.float32 and rows.ndim == 3 and rows.shape[1] <= EINSUM_MAX_REDUCED:
        # one einsum pass does mask and sum: 2-4x faster than multiply, then sum over the middle axis
        if padding_idx is None:
            out = np.einsum("bld->bd", rows)
            return out / np.float32(max(rows.shape[1], 1)) if mode == 1 else out
        keep = (indices != padding_idx).astype(np.float32)
        out = np.einsum("bld,bl->bd", rows, keep)
        if mode == 1:
            out /= np.maximum(keep.sum(axis=1, keepdims=True), 1)
        return out
    if padding_idx is not None:
        keep = indices != padding_idx
        rows = rows * keep[..., None]
        if mode == 1:
            count = np.maximum(keep.sum(axis=1, keepdims=True), 1)
            return rows.sum(axis=1) / count
    if mode == 0:
        return rows.sum(axis=1)
    if mode == 1:
        return rows.mean(axis=1)
    return rows.max(axis=1)


@op("embedding_bag_offsets")
def embedding_bag_offsets(weight: Param, indices, offsets, mode: int = 0, padding_idx=None,
                          include_last_offset: bool = False):
    """Jagged bags as in ATen: bag b holds indices[offsets[b]:offsets[b+1]]."""
    n = indices.shape[0]
    offsets = np.asarray(offsets, dtype=np.int64)
    if include_last_offset:
        offsets = offsets[:-1]
    bags = offsets.shape[0]
    rows = weight.gather(indices)
    if padding_idx is not None:
        rows = rows * (indices != padding_idx)[:, None]
    seg = np.zeros(n, dtype=np.int64)
    if bags > 1:
        np.add.at(seg, offsets[1:][offsets[1:] < n], 1)
    seg = np.cumsum(seg)
    out = np.zeros((bags, rows.shape[1]), dtype=np.float32)
    if mode == 2:
        out[:] = -np.inf
        np.maximum.at(out, seg, rows)
        out[~np.isfinite(out)] = 0
        return out
    np.add.at(out, seg, rows)
    if mode == 1:
        counts = np.bincount(seg, minlength=bags) if padding_idx is None else \
            np.bincount(seg, weights=(indices != padding_idx), minlength=bags)
        out /= np.maximum(counts, 1)[:, None]
    return out


# --- elementwise -------------------------------------------------------------

def _v(x):
    return x.dense() if isinstance(x, Param) else x


def _torch_float(out, a, b):
    """torch keeps float32 where numpy promotes to float64 (int64 tensor + python float, float32 + int64
    tensor): float64 stays only when an operand is a float64 tensor."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float64:
        return out
    if any(isinstance(v, np.ndarray) and v.dtype == np.float64 and v.ndim > 0 for v in (a, b)):
        return out
    return out.astype(np.float32)


@op("add")
def add(a, b, alpha=1):
    a, b = _v(a), _v(b)
    return _torch_float(a + (b * alpha if alpha != 1 else b), a, b)


@op("sub")
def sub(a, b, alpha=1):
    a, b = _v(a), _v(b)
    return _torch_float(a - (b * alpha if alpha != 1 else b), a, b)


@op("mul")
def mul(a, b):
    a, b = _v(a), _v(b)
    return _torch_float(a * b, a, b)


@op("div")
def div(a, b, rounding_mode=None):
    a, b = _v(a), _v(b)
    if rounding_mode == "floor":
        return np.floor_divide(a, b)
    if rounding_mode == "trunc":
        return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    out = np.true_divide(a, b)
    return out.astype(np.float32) if isinstance(out, np.ndarray) and out.dtype == np.float64 else out


@op("floordiv")
def floordiv(a, b):
    return a // b


@op("neg")
def neg(x):
    return -x


@op("pow")
def pow_(x, e):
    return np.power(x, e)


@op("relu")
def relu(x):
    return np.maximum(x, 0, dtype=x.dtype)


@op("sigmoid")
def sigmoid(x):
    # exp of -|x| never overflows; same value as 1/(1+exp(-x))
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


@op("tanh")
def tanh(x):
    return np.tanh(x)


@op("exp")
def exp(x):
    return np.exp(x)


@op("log")
def log(x):
    return np.log(x)


@op("sqrt")
def sqrt(x):
    return np.sqrt(x)


@op("rsqrt")
def rsqrt(x):
    return 1 / np.sqrt(x)


@op("clamp")
def clamp(x, min=None, max=None):
    return np.clip(x, min, max).astype(x.dtype)


@op("clamp_min")
def clamp_min(x, v):
    return np.maximum(x, np.asarray(v, dtype=x.dtype))


@op("identity")
def identity(x, *unused):
    """clone, contiguous, dropout in eval, alias: value unchanged."""
    return x


# --- reductions --------------------------------------------------------------

# einsum reduces small float32 extents 2-5x faster than np.sum's strided /
# pairwise reduction (benchmarks/backends.py); above this many summed
# elements np.sum's pairwise summation is kept for its accuracy
EINSUM_MAX_REDUCED = 64
_LETTERS = "abcdefgh"


def _sum(x, axes: tuple, keepdim: bool):
    if (isinstance(x, np.ndarray) and x.dtype == np.float32 and 0 < len(axes) < x.ndim <= len(_LETTERS)
            and math.prod(x.shape[a] for a in axes) <= EINSUM_MAX_REDUCED):
        kept = "".join(_LETTERS[a] for a in range(x.ndim) if a not in axes)
        out = np.einsum(f"{_LETTERS[:x.ndim]}->{kept}", x)
        return np.expand_dims(out, axes) if keepdim else out
    return np.sum(x, axis=axes, keepdims=keepdim)


@op("sum")
def sum_(x, dims=None, keepdim=False):
    return _sum(x, _axes(dims, x.ndim), keepdim)


@op("mean")
def mean(x, dims=None, keepdim=False):
    return np.mean(x, axis=_axes(dims, x.ndim), keepdims=keepdim)


@op("amax")
def amax(x, dims=None, keepdim=False):
    return np.max(x, axis=_axes(dims, x.ndim), keepdims=keepdim)


@op("vector_norm")
def vector_norm(x, ord=2.0, dims=None, keepdim=False):
    axes = _axes(dims, x.ndim)
    if ord == 2:
        return np.sqrt(np.sum(x * x, axis=axes, keepdims=keepdim))
    if ord == 1:
        return np.sum(np.abs(x), axis=axes, keepdims=keepdim)
    if math.isinf(ord):
        return np.max(np.abs(x), axis=axes, keepdims=keepdim)
    return np.sum(np.abs(x) ** ord, axis=axes, keepdims=keepdim) ** (1.0 / ord)


@op("softmax")
def softmax(x, dim, half_to_float=False):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


# --- matmul ------------------------------------------------------------------

@op("matmul")
def matmul(a, b):
    return np.matmul(_v(a), _v(b))


@op("bmm")
def bmm(a, b):
    return np.matmul(a, b)


# --- shapes and indexing -----------------------------------------------------

@op("size")
def size(x, dim):
    """sym_size: one dimension of x as a python int (batch sizes are dynamic)."""
    return int(x.shape[dim])


@op("numel")
def numel(x):
    return int(x.size)


@op("reshape")
def reshape(x, shape):
    return np.reshape(_v(x), [int(s) for s in shape])


@op("flatten")
def flatten(x, start=0, end=-1):
    x = _v(x)
    nd = x.ndim
    if nd == 0:
        return x.reshape(1)
    start, end = start % nd, end % nd
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])


@op("squeeze")
def squeeze(x, dims=None):
    x = _v(x)
    if dims is None:
        return np.squeeze(x)
    axes = tuple(d for d in _axes(dims, x.ndim) if x.shape[d] == 1)
    return np.squeeze(x, axis=axes) if axes else x


@op("unsqueeze")
def unsqueeze(x, dim):
    x = _v(x)
    return np.expand_dims(x, dim % (x.ndim + 1))


@op("transpose")
def transpose(x, d0, d1):
    return np.swapaxes(_v(x), d0, d1)


@op("permute")
def permute(x, dims):
    return np.transpose(_v(x), dims)


@op("expand")
def expand(x, shape):
    x = _v(x)
    shape = [x.shape[i - (len(shape) - x.ndim)] if s == -1 else int(s) for i, s in enumerate(shape)]
    return np.broadcast_to(x, shape)


@op("expand_as")
def expand_as(x, other):
    return np.broadcast_to(x, other.shape)


@op("cat")
def cat(tensors, dim=0):
    return np.concatenate([_v(t) for t in tensors], axis=dim)


@op("stack")
def stack(tensors, dim=0):
    return np.stack([_v(t) for t in tensors], axis=dim)


@op("unbind")
def unbind(x, dim=0):
    return tuple(np.moveaxis(_v(x), dim, 0))


@op("getitem")
def getitem(seq, i):
    return seq[i]


@op("slice")
def slice_(x, dim=0, start=None, end=None, step=1):
    x = _v(x)
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(start, end, step)
    return x[tuple(idx)]


@op("select")
def select(x, dim, index):
    return np.take(_v(x), index, axis=dim)


@op("index")
def index(x, indices):
    """ATen index.Tensor: a list with None for full slices and arrays elsewhere."""
    return _v(x)[tuple(slice(None) if i is None else i for i in indices)]


@op("arange")
def arange(start, end=None, step=1, dtype="int64"):
    return np.arange(start, end, step, dtype=np.dtype(dtype))


@op("to")
def to(x, dtype):
    return x.astype(np.dtype(dtype))


def check_ops(nodes) -> None:
    """Refuse a graph that uses ops this runtime doesn't know, naming them."""
    unknown = sorted({n["op"] for n in nodes} - OPS.keys())
    if unknown:
        from .errors import BundleError
        raise BundleError(
            f"bundle uses ops this runtime does not implement: {', '.join(unknown)}; "
            "upgrade edgecompress-runtime")
