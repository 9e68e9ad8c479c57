"""Calibration: measure a device's latency table on the device, store it for the
planner, and check the latency model against real benchmarks (the library behind
``edgecompress calibrate``, whose verb lives in edgecompress/cli/).

    from edgecompress.calibrate import calibrate
    out = calibrate("local", validate=True)            # or "pi@10.0.0.7", or board=SSHBoard(...)

1. install the runtime on the board (the deployer; ``local`` = ``LocalBoard``),
2. run ``edgecompress-runtime calibrate`` there (``--quick`` automatically when the
   board runs under emulation), fetch the JSON,
3. fit the graph correction: a few probe models (other shapes than step 5's) compiled
   with several plans and measured whole on the board; per batch size a scale and a
   per-node term fitted to them (``graph_fit``, see plan/latency_table.py). When the
   board has app runtimes installed (``litert``: ai-edge-litert, ``executorch``) and
   this host can export them, the probes are compiled with those formats too and
   measured whole through each backend; per backend and batch size a fit maps the
   numpy sum of parts to that backend's measured time (``backend_fits``),
4. store the table as ``<latency dir>/<device>.json`` and, when the device has a target
   profile, ``<latency dir>/<target>.json`` (what ``compile --target`` then uses;
   see ``edgecompress/plan/latency_table.py``),
5. ``--validate``: compile a set of different DLRM plans (bits, kept rows, dims,
   MLP widths, activation modes, two model sizes), benchmark each on the board and
   compare the latency model's estimate with the measured p50, before calibration
   (the profile's coefficients) and after (the table): median and mean absolute
   percentage error; per backend the board runs (numpy, litert, executorch): median
   and worst absolute percentage error and the share of (plan, batch) within +-10 %.

Timings taken under emulation (qemu-user) are labelled ``emulated`` everywhere:
they describe the emulator, never the device's speed.

Modules by job: ``boards`` (the board to calibrate), ``measure`` (the table, whole
plans per backend), ``probes`` (probe and validation models and plans), ``fit``
(graph and backend fits), ``validate`` (validation and its text summary), ``run``
(``calibrate()`` from start to end).
"""
from .boards import app_runtimes_board, open_board
from .fit import (BACKEND_FIT_METHODS, FIT_METHODS, add_graph_fit, fit_graph, fit_points)
from .measure import APP_BACKENDS, EMULATED_NOTE, app_backends, bench_plans, measure_table, model_target
from .probes import ValidationModel, probe_models, probe_plans, validation_models, validation_plans
from .run import calibrate
from .validate import ape, format_validation, summarize, validate_model

__all__ = ["APP_BACKENDS", "BACKEND_FIT_METHODS", "EMULATED_NOTE", "FIT_METHODS", "ValidationModel", "add_graph_fit",
           "ape", "app_backends", "app_runtimes_board", "bench_plans", "calibrate", "fit_graph", "fit_points",
           "format_validation", "measure_table", "model_target", "open_board", "probe_models", "probe_plans",
           "summarize", "validate_model", "validation_models", "validation_plans"]
