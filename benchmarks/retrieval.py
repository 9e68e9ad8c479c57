"""On-device retrieval: one topk() call over every item, pairwise scorer vs retrieval bundle.

    .venv/bin/python benchmarks/retrieval.py [--items 1000,10000,100000] [--threads 2] [--quick]

Latency: for each item count a two-tower (seeded, untrained: latency does not depend on the values;
32-dim towers, 200 users) is compiled three ways: the pairwise scorer (fp32; topk repeats the user
over every item, in chunks of the runtime's max_batch), and the retrieval bundle (towers="auto": user
tower + item matrix) in fp32 and with the default int8 plan (row-wise int8 item matrix). One
``topk(user, k=10)`` call over every item is timed with the runtime's stable-timing helper (warm-up,
minimum count and duration, p50/p90 and the stability verdict), on numpy and the app backends
installed here (.tflite via LiteRT, .pte via ExecuTorch; they return [B, items], ranked in numpy).

Quality: the MovieLens-100k two-tower trained briefly, compiled pairwise and as retrieval (fp32 and
int8): recall@10 of every user's held-out item (train items excluded) counted from topk().

Writes benchmarks/results/retrieval.json (with machine, cores, load) and prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="1000,10000,100000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="1k items, few iterations (smoke test)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "retrieval.json"))
    return ap.parse_args(argv)


ARGS = _args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "EDGECOMPRESS_RUNTIME_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import edgecompress as ec  # noqa: E402
import edgecompress_runtime as ecr  # noqa: E402
from edgecompress.data.movielens import leave_last_out  # noqa: E402
from edgecompress.export.artifacts import available_formats  # noqa: E402
from edgecompress.models.two_tower import TwoTower  # noqa: E402
from edgecompress.passes import DEFAULT_PLAN  # noqa: E402
from edgecompress_runtime.bench import time_batch  # noqa: E402
from edgecompress_runtime.sysinfo import cpu_model, system_facts  # noqa: E402

USERS = 200
APPS = [f for f in ("litert", "executorch") if available_formats().get(f, "missing") is None]


class _TopK:
    """time_batch() times ``predict(feeds)``: here one topk() call for one user over every item."""

    def __init__(self, model, num_items: int, pairwise: bool):
        self.model, self.every = model, ({"item_id": np.arange(num_items)} if pairwise else None)

    def predict(self, feeds):
        return self.model.topk(feeds, self.every, k=10)


def _synthetic(num_items: int, seed: int):
    """Seeded interactions: every user 20 items, the last held out (only shapes matter for latency)."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(USERS), 20)
    item = rng.integers(0, num_items, size=user.size)
    return leave_last_out(user, item, np.tile(np.arange(20), USERS), USERS, num_items, f"synthetic-{num_items}")


def _compile(model, data, out: Path, name: str, **kw):
    return ec.compile(model, target="local", data=data, output=out / f"{name}.ecb", progress=False, **kw)


