"""Benchmark bundles on many boards at once.

Every selected device benchmarks every bundle. Devices are pooled by target
profile, like TVM's RPC tracker pools devices by key: when a device drops out
(unreachable, connection lost, timed out) it is retried with exponential
backoff; when it keeps failing, or fails in a way retrying cannot fix (host
key, auth, full disk), it is marked down and its remaining work moves to
another device of the same profile. A job whose bundle is at fault (parity)
fails alone. Each outcome is written to ``farm.json`` as it happens, so
nothing finished is lost when a device, or the farm itself, dies.

Reports: a table in the terminal, ``farm.json`` and ``farm.html`` (self-contained,
inline SVG: latency distributions per device and bundle, bundle size vs p90).
"""
from __future__ import annotations

import html
import json
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edgecompress_runtime.errors import BundleError

from ..errors import (ConnectionLostError, EdgecompressError, NoBannerError, ParityError,
                      RemoteTimeoutError, UnreachableError)
from .board import SSHBoard
from .connection import SSHSettings
from .inventory import Device

TRANSIENT = (UnreachableError, ConnectionLostError, RemoteTimeoutError)   # worth retrying
BUNDLE_FAULTS = (ParityError, BundleError)                                 # not the device's fault


@dataclass
class Job:
    id: int
    bundle: str
    device: str                      # assigned device
    status: str = "pending"          # pending | running | ok | failed
    ran_on: str | None = None
    attempts: int = 0
    moved_from: list[str] = field(default_factory=list)
    error: dict | None = None
    result: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _error(e: BaseException) -> dict:
    return {"type": type(e).__name__, "message": str(e),
            "exit_code": getattr(e, "exit_code", 1)}


class Farm:
    def __init__(self, devices: list[Device], bundles: list, settings: SSHSettings | None = None, *,
                 parallel: int | None = None, retries: int = 2, backoff_s: float = 1.0,
                 bench_kwargs: dict | None = None, board_kwargs: dict | None = None, out_dir=None,
                 progress=print, board_factory=None):
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
        self.board_factory = board_factory or (lambda dev: SSHBoard(dev, self.settings, **self.board_kwargs))
        self.jobs: list[Job] = []
        self.queues: dict[str, deque] = {n: deque() for n in self.devices}
        self.pool: dict[str, deque] = {}
        self.down: dict[str, dict] = {}
        self.failures: dict[str, int] = {n: 0 for n in self.devices}
        self.not_before: dict[str, float] = {n: 0.0 for n in self.devices}
        self.busy: set[str] = set()
        self.boards: dict[str, SSHBoard] = {}
        self.facts: dict[str, dict] = {}
        self.cond = threading.Condition()
        self.started = self.finished = None
        for b in self.bundles:
            for n in self.devices:
                job = Job(id=len(self.jobs), bundle=b, device=n)
                self.jobs.append(job)
                self.queues[n].append(job)

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
                job.status, job.error = "failed", _error(e)
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
            job.status, job.result, job.error = "ok", res, None
            self.failures[name] = 0
            self.facts[name] = res.get("board", {})
        lat = res["latency"]
        self.progress(f"{label}: ok in {job.seconds:.1f} s: " + ", ".join(
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
                self.down[name] = _error(e)
                job.status = "pending"
                moved = [job] + list(self.queues[name])
                self.queues[name].clear()
                kind = self.kind(name)
                for j in moved:
                    j.moved_from.append(name)
                    j.error = _error(e)
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
                      f"{self.parallel} in parallel")
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
            self.finished = time.time()
            self.wall_s = time.perf_counter() - t0
            with self.cond:
                self._save()
            if self.out_dir:
                (self.out_dir / "farm.html").write_text(render_html(self.report()))
        return self.report()

    # ------------------------------------------------------------------ reporting

    def report(self) -> dict:
        devices = {}
        for n, d in self.devices.items():
            mine = [j for j in self.jobs if j.device == n]
            ran = [j for j in self.jobs if j.ran_on == n and j.status == "ok"]
            devices[n] = {"address": d.spec, "target": d.target, "tags": list(d.tags),
                          "status": "down" if n in self.down else "up", "error": self.down.get(n),
                          "jobs_ok": sum(j.status == "ok" for j in ran),
                          "jobs_failed": sum(j.status == "failed" and j.ran_on == n for j in self.jobs),
                          "jobs_moved_away": sum(j.ran_on != n and j.status == "ok" for j in mine),
                          "jobs_taken_over": sum(j.device != n for j in ran),
                          "facts": self.facts.get(n, {})}
        bundles = {}
        for b in self.bundles:
            try:
                size = os.path.getsize(b)
            except OSError:
                size = None
            bundles[b] = {"name": Path(b).name, "size_bytes": size}
        ok = sum(j.status == "ok" for j in self.jobs)
        return {"schema": "edgecompress.farm/1", "started": self.started, "finished": self.finished,
                "wall_s": getattr(self, "wall_s", None), "parallel": self.parallel, "retries": self.retries,
                "bench": self.bench_kwargs, "devices": devices, "bundles": bundles,
                "jobs": [j.to_dict() for j in self.jobs],
                "summary": {"jobs": len(self.jobs), "ok": ok, "failed": len(self.jobs) - ok,
                            "devices_down": sorted(self.down)}}

    def _save(self) -> None:
        if not self.out_dir:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.report(), indent=1, default=str)
        fd, tmp = tempfile.mkstemp(prefix=".farm.", dir=self.out_dir)
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, self.out_dir / "farm.json")


