"""Program: a lowered model (graph over the bundle op set + its weights), and
typed views of the graph JSON.

The graph stays JSON (the bundle stores it as is), but nobody walks it by
position: ``Node`` names what an argument is, ``Program`` answers the questions
passes and exporters ask (which nodes run an op, which nodes read a param, the
bias of a Linear) and builds the one numpy executor the host runs programs with.

An argument is a reference ``{"v": value}`` (a computed value or graph input),
``{"p": param}``, ``{"c": constant}``, a literal, or a list of those.
"""
from __future__ import annotations

import copy as _copy
import dataclasses
from dataclasses import dataclass, field
from typing import Iterator


def refs(args, kind: str) -> Iterator[str]:
    """Names of every ``kind`` reference ("v", "p" or "c") in ``args``, nested lists included."""
    for a in args:
        if isinstance(a, list):
            yield from refs(a, kind)
        elif isinstance(a, dict) and kind in a:
            yield a[kind]


def ref_name(a, kind: str) -> str | None:
    """The name ``a`` refers to when it is a ``kind`` reference, else None."""
    return a[kind] if isinstance(a, dict) and kind in a else None


class Node:
    """A view of one graph node. Edits go to the JSON dict it wraps."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict):
        self.raw = raw

    @property
    def op(self) -> str:
        return self.raw["op"]

    @property
    def out(self) -> str:
        return self.raw["out"]

    @property
    def args(self) -> list:
        return self.raw["args"]

    def arg(self, i: int):
        """Argument ``i`` as stored (None past the end: trailing optional args)."""
        return self.args[i] if i < len(self.args) else None

    def param(self, i: int) -> str | None:
        """The param argument ``i`` names (e.g. a Linear's weight is ``param(1)``), or None."""
        return ref_name(self.arg(i), "p")

    def value(self, i: int) -> str | None:
        """The value argument ``i`` reads, or None when it is not a value reference."""
        return ref_name(self.arg(i), "v")

    def set_param(self, i: int, name: str) -> None:
        self.args[i] = {"p": name}

    @property
    def inputs(self) -> list[str]:
        """Every value this node reads (nested lists included)."""
        return list(refs(self.args, "v"))

    @property
    def params(self) -> list[str]:
        """Every param this node reads."""
        return list(refs(self.args, "p"))

    def reads(self, value: str, i: int = 0) -> bool:
        """Whether argument ``i`` is exactly ``value``."""
        return self.value(i) == value

    def __repr__(self) -> str:
        return f"Node({self.op} -> {self.out})"


# the argument positions of each gather op's table and ids, and of a Linear's weight and bias
TABLE_ARG, IDS_ARG = 0, 1
WEIGHT_ARG, BIAS_ARG = 1, 2


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
        return dataclasses.replace(self, **kw)


@dataclass
class Program:
    """A lowered model: the graph over our op set plus its weights.

    ``params`` maps state_dict names to stored weights (see StoredParam);
    passes replace entries with quantized ones. ``roles`` says how the graph
    uses each param ("embedding", "linear", "bias", "conv", "other")."""

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
    log: list = field(default_factory=list)             # what passes did (one record per changed parameter)

    def param_bytes(self) -> int:
        return sum(p.nbytes for p in self.params.values())

    def copy(self) -> "Program":
        """A program to apply passes to. Passes replace arrays, never write into
        them, so arrays are shared; the graph is copied (MLP pruning edits it)."""
        return dataclasses.replace(self, graph=_copy.deepcopy(self.graph), params=dict(self.params),
                                   constants=dict(self.constants), roles=dict(self.roles),
                                   input_names=list(self.input_names), index_sources=dict(self.index_sources),
                                   outputs=list(self.outputs), padding_rows=dict(self.padding_rows),
                                   log=list(self.log))

    # --- the graph, typed ----------------------------------------------------
    def nodes(self) -> list[Node]:
        return [Node(n) for n in self.graph["nodes"]]

    def nodes_of(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes() if n.op in ops]

    def param_consumers(self, name: str) -> list[Node]:
        """The nodes that read param ``name``."""
        return [n for n in self.nodes() if name in n.params]

    def value_users(self) -> dict[str, list[Node]]:
        """value -> the nodes reading it (a node reading a value twice is listed twice)."""
        users: dict[str, list[Node]] = {}
        for n in self.nodes():
            for v in n.inputs:
                users.setdefault(v, []).append(n)
        return users

    def linear_bias(self) -> dict[str, str | None]:
        """Linear weight param -> its bias param (None without one), for Linears with a param weight."""
        return {n.param(WEIGHT_ARG): n.param(BIAS_ARG) for n in self.nodes_of("linear") if n.param(WEIGHT_ARG)}

    # --- params by role ------------------------------------------------------
    def tables(self) -> list[str]:
        return [n for n in self.params if self.roles.get(n) == "embedding"]

    def quantized_linears(self) -> list[str]:
        """Linear weights stored quantized (the exporters quantize these layers). fp16 and k-means
        clustered weights are float values the app formats store as fp32 (exact), not int8."""
        return sorted(n for n, p in self.params.items()
                      if self.roles.get(n) == "linear" and p.kind not in ("fp32", "fp16", "clustered"))

    def linear_activation_mode(self) -> str:
        """How quantized Linear layers take activations: "weights" (fp32), "dynamic" or "static" int8."""
        acts = {self.params[n].act for n in self.quantized_linears()}
        return "static" if "static" in acts else "dynamic" if "dynamic" in acts else "weights"

    def table_bits(self) -> list[int]:
        """The bit widths of the row-quantized tables."""
        return sorted({int(p.bits) for n, p in self.params.items()
                       if self.roles.get(n) == "embedding" and p.kind == "rowwise"})

    # --- running it ------------------------------------------------------------
    def executor(self):
        """The runtime's numpy executor over this program's graph, params and constants."""
        from edgecompress_runtime.backends.numpy_graph import GraphExecutor
        return GraphExecutor(self.graph, {k: v.to_runtime(k) for k, v in self.params.items()}, self.constants)
