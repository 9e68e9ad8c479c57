"""Core ATen ops: views and shapes."""
from __future__ import annotations

import numpy as np

from ..ops import op
from ..params import Param
from ._args import _B, _I64, _as, _axis, _cat, _index_dtype, _nonnegative, _out, _p, _result_type, _t

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
