"""edgecompress: compress recommenders for edge devices, then run and measure them there.

Start with `edgecompress demo`: it trains a small DLRM, compiles it for a
Raspberry Pi 4 profile and benchmarks the bundle on this machine."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import EdgecompressError


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(target=args.target, out_dir=args.out, json_out=args.json, rows=args.rows,
             epochs=args.epochs, iters=args.iters, progress=not args.quiet)
    return 0


def _targets(args) -> int:
    from .targets import list_targets
    ts = list_targets()
    if args.json:
        print(json.dumps([t.to_dict() for t in ts], indent=1))
        return 0
    print(f"{'name':<18} {'arch':<8} {'cores':>5} {'RAM':>8} {'memory budget':>14} {'latency budget':>15}  backends")
    for t in ts:
        print(f"{t.name:<18} {t.arch:<8} {t.cores:>5} {t.ram_mb:>6}MB {t.memory_budget:>14} "
              f"{t.latency_budget:>15}  {', '.join(t.backends)}")
    return 0


def _load_factory(spec: str):
    from .models.zoo import ZOO
    if spec in ZOO:
        return None, spec
    if ":" not in spec:
        raise EdgecompressError(f"--model must be MODULE:FACTORY or a zoo name ({', '.join(sorted(ZOO))}), "
                                f"got {spec!r}")
    mod, _, fn = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise EdgecompressError(f"cannot import --model {spec!r}: {e}") from None
    return factory, None


def _load_data(spec: str):
    from . import data
    if spec == "synthetic":
        return data.synthetic_ctr(n=20_000, seed=1)
    if spec == "movielens-ctr":
        return data.movielens_ctr()
    if spec == "movielens-retrieval":
        return data.movielens_retrieval()
    if spec.endswith(".npz"):
        return data.load_npz(spec)
    raise EdgecompressError(f"--data must be synthetic, movielens-ctr, movielens-retrieval or a .npz file, "
                            f"got {spec!r}")


def _compile(args) -> int:
    import torch

    from .compile import compile
    from .models.zoo import model_for_data
    from .passes import DEFAULT_PLAN
    ds = _load_data(args.data)
    factory, zoo_name = _load_factory(args.model)
    model = model_for_data(zoo_name, getattr(ds, "train", ds)) if zoo_name else factory()
    if args.weights:
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:  # torch raises several kinds for bad files
            raise EdgecompressError(f"cannot load --weights {args.weights}: {str(e).splitlines()[0]}") from None
    plan = [] if args.fp32 else list(DEFAULT_PLAN)
    res = compile(model, target=args.target, data=ds, output=args.output, plan=plan, progress=not args.quiet)
    print(json.dumps(res.summary(), indent=1, default=str) if args.json else
          f"wrote {res.path} ({res.size_bytes:,} bytes) for {res.target}; "
          f"before {res.metrics_before} after {res.metrics_after}; parity {res.parity['max_abs_diff']:.2e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgecompress", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="VERB")
    p = sub.add_parser("demo", help="train, compile and benchmark a DLRM end to end (the main job)")
    p.add_argument("--target", default="raspberry-pi-4", help="device profile (see `edgecompress targets`)")
    p.add_argument("--out", default="out/demo", help="where bundles go (default out/demo)")
    p.add_argument("--json", help="also write every number to this JSON file")
    p.add_argument("--rows", type=int, default=200_000, help="synthetic rows (default 200000)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    p.add_argument("--iters", type=int, default=200, help="timed runs per batch size (default 200)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_demo)

    p = sub.add_parser("targets", help="list device profiles")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")
    p.set_defaults(fn=_targets)

    p = sub.add_parser("compile", help="compile a model into a bundle for a device")
    p.add_argument("--model", required=True, help="MODULE:FACTORY returning an nn.Module, or a zoo name")
    p.add_argument("--weights", help="state_dict file (loaded with torch.load(weights_only=True))")
    p.add_argument("--target", default="raspberry-pi-4", help="device profile (default raspberry-pi-4)")
    p.add_argument("--data", required=True,
                   help="evaluation data: synthetic | movielens-ctr | movielens-retrieval | FILE.npz")
    p.add_argument("-o", "--output", required=True, help="bundle to write (.ecb)")
    p.add_argument("--fp32", action="store_true", help="no compression passes")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_compile)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except EdgecompressError as e:
        print(f"edgecompress: error: {e}", file=sys.stderr)
        return e.exit_code
    except ValueError as e:   # runtime errors (BundleError, InputError) are ValueErrors
        if type(e).__module__.startswith("edgecompress"):
            print(f"edgecompress: error: {e}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("edgecompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
