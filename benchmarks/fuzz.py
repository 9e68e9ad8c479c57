"""Fuzz the bundle loader (issue 13): >= 1,000 mutants of a real bundle that carries a .tflite and
a .pte, every class of attack (see tests/fuzz_mutants.py), each through load -> predict ->
parity -> info in a child process under an address-space limit (child size after imports +
1 GiB, the runtime's MAX_PEAK_BYTES) and a 20 s time limit per mutant (tests/fuzz_runner.py).
Also times one zip bomb's refusal and its extra peak RSS in a fresh process, with and without
a trust store on the device. Writes benchmarks/results/fuzz.json (classes x outcomes) and
prints the table.

    .venv/bin/python benchmarks/fuzz.py [--mutants 1200] [--seed 0] [--no-apps]

The same generator runs in the test suite (tests/test_fuzz.py, 520 mutants). ``--no-apps``
skips exporting the .tflite / .pte (a minute) and forges those artifacts instead.
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
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "runtime"), str(ROOT)]
OUT = ROOT / "benchmarks" / "results" / "fuzz.json"


def build_bundle(out: Path, apps: bool) -> Path:
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import DEFAULT_PLAN
    from edgecompress.train import train
    data = synthetic_ctr(n=3000, vocab_sizes=(300, 200, 100), dense_dim=4, seed=3)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    formats = ["numpy", "litert", "executorch"] if apps else ["numpy"]
    return ec.compile(model, target="local", data=te, output=out / "fuzz.ecb", plan=list(DEFAULT_PLAN),
                      progress=False, formats=formats).path


def bomb_costs(bundle: Path, work: Path) -> list[dict]:
    """A 64 MiB zip bomb added to the bundle (declared honestly, and lying small), refused: time
    and extra peak RSS, with and without a trust store on the device."""
    import random

    import fuzz_mutants
    import fuzz_runner
    base = fuzz_mutants.Base(bundle, fuzz_mutants.Key())
    (work / "trust").mkdir(exist_ok=True)
    (work / "trust" / "fuzz.pub").write_text(base.key.line)
    rows = []
    for how_seed in range(8):
        r = random.Random(how_seed)
        label, data, _signed = fuzz_mutants.m_zip_bomb(r, base)
        path = work / f"bomb-{how_seed}.ecb"
        path.write_bytes(data)
        for store in (False, True):
            rows.append({"bomb": label, "bundle_bytes": len(data), **fuzz_runner.bomb_cost(path, work, store)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutants", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-apps", action="store_true", help="forge .tflite/.pte instead of exporting them")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    import fuzz_mutants
    import fuzz_runner
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ec-fuzz-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        bundle = build_bundle(work, apps=not args.no_apps)
        build_s = time.perf_counter() - t
        items = fuzz_mutants.generate(bundle, args.mutants, work, seed=args.seed)
        t = time.perf_counter()
        results = fuzz_runner.run(items, workers=args.workers, per_child=max(100, args.mutants // 6))
        run_s = time.perf_counter() - t
        bombs = bomb_costs(bundle, work)
        with zipfile.ZipFile(bundle) as zf:
            carried = sorted(json.loads(zf.read("manifest.json")).get("artifacts") or {})
    table = fuzz_runner.table(results)
    failures = [{k: r.get(k) for k in ("cls", "label", "outcome", "detail")} for r in results
                if r["outcome"] in fuzz_runner.FAILURES]
    secs = [r.get("seconds", 0) for r in results]
    doc = {
        "schema": "edgecompress.bench.fuzz/1",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "bundle": {"artifacts": carried, "build_s": round(build_s, 1)},
        "mutants": len(results), "seed": args.seed,
        "limits": {"memory_extra_bytes": fuzz_runner.MEMORY_LIMIT, "time_per_mutant_s": fuzz_runner.TIME_LIMIT},
        "outcomes": list(fuzz_runner.OUTCOMES), "failures_are": list(fuzz_runner.FAILURES),
        "table": table,
        "totals": {o: sum(row.get(o, 0) for row in table.values()) for o in fuzz_runner.OUTCOMES},
        "failures": failures,
        "per_mutant_s": {"median": statistics.median(secs), "max": max(secs)},
        "peak_extra_mb_max": max(r.get("peak_extra_mb", 0) for r in results),
        "zip_bomb": {"runs": bombs, "max_seconds": max(b["seconds"] for b in bombs),
                     "max_extra_mb": max(b["extra_mb"] for b in bombs),
                     "all_refused": all(b["outcome"].startswith("refused") for b in bombs)},
        "run_s": round(run_s, 1), "total_s": round(time.perf_counter() - t_all, 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    cols = list(fuzz_runner.OUTCOMES)
    print(f"{'class':<15}" + "".join(f"{c:>12}" for c in cols))
    for cls, row in table.items():
        print(f"{cls:<15}" + "".join(f"{row.get(c, 0):>12}" for c in cols))
    print(f"{'total':<15}" + "".join(f"{doc['totals'][c]:>12}" for c in cols))
    zb = doc["zip_bomb"]
    print(f"\n{len(results)} mutants of a bundle carrying {carried or 'no artifacts'} in {run_s:.0f} s; "
          f"failures: {len(failures)}; largest extra peak RSS {doc['peak_extra_mb_max']:.1f} MB")
    print(f"zip bomb: refused in <= {zb['max_seconds']:.3f} s with <= {zb['max_extra_mb']:.1f} MB extra "
          f"({len(zb['runs'])} runs, trust store or not); wrote {OUT}")
    return 1 if failures or not zb["all_refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
