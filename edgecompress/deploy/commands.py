"""The command-line side of deploying: ``edgecompress deploy | bench | farm | keys``
and ``demo --device``. ``edgecompress/cli.py`` declares the verbs and calls these."""
from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from edgecompress_runtime.cli import batch_sizes as _batches   # one parser for "1,64,256" on both sides

from ..errors import EdgecompressError, FarmError, InventoryError
from .connection import PASSWORD_ENV, SSHSettings


def add_ssh_args(p, device: bool = True) -> None:
    """Options every verb that talks to boards shares."""
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
    g.add_argument("--connect-timeout", type=float, help="seconds to connect (default 10)")
    g.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a benchmark on the board may run before it is stopped (default 600)")
    g.add_argument("--install-timeout", type=float, default=1800.0,
                   help="seconds installing the runtime on the board may take (default 1800)")
    g.add_argument("--no-sign", action="store_true", help="do not sign bundles even if a signing key exists")
    g.add_argument("--add-trusted-key", action="store_true",
                   help="add this host's signing key to a board that already trusts other keys")
    g.add_argument("--wheelhouse", help="directory of wheels for the board (when this host is offline)")
    g.add_argument("--online", action="store_true",
                   help="let the board's pip fetch missing dependencies from its own index")


def settings_from_args(args) -> SSHSettings:
    s = SSHSettings(
        known_hosts=tuple(args.known_hosts) if args.known_hosts else None,
        trust_on_first_use=args.trust_on_first_use,
        allow_password=args.allow_password,
        identity_files=tuple(args.identity or ()),
        ssh_config=args.ssh_config,
    )
    if args.connect_timeout:
        s = s.with_(connect_timeout=args.connect_timeout, banner_timeout=args.connect_timeout)
    if args.allow_password and os.environ.get(PASSWORD_ENV) is None and sys.stdin.isatty():
        s = s.with_(password=getpass.getpass("SSH password: "))
    return s


def _inventory(args):
    if not getattr(args, "inventory", None):
        return None
    from .inventory import load_inventory
    return load_inventory(args.inventory)


def board_from_args(args, progress=print):
    from .board import SSHBoard
    from .inventory import resolve
    if not args.device:
        raise InventoryError("which board? pass --device NAME (with --inventory) or --device user@host[:port]")
    inv = _inventory(args)
    device = resolve(args.device, inv)
    settings = settings_from_args(args)
    if inv is not None:
        settings = inv.settings(settings)
    return SSHBoard(device, settings, sign=False if args.no_sign else None, add_trusted_key=args.add_trusted_key,
                    offline=not args.online, wheelhouse_dir=args.wheelhouse, install_timeout=args.install_timeout,
                    progress=progress)


def deploy_cmd(args) -> int:
    out = []
    with board_from_args(args) as board:
        if args.uninstall:
            board.uninstall(remove_trusted_keys=args.remove_trusted_keys)
            print(f"removed the install from {board.conn.label}")
            return 0
        if not args.bundles:
            rep = board.install_runtime(progress=print)
            print(f"runtime {rep['version']} {'installed' if rep['installed'] else 'already installed'} on "
                  f"{board.conn.label} ({rep['seconds']:.1f} s)")
            out.append(rep)
        for b in args.bundles:
            rep = board.deploy(b, progress=print)
            rt = rep["runtime"]
            print(f"{Path(b).name} -> {board.conn.label}:{rep['remote_path']} "
                  f"({'uploaded' if rep['bundle_uploaded'] else 'already there'}; "
                  f"{'signed' if rep['signed'] else 'unsigned'}; runtime {rep['version']} "
                  f"{'installed' if rt['installed'] else 'already installed'}; {rep['seconds']:.1f} s)")
            out.append(rep)
    if args.json:
        _write_json(args.json, out)
    return 0


