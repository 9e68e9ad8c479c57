"""The farm on a Ray lab (``edgecompress farm ... --ray HEAD``): the same jobs, journal
and report as the local pool (pool.py), but each job is a Ray task that Ray places
on the lab host (node) reaching its board, where on_node.py benches it.

Placement by resources (declared by ``edgecompress lab start``, lab.py):
- a job on its planned board asks for ``board-name:<name>`` (1 per board: two jobs
  never share a board) and ``board:<profile>``; it cannot be retried by Ray on another
  node (no other node has that board), so ``max_retries=0`` and the driver decides;
- a job moved off a failed board asks only for ``board:<profile>``, with the failed
  boards excluded; the task picks a free board of that kind on its node (a lock file
  per board) and Ray retries it elsewhere (``max_retries``) when its node dies.
A board that fails is retried with backoff, then quarantined for the run (the lab's
state actor learns it, for ``lab status``); a node that dies takes every board it
reached out of the run. Results stream back as they finish (``ray.wait``) into the
journal, so ``--resume`` and ``farm report`` work unchanged. ``same_board``: one board
per profile runs every bundle and nothing moves (A/B comparisons on one board)."""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from pathlib import Path

from ..deploy.connection import SSHSettings, split_spec
from ..deploy.inventory import Device
from ..errors import InventoryError
from .jobs import error_record
from .lab import BOARD, BOARD_NAME, connect, pool, state
from .on_node import run_job
from .pool import Farm

NO_BOARD_LIMIT = 50          # a moved job that finds no free board this many times fails


def _remote_run_job(data, *args):
    import ray
    out = run_job(data, *args)
    out["node"] = ray.util.get_node_ip_address()
    return out


def select_boards(boards: dict, targets=(), names=(), tags=(), same_board: bool = False) -> list[Device]:
    """The pool's boards a run uses, as Devices; asking for what no node offers is refused
    (before any job runs), listing the pool."""
    offered = sorted({b["target"] for b in boards.values() if b.get("target")})
    listing = "; ".join(f"{k}: {', '.join(sorted(n for n, b in boards.items() if b.get('target') == k))}"
                        for k in offered) or "no boards"
    for t in targets:
        if t not in offered:
            raise InventoryError(f"no node of the lab offers a board of profile {t!r} (the pool: {listing})")
    for n in names:
        if n not in boards:
            raise InventoryError(f"no node of the lab offers a board named {n!r} (the pool: {listing})")
    chosen = [b for n, b in sorted(boards.items()) if (not names or n in names)
              and (not targets or b.get("target") in targets) and all(t in b.get("tags", ()) for t in tags)]
    if not chosen:
        raise InventoryError(f"no board of the lab has all of the tags {', '.join(tags)} (the pool: {listing})")
    if same_board:
        first: dict[str, dict] = {}
        for b in chosen:
            first.setdefault(b["target"], b)
        chosen = list(first.values())
    out = []
    for b in chosen:
        user, host, port = split_spec(b["address"])
        out.append(Device(b["name"], host, port=port, user=user, target=b["target"], tags=tuple(b.get("tags", ()))))
    return out


