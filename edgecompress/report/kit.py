"""The report kit every page is built from: one escape, one stylesheet, one page shell,
tables from rows, and matplotlib figures as inline SVG.

Pages are self-contained HTML: no scripts, no links, no fonts to fetch. Figures are drawn
with matplotlib's object API (``Figure`` + the SVG canvas), so rendering a page never
touches pyplot or the user's chosen backend. Text stays ``<text>`` (searchable, in the
reader's sans-serif) and ``bbox_inches="tight"`` keeps every label inside the picture.
"""
from __future__ import annotations

import functools
import html
import io
import math
import re

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

RED, BLUE, GREY, GREEN, ORANGE = "#d62728", "#1f77b4", "#9a9a9a", "#2ca02c", "#ff7f0e"
PALETTE = [BLUE, RED, GREEN, ORANGE, "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
DECADES_FOR_LOG = 30          # a size axis goes logarithmic when its values span more than this ratio

CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
       "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}"
       "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
       "font-size:13px;text-align:right;vertical-align:top;white-space:nowrap}th{background:#f0f0f0}"
       "td:first-child,th:first-child{text-align:left}td.text,th.text{text-align:left;white-space:normal}"
       "tr.failed td,tr.down td{background:#fde8e8}tr.noisy td{background:#fff4d6}.note{color:#555;font-size:13px}"
       ".warn{background:#fff3cd;border:2px solid #d39e00;padding:10px;font-weight:bold}"
       "figure{margin:1em 0}svg{display:block;max-width:100%;height:auto}")

_SVG_RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 10,
           "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6",
           "axes.titlesize": 11, "axes.titleweight": "bold"}


class Raw(str):
    """Markup the page built itself: put into a table cell as is, not escaped."""


def esc(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, Raw) else html.escape(str(value))


