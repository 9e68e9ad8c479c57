"""The ``calibrate`` verb: measure a device's latency table and, with --validate, check
the latency model against benchmarks there (the work is in ``edgecompress.calibrate``)."""
from __future__ import annotations

import json
from pathlib import Path

from .options import add_output_args, add_ssh_args, add_verb, batch_sizes, board_from_args, settings_from_args
from .output import say_log, toolchain_log

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = add_verb(sub, "calibrate", "measure a device's latency table (used by the planner) and check the latency "
                                   "model against benchmarks", """
  edgecompress calibrate --device local                         # this machine (LocalBoard venv)
  edgecompress calibrate --device pi@10.0.0.7 --target raspberry-pi-4
  edgecompress calibrate --device pi4 --inventory devices.toml --validate --json out.json --report out.html
  edgecompress calibrate --device local --no-fit                   # micro-benchmarks only, no graph fit""")
    add_ssh_args(p)
    g = p.add_argument_group("calibration")
    g.add_argument("--target", help="target profile of the device (also stores the table under this name; "
                                    "default: the device's target in devices.toml, or 'local' for --device local)")
    g.add_argument("--quick", action="store_true", help="a smaller grid (default: automatic on emulated boards)")
    g.add_argument("--batch", type=batch_sizes, help="batch sizes (default: the target profile's)")
    g.add_argument("--no-fit", action="store_true", help="skip the graph fit on probe models (micro-benchmarks "
                                                         "only; faster, less accurate)")
    g.add_argument("--app-runtimes", action="store_true",
                   help="with --device local: a local board venv that also sees this host's LiteRT / ExecuTorch "
                        "runtimes, so their latency is calibrated too (boards over SSH: whatever they have installed)")
    g.add_argument("--validate", action="store_true", help="compile >= 10 DLRM plans, benchmark them on the "
                                                           "device and report the latency model's error")
    g.add_argument("--iters", type=int, default=100, help="with --validate: timed runs per batch (default 100)")
    g.add_argument("--small", action="store_true", help="with --validate: one small model only (faster)")
    g.add_argument("--json", help="write the table and the validation report to this JSON file")
    g.add_argument("--report", help="write an HTML page (predicted vs measured plot, errors per batch size, the "
                                    "graph fit, every measurement) to this file")
    add_output_args(p, progress=False)
    p.set_defaults(fn=calibrate_cmd)


def calibrate_cmd(args) -> int:
    from edgecompress_runtime.calibrate import summary

    from ..calibrate import calibrate
    device = args.device or "local"
    settings = None if device == "local" else settings_from_args(args)
    board = None
    if device != "local":
        board = board_from_args(args)
        if args.target:
            board.device = board.device.with_(target=args.target)
    with toolchain_log("calibrate", args.verbose) as log:
        res = calibrate(device, board=board, settings=settings, target=args.target,
                        quick=True if args.quick else None, app_runtimes=bool(getattr(args, "app_runtimes", False)),
                        batches=args.batch, fit=not args.no_fit, validate=args.validate,
                        validate_kwargs={"iters": args.iters, "small": args.small} if args.validate else None)
    print(summary(res["table"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"full results: {args.json}")
    if args.report:
        from ..report.calibration_page import render_html
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(render_html(res))
        print(f"report: {args.report}")
    say_log(log)
    return 0
