"""Option groups several verbs share, each defined once: reaching boards over SSH,
benchmark settings, output (--quiet / --verbose), and the value parsers (sizes,
latencies, batch sizes) -- plus the board / SSH settings those options describe."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path

from edgecompress_runtime.cli import batch_sizes   # one parser for "1,64,256" on both sides

from ..errors import InventoryError
from ..targets import parse_latency, parse_size

__all__ = ["add_verb", "add_ssh_args", "add_bench_args", "add_profile_args", "profile_from_args",
           "add_stability_args", "add_output_args", "batch_sizes",
           "size_with_unit", "latency", "settings_from_args", "inventory_from_args", "board_from_args",
           "board_kwargs_from_args", "write_json"]

SIZE_UNITS = "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
_BARE_NUMBER = re.compile(r"\s*[0-9][0-9_.]*\s*")


def add_verb(sub, name: str, help: str, examples: str, description: str | None = None):
    """A verb whose --help ends with its examples (kept as written: RawDescriptionHelpFormatter)."""
    return sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                          epilog="examples:\n" + examples.strip("\n"),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def size_with_unit(text: str) -> str:
    """argparse type for sizes: "8MB", "512KiB", "335154B". A bare number is refused (is "8"
    bytes or megabytes?). The user's string is kept; the library parses it again."""
    if _BARE_NUMBER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"size {text!r} has no unit: write e.g. {text.strip()}MB or "
                                         f"{text.strip()}KiB, or {text.strip()}B for bytes (units: {SIZE_UNITS})")
    return _checked(parse_size)(text)


def latency(text: str) -> str:
    """argparse type for latency budgets: "2ms@64" (the user's string is kept)."""
    return _checked(parse_latency)(text)


def _checked(parse):
    """Validate with ``parse`` but keep the user's string; argparse shows our message."""
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    return check


def add_output_args(p, progress: bool = True) -> None:
    """--quiet (no progress) and --verbose (toolchain logs on the terminal instead of a log file)."""
    g = p.add_argument_group("output")
    if progress:
        g.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="show toolchain messages (TensorFlow, torchao, warnings) instead of writing them to a "
                        "log file under ~/.cache/edgecompress/logs")


def add_ssh_args(p, device: bool = True) -> None:
    """Options every verb that talks to boards shares."""
    from ..deploy.connection import PASSWORD_ENV
    if device:
        p.add_argument("--device", "-d", help="device name from --inventory, or user@host[:port]")
    g = p.add_argument_group("reaching boards")
    g.add_argument("--inventory", help="devices.toml listing the boards")
    g.add_argument("--known-hosts", action="append", metavar="FILE",
                   help="known_hosts file(s) (default ~/.ssh/known_hosts)")
    g.add_argument("--trust-on-first-use", action="store_true",
                   help="accept and record the host key of a board not yet in known_hosts")
    g.add_argument("-i", "--identity", action="append", metavar="KEY", help="SSH private key file")
    g.add_argument("--allow-password", action="store_true",
                   help=f"allow password login (password from ${PASSWORD_ENV} or a prompt)")
    g.add_argument("--ssh-config", help="ssh config file (default ~/.ssh/config)")
    g.add_argument("-J", "--jump", metavar="[USER@]HOST[:PORT][,...]",
                   help="reach the board through these jump hosts (bastions), in order, like ssh -J; wins over "
                        "devices.toml proxy_jump and ProxyJump in the ssh config; 'none' for a direct connection")
    g.add_argument("--connect-timeout", type=float, help="seconds to connect (default 10)")
    g.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a benchmark on the board may run before it is stopped (default 600)")
    g.add_argument("--install-timeout", type=float, default=1800.0,
                   help="seconds installing the runtime on the board may take (default 1800)")
    signing = g.add_mutually_exclusive_group()
    signing.add_argument("--no-sign", action="store_true", help="do not sign bundles even if a signing key exists")
    signing.add_argument("--add-trusted-key", action="store_true",
                         help="add this host's signing key to a board that already trusts other keys")
    g.add_argument("--wheelhouse", help="directory of wheels for the board (when this host is offline)")
    g.add_argument("--online", action="store_true",
                   help="let the board's pip fetch missing dependencies from its own index")


