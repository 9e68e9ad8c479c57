"""Core ATen ops: indexing (index_select, gather / scatter, index / index_put, embedding) and sorting."""
from __future__ import annotations

import numpy as np

from ..ops import op
from ..params import Param
from ._args import _B, _I64, _as, _axis, _cat, _index_dtype, _nonnegative, _out, _p, _t


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
