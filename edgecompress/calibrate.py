"""``edgecompress calibrate``: measure a device's latency table on the device, store
it for the planner, and check the latency model against real benchmarks.

    edgecompress calibrate --device local                       # this machine (a separate venv)
    edgecompress calibrate --device pi@10.0.0.7 --target raspberry-pi-4
    edgecompress calibrate --device pi4 --inventory devices.toml --validate

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
# app backends calibrated by whole-model probes when the board runs them
APP_BACKENDS = ("litert", "executorch")
_BACKENDS_PY = "import json, edgecompress_runtime.backends as b; print(json.dumps(b.available()))"


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

    def backends(self) -> list[str]:
        """Backends the board's runtime can run (``edgecompress_runtime.backends.available()`` there)."""
        r = subprocess.run([str(self.board.venv / "bin" / "python"), "-c", _BACKENDS_PY], capture_output=True,
                           text=True, timeout=120)
        return _parse_backends(r.stdout) if r.returncode == 0 else ["numpy"]

    def bench(self, bundle, batches, warmup, iters, min_seconds=0.0, backend="numpy") -> dict:
        return self.board.bench(bundle, batches=batches, warmup=warmup, iters=iters, backend=backend,
                                min_seconds=min_seconds)

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

    def backends(self) -> list[str]:
        r = self.board.conn.run([self._vpy, "-c", _BACKENDS_PY], timeout=120, check=False,
                                what="listing the board's backends")
        return _parse_backends(r.stdout) if r.exit_code == 0 else ["numpy"]

    def bench(self, bundle, batches, warmup, iters, min_seconds=0.0, backend="numpy") -> dict:
        return self.board.bench(bundle, batches=batches, warmup=warmup, iters=iters, backend=backend,
                                min_seconds=min_seconds)

    def reset(self):
        # a fresh session re-checks what is on the board: the deployer garbage-collects old
        # bundles (it keeps the newest 20), which its per-session cache does not notice
        self.board.close()

    def close(self):
        self.board.close()


def _parse_backends(text: str) -> list[str]:
    try:
        got = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ["numpy"]
    return [str(b) for b in got] if isinstance(got, list) else ["numpy"]


def app_runtimes_board(root=None, progress=print):
    """A LocalBoard (its own venv: numpy + the runtime wheel) that also sees the app runtimes
    installed on this host (ai-edge-litert; executorch with torch) through a ``.pth`` line
    naming the host's site-packages. The path line comes after the venv's own site-packages,
    so the board's numpy and edgecompress_runtime are its own, and the host package
    ``edgecompress`` (an editable install, activated by the host's own .pth hooks, which a
    path line does not run) stays out of reach. For calibrating the app backends on this
    machine (``edgecompress calibrate --device local --app-runtimes``) and for tests."""
    import importlib.util

    from .deploy.local import LocalBoard, cache_dir
    board = LocalBoard(Path(root) if root else cache_dir() / "local-board-apps")
    board.install_runtime(progress=progress)
    dirs = []
    for mod in ("ai_edge_litert", "executorch", "torch"):
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.submodule_search_locations:
            d = str(Path(list(spec.submodule_search_locations)[0]).parent)
            if d not in dirs:
                dirs.append(d)
    site = next((board.venv / "lib").glob("python*/site-packages"))
    pth = site / "zz_edgecompress_host_app_runtimes.pth"
    text = "".join(d + "\n" for d in dirs)
    if not pth.exists() or pth.read_text() != text:
        pth.write_text(text)
    return board


def open_board(device: str = "local", *, board=None, inventory=None, settings=None, progress=print,
               app_runtimes: bool = False):
    """``local`` / a LocalBoard / an SSHBoard / a device name or ``user@host[:port]``.
    ``app_runtimes`` (``local`` only): the board venv also sees this host's LiteRT / ExecuTorch
    (``app_runtimes_board``)."""
    if board is not None:
        from .deploy.local import LocalBoard
        return _Local(board) if isinstance(board, LocalBoard) else _SSH(board)
    if device in (None, "", "local"):
        return _Local(app_runtimes_board(progress=progress) if app_runtimes else None)
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
    table["backends_installed"] = runner.backends()
    table["target"] = tgt_name
    table["calibration_wall_s"] = time.perf_counter() - t1
    table["install_and_calibration_wall_s"] = time.perf_counter() - t0
    LatencyTable(table, source=f"table from {runner.name}")   # refuse what we could not use
    return table