def table(head: list, rows: list[list], *, text_cols: tuple[int, ...] = (),
          row_classes: list[str] | None = None) -> str:
    """A plain ``<table>``; every cell escaped unless it is :class:`Raw`. Columns in
    ``text_cols`` are left-aligned prose, the rest right-aligned numbers; ``row_classes``
    (e.g. "failed") colour whole rows."""
    th = "".join(f"<th class='text'>{esc(h)}</th>" if i in text_cols else f"<th>{esc(h)}</th>"
                 for i, h in enumerate(head))
    body = []
    for n, r in enumerate(rows):
        cls = f" class='{esc(row_classes[n])}'" if row_classes else ""
        cells = "".join(f"<td class='text'>{esc(c)}</td>" if i in text_cols else f"<td>{esc(c)}</td>"
                        for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, parts: list[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def styled(draw):
    """Run a function that draws a figure under the kit's style, whatever the user's rcParams
    say (matplotlib reads them as each artist is made)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_SVG_RC):
            return draw(*args, **kwargs)
    return wrapper


def figure(width_in: float = 7.5, height_in: float = 4.0) -> Figure:
    """A figure with one axes on no global backend (the SVG canvas is attached when saved);
    draw on it inside a :func:`styled` function."""
    fig = Figure(figsize=(width_in, height_in))
    fig.add_subplot()
    fig.ec_tips = {}
    return fig


def point(ax, x: float, y: float, tip: str, **style) -> None:
    """One marker with a hover tooltip (``<title>``); round markers are written as ``<circle>``."""
    fig = ax.figure
    gid = f"ecpt{len(fig.ec_tips)}"
    style.setdefault("marker", "o")
    fig.ec_tips[gid] = (tip, style["marker"] == "o")
    ax.plot([x], [y], linestyle="none", gid=gid, **style)


def plain_number(v: float, _pos=None) -> str:
    return f"{v:g}"


def log_axis(ax, which: str = "x") -> None:
    """Logarithmic, ticks at 1-2-5 per decade, labels as plain numbers (no 10^k)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def spans_decades(values) -> bool:
    vals = [v for v in values if v and v > 0]
    return len(vals) > 1 and max(vals) / min(vals) > DECADES_FOR_LOG


def byte_unit(largest: float) -> tuple[str, float]:
    """The unit a size axis reads best in: (name, bytes per unit)."""
    for name, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if largest >= scale:
            return name, scale
    return "B", 1.0


def budget_line(ax, value: float, label: str, *, axis: str = "x") -> None:
    """The budget as a dashed line when it falls near the data; otherwise a note in the
    corner saying where it is, so the axes stay fitted to the data."""
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    log = (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log"

    def pos(v):
        return math.log(v) if log else v
    span = pos(hi) - pos(lo)
    outside = max(pos(lo) - pos(value), pos(value) - pos(hi), 0.0) if value > 0 or not log else math.inf
    if outside <= 0.5 * span:
        line = ax.axvline if axis == "x" else ax.axhline
        line(value, color=RED, linestyle="--", linewidth=1.3, label=label)
        pad = (value * 0.05 if log else 0.03 * span)
        lo, hi = min(lo, value - pad), max(hi, value + pad)
        (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
        late = (pos(value) - pos(lo)) / (pos(hi) - pos(lo)) > 0.7      # label on the side with room
        if axis == "x":
            ax.annotate(label, (value, 1.0), xycoords=("data", "axes fraction"), textcoords="offset points",
                        xytext=(-4 if late else 4, -4), ha="right" if late else "left", va="top", color=RED,
                        fontsize=9)
        else:
            ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(-4, 4 if not late else -4), ha="right", va="bottom" if not late else "top",
                        color=RED, fontsize=9)
    else:
        where = "right" if value > hi else "left"
        ax.text(0.99 if where == "right" else 0.01, 0.02, f"{label} (off the {where})",
                transform=ax.transAxes, ha=where, va="bottom", color=RED, fontsize=9)


def figure_svg(fig: Figure, name: str, *, alt: str = "") -> str:
    """The figure as inline ``<svg>`` text, tightly cropped. ``name`` (unique within a page)
    seeds the ids matplotlib writes, so two figures never share a clip path and the same
    figure renders to the same text twice."""
    buf = io.StringIO()
    with matplotlib.rc_context({**_SVG_RC, "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.12, metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = _inline_markers(svg, fig.ec_tips)
    svg = re.sub(r'<g id="(?!ecpt)[^"]*"', "<g", svg)                 # matplotlib's ids repeat across figures
    svg = svg.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    label = f' role="img" aria-label="{esc(alt)}"' if alt else ' role="img"'
    return "<figure>" + svg.replace("<svg ", f"<svg{label} ", 1) + "</figure>"


_USE = re.compile(r'<use xlink:href="#([^"]+)" x="([-\d.e]+)" y="([-\d.e]+)"(?: style="([^"]*)")?\s*/>')


def _inline_markers(svg: str, tips: dict[str, tuple[str, bool]]) -> str:
    """matplotlib draws markers as ``<use>`` of a shared path; pages carry no links, so each
    becomes its own element: a ``<circle>`` with its tooltip for :func:`point` markers, the
    path itself (translated) for the rest."""
    defs = {m.group(1): (m.group(2), m.group(3) or "") for m in re.finditer(
        r'<path id="([^"]+)" d="([^"]*)"(?: style="([^"]*)")?\s*/>', svg)}
    svg = re.sub(r'\s*<defs>\s*(<path id="[^"]+" d="[^"]*"(?: style="[^"]*")?\s*/>\s*)+</defs>', "", svg)

    def as_path(m):
        d, own = defs[m.group(1)]
        return (f'<path d="{d}" transform="translate({m.group(2)} {m.group(3)})" '
                f'style="{m.group(4) or ""}; {own}"/>')

    def tipped(group):
        gid = group.group(1)

        tip, round_ = tips[gid]

        def marker(m):
            d, own = defs[m.group(1)]
            if not round_:
                return f"<g><title>{esc(tip)}</title>{as_path(m)}</g>"
            r = max(abs(float(v)) for v in re.findall(r"-?[\d.]+(?:e-?\d+)?", d))   # the marker's radius
            return (f'<circle cx="{m.group(2)}" cy="{m.group(3)}" r="{r:g}" style="{m.group(4) or ""}; {own}">'
                    f"<title>{esc(tip)}</title></circle>")
        return _USE.sub(marker, group.group(0))
    svg = re.sub(r'<g id="(ecpt\d+)">.*?</g>\s*</g>', tipped, svg, flags=re.S)
    return _USE.sub(as_path, svg)
