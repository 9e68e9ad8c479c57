"""The farm's result as a table in the terminal."""
from __future__ import annotations

from pathlib import Path


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
        if j["status"] == "failed" and j.get("error"):
            note = f"{j['error']['type']}: {j['error']['message']}"
            note = note if len(note) < 70 else note[:67] + "..."
        elif j["moved_from"]:
            note = f"moved from {', '.join(j['moved_from'])}"
        if j.get("resumed"):
            note = "; ".join(x for x in ("from the run resumed", note) if x)
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
    lines.append("")
    lines.append(summary_line(report))
    lines += [f"  down: {n}: {why}" for n, why in down_boards(report)]
    return "\n".join(lines)


def summary_line(report: dict) -> str:
    s = report["summary"]
    return (f"{s['ok']}/{s['jobs']} jobs ok"
            + (f", {s['moved']} moved (ran on another device than planned)" if s.get("moved") else "")
            + (f", {s['failed']} failed" if s.get("moved") and s["failed"] else "")
            + (f", {s['unfinished']} never finished (the farm was stopped)" if s.get("unfinished") else "")
            + (f", devices down: {', '.join(s['devices_down'])}" if s["devices_down"] else "")
            + (f", wall {report['wall_s']:.1f} s" if report.get("wall_s") else ""))


def down_boards(report: dict) -> list[tuple[str, str]]:
    """(device, why) for each device taken out of the run (quarantined: its work moved or failed)."""
    out = []
    for n, d in report["devices"].items():
        if d["status"] == "down":
            e = d.get("error") or {}
            why = f"{e.get('type', '?')}: {e.get('message', '')}"
            out.append((n, why if len(why) < 200 else why[:197] + "..."))
    return out
