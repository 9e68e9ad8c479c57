"""Lowering: nn.Module -> torch.export graph -> the bundle op set.

We export with a dynamic batch dimension and keep the pre-decomposition ATen
graph, where ``linear`` and ``embedding_bag`` are still whole (easy to quantize
and to map to fused numpy calls). Each ATen op maps to one op of
``edgecompress_runtime.ops`` (graph/translate.py); anything else is an
UnsupportedOpError naming the op and where in the user's code it comes from.
"""
from __future__ import annotations

import operator

import numpy as np
import torch

from edgecompress_runtime.ops import OPS

from ..errors import CompileError, UnsupportedOpError
from .aten import op_name
from .export import export_model, module_path, unsupported_report
from .fold import fold_batchnorm
from .io import CallConvention, output_names
from .program import Node, Program, StoredParam, ref_name, refs
from .translate import node_op, padding_idx


def lower(model: torch.nn.Module, example: dict, call: CallConvention | None = None) -> Program:
    """Export ``model`` on ``example`` inputs (a dict of arrays, batch >= 2)
    and translate the graph to our op set."""
    model = model.eval()
    call = call or CallConvention.infer(model, example)
    ep = export_model(model, call, example)
    state = _Lowering(ep, model, call)
    out_nodes = state.walk()
    graph = state.graph()
    names, widths = _output_names_widths(ep, out_nodes)
    if len(names) != len(graph["outputs"]):
        names = [f"output_{i}" for i in range(len(graph["outputs"]))] if len(graph["outputs"]) > 1 else ["output"]
    params_of = dict(ep.graph_signature.inputs_to_parameters)
    prog = Program(graph=graph, params=state.params, constants=state.constants, roles=state.roles,
                   input_names=list(call.names), example=example, call=call)
    prog.padding_rows = {t: sorted(r) for t, r in state.paddings.items() if t in state.params}
    prog.outputs = [{"name": n, "form": f, "width": w} for n, f, w in zip(names, state.forms, widths)]
    prog.index_sources = {t: (state.flat_name.get(i, i), f)
                          for t, (i, f) in _trace_index_sources(ep, params_of).items()}
    _drop_unread(prog)
    return prog


