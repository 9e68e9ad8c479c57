"""Core ATen ops: linear algebra."""
from __future__ import annotations

import math
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ops import op
from ._args import UnsupportedArgument, _cat, _index_dtype, _out, _t
from .elementwise import _trunc_div
from .reductions import _mean

# --- linear algebra ------------------------------------------------------------

@op("mm.default")
@op("bmm.default")
@op("matmul.default")
def matmul(a, b):
    """mm, bmm and matmul: one numpy matmul (shape checks are torch's at export time)."""
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