def latency_rows(num_items: int, out: Path) -> list[dict]:
    torch.manual_seed(num_items)
    model = TwoTower(USERS, num_items, embedding_dim=32, tower=(32,)).eval()
    data = _synthetic(num_items, seed=num_items)
    t0 = time.perf_counter()
    built = {"pairwise fp32": _compile(model, data, out, f"pair{num_items}", plan=[], formats=["numpy"] + APPS),
             "retrieval fp32": _compile(model, data, out, f"fp32_{num_items}", plan=[], towers="auto",
                                        formats=["numpy"] + APPS),
             "retrieval int8": _compile(model, data, out, f"int8_{num_items}", plan=list(DEFAULT_PLAN),
                                        towers="auto", formats=["numpy"] + APPS)}
    print(f"  compiled {num_items:,} items in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    feeds = {"user_id": np.array([7])}
    rows = []
    for form, res in built.items():
        for backend in ["numpy"] + [a for a in APPS if a in res.formats]:
            m = ecr.load(res.path, backend=backend)
            pairwise = form.startswith("pairwise")
            iters = 5 if ARGS.quick else (max(5, ARGS.iters // 10) if pairwise and num_items >= 100_000
                                          else ARGS.iters)
            before = m.stats["runs"]
            m.topk(feeds, {"item_id": np.arange(num_items)} if pairwise else None, k=10)
            calls = m.stats["runs"] - before
            s = time_batch(_TopK(m, num_items, pairwise), feeds, warmup=3, iters=iters,
                           min_seconds=0.2 if ARGS.quick else ARGS.min_seconds)
            rows.append({"items": num_items, "bundle": form, "backend": backend, "calls_per_topk": calls,
                         "bundle_bytes": res.size_bytes, "model_bytes": res.model_bytes,
                         "artifact_bytes": res.formats.get(backend, {}).get("bytes"),
                         "p50_ms": s["p50_ms"], "p90_ms": s["p90_ms"], "cv": s["cv"], "runs": s["iters"],
                         "verdict": s.get("verdict"), "reasons": [r.get("text") for r in s.get("reasons", [])]})
            print(f"  {num_items:>7,} {form:<15} {backend:<10} p50 {s['p50_ms']:8.3f} ms", file=sys.stderr)
    return rows


def recall_rows(out: Path) -> list[dict]:
    from edgecompress.data import movielens_retrieval
    from edgecompress.train import train
    ml = movielens_retrieval()
    torch.manual_seed(0)
    model = TwoTower(ml.num_users, ml.num_items, embedding_dim=32, tower=(32,))
    hist = train(model, ml.train, epochs=3, batch_size=1024, lr=3e-3, progress=False, seed=0)
    model.eval()
    test_item = dict(zip(ml.test_user.tolist(), ml.test_item.tolist()))
    users = ml.test_user
    seen = [np.setdiff1d(ml.train_items_by_user[u], [test_item[u]]) for u in users]
    every = {"item_id": np.arange(ml.num_items)}
    rows = []
    for name, kw in (("pairwise fp32", dict(plan=[])), ("retrieval fp32", dict(plan=[], towers="auto")),
                     ("retrieval int8", dict(plan=list(DEFAULT_PLAN), towers="auto"))):
        res = _compile(model, ml, out, "ml_" + name.replace(" ", "_"), formats=["numpy"], **kw)
        m = ecr.load(res.path, backend="numpy")
        before = m.stats["runs"]
        if name.startswith("pairwise"):
            top = np.stack([m.topk({"user_id": np.array([u])}, every, k=10, exclude=ex)[0]
                            for u, ex in zip(users, seen)])
        else:
            top, _ = m.topk({"user_id": users}, k=10, exclude=seen)
        hits = np.array([test_item[u] in row for u, row in zip(users, top)])
        rows.append({"bundle": name, "recall@10": float(hits.mean()), "users": int(len(users)),
                     "calls_for_all_users": m.stats["runs"] - before, "model_bytes": res.model_bytes,
                     "compile_recall@10": res.metrics_after["recall@10"], "top10": top})
    base = rows[0]["top10"]
    for r in rows:
        r["same_top10_as_pairwise"] = float((r.pop("top10") == base).all(axis=1).mean())
    rows[0]["train"] = {"epochs": hist["epochs"], "seconds": round(hist["seconds"], 1)}
    return rows


def main() -> int:
    warnings.filterwarnings("ignore")
    items = [1000] if ARGS.quick else [int(x) for x in ARGS.items.split(",")]
    facts = system_facts()
    conditions = {"machine": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
                  "threads": ARGS.threads, "load_before": list(os.getloadavg()), "python": platform.python_version(),
                  "app_backends": APPS, "system": facts, "users": USERS, "note": "one topk(k=10) call for one user"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        latency = [row for n in items for row in latency_rows(n, out)]
        recall = recall_rows(out)
    conditions["load_after"] = list(os.getloadavg())
    result = {"conditions": conditions, "latency": latency, "recall": recall}
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(result, indent=1, default=str))
    print(table(result))
    print(f"\nwrote {ARGS.out}")
    return 0


def table(result: dict) -> str:
    c = result["conditions"]
    lines = [f"{c['cpu']} ({c['machine']}, {c['cores']} cores, {c['threads']} threads), load "
             f"{c['load_before'][0]:.2f} -> {c['load_after'][0]:.2f}",
             f"{'items':>8} {'bundle':<15} {'backend':<10} {'calls':>5} {'p50 ms':>9} {'p90 ms':>9} {'cv':>5} "
             f"{'bytes':>11} {'verdict':>8}"]
    for r in result["latency"]:
        size = r["artifact_bytes"] if r["backend"] != "numpy" else r["model_bytes"]
        lines.append(f"{r['items']:>8,} {r['bundle']:<15} {r['backend']:<10} {r['calls_per_topk']:>5} "
                     f"{r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['cv']:>5.2f} {size or 0:>11,} "
                     f"{r['verdict'] or '':>8}")
    lines += ["", f"MovieLens-100k, {result['recall'][0]['users']} held-out users, train items excluded:",
              f"{'bundle':<15} {'recall@10':>9} {'same top-10':>11} {'calls':>6} {'bytes':>10}"]
    for r in result["recall"]:
        lines.append(f"{r['bundle']:<15} {r['recall@10']:>9.4f} {r['same_top10_as_pairwise']:>11.3f} "
                     f"{r['calls_for_all_users']:>6} {r['model_bytes']:>10,}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
