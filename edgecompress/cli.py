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
from .targets import parse_latency, parse_size


def _demo(args) -> int:
    from .demo import run_demo
    from .deploy.commands import demo_board
    board = demo_board(args)   # None: this machine; else a board over SSH (--device)
    try:
        run_demo(target=args.target, out_dir=args.out, json_out=args.json, rows=args.rows,
                 epochs=args.epochs, iters=args.iters, progress=not args.quiet, board=board)
    finally:
        if board is not None:
            board.close()
    return 0


def _deploy(args) -> int:
    from .deploy.commands import deploy_cmd
    return deploy_cmd(args)


def _bench(args) -> int:
    from .deploy.commands import bench_cmd
    return bench_cmd(args)


def _farm(args) -> int:
    from .deploy.commands import farm_cmd
    return farm_cmd(args)


def _keys(args) -> int:
    from .deploy.commands import keys_cmd
    return keys_cmd(args)


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
    from .data import load
    return load(spec)


def _read_input_spec(path):
    """--input-spec FILE: JSON or TOML, {input: {vocab | fields | padding_id | id_columns}}."""
    if not path:
        return None
    from .errors import DataError
    try:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib
            return tomllib.loads(text)
        return json.loads(text)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read --input-spec {path}: {e}") from None


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
    plan = None                       # search under the budgets
    if args.fp32:
        plan = []
    elif args.int8:
        plan = list(DEFAULT_PLAN)
    elif args.plan:
        from .passes import plan_from_json
        try:
            items = json.loads(Path(args.plan).read_text())
        except (OSError, ValueError) as e:
            raise EdgecompressError(f"cannot read --plan {args.plan}: {e}") from None
        plan = plan_from_json(items["plan"] if isinstance(items, dict) else items)
    train = _load_data(args.train_data) if args.train_data else None
    roles = {"valid_data": _load_data(args.valid_data) if args.valid_data else None,
             "test_data": _load_data(args.test_data) if args.test_data else None}
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    res = compile(model, target=args.target, data=ds, output=args.output, plan=plan, formats=formats,
                  memory_budget=args.memory_budget, latency_budget=args.latency_budget, metric=args.metric,
                  metric_output=args.metric_output, input_spec=_read_input_spec(args.input_spec),
                  train_data=train, **roles, seed=args.seed, report=args.report, progress=not args.quiet,
                  latency_table=args.latency_table)
    for w in getattr(res, "warnings", []):
        print(f"edgecompress: warning: {w}", file=sys.stderr)
    if args.sign:
        from .deploy.keys import sign_bundle
        sign_bundle(res.path)
    print(json.dumps(res.summary(), indent=1, default=str) if args.json else
          f"wrote {res.path} ({res.size_bytes:,} bytes) for {res.target}; "
          f"before {res.metrics_before} after {res.metrics_after}; "
          f"parity vs compressed program {res.parity['max_abs_diff']:.2e} (bug check), vs source model "
          + ", ".join(f"{b} {v['max_abs_diff']:.2e}" for b, v in res.vs_source.items())
          + f" on {res.vs_source['numpy']['rows']} rows")
    if not args.json:
        print(_formats_table(res))
    return 0


