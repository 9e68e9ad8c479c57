"""The compile report page (``report.html``) and the page of a compile no plan could fit,
drawn from the dicts :mod:`edgecompress.plan.report` builds (``report.json``)."""
from __future__ import annotations

from pathlib import Path

from . import kit
from .kit import BLUE, GREEN, GREY, PALETTE, RED, esc

MAX_SENSITIVITY_BARS = 25


def _size_axis(ax, sizes: list[float]) -> float:
    """Fit a size axis to ``sizes`` (bytes): log when they span decades. Returns bytes per unit."""
    unit, scale = kit.byte_unit(max(sizes))
    if kit.spans_decades(sizes):
        kit.log_axis(ax, "x")
    ax.set_xlabel(f"bundle size ({unit})" + (", log scale" if ax.get_xscale() == "log" else ""))
    return scale


def _budget_label(b: dict) -> str | None:
    mem = b.get("memory_bytes")
    if not mem:
        return None
    unit, scale = kit.byte_unit(mem)
    return f"memory budget {mem / scale:g} {unit}"


@kit.styled
def pareto_svg(rep: dict) -> str:
    """Every plan searched: size vs metric, the front, the chosen plan, fp32 and each format."""
    s, m, b = rep["search"], rep["metric"], rep["budgets"]
    cands = s["candidates"]
    fig = kit.figure(7.5, 4.4)
    ax = fig.axes[0]
    scale = _size_axis(ax, [c["size_bytes"] for c in cands] + [f["bytes"] for f in (rep.get("formats") or {}).values()])
    for c in cands:
        front_pt = c["pareto"]
        kit.point(ax, c["size_bytes"] / scale, c["metric"],
                  f"{c['describe']}: {c['size_bytes']:,} B, {m} {c['metric']:.4f}, {c['latency_s'] * 1e3:.3g} ms",
                  color=BLUE if front_pt else GREY, markersize=5 if front_pt else 4, alpha=0.9, zorder=3)
    ax.plot([], [], "o", color=GREY, markersize=4, label=f"plans searched ({len(cands)})")
    ax.plot([], [], "o", color=BLUE, markersize=5, label="Pareto front (size, latency, metric)")
    fp32 = next((c for c in cands if not c["plan"]), None)
    if fp32:
        kit.point(ax, fp32["size_bytes"] / scale, fp32["metric"], f"fp32: {fp32['size_bytes']:,} B", color="#222",
                  marker="s", markersize=7, zorder=4)
        ax.annotate("fp32", (fp32["size_bytes"] / scale, fp32["metric"]), textcoords="offset points",
                    xytext=(-8, 8), ha="right", fontsize=9)
    for i, (fmt, r) in enumerate((rep.get("formats") or {}).items()):
        if r.get("metrics") and m in r["metrics"]:
            ax.plot([r["bytes"] / scale], [r["metrics"][m]], "D", mfc="none", mec=PALETTE[(i + 2) % len(PALETTE)],
                    markersize=9, mew=1.5, label=f"{fmt} payload ({r['bytes']:,} B)", zorder=5)
    chosen = s["chosen"]
    kit.point(ax, chosen["size_bytes"] / scale, chosen["metric"], f"chosen: {chosen['describe']}", color=RED,
              markersize=10, zorder=6)
    ax.plot([], [], "o", color=RED, markersize=8, label="chosen")
    ax.annotate("chosen", (chosen["size_bytes"] / scale, chosen["metric"]), textcoords="offset points",
                xytext=(24, -30), color=RED, fontweight="bold",
                arrowprops={"arrowstyle": "-", "color": RED, "lw": 0.8})
    if _budget_label(b):
        kit.budget_line(ax, b["memory_bytes"] / scale, _budget_label(b))
    ax.set_ylabel(f"{m} on the test rows" + (" (higher is better)" if rep.get("higher_is_better") else ""))
    ax.set_title(f"{s['evaluated']} plans searched: size vs {m}")
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return kit.figure_svg(fig, "pareto", alt=f"plans searched: bundle size vs {m}")


