"""The cost model of a device's measured latency table (NetAdapt-style, ``plan/latency_table.py``).

Every node costs the executor's dispatch plus its measured cost (gathers by rows x dim x
precision x ids, remap lookups, Linear by in x out x activation mode x batch, batched
matmuls by batch x MACs, other ops by type: fixed + per output value) plus the in-graph
context per node at that batch size; the program adds the runtime's input checks in
``predict()`` and the memory a run keeps, and the table's graph fit corrects the sum of
parts, all at the shapes of the program being estimated. A building block the table has
no point for falls back to the profile's coefficients (``ProfileCosts``)."""
from __future__ import annotations

from edgecompress_runtime.ops import VIEW_OPS

from ..graph.program import TABLE_ARG, WEIGHT_ARG, Node
from .cost import CostModel, ProfileCosts, TableLayout, linear_act
from .shape_profile import EMBEDDING_OPS, ShapeProfile, shape_profile

PROFILE_CACHE = 256           # programs whose shapes are kept (one per plan the search measures)


def _signature(program) -> tuple:
    return tuple((k, tuple(p.shape), tuple(sorted((r, a.shape) for r, a in p.arrays.items())))
                 for k, p in sorted(program.params.items()))


class MeasuredCosts(CostModel):
    measured = True

    def __init__(self, table, cost: dict, profile: ShapeProfile):
        self.table = table
        self.profile = profile
        self.fallback = ProfileCosts(cost, profile)
        self._profiles: dict = {}

    def profile_for(self, program) -> ShapeProfile:
        """Shapes of this very program (pruned widths change them); the base profile if that fails."""
        try:
            sig = _signature(program)
        except Exception:  # noqa: BLE001 - a program without array shapes: the base profile
            return self.profile
        if sig not in self._profiles:
            try:
                self._profiles[sig] = shape_profile(program)
            except Exception:  # noqa: BLE001 - the base profile is the estimate's fallback
                self._profiles[sig] = self.profile
            if len(self._profiles) > PROFILE_CACHE:
                self._profiles.pop(next(iter(self._profiles)))
        return self._profiles[sig]

    def gather_s(self, table: TableLayout, n: float) -> float:
        t = self.table
        s = t.gather(rows=table.rows, dim=table.dim, bits=table.bits, n=n, stored_rows=table.stored_rows)
        if s is None:
            stored_bytes = table.row_bytes - (4 if table.bits < 32 else 0)
            s = n * stored_bytes / self.fallback.cost["gather_bytes_per_s"]
        if table.remap:
            s += t.remap(n)
        if table.proj:
            pr = t.linear(in_f=table.dim, out_f=table.full_dim, act="fp32", batch=max(int(n), 1))
            s += pr if pr is not None else n * table.dim * table.full_dim / self.fallback.cost["fp32_macs_per_s"]
        return s

    def linear_s(self, in_f: float, out_f: float, act: str, batch: int) -> float:
        m = self.table.linear(in_f=in_f, out_f=out_f, act=act, batch=batch)
        return m if m is not None else self.fallback.linear_s(in_f, out_f, act, batch)

    def node_seconds(self, program, node: dict, batch: int, prof: ShapeProfile | None = None) -> float:
        t, prof = self.table, prof or self.profile_for(program)
        op, out = node["op"], node["out"]
        s = t.dispatch_s + t.context(batch)
        if op in EMBEDDING_OPS:
            p = program.params[Node(node).param(TABLE_ARG)]
            ids = prof.ids.get(out, 1.0)
            s += self.gather_s(TableLayout.of_param(p), batch * ids)
            if op == "embedding_bag":
                s += t.op_cost("embedding_bag", batch * int(p.shape[1]) * ids)
        elif op == "linear":
            p = program.params[Node(node).param(WEIGHT_ARG)]
            out_f, in_f = p.shape
            s += self.linear_s(in_f, out_f, linear_act(p), batch)
        elif op in ("bmm", "matmul") and out in prof.mm:
            nd, m_, k_, n_ = prof.mm[out]
            m = t.bmm(batch=batch, m=m_, k=k_, n=n_) if nd >= 3 else \
                t.linear(in_f=k_, out_f=n_, act="fp32", batch=batch)
            s += m if m is not None else batch * prof.macs.get(out, 0.0) / self.fallback.cost["fp32_macs_per_s"]
        else:
            s += t.op_cost(op, batch * prof.values.get(out, 0.0)) - t.dispatch_s
        return max(s, t.dispatch_s)

    def estimate(self, program, batch: int) -> dict:
        t = self.table
        prof = self.profile_for(program)
        by_op: dict[str, float] = {}
        by_node: list = []
        kept = 0.0
        if prof.inputs:
            by_op["input checks"] = t.validate_cost([(i[1], i[2], batch * i[3]) for i in prof.inputs]) + \
                t.predict_overhead_s
        for n in program.graph["nodes"]:
            s = self.node_seconds(program, n, batch, prof)
            by_op[n["op"]] = by_op.get(n["op"], 0.0) + s
            by_node.append((n["out"], n["op"], s))
            if n["op"] not in VIEW_OPS:
                kept += 4.0 * batch * prof.values.get(n["out"], 0.0)
        by_op["kept memory"] = t.memory(kept)
        parts = sum(by_op.values())
        nodes = len(program.graph["nodes"])
        if t.has_graph_fit:
            by_op["graph fit"] = t.graph_correction(batch, parts, nodes) - parts
        return {"total_s": sum(by_op.values()), "parts_s": parts, "nodes": nodes, "by_op": by_op,
                "by_node": by_node, "batch": batch, "source": t.describe(), "emulated": t.emulated}
