"""The farm page (``farm.html``): the devices, latency per device and bundle for each batch
size (log scale: tails are often 10-100x the median), bundle size vs p90, every job (``moved``:
done on another device than planned) and the devices taken out of the run, with why.
Drawn from the report dict alone: ``edgecompress farm report farm.json`` redraws it."""
from __future__ import annotations

import time
from pathlib import Path

from . import kit
from .kit import PALETTE, esc

DONE = ("ok", "moved")   # edgecompress.farm.records.DONE (the report kit does not import the farm)


def _colors(report: dict) -> dict[str, str]:
    devs = sorted({j["ran_on"] for j in report["jobs"] if j.get("ran_on")} | set(report["devices"]))
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(devs)}


@kit.styled
def latency_svg(batch: int, rows: list[tuple[str, dict, list[float], str]]) -> str:
    """One row per device and bundle: whisker min..p99, box p50..p90, black tick p50,
    dots the p50 of each repeat; the x axis is logarithmic."""
    fig = kit.figure(7.5, 1.1 + 0.34 * len(rows))
    ax = fig.axes[0]
    for i, (label, r, dots, color) in enumerate(rows[::-1]):
        ax.hlines(i, r["min_ms"], r["p99_ms"], color=color, lw=1.2)
        ax.vlines([r["min_ms"], r["p99_ms"]], i - 0.15, i + 0.15, color=color, lw=1.2)
        ax.barh(i, r["p90_ms"] - r["p50_ms"], left=r["p50_ms"], height=0.55, color=color, alpha=0.35,
                edgecolor=color)
        ax.vlines(r["p50_ms"], i - 0.3, i + 0.3, color="#000", lw=2)
        for d in dots:
            kit.point(ax, d, i, f"{label}: p50 of one repeat {d:.4f} ms", color="#000", markersize=3.5, alpha=0.6)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows[::-1]], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.grid(axis="y", visible=False)
    kit.log_axis(ax, "x")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_title(f"batch {batch}: latency per device and bundle (ms, log scale)")
    return kit.figure_svg(fig, f"farm-batch-{batch}", alt=f"latency per device and bundle at batch {batch}")


@kit.styled
def size_vs_p90_svg(points: list[tuple[float, float, str, str]], batch: int, colors: dict) -> str:
    """Bundle size vs p90 latency, one point per device and bundle, coloured by device."""
    fig = kit.figure(7.0, 4.0)
    ax = fig.axes[0]
    unit, scale = kit.byte_unit(max(p[0] for p in points))
    for size, p90, dev, bundle in points:
        kit.point(ax, size / scale, p90, f"{dev} / {bundle}: {size:,} B, p90 {p90:.4f} ms", color=colors[dev],
                  markersize=7, alpha=0.85)
    for dev in sorted({p[2] for p in points}):
        ax.plot([], [], "o", color=colors[dev], markersize=7, label=dev)
    for which, values in (("x", [p[0] for p in points]), ("y", [p[1] for p in points])):
        if kit.spans_decades(values):
            kit.log_axis(ax, which)
    ax.set_xlabel(f"bundle size ({unit})")
    ax.set_ylabel(f"p90 at batch {batch} (ms)")
    ax.set_title(f"bundle size vs p90 latency at batch {batch}")
    ax.legend(title="device", fontsize=8, loc="best")
    return kit.figure_svg(fig, "farm-size-p90", alt="bundle size vs p90 latency")


def charts(report: dict) -> list[str]:
    ok_jobs = [j for j in report["jobs"] if j["status"] in DONE and j.get("result")]
    colors = _colors(report)
    batches = sorted({r["batch"] for j in ok_jobs for r in j["result"]["latency"]})
    out = []
    for b in batches:
        rows = []
        for j in sorted(ok_jobs, key=lambda j: (j["ran_on"], Path(j["bundle"]).name)):
            row = next((r for r in j["result"]["latency"] if r["batch"] == b), None)
            if row:
                dots = [rr["p50_ms"] for run in j["result"].get("runs", []) for rr in run["latency"]
                        if rr["batch"] == b]
                flag = "" if row.get("verdict", "stable") == "stable" else f" ({row['verdict'].upper()})"
                rows.append((f"{j['ran_on']} / {Path(j['bundle']).name}{flag}", row, dots, colors[j["ran_on"]]))
        if rows:
            out.append(latency_svg(b, rows))
    if batches:
        b = batches[-1]
        pts = []
        for j in ok_jobs:
            row = next((r for r in j["result"]["latency"] if r["batch"] == b), None)
            size = report["bundles"].get(j["bundle"], {}).get("size_bytes")
            if row and size:
                pts.append((size, row["p90_ms"], j["ran_on"], Path(j["bundle"]).name))
        if pts:
            out.append("<h2>Bundle size vs p90</h2>" + size_vs_p90_svg(pts, b, colors))
    return out


def _diff(v) -> str:
    return f"{v:.1e}" if isinstance(v, (int, float)) else ""


def _short(message: str, limit: int = 240) -> str:
    """Error messages can hold a remote traceback: its end says what went wrong."""
    return message if len(message) <= limit else "…" + message[-limit:]


