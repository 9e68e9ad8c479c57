"""Compression quality: plan -> bytes and metric, on synthetic data and MovieLens-100k,
for DLRM (AUC) and two-tower (recall@10), plus compile time of a 1M-row DLRM.

Rows per model: fp32, int8 rows (+ int8 Linear), int4 rows (clip search), the
planner at 1/16 of the fp32 bundle. Writes benchmarks/results/compression.json
and prints a table. Run: .venv/bin/python benchmarks/compression.py [--quick]"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edgecompress as ec
from edgecompress.data import movielens_ctr, movielens_retrieval, synthetic_ctr, synthetic_retrieval
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights
from edgecompress.plan.search import BudgetError
from edgecompress.train import train

OUT = Path(__file__).parent / "results" / "compression.json"
DIM = 64


def _embedding_bytes(res) -> int:
    import edgecompress_runtime as ecr
    m = ecr.load(res.path)
    return sum(p.nbytes for n, p in m._backend.params.items() if m.manifest["params"][n]["role"] == "embedding")


def run_model(name, kind, train_ds, eval_data, tmp, epochs, lr):
    torch.manual_seed(0)
    kw = {"embedding_dim": DIM} if kind == "dlrm" else {"embedding_dim": DIM}
    model = model_for_data(kind, train_ds, **kw)
    t0 = time.perf_counter()
    train(model, train_ds, epochs=epochs, batch_size=1024, lr=lr, progress=False)
    train_s = time.perf_counter() - t0
    metric = "auc" if kind == "dlrm" else "recall@10"
    rows = []

    def add(label, res, seconds):
        rows.append({"dataset": name, "model": kind, "plan": label, "embedding_bytes": _embedding_bytes(res),
                     "total_bytes": res.size_bytes, "metric": metric, "value": res.metrics_after[metric],
                     "compile_s": seconds, "describe": res.search.chosen.state.describe() if res.search else label})

    def timed(**kw):
        t = time.perf_counter()
        res = ec.compile(model, target="raspberry-pi-4", data=eval_data, train_data=train_ds, formats=["numpy"],
                         progress=False, **kw)
        return res, time.perf_counter() - t
    fp32, s = timed(output=tmp / f"{name}-{kind}-fp32.ecb", plan=[])
    add("fp32", fp32, s)
    res, s = timed(output=tmp / f"{name}-{kind}-int8.ecb", plan=[EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()])
    add("int8 rows + int8 Linear", res, s)
    res, s = timed(output=tmp / f"{name}-{kind}-int4.ecb",
                   plan=[EmbeddingRowwiseQuant(bits=4, clip_search=True), LinearInt8Weights()])
    add("int4 rows (clip search) + int8 Linear", res, s)
    for frac in (4, 16):
        try:
            res, s = timed(output=tmp / f"{name}-{kind}-plan{frac}.ecb", memory_budget=fp32.size_bytes // frac,
                           latency_budget="1s@64", report=tmp / f"{name}-{kind}-report{frac}")
        except BudgetError as e:       # reported, not hidden
            rows.append({"dataset": name, "model": kind, "plan": f"planner @ 1/{frac} fp32 size",
                         "error": str(e), "budget_bytes": fp32.size_bytes // frac})
            continue
        add(f"planner @ 1/{frac} fp32 size", res, s)
        rows[-1]["budget_bytes"] = fp32.size_bytes // frac
        rows[-1]["within_budget"] = res.size_bytes <= fp32.size_bytes // frac
    base = rows[0]
    for r in rows:
        if "error" in r:
            continue
        r["size_ratio"] = base["total_bytes"] / r["total_bytes"]
        r["embedding_ratio"] = base["embedding_bytes"] / r["embedding_bytes"]
        r["delta"] = r["value"] - base["value"]
        r["train_s"] = train_s
    return rows


def big_compile(tmp) -> dict:
    """Compile time, plan search included, for a DLRM with 1M embedding rows."""
    vocab = (400_000, 250_000, 150_000, 100_000, 60_000, 30_000, 9_000, 1_000)
    data = synthetic_ctr(n=300_000, vocab_sizes=vocab, seed=5)
    tr, te = data.split((0.9, 0.1), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=32)
    train(model, tr, epochs=1, batch_size=2048, lr=3e-3, progress=False)
    t0 = time.perf_counter()
    res = ec.compile(model, target="raspberry-pi-4", data=te, train_data=tr, output=tmp / "big.ecb",
                     formats=["numpy"], progress=False)
    secs = time.perf_counter() - t0
    return {"total_rows": sum(vocab), "dim": 32, "compile_s": secs, "plans_searched": len(res.search.candidates),
            "search_s": res.search.seconds, "size_bytes": res.size_bytes, "describe": res.search.chosen.state.describe(),
            "auc_before": res.metrics_before["auc"], "auc_after": res.metrics_after["auc"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller data, skip the 1M-row compile")
    args = ap.parse_args(argv)
    n = 60_000 if args.quick else 200_000
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        syn = synthetic_ctr(n=n, vocab_sizes=(40000, 20000, 10000, 5000, 2000, 1000, 500, 100), seed=0)
        tr, te = syn.split((0.9, 0.1), seed=0)
        rows += run_model("synthetic", "dlrm", tr, te, tmp, epochs=2, lr=2e-3)
        ml = movielens_ctr()
        tr, te = ml.split((0.9, 0.1), seed=0)
        rows += run_model("movielens-100k", "dlrm", tr, te, tmp, epochs=3, lr=2e-3)
        sr = synthetic_retrieval(num_users=3000, num_items=8000, per_user=30, seed=0)
        rows += run_model("synthetic", "two_tower", sr.train, sr, tmp, epochs=3, lr=3e-3)
        mr = movielens_retrieval()
        rows += run_model("movielens-100k", "two_tower", mr.train, mr, tmp, epochs=3, lr=3e-3)
        big = None if args.quick else big_compile(tmp)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"schema": "edgecompress.bench.compression/1", "embedding_dim": DIM, "rows": rows,
                               "big_compile": big}, indent=1))
    print(f"{'dataset':<15} {'model':<9} {'plan':<38} {'emb bytes':>11} {'total':>11} {'ratio':>6} "
          f"{'metric':>10} {'value':>7} {'delta':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['dataset']:<15} {r['model']:<9} {r['plan']:<38} no plan fits: {r['error'][:120]}")
            continue
        print(f"{r['dataset']:<15} {r['model']:<9} {r['plan']:<38} {r['embedding_bytes']:>11,} {r['total_bytes']:>11,} "
              f"{r['size_ratio']:>5.1f}x {r['metric']:>10} {r['value']:>7.4f} {r['delta']:>+8.4f}")
    if big:
        print(f"1M-row DLRM: compile incl. plan search {big['compile_s']:.1f} s ({big['plans_searched']} plans), "
              f"AUC {big['auc_before']:.4f} -> {big['auc_after']:.4f}, {big['describe']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
