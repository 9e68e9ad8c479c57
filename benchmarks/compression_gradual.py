"""Gradual pruning with retraining (passes/gradual_prune.py) against one-shot pruning at the same
sizes, for DLRM on synthetic data and MovieLens-100k, alone and followed by int4 / int2 rows (clip
search) + int8 Linear.

Per keep setting (rows, dims, neurons kept; ``SETTINGS``) three ways to reach the same shapes:
- one-shot: prune_rows (row frequency) + reduce_dims (truncated SVD) + prune_mlp (magnitude);
- one-shot + fine-tuning: the same, then Distill (the fair "prune once, then retrain" baseline);
- gradual: GradualPrune (masks on the cubic schedule while fine-tuning).
Both trained methods pick their ``GRID`` setting (epochs, lr; gradual also its criterion, magnitude
or first order) on validation rows with fp32 weights; the choice is reused for the quantized variants.
Same loss for both (``DISTILL_WEIGHT`` of it against the source model at temperature 1, the rest labels).
Roles as in compression.py (imported from it): train rows for training, row frequencies and
distillation, validation rows for the one choice above, test rows for every figure. The row
schema is compression.py's (``qat_train_s``: the pruning / fine-tuning pass's own training
seconds, from a separate run of the pass on the lowered model: compile adds export time).
Writes benchmarks/results/compression_gradual_{synthetic,movielens}.json and prints a table.
Run: .venv/bin/python benchmarks/compression_gradual.py [--quick] [--datasets synthetic,movielens-100k]
(--quick: 60,000 synthetic rows as compression.py --quick)."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from compression_methods import _bundle_metric  # noqa: E402
from compression import (DIM, SCHEMA, _embedding_bytes, _finish, _load, code_measured,  # noqa: E402
                         ctr_roles, describe_roles, machine, print_table, targets)

import edgecompress as ec  # noqa: E402
from edgecompress.data import movielens_ctr, synthetic_ctr  # noqa: E402
from edgecompress.data.roles import rows_of  # noqa: E402
from edgecompress.models.zoo import model_for_data  # noqa: E402
from edgecompress.passes import (Distill, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,  # noqa: E402
                                 LinearInt8Weights, MLPNeuronPrune)
from edgecompress.passes.gradual_prune import GradualPrune  # noqa: E402
from edgecompress.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.5), (0.125, 0.25, 0.5))   # rows, dims, neurons kept
# chosen on validation rows for both trained methods (the source model is at its best after its
# training: lr 1e-3 over 2 epochs overfit the synthetic DLRM, test AUC 0.7373 -> 0.729 at keep 0.5)
GRID = ({"epochs": 1.0, "lr": 1e-4}, {"epochs": 1.0, "lr": 1e-3})
CRITERIA = ("magnitude", "first_order")
DISTILL_WEIGHT = 0.5
QUANT = (("", []), (" + int4 rows + int8 Linear", [EmbeddingRowwiseQuant(bits=4, clip_search=True), LinearInt8Weights()]),
         (" + int2 rows + int8 Linear", [EmbeddingRowwiseQuant(bits=2, clip_search=True), LinearInt8Weights()]))


def one_shot(keep) -> list:
    rows, dims, neurons = keep
    plan = [EmbeddingRowPrune(keep_ratio=rows)] if rows < 1 else []
    plan += [EmbeddingDimReduce(dim=int(round(DIM * dims)))] if dims < 1 else []
    return plan + ([MLPNeuronPrune(keep_ratio=neurons)] if neurons < 1 else [])


def gradual(keep, criterion, epochs, lr) -> GradualPrune:
    return GradualPrune(row_keep=keep[0], dim_keep=keep[1], neuron_keep=keep[2], epochs=epochs, lr=lr,
                        distill_weight=DISTILL_WEIGHT, criterion=criterion)


def distill(epochs, lr) -> Distill:
    return Distill(epochs=epochs, time_budget_s=1e9, lr=lr, alpha=1 - DISTILL_WEIGHT, temperature=1.0)


def pass_seconds(model, tr, plan) -> float:
    """The training seconds the plan's training pass records (its own run on the lowered model)."""
    from edgecompress.graph import lower
    from edgecompress.graph.io import CallConvention
    from edgecompress.passes import PassContext, apply_plan
    call = CallConvention.infer(model, tr.inputs)
    prog = lower(model, {k: np.asarray(tr.inputs[k][:8]) for k in call.names}, call)
    apply_plan(prog, plan, PassContext(teacher=model, train_data=tr))
    return sum(e.get("seconds", 0.0) for e in prog.log if e.get("pass") in ("gradual_prune", "distill"))


