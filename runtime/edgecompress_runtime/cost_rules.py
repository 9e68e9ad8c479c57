"""Cost rules of bounds.py: a node's new memory and FLOPs estimated from its arguments' shapes
*before* it runs (matmul family exactly; shape-creating ops from their shape arguments; gathers
from index shapes; other ops from the broadcast shape; views free). Anything a rule cannot read
costs infinity, so the node is refused, never guessed."""
from __future__ import annotations

import math

import numpy as np

from .ops import VIEW_OPS
from .params import Param

_VIEWS = {o.split(".")[0] for o in VIEW_OPS} | {"view", "_unsafe_view", "t", "alias", "split", "split_with_sizes",
                                                 "select", "sym_size", "sym_numel"}
_REDUCE = {"sum", "mean", "amax", "amin", "max", "min", "prod", "var", "logsumexp", "argmax", "argmin", "any",
           "all", "vector_norm"}
_MATMUL = {"linear", "matmul", "bmm", "mm", "addmm", "baddbmm"}


def _shape(x) -> tuple:
    if isinstance(x, np.ndarray):
        return x.shape
    if isinstance(x, Param):
        return tuple(x.shape)
    return ()


def arrays_in(args) -> list:
    out, stack = [], list(args)
    while stack:
        a = stack.pop()
        if isinstance(a, (np.ndarray, Param)):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            stack.extend(a)
    return out


def _item(arrs) -> int:
    return max([a.dtype.itemsize for a in arrs if isinstance(a, np.ndarray)] + [4])


def _prod(shape) -> int:
    return math.prod(int(s) for s in shape)


def _matmul(sa: tuple, sb: tuple) -> tuple[int, int]:
    if len(sa) == 1:
        sa = (1,) + sa
    if len(sb) == 1:
        sb = sb + (1,)
    try:
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        batch = max(sa[:-2], sb[:-2], key=_prod)
    out = _prod(batch) * sa[-2] * sb[-1]
    return out, 2 * out * sa[-1]


def _conv(args: list, item: int) -> tuple[float, float]:
    """convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    an upper bound (stride 1 unless transposed, where it multiplies)."""
    x, w = _shape(args[0]), _shape(args[1])
    stride, pad, transposed, groups = _int_list(args[3]), _int_list(args[4]), bool(args[6]), int(args[8])
    spatial = [s + 2 * p for s, p in zip(x[2:], pad + pad[-1:] * len(x))]
    channels = w[1] * groups if transposed else w[0]
    out = x[0] * channels * _prod(spatial) * (_prod(stride) if transposed else 1)
    return out * item, 2 * out * _prod(w[1:]) * (_prod(stride) if transposed else 1)


def _int_list(x) -> list[int]:
    return [int(v) for v in (x if isinstance(x, (list, tuple)) else [x])]


def estimate(op: str, args: list) -> tuple[float, float]:
    """(new bytes, FLOPs) of running ``op`` on ``args``, before running it (an upper bound for the
    ops that can grow; see the module doc). Anything it cannot read costs infinity."""
    base = op.split(".")[0]
    try:
        return _estimate(base, args)
    except Exception:  # noqa: BLE001 - arguments a rule cannot read: the node is refused, never guessed
        return math.inf, math.inf


def _estimate(base: str, args: list) -> tuple[float, float]:
    arrs = arrays_in(args)
    size = sum(_prod(_shape(a)) for a in arrs)
    item = _item(arrs)
    if base in _VIEWS:
        return 0, 0
    if base in _REDUCE or base in ("size", "numel", "getitem"):
        return 0, size
    if base in _MATMUL:
        a, b = (args[1], args[2]) if base in ("addmm", "baddbmm") else (args[0], args[1])
        if base == "linear":
            sb = _shape(b)
            out = _prod(_shape(a)[:-1]) * sb[0]
            return out * item, 2 * out * _shape(a)[-1]
        out, flops = _matmul(_shape(a), _shape(b))
        return out * item, flops
    if base == "convolution":
        return _conv(args, item)
    n = _created(base, args)
    if n is not None:
        return n * 8, n
    if base in ("cat", "stack"):
        return size * item, size
    if base in ("embedding", "embedding_bag", "embedding_bag_offsets"):
        w, idx = args[0], args[1]
        out = _prod(_shape(idx)) * _shape(w)[-1]
        return out * 4, out
    if base == "index":
        x, ix = _shape(args[0]), args[1]
        picked = [_shape(i) for i in ix if i is not None]
        kept = [s for s, i in zip(x, list(ix) + [None] * len(x)) if i is None]
        out = _prod(np.broadcast_shapes(*picked)) * _prod(kept) if picked else _prod(x)
        return out * item, out
    if base == "index_select":
        x = _shape(args[0])
        out = _prod(x) // max(1, x[int(args[1])]) * _prod(_shape(args[2]))
        return out * item, out
    shapes = [_shape(a) for a in arrs]
    try:
        out = _prod(np.broadcast_shapes(*shapes)) if shapes else 1
    except ValueError:
        out = max((_prod(s) for s in shapes), default=1)
    return out * item, out + size


def _created(base: str, args: list):
    """Elements of ops whose size comes from their arguments, else None."""
    if base in ("full", "empty"):
        return _prod(_int_list(args[0]))
    if base in ("new_zeros", "new_ones", "new_full"):
        return _prod(_int_list(args[1]))
    if base == "arange":
        nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums + [1])[:3]
        return max(0, math.ceil((end - start) / step))
    if base == "repeat":
        return _prod(_shape(args[0])) * _prod(_int_list(args[1]))
    if base == "constant_pad_nd":
        shape, pad = list(_shape(args[0])), _int_list(args[1])
        for k in range(len(pad) // 2):
            shape[-1 - k] += pad[2 * k] + pad[2 * k + 1]
        return _prod(max(0, s) for s in shape)
    if base in ("_adaptive_avg_pool2d", "adaptive_avg_pool1d"):
        x = _shape(args[0])
        return _prod(x[:-len(_int_list(args[1]))]) * _prod(_int_list(args[1]))
    return None