@kit.styled
def hbars_svg(rows: list[tuple[str, float]], name: str, *, xlabel: str, title: str,
              budget: float | None = None, budget_label: str = "") -> str:
    """Horizontal bars, largest on top; positive blue, negative green; optional budget line."""
    fig = kit.figure(7.5, 0.9 + 0.26 * len(rows))
    ax = fig.axes[0]
    labels, values = [r[0] for r in rows][::-1], [r[1] for r in rows][::-1]
    ax.barh(range(len(rows)), values, color=[BLUE if v >= 0 else GREEN for v in values], height=0.7)
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    ax.grid(axis="y", visible=False)
    ax.axvline(0, color="#444", lw=0.8)
    ax.bar_label(ax.containers[0], fmt="%.3g", fontsize=8, padding=3)
    ax.margins(x=0.12)
    if budget:
        kit.budget_line(ax, budget, budget_label)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return kit.figure_svg(fig, name, alt=title)


def sensitivity_part(rep: dict) -> list[str]:
    s, m = rep["search"], rep["metric"]
    rows = [(f"{t} {k}", v) for t, d in s["sensitivity"].items() for k, v in d.items() if abs(v) < 1]
    nonzero = sorted((r for r in rows if r[1] != 0), key=lambda r: -r[1])
    shown = nonzero[:MAX_SENSITIVITY_BARS]
    note = (f"{len(rows)} single changes measured; {len(rows) - len(nonzero)} changed nothing measurable and "
            f"are not shown" + (f"; the {len(shown)} largest of {len(nonzero)} shown" if len(shown) < len(nonzero)
                                else "") + ". Positive = worse.")
    parts = ["<h2>Sensitivity (metric loss of one change on top of int8)</h2>", f"<p class='note'>{esc(note)}</p>"]
    if shown:
        parts.append(hbars_svg(shown, "sensitivity", xlabel=f"{m} loss (positive = worse)",
                               title=f"{m} loss per table and change"))
    return parts


def formats_part(rep: dict, mem: str) -> list[str]:
    m, b = rep["metric"], rep["budgets"]
    lb = str(b.get("latency_batch"))
    return ["<h2>What ships, per format</h2><p class='note'>bytes as the device loads each payload; metrics on "
            f"the test rows ({esc((rep.get('data_roles') or {}).get('test', 'data'))}); latency estimated for "
            "that backend</p>",
            kit.table(["format", "bytes", "memory budget", f"latency at batch {lb} (ms)", f"{m} (test rows)",
                       "max |Δ| vs source"],
                      [[f, f"{r['bytes']:,}" + ("" if r.get("fits", True) else " (over)"), mem,
                        f"{r['latency_estimate_s'].get(lb, float('nan')) * 1e3:.3g} ({r.get('latency_source', '')})",
                        f"{r['metrics'][m]:.4f}" if r.get("metrics") and m in r["metrics"] else "-",
                        f"{r['vs_source']['max_abs_diff']:.2e}" if r.get("vs_source") else "-"]
                       for f, r in rep["formats"].items()])]


def latency_part(rep: dict) -> list[str]:
    b, lat = rep["budgets"], rep["latency_by_op_s"]
    rows = sorted(((op, v * 1e3) for op, v in lat.items()), key=lambda r: -r[1])
    rows.insert(0, ("total", sum(lat.values()) * 1e3))
    budget = b["latency_s"] * 1e3 if b.get("latency_s") else None
    return [f"<h2>Latency estimate ({esc(rep['latency_model'])}) vs budget, batch {esc(b.get('latency_batch'))}</h2>",
            hbars_svg(rows, "latency", xlabel="estimated milliseconds at batch " + str(b.get("latency_batch")),
                      title="estimated latency per op", budget=budget,
                      budget_label=f"latency budget {budget:g} ms" if budget else ""),
            kit.table(["batch", "estimated latency (ms)"],
                      [[k, f"{v * 1e3:.3f}"] for k, v in rep["latency_estimate_s"].items()])]


