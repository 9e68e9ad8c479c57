"""Translation of one torch.export node to the bundle op set.

Each ATen op maps to one op of ``edgecompress_runtime.ops`` with its arguments
in our order; ``node_op`` returns None for an op we cannot run (lowering lists
every such op with where it comes from) and "skip" for asserts that compute nothing.
"""
from __future__ import annotations

import operator

import torch

from edgecompress_runtime.ops import OPS

from .aten import op_name, schema_args, to_json_value

aten = torch.ops.aten

# ATen overload packet name -> (our op, argument adapter). The adapter takes
# (args, kwargs) of the FX node and returns our positional args.
_SIMPLE = {
    "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "exp": "exp", "log": "log",
    "sqrt": "sqrt", "rsqrt": "rsqrt", "neg": "neg", "bmm": "bmm", "matmul": "matmul", "mm": "matmul",
    "expand_as": "expand_as", "clamp_min": "clamp_min", "unsqueeze": "unsqueeze",
    "transpose": "transpose", "permute": "permute", "select": "select", "index": "index",
    "unbind": "unbind", "expand": "expand", "amax": "amax",
}
_IDENTITY = {"clone", "contiguous", "alias", "detach", "dropout", "lift_fresh_copy"}
_SKIP = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
         "_assert_async", "sym_constrain_range"}
_PY_OPS = {operator.getitem: "getitem", operator.add: "add", operator.mul: "mul",
           operator.sub: "sub", operator.floordiv: "floordiv"}