class RayFarm(Farm):
    def __init__(self, address: str, bundles: list, settings: SSHSettings | None = None, *, targets=(), names=(),
                 tags=(), same_board: bool = False, task_retries: int = 3, **kw):
        self.ray = connect(address)
        self.address = address
        self.task_board_factory = kw.get("board_factory")   # runs on the nodes (benchmarks: simulated boards)
        self.lab = pool(self.ray)
        devices = select_boards(self.lab, targets, names, tags, same_board)
        super().__init__(devices, bundles, settings, **kw)
        self.same_board = same_board
        self.task_retries = task_retries
        self.node_of = {n: self.lab[n]["node"] for n in self.devices}
        self.inflight: dict = {}            # ObjectRef -> (job, pinned board or None)
        self.wait_until: dict[int, float] = {}
        self.no_board: dict[int, int] = {}
        self._remotes: dict = {}

    # ------------------------------------------------------------------ submitting

    def _remote(self, kind: str, pinned: str | None):
        key = (kind, pinned)
        if key not in self._remotes:
            res = {BOARD + kind: 1, **({BOARD_NAME + pinned: 1} if pinned else {})}
            self._remotes[key] = self.ray.remote(_remote_run_job).options(
                num_cpus=0, resources=res, max_retries=0 if pinned else self.task_retries)
        return self._remotes[key]

    def _submit(self, job, pinned: str | None) -> None:
        kind = self.devices[job.device].target
        job.status = "running"
        job.attempts += 1
        settings = dataclasses.asdict(self.settings)
        exclude = sorted(set(self.down) | (set(self.lab) - set(self.devices)))   # failed, or not in this run
        ref = self._remote(kind, pinned).remote(
            self.refs[job.bundle], Path(job.bundle).name, job.bundle_sha256, kind, pinned, exclude,
            settings, self.bench_kwargs, self.board_kwargs, self.task_board_factory)
        self.inflight[ref] = (job, pinned)
        if pinned:
            self.busy.add(pinned)

    def _submit_ready(self) -> None:
        now = time.monotonic()
        for n, q in self.queues.items():
            if q and n not in self.busy and n not in self.down and now >= self.not_before[n]:
                self._submit(q.popleft(), n)
        for kind, q in self.pool.items():
            alive = sum(1 for d in self.devices if self.kind(d) == kind and d not in self.down)
            running = sum(1 for j, p in self.inflight.values() if p is None and self.kind(j.device) == kind)
            for job in list(q):
                if running >= alive:
                    break
                if now >= self.wait_until.get(job.id, 0):
                    q.remove(job)
                    self._submit(job, None)
                    running += 1

    # ------------------------------------------------------------------ outcomes

    def _outcome(self, ref) -> None:
        job, pinned = self.inflight.pop(ref)
        if pinned:
            self.busy.discard(pinned)
        try:
            out = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray's own failures: a node died, a worker crashed
            return self._lost(job, pinned, e)
        label = f"[{out.get('ran_on', '?')}@{out.get('node')}] {Path(job.bundle).name}"
        if out["outcome"] == "no_board":
            n = self.no_board[job.id] = self.no_board.get(job.id, 0) + 1
            job.attempts -= 1
            if n >= NO_BOARD_LIMIT:
                job.status, job.error = "failed", {"type": "NoDeviceLeft", "exit_code": 23,
                                                   "message": f"no free board of kind {self.kind(job.device)}"}
            elif pinned:                                # its board is still held (a job of a killed driver)
                job.status = "pending"
                self.queues[pinned].appendleft(job)
                self.not_before[pinned] = time.monotonic() + self.backoff_s / 4
            else:
                self._requeue(job, self.backoff_s / 4)
            return
        job.ran_on, job.seconds = out["ran_on"], out["seconds"]
        if job.ran_on not in self.devices:
            self.devices[job.ran_on] = dataclasses.replace(self.devices[job.device], name=job.ran_on)
            self.failures.setdefault(job.ran_on, 0)
            self.not_before.setdefault(job.ran_on, 0.0)
            self.queues.setdefault(job.ran_on, deque())
        if out["outcome"] == "ok":
            res = out["result"]
            job.status, job.result, job.error = ("ok" if job.ran_on == job.device else "moved"), res, None
            self.failures[job.ran_on] = 0
            self.facts[job.ran_on] = res.get("board", {})
            self.progress(f"{label}: {job.status} in {job.seconds:.1f} s: " + ", ".join(
                f"b={r['batch']} p50 {r['p50_ms']:.3f} ms" for r in res["latency"])
                + f", parity {res['parity']['max_abs_diff']:.1e}")
        elif out["outcome"] == "bundle_fault":
            job.status, job.error, job.result = "failed", out["error"], out.get("result")
            self.progress(f"{label}: FAILED ({out['error']['type']}): {out['error']['message']}")
        else:
            self._board_failed(job, pinned, out["ran_on"], out["error"], out["transient"], label)

    def _requeue(self, job, delay: float) -> None:
        job.status = "pending"
        self.wait_until[job.id] = time.monotonic() + delay
        self.pool.setdefault(self.kind(job.device), deque()).append(job)

    def _board_failed(self, job, pinned, name: str, err: dict, transient: bool, label: str) -> None:
        self.failures[name] = n = self.failures.get(name, 0) + 1
        self._tell_lab(name, err, quarantined=False)
        if transient and n <= self.retries:
            delay = self.backoff_s * 2 ** (n - 1)
            self.not_before[name] = time.monotonic() + delay
            if pinned:
                job.status = "pending"
                self.queues[pinned].appendleft(job)        # the same board retries first
            else:
                self._requeue(job, delay)
            self.progress(f"{label}: {err['type']}: {err['message']} -- retry {n}/{self.retries} in {delay:.1f} s")
            return
        self._quarantine(name, err, [job])

    def _lost(self, job, pinned, e: BaseException) -> None:
        """Ray could not run the task: its node died (a pinned job), or every Ray retry failed."""
        err = error_record(e)
        err["message"] = err["message"].splitlines()[0][:300]
        if pinned is None:
            self.progress(f"[?] {Path(job.bundle).name}: {err['type']} after Ray's retries -- re-queued")
            job.error = err
            if job.attempts > self.retries + self.task_retries + 2:
                job.status = "failed"
            else:
                self._requeue(job, self.backoff_s)
            return
        if pinned in self.down:                    # its board already left the run: the job moves
            job.moved_from.append(pinned)
            job.error = err
            return self._requeue(job, self.backoff_s)
        node = self.node_of.get(pinned)
        gone = [d for d, nd in self.node_of.items() if nd == node and d not in self.down] or [pinned]
        self.progress(f"[{pinned}] node {node} lost ({err['type']}): boards {', '.join(gone)} leave the run")
        for d in gone:
            self._quarantine(d, err, [job] if d == pinned else [])

    def _quarantine(self, name: str, err: dict, jobs: list) -> None:
        self.down[name] = err
        self._tell_lab(name, err, quarantined=True)
        moved = list(jobs) + list(self.queues.get(name, ()))
        self.queues.get(name, deque()).clear()
        kind = self.kind(name)
        for j in moved:
            j.moved_from.append(name)
            j.error = err
            if self.same_board:
                j.status = "failed"                   # pinned for A/B: never moves to another board
            else:
                self._requeue(j, self.backoff_s)
        alive = [d for d in self.devices if self.kind(d) == kind and d not in self.down]
        self.progress(f"[{name}] QUARANTINED: {err['type']}: {err['message'][:160]} -- " + (
            f"{len(moved)} job(s) fail (--same-board)" if self.same_board else
            f"{len(moved)} job(s) move to {kind}" if alive else f"no other board of {kind}: {len(moved)} job(s) fail"))
        if not alive or not any(self.lab.get(d, {}).get("target") == kind and d not in self.down
                                for d in self.lab):
            self._fail_orphans()

    def _tell_lab(self, name: str, err: dict, quarantined: bool) -> None:
        try:
            self.lab_state.report.remote(name, err, quarantined)
        except Exception:  # noqa: BLE001 - the lab's record is informative; the run goes on without it
            pass

    # ------------------------------------------------------------------ running

    def kind(self, name: str) -> str:
        return self.devices[name].target

    def _check_nodes(self) -> None:
        """Boards whose node Ray declared dead leave the run: a job pinned on one would wait forever."""
        alive = set()
        for n in self.ray.nodes():
            if n.get("Alive"):
                alive |= {k[len(BOARD_NAME):] for k in n.get("Resources", {}) if k.startswith(BOARD_NAME)}
        for name in [d for d in self.devices if d not in alive and d not in self.down]:
            err = {"type": "NodeDied", "exit_code": 23,
                   "message": f"the lab host {self.node_of.get(name)} reaching {name} left the cluster"}
            for ref, (job, pinned) in list(self.inflight.items()):
                if pinned == name:
                    self.ray.cancel(ref, force=True)
                    del self.inflight[ref]
                    self.busy.discard(name)
                    job.attempts -= 1
                    self._quarantine(name, err, [job])
                    break
            else:
                self._quarantine(name, err, [])

    def _run_loop(self) -> None:
        self.refs = {b: self.ray.put(Path(b).read_bytes()) for b in self.bundles}
        checked = time.monotonic()
        while True:
            with self.cond:
                if time.monotonic() - checked > 2.0:
                    self._check_nodes()
                    checked = time.monotonic()
                self._submit_ready()
                if not self.inflight and not any(self.queues.values()) and not any(self.pool.values()):
                    return
            if not self.inflight:
                time.sleep(0.05)
                continue
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
            with self.cond:
                for ref in ready:
                    self._outcome(ref)
                self._save()

    def run(self) -> dict:
        self.started = time.time()
        t0 = time.perf_counter()
        self.lab_state = state(self.ray)
        self.lab_state.new_run.remote()
        kinds = sorted({d.target for d in self.devices.values()})
        self.progress(f"farm on Ray lab {self.address}: {len(self.bundles)} bundle(s) x {len(self.devices)} "
                      f"board(s) ({', '.join(kinds)})" + (" pinned, one board per profile" if self.same_board else "")
                      + (f"; {self.resumed} job(s) done by the run resumed, not run again" if self.resumed else ""))
        if self.out_dir:
            self._start_journal()
        try:
            self._run_loop()
        finally:
            for ref in list(self.inflight):
                self.ray.cancel(ref, force=True)
            self._finish(t0)
        return self.report()