def _settings(step: dict) -> str:
    def show(v):
        return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return "; ".join(f"{k} = {show(v)}" for k, v in step.items() if k not in ("pass", "version"))


def plan_part(plan: list[dict]) -> list[str]:
    if not plan:
        return ["<h2>Plan</h2><p>no passes: the model ships in fp32</p>"]
    return ["<h2>Plan</h2><p class='note'>the passes applied, in order (replay with <code>plan=</code>)</p>",
            kit.table(["step", "pass", "settings"], [[i + 1, p.get("pass", "?"), _settings(p)]
                                                    for i, p in enumerate(plan)], text_cols=(1, 2))]


def model_parts(rep: dict) -> list[str]:
    parts = ["<h2>Embedding tables</h2>",
             kit.table(["table", "rows", "dim", "bits", "keep ratio", "stored dim", "bytes", "fp32 bytes"],
                       [[t["table"], t["rows"], t["dim"], t["bits"], t["keep_ratio"], t["stored_dim"],
                         f"{t['bytes']:,}", f"{t['bytes_fp32']:,}"] for t in rep["tables"]]),
             "<h2>Linear layers</h2>",
             kit.table(["layer", "in (before)", "out (before)", "weights", "activations"],
                       [[x["layer"], f"{x['in']} ({x['in_before']})", f"{x['out']} ({x['out_before']})",
                         x["precision"], x["activations"]] for x in rep["layers"]]),
             "<h2>Who pays: metric by slice</h2>"]
    if rep["slices"]:
        parts.append(kit.table(["slice", "rows", "metric", "before", "after", "delta"],
                               [[x["slice"], x["rows"], x["metric"], f"{x['before']:.4f}", f"{x['after']:.4f}",
                                 f"{x['delta']:+.4f}"] for x in rep["slices"]]))
    else:
        parts.append("<p>no user or item fields to slice by</p>")
    return parts


def training_part(t: dict | None) -> list[str]:
    """Training-aware moves (compile(train_budget=...)): per move what it bought and what it cost."""
    if not t:
        return []
    m, post = t["metric"], t.get("post_training")
    fp32 = f"fp32: {t['fp32']['bytes']:,} B, {esc(m)} {t['fp32']['metric']:.4f}"
    if post:
        fp32 += f"; best post-training plan that fits: {esc(post['describe'])}, {post['bytes']:,} B, " \
                f"{esc(m)} {post['metric']:.4f}"
    head = (f"{esc(t['reason'])}. Budget {t['budget_s']:g} s, {t['spent_s']:.1f} s spent. {fp32}. "
            f"{esc(t['stopped'])} Metrics on the validation rows.")

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)
    return ["<h2>Training-aware moves</h2>", f"<p class='note'>{head}</p>",
            kit.table(["move", "status", "bytes", "x vs fp32", f"Δ{m} vs fp32", "training (s)", "all (s)", "note"],
                      [[r["move"], r["status"], num(r["bytes"], ","), num(r["ratio_vs_fp32"], ".1f"),
                        num(r["delta_metric"], "+.4f"), f"{r['train_s']:.1f}", f"{r['wall_s']:.1f}", r["why"]]
                       for r in t["moves"]], text_cols=(0, 1, 7))]


