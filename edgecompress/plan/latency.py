"""Latency model: seconds per batch for a program on a target, before anything runs there.

``LatencyModel(target, profile, table=None, backend="numpy")`` is a ``CostModel``
(``plan/cost.py``) that delegates to the one that applies: the device's measured
latency table (``MeasuredCosts``, ``plan/measured_cost.py``) when there is one, else the
target profile's ``[cost]`` coefficients (``ProfileCosts``).

Backends: ``LatencyModel(..., backend="litert" | "executorch")`` estimates that app
backend when the table has a fit for it (``backend_fits``, measured by ``edgecompress
calibrate`` on whole probe models run through the backend on the device): the fit maps
the numpy sum of parts of the program to the backend's time. Without such a fit (no
table, or a table without that backend) it returns the numpy estimate, and the result
says so: ``source`` "numpy estimate (no litert measurement; ...)", ``measured`` False,
``estimated_as`` "numpy". ``estimates_by_backend`` gives compile() the per-backend
estimates for the manifest (``metrics.latency_by_backend``), whose ``source`` follows
the runtime's rule (edgecompress_runtime/backends): "table:<device>" = measured on that
device for that backend, anything else ("profile", "numpy-estimate:...") = not measured.
``SlowestBackend`` holds the latency budget over every backend that ships."""
from __future__ import annotations

from pathlib import Path

from edgecompress_runtime.backends import KNOWN

from .cost import CostModel, ProfileCosts, TableLayout
from .measured_cost import MeasuredCosts
from .shape_profile import ShapeProfile, shape_profile

BACKENDS = KNOWN             # the runtime's backends


class LatencyModel(CostModel):
    def __init__(self, target, profile: ShapeProfile, table=None, backend: str = "numpy"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        self.cost = dict(target.cost)
        self.profile = profile
        self.table = table          # LatencyTable or None
        self.backend = backend
        self.costs: CostModel = MeasuredCosts(table, self.cost, profile) if table is not None \
            else ProfileCosts(self.cost, profile)

    @property
    def measured(self) -> bool:
        """Whether estimates for this backend come from measurements on the device (a table,
        and for an app backend the table's fit for it)."""
        if self.table is None:
            return False
        return self.backend == "numpy" or self.table.has_backend_fit(self.backend)

    def gather_s(self, table: TableLayout, n: float) -> float:
        return self.costs.gather_s(table, n)

    def linear_s(self, in_f: float, out_f: float, act: str, batch: int) -> float:
        return self.costs.linear_s(in_f, out_f, act, batch)

    def estimate(self, program, batch: int) -> dict:
        """{"total_s", "by_op": {op: seconds}, "source", "backend", "measured"} for one batch
        on this model's backend (see the module doc for app backends)."""
        est = self.costs.estimate(program, batch)
        if self.backend == "numpy":
            est.update(backend="numpy", measured=self.measured)
            return est
        if self.measured:
            total = self.table.backend_estimate(self.backend, batch, est["parts_s"], est["nodes"])
            return {"total_s": total, "parts_s": est["parts_s"], "nodes": est["nodes"], "numpy_s": est["total_s"],
                    "by_op": {f"{self.backend} (fit on the numpy sum of parts)": total}, "batch": batch,
                    "source": f"{est['source']}, {self.backend} fit", "backend": self.backend, "measured": True,
                    "emulated": est.get("emulated", False)}
        est.update(backend=self.backend, measured=False, estimated_as="numpy", numpy_s=est["total_s"],
                   source=f"numpy estimate (no {self.backend} measurement; {est['source']})")
        return est


def _device_label(table) -> str:
    return str(table.device or Path(str(table.source)).stem or "table")


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
    numpy_src = f"table:{_device_label(table)}" if table is not None else "profile"
    out = {}
    for be in dict.fromkeys(backends):
        lm = LatencyModel(tgt, prof, table=table, backend=be)
        ests = {b: lm.estimate(program, b) for b in batches}
        entry = {"source": numpy_src if (be == "numpy" or lm.measured) else f"numpy-estimate:{numpy_src}",
                 "model": ests[batches[0]]["source"] if batches else "",
                 "s": {str(b): float(e["total_s"]) for b, e in ests.items()}}
        if table is not None and table.emulated:
            entry["emulated"] = True
        out[be] = entry
    return out


class SlowestBackend(CostModel):
    """The latency budget holds for every backend that ships: a plan's latency is the slowest
    estimate among them. Backends without a measurement of their own are estimated as numpy
    (``LatencyModel``), so only numpy and measured app backends are asked. Building blocks
    (``gather_s``, ``linear_s``, what the planner scores moves by) come from the numpy model:
    the backend fits scale the numpy sum of parts, so they rank moves the same way."""

    def __init__(self, target, profile: ShapeProfile, table=None, backends=("numpy",)):
        models = {b: LatencyModel(target, profile, table=table, backend=b) for b in dict.fromkeys(backends)}
        self.models = {b: m for b, m in models.items() if b == "numpy" or m.measured} or \
            {"numpy": LatencyModel(target, profile, table=table)}
        self.numpy = LatencyModel(target, profile, table=table)
        self.profile, self.table = profile, table
        self.measured = all(m.measured for m in self.models.values())

    def gather_s(self, table: TableLayout, n: float) -> float:
        return self.numpy.gather_s(table, n)

    def linear_s(self, in_f: float, out_f: float, act: str, batch: int) -> float:
        return self.numpy.linear_s(in_f, out_f, act, batch)

    def estimate(self, program, batch: int) -> dict:
        ests = {b: m.estimate(program, batch) for b, m in self.models.items()}
        slowest = max(ests, key=lambda b: ests[b]["total_s"])
        out = dict(ests[slowest])
        if len(ests) > 1:
            out["source"] = f"{slowest}, the slowest of {', '.join(ests)}: {out['source']}"
        return out
