"""Micro-benchmarks of the building blocks the host's latency model adds up,
run on the device itself (numpy backend), written as a versioned JSON table.

    edgecompress-runtime calibrate --json table.json [--quick] [--batch 1,64,256] [--label NAME]

What is measured (seconds per call, the median over timed blocks):

- ``gather``: ``Param.gather`` of ``n`` ids from a table of ``rows x dim`` stored as
  fp32 (bits 32) or row-wise int8 / int4 / int2 codes (bits 8/4/2). Quantized
  tables are measured on their dequantize-on-gather path; tables whose fp32 form
  is at most ``dequant_at_load_bytes`` are dequantized at load by the runtime and
  gather like fp32 (the host applies that rule). Ids are Zipf-distributed.
- ``remap``: the extra seconds of the remap lookup of row-pruned tables, by ``n``.
- ``linear``: ``ops.linear`` (bias included) of a ``batch x in`` input with an
  ``out x in`` Param: fp32, int8 weight-only ("weights"; dequantized once, so
  fp32 speed), dynamic and static int8 activations, at each batch size.
- ``bmm``: ``np.matmul`` of ``batch`` stacked ``m x k`` by ``k x n`` matrices (the
  DLRM / DeepFM feature interaction).
- ``ops``: per op type through ``GraphExecutor`` (a graph of many nodes of that op
  reading one input): the fixed cost per node on a tiny input (``fixed_s``: dispatch
  plus the op's own overhead) and the cost per output value (``per_value_s``, the op
  called on a large input with its output freed at once). ``dispatch_s`` is the
  executor's cost per node (``identity``).
- ``mixed``: the fixed cost per node of each op type inside a mixed graph (all op
  types in turn, each node timed within the run), and ``context_s``, the median
  extra over the one-op graphs (code and data less hot, as in a model's graph).
- ``graph_context``: per batch size, what a node costs inside a whole run of a
  DLRM-shaped graph beyond its call in a tight loop (whole run - tight-loop calls -
  dispatch - kept memory, per node); the host adds it to every node.
- ``memory``: extra seconds per run for the output bytes a graph run allocates, beyond
  the same calls outside the executor, by total bytes. Near zero since the executor
  frees each value after its last use and the allocator keeps freed blocks
  (allocator.py); it was 2-3x of a run's time when neither was done.
- ``predict_overhead_s``: what ``Model.predict`` adds around the checks and the run.
- ``validate``: the runtime's input checks in ``predict()`` (``inputs.validate``):
  c0 (no inputs) plus, per dense input, fixed + per value, and per ids input,
  fixed + per field + per value (least-squares fits).

``--quick`` measures a smaller grid with shorter timing windows, for emulated
boards (qemu: numpy ~10-600x slower). The JSON says whether it ran under
emulation (``board.emulated``); such timings describe the emulator, not a device.

One module per job: ``timing`` (how a call is timed, the weights calls run on), ``blocks``
(gathers, remap, Linear, bmm), ``op_costs`` (per op type), ``graph_costs`` (in-graph
context, kept memory), ``overheads`` (input checks, ``predict``). The table's schema and
version are defined here, once: the host's reader imports them.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from ..allocator import tune
from ..params import DEQUANT_AT_LOAD_BYTES
from ..sysinfo import emulation, system_facts
from .blocks import measure_bmm, measure_gathers, measure_linears, measure_remap
from .graph_costs import measure_graph_context, measure_memory
from .op_costs import measure_mixed, measure_ops
from .overheads import measure_predict, measure_validate
from .timing import PASSES, lesser, lesser_ops

SCHEMA = "edgecompress.latency-table"
SCHEMA_VERSION = 2

FULL = {
    "gather_rows": [1_000, 30_000, 300_000], "gather_dims": [8, 32, 64], "gather_bits": [32, 8, 4, 2],
    "gather_n": [1, 16, 256, 4096],
    "linear_sizes": [8, 32, 128, 512], "linear_acts": ["fp32", "weights", "dynamic", "static"],
    "bmm_mk": [(4, 8), (8, 32), (16, 32), (32, 64)],
    "min_block_s": 5e-5, "min_total_s": 0.02, "max_total_s": 0.3,
}
QUICK = {
    "gather_rows": [1_000, 100_000], "gather_dims": [8, 64], "gather_bits": [32, 8, 4, 2],
    "gather_n": [1, 64, 2048],
    "linear_sizes": [16, 64, 256], "linear_acts": ["fp32", "dynamic", "static"],
    "bmm_mk": [(4, 8), (16, 32)],
    "min_block_s": 5e-5, "min_total_s": 0.03, "max_total_s": 0.4,
}


def calibrate(batches=(1, 64, 256), quick: bool = False, label: str | None = None, backend: str = "numpy",
              progress=None, seed: int = 0) -> dict:
    """Run every micro-benchmark; returns the table as a dict (see module doc)."""
    if backend != "numpy":
        raise ValueError(f"calibration measures the numpy backend only, not {backend!r}")
    tune()                       # the allocator settings load() uses, so runs cost what they cost there
    cfg = QUICK if quick else FULL
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    emu = emulation()
    batches = sorted({int(b) for b in batches})
    table = {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "backend": backend, "quick": bool(quick),
        "label": label or ("emulated" if emu["emulated"] else None),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "board": {**system_facts(), **emu, "hostname": platform.node()},
        "batches": batches,
        "dequant_at_load_bytes": DEQUANT_AT_LOAD_BYTES,
    }
    say = progress or (lambda m: None)
    table["passes"] = PASSES
    table["ops"] = lesser_ops([measure_ops(cfg, rng, quick) for _ in range(PASSES)])
    table["dispatch_s"] = table["ops"]["identity"]["fixed_s"]
    table["mixed"] = measure_mixed(cfg, rng, table["ops"], table["dispatch_s"])
    table["op_overhead_s"] = float(np.median([v["fixed_s"] for k, v in table["ops"].items()
                                              if k != "embedding_bag"]))
    say("op overheads done")
    table["memory"] = measure_memory(cfg, rng, quick)
    table["graph_context"] = measure_graph_context(cfg, rng, batches, table["dispatch_s"], table["memory"])
    table["validate"] = measure_validate(cfg, rng)
    table["predict_overhead_s"] = measure_predict(cfg, rng)
    table["gather"] = lesser([measure_gathers(cfg, rng, say) for _ in range(PASSES)])
    table["remap"] = lesser([measure_remap(cfg, rng) for _ in range(PASSES)])
    table["linear"] = lesser([measure_linears(cfg, rng, batches, say) for _ in range(PASSES)])
    table["bmm"] = lesser([measure_bmm(cfg, rng, batches) for _ in range(PASSES)])
    table["seconds"] = time.perf_counter() - t0
    say(f"calibration took {table['seconds']:.1f} s")
    return table


def summary(table: dict) -> str:
    b = table["board"]
    tag = " [EMULATED: timings describe the emulator, not a device]" if b.get("emulated") else ""
    g = {(r["rows"], r["dim"], r["bits"], r["n"]): r["s"] for r in table["gather"]}
    lines = [f"latency table v{table['version']} ({'quick' if table['quick'] else 'full'}) on {b['machine']} "
             f"{b['cpu_model']}{tag}",
             f"  per-node dispatch {table['dispatch_s'] * 1e6:.2f} us, median op overhead "
             f"{table['op_overhead_s'] * 1e6:.2f} us, input checks {table['validate']['c0_s'] * 1e6:.1f} us "
             f"+ {table['validate']['ids']['per_input_s'] * 1e6:.1f} us per ids input "
             f"+ {table['validate']['ids']['per_field_s'] * 1e6:.2f} us per id field",
             f"  {len(table['gather'])} gather points, {len(table['linear'])} linear points, "
             f"{len(table['bmm'])} bmm points in {table['seconds']:.1f} s"]
    rows, dim, n = max(k[0] for k in g), max(k[1] for k in g), max(k[3] for k in g)
    for bits in sorted({k[2] for k in g}, reverse=True):
        if (rows, dim, bits, n) in g:
            lines.append(f"  gather {n} ids from {rows}x{dim} at {bits:>2} bits: {g[(rows, dim, bits, n)] * 1e6:9.1f} us")
    return "\n".join(lines)


def main(args) -> int:
    if getattr(args, "probe", False):
        print(json.dumps(emulation()))
        return 0
    res = calibrate(batches=args.batch, quick=args.quick, label=args.label, backend=args.backend,
                    progress=(lambda m: print(m, flush=True)) if args.verbose else None)
    if args.json:
        tmp = f"{args.json}.part{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.json)
    print(summary(res))
    return 0
