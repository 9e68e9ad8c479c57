"""The compile report's facts: report.json (what the planner did, who pays for it: metric by
user/item slice) and the budget report of a compile no plan could fit. The pages are drawn by
:mod:`edgecompress.report.compile_page`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..graph.io import head_logits, source_predict_fn
from ..metrics import auc, higher_is_better, recall_at_k, retrieval_ranks, torch_predict_fn
from ..report.compile_page import render_budget_html, render_html

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


# --- the report ------------------------------------------------------------------------

def build_report(*, result, program, model, data, train, metric, latency_model) -> dict:
    ex = program.executor()

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
                           "bits": _table_bits(p),
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
            # training-aware moves (compile(train_budget=...)): what each bought (bytes, Δmetric) and cost (s)
            "training": None if getattr(search, "training", None) is None else search.training.summary(),
        },
    }


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
           "plans": rows, "training": None if planner.training is None else planner.training.summary()}
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    (out / "report.html").write_text(render_budget_html(rep))
    return {"json": out / "report.json", "html": out / "report.html"}


def _table_bits(p) -> float:
    """Stored bits per table value: row-wise codes and fp16 say so; product-quantized tables
    count their codes and codebooks over the table's values (bits per value, as stored)."""
    if p.kind in ("rowwise", "fp16"):
        return p.bits
    if p.kind == "pq":
        return round(8 * p.nbytes / max(p.shape[0] * p.shape[1], 1), 2)
    return 32