def add_bench_args(p) -> None:
    g = p.add_argument_group("benchmark")
    g.add_argument("--batch", type=batch_sizes, default=[1, 64, 256], help="batch sizes (default 1,64,256)")
    g.add_argument("--warmup", type=int, default=20, help="untimed runs per batch size (default 20)")
    g.add_argument("--iters", type=int, default=200, help="timed runs per batch size (default 200)")
    g.add_argument("--backend", default="auto", help="runtime backend on the board (default auto)")
    g.add_argument("--repeat", type=int, default=1, help="benchmark N times (default 1)")
    add_stability_args(g)
    g.add_argument("--force", action="store_true",
                   help="benchmark a bundle compiled for a target of another architecture than the board's")


def add_profile_args(p) -> None:
    """``bench --profile``: the on-device op profile (edgecompress_runtime/profile.py)."""
    g = p.add_argument_group("op profile")
    g.add_argument("--profile", action="store_true",
                   help="also time every node of the numpy graph on the board (median per node), by op and by "
                        "layer, next to the latency model's estimate")
    g.add_argument("--profile-batch", type=int, help="batch size of the profile (default: the largest --batch)")
    g.add_argument("--profile-runs", type=int, default=100, help="profiled runs (default 100)")
    g.add_argument("--top", type=int, default=10, help="ops and layers to print (default 10)")


def profile_from_args(args) -> dict | None:
    """Board.bench's ``profile=`` from the --profile options (None without --profile)."""
    if not getattr(args, "profile", False):
        return None
    out = {"runs": args.profile_runs}
    if args.profile_batch:
        out["batch"] = args.profile_batch
    return out


def add_stability_args(g) -> None:
    """How long each batch size runs, pinning, and the cooldown and re-run of noisy runs
    (bench, farm and demo)."""
    g.add_argument("--min-seconds", type=float, default=0.5,
                   help="time each batch size at least this long, besides --iters runs (default 0.5; "
                        "MLPerf-style: --iters 1024 --min-seconds 60)")
    g.add_argument("--cooldown", type=float, default=2.0,
                   help="seconds to rest between repeats and before re-running a noisy run (default 2)")
    g.add_argument("--no-rerun", dest="rerun", action="store_false",
                   help="do not re-run a run the machine made noisy or unusable (load, other processes, heat)")
    g.add_argument("--cores", help="pin the benchmark on the board to big or little cores, or a list like 0-3")


def settings_from_args(args):
    """The SSHSettings the --known-hosts / --identity / ... options describe."""
    from ..deploy.connection import PASSWORD_ENV, SSHSettings
    s = SSHSettings(
        known_hosts=tuple(args.known_hosts) if args.known_hosts else None,
        trust_on_first_use=args.trust_on_first_use,
        allow_password=args.allow_password,
        identity_files=tuple(args.identity or ()),
        ssh_config=args.ssh_config,
        proxy_jump=getattr(args, "jump", None),
    )
    if args.connect_timeout:
        s = s.with_(connect_timeout=args.connect_timeout, banner_timeout=args.connect_timeout)
    if args.allow_password and os.environ.get(PASSWORD_ENV) is None and sys.stdin.isatty():
        s = s.with_(password=getpass.getpass("SSH password: "))
    return s


def inventory_from_args(args):
    if not getattr(args, "inventory", None):
        return None
    from ..deploy.inventory import load_inventory
    return load_inventory(args.inventory)


def board_kwargs_from_args(args) -> dict:
    """How boards are installed and trusted: the same for one board and for a farm."""
    return dict(sign=False if args.no_sign else None, add_trusted_key=args.add_trusted_key,
                offline=not args.online, wheelhouse_dir=args.wheelhouse, install_timeout=args.install_timeout)


def board_from_args(args, progress=print):
    """The SSHBoard ``--device`` (and ``--inventory``) name."""
    from ..deploy.ssh_board import SSHBoard
    from ..deploy.inventory import resolve
    if not args.device:
        raise InventoryError("which board? pass --device NAME (with --inventory) or --device user@host[:port]")
    inv = inventory_from_args(args)
    device = resolve(args.device, inv)
    settings = settings_from_args(args)
    if inv is not None:
        settings = inv.settings(settings)
    return SSHBoard(device, settings, progress=progress, **board_kwargs_from_args(args))


def write_json(path, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=str))
