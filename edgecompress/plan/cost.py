"""One interface for the cost of running a program on a device, and its profile-coefficient form.

A ``CostModel`` answers two questions:

- ``estimate(program, batch)``: seconds per batch of a whole program
  (``{"total_s", "by_op", "batch", "source", ...}``), what a plan's latency is;
- ``gather_s(table, n)`` / ``linear_s(in_f, out_f, act, batch)``: seconds of one building
  block, what the planner compares to score a move (fewer bits, fewer rows, a narrower
  layer) before building the plan it leads to.

Two implementations: ``ProfileCosts`` here (the target profile's ``[cost]`` coefficients)
and ``MeasuredCosts`` (``plan/measured_cost.py``: a latency table measured on the device).
``LatencyModel`` (``plan/latency.py``) picks the one that applies and adds the app-backend
fits; ``SlowestBackend`` holds the latency budget over every shipped backend. All four are
CostModels, so the planner scores moves with the same model that estimates plans.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..graph.program import TABLE_ARG, WEIGHT_ARG, Node
from .shape_profile import EMBEDDING_OPS, ShapeProfile


@dataclass(frozen=True)
class TableLayout:
    """How an embedding table is stored, as a gather sees it."""

    rows: int             # logical rows (ids index these)
    stored_rows: int      # rows actually stored (fewer when rows are pruned)
    dim: int              # width of a stored row (less than full_dim when dim-reduced)
    full_dim: int         # width the graph expects
    bits: int             # 32 = fp32, else row-wise int8 / int4 / int2
    row_bytes: float      # stored bytes per row, scale and bias included
    remap: bool = False   # row pruning: ids go through a remap table first
    proj: bool = False    # dim reduction: rows are projected back to full_dim

    @classmethod
    def of_param(cls, p) -> "TableLayout":
        stored = p.arrays.get("codes", p.arrays.get("data"))
        quant = p.kind == "rowwise"
        rows_stored = max(int(stored.shape[0]), 1)
        dim = int(p.arrays["proj"].shape[0]) if "proj" in p.arrays else int(p.shape[1])
        return cls(rows=int(p.shape[0]), stored_rows=int(stored.shape[0]), dim=dim, full_dim=int(p.shape[1]),
                   bits=int(p.bits) if quant else 32, row_bytes=stored.nbytes / rows_stored + (4 if quant else 0),
                   remap="remap" in p.arrays, proj="proj" in p.arrays)

    @classmethod
    def planned(cls, rows: int, full_dim: int, bits: int = 32, keep: float = 1.0, dim: int | None = None):
        """The layout a plan gives a ``rows x full_dim`` table (``plan/search.py``'s TableState)."""
        d = dim or full_dim
        stored = int(round(rows * keep)) + 1 if keep < 1 else rows
        return cls(rows=rows, stored_rows=stored, dim=d, full_dim=full_dim, bits=bits,
                   row_bytes=d * 4 if bits == 32 else d * bits / 8 + 4, remap=keep < 1, proj=dim is not None)


def linear_act(p) -> str:
    """The activation mode a Linear param runs with: "fp32", "dynamic" or "static"."""
    return p.act or "fp32"


class CostModel(ABC):
    """Seconds of a program, or of one of its building blocks, on one device (see the module doc)."""

    profile: ShapeProfile
    measured: bool = False      # whether the seconds come from measurements on the device

    @abstractmethod
    def estimate(self, program, batch: int) -> dict:
        """{"total_s", "by_op": {op: seconds}, "batch", "source", ...} for one batch."""

    @abstractmethod
    def gather_s(self, table: TableLayout, n: float) -> float:
        """Seconds to gather ``n`` rows from ``table`` (dequantization and projection included)."""

    @abstractmethod
    def linear_s(self, in_f: float, out_f: float, act: str, batch: int) -> float:
        """Seconds of one Linear layer on ``batch`` rows; ``act``: "fp32", "weights", "dynamic", "static"."""


class ProfileCosts(CostModel):
    """The target profile's coefficients: per node a fixed overhead, plus
    - gathers: bytes of stored rows read / gather_bytes_per_s, dequantization (2 flops per
      value) and any projection back to full width (MACs),
    - Linear: MACs / fp32_macs_per_s (the numpy backend multiplies int8 weights and
      int8-valued activations in fp32 BLAS), plus activation quantization for dynamic /
      static int8 layers,
    - bmm / matmul: MACs / fp32_macs_per_s, other ops: output values / fp32 rate."""

    def __init__(self, cost: dict, profile: ShapeProfile):
        self.cost = dict(cost)
        self.profile = profile

    def gather_s(self, table: TableLayout, n: float) -> float:
        macs = self.cost["fp32_macs_per_s"]
        s = n * table.row_bytes / self.cost["gather_bytes_per_s"]
        if table.bits < 32:
            s += 2 * n * table.dim / macs
        if table.proj:
            s += n * table.dim * table.full_dim / macs
        return s

    def linear_s(self, in_f: float, out_f: float, act: str, batch: int) -> float:
        s = batch * in_f * out_f / self.cost["fp32_macs_per_s"]
        if act in ("dynamic", "static"):
            s += 4 * batch * in_f / self.cost["fp32_macs_per_s"]
        return s

    def node_seconds(self, program, node: dict, batch: int) -> float:
        op, out = node["op"], node["out"]
        s = self.cost["op_overhead_s"]
        if op in EMBEDDING_OPS:
            p = program.params[Node(node).param(TABLE_ARG)]
            s += self.gather_s(TableLayout.of_param(p), batch * self.profile.ids.get(out, 1.0))
        elif op == "linear":
            p = program.params[Node(node).param(WEIGHT_ARG)]
            out_f, in_f = p.shape
            s += self.linear_s(in_f, out_f, linear_act(p), batch)
        elif op in ("bmm", "matmul"):
            s += batch * self.profile.macs.get(out, 0.0) / self.cost["fp32_macs_per_s"]
        else:
            s += batch * self.profile.values.get(out, 0.0) / self.cost["fp32_macs_per_s"]
        return s

    def estimate(self, program, batch: int) -> dict:
        by_op: dict[str, float] = {}
        for n in program.graph["nodes"]:
            by_op[n["op"]] = by_op.get(n["op"], 0.0) + self.node_seconds(program, n, batch)
        return {"total_s": sum(by_op.values()), "by_op": by_op, "batch": batch, "source": "profile coefficients"}