def format_table(report: dict) -> str:
    head = ["device", "ran on", "target", "bundle", "status", "size", "first batch p50/p90 ms",
            "last batch p50/p90 ms", "parity", "agree", "note"]
    rows = []
    for j in report["jobs"]:
        res = j.get("result") or {}
        lat = res.get("latency") or []
        size = report["bundles"].get(j["bundle"], {}).get("size_bytes")

        def cell(r):
            return f"b={r['batch']} {r['p50_ms']:.3f}/{r['p90_ms']:.3f}"
        note = ""
        if j["status"] != "ok" and j.get("error"):
            note = f"{j['error']['type']}: {j['error']['message']}"
            note = note if len(note) < 70 else note[:67] + "..."
        elif j["moved_from"]:
            note = f"moved from {', '.join(j['moved_from'])}"
        agree = res.get("agreement", {})
        rows.append([j["device"], j.get("ran_on") or "-", report["devices"][j["device"]]["target"] or "-",
                     Path(j["bundle"]).name, j["status"], f"{size / 1e6:.2f} MB" if size else "-",
                     cell(lat[0]) if lat else "-", cell(lat[-1]) if lat else "-",
                     f"{res['parity']['max_abs_diff']:.1e}" if res.get("parity") else "-",
                     (f"{agree['max_spread'] * 100:.0f}%" if agree.get("repeats", 1) > 1 else "-") if agree else "-",
                     note])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
    s = report["summary"]
    lines.append("")
    lines.append(f"{s['ok']}/{s['jobs']} jobs ok" + (f", devices down: {', '.join(s['devices_down'])}"
                                                      if s["devices_down"] else "")
                 + (f", wall {report['wall_s']:.1f} s" if report.get("wall_s") else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- HTML with inline SVG

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def _box_chart(batch: int, rows: list[tuple[str, dict, list[float], str]]) -> str:
    """Horizontal boxes on a log axis (tails are often 10-100x the median): whisker
    min..p99, box p50..p90, black tick p50, dots the p50 of each repeat."""
    import math
    e = html.escape
    label_w, plot_w, row_h, top = 260, 520, 26, 40
    lo = min(min(r[1]["min_ms"] for r in rows), min((d for r in rows for d in r[2]), default=math.inf))
    hi = max(r[1]["p99_ms"] for r in rows)
    lo_e = math.floor(math.log10(max(lo, 1e-6)))
    hi_e = max(lo_e + 1, math.ceil(math.log10(max(hi, 1e-6))))
    h = top + row_h * len(rows) + 34

    def x(v: float) -> float:
        v = min(max(v, 10.0 ** lo_e), 10.0 ** hi_e)
        return label_w + plot_w * (math.log10(v) - lo_e) / (hi_e - lo_e)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 30}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="16" font-weight="bold">batch {batch}: latency per device and bundle (ms, log scale)</text>',
           f'<text x="10" y="31" fill="#555">whisker min..p99, box p50..p90, black tick p50, dots: p50 of each '
           f'repeat</text>']
    for k in range(lo_e, hi_e + 1):
        v = 10.0 ** k
        out.append(f'<line x1="{x(v):.1f}" y1="{top - 4}" x2="{x(v):.1f}" y2="{h - 28}" stroke="#ddd"/>'
                   f'<text x="{x(v):.1f}" y="{h - 12}" text-anchor="middle">{v:g}</text>')
    for i, (label, r, dots, color) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        out.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{e(label)}</text>')
        out.append(f'<line x1="{x(r["min_ms"]):.1f}" y1="{y:.1f}" x2="{x(r["p99_ms"]):.1f}" y2="{y:.1f}" '
                   f'stroke="{color}"/>')
        for v in (r["min_ms"], r["p99_ms"]):
            out.append(f'<line x1="{x(v):.1f}" y1="{y - 5:.1f}" x2="{x(v):.1f}" y2="{y + 5:.1f}" stroke="{color}"/>')
        out.append(f'<rect x="{x(r["p50_ms"]):.1f}" y="{y - 8:.1f}" '
                   f'width="{max(1.5, x(r["p90_ms"]) - x(r["p50_ms"])):.1f}" '
                   f'height="16" fill="{color}" fill-opacity="0.35" stroke="{color}">'
                   f'<title>{e(label)}: min {r["min_ms"]:.4f}, p50 {r["p50_ms"]:.4f}, p90 {r["p90_ms"]:.4f}, '
                   f'p99 {r["p99_ms"]:.4f} ms</title></rect>')
        out.append(f'<line x1="{x(r["p50_ms"]):.1f}" y1="{y - 8:.1f}" x2="{x(r["p50_ms"]):.1f}" y2="{y + 8:.1f}" '
                   f'stroke="#000" stroke-width="2"/>')
        for d in dots:
            out.append(f'<circle cx="{x(d):.1f}" cy="{y:.1f}" r="2.5" fill="#000" fill-opacity="0.6"/>')
    out.append("</svg>")
    return "\n".join(out)