def bench_cmd(args) -> int:
    from edgecompress_runtime.bench import format_table
    with board_from_args(args) as board:
        res = board.bench(args.bundle, batches=args.batch, warmup=args.warmup, iters=args.iters,
                          backend=args.backend, timeout_s=args.timeout, repeat=args.repeat,
                          cooldown_s=args.cooldown, progress=print)
    f = res["board"]
    print(format_table(res))
    print(f"board {res['device']['name']} ({res['device']['address']}): {f.get('cpu_model')} ({f.get('machine')}), "
          f"{f.get('cores')} cores, governor {', '.join(f.get('governors') or ['n/a'])}, Python {f.get('python')}, "
          f"numpy {f.get('packages', {}).get('numpy')}")
    if res["runs"][0].get("temps_before"):
        t0 = max(res["runs"][0]["temps_before"].values())
        t1 = max(res["runs"][-1]["temps_after"].values() or [t0])
        print(f"temperature {t0:.1f} -> {t1:.1f} C")
    a = res["agreement"]
    if a["repeats"] > 1:
        print(f"{a['repeats']} repeats: p50 spread up to {a['max_spread'] * 100:.1f}% "
              f"({'agree' if a['ok'] else 'DISAGREE'} within {a['tolerance'] * 100:.0f}%)")
    if args.json:
        _write_json(args.json, res)
        print(f"full results: {args.json}")
    return 0


def farm_cmd(args) -> int:
    from .farm import Farm, format_table
    from .inventory import resolve
    inv = _inventory(args)
    if inv is None and not args.device:
        raise InventoryError("farm needs --inventory devices.toml (or one or more --device user@host)")
    if args.device:
        devices = [resolve(d, inv) for d in args.device]
    else:
        devices = inv.select(tags=[t for t in (args.tags or "").split(",") if t])
    settings = settings_from_args(args)
    if inv is not None:
        settings = inv.settings(settings)
    out_dir = Path(args.out)
    farm = Farm(devices, args.bundles, settings, parallel=args.parallel, retries=args.retries,
                backoff_s=args.backoff, out_dir=out_dir,
                bench_kwargs=dict(batches=args.batch, warmup=args.warmup, iters=args.iters, timeout_s=args.timeout,
                                  repeat=args.repeat, cooldown_s=args.cooldown),
                board_kwargs=dict(sign=False if args.no_sign else None, add_trusted_key=args.add_trusted_key,
                                  offline=not args.online, wheelhouse_dir=args.wheelhouse,
                                  install_timeout=args.install_timeout))
    report = farm.run()
    print()
    print(format_table(report))
    print(f"\nresults: {out_dir / 'farm.json'}   report: {out_dir / 'farm.html'}")
    s = report["summary"]
    if s["failed"]:
        raise FarmError(f"{s['failed']} of {s['jobs']} jobs failed"
                        + (f"; devices down: {', '.join(s['devices_down'])}" if s["devices_down"] else "")
                        + f"; the other results are in {out_dir / 'farm.json'}")
    return 0


def keys_cmd(args) -> int:
    from . import keys
    if args.action == "init":
        k = keys.init_key(force=args.force)
        print(f"created signing key {k.key_id} at {k.path} (public key: {k.path}.pub)")
        print("bundles you deploy are now signed; the first deploy to each board makes it trust this key")
    elif args.action == "show":
        k = keys.load_key()
        print(k.public_line(f"edgecompress key {k.key_id}").strip())
        print(f"key id {k.key_id}, private key {k.path}")
    elif args.action == "sign":
        if not args.bundles:
            raise EdgecompressError("keys sign needs one or more bundles")
        k = keys.load_key()
        for b in args.bundles:
            keys.sign_bundle(b, key=k)
            print(f"signed {b} with key {k.key_id}")
    return 0


def demo_board(args):
    """The board ``edgecompress demo --device`` runs on (None: this machine)."""
    if not getattr(args, "device", None):
        return None
    return board_from_args(args, progress=lambda m: print(f"      {m}"))


def _write_json(path, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=str))
