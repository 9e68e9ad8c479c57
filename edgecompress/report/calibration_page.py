"""The page ``edgecompress calibrate --validate --report FILE`` writes: predicted vs measured
latency (log-log, before and after calibration, with the y = x line and a +-10 % band), the
errors per batch size and backend, the graph fits, and every measured plan. Emulated boards
get a banner: their timings describe the emulator, not a device."""
from __future__ import annotations

from . import kit
from .kit import GREEN, GREY, PALETTE, RED, esc

BAND = 0.10          # the shaded band around y = x: estimates within +-10 % of the measurement


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


@kit.styled
def predicted_vs_measured_svg(rep: dict) -> str:
    """One circle per measurement before (grey) and after (red) calibration; app backends
    (when measured) as triangles."""
    rows = [r for r in rep["rows"] if r.get("before_s") and r.get("after_s")]
    extra = [r for r in rep.get("backend_rows") or [] if r.get("after_s") and r.get("measured_p50_s")]
    if not rows and not extra:
        return "<p>no measurements</p>"
    fig = kit.figure(6.5, 5.2)
    ax = fig.axes[0]
    values = [v * 1e3 for r in rows + extra for v in (r["measured_p50_s"], r.get("before_s") or r["after_s"],
                                                       r["after_s"])]
    lo, hi = min(values) / 1.3, max(values) * 1.3
    line = [lo, hi]
    ax.fill_between(line, [v * (1 - BAND) for v in line], [v * (1 + BAND) for v in line], color=GREEN,
                    alpha=0.15, lw=0, label=f"within ±{BAND * 100:.0f} %")
    ax.plot(line, line, color=GREEN, lw=1.2, label="estimate = measured")
    for key, color, label in (("before_s", GREY, "before calibration (profile)"),
                              ("after_s", RED, "after calibration (measured table)")):
        for r in rows:
            kit.point(ax, r["measured_p50_s"] * 1e3, r[key] * 1e3,
                      f"{label}: {r['model']} {r['plan']} batch {r['batch']}: measured "
                      f"{r['measured_p50_s'] * 1e3:.3f} ms, estimated {r[key] * 1e3:.3f} ms",
                      color=color, markersize=5, alpha=0.85, zorder=3)
        ax.plot([], [], "o", color=color, markersize=5, label=label)
    backends = sorted({r["backend"] for r in extra})
    for i, be in enumerate(backends):
        color = PALETTE[(i + 2) % len(PALETTE)]
        for r in (r for r in extra if r["backend"] == be):
            kit.point(ax, r["measured_p50_s"] * 1e3, r["after_s"] * 1e3,
                      f"{be}: {r['model']} {r['plan']} batch {r['batch']}: measured "
                      f"{r['measured_p50_s'] * 1e3:.3f} ms, estimated {r['after_s'] * 1e3:.3f} ms",
                      color=color, marker="^", markersize=6, alpha=0.85, zorder=3)
        ax.plot([], [], "^", color=color, markersize=6, label=f"{be} (after)")
    kit.log_axis(ax, "x")
    kit.log_axis(ax, "y")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured p50 (ms, log scale)")
    ax.set_ylabel("latency model estimate (ms, log scale)")
    ax.set_title("latency model vs measured p50")
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    return kit.figure_svg(fig, "calibration", alt="latency model estimate vs measured p50")


def _header(table: dict, rep: dict) -> list[str]:
    board = table.get("board", {})
    parts = [f"<h1>Latency calibration: {esc(table.get('device') or rep.get('device') or '')}</h1>"]
    if board.get("emulated") or rep.get("emulated"):
        note = rep.get("note")
        if not note:
            from ..calibrate import EMULATED_NOTE      # at use: calibrate renders this page
            note = EMULATED_NOTE
        parts.append(f"<p class='warn'>{esc(note)}</p>")
    parts.append(f"<p>{esc(board.get('machine'))}, {esc(board.get('cpu_model'))}, {esc(board.get('cpu_count'))} "
                 f"cores, Python {esc(board.get('python'))}, numpy {esc(board.get('numpy'))}; target "
                 f"<b>{esc(table.get('target') or rep.get('target'))}</b>; "
                 f"{'quick' if table.get('quick') else 'full'} grid measured in {table.get('seconds', 0):.1f} s; "
                 f"allocator {esc((board.get('allocator') or {}).get('allocator'))}.</p>")
    return parts


