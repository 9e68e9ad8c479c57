"""Measured per-device latency tables (NetAdapt-style lookup tables) for the latency model.

A table is the JSON that ``edgecompress-runtime calibrate`` writes on a device
(schema ``edgecompress.latency-table``, version ``SCHEMA_VERSION``, both defined by the
runtime's ``edgecompress_runtime/calibrate/``; any other schema or version is refused with
a ``LatencyTableError``). ``edgecompress calibrate --device NAME`` runs it there and
stores it on the host:

    $EDGECOMPRESS_LATENCY_DIR (default ~/.cache/edgecompress/latency)/
        <device name>.json            one per calibrated device
        <target profile>.json         the same table, when the device has a target profile
                                      (devices.toml ``target``, or ``calibrate --target``)

``compile(..., target=T)`` uses ``<dir>/<T>.json`` when it exists (``load_for_target``);
``compile(..., latency_table=NAME_OR_PATH)`` / ``edgecompress compile --latency-table``
picks one explicitly, ``latency_table=False`` / ``--latency-table none`` uses the
profile's coefficients only.

Interpolation between measured points (``plan/interp.py``; all in log-log space, because costs are
roughly power laws of sizes and span decades):

- ``gather(rows, dim, bits, n)``: per precision, multilinear interpolation of
  log(seconds) over log(rows), log(dim), log(n) on the measured grid. Outside the
  grid the edge cell's slope is used, clipped to [0, 1.25] per axis (a cost never
  falls, and grows at most a little faster than linearly, with size). Precision is
  matched exactly (32 / 8 / 4 / 2 bits; other widths use the next wider measured
  one). A quantized table whose fp32 form is at most the device runtime's
  ``dequant_at_load_bytes`` is dequantized at load and costs an fp32 gather.
- ``linear(in_f, out_f, act, batch)``: per activation mode the same log-log
  interpolation over (in, out, batch). "weights" (int8 weight-only, dequantized
  once at load) falls back to "fp32" when not measured.
- ``bmm(batch, m, k, n)``: log-log over (batch, per-sample MACs m*k*n).
- ``op_cost(op, values)``: fixed seconds per node of that op type plus seconds per
  output value; op types not measured use the median of the measured ones.
- ``context(batch)``: what a node costs inside a whole graph run beyond the same call
  in a tight loop (measured on a DLRM-shaped graph at each calibrated batch size),
  piecewise linear in batch, flat beyond; the latency model adds it to every node.
- ``memory(kept_bytes)``: extra seconds per run for the node outputs a run keeps
  alive (fresh pages faulting in once the allocator has returned them), piecewise
  linear in bytes between the measured totals (0 at 0, the last slope beyond).
- ``validate_cost(inputs)``: the runtime's input checks, linear fits per input kind
  (fixed + per id field + per value).
- ``graph_fit`` (``edgecompress calibrate`` adds it on the host): per calibrated batch
  size a scale and a per-node term fitted by least squares (relative error) on whole
  probe models measured on the device, so ``estimate = scale * sum_of_parts +
  per_node_s * nodes``. The micro-benchmarks time each building block in a tight
  loop; inside a model's run code and data are colder and numpy's per-call costs
  differ, which a per-part sum cannot see. Between fitted batch sizes scale and
  per-node term are linear in log(batch), flat outside. ``graph_fit=False`` when
  constructing the table turns it off (the raw sum of parts).
- ``backend_fits`` (optional; ``edgecompress calibrate`` adds it when the board runs
  app backends): ``{"litert": {...}, "executorch": {...}}``, per backend and calibrated
  batch size ``{"batch", "method", "scale", "per_node_s", "fixed_s"}`` fitted on the
  same probe models measured whole through that backend, so that backend's seconds
  per batch = ``scale * numpy_sum_of_parts + per_node_s * nodes + fixed_s`` (the
  numpy sum of parts without the graph fit; ``nodes`` of our graph). Interpolated
  like the graph fit (linear in log(batch), flat outside), floored at 5 % of the sum
  of parts. ``backend_estimate(backend, ...)`` returns None for a backend without a
  fit; ``LatencyModel(backend=...)`` then falls back to the numpy estimate and says so.
  The field is optional within version 2: tables stored before it existed are read
  as tables without backend fits (numpy only), so the version was not bumped.

Version 2: the runtime keeps freed run memory in the process and frees each
intermediate after its last use (``edgecompress_runtime/allocator.py``), which
changed what a run costs; version 1 tables described the old runtime.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from edgecompress_runtime.calibrate import SCHEMA, SCHEMA_VERSION

from ..errors import LatencyTableError
from .interp import Grid

ENV_DIR = "EDGECOMPRESS_LATENCY_DIR"


def latency_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("EDGECOMPRESS_CACHE", str(Path.home() / ".cache" / "edgecompress"))
    return Path(base) / "latency"


def _key(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)
    return safe.strip(".") or "device"


def table_path(name: str) -> Path:
    return latency_dir() / f"{_key(name)}.json"


# ------------------------------------------------------------------ the table


class LatencyTable:
    """A device's measured costs (see the module doc); the methods return seconds or None."""

    def __init__(self, data: dict, source: str = "<dict>", graph_fit: bool = True):
        self.source = str(source)
        self.use_graph_fit = graph_fit
        check_schema(data, self.source)
        self.data = data
        try:
            self._build(data)
        except LatencyTableError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyTableError(f"{self.source}: malformed latency table ({type(e).__name__}: {e})") from None

    def _build(self, d: dict) -> None:
        board = d.get("board", {})
        self.emulated = bool(board.get("emulated"))
        self.label = d.get("label")
        self.machine = board.get("machine")
        self.device = d.get("device")
        self.dequant_at_load_bytes = int(d.get("dequant_at_load_bytes", 0))
        self.dispatch_s = float(d["dispatch_s"])
        self.op_overhead_s = float(d["op_overhead_s"])
        self._gather = {}
        by_bits: dict[int, dict] = {}
        for r in d["gather"]:
            by_bits.setdefault(int(r["bits"]), {})[(r["rows"], r["dim"], r["n"])] = r["s"]
        for bits, pts in by_bits.items():
            ks = list(pts)
            self._gather[bits] = Grid([[k[0] for k in ks], [k[1] for k in ks], [k[2] for k in ks]], pts,
                                      f"gather {bits}-bit")
        self._linear = {}
        by_act: dict[str, dict] = {}
        for r in d["linear"]:
            by_act.setdefault(r["act"], {})[(r["in"], r["out"], r["batch"])] = r["s"]
        for act, pts in by_act.items():
            ks = list(pts)
            self._linear[act] = Grid([[k[0] for k in ks], [k[1] for k in ks], [k[2] for k in ks]], pts,
                                     f"linear {act}")
        self._bmm = None
        if d.get("bmm"):
            pts = {(r["batch"], r["m"] * r["k"] * r["n"]): r["s"] for r in d["bmm"]}
            ks = list(pts)
            self._bmm = Grid([[k[0] for k in ks], [k[1] for k in ks]], pts, "bmm")
        self._remap = None
        if d.get("remap"):
            pts = {(r["n"],): max(r["s"], 1e-9) for r in d["remap"]}
            self._remap = Grid([[k[0] for k in pts]], pts, "remap")
        mem = sorted((float(r["bytes"]), max(float(r["s"]), 0.0)) for r in d.get("memory") or [])
        self._memory = ([0.0] + [b for b, _ in mem], [0.0] + [s for _, s in mem]) if mem else None
        self.ops = {k: (float(v["fixed_s"]), float(v["per_value_s"])) for k, v in d.get("ops", {}).items()}
        ctx = sorted((int(r["batch"]), float(r["per_node_s"])) for r in d.get("graph_context") or [])
        self._context = ([c[0] for c in ctx], [c[1] for c in ctx]) if ctx else None
        generic = [v for k, v in self.ops.items() if k not in ("embedding_bag", "identity")]
        self._generic_op = (float(np.median([g[0] for g in generic])), float(np.median([g[1] for g in generic]))) \
            if generic else (self.op_overhead_s, 0.0)
        self.validate = d.get("validate")
        self.predict_overhead_s = float(d.get("predict_overhead_s", 0.0))
        fit = sorted((int(r["batch"]), float(r["scale"]), float(r["per_node_s"]))
                     for r in (d.get("graph_fit") or {}).get("points", []))
        self._fit = fit if (fit and self.use_graph_fit) else None
        self._backend_fits = {}
        for be, bf in (d.get("backend_fits") or {}).items():
            pts = sorted((int(r["batch"]), float(r["scale"]), float(r["per_node_s"]), float(r.get("fixed_s", 0.0)))
                         for r in (bf or {}).get("points", []))
            if pts:
                self._backend_fits[str(be)] = pts

    @property
    def has_graph_fit(self) -> bool:
        return self._fit is not None

    def graph_correction(self, batch: int, parts_s: float, nodes: int) -> float:
        """The whole-model estimate from the sum of parts (see ``graph_fit`` in the module doc)."""
        if self._fit is None:
            return parts_s
        xs = [math.log(b) for b, _, _ in self._fit]
        lb = math.log(max(batch, 1))
        scale = float(np.interp(lb, xs, [f[1] for f in self._fit]))
        per_node = float(np.interp(lb, xs, [f[2] for f in self._fit]))
        return max(scale * parts_s + per_node * nodes, 0.25 * parts_s)

    @property
    def backends(self) -> list[str]:
        """The backends this table has measurements for: numpy plus every backend with a fit."""
        return ["numpy"] + sorted(self._backend_fits)

    def has_backend_fit(self, backend: str) -> bool:
        return backend in self._backend_fits

    def backend_estimate(self, backend: str, batch: int, parts_s: float, nodes: int) -> float | None:
        """Seconds per batch on ``backend`` from the numpy sum of parts (see ``backend_fits`` in
        the module doc); None when the table has no fit for that backend."""
        pts = self._backend_fits.get(backend)
        if not pts:
            return None
        xs = [math.log(b) for b, *_ in pts]
        lb = math.log(max(batch, 1))
        scale, per_node, fixed = (float(np.interp(lb, xs, [p[i] for p in pts])) for i in (1, 2, 3))
        return max(scale * parts_s + per_node * nodes + fixed, 0.05 * parts_s)

    # -- what LatencyModel asks
    def gather(self, rows: int, dim: int, bits: int, n: float, stored_rows: int | None = None) -> float | None:
        if n <= 0:
            return 0.0
        stored = stored_rows or rows
        if bits < 32 and stored * dim * 4 <= self.dequant_at_load_bytes:
            bits = 32                     # the runtime dequantizes small tables at load
        have = sorted(self._gather)
        if bits not in self._gather:
            wider = [b for b in have if b > bits]
            if not wider:
                return None
            bits = wider[0]
        return self._gather[bits](stored, dim, n)

    def remap(self, n: float) -> float:
        return self._remap(n) if (self._remap is not None and n > 0) else 0.0

    def context(self, batch: int) -> float:
        """Seconds a node costs inside a whole graph run beyond its tight-loop cost, at ``batch``
        (piecewise linear in batch between the measured sizes, flat beyond; may be negative)."""
        if self._context is None:
            return 0.0
        xs, ys = self._context
        return float(np.interp(batch, xs, ys))

    def memory(self, kept_bytes: float) -> float:
        """Extra seconds per run for ``kept_bytes`` of node outputs alive during the run."""
        if self._memory is None or kept_bytes <= 0:
            return 0.0
        xs, ys = self._memory
        if kept_bytes >= xs[-1]:         # beyond the grid: the last segment's slope (never negative)
            slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0) if len(xs) > 1 else 0.0
            return ys[-1] + slope * (kept_bytes - xs[-1])
        return float(np.interp(kept_bytes, xs, ys))

    def linear(self, in_f: int, out_f: int, act: str, batch: int) -> float | None:
        act = act or "fp32"
        grid = self._linear.get(act) or (self._linear.get("fp32") if act == "weights" else None)
        if grid is None:
            return None
        return grid(in_f, out_f, batch)

    def bmm(self, batch: int, m: int, k: int, n: int) -> float | None:
        if self._bmm is None:
            return None
        return self._bmm(batch, max(m * k * n, 1))

    def op_cost(self, op: str, values: float) -> float:
        fixed, per_value = self.ops.get(op, self._generic_op)
        return fixed + per_value * max(values, 0.0)

    def validate_cost(self, inputs) -> float:
        """The runtime's input checks for ``inputs``: (is_ids, id fields, values in the batch) per input."""
        v = self.validate
        if not v:
            return 0.0
        s = v["c0_s"]
        for is_ids, fields, values in inputs:
            if is_ids:
                d = v["ids"]
                s += d["per_input_s"] + d["per_field_s"] * fields + d["per_value_s"] * values
            else:
                d = v["dense"]
                s += d["per_input_s"] + d["per_value_s"] * values
        return s

    def describe(self) -> str:
        emu = " (EMULATED: describes the emulator, not a device)" if self.emulated else ""
        fit = " + graph fit" if self._fit is not None else ""
        return f"measured table {self.device or Path(self.source).stem}{fit}{emu}"

    @classmethod
    def load(cls, path) -> "LatencyTable":
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text())
        except OSError as e:
            raise LatencyTableError(f"cannot read latency table {p}: {e.strerror or e}") from None
        except ValueError as e:
            raise LatencyTableError(f"latency table {p} is not valid JSON: {e}") from None
        return cls(data, source=str(p))


