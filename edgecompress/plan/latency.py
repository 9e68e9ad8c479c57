"""Latency model: seconds per batch for a program on a target, before anything runs there.

Per graph node: a fixed dispatch overhead, plus
- gathers: bytes of stored rows read / gather_bytes_per_s, plus dequantization
  (2 flops per value) and any projection back to full width (MACs),
- Linear: MACs / fp32_macs_per_s (the numpy backend multiplies int8 weights and
  int8-valued activations in fp32 BLAS), plus activation quantization for
  dynamic / static int8 layers,
- bmm / matmul: MACs / fp32_macs_per_s, other ops: output values / fp32 rate.
Coefficients come from the target profile's [cost] table. A measured lookup
table for the device (NetAdapt-style, see ``plan/latency_table.py``) replaces
them: then every node costs the executor's dispatch plus its measured cost
(gathers by rows x dim x precision x ids, remap lookups, Linear by in x out x
activation mode x batch, batched matmuls by batch x MACs, other ops by type:
fixed + per output value) plus the in-graph context per node at that batch size,
plus the runtime's input checks in ``predict()`` and the memory a run keeps, all
at the shapes of the program being estimated.

Backends: ``LatencyModel(..., backend="litert" | "executorch")`` estimates that app
backend when the table has a fit for it (``backend_fits``, measured by ``edgecompress
calibrate`` on whole probe models run through the backend on the device): the fit maps
the numpy sum of parts of the program to the backend's time. Without such a fit (no
table, or a table without that backend) it returns the numpy estimate, and the result
says so: ``source`` "numpy estimate (no litert measurement; ...)", ``measured`` False,
``estimated_as`` "numpy". ``estimates_by_backend`` gives compile() the per-backend
estimates for the manifest (``metrics.latency_by_backend``), whose ``source`` follows
the runtime's rule (edgecompress_runtime/backends): "table:<device>" = measured on that
device for that backend, anything else ("profile", "numpy-estimate:...") = not measured."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EMBEDDING_OPS = {"embedding", "embedding_bag", "embedding_bag_offsets"}
# ops whose output is a view of their input (no new memory kept during a run)
VIEW_OPS = {"slice", "transpose", "permute", "squeeze", "unsqueeze", "reshape", "flatten", "expand", "expand_as",
            "identity", "getitem", "size", "numel", "unbind"}


@dataclass
class ShapeProfile:
    """Per-sample work of each node, measured once by running the fp32 program."""

    ids: dict = field(default_factory=dict)          # node out -> ids gathered per sample
    macs: dict = field(default_factory=dict)         # node out -> bmm/matmul MACs per sample
    values: dict = field(default_factory=dict)       # node out -> output values per sample
    mm: dict = field(default_factory=dict)           # node out -> (a.ndim, m, k, n) of bmm/matmul (per sample)
    inputs: list = field(default_factory=list)       # (name, is_ids, id_fields, values per sample)


def shape_profile(program, batch: int = 8) -> ShapeProfile:
    from edgecompress_runtime.backends.numpy_graph import GraphExecutor
    feeds = {k: np.repeat(np.asarray(v)[:1], batch, axis=0) for k, v in program.example.items()}
    params = {k: v.to_runtime(k) for k, v in program.params.items()}
    env = GraphExecutor(program.graph, params, program.constants).run(feeds, keep=set())
    prof = ShapeProfile()
    for n in program.graph["nodes"]:
        out = env.get(n["out"])
        if isinstance(out, np.ndarray):
            prof.values[n["out"]] = out.size / batch
        if n["op"] in EMBEDDING_OPS:
            idx = env[n["args"][1]["v"]] if isinstance(n["args"][1], dict) and "v" in n["args"][1] else None
            prof.ids[n["out"]] = (idx.size / batch) if isinstance(idx, np.ndarray) else 1.0
        elif n["op"] in ("bmm", "matmul"):
            a = env[n["args"][0]["v"]] if "v" in n["args"][0] else None
            if isinstance(a, np.ndarray) and isinstance(out, np.ndarray):
                prof.macs[n["out"]] = a.size * out.shape[-1] / batch
                if a.ndim >= 2:
                    prof.mm[n["out"]] = (a.ndim, int(a.shape[-2]) if a.ndim >= 3 else 1, int(a.shape[-1]),
                                         int(out.shape[-1]))
    for name in program.graph.get("inputs", []):
        x = np.asarray(feeds.get(name)) if name in feeds else None
        if x is None:
            continue
        ids = x.dtype.kind in "iu"
        prof.inputs.append((name, ids, (int(x.shape[1]) if x.ndim >= 2 else 1) if ids else 0, x.size / batch))
    return prof


def _signature(program) -> tuple:
    return tuple((k, tuple(p.shape), tuple(sorted((r, a.shape) for r, a in p.arrays.items())))
                 for k, p in sorted(program.params.items()))


BACKENDS = ("numpy", "litert", "executorch")


class LatencyModel:
    def __init__(self, target, profile: ShapeProfile, table=None, backend: str = "numpy"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        self.cost = dict(target.cost)
        self.profile = profile
        self.table = table          # LatencyTable or None
        self.backend = backend
        self._profiles: dict = {}   # per program shapes, for the measured-table path

    @property
    def measured(self) -> bool:
        """Whether estimates for this backend come from measurements on the device (a table,
        and for an app backend the table's fit for it)."""
        if self.table is None or not hasattr(self.table, "op_cost"):
            return False
        return self.backend == "numpy" or bool(getattr(self.table, "has_backend_fit", lambda b: False)(self.backend))

    def _profile_for(self, program) -> ShapeProfile:
        """Shapes of this very program (pruned widths change them); the base profile if that fails."""
        try:
            sig = _signature(program)
        except Exception:
            return self.profile
        if sig not in self._profiles:
            try:
                self._profiles[sig] = shape_profile(program)
            except Exception:
                self._profiles[sig] = self.profile
            if len(self._profiles) > 256:
                self._profiles.pop(next(iter(self._profiles)))
        return self._profiles[sig]

    def _gather(self, p, ids: float, batch: int) -> float:
        rt_row = p.arrays.get("codes", p.arrays.get("data"))
        row_bytes = rt_row.nbytes / max(rt_row.shape[0], 1) + (4 if p.kind == "rowwise" else 0)
        dim = rt_row.shape[1] * (8 // p.bits if p.kind == "rowwise" and p.bits < 8 else 1)
        full = p.shape[1]
        n = batch * ids
        if self.table is not None:
            t = self.table.gather(rows=p.shape[0], dim=dim, bits=p.bits if p.kind == "rowwise" else 32, n=n)
            if t is not None:
                return t + (n * dim * full / self.cost["fp32_macs_per_s"] if "proj" in p.arrays else 0.0)
        s = n * row_bytes / self.cost["gather_bytes_per_s"]
        if p.kind == "rowwise":
            s += 2 * n * dim / self.cost["fp32_macs_per_s"]
        if "proj" in p.arrays:
            s += n * dim * full / self.cost["fp32_macs_per_s"]
        return s

    def _linear(self, p, batch: int) -> float:
        out_f, in_f = p.shape
        if self.table is not None:
            t = self.table.linear(in_f=in_f, out_f=out_f, act=p.act or "fp32", batch=batch)
            if t is not None:
                return t
        s = batch * in_f * out_f / self.cost["fp32_macs_per_s"]
        if p.act:
            s += 4 * batch * in_f / self.cost["fp32_macs_per_s"]
        return s

    def estimate(self, program, batch: int) -> dict:
        """{"total_s", "by_op": {op: seconds}, "source", "backend", "measured"} for one batch
        on this model's backend (see the module doc for app backends)."""
        if self.backend == "numpy":
            out = self._estimate_numpy(program, batch)
            out.update(backend="numpy", measured=self.measured)
            return out
        if self.measured:
            est = self._estimate_measured(program, batch)
            total = self.table.backend_estimate(self.backend, batch, est["parts_s"], est["nodes"])
            return {"total_s": total, "parts_s": est["parts_s"], "nodes": est["nodes"], "numpy_s": est["total_s"],
                    "by_op": {f"{self.backend} (fit on the numpy sum of parts)": total}, "batch": batch,
                    "source": f"{est['source']}, {self.backend} fit", "backend": self.backend, "measured": True,
                    "emulated": est.get("emulated", False)}
        est = self._estimate_numpy(program, batch)
        est.update(backend=self.backend, measured=False, estimated_as="numpy", numpy_s=est["total_s"],
                   source=f"numpy estimate (no {self.backend} measurement; {est['source']})")
        return est

    def _estimate_numpy(self, program, batch: int) -> dict:
        if self.table is not None and hasattr(self.table, "op_cost"):
            return self._estimate_measured(program, batch)
        overhead = self.cost["op_overhead_s"]
        if self.table is not None and self.table.op_overhead_s is not None:
            overhead = self.table.op_overhead_s
        by_op: dict[str, float] = {}
        for n in program.graph["nodes"]:
            op, out = n["op"], n["out"]
            s = overhead
            if op in EMBEDDING_OPS:
                s += self._gather(program.params[n["args"][0]["p"]], self.profile.ids.get(out, 1.0), batch)
            elif op == "linear":
                s += self._linear(program.params[n["args"][1]["p"]], batch)
            elif op in ("bmm", "matmul"):
                s += batch * self.profile.macs.get(out, 0.0) / self.cost["fp32_macs_per_s"]
            else:
                s += batch * self.profile.values.get(out, 0.0) / self.cost["fp32_macs_per_s"]
            by_op[op] = by_op.get(op, 0.0) + s
        return {"total_s": sum(by_op.values()), "by_op": by_op, "batch": batch,
                "source": "measured table" if self.table is not None else "profile coefficients"}

    # ------------------------------------------------------------------ measured table path

    def _gather_measured(self, p, ids: float, batch: int, op: str) -> float:
        t = self.table
        stored = p.arrays.get("codes", p.arrays.get("data"))
        quant = p.kind == "rowwise"
        dim = int(p.proj.shape[0]) if getattr(p, "proj", None) is not None else (
            int(p.arrays["proj"].shape[0]) if "proj" in p.arrays else int(p.shape[1]))
        n = batch * ids
        s = t.gather(rows=int(p.shape[0]), dim=dim, bits=p.bits if quant else 32, n=n,
                     stored_rows=int(stored.shape[0]))
        if s is None:
            s = n * (stored.nbytes / max(stored.shape[0], 1)) / self.cost["gather_bytes_per_s"]
        if "remap" in p.arrays:
            s += t.remap(n)
        if "proj" in p.arrays:
            full = int(p.shape[1])
            pr = t.linear(in_f=dim, out_f=full, act="fp32", batch=max(int(n), 1))
            s += pr if pr is not None else n * dim * full / self.cost["fp32_macs_per_s"]
        if op == "embedding_bag":
            s += t.op_cost("embedding_bag", batch * int(p.shape[1]) * ids)
        return s

    def _estimate_measured(self, program, batch: int) -> dict:
        t = self.table
        prof = self._profile_for(program)
        by_op: dict[str, float] = {}
        by_node: list = []
        kept = 0.0
        if prof.inputs:
            by_op["input checks"] = t.validate_cost([(i[1], i[2], batch * i[3]) for i in prof.inputs]) + \
                float(getattr(t, "predict_overhead_s", 0.0))
        ctx = t.context(batch) if hasattr(t, "context") else 0.0
        for n in program.graph["nodes"]:
            op, out = n["op"], n["out"]
            s = t.dispatch_s + ctx
            if op in EMBEDDING_OPS:
                s += self._gather_measured(program.params[n["args"][0]["p"]], prof.ids.get(out, 1.0), batch, op)
            elif op == "linear":
                p = program.params[n["args"][1]["p"]]
                out_f, in_f = p.shape
                m = t.linear(in_f=in_f, out_f=out_f, act=p.act or "fp32", batch=batch)
                s += m if m is not None else self._linear(p, batch)
            elif op in ("bmm", "matmul") and out in prof.mm:
                nd, m_, k_, n_ = prof.mm[out]
                if nd >= 3:
                    m = t.bmm(batch=batch, m=m_, k=k_, n=n_)
                else:
                    m = t.linear(in_f=k_, out_f=n_, act="fp32", batch=batch)
                s += m if m is not None else batch * prof.macs.get(out, 0.0) / self.cost["fp32_macs_per_s"]
            else:
                s += t.op_cost(op, batch * prof.values.get(out, 0.0)) - t.dispatch_s
            s = max(s, t.dispatch_s)
            by_op[op] = by_op.get(op, 0.0) + s
            by_node.append((out, op, s))
            if op not in VIEW_OPS:
                kept += 4.0 * batch * prof.values.get(out, 0.0)
        if hasattr(t, "memory"):
            by_op["kept memory"] = t.memory(kept)
        parts = sum(by_op.values())
        if getattr(t, "has_graph_fit", False):
            by_op["graph fit"] = t.graph_correction(batch, parts, len(program.graph["nodes"])) - parts
        describe = getattr(t, "describe", None)
        return {"total_s": sum(by_op.values()), "parts_s": parts, "nodes": len(program.graph["nodes"]),
                "by_op": by_op, "by_node": by_node, "batch": batch,
                "source": describe() if describe else "measured table",
                "emulated": bool(getattr(t, "emulated", False))}


def _device_label(table) -> str:
    from pathlib import Path
    return str(getattr(table, "device", None) or Path(str(getattr(table, "source", "table"))).stem or "table")


def estimates_by_backend(program, target, table=None, batches=None, backends=("numpy",), profile=None) -> dict:
    """Per backend the latency estimate of ``program`` at each of ``batches`` (default the
    target's batch sizes), for ``manifest["metrics"]["latency_by_backend"]``:

        {backend: {"source": "table:<device>" | "profile" | "numpy-estimate:table:<device>" |
                             "numpy-estimate:profile",
                   "model": what produced it, in words (LatencyModel.estimate()'s "source"),
                   "s": {"1": seconds, "64": seconds, ...},
                   "emulated": True (only when the table was measured under emulation)}}

    ``source`` starting with "table" means measured on the device for that very backend
    (numpy: the table; litert / executorch: the table's fit for it); the runtime's
    ``load(backend="auto")`` compares only such entries. "numpy-estimate:..." marks an app
    backend the table has no measurement for (its figures are the numpy estimate).
    ``target``: a Target or a profile name; ``table``: a LatencyTable or None (the
    profile's coefficients); ``profile``: a ShapeProfile of ``program`` (computed when None)."""
    from ..targets import Target, load_target
    tgt = target if isinstance(target, Target) else load_target(target)
    batches = [int(b) for b in (batches or tgt.batch_sizes)]
    prof = profile if profile is not None else shape_profile(program)
    numpy_src = f"table:{_device_label(table)}" if (table is not None and hasattr(table, "op_cost")) else "profile"
    out = {}
    for be in dict.fromkeys(backends):
        lm = LatencyModel(tgt, prof, table=table, backend=be)
        ests = {b: lm.estimate(program, b) for b in batches}
        entry = {"source": numpy_src if (be == "numpy" or lm.measured) else f"numpy-estimate:{numpy_src}",
                 "model": ests[batches[0]]["source"] if batches else "",
                 "s": {str(b): float(e["total_s"]) for b, e in ests.items()}}
        if getattr(table, "emulated", False):
            entry["emulated"] = True
        out[be] = entry
    return out


class SlowestBackend:
    """The latency budget holds for every backend that ships: a plan's latency is the slowest
    estimate among them. Backends without a measurement of their own are estimated as numpy
    (``LatencyModel``), so only numpy and measured app backends are asked."""

    def __init__(self, target, profile: ShapeProfile, table=None, backends=("numpy",)):
        self.models = {b: LatencyModel(target, profile, table=table, backend=b) for b in dict.fromkeys(backends)}
        self.models = {b: m for b, m in self.models.items() if b == "numpy" or m.measured} or \
            {"numpy": LatencyModel(target, profile, table=table)}
        first = next(iter(self.models.values()))
        self.cost, self.profile, self.table = first.cost, first.profile, first.table

    def estimate(self, program, batch: int) -> dict:
        ests = {b: m.estimate(program, batch) for b, m in self.models.items()}
        slowest = max(ests, key=lambda b: ests[b]["total_s"])
        out = dict(ests[slowest])
        if len(ests) > 1:
            out["source"] = f"{slowest}, the slowest of {', '.join(ests)}: {out['source']}"
        return out
