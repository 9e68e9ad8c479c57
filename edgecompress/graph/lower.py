"""Lowering: nn.Module -> torch.export graph -> the bundle op set.

We export with a dynamic batch dimension and keep the pre-decomposition ATen
graph, where ``linear`` and ``embedding_bag`` are still whole (easy to quantize
and to map to fused numpy calls). Each ATen op maps to one op of
``edgecompress_runtime.ops``; anything else is an UnsupportedOpError naming the
op and where in the user's code it comes from.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch

from edgecompress_runtime.ops import OPS

from ..errors import CompileError, UnsupportedOpError
from .aten import op_name, schema_args, to_json_value
from .export import export_model, unsupported_report
from .fold import fold_batchnorm
from .io import CallConvention, output_names

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


@dataclass
class Program:
    """A lowered model: the graph over our op set plus its weights.

    ``params`` maps state_dict names to stored weights (see StoredParam);
    passes replace entries with quantized ones. ``roles`` says how the graph
    uses each param ("embedding", "linear", "bias", "other")."""

    graph: dict
    params: dict
    constants: dict
    roles: dict
    input_names: list
    example: dict = field(default_factory=dict)
    index_sources: dict = field(default_factory=dict)   # table -> (input, field or None)
    outputs: list = field(default_factory=list)         # [{"name", "form": logit | probability}] per graph output
    metric_output: int = 0                              # the output metrics, the planner and distillation use
    padding_rows: dict = field(default_factory=dict)    # table -> rows every pass keeps exactly (padding_idx)
    call: object = None                                 # CallConvention: how the source model takes inputs
    # not stored in the bundle: what passes may need (teacher model, training
    # data, id counts) and what they did (one record per changed parameter)
    context: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def param_bytes(self) -> int:
        return sum(p.nbytes for p in self.params.values())

    def copy(self) -> "Program":
        """A program to apply passes to. Passes replace arrays, never write into
        them, so arrays are shared; the graph is copied (MLP pruning edits it)."""
        import copy as _copy
        return Program(graph=_copy.deepcopy(self.graph), params=dict(self.params), constants=dict(self.constants),
                       roles=dict(self.roles), input_names=list(self.input_names), example=self.example,
                       index_sources=dict(self.index_sources), outputs=list(self.outputs), call=self.call,
                       metric_output=self.metric_output, padding_rows=dict(self.padding_rows),
                       context=self.context, log=list(self.log))

    def tables(self) -> list[str]:
        return [n for n in self.params if self.roles.get(n) == "embedding"]

    def id_counts(self, table: str):
        """How often each row of ``table`` occurs in the training data (or None)."""
        cache = self.context.setdefault("_id_counts", {})
        if table in cache:
            return cache[table]
        data, src = self.context.get("train_data"), self.index_sources.get(table)
        counts = None
        if data is not None and src is not None and src[0] in data.inputs:
            ids = np.asarray(data.inputs[src[0]])
            if src[1] is not None and ids.ndim >= 2:
                ids = ids[:, src[1]]
            rows = self.params[table].shape[0]
            ids = ids.reshape(-1)
            ids = ids[(ids >= 0) & (ids < rows)]
            if ids.dtype.kind == "f":                  # ids carried in a float tensor (one concatenated X)
                ids = ids[ids == np.floor(ids)]
            ids = ids.astype(np.int64, copy=False)
            counts = np.bincount(ids, minlength=rows)
        cache[table] = counts
        return counts


@dataclass
class StoredParam:
    kind: str                       # fp32 | rowwise | channel_int8 (see runtime params.py)
    arrays: dict                    # role -> np.ndarray
    shape: tuple
    bits: int = 32
    info: dict = field(default_factory=dict)   # what the pass did (error, clip, ...)
    act: str | None = None                     # Linear activations: None | "dynamic" | "static"

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def to_runtime(self, name):
        from edgecompress_runtime.params import Param
        return Param(name, self.kind, self.arrays, self.shape, self.bits, act=self.act)

    def replace(self, **kw) -> "StoredParam":
        import dataclasses as _dc
        return _dc.replace(self, **kw)


_SHAPE_ONLY = {"view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "clone", "alias", "flatten", "_to_copy"}


def _output_form(node) -> str:
    """"probability" when the output ends in a sigmoid or softmax (through reshapes), else "logit"."""
    while isinstance(node, torch.fx.Node) and node.op == "call_function":
        packet = op_name(node.target).split(".")[0]
        if packet == "sigmoid":
            return "probability"
        if packet in ("_softmax", "softmax"):
            return "probability"
        if packet in ("cat", "stack"):          # heads side by side: a probability if every part is
            parts = node.args[0]
            forms = {_output_form(p) for p in parts}
            return "probability" if forms == {"probability"} else "logit"
        if packet not in _SHAPE_ONLY:
            break
        node = node.args[0]
    return "logit"


def _node_op(node, ep):
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
    if name == "index_select.default" and _is_param(node.args[0], ep) and node.args[1] == 0:
        return "embedding", [node.args[0], node.args[2]]      # a table read by index_select: same gather
    if packet == "linear" and not _is_param(node.args[1], ep):
        # a computed weight (a slice of MultiheadAttention's in_proj_weight): plain ATen semantics
        return name, list(schema_args(target, node.args, node.kwargs))
    adapted = _adapt(packet, over or "default", node.args, node.kwargs)
    if adapted is not None:
        return adapted
    if name in OPS and hasattr(target, "_schema"):
        return name, [to_json_value(a) if not isinstance(a, torch.fx.Node) else a
                      for a in schema_args(target, node.args, node.kwargs)]
    return None


def lower(model: torch.nn.Module, example: dict, call: CallConvention | None = None) -> Program:
    """Export ``model`` on ``example`` inputs (a dict of arrays, batch >= 2)
    and translate the graph to our op set."""
    model = model.eval()
    call = call or CallConvention.infer(model, example)
    ep = export_model(model, call, example)
    sig = ep.graph_signature
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    params_of = dict(sig.inputs_to_parameters)
    buffers_of = dict(sig.inputs_to_buffers)
    lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != len(call.names):
        raise CompileError(f"torch.export saw {len(user_inputs)} input tensors, expected {len(call.names)} "
                           f"({', '.join(call.names)}); inputs must be tensors or one dict of tensors")
    flat_name = dict(zip(user_inputs, call.names))

    params, constants, roles = {}, {}, {}
    const_vals: dict[str, torch.Tensor] = {}     # node -> torch value for folding
    ref: dict[str, object] = {}                  # node name -> JSON arg
    nodes: list[dict] = []
    unsupported: dict[str, list] = {}
    forms: list[str] = []
    ndim: dict[str, int | None] = {}             # value -> rank (for exact rewrites)
    paddings: dict[str, set] = {}                # table -> padding rows

    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in params_of:
                pname = params_of[node.name]
                params[pname] = StoredParam("fp32", {"data": state[pname].detach().float().numpy().copy()},
                                            tuple(state[pname].shape))
                ref[node.name] = {"p": pname}
            elif node.name in buffers_of or node.name in lifted:
                key = buffers_of.get(node.name) or lifted[node.name]
                t = state[key] if key in state else ep.constants[key]
                const_vals[node.name] = t.detach()
                ref[node.name] = None  # materialised as a constant only if used unfolded
            elif node.name in user_inputs:
                ref[node.name] = {"v": flat_name[node.name]}
            continue
        if node.op == "output":
            outs = node.args[0]
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            if unsupported:
                raise UnsupportedOpError(unsupported_report(unsupported))
            out_names = [_arg(o, ref, const_vals, constants) for o in outs]
            forms = [_output_form(o) for o in outs]
            out_nodes = outs
            break
        if node.op != "call_function":
            unsupported.setdefault(f"{node.target} ({node.op})", []).append(node)
            continue

        # constant folding: everything computable from buffers and literals
        if _foldable(node, const_vals):
            args, kwargs = _torch_args(node, const_vals)
            const_vals[node.name] = node.target(*args, **kwargs)
            continue

        if node.target is operator.getitem:
            src = node.args[0]
            if getattr(src, "target", None) is not None and "embedding_bag" in str(src.target):
                if node.args[1] != 0:
                    if node.users:
                        unsupported.setdefault("embedding_bag auxiliary outputs", []).append(node)
                    continue
                ref[node.name] = ref[src.name]
                continue
        lowered = _node_op(node, ep)
        if lowered == "skip":
            continue
        if lowered is None:
            unsupported.setdefault(op_name(node.target), []).append(node)
            ref[node.name] = {"v": node.name}
            continue
        op, args = lowered
        if unsupported:          # keep walking only to list every unsupported op
            ref[node.name] = {"v": node.name}
            continue
        assert op in OPS, op
        out = node.name
        nodes.append({"op": op, "args": [_arg(a, ref, const_vals, constants) for a in args], "out": out})
        val = node.meta.get("val")
        ndim[out] = val.dim() if isinstance(val, torch.Tensor) else None
        ref[node.name] = {"v": out}
        _note_roles(op, node, ref, roles, paddings, args)

    for name in params:
        roles.setdefault(name, "other")
    graph = {"version": 1, "inputs": list(call.names),
             "outputs": [o["v"] if isinstance(o, dict) and "v" in o else _fail_output(o) for o in out_names],
             "nodes": _dead_code_elimination(nodes, out_names)}
    graph["nodes"] = fold_batchnorm(graph["nodes"], params, constants, roles, ndim, set(graph["outputs"]))
    names, widths = _output_names_widths(ep, out_nodes)
    if len(names) != len(graph["outputs"]):
        names = [f"output_{i}" for i in range(len(graph["outputs"]))] if len(graph["outputs"]) > 1 else ["output"]
    prog = Program(graph=graph, params=params, constants=constants, roles=roles,
                   input_names=list(call.names), example=example)
    prog.call = call
    prog.padding_rows = {t: sorted(r) for t, r in paddings.items() if t in params}
    prog.outputs = [{"name": n, "form": f, "width": w} for n, f, w in zip(names, forms, widths)]
    prog.index_sources = {t: (flat_name.get(i, i), f) for t, (i, f) in _trace_index_sources(ep, params_of).items()}
    used = {a["p"] for n in graph["nodes"] for a in _flat(n["args"]) if isinstance(a, dict) and "p" in a}
    for unused in set(params) - used:
        del params[unused]
        roles.pop(unused, None)
    read = {a["c"] for n in graph["nodes"] for a in _flat(n["args"]) if isinstance(a, dict) and "c" in a}
    for unused in set(constants) - read:
        del constants[unused]
    return prog


def _output_names_widths(ep, out_nodes):
    """Head names from the model's output structure (tensor, tuple, dict) and each head's width."""
    import torch.utils._pytree as pytree
    vals = [o.meta.get("val") if isinstance(o, torch.fx.Node) else None for o in out_nodes]
    widths = [int(np.prod(v.shape[1:])) if isinstance(v, torch.Tensor) and v.dim() > 1 else 1 for v in vals]
    try:
        names = output_names(pytree.tree_unflatten(vals, ep.call_spec.out_spec))
    except Exception:  # noqa: BLE001 - an unusual structure still gets positional names
        names = []
    return names, widths


def _padding_idx(op, node, args):
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


def _is_param(a, ep) -> bool:
    return isinstance(a, torch.fx.Node) and a.name in ep.graph_signature.inputs_to_parameters


def _note_roles(op, node, ref, roles, paddings, args) -> None:
    """Which params are Linear weights / biases and which are tables (and their padding rows)."""
    def pname(a):
        r = ref.get(a.name) if isinstance(a, torch.fx.Node) else None
        return r["p"] if isinstance(r, dict) and "p" in r else None
    if op == "linear":
        if pname(node.args[1]):
            roles[pname(node.args[1])] = "linear"
        b = node.args[2] if len(node.args) > 2 else None
        if b is not None and pname(b):
            roles[pname(b)] = "bias"
    elif op == "convolution.default" and pname(node.args[1]):
        roles[pname(node.args[1])] = "conv"
    elif op.startswith("embedding") and pname(node.args[0]):
        roles[pname(node.args[0])] = "embedding"
        pad = _padding_idx(op, node, args)
        if pad is not None:
            paddings.setdefault(pname(node.args[0]), set()).add(pad)


def _fail_output(o):
    raise UnsupportedOpError("the model's output is a constant or a parameter; nothing to compute")


def _flat(args):
    for a in args:
        if isinstance(a, list):
            yield from _flat(a)
        else:
            yield a


def _dead_code_elimination(nodes, outputs):
    live = {o["v"] for o in outputs if isinstance(o, dict) and "v" in o}
    kept = []
    for n in reversed(nodes):
        if n["out"] in live:
            kept.append(n)
            live.update(a["v"] for a in _flat(n["args"]) if isinstance(a, dict) and "v" in a)
    return kept[::-1]


def _foldable(node, const_vals) -> bool:
    deps = list(node.all_input_nodes)
    if not deps and node.target is torch.ops.aten.sym_size.int:
        return False
    return all(d.name in const_vals for d in deps) and bool(deps or _pure_literal(node))


def _pure_literal(node) -> bool:
    # e.g. triu_indices(4, 4, 1) or arange(6): no tensor inputs, static sizes
    name = str(node.target)
    return any(k in name for k in ("triu_indices", "tril_indices", "arange", "zeros", "ones", "full",
                                   "scalar_tensor", "tensor"))


def _torch_args(node, const_vals):
    def conv(a):
        if isinstance(a, torch.fx.Node):
            return const_vals[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        return a
    return conv(node.args), {k: conv(v) for k, v in node.kwargs.items()}


def _arg(a, ref, const_vals, constants):
    if isinstance(a, torch.fx.Node):
        if a.name in const_vals:
            v = const_vals[a.name]
            if isinstance(v, torch.Tensor):
                key = f"const_{a.name}"
                constants[key] = v.detach().cpu().numpy().copy()
                return {"c": key}
            return v
        r = ref.get(a.name)
        if r is None:
            raise UnsupportedOpError(f"value {a.name} has no lowering")
        return r
    if isinstance(a, (list, tuple)):
        return [_arg(x, ref, const_vals, constants) for x in a]
    if isinstance(a, torch.dtype):
        return str(a).replace("torch.", "")
    if isinstance(a, (torch.device, torch.memory_format, torch.layout)):
        return None
    if isinstance(a, float) and not np.isfinite(a):
        # JSON has no inf/nan: stored as a 0-d float32 constant (masking with -inf in attention)
        key = f"const_nonfinite_{len(constants)}"
        constants[key] = np.asarray(a, dtype=np.float32)
        return {"c": key}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise UnsupportedOpError(f"graph argument of type {type(a).__name__} cannot be stored")


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


_PASS_THROUGH = {"reshape", "view", "flatten", "squeeze", "unsqueeze", "clone", "contiguous",
                 "alias", "_to_copy", "to", "detach", "lift_fresh_copy"}


def _trace_index_sources(ep, params_of) -> dict:
    """For each table, which user input (and field along dim 1) feeds its ids.
    Used to put per-field vocabularies in the input spec; a table whose ids are
    computed (hashing, offsets) is simply not traced."""
    out = {}
    for node in ep.graph.nodes:
        t = str(node.target)
        gather = t.startswith("aten.embedding") or t == "aten.index_select.default" and node.args[1] == 0
        if node.op != "call_function" or not gather:
            continue
        w = node.args[0]
        if not isinstance(w, torch.fx.Node) or w.name not in params_of:
            continue
        n, fieldno = node.args[2 if "index_select" in t else 1], None
        while isinstance(n, torch.fx.Node):
            if n.op == "placeholder":
                if n.name in ep.graph_signature.user_inputs:
                    out[params_of[w.name]] = (n.name, fieldno)
                break
            packet = str(n.target).split(".")[1] if str(n.target).startswith("aten.") else ""
            if packet in _PASS_THROUGH:
                n = n.args[0]
            elif packet == "select" and n.args[1] == 1 and fieldno is None:
                fieldno, n = n.args[2], n.args[0]
            elif packet == "slice" and len(n.args) >= 4 and n.args[1] == 1 and fieldno is None \
                    and isinstance(n.args[2], int) and isinstance(n.args[3], int) and n.args[3] - n.args[2] == 1:
                fieldno, n = n.args[2], n.args[0]
            elif packet == "slice" and len(n.args) >= 2 and n.args[1] == 0:
                n = n.args[0]
            else:
                break
    return out
