"""One interface for every board: this machine (``LocalBoard``, a venv of its own)
or a device over SSH (``SSHBoard``). Like Fabric's ``Connection``, the constructor
only records; the connection and the runtime install happen on first use;
``close()`` (or ``with``) ends the session.

    with SSHBoard(resolve("pi@10.0.0.7")) as board:      # or LocalBoard()
        board.install_runtime()
        result = board.bench("dlrm.ecb", batches=(1, 64), repeat=3, cooldown_s=5)

What the calibration uses as well: ``run_runtime(args)``, ``calibrate(flags)``,
``emulation()``, ``backends()``, ``reset()``.

The shared work lives here: one benchmark = ``edgecompress_runtime.board.bench_run``
run in the board's runtime venv (facts and temperatures around the runtime's own
``bench``), repeated with a cooldown, the median run picked, parity checked; every
board returns the same result shape. A transport supplies only the pieces below
("what a transport provides").
"""
from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod

from edgecompress_runtime.board import source

from ..errors import ParityError, RemoteCommandError, RemoteTimeoutError
from . import bench as rbench

log = logging.getLogger("edgecompress.deploy")

_BACKENDS_PY = "import json, edgecompress_runtime.backends as b; print(json.dumps(b.available()))"
# the keys of a deploy a bench result repeats under "deploy"
DEPLOY_KEYS = ("sha256", "size_bytes", "remote_path", "bundle_uploaded", "version", "signed")
# the keys of each repeat a bench result keeps under "runs"
RUN_KEYS = ("latency", "load_s", "first_inference_s", "peak_rss_mb", "parity", "temps_before", "temps_after",
            "loadavg_before", "stability", "rerun")


def _quiet(msg: str) -> None:
    log.info(msg)


