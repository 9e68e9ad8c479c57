"""edgecompress-runtime: inspect, verify and benchmark a bundle on this device."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import RuntimeErrorBase


def batch_sizes(text: str) -> list[int]:
    """argparse type for "1,64,256" (the host's CLI uses it too)."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers like 1,64,256, got {text!r}") from None
    if not out or any(b <= 0 for b in out):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return out


def _positive(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def _info(args) -> int:
    from .model import load
    m = load(args.bundle, backend=args.backend)
    man = m.manifest
    print(f"bundle   {args.bundle} ({m.bundle.size:,} bytes, format v{man['format_version']})")
    print(f"model    {man['model'].get('class')} ({man['model'].get('task')}), backend {m.backend}")
    print(f"backend  {m.backend}: {getattr(m, 'backend_reason', '')}")
    print(f"target   {man.get('target', {}).get('name')}")
    sig = getattr(m, "signature", None) or {}
    if sig.get("signed"):
        state = "verified" if sig["verified"] else "key not trusted here"
        print(f"signed   by key {sig['key_id']} ({state})")
    else:
        print("signed   no")
    print(f"plan     {', '.join(p['pass'] for p in man.get('plan', [])) or 'fp32 (no passes)'}")
    for s in man["inputs"]:
        shape = "[" + ", ".join("B" if d is None else str(d) for d in s["shape"]) + "]"
        extra = f" vocab {s['vocab']}" if s.get("vocab") else ""
        print(f"input    {s['name']}: {s['dtype']}{shape}{extra}")
    host = man.get("metrics", {}).get("host", {})
    if host:
        print(f"metrics  before {host.get('before')}  after {host.get('after')}")
    return 0


def _verify(args) -> int:
    from .model import load
    p = load(args.bundle, backend=args.backend).check_parity()
    print(json.dumps(p))
    return 0 if p["ok"] else 1


def _bench(args) -> int:
    from .bench import bench, format_table
    if args.backend == "all":
        from .bench import bench_all, format_side_by_side
        res = bench_all(args.bundle, batches=args.batch, warmup=args.warmup, iters=args.iters,
                        min_seconds=args.min_seconds, cores=args.cores)
        _profile(args, res)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        print(format_side_by_side(res))
        _print_profile(args, res)
        return 0 if all(r["parity"]["ok"] for r in res["results"]) else 1
    res = bench(args.bundle, batches=args.batch, warmup=args.warmup, iters=args.iters,
                backend=args.backend, min_seconds=args.min_seconds, cores=args.cores)
    _profile(args, res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(format_table(res))
    _print_profile(args, res)
    return 0 if res["parity"]["ok"] else 1


def _profile(args, res: dict) -> None:
    """With --profile: the op profile of the numpy graph (profile.py) under ``res["profile"]``."""
    if not args.profile:
        return
    from .profile import profile
    res["profile"] = profile(args.bundle, batch=args.profile_batch or max(args.batch), runs=args.profile_runs,
                             warmup=min(args.warmup, 20), min_seconds=args.min_seconds)


def _print_profile(args, res: dict) -> None:
    if res.get("profile"):
        from .profile import format_profile
        print(format_profile(res["profile"], top=args.top))


def _calibrate(args) -> int:
    from .calibrate import main as calibrate_main
    return calibrate_main(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="edgecompress-runtime", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="show what a bundle holds")
    p.add_argument("bundle")
    p.add_argument("--backend", default="auto")
    p.set_defaults(fn=_info)
    p = sub.add_parser("verify", help="check hashes and parity against the host's reference outputs")
    p.add_argument("bundle")
    p.add_argument("--backend", default="auto")
    p.set_defaults(fn=_verify)
    p = sub.add_parser("bench", help="benchmark latency, memory and parity on this device")
    p.add_argument("bundle")
    p.add_argument("--batch", type=batch_sizes, default=[1, 64, 256], help="batch sizes, e.g. 1,64,256")
    p.add_argument("--warmup", type=_positive, default=20, help="untimed runs per batch size (default 20)")
    p.add_argument("--iters", type=_positive, default=200, help="timed runs per batch size (default 200)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="keep timing at least this long per batch, besides --iters runs (MLPerf: 60)")
    p.add_argument("--cores", help="pin the benchmark to big or little cores, or a list like 0-3 "
                                   "(sched_setaffinity; big/little from cpu_capacity or max frequency)")
    p.add_argument("--backend", default="auto",
                   help="numpy | litert | executorch | auto (measured fastest at the bundle's latency batch "
                        "when the bundle carries measured estimates, else the target's preference) | all "
                        "(every backend installed here that the bundle carries, side by side)")
    p.add_argument("--json", help="write the full result here")
    g = p.add_argument_group("op profile")
    g.add_argument("--profile", action="store_true",
                   help="also time every node of the numpy graph (median per node), by op and by layer, and "
                        "compare their sum with the whole-model p50")
    g.add_argument("--profile-batch", type=_positive, help="batch size of the profile (default: the largest --batch)")
    g.add_argument("--profile-runs", type=_positive, default=100, help="profiled runs (default 100)")
    g.add_argument("--top", type=_positive, default=10, help="ops and layers to print (default 10)")
    p.set_defaults(fn=_bench)
    p = sub.add_parser("calibrate", help="micro-benchmark the ops the host's latency model uses; write a table")
    p.add_argument("--json", help="write the latency table here (JSON, schema edgecompress.latency-table/1)")
    p.add_argument("--batch", type=batch_sizes, default=[1, 64, 256], help="batch sizes for Linear / bmm")
    p.add_argument("--quick", action="store_true", help="a smaller grid, for emulated or slow boards")
    p.add_argument("--label", help="a label stored in the table (e.g. 'emulated')")
    p.add_argument("--backend", default="numpy", help="only numpy is calibrated")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress")
    p.add_argument("--probe", action="store_true", help="only print whether this runs under emulation (JSON)")
    p.set_defaults(fn=_calibrate)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except RuntimeErrorBase as e:
        print(f"edgecompress-runtime: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