def tables(report: dict) -> tuple[str, str]:
    devices = kit.table(
        ["device", "address", "target", "status", "ok", "failed", "taken over", "CPU", "governor", "error"],
        [[n, d["address"], d["target"], d["status"], d["jobs_ok"], d["jobs_failed"], d["jobs_taken_over"],
          (d["facts"] or {}).get("cpu_model") or "", ", ".join((d["facts"] or {}).get("governors") or []),
          _short((d["error"] or {}).get("message", ""))] for n, d in report["devices"].items()],
        text_cols=(1, 2, 3, 7, 8, 9), row_classes=[d["status"] for d in report["devices"].values()])
    rows = []
    for j in report["jobs"]:
        res = j.get("result") or {}
        lat = " ".join(f"b={r['batch']}: {r['p50_ms']:.3f}/{r['p90_ms']:.3f}/{r['p99_ms']:.3f}"
                       for r in res.get("latency", []))
        note = (_short((j.get("error") or {}).get("message", "")) if j["status"] == "failed" else
                (f"moved from {', '.join(j['moved_from'])}" if j.get("moved_from") else ""))
        if j.get("resumed"):
            note = "; ".join(x for x in ("from the run resumed", note) if x)
        rows.append([j["device"], j.get("ran_on"), Path(j["bundle"]).name, j["status"], j["attempts"], lat,
                     _diff((res.get("parity") or {}).get("max_abs_diff")), verdict_of(res).upper(),
                     "; ".join(x for x in (_why(res), note) if x)])
    jobs = kit.table(["device", "ran on", "bundle", "status", "attempts", "latency p50/p90/p99 (ms)", "parity",
                      "verdict", "note"], rows, text_cols=(1, 2, 3, 5, 7, 8),
                     row_classes=[j["status"] if j["status"] not in DONE or verdict_of(j.get("result") or {})
                                  in ("stable", "") else "noisy" for j in report["jobs"]])
    return devices, jobs


def verdict_of(res: dict) -> str:
    """The stability verdict of a job's bench result (stable / noisy / unusable; "" without one)."""
    return (res.get("stability") or {}).get("verdict", "")


def _why(res: dict) -> str:
    st = res.get("stability") or {}
    why = [f"b={x['batch']}: {x['text']}" for x in st.get("reasons", []) if x.get("severity") != "note"]
    return _short("; ".join(why)) if why else ""


def _noisy_note(report: dict) -> str:
    bad = [j for j in report["jobs"] if j["status"] in DONE and verdict_of(j.get("result") or {})
           in ("noisy", "unusable")]
    if not bad:
        return ""
    names = ", ".join(f"{j['ran_on']} / {Path(j['bundle']).name} ({verdict_of(j['result'])})" for j in bad)
    return (f"<p class='note'><b>{len(bad)} run(s) not stable</b>: {esc(names)}. Their numbers are shown but "
            "are not a reliable comparison; the reasons are in the verdict column and farm.json.</p>")


def _down_section(report: dict) -> str:
    """The devices taken out of the run (quarantined) and why: their work moved or failed."""
    down = [(n, d.get("error") or {}) for n, d in report["devices"].items() if d["status"] == "down"]
    if not down:
        return ""
    items = "".join(f"<li><b>{esc(n)}</b>: {esc(e.get('type', '?'))}: {esc(_short(e.get('message', '')))}</li>"
                    for n, e in down)
    return f"<h2>Devices down</h2><p class='note'>taken out of this run; their jobs moved or failed</p><ul>{items}</ul>"


def _summary(report: dict) -> str:
    s = report["summary"]
    out = f"{s['ok']}/{s['jobs']} jobs ok"
    if s.get("moved"):
        out += f" &middot; {s['moved']} moved (ran on another device than planned)"
    if s.get("failed"):
        out += f" &middot; {s['failed']} failed"
    if s.get("unfinished"):
        out += f" &middot; {s['unfinished']} never finished (the farm was stopped)"
    return out


def render_html(report: dict) -> str:
    """A self-contained page: summary, devices, latency plots, per-job table (no scripts, no links)."""
    s = report["summary"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["started"])) if report.get("started") else ""
    devices, jobs = tables(report)
    down = f" &middot; devices down: {esc(', '.join(s['devices_down']))}" if s.get("devices_down") else ""
    parts = ["<h1>edgecompress farm report</h1>",
             "<style>tr.moved td{background:#eaf1fb}tr.pending td{background:#f0f0f0}</style>",
             f"<p>{esc(when)} &middot; {_summary(report)} &middot; wall {report.get('wall_s') or 0:.1f} s "
             f"&middot; {report['parallel']} in parallel{down}</p>",
             _noisy_note(report),
             "<h2>Devices</h2>", devices, _down_section(report),
             "<h2>Latency per device and bundle</h2>",
             "<p class='note'>whisker min..p99, box p50..p90, black tick p50, dots: p50 of each repeat; "
             "log scale</p>"]
    parts += charts(report) or ["<p>no successful runs</p>"]
    parts += ["<h2>Jobs</h2>", jobs]
    return kit.page("edgecompress farm report", parts)