def _validation(rep: dict) -> list[str]:
    parts = [f"<h2>Latency model vs measured p50 ({rep['plans']} plans x batch "
             f"{', '.join(map(str, rep['batches']))})</h2>",
             kit.table(["batch", "median APE before", "median APE after", "mean APE after"],
                       [[bs, _pct(v["before"].get("median_ape")), _pct(v["after"].get("median_ape")),
                         _pct(v["after"].get("mean_ape"))] for bs, v in rep["by_batch"].items()]
                       + [["all", _pct(rep["before"]["median_ape"]), _pct(rep["after"]["median_ape"]),
                           _pct(rep["after"]["mean_ape"])]])]
    if rep.get("after_parts_only"):
        parts.append(f"<p class='note'>The table's sum of parts without the graph fit: median APE "
                     f"{_pct(rep['after_parts_only']['median_ape'])}. Before = the target profile's "
                     "coefficients.</p>")
    by = rep.get("by_backend") or {}
    if by:
        rows = []
        for be, v in by.items():
            a = v.get("after") or {}
            rows.append([be, v.get("plans", rep["plans"]), _pct(a.get("median_ape")), _pct(a.get("max_ape")),
                         _pct(a.get("within_10pct")), v.get("source")] if a else
                        [be, "-", "-", "-", "-", f"skipped: {v.get('skipped')}"])
        parts += ["<h3>Per backend (after calibration)</h3>",
                  kit.table(["backend", "plans", "median APE", "worst APE", "within ±10 %", "estimate"], rows,
                            text_cols=(5,))]
    parts.append(predicted_vs_measured_svg(rep))
    return parts


def _fits(table: dict) -> list[str]:
    parts = []
    fit = table.get("graph_fit")
    if fit:
        parts += ["<h2>Graph fit (probe models measured whole)</h2>",
                  kit.table(["batch", "method", "scale", "µs per node",
                             "held-out APE: parts / scale / scale+node", "probes"],
                            [[p["batch"], p["method"], f"{p['scale']:.3f}", f"{p['per_node_s'] * 1e6:+.2f}",
                              " / ".join(_pct(p.get("cv_median_ape", {}).get(k))
                                         for k in ("parts", "scale", "scale+node")), p["n"]]
                             for p in fit["points"]])]
    for be, bf in (table.get("backend_fits") or {}).items():
        keys = ("parts", "scale", "scale+node", "scale+fixed")
        parts += [f"<h2>{esc(be)} fit (probe models measured whole through {esc(be)})</h2>",
                  kit.table(["batch", "method", "scale", "µs per node", "fixed µs",
                             "held-out APE: " + " / ".join(keys), "probes"],
                            [[p["batch"], p["method"], f"{p['scale']:.3f}", f"{p['per_node_s'] * 1e6:+.2f}",
                              f"{p.get('fixed_s', 0.0) * 1e6:+.1f}",
                              " / ".join(_pct(p.get("cv_median_ape", {}).get(k)) for k in keys), p["n"]]
                             for p in bf.get("points", [])])]
    return parts


def _measurements(rep: dict) -> list[str]:
    parts = ["<h2>Every measurement</h2>",
             kit.table(["model", "plan", "batch", "measured ms", "before ms", "after ms", "APE after"],
                       [[r["model"], r["plan"], r["batch"], f"{r['measured_p50_s'] * 1e3:.3f}",
                         f"{r['before_s'] * 1e3:.3f}", f"{r['after_s'] * 1e3:.3f}", _pct(r["ape_after"])]
                        for r in rep["rows"]])]
    if rep.get("skipped"):
        parts.append("<p class='note'>Skipped: " + "; ".join(
            f"{esc(s['model'])} {esc(s['plan'])}: {esc(s['error'][:120])}" for s in rep["skipped"]) + "</p>")
    return parts


def render_html(result: dict) -> str:
    """``result``: what ``calibrate(..., validate=True)`` returns ({"table", "validation", ...})."""
    table, rep = result["table"], result.get("validation") or {}
    parts = _header(table, rep)
    if rep:
        parts += _validation(rep)
    parts += _fits(table)
    if rep:
        parts += _measurements(rep)
    return kit.page("edgecompress calibration", parts)