def _kw(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _adapt(packet: str, overload: str, args, kwargs):
    """Return (op, args) for one ATen call, or None when unsupported."""
    if packet in _SIMPLE:
        return _SIMPLE[packet], list(args)
    if packet in _IDENTITY:
        return "identity", [args[0]]
    if packet == "linear":
        return "linear", [args[0], args[1], _kw(args, kwargs, 2, "bias")]
    if packet == "embedding":
        return "embedding", [args[0], args[1]]
    if packet in ("add", "sub"):
        return packet, [args[0], args[1], _kw(args, kwargs, 2, "alpha", 1)]
    if packet == "mul":
        return "mul", [args[0], args[1]]
    if packet == "div":
        return "div", [args[0], args[1], kwargs.get("rounding_mode")]
    if packet == "pow" and overload == "Tensor_Scalar":
        return "pow", [args[0], args[1]]
    if packet in ("sum", "mean"):
        if overload == "default":
            return packet, [args[0], None, False]
        return packet, [args[0], _kw(args, kwargs, 1, "dim"), _kw(args, kwargs, 2, "keepdim", False)]
    if packet == "linalg_vector_norm":
        return "vector_norm", [args[0], _kw(args, kwargs, 1, "ord", 2.0),
                               _kw(args, kwargs, 2, "dim"), _kw(args, kwargs, 3, "keepdim", False)]
    if packet == "clamp":
        return "clamp", [args[0], _kw(args, kwargs, 1, "min"), _kw(args, kwargs, 2, "max")]
    if packet in ("softmax", "_softmax"):
        return "softmax", [args[0], args[1]]
    if packet == "sym_size":
        return "size", [args[0], args[1]]
    if packet == "sym_numel":
        return "numel", [args[0]]
    if packet in ("reshape", "view", "_unsafe_view"):
        return "reshape", [args[0], args[1]]
    if packet == "flatten":
        return "flatten", [args[0], _kw(args, kwargs, 1, "start_dim", 0), _kw(args, kwargs, 2, "end_dim", -1)]
    if packet == "squeeze":
        return "squeeze", [args[0], args[1] if len(args) > 1 else None]
    if packet == "t":
        return "transpose", [args[0], 0, 1]
    if packet in ("cat", "concat", "concatenate", "stack"):
        return ("stack" if packet == "stack" else "cat"), [args[0], _kw(args, kwargs, 1, "dim", 0)]
    if packet == "slice":
        return "slice", [args[0], _kw(args, kwargs, 1, "dim", 0), _kw(args, kwargs, 2, "start"),
                         _kw(args, kwargs, 3, "end"), _kw(args, kwargs, 4, "step", 1)]
    if packet == "arange":
        dt = str(kwargs.get("dtype") or torch.int64).replace("torch.", "")
        a = list(args) + [None] * 3
        if overload == "default":
            return "arange", [0, a[0], 1, dt]
        return "arange", [a[0], a[1], a[2] if a[2] is not None else 1, dt]
    if packet in ("to", "_to_copy", "type_as") and kwargs.get("dtype") is not None:
        return "to", [args[0], str(kwargs["dtype"]).replace("torch.", "")]
    return None


def node_op(node, ep):
    """(bundle op, args) for one call_function node; None when unsupported; "skip" to drop it."""
    target = node.target
    if target in _PY_OPS:
        return _PY_OPS[target], list(node.args)
    name = op_name(target)
    packet, _, over = name.partition(".")
    if packet in _SKIP:
        return "skip"
    if packet == "embedding_bag":
        return _embedding_bag(node, ep)
    if name == "index_select.default" and is_param(node.args[0], ep) and node.args[1] == 0:
        return "embedding", [node.args[0], node.args[2]]      # a table read by index_select: same gather
    if packet == "linear" and not is_param(node.args[1], ep):
        # a computed weight (a slice of MultiheadAttention's in_proj_weight): plain ATen semantics
        return name, list(schema_args(target, node.args, node.kwargs))
    adapted = _adapt(packet, over or "default", node.args, node.kwargs)
    if adapted is not None:
        return adapted
    if name in OPS and hasattr(target, "_schema"):
        return name, [to_json_value(a) if not isinstance(a, torch.fx.Node) else a
                      for a in schema_args(target, node.args, node.kwargs)]
    return None


def padding_idx(op, node, args):
    """The padding row an embedding call declares (nn.Embedding(padding_idx=...)), or None."""
    if op == "embedding":
        if "index_select" in str(node.target):
            return None
        pad = node.args[2] if len(node.args) > 2 else node.kwargs.get("padding_idx", -1)
    elif op == "embedding_bag":
        pad = args[3]
    else:
        pad = args[4]
    return int(pad) if isinstance(pad, int) and pad >= 0 else None


def is_param(a, ep) -> bool:
    return isinstance(a, torch.fx.Node) and a.name in ep.graph_signature.inputs_to_parameters


def _embedding_bag(node, ep):
    """ATen embedding_bag(weight, indices, offsets, scale_grad, mode, sparse,
    per_sample_weights, include_last_offset, padding_idx). Fixed-size bags
    (indices = reshape(x[B, L], [-1]), offsets = arange(0, B*L, L)) become
    ``embedding_bag`` over x; anything else keeps offsets."""
    a = list(node.args) + [None] * 9
    weight, indices, offsets = a[0], a[1], a[2]
    mode = a[4] or 0
    psw, last, pad = a[6], bool(a[7]), a[8]
    if pad is not None and pad < 0:
        pad = None
    src = indices.args[0] if getattr(indices, "target", None) in (aten.reshape.default, aten.view.default,
                                                                  aten._unsafe_view.default) else None
    src_val = src.meta.get("val") if isinstance(src, torch.fx.Node) else None
    idx_val = indices.meta.get("val") if isinstance(indices, torch.fx.Node) else None
    if (src_val is not None and idx_val is not None and src_val.dim() == 2 and idx_val.dim() == 1
            and not last and getattr(offsets, "target", None) is aten.arange.start_step):
        o = list(offsets.args) + [None] * 3
        step = o[2] if o[2] is not None else 1
        width = src_val.shape[1]
        if o[0] == 0 and isinstance(width, int) and step == width:
            if psw is None:
                return "embedding_bag", [weight, src, mode, pad]
            psw_src = psw.args[0] if getattr(psw, "target", None) in (aten.reshape.default, aten.view.default,
                                                                      aten._unsafe_view.default) else None
            val = psw_src.meta.get("val") if isinstance(psw_src, torch.fx.Node) else None
            if mode == 0 and val is not None and val.dim() == 2:
                return "embedding_bag", [weight, src, mode, pad, psw_src]
    if psw is not None:
        return None             # weighted jagged bags: listed as unsupported
    return "embedding_bag_offsets", [weight, indices, offsets, mode, pad, last]
