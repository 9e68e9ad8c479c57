"""Artifact bytes per app format (.pte, .tflite) for candidate plans, without exporting each.

    sizes = FormatSizes(["litert"])
    sizes.add(candidate)                 # records the tensors its artifact would store
    sizes.estimate(candidate)            # {"litert": bytes}
    sizes.observe("litert", program, n)  # after a real export of ``program`` wrote n bytes

An artifact is its stored tensors (``export/torch_modules.stored_tensor_bytes``:
exact for what the export module holds) plus the format's graph: operators,
tensor metadata and, for LiteRT, one subgraph per batch signature. That part
grows with the graph (a 2-bit table unpacks with more ops than an 8-bit one: on
an 8-table DLRM, .tflite 91 KB of graph at int8 rows, 217 KB at int2, 346 KB
with pruned and projected int2 rows; .pte 15-28 KB), roughly in proportion to
``graph_units`` (the program's nodes plus the ops the export adds per table):
measured 1,000-1,440 B per unit for .tflite and 400-440 B for .pte. The bytes
per unit are learned from real exports of this model, the largest ratio seen so
far (0 before any). The compiler exports the chosen plan, compares the exact
bytes with the budget and chooses again with what it learned; the budget never
rests on the estimate.
"""
from __future__ import annotations

from ..export.torch_modules import graph_units, stored_tensor_bytes


class FormatSizes:
    def __init__(self, formats):
        self.formats = list(formats)
        self.per_unit = {f: 0.0 for f in self.formats}     # graph bytes per graph unit, learned
        self.exports = {f: 0 for f in self.formats}

    def add(self, cand) -> None:
        cand.tensor_bytes = {f: stored_tensor_bytes(cand.program, f) for f in self.formats}
        cand.graph_units = {f: graph_units(cand.program, f) for f in self.formats}

    def estimate(self, cand) -> dict:
        return {f: cand.tensor_bytes[f] + int(self.per_unit[f] * cand.graph_units[f]) for f in self.formats}

    def observe(self, fmt: str, program, nbytes: int) -> None:
        """A real export of ``program`` in ``fmt`` came out ``nbytes`` long."""
        self.exports[fmt] += 1
        graph = nbytes - stored_tensor_bytes(program, fmt)
        self.per_unit[fmt] = max(self.per_unit[fmt], graph / max(graph_units(program, fmt), 1))

    def how(self, fmt: str) -> str:
        if not self.exports[fmt]:
            return "estimated from its tensors; no export measured yet"
        return (f"estimated: tensors + {self.per_unit[fmt]:,.0f} B of graph per graph unit, learned from "
                f"{self.exports[fmt]} export(s)")
