"""k-means clustered Linear layers (passes/cluster_linear.py) next to int8 Linear layers, DLRM on
synthetic data and MovieLens-100k: what clustering the MLP buys once the tables are small.

Rows per data set: fp32; int8 rows + int8 Linear; int4 rows (clip search) + int8 Linear (the
baseline) and + clustered Linear at 4, 3 and 2 bits per layer (and 2 bits per output row);
product-quantized tables (PQ M=8 4-bit K=16, fine-tuned 1 epoch: the pq benchmark's pick on
MovieLens; fixed here, not chosen) + int8 Linear and + clustered Linear at 4, 3 and 2 bits. Each
clustered row takes the ``CLUSTER_GRID`` setting (k-means only, or the shared values fine-tuned 1
epoch at two learning rates) with the best validation AUC; every figure is on test rows (roles as
benchmarks/compression.py: ``ctr_roles``, train rows for training and fine-tuning). ``qat_train_s``:
the cluster_linear pass's own time (k-means + fine-tuning, from a separate run of the chosen
setting on the program with its tables already compressed (k-means-only settings never read the
tables: timed on the fp32 program); compile adds export time). ``--tables int4`` keeps only the int4
rows' groups and ``--kmeans-only`` only the grid's first setting (each row records its ``grid``): the
shared 2-core VM ran the synthetic data set that way (~3 min a compile under a load of 15-19).
``linear_bytes``: the stored Linear weights (biases not included).

Writes benchmarks/results/compression_cluster_{synthetic,movielens}.json (the row schema of
compression_pq_*.json) and prints a table. Run: .venv/bin/python benchmarks/compression_cluster.py
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
from edgecompress.metrics import evaluate_ctr  # noqa: E402
from edgecompress.models.zoo import model_for_data  # noqa: E402
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights  # noqa: E402
from edgecompress.passes.cluster_linear import ClusterLinear  # noqa: E402
from edgecompress.passes.product_quant import ProductQuant  # noqa: E402
from edgecompress.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SCHEMA = "edgecompress.bench.compression/2"
CLUSTER_GRID = ({"finetune_epochs": 0.0}, {"finetune_epochs": 1.0, "lr": 1e-4}, {"finetune_epochs": 1.0, "lr": 1e-3})
TABLES = {"int4 rows (clip search)": (EmbeddingRowwiseQuant(bits=4, clip_search=True),),
          "PQ M=8 4-bit K=16 +ft 1 ep": (ProductQuant(sub_vectors=8, bits=4, finetune_epochs=1.0, lr=1e-3),)}
CLUSTERED = (("int4 rows (clip search)", 4, False), ("int4 rows (clip search)", 3, False),
             ("int4 rows (clip search)", 2, False), ("int4 rows (clip search)", 2, True),
             ("PQ M=8 4-bit K=16 +ft 1 ep", 4, False), ("PQ M=8 4-bit K=16 +ft 1 ep", 3, False),
             ("PQ M=8 4-bit K=16 +ft 1 ep", 2, False))
JOBS = {"synthetic": (lambda quick: synthetic_ctr(n=60_000 if quick else 200_000, seed=0,
                                                  vocab_sizes=(40000, 20000, 10000, 5000, 2000, 1000, 500, 100)), 2, 2e-3),
        "movielens-100k": (lambda quick: movielens_ctr(), 3, 2e-3)}


def _linear_bytes(res) -> int:
    import edgecompress_runtime as ecr
    m = ecr.load(res.path)
    return sum(p.nbytes for n, p in m._backend.params.items() if m.manifest["params"][n]["role"] == "linear")


def _valid_auc(path, data) -> float:
    import edgecompress_runtime as ecr
    m = ecr.load(path, backend="numpy")
    return evaluate_ctr(lambda f: np.asarray(m.predict(f), dtype=np.float32).reshape(-1), data)["auc"]


class Rows:
    """Compiles plans for one trained model and keeps its rows (compression.py's row schema)."""

    def __init__(self, name, model, tr, va, te, tmp, grid=CLUSTER_GRID):
        self.name, self.model, self.tr, self.va, self.te, self.tmp = name, model, tr, va, te, tmp
        self.grid, self.rows = grid, []

    def compile(self, tag, plan):
        load0, t = _load(), time.perf_counter()
        res = ec.compile(self.model, target="raspberry-pi-4", data=self.te, test_data=self.te, valid_data=self.va,
                         train_data=self.tr, formats=["numpy"], progress=False, plan=list(plan),
                         output=self.tmp / f"{self.name}-{tag}.ecb")
        return res, time.perf_counter() - t, load0

    def add(self, label, res, seconds, load0, **extra):
        self.rows.append({"dataset": self.name, "model": "dlrm", "plan": label, "embedding_bytes": _embedding_bytes(res),
                          "linear_bytes": _linear_bytes(res), "total_bytes": res.size_bytes, "metric": "auc",
                          "value": res.metrics_after["auc"], "value_rows": "test", "n_test": len(self.te),
                          "source_value": res.metrics_before["auc"], "compile_s": seconds, "load_before": load0,
                          "load_after": _load(), "describe": label, "data_roles": dict(res.data_roles), **extra})

    def clustered(self, tables: str, bits: int, per_channel: bool) -> None:
        """The CLUSTER_GRID setting with the best validation AUC; its test row and the pass's own time."""
        best = None
        for i, grid in enumerate(self.grid):
            cfg = ClusterLinear(bits=bits, per_channel=per_channel, **grid)
            res, s, l0 = self.compile(f"{tables[:4]}-cl{bits}{'c' if per_channel else ''}-{i}",
                                      TABLES[tables] + (cfg,))
            v = _valid_auc(res.path, self.va)
            if best is None or v > best[0]:
                best = (v, cfg, res, s, l0)
        v, cfg, res, s, l0 = best
        ft = f" +ft 1 ep lr {cfg.lr:g}" if cfg.finetune_epochs else ""
        label = f"{tables} + clustered Linear {bits}-bit{' per row' if per_channel else ''}{ft}"
        self.add(label, res, s, l0, cluster=cfg.to_dict(), qat_train_s=self._pass_seconds(tables, cfg),
                 value_valid_cluster=v, grid=list(self.grid))

    def _pass_seconds(self, tables: str, cfg) -> float:
        from edgecompress.graph import lower
        from edgecompress.graph.io import CallConvention
        from edgecompress.passes import PassContext, apply_pass
        call = CallConvention.infer(self.model, self.tr.inputs)
        prog = lower(self.model, {k: np.asarray(self.tr.inputs[k][:8]) for k in call.names}, call)
        ctx = PassContext(teacher=self.model, train_data=self.tr)
        for c in TABLES[tables] if cfg.finetune_epochs else ():
            apply_pass(prog, c, ctx=ctx)
        t = time.perf_counter()
        apply_pass(prog, cfg, ctx=ctx)
        return time.perf_counter() - t


def run(name, quick, tmp, tables=tuple(TABLES), grid=CLUSTER_GRID) -> tuple[list, dict]:
    make, epochs, lr = JOBS[name]
    tr, va, te, _ = ctr_roles(make(quick))
    torch.manual_seed(SEED)
    model = model_for_data("dlrm", tr, embedding_dim=DIM)
    t0 = time.perf_counter()
    train(model, tr, epochs=epochs, batch_size=1024, lr=lr, progress=False)
    train_s = time.perf_counter() - t0
    r = Rows(name, model, tr, va, te, tmp, grid)
    r.add("fp32", *r.compile("fp32", []))
    r.add("int8 rows + int8 Linear", *r.compile("int8", [EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()]))
    for tables, bits, per_channel in [c for c in CLUSTERED if c[0] in tables]:
        if bits == 4 and not per_channel:       # the int8 Linear row of these tables first
            r.add(f"{tables} + int8 Linear", *r.compile(f"{tables[:4]}-int8lin", TABLES[tables] + (LinearInt8Weights(),)))
        r.clustered(tables, bits, per_channel)
        print(f"  {name}: {r.rows[-1]['plan']} done", flush=True)
    return _finish(r.rows, train_s), describe_roles(name, "dlrm", tr, va, te)


def print_rows(rows) -> None:
    print(f"{'dataset':<15} {'plan':<72} {'linear B':>9} {'total B':>10} {'ratio':>6} {'AUC':>7} {'delta':>8} "
          f"{'train':>6}")
    for r in rows:
        train_s = f"{r['qat_train_s']:.1f}s" if "qat_train_s" in r else ""
        print(f"{r['dataset']:<15} {r['plan']:<72} {r['linear_bytes']:>9,} {r['total_bytes']:>10,} "
              f"{r['size_ratio']:>5.1f}x {r['value']:>7.4f} {r['delta']:>+8.4f} {train_s:>6}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="60,000 synthetic rows (as compression.py --quick)")
    ap.add_argument("--datasets", default="synthetic,movielens-100k", help="comma-separated: synthetic, movielens-100k")
    ap.add_argument("--tables", choices=("int4", "pq", "all"), default="all", help="which table groups")
    ap.add_argument("--kmeans-only", action="store_true", help="no fine-tuning settings in the grid")
    args = ap.parse_args(argv)
    tables = [t for t in TABLES if args.tables == "all" or t.lower().startswith(args.tables)]
    grid = CLUSTER_GRID[:1] if args.kmeans_only else CLUSTER_GRID
    for name in args.datasets.split(","):
        if name not in JOBS:
            raise SystemExit(f"unknown data set {name!r}; choose from {', '.join(JOBS)}")
        start, t_all = machine(), time.perf_counter()
        with tempfile.TemporaryDirectory() as t:
            rows, roles = run(name, args.quick, Path(t), tables, grid)
        result = {"schema": SCHEMA, "embedding_dim": DIM, "quick": args.quick, "rows": rows,
                  "data_roles": {f"{name}/dlrm": roles, "value": "every row's value / delta / size ratio is "
                                 "measured on test rows; value_valid_cluster: the validation AUC the setting "
                                 "was chosen on"},
                  "targets": targets(rows), "code": code_measured(),
                  "machine": {"start": start, "end_loadavg_1_5_15": _load(), "wall_s": time.perf_counter() - t_all}}
        out = RESULTS / f"compression_cluster_{name.split('-')[0]}.json"
        out.write_text(json.dumps(result, indent=1))
        print_rows(rows)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
