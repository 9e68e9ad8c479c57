"""``calibrate()``: one device's calibration from start to end (measure the table,
fit the graph correction, store it, optionally validate)."""
from __future__ import annotations

from ..plan.latency_table import LatencyTable, save_table
from .boards import open_board
from .fit import add_graph_fit
from .measure import measure_table, model_target
from .validate import validate_model


def calibrate(device: str = "local", *, board=None, inventory=None, settings=None, target=None, quick=None,
              batches=None, store: bool = True, fit: bool = True, fit_kwargs=None, validate: bool = False,
              validate_kwargs=None, app_runtimes: bool = False, progress=print) -> dict:
    """Measure the device's table, (``fit``) fit its graph correction on probe models
    measured there (and, per app backend the board runs, a fit of that backend's
    measured time: ``backend_fits``), and (``store``) save it; with ``validate`` also
    check the latency model, per backend, on other real plans. Returns {"table",
    "paths", "validation"}. ``app_runtimes``: with ``device="local"``, a local board
    that also sees this host's LiteRT / ExecuTorch (``app_runtimes_board``)."""
    board = open_board(device, board=board, inventory=inventory, settings=settings, progress=progress,
                       app_runtimes=app_runtimes)
    try:
        table = measure_table(board, target=target, quick=quick, batches=batches, progress=progress)
        if fit:
            add_graph_fit(board, table, target=model_target(table), progress=progress, **dict(fit_kwargs or {}))
        paths = save_table(table, [board.name, table.get("target")]) if store else []
        for p in paths:
            progress(f"stored the latency table as {p}")
        out = {"table": table, "paths": [str(p) for p in paths], "validation": None}
        if validate:
            kw = dict(validate_kwargs or {})
            lt = LatencyTable(table)
            if lt.emulated:
                kw.setdefault("repeat", 3)          # emulated boards: 2x run-to-run noise
                kw.setdefault("min_seconds", 1.0)
            out["validation"] = validate_model(board, lt, target=model_target(table), progress=progress, **kw)
        return out
    finally:
        board.close()
