"""What the runtime's allocator setting (edgecompress_runtime/allocator.py) does to
latency and peak memory: the same bundles benchmarked with glibc's default malloc
thresholds (EDGECOMPRESS_RUNTIME_MALLOC=system) and with the runtime keeping freed
run memory (the default). Writes benchmarks/results/runtime_memory.json.

    .venv/bin/python benchmarks/runtime_memory.py [--runs 3]

Bundles: two fp32 DLRMs (untrained; latency does not depend on the weights), the
small and the wide shape of the calibration validation set. Each (bundle, mode) is
benchmarked ``--runs`` times in separate processes on the LocalBoard (numpy backend,
OPENBLAS_NUM_THREADS=1, each batch size timed >= 0.3 s); reported: the median p50 per
batch size, the spread of the runs' p50s, and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 64, 256, 1024)


def bundles(out: Path) -> dict[str, Path]:
    import torch

    from edgecompress.compile import compile as ec_compile
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    specs = {"dlrm-small": (dict(embedding_dim=16, bottom_mlp=(32, 16), top_mlp=(32,)), (5000, 2000, 1000, 300, 50)),
             "dlrm-wide": (dict(embedding_dim=64, bottom_mlp=(256, 64), top_mlp=(256, 64)),
                           (100_000, 20_000, 5000, 1000, 200, 50, 20, 10))}
    paths = {}
    for name, (kw, vocab) in specs.items():
        data = synthetic_ctr(n=4000, vocab_sizes=vocab, dense_dim=8, seed=0)
        tr, te = data.split((0.8, 0.2), seed=0)
        torch.manual_seed(0)
        model = model_for_data("dlrm", tr, **kw).eval()
        paths[name] = out / f"{name}.ecb"
        ec_compile(model, target="local", data=te, output=paths[name], plan=[], formats=["numpy"], progress=False,
                   latency_table=False)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtime_memory.json"))
    args = ap.parse_args()
    from edgecompress.deploy.local import LocalBoard
    t0 = time.perf_counter()
    board = LocalBoard()
    board.install_runtime(progress=lambda m: None)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ.pop("GLIBC_TUNABLES", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ec-memory-") as tmp:
        paths = bundles(Path(tmp))
        runs: dict = {}
        for _ in range(args.runs):                 # rounds: a slow minute on the host hits every case once
            for name, path in paths.items():
                for mode in ("system", "keep"):
                    os.environ["EDGECOMPRESS_RUNTIME_MALLOC"] = mode
                    runs.setdefault((name, mode), []).append(
                        board.bench(path, batches=BATCHES, warmup=20, iters=200, backend="numpy", min_seconds=0.3))
        os.environ.pop("EDGECOMPRESS_RUNTIME_MALLOC", None)
    for (name, mode), rs in runs.items():
        alloc = rs[0]["system"].get("allocator", {})
        for b in BATCHES:
            p50s = [next(r["p50_ms"] for r in run["latency"] if r["batch"] == b) for run in rs]
            rows.append({"model": name, "allocator": mode, "reported": alloc.get("allocator"), "batch": b,
                         "p50_ms": statistics.median(p50s), "p50_runs_ms": p50s,
                         "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in rs)})
    report = {"schema": "edgecompress.runtime-memory-benchmark/1",
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "note": "2-core VM shared with other jobs"},
              "config": {"OPENBLAS_NUM_THREADS": "1", "runs": args.runs, "min_seconds": 0.3},
              "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{'model':<11} {'batch':>5} {'system p50 ms':>14} {'keep p50 ms':>12} {'speed-up':>9} "
          f"{'RSS system':>11} {'RSS keep':>9}")
    for name in paths:
        for b in BATCHES:
            s = next(r for r in rows if r["model"] == name and r["allocator"] == "system" and r["batch"] == b)
            k = next(r for r in rows if r["model"] == name and r["allocator"] == "keep" and r["batch"] == b)
            print(f"{name:<11} {b:>5} {s['p50_ms']:>14.3f} {k['p50_ms']:>12.3f} {s['p50_ms'] / k['p50_ms']:>8.2f}x "
                  f"{s['peak_rss_mb']:>9.1f}MB {k['peak_rss_mb']:>7.1f}MB")
    print(f"written to {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
