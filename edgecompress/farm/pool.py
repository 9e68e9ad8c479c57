"""The farm's pool: every selected device benchmarks every bundle, on local
threads (one per device in parallel); a device that drops out is retried with
exponential backoff, then marked down and its work moved to another device of
the same target profile (its pool). A job done elsewhere than planned is "moved".
Every finished job is appended to the journal (journal.py) as it finishes; a run
given ``resume`` (an earlier run's farm.json, farm.jsonl or directory) carries over
the jobs that run finished (same bundle sha256, same device) and runs the rest."""
from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from ..deploy.connection import SSHSettings
from ..deploy.inventory import Device
from ..errors import EdgecompressError, NoBannerError
from .jobs import BUNDLE_FAULTS, TRANSIENT, Job, error_record
from .journal import Journal, done_jobs
from .records import DONE, build_report, bundle_info, device_table, save_report


class Farm:
    def __init__(self, devices: list[Device], bundles: list, settings: SSHSettings | None = None, *,
                 parallel: int | None = None, retries: int = 2, backoff_s: float = 1.0,
                 bench_kwargs: dict | None = None, board_kwargs: dict | None = None, out_dir=None,
                 progress=print, board_factory=None, resume=None):
        if not devices:
            raise EdgecompressError("the farm has no devices")
        if not bundles:
            raise EdgecompressError("the farm has no bundles")
        self.devices = {d.name: d for d in devices}
        self.bundles = [str(b) for b in bundles]
        self.settings = settings or SSHSettings()
        self.parallel = max(1, min(parallel or len(devices), len(devices)))
        self.retries = retries
        self.backoff_s = backoff_s
        self.bench_kwargs = dict(bench_kwargs or {})
        self.board_kwargs = dict(board_kwargs or {})
        self.out_dir = Path(out_dir) if out_dir else None
        self.progress = progress or (lambda m: None)
        self.board_factory = board_factory or self._ssh_board
        self.jobs: list[Job] = []
        self.queues: dict[str, deque] = {n: deque() for n in self.devices}
        self.pool: dict[str, deque] = {}
        self.down: dict[str, dict] = {}
        self.failures: dict[str, int] = {n: 0 for n in self.devices}
        self.not_before: dict[str, float] = {n: 0.0 for n in self.devices}
        self.busy: set[str] = set()
        self.boards: dict = {}
        self.facts: dict[str, dict] = {}
        self.cond = threading.Condition()
        self.started = self.finished = None
        self.bundle_info = {b: bundle_info(b) for b in self.bundles}
        self.journal: Journal | None = None
        self._journaled: set = set()
        self._journaled_down: set = set()
        done = done_jobs(resume) if resume else {}
        for b in self.bundles:
            for n in self.devices:
                job = Job(id=len(self.jobs), bundle=b, device=n, bundle_sha256=self.bundle_info[b]["sha256"])
                self.jobs.append(job)
                prev = done.get((job.bundle_sha256, n))
                if prev:
                    self._carry(job, prev)
                else:
                    self.queues[n].append(job)
        self.resumed = sum(j.resumed for j in self.jobs)

    def _carry(self, job: Job, prev: dict) -> None:
        """A job an earlier run finished: its outcome, not run again."""
        for k in ("status", "ran_on", "attempts", "moved_from", "error", "result", "seconds"):
            setattr(job, k, prev.get(k, getattr(job, k)))
        job.resumed = True
        if job.ran_on:
            self.facts[job.ran_on] = (job.result or {}).get("board", {})

    def _ssh_board(self, device: Device):
        from ..deploy.ssh_board import SSHBoard
        return SSHBoard(device, self.settings, **self.board_kwargs)

    def kind(self, name: str) -> str:
        """The pool a device belongs to: its target profile (untargeted devices stand alone)."""
        return self.devices[name].target or f"device:{name}"

    # ------------------------------------------------------------------ scheduling

    def _pick(self):
        now = time.monotonic()
        for n in self.devices:
            if n in self.busy or n in self.down or now < self.not_before[n]:
                continue
            if self.queues[n]:
                return n, self.queues[n].popleft()
            pool = self.pool.get(self.kind(n))
            if pool:
                return n, pool.popleft()
        return None

    def _idle_done(self) -> bool:
        return not self.busy and not any(self.queues.values()) and not any(self.pool.values())

    def _next_wake(self) -> float:
        now = time.monotonic()
        waits = [t - now for n, t in self.not_before.items() if n not in self.down and t > now]
        return max(0.01, min(waits)) if waits else 0.5

    def _worker(self) -> None:
        while True:
            with self.cond:
                while True:
                    pick = self._pick()
                    if pick:
                        name, job = pick
                        self.busy.add(name)
                        job.status = "running"
                        break
                    if self._idle_done():
                        self.cond.notify_all()
                        return
                    self.cond.wait(self._next_wake())
            try:
                self._run(name, job)
            finally:
                with self.cond:
                    self.busy.discard(name)
                    self._save()
                    self.cond.notify_all()

    def _run(self, name: str, job: Job) -> None:
        job.attempts += 1
        job.ran_on = name
        t0 = time.perf_counter()
        label = f"[{name}] {Path(job.bundle).name}" + (f" (work of {job.device})" if job.device != name else "")
        try:
            board = self.boards.get(name)
            if board is None:
                board = self.boards[name] = self.board_factory(self.devices[name])
            res = board.bench(job.bundle, **self.bench_kwargs)
        except BUNDLE_FAULTS as e:
            job.seconds = time.perf_counter() - t0
            with self.cond:
                job.status, job.error = "failed", error_record(e)
                job.result = getattr(e, "result", None)
                self.failures[name] = 0
            self.progress(f"{label}: FAILED ({type(e).__name__}): {e}")
            return
        except BaseException as e:  # noqa: BLE001 - a device's failure must never stop the farm
            job.seconds = time.perf_counter() - t0
            self._device_failed(name, job, e, label)
            if not isinstance(e, Exception):
                raise
            return
        job.seconds = time.perf_counter() - t0
        with self.cond:
            job.status, job.result, job.error = ("ok" if name == job.device else "moved"), res, None
            self.failures[name] = 0
            self.facts[name] = res.get("board", {})
        lat = res["latency"]
        self.progress(f"{label}: {job.status} in {job.seconds:.1f} s: " + ", ".join(
            f"b={r['batch']} p50 {r['p50_ms']:.3f} / p90 {r['p90_ms']:.3f} ms" for r in lat)
            + f", parity {res['parity']['max_abs_diff']:.1e}")

    def _device_failed(self, name: str, job: Job, e: BaseException, label: str) -> None:
        board = self.boards.pop(name, None)
        if board is not None:
            try:
                board.close()
            except Exception:  # noqa: BLE001
                pass
        with self.cond:
            self.failures[name] += 1
            n = self.failures[name]
            transient = isinstance(e, TRANSIENT) and not isinstance(e, NoBannerError)
            if transient and n <= self.retries:
                delay = self.backoff_s * 2 ** (n - 1)
                self.not_before[name] = time.monotonic() + delay
                job.status = "pending"
                self.queues[name].appendleft(job)   # its own queue: the same device retries first
                msg = (f"{label}: {type(e).__name__}: {e} -- retry {n}/{self.retries} in {delay:.1f} s")
            else:
                self.down[name] = error_record(e)
                job.status = "pending"
                moved = [job] + list(self.queues[name])
                self.queues[name].clear()
                kind = self.kind(name)
                for j in moved:
                    j.moved_from.append(name)
                    j.error = error_record(e)
                self.pool.setdefault(kind, deque()).extend(moved)
                alive = [d for d in self.devices if self.kind(d) == kind and d not in self.down]
                msg = (f"[{name}] DOWN after {n} failure(s): {type(e).__name__}: {e} -- "
                       + (f"{len(moved)} job(s) move to {', '.join(alive)} ({kind})" if alive else
                          f"no other device of kind {kind}: {len(moved)} job(s) fail"))
                self._fail_orphans()
            self.cond.notify_all()
        self.progress(msg)

    def _fail_orphans(self) -> None:
        """Jobs in a pool whose kind has no live device left can never run."""
        for kind, pool in self.pool.items():
            if pool and not any(self.kind(d) == kind and d not in self.down for d in self.devices):
                while pool:
                    j = pool.popleft()
                    j.status = "failed"
                    if j.error is None:
                        j.error = {"type": "NoDeviceLeft", "message": f"no device of kind {kind} is up",
                                   "exit_code": 23}

    # ------------------------------------------------------------------ running

    def run(self) -> dict:
        self.started = time.time()
        t0 = time.perf_counter()
        self.progress(f"farm: {len(self.bundles)} bundle(s) x {len(self.devices)} device(s), "
                      f"{self.parallel} in parallel"
                      + (f"; {self.resumed} job(s) done by the run resumed, not run again" if self.resumed else ""))
        if self.out_dir:
            self._start_journal()
        threads = [threading.Thread(target=self._worker, name=f"farm-{i}", daemon=True)
                   for i in range(self.parallel)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        finally:
            for b in list(self.boards.values()):
                try:
                    b.close()
                except Exception:  # noqa: BLE001
                    pass
            self.boards.clear()
            self._finish(t0)
        return self.report()

    def _finish(self, t0: float) -> None:
        """End of a run (also a failed one): the last save, the journal's end line, the page."""
        self.finished = time.time()
        self.wall_s = time.perf_counter() - t0
        with self.cond:
            self._save()
            if self.journal:
                self.journal.append({"type": "end", "finished": self.finished, "wall_s": self.wall_s})
                self.journal.close()
        if self.out_dir:
            from ..report.farm_page import render_html
            (self.out_dir / "farm.html").write_text(render_html(self.report()))

    # ------------------------------------------------------------------ reporting

    def report(self) -> dict:
        return build_report(self)

    def _start_journal(self) -> None:
        header = {"meta": {"started": self.started, "parallel": self.parallel, "retries": self.retries,
                           "bench": self.bench_kwargs},
                  "devices": device_table(self), "bundles": self.bundle_info,
                  "jobs": [Job(j.id, j.bundle, j.device, bundle_sha256=j.bundle_sha256).to_dict()
                           for j in self.jobs]}
        carried = [j for j in self.jobs if j.resumed]
        with self.cond:
            self.journal = Journal(self.out_dir, header, [j.to_dict() for j in carried])
            self._journaled = {j.id for j in carried}

    def _save(self) -> None:
        """Under the lock: append what finished to the journal, then rewrite farm.json."""
        if not self.out_dir:
            return
        if self.journal:
            for n in sorted(set(self.down) - self._journaled_down):
                self.journal.append({"type": "down", "name": n, "error": self.down[n]})
                self._journaled_down.add(n)
            for j in self.jobs:
                if j.id not in self._journaled and (j.status in DONE or j.status == "failed"):
                    self.journal.append({"type": "job", "job": j.to_dict()})
                    self._journaled.add(j.id)
        save_report(self.report(), self.out_dir)
