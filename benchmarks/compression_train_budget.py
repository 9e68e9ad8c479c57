"""The planner with and without a training budget (issue 16 item 6: compile(..., train_budget=...)), for DLRM
on synthetic data and MovieLens-100k, at 1/16, 1/50 and 1/200 of the fp32 bundle (``--fractions``).

Per memory budget two compiles of the same trained model: the planner with post-training moves only,
and the planner allowed ``--train-budget`` (``TRAIN_BUDGET``; --quick ``QUICK_TRAIN_BUDGET``) for
training-aware moves (plan/training_moves.py). A budget no plan fits is a row with the error
(reported, not hidden). Roles as in compression.py (imported from it): train rows for training,
validation rows for every choice the planner makes, test rows for every figure. Row schema is
compression.py's; training rows add ``qat_train_s`` (the chosen plan's passes' own training seconds),
``train_budget_s``, ``training_spent_s`` (everything the training-aware stage cost, previews and
scoring included), ``training_stopped`` and ``moves`` (each move's status, bytes, validation Δmetric,
training seconds). Writes benchmarks/results/compression_train_budget_{synthetic,movielens}.json and
prints a table. Run: .venv/bin/python benchmarks/compression_train_budget.py [--quick]
[--datasets synthetic,movielens-100k]."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from compression import (DIM, SCHEMA, _embedding_bytes, _finish, _load, code_measured, ctr_roles,  # noqa: E402
                         describe_roles, machine, print_table, targets)

import edgecompress as ec  # noqa: E402
from edgecompress.data import movielens_ctr, synthetic_ctr  # noqa: E402
from edgecompress.data.roles import rows_of  # noqa: E402
from edgecompress.errors import BudgetError  # noqa: E402
from edgecompress.models.zoo import model_for_data  # noqa: E402
from edgecompress.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FRACTIONS = (16, 50, 200)
TRAIN_BUDGET, QUICK_TRAIN_BUDGET = "10m", "3m"


def run(name, tr, va, te, tmp, epochs, lr, budget, fractions=FRACTIONS) -> list:
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=DIM)
    t0 = time.perf_counter()
    train(model, tr, epochs=epochs, batch_size=1024, lr=lr, progress=False)
    train_s = time.perf_counter() - t0
    rows = []

    def compile_row(label, **kw):
        load0, t = _load(), time.perf_counter()
        try:
            res = ec.compile(model, target="raspberry-pi-4", data=te, test_data=te, valid_data=va, train_data=tr,
                             formats=["numpy"], progress=False, output=tmp / f"{name}-{len(rows)}.ecb", **kw)
        except BudgetError as e:
            rows.append({"dataset": name, "model": "dlrm", "plan": label, "error": str(e),
                         "budget_bytes": kw.get("memory_budget")})
            return None
        r = {"dataset": name, "model": "dlrm", "plan": label, "embedding_bytes": _embedding_bytes(res),
             "total_bytes": res.size_bytes, "metric": "auc", "value": res.metrics_after["auc"], "value_rows": "test",
             "n_test": rows_of(te), "source_value": res.metrics_before["auc"], "compile_s": time.perf_counter() - t,
             "load_before": load0, "load_after": _load(), "data_roles": dict(res.data_roles),
             "describe": res.search.chosen.state.describe() if res.search else label,
             "plan_configs": [c.to_dict() for c in res.plan]}
        if res.search:
            fp32 = next((c for c in res.search.candidates if c.label == "fp32"), None)
            r.update(value_valid=res.search.chosen.metric, fp32_valid=fp32.metric if fp32 else None,
                     plans_searched=len(res.search.candidates), search_s=res.search.seconds,
                     budget_bytes=kw.get("memory_budget"))
            rec = res.search.training
            if rec is not None:
                chosen = [m for m in rec.runs if m.plan == res.plan]
                r.update(train_budget_s=rec.budget_s, training_spent_s=rec.spent_s, training_stopped=rec.stopped,
                         training_reason=rec.reason, qat_train_s=chosen[0].train_s if chosen else 0.0,
                         moves=rec.summary()["moves"])
        rows.append(r)
        return res

    fp32 = compile_row("fp32", plan=[])
    for frac in fractions:
        mem = fp32.size_bytes // frac
        compile_row(f"planner @ 1/{frac}, post-training", memory_budget=mem, latency_budget="1s@64")
        compile_row(f"planner @ 1/{frac}, --train-budget {budget}", memory_budget=mem, latency_budget="1s@64",
                    train_budget=budget)
    return _finish(rows, train_s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="60,000 synthetic rows (as compression.py --quick), "
                                                          f"train budget {QUICK_TRAIN_BUDGET}")
    ap.add_argument("--datasets", default="synthetic,movielens-100k", help="comma-separated: synthetic, movielens-100k")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)),
                    help="memory budgets as fractions of the fp32 bundle (default %(default)s)")
    args = ap.parse_args(argv)
    fractions = tuple(int(f) for f in args.fractions.split(","))
    n = 60_000 if args.quick else 200_000
    budget = QUICK_TRAIN_BUDGET if args.quick else TRAIN_BUDGET
    jobs = [("synthetic", "synthetic", lambda: ctr_roles(synthetic_ctr(
                n=n, vocab_sizes=(40000, 20000, 10000, 5000, 2000, 1000, 500, 100), seed=0)), 2, 2e-3),
            ("movielens-100k", "movielens", lambda: ctr_roles(movielens_ctr()), 3, 2e-3)]
    with tempfile.TemporaryDirectory() as t:
        for name, short, make, epochs, lr in jobs:
            if name not in args.datasets.split(","):
                continue
            start, t_all = machine(), time.perf_counter()
            tr, va, te, _ = make()
            rows = run(name, tr, va, te, Path(t), epochs, lr, budget, fractions)
            result = {"schema": SCHEMA, "embedding_dim": DIM, "quick": args.quick, "rows": rows, "big_compile": None,
                      "data_roles": {f"{name}/dlrm": describe_roles(name, "dlrm", tr, va, te)},
                      "targets": targets(rows), "comparison_with_old": {"available": False},
                      "code": code_measured(),
                      "machine": {"start": start, "end_loadavg_1_5_15": _load(), "wall_s": time.perf_counter() - t_all}}
            out = RESULTS / f"compression_train_budget_{short}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1, default=float))
            print_table(result)
            for r in rows:
                if "training_stopped" in r:
                    print(f"  {r['plan']}: {r['training_reason']}; {r['training_spent_s']:.0f} s of "
                          f"{r['train_budget_s']:.0f} s; {r['training_stopped']}")
            print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