def render_html(rep: dict) -> str:
    """``report.html`` from ``report.json``'s dict."""
    m, b = rep["metric"], rep["budgets"]
    before, after = rep["metrics_before"][m], rep["metrics_after"][m]
    mem = f"{b['memory_bytes']:,} bytes" if b.get("memory_bytes") else "none"
    lat = f"{b['latency_s'] * 1e3:.3g} ms at batch {b['latency_batch']}" if b.get("latency_s") else "none"
    parts = [f"<h1>edgecompress report: {esc(Path(rep['bundle']).name)}</h1>",
             f"<p>target <b>{esc(rep['target'])}</b>; bundle {rep['size_bytes']:,} bytes "
             f"(fp32 weights {rep['fp32_param_bytes']:,} bytes); {esc(m)} before <b>{before:.4f}</b>, after "
             f"<b>{after:.4f}</b> (Δ {after - before:+.4f}).</p>",
             f"<p>budgets: memory {mem}; latency {lat}</p>"]
    if rep.get("formats"):
        parts += formats_part(rep, mem)
    parts += plan_part(rep.get("plan") or [])
    s = rep.get("search")
    if s:
        parts.append("<h2>Plans searched: size vs metric</h2>")
        parts.append(f"<p class='note'>{s['evaluated']} plans in {s['seconds']:.1f} s; blue: Pareto front, red: "
                     f"chosen ({esc(s['chosen']['describe'])}); dashed: memory budget. Hover a point for its "
                     "plan.</p>")
        parts.append(pareto_svg(rep))
        parts += sensitivity_part(rep)
        parts += training_part(s.get("training"))
    parts += latency_part(rep)
    parts += model_parts(rep)
    return kit.page("edgecompress report", parts)


@kit.styled
def budget_svg(rep: dict) -> str:
    """Every plan measured when none fits: largest shipped payload vs metric, the smallest
    marked, the memory budget as a line (or a note when it is far off the data)."""
    metric, b, plans, mem = rep["metric"], rep["budgets"], rep["plans"], rep["budgets"].get("memory_bytes")
    fig = kit.figure(7.5, 4.2)
    ax = fig.axes[0]
    sizes = [max(p["bytes"].values()) for p in plans]
    scale = _size_axis(ax, sizes)
    ax.set_xlabel(ax.get_xlabel().replace("bundle size", "largest shipped payload"))
    for p, size in zip(plans, sizes):
        kit.point(ax, size / scale, p["metric"], f"{p['describe']}: {size:,} B, {metric} {p['metric']:.4f}",
                  color=GREY, markersize=5)
    best = min(range(len(plans)), key=lambda i: sizes[i])
    kit.point(ax, sizes[best] / scale, plans[best]["metric"], f"smallest: {plans[best]['describe']}",
              color=RED, markersize=9)
    ax.annotate("smallest plan", (sizes[best] / scale, plans[best]["metric"]), textcoords="offset points",
                xytext=(8, 8), color=RED)
    if mem:
        kit.budget_line(ax, mem / scale, _budget_label(b))
    ax.set_ylabel(metric)
    ax.set_title(f"{len(plans)} plans: none fits")
    return kit.figure_svg(fig, "budget", alt="plans measured against the memory budget")


def render_budget_html(rep: dict) -> str:
    """The page of a compile no plan could fit (``edgecompress.budget-report/1``): every plan
    measured, its largest shipped payload against the memory budget."""
    metric, b, plans = rep["metric"], rep["budgets"], rep["plans"]
    formats, mem, lat = list(rep["formats"]), b.get("memory_bytes"), b.get("latency_s")
    parts = [f"<h1>edgecompress: no plan fits {esc(rep['target'])}</h1>", f"<p>{esc(rep['error'])}</p>",
             "<h2>Plans measured: largest shipped payload vs metric</h2>"]
    if plans:
        parts.append(budget_svg(rep))

    def cell(n):
        return f"{n:,}" + (" (over)" if mem and n > mem else "")
    parts += ["<h2>Bytes per shipped format</h2>",
              "<p>" + "; ".join(f"{esc(f)}: {esc(h)}" for f, h in rep["formats"].items()) + "</p>",
              kit.table(["plan", metric, f"latency at batch {b.get('latency_batch')} (ms)"] + formats,
                        [[p["describe"], f"{p['metric']:.4f}",
                          f"{p['latency_s'] * 1e3:.3g}" + (" (over)" if lat and p["latency_s"] > lat else "")]
                         + [cell(p["bytes"][f]) for f in formats] for p in plans], text_cols=(0,))]
    parts += training_part(rep.get("training"))
    return kit.page("edgecompress report", parts)
