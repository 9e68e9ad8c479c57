"""edgecompress: compress recommenders for edge devices, then run and measure them there.

Start with `edgecompress demo`: it trains a small DLRM, compiles it for a
Raspberry Pi 4 profile and benchmarks the bundle on this machine."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import ERRORS, exit_code
from . import calibrate, compile, devices, lab

__all__ = ["main", "build_parser", "version_text"]

EPILOG = """examples:
  edgecompress demo
  edgecompress targets
  edgecompress compile --model dlrm --data synthetic -o dlrm.ecb --target raspberry-pi-4
  edgecompress bench dlrm.ecb --device pi@raspberrypi.local
  edgecompress VERB --help          # the options and examples of one verb

exit codes: 0 ok, 2 bad input or command line, 3 no plan fits the budgets, 10-23 a board
(see docs/cli.md), 130 interrupted, 141 output pipe closed early."""


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str, fallback: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return fallback
    import edgecompress
    import edgecompress_runtime
    return (f"edgecompress {of('edgecompress', edgecompress.__version__)} "
            f"(edgecompress-runtime {of('edgecompress-runtime', edgecompress_runtime.__version__)}, "
            f"Python {sys.version.split()[0]})")


class _Version(argparse.Action):
    """--version, computed only when asked (the metadata look-ups are not free)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgecompress", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version, help="print the versions of edgecompress and its runtime")
    sub = ap.add_subparsers(dest="cmd", metavar="VERB")
    compile.add_parsers(sub)      # demo, targets, compile, package
    devices.add_parsers(sub)      # deploy, bench, farm, keys
    calibrate.add_parsers(sub)    # calibrate
    lab.add_parsers(sub)          # lab (Ray nodes for farm --ray)
    return ap


def main(argv=None) -> int:
    """Run one verb; errors we raise on purpose become one line on stderr and the exit code of
    ``edgecompress.errors.EXIT_CODES``. A bare ``edgecompress`` prints the help and exits 0."""
    try:
        return _run(argv)
    except BrokenPipeError:
        return _closed_pipe()


def _run(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        sys.stdout.flush()     # --help / --version into a closed pipe: BrokenPipeError here, not at exit
        raise
    try:
        if getattr(args, "fn", None) is None:
            parser.print_help()
            code = 0
        else:
            code = args.fn(args)
        sys.stdout.flush()     # a closed pipe shows here, not at interpreter exit
        return code
    except ERRORS as e:
        print(f"edgecompress: error: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        print("edgecompress: interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader went away (``edgecompress targets --json | head``): stop quietly, as a Unix tool
    killed by SIGPIPE would (exit 141), and keep Python from failing again on its final flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # stdout without a file descriptor (tests)
        pass
    return 141