def check_schema(data, source: str = "<dict>") -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise LatencyTableError(f"{source}: not a latency table (schema {got!r}, expected {SCHEMA!r})")
    if data.get("version") != SCHEMA_VERSION:
        raise LatencyTableError(
            f"{source}: latency table schema version {data.get('version')!r} is not the version this edgecompress "
            f"reads ({SCHEMA_VERSION}); re-run `edgecompress calibrate` on the device with this version")


def save_table(data: dict, names) -> list[Path]:
    """Validate and store ``data`` under each name in ``latency_dir()``; returns the paths."""
    LatencyTable(data)               # refuse to store something we could not load
    out = []
    d = latency_dir()
    d.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(n for n in names if n):
        p = table_path(name)
        tmp = p.with_suffix(f".json.part{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, p)
        out.append(p)
    return out


def resolve_table(spec) -> LatencyTable | None:
    """``latency_table=`` of compile: a LatencyTable, a path to a .json, a stored
    device/target name, or None/False/"none" for no table."""
    if spec is None or spec is False or (isinstance(spec, str) and spec.lower() in ("none", "off", "")):
        return None
    if isinstance(spec, LatencyTable):
        return _warn_emulated(spec)
    if isinstance(spec, dict):
        return _warn_emulated(LatencyTable(spec))
    p = Path(spec).expanduser()
    if p.suffix == ".json" or os.sep in str(spec):
        if not p.is_file():
            raise LatencyTableError(f"latency table {p} does not exist")
        return _warn_emulated(LatencyTable.load(p))
    stored = table_path(str(spec))
    if not stored.is_file():
        have = sorted(x.stem for x in latency_dir().glob("*.json")) if latency_dir().is_dir() else []
        raise LatencyTableError(f"no latency table for {spec!r} in {latency_dir()} (have: {', '.join(have) or 'none'}); "
                                f"run `edgecompress calibrate --device {spec}` or pass a path to a table")
    return _warn_emulated(LatencyTable.load(stored))


def load_for_target(target) -> LatencyTable | None:
    """The stored table for a target profile (``<latency dir>/<target name>.json``), or None.
    A stored table that cannot be used is an error, not silently ignored."""
    name = getattr(target, "name", target)
    if not name:
        return None
    p = table_path(str(name))
    if not p.is_file():
        return None
    return _warn_emulated(LatencyTable.load(p))


def _warn_emulated(table: LatencyTable) -> LatencyTable:
    if table.emulated:
        warnings.warn(f"the latency table {table.source} was measured under emulation: its estimates describe "
                      "the emulator, not a device", stacklevel=3)
    return table
