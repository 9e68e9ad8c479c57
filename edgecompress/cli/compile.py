"""The verbs that make bundles on this machine: ``demo``, ``targets``, ``compile``, ``package``."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from ..errors import DataError, EdgecompressError
from .options import (add_output_args, add_ssh_args, add_stability_args, add_verb, board_from_args, latency,
                      size_with_unit)
from .output import console, print_table, say_log, status, toolchain_log

__all__ = ["add_parsers", "load_factory"]


def add_parsers(sub) -> None:
    _add_demo(sub)
    p = add_verb(sub, "targets", "list device profiles", """
  edgecompress targets
  edgecompress targets --json | jq '.[].name'""")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")
    p.set_defaults(fn=targets_cmd)
    _add_compile(sub)
    p = add_verb(sub, "package", "write what an Android / iOS app needs from a bundle (artifacts, typed input "
                                 "spec, id maps, dense statistics, Kotlin / Swift code, integration note)", """
  edgecompress package dlrm.ecb --android app/src/main/assets/dlrm --ios ios/Resources/dlrm
  edgecompress package dlrm.ecb --android out/android --formats litert
  edgecompress package dlrm.ecb --android out/a --ios out/i --formats android:litert,ios:executorch""")
    p.add_argument("bundle", help="a bundle compiled with --formats including litert and/or executorch")
    p.add_argument("--android", metavar="DIR", help="write the Android package here")
    p.add_argument("--ios", metavar="DIR", help="write the iOS package here")
    p.add_argument("--formats", metavar="LIST", default=None,
                   help="app artifacts to ship: litert, executorch, or per platform android:litert,ios:executorch "
                        "(default: every one the bundle carries)")
    p.add_argument("--kotlin-package", default="edgecompress.generated", metavar="NAME",
                   help="the Kotlin package of the generated sources (default: %(default)s)")
    p.set_defaults(fn=package_cmd)


def _add_demo(sub) -> None:
    p = add_verb(sub, "demo", "train, compile and benchmark a DLRM end to end (the main job)", """
  edgecompress demo                                   # on this machine, for a Raspberry Pi 4 profile
  edgecompress demo --rows 50000 --epochs 1 --json out/demo.json
  edgecompress demo --device pi@raspberrypi.local     # benchmark on a board over SSH""")
    p.add_argument("--target", default="raspberry-pi-4", help="device profile (see `edgecompress targets`)")
    p.add_argument("--out", default="out/demo", help="where bundles go (default out/demo)")
    p.add_argument("--json", help="also write every number to this JSON file")
    p.add_argument("--rows", type=int, default=200_000, help="synthetic rows (default 200000)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    p.add_argument("--iters", type=int, default=200, help="timed runs per batch size (default 200)")
    g = p.add_argument_group("benchmark")
    add_stability_args(g)
    g.add_argument("--force", action="store_true",
                   help="with --device: run although the board's architecture differs from --target's")
    add_output_args(p)
    add_ssh_args(p)
    p.set_defaults(fn=demo_cmd)


def _add_compile(sub) -> None:
    p = add_verb(sub, "compile", "compile a model into a bundle for a device", """
  edgecompress compile --model dlrm --data synthetic -o dlrm.ecb --target raspberry-pi-4
  edgecompress compile --model mymodels:make --weights w.pt --data eval.npz -o m.ecb --memory-budget 4MB
  edgecompress compile --model dlrm --data synthetic -o dlrm.ecb --int8 --formats numpy,litert --report rep
  edgecompress compile --model dlrm --data synthetic -o again.ecb --plan rep/report.json   # replay a plan
  edgecompress compile --model dlrm --weights w.pt --data test.npz --train-data train.npz -o tiny.ecb --memory-budget 60KB --train-budget 10m   # may train up to 10 min""")
    p.add_argument("--model", required=True, help="MODULE:FACTORY returning an nn.Module, or a zoo name")
    p.add_argument("--weights", help="state_dict file (loaded with torch.load(weights_only=True))")
    p.add_argument("--target", default="raspberry-pi-4", help="device profile (default raspberry-pi-4)")
    p.add_argument("--data", required=True,
                   help="evaluation data: synthetic | movielens-ctr | movielens-retrieval | FILE.npz")
    p.add_argument("-o", "--output", required=True, help="bundle to write (.ecb)")
    p.add_argument("--train-data", help="training rows for row frequencies and distillation (same forms as --data; "
                                        "default: --data)")
    p.add_argument("--memory-budget", type=size_with_unit,
                   help="bundle size budget with a unit, e.g. 8MB, 512KiB or 335154B (default: the target's)")
    p.add_argument("--latency-budget", type=latency,
                   help="latency budget per batch, e.g. 2ms@64 (default: the target's)")
    p.add_argument("--train-budget", type=_duration, metavar="TIME",
                   help="time the planner may spend on training-aware moves (quantization-aware training, product "
                        "quantization) when no post-training plan meets the budgets within tolerance of fp32, e.g. "
                        "10m, 90s or 1.5h; needs training rows (--train-data). Default: post-training moves only")
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
    plan = p.add_argument_group("plan (one of; default: search under the budgets)").add_mutually_exclusive_group()
    plan.add_argument("--plan", help="replay a plan: a JSON list of pass configs, or a bundle manifest / report.json")
    plan.add_argument("--fp32", action="store_true", help="no compression passes")
    plan.add_argument("--int8", action="store_true", help="int8 rows + int8 Linear weights, no search")
    p.add_argument("--formats", help="comma list of numpy, executorch, litert (default: numpy plus every app "
                                     "format whose toolchain is installed; see pip install 'edgecompress[export]')")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--sign", action="store_true", help="sign the bundle with the key from `edgecompress keys init`")
    p.add_argument("--latency-table", help="measured latency table for the latency model: a device name calibrated "
                                           "with `edgecompress calibrate`, a .json path, or 'none' (default: the "
                                           "table calibrated for --target, if any)")
    p.add_argument("--towers", metavar="SPEC",
                   help="compile for on-device retrieval: a user tower plus the item-embedding matrix, ranked "
                        "in one call by topk(); 'auto' (a model with user_embedding/item_embedding, e.g. "
                        "two_tower) or USER_METHOD,ITEM_METHOD[:user_input+user_input]")
    add_output_args(p)
    p.set_defaults(fn=compile_cmd)


# ------------------------------------------------------------------------------------------ verbs

def demo_cmd(args) -> int:
    from ..demo import run_demo
    board = board_from_args(args, progress=lambda m: print(f"      {m}")) if args.device else None
    try:
        with toolchain_log("demo", args.verbose) as log:
            run_demo(target=args.target, out_dir=args.out, json_out=args.json, rows=args.rows,
                     epochs=args.epochs, iters=args.iters, progress=not args.quiet, board=board,
                     min_seconds=args.min_seconds, cooldown_s=args.cooldown, rerun=args.rerun, cores=args.cores,
                     force=args.force)
    finally:
        if board is not None:
            board.close()
    say_log(log)
    return 0


def targets_cmd(args) -> int:
    from ..targets import list_targets
    ts = list_targets()
    if args.json:
        print(json.dumps([t.to_dict() for t in ts], indent=1))
        return 0
    print_table(["name", "arch", "cores", "RAM", "memory budget", "latency budget", "backends"],
                [[t.name, t.arch, t.cores, f"{t.ram_mb} MB", t.memory_budget, t.latency_budget,
                  ", ".join(t.backends)] for t in ts], right=("cores", "RAM", "memory budget", "latency budget"))
    return 0


def package_cmd(args) -> int:
    from ..export.app_package import package
    written = package(args.bundle, android=args.android, ios=args.ios, formats=args.formats,
                      kotlin_package=args.kotlin_package)
    for platform, paths in written.items():
        print(f"{platform}: wrote {', '.join(paths)}")
    return 0


def compile_cmd(args) -> int:
    from ..compile import compile
    model, ds = _model_and_data(args)
    train = _load_data(args.train_data) if args.train_data else None
    roles = {"valid_data": _load_data(args.valid_data) if args.valid_data else None,
             "test_data": _load_data(args.test_data) if args.test_data else None}
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    plan = _plan_from_args(args)
    with toolchain_log("compile", args.verbose) as log, \
            status(f"compiling {args.model} for {args.target}", log.terminal,
                   enabled=not (args.quiet or args.verbose)):   # --verbose: the library's own bar shows
        res = compile(model, target=args.target, data=ds, output=args.output, plan=plan, formats=formats,
                      memory_budget=args.memory_budget, latency_budget=args.latency_budget, metric=args.metric,
                      metric_output=args.metric_output, input_spec=_read_input_spec(args.input_spec),
                      train_data=train, **roles, seed=args.seed, report=args.report, progress=not args.quiet,
                      latency_table=args.latency_table, towers=args.towers, train_budget=args.train_budget)
    for w in getattr(res, "warnings", []):
        print(f"edgecompress: warning: {w}", file=sys.stderr)
    if args.sign:
        from ..deploy.keys import sign_bundle
        sign_bundle(res.path)
    if args.json:
        print(json.dumps(res.summary(), indent=1, default=str))
    else:
        from .compile_report import print_compile_result
        print_compile_result(res, console())
    say_log(log)
    return 0


# ------------------------------------------------------------------------------------------ inputs

def _model_and_data(args):
    import torch

    from ..models.zoo import model_for_data
    ds = _load_data(args.data)
    factory, zoo_name = load_factory(args.model)
    model = model_for_data(zoo_name, getattr(ds, "train", ds)) if zoo_name else factory()
    if args.weights:
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:  # torch raises several kinds for bad files
            raise EdgecompressError(f"cannot load --weights {args.weights}: {str(e).splitlines()[0]}") from None
    return model, ds


def load_factory(spec: str):
    """``--model``: a zoo name -> (None, name); MODULE:FACTORY -> (factory, None)."""
    from ..models.zoo import ZOO
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
    from ..data import load
    return load(spec)


def _plan_from_args(args):
    """None: search under the budgets; else the list of pass configs to apply."""
    from ..passes import DEFAULT_PLAN, plan_from_json
    if args.fp32:
        return []
    if args.int8:
        return list(DEFAULT_PLAN)
    if not args.plan:
        return None
    try:
        items = json.loads(Path(args.plan).read_text())
    except (OSError, ValueError) as e:
        raise EdgecompressError(f"cannot read --plan {args.plan}: {e}") from None
    return plan_from_json(items["plan"] if isinstance(items, dict) else items)


def _duration(text: str) -> str:
    """argparse type for --train-budget: "10m", "90s", "1.5h" (the user's string is kept)."""
    from ..units import parse_duration
    try:
        parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _read_input_spec(path):
    """--input-spec FILE: JSON or TOML, {input: {vocab | fields | padding_id | id_columns}}."""
    if not path:
        return None
    try:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib
            return tomllib.loads(text)
        return json.loads(text)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read --input-spec {path}: {e}") from None
