"""Measuring on the board: the latency table (``edgecompress-runtime calibrate``
there, quick under emulation) and whole compiled plans benchmarked per backend."""
from __future__ import annotations

import statistics
import time

from ..errors import CompileError, DeployError
from ..plan.latency_table import LatencyTable

EMULATED_NOTE = "EMULATED (qemu-user): these timings describe the emulator, not the device's speed"
# app backends calibrated by whole-model probes when the board runs them
APP_BACKENDS = ("litert", "executorch")


def measure_table(board, *, target=None, quick=None, batches=None, timeout: float = 1800.0,
                  progress=print) -> dict:
    """Install the runtime on the board, run the micro-benchmarks there, return the table."""
    from ..targets import load_target
    t0 = time.perf_counter()
    progress(f"installing the runtime on {board.name}")
    board.install_runtime(progress=progress)
    emu = board.emulation()
    if quick is None:
        quick = bool(emu.get("emulated"))
    tgt_name = target or board.target
    if batches is None:
        batches = sorted(set(load_target(tgt_name).batch_sizes)) if tgt_name else [1, 64, 256]
    flags = ["--batch", ",".join(str(b) for b in batches)] + (["--quick"] if quick else [])
    if emu.get("emulated"):
        flags += ["--label", "emulated"]
        progress(f"{board.name} runs under emulation ({'; '.join(emu.get('emulation_evidence', []))}): "
                 "quick calibration; its timings describe the emulator, not a device")
    progress(f"calibrating {board.name} ({'quick' if quick else 'full'} grid, batches "
             f"{','.join(map(str, batches))})")
    t1 = time.perf_counter()
    table = board.calibrate(flags, timeout)
    table["device"] = board.name
    table["backends_installed"] = board.backends()
    table["target"] = tgt_name
    table["calibration_wall_s"] = time.perf_counter() - t1
    table["install_and_calibration_wall_s"] = time.perf_counter() - t0
    LatencyTable(table, source=f"table from {board.name}")   # refuse what we could not use
    return table


def model_target(table: dict) -> str:
    """The target profile whose shapes the latency model uses for a table's device."""
    board = table.get("board", {})
    return table.get("target") or ("generic-aarch64" if board.get("machine") in ("aarch64", "arm64") else "local")


def app_backends(table: dict) -> list[str]:
    """App backends to calibrate: installed on the board (``backends_installed``) and exportable here."""
    from ..export.artifacts import available_formats
    on_board = table.get("backends_installed") or []
    exportable = [f for f, missing in available_formats().items() if missing is None]
    return [b for b in APP_BACKENDS if b in on_board and b in exportable]


def bench_plans(board, vm, progs, tgt, batches, warmup, iters, repeat, out_dir, reuse, skipped, progress,
                 min_seconds=0.0, backends=()):
    """Compile each (plan name, plan, program) of ``vm`` as compile does, then bench every bundle
    on the board, ``repeat`` rounds over all of them (separate processes); yields (name, program,
    bundle path, numpy runs, {backend: {batch: median p50 s}}), numpy always, each of
    ``backends`` (app backends) when its artifact could be exported for that plan.

    All compiles come first: right after a compile the host's torch threads and clean-up still
    take CPU for a while, and on a 2-core host that slowed the next benchmark by up to 2x.
    ``min_seconds``: time each batch size at least that long, so that a slow stretch of a few
    tens of ms (seen on this shared VM in ~1 of 3 processes) cannot make up a whole p50.
    Each backend runs in its own process (as an app would), numpy first."""
    from ..compile import compile as ec_compile
    backends = [b for b in backends if b != "numpy"]
    ready = []
    for pname, plan, prog in progs:
        path = out_dir / f"{vm.name}-{pname}{'+' + '+'.join(backends) if backends else ''}.ecb"
        # tolerance=1: only latency is measured here, so an artifact whose metric drifts more than a
        # shipped plan may (compile refuses those) is still a valid latency probe
        kw = dict(target=tgt, data=vm.test, train_data=vm.train, output=path, plan=list(plan), progress=False,
                  latency_table=False, tolerance=1.0)
        try:
            if not (reuse and path.exists()):
                try:
                    ec_compile(vm.model, formats=["numpy"] + backends, **kw)
                except CompileError as e:
                    if not backends:
                        raise
                    # an app format could not express this plan (or missed its parity): numpy alone
                    ec_compile(vm.model, formats=["numpy"], **kw)
                    for be in backends:
                        skipped.append({"model": vm.name, "plan": pname, "backend": be, "error": str(e)})
                    progress(f"  {vm.name:<10} {pname:<13} app formats skipped: {str(e)[:160]}")
        except CompileError as e:      # e.g. a plan over its parity tolerance: skip it, say so
            skipped.append({"model": vm.name, "plan": pname, "error": str(e)})
            progress(f"  {vm.name:<10} {pname:<13} skipped: {e}")
            continue
        ready.append((pname, prog, path, ["numpy"] + [b for b in backends if b in _carried(path)]))
    runs: dict[tuple, list] = {(pname, be): [] for pname, _, _, bes in ready for be in bes}
    for _ in range(max(1, repeat)):     # rounds, so a slow minute on the host hits one run of each
        for pname, _, path, bes in ready:
            for be in bes:
                board.reset()
                try:
                    # only latency is measured here: parity is recorded (validation rows), not enforced
                    runs[(pname, be)].append(board.bench(path, batches=batches, warmup=warmup, iters=iters,
                                                         min_seconds=min_seconds, backend=be, check_parity=False))
                except DeployError as e:
                    if be == "numpy":
                        raise
                    skipped.append({"model": vm.name, "plan": pname, "backend": be, "error": str(e)})
                    progress(f"  {vm.name:<10} {pname:<13} {be} bench failed: {str(e)[:160]}")
    for pname, prog, path, bes in ready:
        # per batch size the median of the repeats' p50s (noisy hosts, emulated boards)
        meas = {be: {int(b): statistics.median(r["p50_ms"] for run in runs[(pname, be)] for r in run["latency"]
                                               if int(r["batch"]) == int(b)) / 1e3 for b in batches}
                for be in bes if runs[(pname, be)]}
        yield pname, prog, path, runs[(pname, "numpy")], meas


def _carried(path) -> list[str]:
    from edgecompress_runtime.backends import carried
    from edgecompress_runtime.bundle import read_bundle
    return carried(read_bundle(path))