def run(name, tr, va, te, tmp, epochs, lr) -> tuple[list, dict]:
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=DIM)
    t0 = time.perf_counter()
    train(model, tr, epochs=epochs, batch_size=1024, lr=lr, progress=False)
    train_s = time.perf_counter() - t0
    rows = []

    def compile_(label, plan, extra):
        load0, t = _load(), time.perf_counter()
        res = ec.compile(model, target="raspberry-pi-4", data=te, test_data=te, valid_data=va, train_data=tr,
                         formats=["numpy"], progress=False, plan=plan, seed=0,
                         output=tmp / f"{name}-{len(rows)}.ecb")
        r = {"dataset": name, "model": "dlrm", "plan": label, "embedding_bytes": _embedding_bytes(res),
             "total_bytes": res.size_bytes, "metric": "auc", "value": res.metrics_after["auc"],
             "value_rows": "test", "n_test": rows_of(te), "source_value": res.metrics_before["auc"],
             "compile_s": time.perf_counter() - t, "load_before": load0, "load_after": _load(),
             "describe": label, "data_roles": dict(res.data_roles), **extra}
        rows.append(r)
        print(f"  {label}: {r['total_bytes']:,} B, test AUC {r['value']:.4f}", flush=True)
        return res, r

    def choose(method, candidates, tag):
        """Compile each (label, plan), keep the one with the best validation AUC; the others are
        marked chosen=False (reported apart)."""
        scored = []
        for label, plan in candidates:
            res, r = compile_(f"{label} {tag}", plan, {"method": method, "keep": keep, "plan_json":
                                                       [c.to_dict() for c in plan]})
            r["value_valid_choice"] = _bundle_metric(res.path, va)
            scored.append(r)
        best = max(scored, key=lambda r: r["value_valid_choice"])
        for r in scored:
            r["chosen"] = r is best
        best["qat_train_s"] = pass_seconds(model, tr, candidates[scored.index(best)][1])
        return candidates[scored.index(best)], best
    compile_("fp32", [], {})
    for keep in SETTINGS:
        tag = f"keep rows {keep[0]:g} dims {keep[1]:g} neurons {keep[2]:g}"
        (g_label, g_plan), g_row = choose("gradual", [(f"gradual ({c}, {g['epochs']:g} ep, lr {g['lr']:g})",
                                                      [gradual(keep, c, **g)]) for c in CRITERIA for g in GRID], tag)
        (t_label, t_plan), t_row = choose("one-shot + fine-tune", [(f"one-shot + fine-tune ({g['epochs']:g} ep, lr "
                                                                   f"{g['lr']:g})", one_shot(keep) + [distill(**g)])
                                                                  for g in GRID], tag)
        for qlabel, qplan in QUANT:
            extra = {"keep": keep}
            compile_(f"one-shot {tag}{qlabel}", one_shot(keep) + qplan, {**extra, "method": "one-shot"})
            if qplan:
                compile_(f"{t_label} {tag}{qlabel}", t_plan + qplan,
                         {**extra, "method": "one-shot + fine-tune", "qat_train_s": t_row["qat_train_s"]})
                compile_(f"{g_label} {tag}{qlabel}", g_plan + qplan,
                         {**extra, "method": "gradual", "qat_train_s": g_row["qat_train_s"]})
    unchosen = [r for r in rows if r.get("chosen") is False]
    rows = [r for r in rows if r.get("chosen") is not False]
    return _finish(rows, train_s), {"train_s": train_s, "not_chosen_on_validation": _finish([rows[0]] + unchosen,
                                                                                              train_s)[1:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="60,000 synthetic rows (as compression.py --quick)")
    ap.add_argument("--datasets", default="synthetic,movielens-100k", help="comma-separated: synthetic, movielens-100k")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)        # a loaded 2-core VM stalls torch's 2 OpenMP threads (see tests/compat/models.py)
    n = 60_000 if args.quick else 200_000
    jobs = (("synthetic", lambda: ctr_roles(synthetic_ctr(n=n, vocab_sizes=(40000, 20000, 10000, 5000, 2000, 1000,
                                                                            500, 100), seed=0)), 2, 2e-3, "synthetic"),
            ("movielens-100k", lambda: ctr_roles(movielens_ctr()), 3, 2e-3, "movielens"))
    for name, make, epochs, lr, short in jobs:
        if name not in args.datasets.split(","):
            continue
        start, t_all = machine(), time.perf_counter()
        tr, va, te, _ = make()
        with tempfile.TemporaryDirectory() as t:
            rows, extra = run(name, tr, va, te, Path(t), epochs, lr)
        result = {"schema": SCHEMA, "embedding_dim": DIM, "quick": args.quick, "rows": rows, "big_compile": None,
                  "settings": {"keep": SETTINGS, "grid": GRID, "distill_weight": DISTILL_WEIGHT,
                               "criteria": CRITERIA, "torch_threads": 1},
                  "data_roles": {f"{name}/dlrm": describe_roles(name, "dlrm", tr, va, te),
                                 "value": "test rows; the gradual criterion and the grid setting of both "
                                          "trained methods are chosen on validation rows (value_valid_choice)"},
                  "source_model_checks": {f"{name}/dlrm": {"train_s": extra["train_s"]}},
                  "not_chosen_on_validation": extra["not_chosen_on_validation"],
                  "comparison_with_old": {"available": False}, "targets": targets(rows), "code": code_measured(),
                  "machine": {"start": start, "end_loadavg_1_5_15": _load(), "wall_s": time.perf_counter() - t_all}}
        out = RESULTS / f"compression_gradual_{short}.json"
        out.write_text(json.dumps(result, indent=1))
        print_table(result)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
