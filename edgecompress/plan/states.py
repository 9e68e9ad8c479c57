"""What the planner searches over: a plan state (per table bits / kept rows / width, per
MLP group kept neurons, Linear int8 or not, distilled or not; or a training-aware move's
pass configs, plan/training_moves.py), the candidate a state becomes once measured, the
search's result, and the Pareto front of candidates."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..passes import (Distill, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant, LinearInt8Weights,
                      MLPNeuronPrune)
from ..passes.fp16 import Fp16Weights


@dataclass(frozen=True)
class TableState:
    bits: int = 8            # 32 = fp32, 16 = fp16
    keep: float = 1.0
    dim: int | None = None   # None = full width


@dataclass
class PlanState:
    tables: dict
    layers: dict = field(default_factory=dict)      # producer weight -> keep ratio
    linear: str = "int8"                            # "fp32" | "fp16" | "int8"
    distill: bool = False
    training: tuple = ()                            # a training-aware move: its pass configs, the whole plan
    move: str = ""                                  # that move's name (plan/training_moves.py)

    def key(self):
        return (tuple(sorted(self.tables.items())), tuple(sorted(self.layers.items())), self.linear, self.distill,
                self.training)

    def with_table(self, name, **kw):
        t = dict(self.tables)
        t[name] = dataclasses.replace(t[name], **kw)
        return PlanState(t, dict(self.layers), self.linear, self.distill)

    def with_layer(self, name, keep):
        layers = dict(self.layers)
        layers[name] = keep
        return PlanState(dict(self.tables), layers, self.linear, self.distill)

    def plan(self, distill_config=None) -> list:
        """Pass configs in canonical order; tables with equal settings share a config."""
        if self.training:
            return list(self.training)
        def grouped(attr, default):
            out = {}
            for name, st in sorted(self.tables.items()):
                v = getattr(st, attr)
                if v != default:
                    out.setdefault(v, []).append(name)
            return out
        plan = []
        for keep, names in sorted(grouped("keep", 1.0).items(), reverse=True):
            plan.append(EmbeddingRowPrune(keep_ratio=keep, tables=tuple(names)))
        for dim, names in sorted(grouped("dim", None).items(), reverse=True):
            plan.append(EmbeddingDimReduce(dim=dim, tables=tuple(names)))
        by_keep = {}
        for layer, keep in sorted(self.layers.items()):
            if keep < 1:
                by_keep.setdefault(keep, []).append(layer)
        for keep, layers in sorted(by_keep.items(), reverse=True):
            plan.append(MLPNeuronPrune(keep_ratio=keep, layers=tuple(layers)))
        if self.distill:
            plan.append(distill_config or Distill())
        rows = grouped("bits", 32)
        half = rows.pop(16, [])
        if half or self.linear == "fp16":
            plan.append(Fp16Weights(embeddings=bool(half), linear=self.linear == "fp16",
                                    tables=tuple(half) if half else None))
        for bits, names in sorted(rows.items(), reverse=True):
            plan.append(EmbeddingRowwiseQuant(bits=bits, tables=tuple(names)))
        if self.linear == "int8":
            plan.append(LinearInt8Weights())
        return plan

    def describe(self) -> str:
        if self.training:
            return f"{self.move} (trained)"
        bits = sorted({s.bits for s in self.tables.values()})
        parts = ["fp32" if bits == [32] else "tables " + "/".join(f"int{b}" if b < 16 else f"fp{b}" for b in bits)]
        pruned = [s.keep for s in self.tables.values() if s.keep < 1]
        if pruned:
            parts.append(f"{len(pruned)} tables row-pruned (min keep {min(pruned):g})")
        dims = [s.dim for s in self.tables.values() if s.dim]
        if dims:
            parts.append(f"{len(dims)} tables dim-reduced (min {min(dims)})")
        if any(k < 1 for k in self.layers.values()):
            parts.append(f"MLP pruned (min keep {min(self.layers.values()):g})")
        parts.append(f"Linear {self.linear}")
        if self.distill:
            parts.append("distilled")
        return ", ".join(parts)


@dataclass
class Candidate:
    state: PlanState
    plan: list
    metric: float
    metrics: dict
    size_bytes: int
    latency_s: float
    program: object = None
    label: str = ""
    tensor_bytes: dict = field(default_factory=dict)   # app format -> bytes of the tensors its artifact stores
    graph_units: dict = field(default_factory=dict)    # app format -> size of its graph (plan/format_size.py)

    def summary(self) -> dict:
        return {"label": self.label, "describe": self.state.describe(), "metric": self.metric,
                "metrics": self.metrics, "size_bytes": self.size_bytes, "latency_s": self.latency_s,
                "tensor_bytes": dict(self.tensor_bytes),
                "plan": [c.to_dict() for c in self.plan],
                "tables": {t: dataclasses.asdict(s) for t, s in self.state.tables.items()},
                "layers": dict(self.state.layers)}


@dataclass
class SearchResult:
    chosen: Candidate
    candidates: list
    front: list
    sensitivity: dict
    budgets: dict
    metric_name: str
    seconds: float
    feasible: list
    training: object = None        # plan/training_search.py TrainingRecord: what training-aware moves did


def pareto(cands, higher: bool) -> list:
    """Candidates no other candidate beats on size, latency and metric at once."""
    def better_or_equal(a, b):
        ma, mb = (a.metric, b.metric) if higher else (-a.metric, -b.metric)
        return a.size_bytes <= b.size_bytes and a.latency_s <= b.latency_s and ma >= mb
    front = []
    for c in cands:
        if not any(o is not c and better_or_equal(o, c) and
                   (o.size_bytes, o.latency_s, o.metric) != (c.size_bytes, c.latency_s, c.metric) for o in cands):
            front.append(c)
    return sorted(front, key=lambda c: c.size_bytes)
