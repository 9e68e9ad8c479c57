"""The compile report: report.json and one self-contained report.html (inline
SVG, no scripts, no network) showing what the planner did and who pays for it."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..graph.io import head_logits, source_predict_fn
from ..metrics import auc, higher_is_better, recall_at_k, retrieval_ranks, torch_predict_fn

# --- slices: who pays for the compression ---------------------------------------


def _field_index(ds, words):
    names = [n.lower() for n in (ds.meta.get("field_names") or [])]
    for w in words:
        for i, n in enumerate(names):
            if w in n:
                return i, names[i]
    return None, None


def _ctr_slices(ds, train, predict_before, predict_after) -> list[dict]:
    sparse = np.asarray(ds.inputs.get("sparse")) if "sparse" in ds.inputs else None
    if sparse is None or sparse.ndim != 2:
        return []
    vocab = (ds.vocab or {}).get("sparse") or [int(sparse[:, j].max()) + 1 for j in range(sparse.shape[1])]
    order = list(np.argsort(vocab)[::-1])
    item, item_name = _field_index(ds, ("item", "movie", "ad"))
    user, user_name = _field_index(ds, ("user",))
    if item is None:
        item, item_name = int(order[0]), f"field {int(order[0])} (largest vocabulary)"
    if user is None and len(order) > 1:
        user = int(order[1]) if int(order[1]) != item else None
        user_name = f"field {user} (2nd largest vocabulary)" if user is not None else None
    label = np.asarray(ds.label)
    s0, s1 = predict_before(ds.inputs), predict_after(ds.inputs)
    tr = np.asarray(train.inputs["sparse"]) if train is not None and "sparse" in train.inputs else sparse
    out = []
    for idx, name, kinds in ((item, item_name, ("cold", "popular")), (user, user_name, ("light", "heavy"))):
        if idx is None:
            continue
        counts = np.bincount(tr[:, idx], minlength=int(vocab[idx]))
        c = counts[np.clip(sparse[:, idx], 0, len(counts) - 1)]
        cut = np.median(c)
        for kind, mask in ((kinds[0], c <= cut), (kinds[1], c > cut)):
            if mask.sum() < 20 or len(np.unique(label[mask])) < 2:
                continue
            before, after = auc(label[mask], s0[mask]), auc(label[mask], s1[mask])
            out.append({"slice": f"{kind} ({name}: train count {'<=' if kind == kinds[0] else '>'} {cut:g})",
                        "rows": int(mask.sum()), "metric": "auc", "before": before, "after": after,
                        "delta": after - before})
    return out


def _retrieval_slices(data, predict_before, predict_after) -> list[dict]:
    r0 = retrieval_ranks(predict_before, data)
    r1 = retrieval_ranks(predict_after, data)
    n_train = np.array([len(x) for x in data.train_items_by_user])[data.test_user]
    pop = np.bincount(np.asarray(data.train.inputs["item_id"]), minlength=data.num_items)[data.test_item]
    out = []
    for name, values, kinds in (("users by train interactions", n_train, ("light", "heavy")),
                                ("held-out item popularity", pop, ("cold", "popular"))):
        cut = np.median(values)
        for kind, mask in ((kinds[0], values <= cut), (kinds[1], values > cut)):
            if mask.sum() == 0:
                continue
            b, a = recall_at_k(r0[mask], 10), recall_at_k(r1[mask], 10)
            out.append({"slice": f"{kind} ({name} {'<=' if kind == kinds[0] else '>'} {cut:g})",
                        "rows": int(mask.sum()), "metric": "recall@10", "before": b, "after": a, "delta": a - b})
    return out


# --- SVG ---------------------------------------------------------------------------

def _esc(s) -> str:
    return html.escape(str(s))


def svg_scatter(points, *, xlabel, ylabel, vline=None, vlabel="", width=640, height=360) -> str:
    """points: dicts with x, y, kind in {"point", "front", "chosen"}, title."""
    if not points:
        return "<p>no plans</p>"
    xs = [p["x"] for p in points] + ([vline] if vline else [])
    ys = [p["y"] for p in points]
    x0, x1 = 0.0, max(xs) * 1.08
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.1 or abs(y1) * 0.01 or 0.01
    y0, y1 = y0 - pad, y1 + pad
    L, R, T, B = 70, 20, 20, 50

    def px(x):
        return L + (x - x0) / (x1 - x0) * (width - L - R)

    def py(y):
        return height - B - (y - y0) / (y1 - y0) * (height - T - B)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="plot">',
             f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="#fafafa" stroke="#ccc"/>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{px(xv):.1f}" y="{height - B + 16}" font-size="11" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{L - 6}" y="{py(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.4g}</text>')
    parts.append(f'<text x="{(L + width - R) / 2}" y="{height - 12}" font-size="12" text-anchor="middle">{_esc(xlabel)}</text>')
    parts.append(f'<text x="16" y="{(T + height - B) / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(T + height - B) / 2})">{_esc(ylabel)}</text>')
    front = sorted([p for p in points if p["kind"] in ("front", "chosen")], key=lambda p: p["x"])
    if len(front) > 1:
        d = " ".join(f"{px(p['x']):.1f},{py(p['y']):.1f}" for p in front)
        parts.append(f'<polyline points="{d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    if vline:
        parts.append(f'<line x1="{px(vline):.1f}" y1="{T}" x2="{px(vline):.1f}" y2="{height - B}" stroke="#d62728" '
                     f'stroke-dasharray="6,4"/><text x="{px(vline) + 4:.1f}" y="{T + 14}" font-size="11" '
                     f'fill="#d62728">{_esc(vlabel)}</text>')
    for p in sorted(points, key=lambda p: p["kind"] == "chosen"):
        color, r = {"point": ("#999", 3.5), "front": ("#1f77b4", 4.5), "chosen": ("#d62728", 7)}[p["kind"]]
        parts.append(f'<circle cx="{px(p["x"]):.1f}" cy="{py(p["y"]):.1f}" r="{r}" fill="{color}">'
                     f'<title>{_esc(p.get("title", ""))}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(rows, *, label, vline=None, vlabel="", width=640, unit="") -> str:
    """Horizontal bars: rows of (name, value)."""
    if not rows:
        return "<p>nothing to show</p>"
    bar_h, L, R = 18, 260, 80
    height = 20 + bar_h * len(rows) + 30
    vmax = max([abs(v) for _, v in rows] + ([vline] if vline else []) + [1e-12])
    lo = min(0.0, min(v for _, v in rows))
    span = vmax - lo if vmax - lo > 0 else 1.0

    def px(v):
        return L + (v - lo) / span * (width - L - R)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="plot">']
    for i, (name, v) in enumerate(rows):
        y = 20 + i * bar_h
        x_a, x_b = sorted((px(0), px(v)))
        parts.append(f'<text x="{L - 6}" y="{y + 13}" font-size="11" text-anchor="end">{_esc(name)}</text>')
        parts.append(f'<rect x="{x_a:.1f}" y="{y + 2}" width="{max(x_b - x_a, 1):.1f}" height="{bar_h - 5}" '
                     f'fill="{"#1f77b4" if v >= 0 else "#2ca02c"}"><title>{_esc(name)}: {v:.4g}{unit}</title></rect>')
        parts.append(f'<text x="{x_b + 4:.1f}" y="{y + 13}" font-size="10">{v:.3g}{_esc(unit)}</text>')
    if vline:
        parts.append(f'<line x1="{px(vline):.1f}" y1="14" x2="{px(vline):.1f}" y2="{height - 24}" stroke="#d62728" '
                     f'stroke-dasharray="6,4"/><text x="{px(vline) + 4:.1f}" y="12" font-size="11" fill="#d62728">'
                     f'{_esc(vlabel)}</text>')
    parts.append(f'<text x="{(L + width - R) / 2}" y="{height - 6}" font-size="12" text-anchor="middle">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(head, rows) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# --- the report ------------------------------------------------------------------------

def build_report(*, result, program, model, data, train, metric, latency_model) -> dict:
    from edgecompress_runtime.backends.numpy_graph import GraphExecutor
    params = {k: v.to_runtime(k) for k, v in program.params.items()}
    ex = GraphExecutor(program.graph, params, program.constants)

    def after_fn(feeds):
        return np.asarray(head_logits(ex.run(feeds), program.outputs, program.metric_output),
                          dtype=np.float32).reshape(-1)
    before_fn = source_predict_fn(model, program.call, program.outputs, program.metric_output) \
        if program.call is not None else torch_predict_fn(model)
    if hasattr(data, "test_user"):
        slices = _retrieval_slices(data, before_fn, after_fn)
    else:
        slices = _ctr_slices(data, train, before_fn, after_fn)
    tables, layers = [], []
    for name, p in program.params.items():
        role = program.roles.get(name)
        info = p.info or {}
        if role == "embedding":
            tables.append({"table": name, "rows": p.shape[0], "dim": p.shape[1],
                           "bits": p.bits if p.kind == "rowwise" else 32,
                           "keep_ratio": info.get("keep_ratio", 1.0), "stored_dim": info.get("dim", p.shape[1]),
                           "bytes": p.nbytes, "bytes_fp32": p.shape[0] * p.shape[1] * 4})
        elif role == "linear":
            layers.append({"layer": name, "in": p.shape[1], "out": p.shape[0],
                           "out_before": (info.get("width") or [p.shape[0]])[0],
                           "in_before": (info.get("in_width") or [p.shape[1]])[0],
                           "precision": "int8" if p.kind == "channel_int8" else p.kind,
                           "activations": p.act or "fp32"})
    search = result.search
    lat_b = result.budgets.get("latency_batch")
    est = latency_model.estimate(program, lat_b)
    return {
        "schema": "edgecompress.report/1",
        "bundle": str(result.path), "target": result.target, "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "size_bytes": result.size_bytes, "fp32_param_bytes": result.param_bytes.get("fp32"),
        "metrics_before": result.metrics_before, "metrics_after": result.metrics_after,
        "budgets": result.budgets, "latency_estimate_s": result.latency_estimate,
        "formats": result.formats, "data_roles": result.data_roles,
        "latency_by_op_s": est["by_op"], "latency_model": est["source"],
        "plan": [c.to_dict() for c in result.plan],
        "tables": tables, "layers": layers, "slices": slices,
        "search": None if search is None else {
            "seconds": search.seconds, "evaluated": len(search.candidates),
            "chosen": search.chosen.summary(),
            "candidates": [dict(c.summary(), pareto=c in search.front, feasible=c in search.feasible)
                           for c in search.candidates],
            "sensitivity": search.sensitivity,
        },
    }


def render_html(rep: dict) -> str:
    m = rep["metric"]
    b = rep["budgets"]
    parts = [f"<h1>edgecompress report: {_esc(Path(rep['bundle']).name)}</h1>",
             f"<p>target <b>{_esc(rep['target'])}</b>; bundle {rep['size_bytes']:,} bytes "
             f"(fp32 weights {rep['fp32_param_bytes']:,} bytes); {m} before "
             f"<b>{rep['metrics_before'][m]:.4f}</b>, after <b>{rep['metrics_after'][m]:.4f}</b> "
             f"(Δ {rep['metrics_after'][m] - rep['metrics_before'][m]:+.4f}).</p>"]
    mem = f"{b['memory_bytes']:,} bytes" if b.get("memory_bytes") else "none"
    lat_budget = f"{b['latency_s'] * 1e3:.3g} ms at batch {b['latency_batch']}" if b.get("latency_s") else "none"
    parts.append(f"<p>budgets: memory {mem}; latency {lat_budget}</p>")
    if rep.get("formats"):
        lb = str(b.get("latency_batch"))
        parts.append("<h2>What ships, per format</h2><p>bytes as the device loads each payload; metrics on the "
                     f"test rows ({_esc((rep.get('data_roles') or {}).get('test', 'data'))}); latency estimated "
                     "for that backend</p>")
        parts.append(_table(
            ["format", "bytes", "memory budget", f"latency at batch {lb} (ms)", f"{m} (test rows)",
             "max |Δ| vs source"],
            [[f, f"{r['bytes']:,}" + ("" if r.get("fits", True) else " (over)"), mem,
              f"{r['latency_estimate_s'].get(lb, float('nan')) * 1e3:.3g} ({_esc(r.get('latency_source', ''))})",
              f"{r['metrics'][m]:.4f}" if r.get("metrics") and m in r["metrics"] else "-",
              f"{r['vs_source']['max_abs_diff']:.2e}" if r.get("vs_source") else "-"]
             for f, r in rep["formats"].items()]))
    s = rep.get("search")
    if s:
        pts = []
        for c in s["candidates"]:
            kind = "chosen" if c["plan"] == s["chosen"]["plan"] else ("front" if c["pareto"] else "point")
            pts.append({"x": c["size_bytes"] / 1e6, "y": c["metric"], "kind": kind,
                        "title": f"{c['describe']}: {c['size_bytes']:,} B, {m} {c['metric']:.4f}, "
                                 f"{c['latency_s'] * 1e3:.3g} ms"})
        parts.append("<h2>Plans searched: size vs metric</h2>")
        parts.append(f"<p>{s['evaluated']} plans in {s['seconds']:.1f} s; blue: Pareto front, red: chosen "
                     f"({_esc(s['chosen']['describe'])}); dashed: memory budget.</p>")
        parts.append(svg_scatter(pts, xlabel="bundle size (MB)", ylabel=m,
                                 vline=(b["memory_bytes"] / 1e6) if b.get("memory_bytes") else None,
                                 vlabel="memory budget"))
        sens_rows = [(f"{t} {k}", v) for t, d in s["sensitivity"].items() for k, v in d.items()
                     if abs(v) < 1]
        parts.append("<h2>Sensitivity (metric loss of one change on top of int8)</h2>")
        parts.append(svg_bars(sorted(sens_rows, key=lambda r: -r[1])[:40], label=f"{m} loss (positive = worse)"))
    lat = rep["latency_by_op_s"]
    parts.append(f"<h2>Latency estimate ({_esc(rep['latency_model'])}) vs budget, batch {b.get('latency_batch')}</h2>")
    rows = sorted(((op, v * 1e3) for op, v in lat.items()), key=lambda r: -r[1])
    rows.append(("total", sum(lat.values()) * 1e3))
    parts.append(svg_bars(rows, label="milliseconds", unit=" ms",
                          vline=(b["latency_s"] * 1e3) if b.get("latency_s") else None, vlabel="latency budget"))
    parts.append(_table(["batch", "estimated latency (ms)"],
                        [[k, f"{v * 1e3:.3f}"] for k, v in rep["latency_estimate_s"].items()]))
    parts.append("<h2>Embedding tables</h2>")
    parts.append(_table(["table", "rows", "dim", "bits", "keep ratio", "stored dim", "bytes", "fp32 bytes"],
                        [[t["table"], t["rows"], t["dim"], t["bits"], t["keep_ratio"], t["stored_dim"],
                          f"{t['bytes']:,}", f"{t['bytes_fp32']:,}"] for t in rep["tables"]]))
    parts.append("<h2>Linear layers</h2>")
    parts.append(_table(["layer", "in (before)", "out (before)", "weights", "activations"],
                        [[l["layer"], f"{l['in']} ({l['in_before']})", f"{l['out']} ({l['out_before']})",
                          l["precision"], l["activations"]] for l in rep["layers"]]))
    parts.append("<h2>Who pays: metric by slice</h2>")
    if rep["slices"]:
        parts.append(_table(["slice", "rows", "metric", "before", "after", "delta"],
                            [[x["slice"], x["rows"], x["metric"], f"{x['before']:.4f}", f"{x['after']:.4f}",
                              f"{x['delta']:+.4f}"] for x in rep["slices"]]))
    else:
        parts.append("<p>no user or item fields to slice by</p>")
    parts.append("<h2>Plan</h2><pre>" + _esc(json.dumps(rep["plan"], indent=1)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}"
             "pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgecompress report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(directory, *, result, program, model, data, train, metric, latency_model, **_) -> dict:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rep = build_report(result=result, program=program, model=model, data=data, train=train, metric=metric,
                       latency_model=latency_model)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    (out / "report.html").write_text(render_html(rep))
    return {"json": out / "report.json", "html": out / "report.html"}


def write_budget_report(directory, *, error, planner, target: str, metric: str) -> dict:
    """The page for a compile no plan could fit: the reason, and every plan measured with
    its bytes per shipped format against the budget, so the user sees how far each is."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cands = sorted(planner.cache.values(), key=planner._bytes)
    formats = list(planner.sizes(cands[0])) if cands else ["numpy"]
    mem, lat = planner.mem, planner.lat
    rows = [{"describe": c.state.describe(), "metric": c.metric, "latency_s": c.latency_s,
             "bytes": planner.sizes(c)} for c in cands]
    rep = {"schema": "edgecompress.budget-report/1", "target": target, "metric": metric, "error": str(error),
           "budgets": {"memory_bytes": mem, "latency_s": lat, "latency_batch": planner.batch},
           "formats": {f: ("exact" if f == "numpy" else planner.format_sizes.how(f)) for f in formats},
           "plans": rows}
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    pts = [{"x": max(r["bytes"].values()) / 1e6, "y": r["metric"], "kind": "point",
            "title": f"{r['describe']}: {max(r['bytes'].values()):,} B, {metric} {r['metric']:.4f}"} for r in rows]

    def cell(n):
        return f"{n:,}" + (" (over)" if mem and n > mem else "")
    parts = [f"<h1>edgecompress: no plan fits {_esc(target)}</h1>", f"<p>{_esc(str(error))}</p>",
             "<h2>Plans measured: largest shipped payload vs metric</h2>",
             svg_scatter(pts, xlabel="largest shipped payload (MB)", ylabel=metric,
                         vline=mem / 1e6 if mem else None, vlabel="memory budget"),
             "<h2>Bytes per shipped format</h2>",
             "<p>" + "; ".join(f"{_esc(f)}: {_esc(h)}" for f, h in rep["formats"].items()) + "</p>",
             _table(["plan", metric, f"latency at batch {planner.batch} (ms)"] + formats,
                    [[r["describe"], f"{r['metric']:.4f}",
                      f"{r['latency_s'] * 1e3:.3g}" + (" (over)" if lat and r["latency_s"] > lat else "")]
                     + [cell(r["bytes"][f]) for f in formats] for r in rows])]
    (out / "report.html").write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgecompress "
                                     "report</title></head><body>" + "".join(parts) + "</body></html>")
    return {"json": out / "report.json", "html": out / "report.html"}