def model_target(table: dict) -> str:
    """The target profile whose shapes the latency model uses for a table's device."""
    board = table.get("board", {})
    return table.get("target") or ("generic-aarch64" if board.get("machine") in ("aarch64", "arm64") else "local")


def add_graph_fit(runner, table: dict, *, target: str, progress=print, **kw) -> dict:
    """``fit_graph`` with defaults for the board (emulated: fewer, repeated runs); stores it in the table."""
    if table.get("board", {}).get("emulated"):      # qemu: ~10-100x slower, noisy from run to run
        kw.setdefault("warmup", 10)                  # qemu translates each new code path on first use
        kw.setdefault("iters", 60)
        kw.setdefault("min_seconds", 1.0)
    # the median of 3 runs per probe: under qemu about 1 process in 4 runs 1.5-1.9x slower
    # throughout, and with 2 runs the "median" is their mean, which one such run drags up 35 %
    kw.setdefault("repeat", 3)
    kw.setdefault("quick", bool(table.get("quick")))
    if "backends" not in kw:
        kw["backends"] = app_backends(table)
    progress(f"fitting the graph correction on {runner.name} (probe models measured whole"
             f"{'; also through ' + ', '.join(kw['backends']) if kw['backends'] else ''})")
    fit = fit_graph(runner, table, target=target, progress=progress, **kw)
    fits = fit.pop("backend_fits", {})
    table["graph_fit"] = fit
    progress("  numpy: " + _describe_points(table["graph_fit"]["points"]))
    if fits:
        table["backend_fits"] = fits
        for be, f in fits.items():
            progress(f"  {be}: " + _describe_points(f["points"]))
    else:
        table.pop("backend_fits", None)
    LatencyTable(table, source=f"table from {runner.name}")      # refuse what we could not use
    return table


def _describe_points(points: list[dict]) -> str:
    return ", ".join(f"b={p['batch']}: {p['method']} x{p['scale']:.2f} {p['per_node_s'] * 1e6:+.2f} us/node"
                     f"{' %+.1f us' % (p.get('fixed_s', 0.0) * 1e6) if p.get('fixed_s') else ''} "
                     f"(probes {p['parts_median_ape'] * 100:.0f}% -> {p['fit_median_ape'] * 100:.0f}%, "
                     f"held out {p['cv_median_ape'][p['method']] * 100:.0f}%)" for p in points)


def app_backends(table: dict) -> list[str]:
    """App backends to calibrate: installed on the board (``backends_installed``) and exportable here."""
    from .export.artifacts import FORMATS, _REQUIRES
    from edgecompress_runtime.backends._common import installed
    on_board = table.get("backends_installed") or []
    return [b for b in APP_BACKENDS if b in on_board and b in FORMATS and all(installed(m) for m in _REQUIRES[b])]


def calibrate(device: str = "local", *, board=None, inventory=None, settings=None, target=None, quick=None,
              batches=None, store: bool = True, fit: bool = True, fit_kwargs=None, validate: bool = False,
              validate_kwargs=None, app_runtimes: bool = False, progress=print) -> dict:
    """Measure the device's table, (``fit``) fit its graph correction on probe models
    measured there (and, per app backend the board runs, a fit of that backend's
    measured time: ``backend_fits``), and (``store``) save it; with ``validate`` also
    check the latency model, per backend, on other real plans. Returns {"table",
    "paths", "validation"}. ``app_runtimes``: with ``device="local"``, a local board
    that also sees this host's LiteRT / ExecuTorch (``app_runtimes_board``)."""
    runner = open_board(device, board=board, inventory=inventory, settings=settings, progress=progress,
                        app_runtimes=app_runtimes)
    try:
        table = measure_table(runner, target=target, quick=quick, batches=batches, progress=progress)
        if fit:
            add_graph_fit(runner, table, target=model_target(table), progress=progress, **dict(fit_kwargs or {}))
        paths = save_table(table, [runner.name, table.get("target")]) if store else []
        for p in paths:
            progress(f"stored the latency table as {p}")
        out = {"table": table, "paths": [str(p) for p in paths], "validation": None}
        if validate:
            kw = dict(validate_kwargs or {})
            lt = LatencyTable(table)
            if lt.emulated:
                kw.setdefault("repeat", 3)          # emulated boards: 2x run-to-run noise
                kw.setdefault("min_seconds", 1.0)
            out["validation"] = validate_model(runner, lt, target=model_target(table), progress=progress, **kw)
        return out
    finally:
        runner.close()