class _Lowering:
    """The state of one walk over an exported graph: params, constants and nodes found so far."""

    def __init__(self, ep, model, call):
        self.ep, self.call = ep, call
        sig = ep.graph_signature
        self.state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        self.params_of = dict(sig.inputs_to_parameters)
        self.buffers_of = dict(sig.inputs_to_buffers)
        self.lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
        self.user_inputs = list(sig.user_inputs)
        if len(self.user_inputs) != len(call.names):
            raise CompileError(f"torch.export saw {len(self.user_inputs)} input tensors, expected {len(call.names)} "
                               f"({', '.join(call.names)}); inputs must be tensors or one dict of tensors")
        self.flat_name = dict(zip(self.user_inputs, call.names))
        self.params, self.constants, self.roles = {}, {}, {}
        self.const_vals: dict[str, torch.Tensor] = {}     # node -> torch value for folding
        self.ref: dict[str, object] = {}                  # node name -> JSON arg
        self.nodes: list[dict] = []
        self.unsupported: dict[str, list] = {}
        self.forms: list[str] = []
        self.out_refs: list = []
        self.ndim: dict[str, int | None] = {}             # value -> rank (for exact rewrites)
        self.paddings: dict[str, set] = {}                # table -> padding rows

    def walk(self) -> list:
        """Translate every node; the FX nodes of the outputs."""
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                self.placeholder(node)
            elif node.op == "output":
                return self.output(node)
            elif node.op != "call_function":
                self.unsupported.setdefault(f"{node.target} ({node.op})", []).append(node)
            else:
                self.call_function(node)
        return []

    def placeholder(self, node) -> None:
        if node.name in self.params_of:
            pname = self.params_of[node.name]
            t = self.state[pname]
            self.params[pname] = StoredParam("fp32", {"data": t.detach().float().numpy().copy()}, tuple(t.shape))
            self.ref[node.name] = {"p": pname}
        elif node.name in self.buffers_of or node.name in self.lifted:
            key = self.buffers_of.get(node.name) or self.lifted[node.name]
            t = self.state[key] if key in self.state else self.ep.constants[key]
            self.const_vals[node.name] = t.detach()
            self.ref[node.name] = None  # materialised as a constant only if used unfolded
        elif node.name in self.user_inputs:
            self.ref[node.name] = {"v": self.flat_name[node.name]}

    def output(self, node) -> list:
        outs = node.args[0]
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        if self.unsupported:
            raise UnsupportedOpError(unsupported_report(self.unsupported))
        self.out_refs = [self.arg(o) for o in outs]
        self.forms = [_output_form(o) for o in outs]
        return outs

    def call_function(self, node) -> None:
        if _foldable(node, self.const_vals):        # everything computable from buffers and literals
            args, kwargs = _torch_args(node, self.const_vals)
            self.const_vals[node.name] = node.target(*args, **kwargs)
            return
        if node.target is operator.getitem and "embedding_bag" in str(getattr(node.args[0], "target", "")):
            if node.args[1] != 0:
                if node.users:
                    self.unsupported.setdefault("embedding_bag auxiliary outputs", []).append(node)
                return
            self.ref[node.name] = self.ref[node.args[0].name]
            return
        lowered = node_op(node, self.ep)
        if lowered == "skip":
            return
        if lowered is None or self.unsupported:   # keep walking only to list every unsupported op
            if lowered is None:
                self.unsupported.setdefault(op_name(node.target), []).append(node)
            self.ref[node.name] = {"v": node.name}
            return
        op, args = lowered
        assert op in OPS, op
        self.nodes.append({"op": op, "args": [self.arg(a) for a in args], "out": node.name})
        if module_path(node):                      # which layer it belongs to (the on-device op profile)
            self.nodes[-1]["mod"] = module_path(node)
        val = node.meta.get("val")
        self.ndim[node.name] = val.dim() if isinstance(val, torch.Tensor) else None
        self.ref[node.name] = {"v": node.name}
        self.note_roles(op, node, args)

    def note_roles(self, op, node, args) -> None:
        """Which params are Linear weights / biases and which are tables (and their padding rows)."""
        def pname(a):
            r = self.ref.get(a.name) if isinstance(a, torch.fx.Node) else None
            return ref_name(r, "p")
        if op == "linear":
            if pname(node.args[1]):
                self.roles[pname(node.args[1])] = "linear"
            b = node.args[2] if len(node.args) > 2 else None
            if b is not None and pname(b):
                self.roles[pname(b)] = "bias"
        elif op == "convolution.default" and pname(node.args[1]):
            self.roles[pname(node.args[1])] = "conv"
        elif op.startswith("embedding") and pname(node.args[0]):
            self.roles[pname(node.args[0])] = "embedding"
            pad = padding_idx(op, node, args)
            if pad is not None:
                self.paddings.setdefault(pname(node.args[0]), set()).add(pad)

    def arg(self, a):
        return _arg(a, self.ref, self.const_vals, self.constants)

    def graph(self) -> dict:
        for name in self.params:
            self.roles.setdefault(name, "other")
        outputs = [o["v"] if isinstance(o, dict) and "v" in o else _fail_output(o) for o in self.out_refs]
        nodes = _dead_code_elimination(self.nodes, outputs)
        nodes = fold_batchnorm(nodes, self.params, self.constants, self.roles, self.ndim, set(outputs))
        return {"version": 1, "inputs": list(self.call.names), "outputs": outputs, "nodes": nodes}


def _drop_unread(prog: Program) -> None:
    """Params and constants no node reads (folded away, or used only by dead code)."""
    nodes = prog.nodes()
    used = {p for n in nodes for p in n.params}
    for unused in set(prog.params) - used:
        del prog.params[unused]
        prog.roles.pop(unused, None)
    read = {c for n in nodes for c in refs(n.args, "c")}
    for unused in set(prog.constants) - read:
        del prog.constants[unused]


def _dead_code_elimination(nodes, outputs):
    live = set(outputs)
    kept = []
    for n in reversed(nodes):
        if n["out"] in live:
            kept.append(n)
            live.update(Node(n).inputs)
    return kept[::-1]


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


def _fail_output(o):
    raise UnsupportedOpError("the model's output is a constant or a parameter; nothing to compute")


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
