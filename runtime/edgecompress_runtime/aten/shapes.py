"""Core ATen ops: views and shapes (indexing and sorting are in ``indexing.py``)."""
from __future__ import annotations

import numpy as np

from ..ops import op
from ._args import _as, _axis, _out, _result_type, _t

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


@op("sym_size.int")
def sym_size(x, dim):
    x = _t(x)
    return int(x.shape[_axis(dim, x.ndim)])


@op("sym_numel.default")
def sym_numel(x):
    return int(_t(x).size)