def _scatter(points: list[tuple[float, float, str, str]], batch: int, colors: dict) -> str:
    """Bundle size (MB) vs p90 latency (ms), one point per device and bundle."""
    e = html.escape
    left, w, top, hgt = 60, 520, 30, 300
    xmax = _nice_max(max(p[0] for p in points) * 1.1)
    ymax = _nice_max(max(p[1] for p in points) * 1.1)
    X = lambda v: left + w * v / xmax        # noqa: E731
    Y = lambda v: top + hgt - hgt * v / ymax  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + w + 200}" height="{top + hgt + 50}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="18" font-weight="bold">bundle size vs p90 latency at batch {batch}</text>',
           f'<line x1="{left}" y1="{top + hgt}" x2="{left + w}" y2="{top + hgt}" stroke="#000"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + hgt}" stroke="#000"/>',
           f'<text x="{left + w / 2}" y="{top + hgt + 40}" text-anchor="middle">bundle size (MB)</text>',
           f'<text x="14" y="{top + hgt / 2}" transform="rotate(-90 14 {top + hgt / 2})" '
           f'text-anchor="middle">p90 (ms)</text>']
    for i in range(6):
        xv, yv = xmax * i / 5, ymax * i / 5
        out.append(f'<text x="{X(xv):.1f}" y="{top + hgt + 16}" text-anchor="middle">{xv:.3g}</text>'
                   f'<text x="{left - 6}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>'
                   f'<line x1="{left}" y1="{Y(yv):.1f}" x2="{left + w}" y2="{Y(yv):.1f}" stroke="#eee"/>')
    for size, p90, dev, bundle in points:
        out.append(f'<circle cx="{X(size):.1f}" cy="{Y(p90):.1f}" r="5" fill="{colors[dev]}" fill-opacity="0.8">'
                   f'<title>{e(dev)} / {e(bundle)}: {size:.2f} MB, p90 {p90:.4f} ms</title></circle>')
    for i, (dev, c) in enumerate(colors.items()):
        y = top + 10 + 18 * i
        out.append(f'<circle cx="{left + w + 20}" cy="{y}" r="5" fill="{c}"/>'
                   f'<text x="{left + w + 30}" y="{y + 4}">{e(dev)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _fmt_diff(v) -> str:
    return f"{v:.1e}" if isinstance(v, (int, float)) else ""


def render_html(report: dict) -> str:
    """A self-contained page: summary, per-job table, inline SVG plots (no scripts, no links)."""
    e = html.escape
    ok_jobs = [j for j in report["jobs"] if j["status"] == "ok" and j.get("result")]
    devs = sorted({j["ran_on"] for j in ok_jobs})
    colors = {d: _COLORS[i % len(_COLORS)] for i, d in enumerate(devs)}
    charts = []
    batches = sorted({r["batch"] for j in ok_jobs for r in j["result"]["latency"]})
    for b in batches:
        rows = []
        for j in sorted(ok_jobs, key=lambda j: (j["ran_on"], Path(j["bundle"]).name)):
            row = next((r for r in j["result"]["latency"] if r["batch"] == b), None)
            if row:
                dots = [rr["p50_ms"] for run in j["result"].get("runs", []) for rr in run["latency"]
                        if rr["batch"] == b]
                rows.append((f"{j['ran_on']} / {Path(j['bundle']).name}", row, dots, colors[j["ran_on"]]))
        if rows:
            charts.append(_box_chart(b, rows))
    if batches:
        b = batches[-1]
        pts = []
        for j in ok_jobs:
            row = next((r for r in j["result"]["latency"] if r["batch"] == b), None)
            size = report["bundles"].get(j["bundle"], {}).get("size_bytes")
            if row and size:
                pts.append((size / 1e6, row["p90_ms"], j["ran_on"], Path(j["bundle"]).name))
        if pts:
            charts.append(_scatter(pts, b, colors))
    dev_rows = "".join(
        f"<tr><td>{e(n)}</td><td>{e(d['address'])}</td><td>{e(str(d['target']))}</td><td>{e(d['status'])}</td>"
        f"<td>{d['jobs_ok']}</td><td>{d['jobs_failed']}</td><td>{d['jobs_taken_over']}</td>"
        f"<td>{e((d['facts'] or {}).get('cpu_model') or '')}</td>"
        f"<td>{e(', '.join((d['facts'] or {}).get('governors') or []))}</td>"
        f"<td>{e((d['error'] or {}).get('message', ''))}</td></tr>"
        for n, d in report["devices"].items())
    job_rows = ""
    for j in report["jobs"]:
        res = j.get("result") or {}
        lat = " ".join(f"b={r['batch']}: {r['p50_ms']:.3f}/{r['p90_ms']:.3f}/{r['p99_ms']:.3f}"
                       for r in res.get("latency", []))
        job_rows += (f"<tr class='{e(j['status'])}'><td>{e(j['device'])}</td><td>{e(str(j.get('ran_on')))}</td>"
                     f"<td>{e(Path(j['bundle']).name)}</td><td>{e(j['status'])}</td><td>{j['attempts']}</td>"
                     f"<td>{e(lat)}</td><td>{_fmt_diff((res.get('parity') or {}).get('max_abs_diff'))}</td>"
                     f"<td>{e((j.get('error') or {}).get('message', '') if j['status'] != 'ok' else '')}</td></tr>")
    s = report["summary"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["started"])) if report.get("started") else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>edgecompress farm report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr.failed td {{ background: #fde8e8; }}
svg {{ display: block; margin: 1.5em 0; }}
</style></head><body>
<h1>edgecompress farm report</h1>
<p>{e(when)} &middot; {s['ok']}/{s['jobs']} jobs ok &middot; wall {report.get('wall_s') or 0:.1f} s &middot;
{report['parallel']} in parallel &middot; latencies in ms (p50/p90/p99)</p>
<h2>Devices</h2>
<table><tr><th>device</th><th>address</th><th>target</th><th>status</th><th>ok</th><th>failed</th>
<th>taken over</th><th>CPU</th><th>governor</th><th>error</th></tr>{dev_rows}</table>
<h2>Latency</h2>
{''.join(charts) or '<p>no successful runs</p>'}
<h2>Jobs</h2>
<table><tr><th>device</th><th>ran on</th><th>bundle</th><th>status</th><th>attempts</th><th>latency</th>
<th>parity</th><th>error</th></tr>{job_rows}</table>
</body></html>
"""
