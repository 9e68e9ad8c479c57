"""``edgecompress calibrate``: measure a device's latency table on the device, store
it for the planner, and check the latency model against real benchmarks.

    edgecompress calibrate --device local                       # this machine (a separate venv)
    edgecompress calibrate --device pi@10.0.0.7 --target raspberry-pi-4
    edgecompress calibrate --device pi4 --inventory devices.toml --validate

1. install the runtime on the board (the deployer; ``local`` = ``LocalBoard``),
2. run ``edgecompress-runtime calibrate`` there (``--quick`` automatically when the
   board runs under emulation), fetch the JSON,
3. store it as ``<latency dir>/<device>.json`` and, when the device has a target
   profile, ``<latency dir>/<target>.json`` (what ``compile --target`` then uses;
   see ``edgecompress/plan/latency_table.py``),
4. ``--validate``: compile a set of different DLRM plans (bits, kept rows, dims,
   MLP widths, activation modes, two model sizes), benchmark each on the board and
   compare the latency model's estimate with the measured p50, before calibration
   (the profile's coefficients) and after (the table): median and mean absolute
   percentage error.

Timings taken under emulation (qemu-user) are labelled ``emulated`` everywhere:
they describe the emulator, never the device's speed.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CompileError, DeployError
from .plan.latency_table import LatencyTable, save_table

EMULATED_NOTE = "EMULATED (qemu-user): these timings describe the emulator, not the device's speed"


# ------------------------------------------------------------------ boards


class _Local:
    """This machine as the device (``LocalBoard``: a venv with numpy + the runtime only)."""

    def __init__(self, board=None):
        from .deploy.local import LocalBoard
        self.board = board or LocalBoard()
        self.name = "local"
        self.target = "local"

    def install(self, progress) -> dict:
        return self.board.install_runtime(progress=progress)

    def run_runtime(self, args: list[str], timeout: float) -> str:
        cmd = [str(self.board.venv / "bin" / "python"), "-m", "edgecompress_runtime"] + args
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"`edgecompress-runtime {args[0]}` on the local board took over {timeout:.0f} s") \
                from None
        if r.returncode != 0:
            raise DeployError(f"`edgecompress-runtime {args[0]}` failed on the local board: "
                              f"{(r.stderr or r.stdout).strip()[-600:]}")
        return r.stdout

    def calibrate(self, flags: list[str], timeout: float) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "table.json"
            self.run_runtime(["calibrate", "--json", str(out)] + flags, timeout)
            return json.loads(out.read_text())

    def emulation(self) -> dict:
        return json.loads(self.run_runtime(["calibrate", "--probe"], 120).strip().splitlines()[-1])

    def bench(self, bundle, batches, warmup, iters) -> dict:
        return self.board.bench(bundle, batches=batches, warmup=warmup, iters=iters, backend="numpy")

    def reset(self):
        pass

    def close(self):
        pass


class _SSH:
    """A board over SSH through the deployer (``SSHBoard``)."""

    def __init__(self, board):
        self.board = board
        self.name = board.name
        self.target = board.device.target
        self._vpy = None

    def install(self, progress) -> dict:
        rep = self.board.install_runtime(progress=progress)
        self._vpy = f"{rep['workdir']}/versions/{rep['version']}/venv/bin/python"
        return rep

    def run_runtime(self, args: list[str], timeout: float) -> str:
        r = self.board.conn.run([self._vpy, "-m", "edgecompress_runtime"] + args, timeout=timeout,
                                what=f"edgecompress-runtime {args[0]}")
        return r.stdout

    def calibrate(self, flags: list[str], timeout: float) -> dict:
        conn = self.board.conn
        remote = f"/tmp/edgecompress-calibration-{conn.session_pid}-{int(time.time() * 1e3)}.json"
        try:
            self.run_runtime(["calibrate", "--json", remote] + flags, timeout)
            return json.loads(conn.read_bytes(remote).decode())
        finally:
            conn.run(["rm", "-f", remote], timeout=30, check=False, what="removing the calibration output")

    def emulation(self) -> dict:
        return json.loads(self.run_runtime(["calibrate", "--probe"], 120).strip().splitlines()[-1])

    def bench(self, bundle, batches, warmup, iters) -> dict:
        return self.board.bench(bundle, batches=batches, warmup=warmup, iters=iters, backend="numpy")

    def reset(self):
        # a fresh session re-checks what is on the board: the deployer garbage-collects old
        # bundles (it keeps the newest 20), which its per-session cache does not notice
        self.board.close()

    def close(self):
        self.board.close()


def open_board(device: str = "local", *, board=None, inventory=None, settings=None, progress=print):
    """``local`` / a LocalBoard / an SSHBoard / a device name or ``user@host[:port]``."""
    if board is not None:
        from .deploy.local import LocalBoard
        return _Local(board) if isinstance(board, LocalBoard) else _SSH(board)
    if device in (None, "", "local"):
        return _Local()
    from .deploy.board import SSHBoard
    from .deploy.inventory import load_inventory, resolve
    inv = load_inventory(inventory) if isinstance(inventory, (str, Path)) else inventory
    dev = resolve(device, inv)
    if inv is not None:
        from .deploy.connection import SSHSettings
        settings = inv.settings(settings or SSHSettings())
    return _SSH(SSHBoard(dev, settings, sign=False, progress=progress))


# ------------------------------------------------------------------ calibration


def measure_table(runner, *, target=None, quick=None, batches=None, timeout: float = 1800.0,
                  progress=print) -> dict:
    """Install the runtime on the board, run the micro-benchmarks there, return the table."""
    from .targets import load_target
    t0 = time.perf_counter()
    progress(f"installing the runtime on {runner.name}")
    runner.install(progress)
    emu = runner.emulation()
    if quick is None:
        quick = bool(emu.get("emulated"))
    tgt_name = target or runner.target
    if batches is None:
        batches = sorted(set(load_target(tgt_name).batch_sizes)) if tgt_name else [1, 64, 256]
    flags = ["--batch", ",".join(str(b) for b in batches)] + (["--quick"] if quick else [])
    if emu.get("emulated"):
        flags += ["--label", "emulated"]
        progress(f"{runner.name} runs under emulation ({'; '.join(emu.get('emulation_evidence', []))}): "
                 "quick calibration; its timings describe the emulator, not a device")
    progress(f"calibrating {runner.name} ({'quick' if quick else 'full'} grid, batches "
             f"{','.join(map(str, batches))})")
    t1 = time.perf_counter()
    table = runner.calibrate(flags, timeout)
    table["device"] = runner.name
    table["target"] = tgt_name
    table["calibration_wall_s"] = time.perf_counter() - t1
    table["install_and_calibration_wall_s"] = time.perf_counter() - t0
    LatencyTable(table, source=f"table from {runner.name}")   # refuse what we could not use
    return table


def calibrate(device: str = "local", *, board=None, inventory=None, settings=None, target=None, quick=None,
              batches=None, store: bool = True, validate: bool = False, validate_kwargs=None,
              progress=print) -> dict:
    """Measure and (``store``) save the device's table; with ``validate`` also
    check the latency model on real plans. Returns {"table", "paths", "validation"}."""
    runner = open_board(device, board=board, inventory=inventory, settings=settings, progress=progress)
    try:
        table = measure_table(runner, target=target, quick=quick, batches=batches, progress=progress)
        paths = save_table(table, [runner.name, table.get("target")]) if store else []
        for p in paths:
            progress(f"stored the latency table as {p}")
        out = {"table": table, "paths": [str(p) for p in paths], "validation": None}
        if validate:
            kw = dict(validate_kwargs or {})
            lt = LatencyTable(table)
            if lt.emulated:
                kw.setdefault("repeat", 3)          # emulated boards: 2x run-to-run noise
            target = table.get("target") or ("generic-aarch64" if lt.machine in ("aarch64", "arm64") else "local")
            out["validation"] = validate_model(runner, lt, target=target, progress=progress, **kw)
        return out
    finally:
        runner.close()


# ------------------------------------------------------------------ validation


def validation_plans() -> list[tuple[str, list]]:
    """Explicit plans that vary bits, kept rows, dims, MLP width and activation modes."""
    from .passes import (DEFAULT_PLAN, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                         LinearInt8Dynamic, LinearInt8Static, LinearInt8Weights, MLPNeuronPrune)
    return [
        ("fp32", []),
        ("int8", list(DEFAULT_PLAN)),
        ("rows-int4", [EmbeddingRowwiseQuant(bits=4)]),
        ("rows-int2+w8", [EmbeddingRowwiseQuant(bits=2), LinearInt8Weights()]),
        ("keep25%+int8", [EmbeddingRowPrune(keep_ratio=0.25), EmbeddingRowwiseQuant(bits=8)]),
        ("dim8", [EmbeddingDimReduce(dim=8)]),
        ("dim16+int4", [EmbeddingDimReduce(dim=16), EmbeddingRowwiseQuant(bits=4)]),
        ("mlp50%", [MLPNeuronPrune(keep_ratio=0.5)]),
        ("mlp25%+dyn8", [MLPNeuronPrune(keep_ratio=0.25), LinearInt8Dynamic()]),
        ("static8", [EmbeddingRowwiseQuant(bits=8), LinearInt8Static()]),
        ("all", [EmbeddingRowPrune(keep_ratio=0.5), EmbeddingDimReduce(dim=16), MLPNeuronPrune(keep_ratio=0.5),
                 EmbeddingRowwiseQuant(bits=4), LinearInt8Dynamic()]),
    ]


@dataclass
class ValidationModel:
    name: str
    model: object
    train: object
    test: object


def validation_models(small: bool = False, seed: int = 0) -> list[ValidationModel]:
    """Two DLRMs on seeded synthetic data (a small and a wider one), quickly trained."""
    import torch

    from .data import synthetic_ctr
    from .models.zoo import model_for_data
    from .train import train
    out = []
    specs = [("dlrm-small", dict(embedding_dim=16, bottom_mlp=(32, 16), top_mlp=(32,)),
              (5000, 2000, 1000, 300, 50)),
             ("dlrm-wide", dict(embedding_dim=64, bottom_mlp=(256, 64), top_mlp=(256, 64)),
              (100_000, 20_000, 5000, 1000, 200, 50, 20, 10))]
    if small:
        specs = specs[:1]
    for name, kw, vocab in specs:
        data = synthetic_ctr(n=6000 if small else 20_000, vocab_sizes=vocab, dense_dim=8, seed=seed)
        tr, te = data.split((0.8, 0.2), seed=0)
        torch.manual_seed(seed)
        model = model_for_data("dlrm", tr, **kw)
        train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
        out.append(ValidationModel(name, model.eval(), tr, te))
    return out


def _programs(vm: ValidationModel, plans):
    """(plan name, plan, program after the plan) on the host, as compile builds them."""
    from .graph import forward_input_names, lower
    from .passes import apply_plan
    names = forward_input_names(vm.model)
    example = {k: np.asarray(vm.test.inputs[k][:8]) for k in names}
    base = lower(vm.model, example)
    base.context.update(teacher=vm.model, train_data=vm.train, calibration_data=vm.test)
    return base, [(pname, plan, apply_plan(base.copy(), list(plan))) for pname, plan in plans]


def ape(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas


def summarize(rows: list[dict], key: str) -> dict:
    errs = [r[key] for r in rows if r.get(key) is not None]
    if not errs:
        return {}
    return {"median_ape": float(statistics.median(errs)), "mean_ape": float(statistics.fmean(errs)),
            "max_ape": float(max(errs)), "n": len(errs)}


def validate_model(runner, table: LatencyTable, *, target: str = "local", models=None, plans=None,
                   batches=None, warmup: int = 10, iters: int = 100, small: bool = False, out_dir=None,
                   reuse: bool = False, repeat: int = 1, progress=print) -> dict:
    """Compile each (model, plan), bench it on the board, and compare the latency
    model's estimates (profile coefficients vs the table) with the measured p50.
    ``reuse``: keep bundles already in ``out_dir`` (same models and plans); ``repeat``:
    benchmark each bundle that many times (separate processes) and use the median p50."""
    from .compile import compile as ec_compile
    from .plan.latency import LatencyModel, shape_profile
    from .targets import load_target
    tgt = load_target(target)
    batches = list(batches or tgt.batch_sizes)
    plans = plans or validation_plans()
    models = models or validation_models(small=small)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ec-validate-")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    t0 = time.perf_counter()
    try:
        for vm in models:
            base, progs = _programs(vm, plans)
            before = LatencyModel(tgt, shape_profile(base), table=None)
            after = LatencyModel(tgt, shape_profile(base), table=table)
            for pname, plan, prog in progs:
                path = out_dir / f"{vm.name}-{pname}.ecb"
                try:
                    if not (reuse and path.exists()):
                        ec_compile(vm.model, target=tgt, data=vm.test, train_data=vm.train, output=path,
                                   plan=list(plan), formats=["numpy"], progress=False, latency_table=False)
                except CompileError as e:      # e.g. a plan over its parity tolerance: skip it, say so
                    skipped.append({"model": vm.name, "plan": pname, "error": str(e)})
                    progress(f"  {vm.name:<10} {pname:<13} skipped: {e}")
                    continue
                runner.reset()
                runs = [runner.bench(path, batches, warmup, iters) for _ in range(max(1, repeat))]
                res = runs[0]
                # per batch size the median of the repeats' p50s (noisy hosts, emulated boards)
                meas = {int(b): statistics.median(r["p50_ms"] for run in runs for r in run["latency"]
                                                  if int(r["batch"]) == int(b)) / 1e3 for b in batches}
                for b in batches:
                    pb, pa = before.estimate(prog, b)["total_s"], after.estimate(prog, b)["total_s"]
                    rows.append({"model": vm.name, "plan": pname, "batch": b, "measured_p50_s": meas[b],
                                 "before_s": pb, "after_s": pa, "ape_before": ape(pb, meas[b]),
                                 "ape_after": ape(pa, meas[b]), "bytes": path.stat().st_size,
                                 "parity_ok": all(bool(run.get("parity", {}).get("ok")) for run in runs),
                                 "repeats_p50_s": [next(r["p50_ms"] / 1e3 for r in run["latency"]
                                                        if int(r["batch"]) == b) for run in runs]})
                progress(f"  {vm.name:<10} {pname:<13} " + "  ".join(
                    f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (model {r['before_s'] * 1e3:.3f} -> "
                    f"{r['after_s'] * 1e3:.3f})" for r in rows if r["model"] == vm.name and r["plan"] == pname))
    finally:
        if tmp is not None:
            tmp.cleanup()
    rep = {"device": runner.name, "target": tgt.name, "emulated": table.emulated,
           "note": EMULATED_NOTE if table.emulated else "native timings",
           "plans": len({(r["model"], r["plan"]) for r in rows}), "batches": batches, "repeat": repeat,
           "iters": iters,
           "before": summarize(rows, "ape_before"), "after": summarize(rows, "ape_after"),
           "by_batch": {str(b): {"before": summarize([r for r in rows if r["batch"] == b], "ape_before"),
                                 "after": summarize([r for r in rows if r["batch"] == b], "ape_after")}
                        for b in batches},
           "rows": rows, "skipped": skipped, "seconds": time.perf_counter() - t0}
    progress(format_validation(rep))
    return rep


def format_validation(rep: dict) -> str:
    b, a = rep["before"], rep["after"]
    lines = [f"latency model vs measured p50 on {rep['device']} ({rep['plans']} plans x batches "
             f"{','.join(map(str, rep['batches']))}){' [' + EMULATED_NOTE + ']' if rep['emulated'] else ''}",
             f"  before calibration (profile {rep['target']} coefficients): median APE {b['median_ape'] * 100:.1f}%, "
             f"mean {b['mean_ape'] * 100:.1f}%, max {b['max_ape'] * 100:.1f}%",
             f"  after calibration (measured table):  median APE {a['median_ape'] * 100:.1f}%, "
             f"mean {a['mean_ape'] * 100:.1f}%, max {a['max_ape'] * 100:.1f}%"]
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


def calibrate_cmd(args) -> int:
    from .deploy.commands import settings_from_args
    device = args.device or "local"
    settings = None if device == "local" else settings_from_args(args)
    board = None
    if device != "local":
        from .deploy.commands import board_from_args
        board = board_from_args(args)
        if args.target:
            board.device = board.device.with_(target=args.target)
    res = calibrate(device, board=board, settings=settings, target=args.target,
                    quick=True if args.quick else None,
                    batches=args.batch, validate=args.validate,
                    validate_kwargs={"iters": args.iters, "small": args.small} if args.validate else None)
    table = res["table"]
    from edgecompress_runtime.calibrate import summary
    print(summary(table))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"full results: {args.json}")
    return 0


def add_calibrate_parser(sub) -> None:
    from .deploy.commands import _batches, add_ssh_args
    p = sub.add_parser("calibrate", help="measure a device's latency table (used by the planner) and check "
                                         "the latency model against benchmarks")
    add_ssh_args(p)
    g = p.add_argument_group("calibration")
    g.add_argument("--target", help="target profile of the device (also stores the table under this name; "
                                    "default: the device's target in devices.toml, or 'local' for --device local)")
    g.add_argument("--quick", action="store_true", help="a smaller grid (default: automatic on emulated boards)")
    g.add_argument("--batch", type=_batches, help="batch sizes (default: the target profile's)")
    g.add_argument("--validate", action="store_true", help="compile >= 10 DLRM plans, benchmark them on the "
                                                           "device and report the latency model's error")
    g.add_argument("--iters", type=int, default=100, help="with --validate: timed runs per batch (default 100)")
    g.add_argument("--small", action="store_true", help="with --validate: one small model only (faster)")
    g.add_argument("--json", help="write the table and the validation report to this JSON file")
    p.set_defaults(fn=calibrate_cmd)
