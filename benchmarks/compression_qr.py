"""Quotient-remainder embeddings (passes/qr_embedding.py) on DLRM, synthetic data and MovieLens-100k:
what hashing the largest tables buys, alone and under row-wise int8 / int4 quantization.

Rows per data set: fp32; int8 rows + int8 Linear; int4 rows (clip search) + int8 Linear (the
post-training baselines); then per number of collisions m in ``M_GRID`` (tables of >= ``MIN_ROWS``
rows rewritten, the others untouched): QR alone (every other weight fp32), QR + int8 rows + int8
Linear, QR + int4 rows (clip search) + int8 Linear. Per m the training setting (``TRAIN_GRID``: the
least-squares fit only, or trained by distillation + labels on train rows) is the one with the best
validation AUC, measured by running the program with the numpy runtime on the validation rows; the
two quantized rows reuse that setting. Every figure is on test rows (roles as
benchmarks/compression.py: ``ctr_roles``). ``qat_train_s``: the QR pass's training seconds as its
program.log records them (the chosen setting's run).

Writes benchmarks/results/compression_qr_{synthetic,movielens}.json (the row schema of
compression_pq_*.json) and prints a table. Run: .venv/bin/python benchmarks/compression_qr.py
[--quick] [--datasets synthetic,movielens-100k] (--quick: 60,000 synthetic rows, as compression.py)."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgecompress as ec  # noqa: E402
from compression import (DIM, SEED, _embedding_bytes, _finish, _load, code_measured, ctr_roles,  # noqa: E402
                         describe_roles, machine, targets)
from edgecompress.data import movielens_ctr, synthetic_ctr  # noqa: E402
from edgecompress.graph import lower  # noqa: E402
from edgecompress.graph.io import CallConvention  # noqa: E402
from edgecompress.metrics import evaluate_ctr  # noqa: E402
from edgecompress.models.zoo import model_for_data  # noqa: E402
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights, PassContext, apply_pass  # noqa: E402
from edgecompress.passes.qr_embedding import EmbeddingQR  # noqa: E402
from edgecompress.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SCHEMA = "edgecompress.bench.compression/2"
M_GRID = (4, 16, 64)
MIN_ROWS = 500
TRAIN_GRID = ({"epochs": 0.0}, {"epochs": 1.0, "lr": 1e-3}, {"epochs": 2.0, "lr": 3e-3})
QUANT = {"": (), " + int8 rows + int8 Linear": (EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()),
         " + int4 rows (clip search) + int8 Linear": (EmbeddingRowwiseQuant(bits=4, clip_search=True),
                                                      LinearInt8Weights())}
JOBS = {"synthetic": (lambda quick: synthetic_ctr(n=60_000 if quick else 200_000, seed=0,
                                                  vocab_sizes=(40000, 20000, 10000, 5000, 2000, 1000, 500, 100)), 2, 2e-3),
        "movielens-100k": (lambda quick: movielens_ctr(), 3, 2e-3)}


def _program_auc(prog, data) -> float:
    """AUC of ``prog`` run by the numpy runtime (what its bundle computes) on ``data``."""
    ex = prog.executor()
    return evaluate_ctr(lambda f: np.asarray(ex.run(f), dtype=np.float32).reshape(-1), data)["auc"]


class Rows:
    """Compiles plans for one trained model and keeps its rows (compression.py's row schema)."""

    def __init__(self, name, model, tr, va, te, tmp):
        self.name, self.model, self.tr, self.va, self.te, self.tmp = name, model, tr, va, te, tmp
        self.rows = []
        call = CallConvention.infer(model, tr.inputs)
        self.program = lower(model, {k: np.asarray(tr.inputs[k][:8]) for k in call.names}, call)
        self.ctx = PassContext(teacher=model, train_data=tr)

    def compile(self, tag, plan):
        load0, t = _load(), time.perf_counter()
        res = ec.compile(self.model, target="raspberry-pi-4", data=self.te, test_data=self.te, valid_data=self.va,
                         train_data=self.tr, formats=["numpy"], progress=False, plan=list(plan),
                         output=self.tmp / f"{self.name}-{tag}.ecb")
        return res, time.perf_counter() - t, load0

    def add(self, label, res, seconds, load0, **extra):
        self.rows.append({"dataset": self.name, "model": "dlrm", "plan": label, "embedding_bytes": _embedding_bytes(res),
                          "total_bytes": res.size_bytes, "metric": "auc",
                          "value": res.metrics_after["auc"], "value_rows": "test", "n_test": len(self.te),
                          "source_value": res.metrics_before["auc"], "compile_s": seconds, "load_before": load0,
                          "load_after": _load(), "describe": label, "data_roles": dict(res.data_roles), **extra})
        print(f"  {self.name}: {label}: {res.size_bytes:,} B, test AUC {res.metrics_after['auc']:.4f}", flush=True)

    def choose(self, m: int):
        """The TRAIN_GRID setting with the best validation AUC at m collisions: (config, AUC, train s, log)."""
        best = None
        for grid in TRAIN_GRID:
            cfg = EmbeddingQR(collisions=m, min_rows=MIN_ROWS, seed=SEED, **grid)
            prog = apply_pass(self.program.copy(), cfg, ctx=self.ctx)
            v = _program_auc(prog, self.va)
            seconds = sum(r.get("seconds", 0.0) for r in prog.log if r.get("pass") == cfg.NAME)
            tables = [r for r in prog.log if r.get("pass") == cfg.NAME and "rows" in r]
            if best is None or v > best[1]:
                best = (cfg, v, seconds, tables)
        return best

    def qr(self, m: int) -> None:
        cfg, v, seconds, tables = self.choose(m)
        ft = f" +train {cfg.epochs:g} ep lr {cfg.lr:g}" if cfg.epochs else " (fit only)"
        for suffix, quant in QUANT.items():
            res, s, l0 = self.compile(f"qr{m}-{len(quant)}-{suffix[3:7]}", (cfg,) + quant)
            self.add(f"QR m={m}{ft}{suffix}", res, s, l0, qr=cfg.to_dict(), qat_train_s=seconds,
                     value_valid_qr=v, grid=list(TRAIN_GRID), qr_tables=tables)


def run(name, quick, tmp) -> tuple[list, dict]:
    make, epochs, lr = JOBS[name]
    tr, va, te, _ = ctr_roles(make(quick))
    torch.manual_seed(SEED)
    model = model_for_data("dlrm", tr, embedding_dim=DIM)
    t0 = time.perf_counter()
    train(model, tr, epochs=epochs, batch_size=1024, lr=lr, progress=False)
    train_s = time.perf_counter() - t0
    r = Rows(name, model, tr, va, te, tmp)
    r.add("fp32", *r.compile("fp32", []))
    r.add("int8 rows + int8 Linear", *r.compile("int8", [EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()]))
    r.add("int4 rows (clip search) + int8 Linear",
          *r.compile("int4", [EmbeddingRowwiseQuant(bits=4, clip_search=True), LinearInt8Weights()]))
    for m in M_GRID:
        r.qr(m)
    return _finish(r.rows, train_s), describe_roles(name, "dlrm", tr, va, te)


def print_rows(rows) -> None:
    print(f"{'dataset':<15} {'plan':<78} {'emb B':>10} {'total B':>10} {'ratio':>6} {'AUC':>7} {'delta':>8} "
          f"{'train':>6}")
    for r in rows:
        train_s = f"{r['qat_train_s']:.1f}s" if "qat_train_s" in r else ""
        print(f"{r['dataset']:<15} {r['plan']:<78} {r['embedding_bytes']:>10,} {r['total_bytes']:>10,} "
              f"{r['size_ratio']:>5.1f}x {r['value']:>7.4f} {r['delta']:>+8.4f} {train_s:>6}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="60,000 synthetic rows (as compression.py --quick)")
    ap.add_argument("--datasets", default="synthetic,movielens-100k", help="comma-separated: synthetic, movielens-100k")
    args = ap.parse_args(argv)
    for name in args.datasets.split(","):
        if name not in JOBS:
            ap.error(f"unknown data set {name!r}; known: {', '.join(JOBS)}")
        start, t_all = machine(), time.perf_counter()
        with tempfile.TemporaryDirectory() as t:
            rows, roles = run(name, args.quick, Path(t))
        result = {"schema": SCHEMA, "embedding_dim": DIM, "quick": args.quick, "rows": rows,
                  "data_roles": {f"{name}/dlrm": roles,
                                 "value": "every row's value / delta / size ratio is on test rows; value_valid_qr "
                                          "is the validation AUC the training setting was chosen on"},
                  "settings": {"m_grid": list(M_GRID), "min_rows": MIN_ROWS, "train_grid": list(TRAIN_GRID)},
                  "targets": targets(rows), "code": code_measured(),
                  "machine": {"start": start, "end_loadavg_1_5_15": _load(), "wall_s": time.perf_counter() - t_all}}
        out = RESULTS / f"compression_qr_{name.split('-')[0]}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print_rows(rows)
        for key, tg in result["targets"].items():
            for bar, c in tg.items():
                print(f"target {key} {bar}: >= {c['target_ratio']}x -> best {c['best_ratio']:.1f}x ({c['method']}): "
                      + ("met" if c["met"] else "NOT met"))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
