"""A self-contained HTML page for ``edgecompress calibrate --validate --report FILE``:
predicted vs measured latency (log-log, before and after calibration), the errors per
batch size, the graph fit, and every measured plan. Emulated boards get a banner: their
timings describe the emulator, not a device."""
from __future__ import annotations

import html
import math

from .calibrate import EMULATED_NOTE


def _esc(s) -> str:
    return html.escape(str(s))


def svg_predicted_vs_measured(rows: list[dict], *, width: int = 560, height: int = 420) -> str:
    """Log-log scatter: measured p50 (x) vs the model's estimate (y), before (grey) and after
    (red) calibration; the diagonal is a perfect model, the band +-15 %."""
    pts = [(r["measured_p50_s"], r[k], k) for r in rows for k in ("before_s", "after_s") if r.get(k)]
    if not pts:
        return "<p>no measurements</p>"
    lo = math.log10(min(min(p[0], p[1]) for p in pts)) - 0.1
    hi = math.log10(max(max(p[0], p[1]) for p in pts)) + 0.1
    L, R, T, B = 70, 20, 20, 50

    def px(v):
        return L + (math.log10(v) - lo) / (hi - lo) * (width - L - R)

    def py(v):
        return height - B - (math.log10(v) - lo) / (hi - lo) * (height - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="plot">',
           f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="#fafafa" stroke="#ccc"/>']
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if not lo <= math.log10(v) <= hi:
                continue
            label = f"{v * 1e3:g}"
            out.append(f'<text x="{px(v):.1f}" y="{height - B + 16}" font-size="11" text-anchor="middle">{label}</text>')
            out.append(f'<text x="{L - 6}" y="{py(v) + 4:.1f}" font-size="11" text-anchor="end">{label}</text>')
    a, b = 10 ** lo, 10 ** hi
    for f, dash in ((1.0, ""), (1.15, ' stroke-dasharray="4,4"'), (1 / 1.15, ' stroke-dasharray="4,4"')):
        out.append(f'<line x1="{px(a):.1f}" y1="{py(a * f):.1f}" x2="{px(b):.1f}" y2="{py(b * f):.1f}" '
                   f'stroke="#2ca02c"{dash}/>')
    for meas, pred, k in pts:
        color = "#d62728" if k == "after_s" else "#aaa"
        out.append(f'<circle cx="{px(meas):.1f}" cy="{py(pred):.1f}" r="3.5" fill="{color}" fill-opacity="0.8">'
                   f'<title>{"after" if k == "after_s" else "before"}: measured {meas * 1e3:.3f} ms, '
                   f'estimated {pred * 1e3:.3f} ms</title></circle>')
    out.append(f'<text x="{(L + width - R) / 2}" y="{height - 12}" font-size="12" text-anchor="middle">'
               f'measured p50 (ms)</text>')
    out.append(f'<text x="16" y="{(T + height - B) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 16 {(T + height - B) / 2})">latency model estimate (ms)</text>')
    out.append("</svg>")
    return "".join(out)


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def render_html(result: dict) -> str:
    """``result``: what ``calibrate(..., validate=True)`` returns ({"table", "validation", ...})."""
    table, rep = result["table"], result.get("validation") or {}
    board = table.get("board", {})
    emulated = bool(board.get("emulated"))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>edgecompress calibration</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}.emu{background:#fff3cd;border:2px solid #d39e00;"
             "padding:10px;font-weight:bold}</style></head><body>",
             f"<h1>Latency calibration: {_esc(table.get('device'))}</h1>"]
    if emulated:
        parts.append(f"<p class='emu'>{_esc(EMULATED_NOTE)}</p>")
    parts.append(f"<p>{_esc(board.get('machine'))}, {_esc(board.get('cpu_model'))}, {board.get('cpu_count')} cores, "
                 f"Python {_esc(board.get('python'))}, numpy {_esc(board.get('numpy'))}; target "
                 f"<b>{_esc(table.get('target'))}</b>; {'quick' if table.get('quick') else 'full'} grid measured in "
                 f"{table.get('seconds', 0):.1f} s; allocator {_esc((board.get('allocator') or {}).get('allocator'))}."
                 "</p>")
    if rep:
        parts.append(f"<h2>Latency model vs measured p50 ({rep['plans']} plans x batch "
                     f"{', '.join(map(str, rep['batches']))})</h2>")
        parts.append("<table><tr><th>batch</th><th>median APE before</th><th>median APE after</th>"
                     "<th>mean APE after</th></tr>")
        for bs, v in rep["by_batch"].items():
            parts.append(f"<tr><td>{bs}</td><td>{_pct(v['before'].get('median_ape'))}</td>"
                         f"<td>{_pct(v['after'].get('median_ape'))}</td><td>{_pct(v['after'].get('mean_ape'))}</td></tr>")
        parts.append(f"<tr><th>all</th><th>{_pct(rep['before']['median_ape'])}</th>"
                     f"<th>{_pct(rep['after']['median_ape'])}</th><th>{_pct(rep['after']['mean_ape'])}</th></tr></table>")
        if rep.get("after_parts_only"):
            parts.append(f"<p>The table's sum of parts without the graph fit: median APE "
                         f"{_pct(rep['after_parts_only']['median_ape'])}. Before = the target profile's "
                         "coefficients.</p>")
        by = rep.get("by_backend") or {}
        if by:
            parts.append("<h3>Per backend (after calibration)</h3><table><tr><th>backend</th><th>plans</th>"
                         "<th>median APE</th><th>worst APE</th><th>within +-10 %</th><th>estimate</th></tr>")
            for be, v in by.items():
                a = v.get("after") or {}
                if not a:
                    parts.append(f"<tr><td>{_esc(be)}</td><td colspan='5'>skipped: {_esc(v.get('skipped'))}</td></tr>")
                    continue
                parts.append(f"<tr><td>{_esc(be)}</td><td>{v.get('plans', rep['plans'])}</td>"
                             f"<td>{_pct(a.get('median_ape'))}</td><td>{_pct(a.get('max_ape'))}</td>"
                             f"<td>{_pct(a.get('within_10pct'))}</td><td>{_esc(v.get('source'))}</td></tr>")
            parts.append("</table>")
        parts.append("<p>Grey: before calibration, red: after; green: estimate = measured, dashed: +-15 %.</p>")
        parts.append(svg_predicted_vs_measured(rep["rows"]))
    fit = table.get("graph_fit")
    if fit:
        parts.append("<h2>Graph fit (probe models measured whole)</h2><table><tr><th>batch</th><th>method</th>"
                     "<th>scale</th><th>us per node</th><th>held-out APE: parts / scale / scale+node</th>"
                     "<th>probes</th></tr>")
        for p in fit["points"]:
            cv = p.get("cv_median_ape", {})
            parts.append(f"<tr><td>{p['batch']}</td><td>{_esc(p['method'])}</td><td>{p['scale']:.3f}</td>"
                         f"<td>{p['per_node_s'] * 1e6:+.2f}</td><td>{' / '.join(_pct(cv.get(k)) for k in ('parts', 'scale', 'scale+node'))}"
                         f"</td><td>{p['n']}</td></tr>")
        parts.append("</table>")
    for be, bf in (table.get("backend_fits") or {}).items():
        parts.append(f"<h2>{_esc(be)} fit (probe models measured whole through {_esc(be)})</h2><table><tr>"
                     "<th>batch</th><th>method</th><th>scale</th><th>us per node</th><th>fixed us</th>"
                     "<th>held-out APE: parts / scale / scale+node / scale+fixed</th><th>probes</th></tr>")
        for p in bf.get("points", []):
            cv = p.get("cv_median_ape", {})
            parts.append(f"<tr><td>{p['batch']}</td><td>{_esc(p['method'])}</td><td>{p['scale']:.3f}</td>"
                         f"<td>{p['per_node_s'] * 1e6:+.2f}</td><td>{p.get('fixed_s', 0.0) * 1e6:+.1f}</td><td>"
                         f"{' / '.join(_pct(cv.get(k)) for k in ('parts', 'scale', 'scale+node', 'scale+fixed'))}"
                         f"</td><td>{p['n']}</td></tr>")
        parts.append("</table>")
    if rep:
        parts.append("<h2>Every measurement</h2><table><tr><th>model</th><th>plan</th><th>batch</th>"
                     "<th>measured ms</th><th>before ms</th><th>after ms</th><th>APE after</th></tr>")
        for r in rep["rows"]:
            parts.append(f"<tr><td>{_esc(r['model'])}</td><td>{_esc(r['plan'])}</td><td>{r['batch']}</td>"
                         f"<td>{r['measured_p50_s'] * 1e3:.3f}</td><td>{r['before_s'] * 1e3:.3f}</td>"
                         f"<td>{r['after_s'] * 1e3:.3f}</td><td>{_pct(r['ape_after'])}</td></tr>")
        parts.append("</table>")
        if rep.get("skipped"):
            parts.append("<p>Skipped: " + "; ".join(f"{_esc(s['model'])} {_esc(s['plan'])}: {_esc(s['error'][:120])}"
                                                    for s in rep["skipped"]) + "</p>")
    parts.append("</body></html>")
    return "".join(parts)