class Board(ABC):
    """A board: install the runtime, deploy bundles, benchmark them, ask it facts."""

    name = "board"
    target: str | None = None      # the target profile the board is an instance of
    progress = staticmethod(_quiet)
    _facts: dict | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the session (a later call starts a new one)."""

    def reset(self) -> None:
        """Forget what this session knows about the board (the next step asks it again)."""

    # ------------------------------------------------------------------ what a transport provides

    @abstractmethod
    def install_runtime(self, progress=print) -> dict:
        """Install the runtime (a no-op when this exact one is there); returns what was done,
        with ``version`` (the install's id) and ``installed`` (False: already there)."""

    def deploy(self, bundle, progress=None) -> dict:
        """Install the runtime if needed and make ``bundle`` available on the board; returns
        ``sha256``, ``size_bytes``, ``remote_path``, ``bundle_uploaded``, ``version``,
        ``signed``, ``venv_python``, ``seconds``."""
        return self._guard(self._deploy, bundle, progress or self.progress)

    @abstractmethod
    def _deploy(self, bundle, progress) -> dict:
        """The transport's deploy (``deploy`` wraps it in the board's error handling)."""

    @abstractmethod
    def _exec(self, argv: list[str], *, timeout: float, what: str) -> tuple[int, str, str]:
        """Run ``argv`` on the board: (exit status, stdout, stderr); raises on a timeout."""

    @abstractmethod
    def _python(self) -> str:
        """The Python of the board's runtime venv (installing the runtime when needed)."""

    @abstractmethod
    def _installed_python(self) -> str | None:
        """That Python when this session already knows it is installed, else None."""

    @abstractmethod
    def _system_python(self) -> str:
        """The board's own Python (board programs that run before the runtime is installed use it)."""

    @abstractmethod
    def _scratch(self, name: str) -> str:
        """A path on the board for a file of this session."""

    @abstractmethod
    def _read_bytes(self, path: str) -> bytes:
        """The bytes of a file on the board."""

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Remove a file on the board (no error when it is gone)."""

    @abstractmethod
    def _describe(self) -> dict:
        """``{"name", "address", "target", "tags"}``: which board a result came from."""

    @property
    def label(self) -> str:
        return self.name

    def _guard(self, fn, *args, **kwargs):
        """Run a step (a transport may drop stale session state when it fails)."""
        return fn(*args, **kwargs)

    # ------------------------------------------------------------------ shared

    def run_runtime(self, args: list[str], timeout: float) -> str:
        """``edgecompress-runtime ARGS`` in the board's runtime venv; its stdout."""
        rc, out, err = self._exec([self._python(), "-m", "edgecompress_runtime", *args], timeout=timeout,
                                  what=f"edgecompress-runtime {args[0]}")
        if rc != 0:
            raise RemoteCommandError(f"{self.label}: `edgecompress-runtime {args[0]}` failed on the board: "
                                     f"{(err or out).strip()[-600:]}")
        return out

    def calibrate(self, flags: list[str], timeout: float) -> dict:
        """``edgecompress-runtime calibrate FLAGS`` on the board; the table it writes."""
        remote = self._scratch(f"calibration-{int(time.time() * 1e3)}.json")
        try:
            self.run_runtime(["calibrate", "--json", remote] + list(flags), timeout)
            return json.loads(self._read_bytes(remote).decode())
        finally:
            self._remove(remote)

    def emulation(self) -> dict:
        """Whether the board runs under emulation (qemu-user), with the evidence."""
        return json.loads(self.run_runtime(["calibrate", "--probe"], 120).strip().splitlines()[-1])

    def backends(self) -> list[str]:
        """Backends the board's runtime can run (``edgecompress_runtime.backends.available()`` there)."""
        rc, out, _ = self._exec([self._python(), "-c", _BACKENDS_PY], timeout=120, what="listing the backends")
        try:
            got = json.loads(out.strip().splitlines()[-1]) if rc == 0 else None
        except (ValueError, IndexError):
            got = None
        return [str(b) for b in got] if isinstance(got, list) else ["numpy"]

    def facts(self, refresh: bool = False) -> dict:
        """uname, CPU, cores, governors, temperatures, memory, Python and packages of the board."""
        if self._facts is None or refresh:
            py = self._installed_python()
            argv = [py, "-m", "edgecompress_runtime.board.facts"] if py else \
                [self._system_python(), "-c", source("facts")]
            rc, out, err = self._exec(argv, timeout=60, what="reading board facts")
            try:
                self._facts = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                return {"error": (err or out).strip()[-300:]}
        return self._facts

    def bench(self, bundle, batches=(1, 64, 256), warmup: int = 20, iters: int = 200, backend: str = "auto",
              timeout_s: float = 600.0, repeat: int = 1, cooldown_s: float = 0.0, min_seconds: float = 0.0,
              progress=None, check_parity: bool = True, *, cores: str | None = None, rerun: bool = False,
              force: bool = False, profile: dict | None = None) -> dict:
        """Deploy ``bundle`` and benchmark it ``repeat`` times (separate processes, ``cooldown_s``
        apart); each batch size runs ``iters`` times and at least ``min_seconds``. Returns the
        median run's bench JSON (``latency`` with a verdict per batch size, ``stability``,
        ``parity``, ``bundle``, ...) with ``device``, ``board`` (facts), ``deploy``, ``runs``,
        ``agreement``, ``target_check``, ``seconds``. The median is taken over the stable runs
        when there are any. ``rerun``: a run the machine made noisy or unusable (load, other
        processes, clocks, heat) is run once more after ``cooldown_s``. ``cores``: pin to
        ``big``, ``little`` or ``0-3`` on the board. Refuses (``AgreementError``) a bundle
        compiled for a target the board cannot be, unless ``force`` (see agreement.py). Raises
        ``ParityError`` (carrying ``.result``) when ``check_parity`` and the outputs differ.
        ``profile`` (``{"batch": 256, "runs": 100}``; ``{}``: the largest batch, 100 runs): also the on-device
        op profile of the numpy graph under ``profile`` (edgecompress_runtime/profile.py), with the
        latency model's estimate per op and layer under ``profile["estimate"]``."""
        opts = dict(batches=batches, warmup=warmup, iters=iters, backend=backend, min_seconds=min_seconds,
                    cores=cores, timeout=timeout_s, profile=profile)
        return self._guard(self._bench, bundle, opts, max(1, repeat), cooldown_s, rerun, force,
                           progress or self.progress, check_parity)

    def _bench(self, bundle, opts, repeat, cooldown_s, rerun, force, progress, check_parity) -> dict:
        from .agreement import check_target, gate_prediction
        t0 = time.perf_counter()
        target_check = check_target(bundle, self, force=force)
        for w in target_check["warnings"]:
            progress(f"warning: {w}")
        dep = self._deploy(bundle, progress)
        runs, facts = [], None
        for i in range(repeat):
            if i and cooldown_s:
                rbench.sleep_cooldown(cooldown_s)
            res = self._bench_once(dep, i, **opts)
            if i == 0:
                facts = self._facts = res.pop("board")
            if rerun and rbench.rerun_worthy(res):
                progress(f"run {i + 1} on {self.name} was {rbench.verdict_line(res)}: running it again after a "
                         f"{cooldown_s:g} s cooldown")
                rbench.sleep_cooldown(cooldown_s)
                res = rbench.keep_better(res, self._bench_once(dep, i, **dict(opts, facts=False)), cooldown_s)
            runs.append(res)
            progress(f"run {i + 1}/{repeat} on {self.name}: " + ", ".join(
                f"b={r['batch']} p50 {r['p50_ms']:.3f} ms" for r in res["latency"])
                + f" ({rbench.verdict_line(res)})")
        best = dict(rbench.pick_median(runs))
        best.update({"device": self._describe(), "board": facts, "deploy": {k: dep[k] for k in DEPLOY_KEYS},
                     "runs": [{k: r.get(k) for k in RUN_KEYS} for r in runs], "agreement": rbench.agreement(runs),
                     "target_check": target_check, "deploy_seconds": dep["seconds"],
                     "seconds": time.perf_counter() - t0})
        gate_prediction(best, target_check)
        if best.get("profile"):
            rbench.attach_estimates(best["profile"], bundle, self.target)
        if check_parity:
            for r in runs:
                try:
                    rbench.check_parity(r, dep["sha256"], self.label)
                except ParityError as e:
                    e.result = best
                    raise
        return best

    def _bench_once(self, dep: dict, i: int, *, batches, warmup, iters, backend, min_seconds, timeout,
                    cores=None, facts=None, profile=None) -> dict:
        out = self._scratch(f"bench-{i}.json")
        facts = i == 0 if facts is None else facts
        args = {"bundle": dep["remote_path"], "batch": ",".join(str(b) for b in batches), "warmup": warmup,
                "iters": iters, "backend": backend, "json": out, "min_seconds": min_seconds, "cores": cores,
                "facts": facts, "profile": None if profile is None else dict({"batch": max(batches)}, **profile)}
        try:
            rc, stdout, stderr = self._exec([dep["venv_python"], "-m", "edgecompress_runtime.board.bench_run",
                                             json.dumps(args)], timeout=timeout,
                                            what=f"the benchmark of {dep['remote_path'].rsplit('/', 1)[-1]}")
        except RemoteTimeoutError:
            self._remove(out)
            raise
        return rbench.parse_run(rc, stdout, stderr, self.label, facts=facts)