def _formats_table(res) -> str:
    """Per shipped format: bytes as the device loads them vs the memory budget, test-row metric."""
    mem = res.budgets.get("memory_bytes")
    metric = next(iter(res.metrics_after), None)
    rows = [["format", "bytes", "memory budget", f"{metric} (test rows)", "max |diff| vs source"]]
    for fmt, r in res.formats.items():
        rows.append([fmt, f"{r['bytes']:,}" + ("" if r.get("fits", True) else " (over)"),
                     f"{mem:,}" if mem else "none",
                     f"{r['metrics'][metric]:.4f}" if r.get("metrics") and metric in r["metrics"] else "-",
                     f"{r['vs_source']['max_abs_diff']:.2e}" if r.get("vs_source") else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _package(args) -> int:
    from .export.app_package import package
    written = package(args.bundle, android=args.android, ios=args.ios)
    for platform, paths in written.items():
        print(f"{platform}: wrote {', '.join(paths)}")
    return 0


def _checked(parse):
    """argparse type: validate with ``parse`` but keep the user's string."""
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return check


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
    _deploy_args(p)
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
    p.add_argument("--train-data", help="training rows for row frequencies and distillation (same forms as --data; "
                                        "default: --data)")
    p.add_argument("--memory-budget", type=_checked(parse_size),
                   help="bundle size budget, e.g. 8MB or 512KiB (default: the target's)")
    p.add_argument("--latency-budget", type=_checked(parse_latency),
                   help="latency budget per batch, e.g. 2ms@64 (default: the target's)")
    p.add_argument("--metric", choices=["auc", "logloss", "recall@10", "ndcg@10"],
                   help="what the planner maximises (default: auc for CTR, recall@10 for retrieval)")
    p.add_argument("--valid-data", help="rows plans are chosen on (default: half of --data when searching)")
    p.add_argument("--test-data", help="rows every reported figure comes from (default: the other half of --data)")
    p.add_argument("--seed", type=int, help="seed of the validation/test split; given, the bundle is byte-identical "
                   "for the same inputs (no wall-clock time inside)")
    p.add_argument("--metric-output", help="multi-head models: the output the metric and the planner use "
                   "(default: the first)")
    p.add_argument("--input-spec", metavar="FILE",
                   help="JSON or TOML declaring what the data cannot say, e.g. "
                   '{"X": {"id_columns": {"0": 1000}}} for ids inside one float tensor')
    p.add_argument("--report", help="directory for report.json and report.html")
    p.add_argument("--plan", help="replay a plan: a JSON list of pass configs, or a bundle manifest / report.json")
    p.add_argument("--fp32", action="store_true", help="no compression passes")
    p.add_argument("--int8", action="store_true", help="int8 rows + int8 Linear weights, no search")
    p.add_argument("--formats", help="comma list of numpy, executorch, litert (default: numpy plus every app "
                                     "format whose toolchain is installed; see pip install 'edgecompress[export]')")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--sign", action="store_true", help="sign the bundle with the key from `edgecompress keys init`")
    p.add_argument("--latency-table", help="measured latency table for the latency model: a device name calibrated "
                                           "with `edgecompress calibrate`, a .json path, or 'none' (default: the "
                                           "table calibrated for --target, if any)")
    p.set_defaults(fn=_compile)

    p = sub.add_parser("package", help="write what an Android / iOS app needs from a bundle (artifact, "
                                       "typed input spec, id maps, integration note)")
    p.add_argument("bundle", help="a bundle compiled with --formats including litert and/or executorch")
    p.add_argument("--android", metavar="DIR", help="write the Android package here")
    p.add_argument("--ios", metavar="DIR", help="write the iOS package here")
    p.set_defaults(fn=_package)

    p = sub.add_parser("deploy", help="install the runtime and bundles on a board over SSH")
    p.add_argument("bundles", nargs="*", help="bundles to put on the board (none: just the runtime)")
    _deploy_args(p)
    p.add_argument("--uninstall", action="store_true", help="remove edgecompress from the board instead")
    p.add_argument("--remove-trusted-keys", action="store_true", help="with --uninstall: also forget signing keys")
    p.add_argument("--json", help="write what was done to this JSON file")
    p.set_defaults(fn=_deploy)

    p = sub.add_parser("bench", help="benchmark a bundle on a board over SSH (deploys it if needed)")
    p.add_argument("bundle")
    _deploy_args(p)
    _bench_args(p)
    p.add_argument("--json", help="write every number to this JSON file")
    p.set_defaults(fn=_bench)

    p = sub.add_parser("farm", help="benchmark bundles on many boards in parallel (devices.toml)")
    p.add_argument("bundles", nargs="+")
    _deploy_args(p, device=False)
    p.add_argument("--device", "-d", action="append", help="a device (name or user@host[:port]); repeatable")
    p.add_argument("--tags", help="only devices having all these tags (comma list)")
    p.add_argument("--parallel", type=int, help="boards at work at once (default: all)")
    p.add_argument("--retries", type=int, default=2, help="retries of a dropped device before its work moves "
                                                          "(default 2)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubling (default 2)")
    p.add_argument("--out", default="out/farm", help="where farm.json and farm.html go (default out/farm)")
    _bench_args(p)
    p.set_defaults(fn=_farm)

    from .calibrate import add_calibrate_parser
    add_calibrate_parser(sub)

    p = sub.add_parser("keys", help="the signing key for bundles: init | show | sign BUNDLE...")
    p.add_argument("action", choices=["init", "show", "sign"])
    p.add_argument("bundles", nargs="*", help="with sign: bundles to sign in place")
    p.add_argument("--force", action="store_true", help="with init: replace an existing key")
    p.set_defaults(fn=_keys)
    return ap


def _deploy_args(p, device: bool = True) -> None:
    from .deploy.commands import add_ssh_args
    add_ssh_args(p, device=device)


def _bench_args(p) -> None:
    from .deploy.commands import _batches
    g = p.add_argument_group("benchmark")
    g.add_argument("--batch", type=_batches, default=[1, 64, 256], help="batch sizes (default 1,64,256)")
    g.add_argument("--warmup", type=int, default=20, help="untimed runs per batch size (default 20)")
    g.add_argument("--iters", type=int, default=200, help="timed runs per batch size (default 200)")
    g.add_argument("--backend", default="auto", help="runtime backend on the board (default auto)")
    g.add_argument("--repeat", type=int, default=1, help="benchmark N times (default 1)")
    g.add_argument("--cooldown", type=float, default=0.0, help="seconds to rest between repeats")


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