# ------------------------------------------------------------------ graph fit


def probe_plans(dim: int) -> list[tuple[str, list]]:
    """Plans for the graph-fit probes (bits, kept rows, dims, MLP width, activation modes)."""
    from .passes import (DEFAULT_PLAN, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                         LinearInt8Dynamic, MLPNeuronPrune)
    return [
        ("fp32", []),
        ("int8", list(DEFAULT_PLAN)),
        ("keep50%+int4", [EmbeddingRowPrune(keep_ratio=0.5), EmbeddingRowwiseQuant(bits=4)]),
        ("mlp50%+dyn8", [MLPNeuronPrune(keep_ratio=0.5), LinearInt8Dynamic()]),
        (f"dim{max(dim // 4, 2)}+int8", [EmbeddingDimReduce(dim=max(dim // 4, 2)), EmbeddingRowwiseQuant(bits=8)]),
    ]


def probe_models(quick: bool = False, seed: int = 1) -> list[ValidationModel]:
    """Untrained models of other shapes than the validation DLRMs (latency does not depend
    on training): a narrow 3-table DLRM, a 6-table DLRM and a 10-table DeepFM."""
    import torch

    from .data import synthetic_ctr
    from .models.zoo import model_for_data
    specs = [("probe-dlrm-8x3", "dlrm", dict(embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(16,)), (3000, 500, 40)),
             ("probe-dlrm-32x6", "dlrm", dict(embedding_dim=32, bottom_mlp=(128, 32), top_mlp=(128, 32)),
              (50_000, 8000, 2000, 300, 60, 12)),
             ("probe-deepfm-24x10", "deepfm", dict(embedding_dim=24, hidden=(96, 48)),
              (30_000, 10_000, 4000, 1500, 600, 250, 100, 40, 16, 6))]
    if quick:
        specs = specs[:2]
    out = []
    for name, arch, kw, vocab in specs:
        data = synthetic_ctr(n=3000, vocab_sizes=vocab, dense_dim=6, seed=seed)
        tr, te = data.split((0.7, 0.3), seed=seed)
        torch.manual_seed(seed)
        out.append(ValidationModel(name, model_for_data(arch, tr, **kw).eval(), tr, te))
    return out


# the terms of each fit method: scale * parts_s (+ per_node_s * nodes) (+ fixed_s)
_TERMS = {"parts": (), "scale": ("parts_s",), "scale+node": ("parts_s", "nodes"), "scale+fixed": ("parts_s", "one")}
FIT_METHODS = ("parts", "scale", "scale+node")
# app backends: their time is a fraction of numpy's sum of parts plus a fixed cost per call
# (the interpreter's invoke) that numpy's per-node sum does not have
BACKEND_FIT_METHODS = ("parts", "scale", "scale+node", "scale+fixed")
GRAPH_SCALE_CLIP = (0.2, 5.0)
BACKEND_SCALE_CLIP = (0.01, 20.0)


def _fit(rows: list[dict], how: str, clip=GRAPH_SCALE_CLIP) -> tuple[float, float, float]:
    """(scale, per_node_s, fixed_s) of one method, least squares on the relative error, one refit
    without points off by more than 3x the median residual (a disturbed run)."""
    if how == "parts" or not rows:
        return 1.0, 0.0, 0.0
    terms = _TERMS[how]
    meas = np.array([r["measured_p50_s"] for r in rows])
    a = np.array([[1.0 if t == "one" else r[t] for t in terms] for r in rows]) / meas[:, None]
    keep = np.ones(len(rows), bool)
    fit = (1.0, 0.0, 0.0)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], np.ones(int(keep.sum())), rcond=None)
        c = dict(zip(terms, (float(x) for x in coef)))
        scale = float(np.clip(c["parts_s"], *clip))
        fit = (scale, c.get("nodes", 0.0), c.get("one", 0.0))
        res = np.abs(np.array(_apes(rows, fit)))
        if len(rows) < 6:
            break
        keep = res <= max(3 * float(np.median(res)), 0.05)
    return fit


def _apes(rows: list[dict], fit) -> list[float]:
    scale, per_node, fixed = (tuple(fit) + (0.0, 0.0))[:3]
    return [abs(scale * r["parts_s"] + per_node * r["nodes"] + fixed - r["measured_p50_s"]) / r["measured_p50_s"]
            for r in rows]


def fit_points(rows: list[dict], batches, methods=FIT_METHODS, clip=GRAPH_SCALE_CLIP) -> list[dict]:
    """Per batch size the correction ``scale * parts_s + per_node_s * nodes (+ fixed_s)`` of the
    method (none, a scale, a scale and a per-node term; for app backends also a scale and a
    fixed term) with the lowest leave-one-model-out error: each probe model is predicted by
    the fit on the others, so a correction that does not carry over to models it was not
    fitted on is not used."""
    out = []
    for b in batches:
        pts = [r for r in rows if r["batch"] == b]
        models = sorted({r["model"] for r in pts})
        if len(pts) < 3 or len(models) < 2:
            continue
        cv = {}
        for how in methods:
            errs = []
            for m in models:
                errs += _apes([r for r in pts if r["model"] == m],
                              _fit([r for r in pts if r["model"] != m], how, clip))
            cv[how] = float(np.median(errs))
        how = min(methods, key=lambda k: (round(cv[k], 3), methods.index(k)))
        scale, per_node, fixed = _fit(pts, how, clip)
        out.append({"batch": int(b), "method": how, "scale": scale, "per_node_s": per_node, "fixed_s": fixed,
                    "n": len(pts), "cv_median_ape": cv,
                    "fit_median_ape": float(np.median(_apes(pts, (scale, per_node, fixed)))),
                    "parts_median_ape": float(np.median(_apes(pts, (1.0, 0.0, 0.0))))})
    return out


def fit_graph(runner, table: dict, *, target: str, quick: bool = False, warmup: int = 10, iters: int = 100,
              repeat: int = 1, min_seconds: float = 0.3, out_dir=None, models=None, plans=None, backends=(),
              progress=print) -> dict:
    """Measure whole probe models on the board and fit the table's graph correction
    (``graph_fit``, see plan/latency_table.py). The probes are other models than the
    validation set of ``--validate``, so validation measures the fitted model honestly.
    ``backends``: app backends (litert, executorch) to measure the same probes through;
    their fits come back under ``backend_fits`` (a per-backend map of the numpy sum of
    parts to that backend's measured time)."""
    from .plan.latency import LatencyModel, shape_profile
    from .targets import load_target
    tgt = load_target(target)
    batches = [int(b) for b in table["batches"]]
    raw = LatencyTable(table, graph_fit=False)
    backends = [b for b in backends if b != "numpy"]
    rows, skipped = [], []
    app_rows: dict[str, list] = {b: [] for b in backends}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ec-graph-fit-") as tmp:
        for vm in models or probe_models(quick=quick):
            base, progs = _programs(vm, plans or probe_plans(int(vm.model.config["embedding_dim"])))
            model = LatencyModel(tgt, shape_profile(base), table=raw)
            for pname, prog, _path, _runs, by_be in _bench_plans(runner, vm, progs, tgt, batches, warmup, iters,
                                                                  repeat, Path(out_dir or tmp), False, skipped,
                                                                  progress, min_seconds, backends=backends):
                meas = by_be["numpy"]
                for b in batches:
                    est = model.estimate(prog, b)
                    rows.append({"model": vm.name, "plan": pname, "batch": b, "measured_p50_s": meas[b],
                                 "parts_s": est["parts_s"], "nodes": est["nodes"]})
                    for be in backends:
                        if be in by_be:
                            app_rows[be].append({**rows[-1], "backend": be, "measured_p50_s": by_be[be][b]})
                progress(f"  probe {vm.name:<18} {pname:<13} " + "  ".join(
                    f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (parts {r['parts_s'] * 1e3:.3f}"
                    + "".join(f", {be} {by_be[be][r['batch']] * 1e3:.3f}" for be in backends if be in by_be) + ")"
                    for r in rows if r["model"] == vm.name and r["plan"] == pname))
    points = fit_points(rows, batches)
    if not points:
        raise DeployError(f"graph fit on {runner.name}: too few probe models could be measured "
                          f"({len(skipped)} skipped: {'; '.join(x['error'][:80] for x in skipped[:3])})")
    backend_fits = {}
    for be in backends:
        pts = fit_points(app_rows[be], batches, methods=BACKEND_FIT_METHODS, clip=BACKEND_SCALE_CLIP)
        if pts:
            backend_fits[be] = {
                "base": "numpy sum of parts (the table without its graph fit)",
                "method": "estimate = scale * parts + per_node_s * nodes + fixed_s per batch size; least squares "
                          "on the relative error; per batch the method (parts / scale / scale+node / "
                          "scale+fixed) with the lowest leave-one-model-out error",
                "points": pts, "probes": app_rows[be],
                "skipped": [x for x in skipped if x.get("backend") == be]}
        else:
            progress(f"  {be}: too few probes measured for a fit ({len(app_rows[be])} points); no {be} fit")
    return {"method": "estimate = scale * parts + per_node_s * nodes per batch size; least squares on the relative "
                      "error; per batch the method (parts / scale / scale+node) with the lowest leave-one-model-out "
                      "error",
            "points": points, "probes": rows, "skipped": [x for x in skipped if not x.get("backend")],
            "repeat": repeat, "iters": iters, "backends": list(backend_fits), "backend_fits": backend_fits,
            "seconds": time.perf_counter() - t0}


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
    """median / mean / worst absolute percentage error of ``key`` and the share within +-10 %."""
    errs = [r[key] for r in rows if r.get(key) is not None]
    if not errs:
        return {}
    return {"median_ape": float(statistics.median(errs)), "mean_ape": float(statistics.fmean(errs)),
            "max_ape": float(max(errs)), "within_10pct": float(sum(e <= 0.10 for e in errs) / len(errs)),
            "n": len(errs)}


def _bench_plans(runner, vm, progs, tgt, batches, warmup, iters, repeat, out_dir, reuse, skipped, progress,
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
    from .compile import compile as ec_compile
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
                runner.reset()
                try:
                    runs[(pname, be)].append(runner.bench(path, batches, warmup, iters, min_seconds, backend=be))
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


def validate_model(runner, table: LatencyTable, *, target: str = "local", models=None, plans=None,
                   batches=None, warmup: int = 10, iters: int = 100, small: bool = False, out_dir=None,
                   reuse: bool = False, repeat: int = 1, min_seconds: float = 0.3, backends=None,
                   progress=print) -> dict:
    """Compile each (model, plan), bench it on the board, and compare the latency
    model's estimates (profile coefficients vs the table) with the measured p50.
    ``reuse``: keep bundles already in ``out_dir`` (same models and plans); ``repeat``:
    benchmark each bundle that many times (separate processes) and use the median p50.
    ``backends``: app backends to validate as well (default: those the board runs and
    this host exports, see ``app_backends``); each is compared with
    ``LatencyModel(backend=...)``, i.e. the table's fit for it, or the numpy estimate
    when the table has none (reported as such)."""
    from .plan.latency import LatencyModel, shape_profile
    from .targets import load_target
    tgt = load_target(target)
    batches = list(batches or tgt.batch_sizes)
    plans = plans or validation_plans()
    models = models or validation_models(small=small)
    if backends is None:
        backends = app_backends({"backends_installed": runner.backends()})
    backends = [b for b in backends if b != "numpy"]
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ec-validate-")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, app_rows, skipped = [], [], []
    t0 = time.perf_counter()
    try:
        for vm in models:
            base, progs = _programs(vm, plans)
            prof = shape_profile(base)
            before = LatencyModel(tgt, prof, table=None)
            after = LatencyModel(tgt, prof, table=table)
            # the table without its graph fit: what the per-part sum alone gets (reported, not used)
            parts = LatencyModel(tgt, prof, table=LatencyTable(table.data, graph_fit=False)) \
                if table.has_graph_fit else None
            per_backend = {be: LatencyModel(tgt, prof, table=table, backend=be) for be in backends}
            for pname, prog, path, runs, by_be in _bench_plans(runner, vm, progs, tgt, batches, warmup, iters,
                                                                repeat, out_dir, reuse, skipped, progress,
                                                                min_seconds, backends=backends):
                meas = by_be["numpy"]
                for b in batches:
                    pb, pa = before.estimate(prog, b)["total_s"], after.estimate(prog, b)["total_s"]
                    rows.append({"model": vm.name, "plan": pname, "batch": b, "measured_p50_s": meas[b],
                                 "before_s": pb, "after_s": pa, "ape_before": ape(pb, meas[b]),
                                 "ape_after": ape(pa, meas[b]), "bytes": path.stat().st_size,
                                 "parity_ok": all(bool(run.get("parity", {}).get("ok")) for run in runs),
                                 "repeats_p50_s": [next(r["p50_ms"] / 1e3 for r in run["latency"]
                                                        if int(r["batch"]) == b) for run in runs]})
                    rows[-1]["nodes"] = len(prog.graph["nodes"])
                    if parts is not None:
                        rows[-1]["parts_s"] = parts.estimate(prog, b)["total_s"]
                        rows[-1]["ape_parts"] = ape(rows[-1]["parts_s"], meas[b])
                    for be in backends:
                        if be not in by_be:
                            continue
                        est = per_backend[be].estimate(prog, b)
                        app_rows.append({"model": vm.name, "plan": pname, "batch": b, "backend": be,
                                         "measured_p50_s": by_be[be][b], "after_s": est["total_s"],
                                         "ape_after": ape(est["total_s"], by_be[be][b]),
                                         "measured": bool(est.get("measured")), "source": est["source"],
                                         "numpy_measured_p50_s": meas[b]})
                progress(f"  {vm.name:<10} {pname:<13} " + "  ".join(
                    f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (model {r['before_s'] * 1e3:.3f} -> "
                    f"{r['after_s'] * 1e3:.3f})" for r in rows if r["model"] == vm.name and r["plan"] == pname))
                for be in backends:
                    mine = [r for r in app_rows if r["model"] == vm.name and r["plan"] == pname and r["backend"] == be]
                    if mine:
                        progress(f"  {'':<10} {'':<13} {be}: " + "  ".join(
                            f"b={r['batch']}: {r['measured_p50_s'] * 1e3:.3f} ms (model {r['after_s'] * 1e3:.3f})"
                            for r in mine))
    finally:
        if tmp is not None:
            tmp.cleanup()
    by_backend = {"numpy": {"source": table.describe(), "measured": True, "after": summarize(rows, "ape_after"),
                            "by_batch": {str(b): summarize([r for r in rows if r["batch"] == b], "ape_after")
                                         for b in batches}}}
    for be in backends:
        mine = [r for r in app_rows if r["backend"] == be]
        if not mine:
            by_backend[be] = {"skipped": "no plan could be measured through it",
                              "errors": [x["error"][:200] for x in skipped if x.get("backend") == be][:3]}
            continue
        by_backend[be] = {"source": mine[0]["source"], "measured": all(r["measured"] for r in mine),
                          "plans": len({(r["model"], r["plan"]) for r in mine}),
                          "after": summarize(mine, "ape_after"),
                          "by_batch": {str(b): summarize([r for r in mine if r["batch"] == b], "ape_after")
                                       for b in batches}}
    rep = {"device": runner.name, "target": tgt.name, "emulated": table.emulated,
           "note": EMULATED_NOTE if table.emulated else "native timings",
           "plans": len({(r["model"], r["plan"]) for r in rows}), "batches": batches, "repeat": repeat,
           "iters": iters,
           "before": summarize(rows, "ape_before"), "after": summarize(rows, "ape_after"),
           "after_parts_only": summarize(rows, "ape_parts"), "graph_fit": table.has_graph_fit,
           "by_batch": {str(b): {"before": summarize([r for r in rows if r["batch"] == b], "ape_before"),
                                 "after": summarize([r for r in rows if r["batch"] == b], "ape_after")}
                        for b in batches},
           "by_backend": by_backend, "backend_rows": app_rows,
           "rows": rows, "skipped": skipped, "seconds": time.perf_counter() - t0}
    progress(format_validation(rep))
    return rep


def format_validation(rep: dict) -> str:
    b, a = rep["before"], rep["after"]
    lines = [f"latency model vs measured p50 on {rep['device']} ({rep['plans']} plans x batches "
             f"{','.join(map(str, rep['batches']))}){' [' + EMULATED_NOTE + ']' if rep['emulated'] else ''}",
             f"  before calibration (profile {rep['target']} coefficients): median APE {b['median_ape'] * 100:.1f}%, "
             f"mean {b['mean_ape'] * 100:.1f}%, max {b['max_ape'] * 100:.1f}%",
             f"  after calibration (measured table{' + graph fit' if rep.get('graph_fit') else ''}):  "
             f"median APE {a['median_ape'] * 100:.1f}%, mean {a['mean_ape'] * 100:.1f}%, max {a['max_ape'] * 100:.1f}%"]
    p = rep.get("after_parts_only")
    if p:
        lines.append(f"  (the table's sum of parts without the graph fit: median APE {p['median_ape'] * 100:.1f}%, "
                     f"mean {p['mean_ape'] * 100:.1f}%)")
    by = rep.get("by_backend") or {}
    if by:
        lines.append("  per backend (after calibration; APE over every plan x batch):")
        lines.append(f"    {'backend':<11} {'plans':>5} {'median':>7} {'worst':>7} {'within10%':>9}  estimate")
        for be, v in by.items():
            if "after" not in v:
                lines.append(f"    {be:<11} skipped: {v.get('skipped')}")
                continue
            s = v["after"]
            lines.append(f"    {be:<11} {v.get('plans', rep['plans']):>5} {s['median_ape'] * 100:>6.1f}% "
                         f"{s['max_ape'] * 100:>6.1f}% {s['within_10pct'] * 100:>8.0f}%  {v.get('source')}")
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
                    quick=True if args.quick else None, app_runtimes=bool(getattr(args, "app_runtimes", False)),
                    batches=args.batch, fit=not args.no_fit, validate=args.validate,
                    validate_kwargs={"iters": args.iters, "small": args.small} if args.validate else None)
    table = res["table"]
    from edgecompress_runtime.calibrate import summary
    print(summary(table))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"full results: {args.json}")
    if args.report:
        from .calibration_report import render_html
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(render_html(res))
        print(f"report: {args.report}")
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
    g.add_argument("--no-fit", action="store_true", help="skip the graph fit on probe models (micro-benchmarks "
                                                         "only; faster, less accurate)")
    g.add_argument("--app-runtimes", action="store_true",
                   help="with --device local: a local board venv that also sees this host's LiteRT / ExecuTorch "
                        "runtimes, so their latency is calibrated too (boards over SSH: whatever they have installed)")
    g.add_argument("--validate", action="store_true", help="compile >= 10 DLRM plans, benchmark them on the "
                                                           "device and report the latency model's error")
    g.add_argument("--iters", type=int, default=100, help="with --validate: timed runs per batch (default 100)")
    g.add_argument("--small", action="store_true", help="with --validate: one small model only (faster)")
    g.add_argument("--json", help="write the table and the validation report to this JSON file")
    g.add_argument("--report", help="write an HTML page (predicted vs measured plot, errors per batch size, the "
                                    "graph fit, every measurement) to this file")
    p.set_defaults(fn=calibrate_cmd)
