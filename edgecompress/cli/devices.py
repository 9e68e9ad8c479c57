"""The verbs that work on boards: ``deploy``, ``bench``, ``farm`` (over SSH), and ``keys``
(the signing key deploys use)."""
from __future__ import annotations

from pathlib import Path

from ..deploy.agreement import check_target
from ..errors import EdgecompressError, FarmError, FarmMovedError, InventoryError
from .options import (add_bench_args, add_profile_args, add_ssh_args, add_verb, board_from_args,
                      board_kwargs_from_args, inventory_from_args, profile_from_args, settings_from_args, write_json)

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = add_verb(sub, "deploy", "install the runtime and bundles on a board over SSH", """
  edgecompress deploy --device pi@raspberrypi.local                  # just the runtime
  edgecompress deploy dlrm.ecb --device pi@raspberrypi.local         # runtime + bundle
  edgecompress deploy --device pi4 --inventory devices.toml --uninstall""")
    p.add_argument("bundles", nargs="*", help="bundles to put on the board (none: just the runtime)")
    add_ssh_args(p)
    p.add_argument("--uninstall", action="store_true", help="remove edgecompress from the board instead")
    p.add_argument("--remove-trusted-keys", action="store_true", help="with --uninstall: also forget signing keys")
    p.add_argument("--json", help="write what was done to this JSON file")
    p.add_argument("--force", action="store_true",
                   help="deploy a bundle compiled for a target of another architecture than the board's")
    p.set_defaults(fn=deploy_cmd)

    p = add_verb(sub, "bench", "benchmark a bundle on a board over SSH (deploys it if needed)", """
  edgecompress bench dlrm.ecb --device pi@raspberrypi.local
  edgecompress bench dlrm.ecb --device pi@raspberrypi.local --repeat 3 --cooldown 10 --json bench.json
  edgecompress bench dlrm.ecb --device pi@raspberrypi.local --profile --top 5     # where the time goes
  edgecompress bench dlrm.ecb --device local --profile                            # this machine as a board""")
    p.add_argument("bundle")
    add_ssh_args(p)
    add_bench_args(p)
    add_profile_args(p)
    p.add_argument("--json", help="write every number to this JSON file")
    p.set_defaults(fn=bench_cmd)
    _add_farm(sub)

    p = add_verb(sub, "keys", "the signing key for bundles: init | show | sign BUNDLE...", """
  edgecompress keys init          # from now on deploys sign bundles
  edgecompress keys show
  edgecompress keys sign a.ecb b.ecb""")
    p.add_argument("action", choices=["init", "show", "sign"])
    p.add_argument("bundles", nargs="*", help="with sign: bundles to sign in place")
    p.add_argument("--force", action="store_true", help="with init: replace an existing key")
    p.set_defaults(fn=keys_cmd)


def _add_farm(sub) -> None:
    p = add_verb(sub, "farm", "benchmark bundles on many boards in parallel (devices.toml)", """
  edgecompress farm a.ecb b.ecb --inventory devices.toml --tags lab    # out/farm/farm.json + farm.html
  edgecompress farm a.ecb --device pi@10.0.0.21 --device pi@10.0.0.22 --parallel 2
  edgecompress farm a.ecb b.ecb --inventory devices.toml --resume out/farm   # run what out/farm has not done
  edgecompress farm report out/farm/farm.json          # the table and farm.html again, from the file alone
  edgecompress farm a.ecb b.ecb --ray 10.0.0.5:6379    # on a Ray lab (edgecompress lab start): every board
  edgecompress farm a.ecb b.ecb --ray 10.0.0.5:6379 --target raspberry-pi-4 --same-board   # A/B on one Pi

exit status: 0 every job ok; 25 all done but some moved to another board (a board went down);
23 some jobs failed (docs/cli.md)""")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="bundles to benchmark; or `report FILE`: the table and page of a farm.json / farm.jsonl "
                        "/ their directory, without boards")
    add_ssh_args(p, device=False)
    which = p.add_argument_group("which boards (one of)").add_mutually_exclusive_group()
    which.add_argument("--device", "-d", action="append", help="a device (name or user@host[:port]); repeatable")
    which.add_argument("--tags", help="only devices of --inventory having all these tags (comma list)")
    p.add_argument("--parallel", type=int, help="boards at work at once (default: all)")
    p.add_argument("--retries", type=int, default=2, help="retries of a dropped device before its work moves "
                                                          "(default 2)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubling (default 2)")
    p.add_argument("--out", help="where farm.json, farm.jsonl and farm.html go (default out/farm; with --resume "
                                 "the resumed run's directory; with report the file's directory)")
    p.add_argument("--resume", metavar="FARM_JSON",
                   help="an earlier run's farm.json, farm.jsonl or directory: skip the jobs it finished (same "
                        "bundle sha256 and device), run the rest")
    lab = p.add_argument_group("on a Ray lab (pip install 'edgecompress[farm]'; see `edgecompress lab`)")
    lab.add_argument("--ray", metavar="HEAD", help="HOST:PORT of a lab's head: jobs run as Ray tasks on the lab "
                                                   "hosts that reach the boards (their own inventories)")
    lab.add_argument("--target", help="only boards of these target profiles (comma list); one no board has is "
                                      "refused before any job runs")
    lab.add_argument("--same-board", action="store_true", help="with --ray: one board per profile runs every "
                                                               "bundle, and nothing moves (A/B comparisons)")
    add_bench_args(p)
    p.set_defaults(fn=farm_cmd)


def bench_kwargs_from_args(args) -> dict:
    """Board.bench's settings from the benchmark options (bench and farm)."""
    return dict(batches=args.batch, warmup=args.warmup, iters=args.iters, backend=args.backend,
                timeout_s=args.timeout, repeat=args.repeat, cooldown_s=args.cooldown, min_seconds=args.min_seconds,
                cores=args.cores, rerun=args.rerun, force=args.force)


def deploy_cmd(args) -> int:
    if args.remove_trusted_keys and not args.uninstall:
        raise EdgecompressError("--remove-trusted-keys goes with --uninstall")
    if args.uninstall and args.bundles:
        raise EdgecompressError("--uninstall removes the install: give no bundles with it")
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
            check = check_target(b, board, force=args.force)
            for w in check["warnings"]:
                print(f"warning: {w}")
            rep = board.deploy(b, progress=print)
            rep["target_check"] = check
            rt = rep["runtime"]
            print(f"{Path(b).name} -> {board.conn.label}:{rep['remote_path']} "
                  f"({'uploaded' if rep['bundle_uploaded'] else 'already there'}; "
                  f"{'signed' if rep['signed'] else 'unsigned'}; runtime {rep['version']} "
                  f"{'installed' if rt['installed'] else 'already installed'}; {rep['seconds']:.1f} s)")
            out.append(rep)
    if args.json:
        write_json(args.json, out)
    return 0


def bench_cmd(args) -> int:
    from edgecompress_runtime.bench import format_table
    with _bench_board(args) as board:
        res = board.bench(args.bundle, progress=print, profile=profile_from_args(args), **bench_kwargs_from_args(args))
    f = res["board"]
    print(format_table(res))
    if res.get("profile"):
        _print_profile(res["profile"], args.top)
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
        write_json(args.json, res)
        print(f"full results: {args.json}")
    return 0


def _bench_board(args):
    """``--device local`` (without --inventory): this machine as a board (LocalBoard); else over SSH."""
    if args.device == "local" and not args.inventory:
        from ..deploy.local import LocalBoard
        return LocalBoard()
    return board_from_args(args)


def _print_profile(prof: dict, top: int) -> None:
    from edgecompress_runtime.profile import format_profile
    est = prof.get("estimate")
    print(format_profile(prof, top=top, estimates=est))
    if prof.get("estimate_error"):
        print(f"  (no latency-model estimate: {prof['estimate_error']})")
    elif est:
        print(f"  the latency model's total at batch {est['batch']}: {est['total_ms']:.3f} ms "
              f"(measured whole model p50 {prof['whole_p50_ms']:.3f} ms)")


def farm_cmd(args) -> int:
    from ..farm import Farm
    from ..deploy.inventory import resolve
    if args.bundles[0] == "report" and not Path("report").is_file():
        return farm_report_cmd(args)
    if args.ray:
        return _farm_ray(args)
    if args.same_board:
        raise EdgecompressError("--same-board pins jobs on a Ray lab: use it with --ray HEAD")
    inv = inventory_from_args(args)
    if inv is None and not args.device:
        raise InventoryError("farm needs --inventory devices.toml (or one or more --device user@host)")
    if args.device:
        devices = [resolve(d, inv) for d in args.device]
    else:
        devices = inv.select(tags=[t for t in (args.tags or "").split(",") if t])
    targets = _targets(args)
    if targets:
        offered = sorted({d.target for d in devices if d.target})
        devices = [d for d in devices if d.target in targets]
        if not devices or set(targets) - set(offered):
            raise InventoryError(f"no device has target {', '.join(sorted(set(targets) - set(offered)))} "
                                 f"(targets: {', '.join(offered) or 'none'})")
    settings = settings_from_args(args)
    if inv is not None:
        settings = inv.settings(settings)
    out_dir = Path(args.out or (_record_dir(args.resume) if args.resume else "out/farm"))
    farm = Farm(devices, args.bundles, settings, parallel=args.parallel, retries=args.retries,
                backoff_s=args.backoff, out_dir=out_dir,
                bench_kwargs=bench_kwargs_from_args(args),
                board_kwargs=board_kwargs_from_args(args), resume=args.resume)
    return _farm_done(farm.run(), out_dir)


def _targets(args) -> list[str]:
    return [t for t in (args.target or "").split(",") if t]


def _farm_ray(args) -> int:
    """``farm --ray HEAD``: the boards are the lab's (each lab host's own inventory)."""
    from ..farm.lab import check_head, import_ray
    if args.inventory:
        raise EdgecompressError("with --ray the boards are the lab's (each host's `lab start --inventory`): "
                                "drop --inventory")
    import_ray()
    from ..farm.ray_pool import RayFarm
    check_head(args.ray)
    out_dir = Path(args.out or (_record_dir(args.resume) if args.resume else "out/farm"))
    farm = RayFarm(args.ray, args.bundles, settings_from_args(args), targets=_targets(args),
                   names=args.device or (), tags=[t for t in (args.tags or "").split(",") if t],
                   same_board=args.same_board, retries=args.retries, backoff_s=args.backoff, out_dir=out_dir,
                   bench_kwargs=bench_kwargs_from_args(args), board_kwargs=board_kwargs_from_args(args),
                   resume=args.resume)
    return _farm_done(farm.run(), out_dir)


def _farm_done(report: dict, out_dir: Path) -> int:
    from ..farm import format_table
    print()
    print(format_table(report))
    print(f"\nresults: {out_dir / 'farm.json'} (journal {out_dir / 'farm.jsonl'})   report: {out_dir / 'farm.html'}")
    return farm_verdict(report, out_dir / "farm.json")


def _record_dir(path) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def farm_report_cmd(args) -> int:
    """``farm report FILE``: the terminal table and farm.html from a farm record alone."""
    from ..farm import format_table
    from ..farm.journal import load_report, source
    from ..report.farm_page import render_html
    if len(args.bundles) != 2:
        raise EdgecompressError("farm report takes one farm.json, farm.jsonl or their directory")
    given = [f for f in ("device", "tags", "inventory", "resume") if getattr(args, f, None)]
    if given:
        raise EdgecompressError(f"farm report reads a file, it runs nothing: drop --{', --'.join(given)}")
    src = source(args.bundles[1])
    report = load_report(src)
    out_dir = Path(args.out) if args.out else src.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "farm.html").write_text(render_html(report))
    print(format_table(report))
    print(f"\nfrom {src}   report: {out_dir / 'farm.html'}")
    return farm_verdict(report, src)


def farm_verdict(report: dict, where) -> int:
    """The farm's exit status: 0 all ok; FarmError (23) some failed or never finished;
    FarmMovedError (25) all done but some moved to another device than planned."""
    s = report["summary"]
    down = f"; devices down: {', '.join(s['devices_down'])}" if s["devices_down"] else ""
    moved = f"; {s['moved']} moved to another device" if s.get("moved") else ""
    if s["failed"] or s.get("unfinished"):
        what = f"{s['failed']} of {s['jobs']} jobs failed" if s["failed"] else f"0 of {s['jobs']} jobs failed"
        if s.get("unfinished"):
            what += f", {s['unfinished']} never finished (resume with --resume {where})"
        raise FarmError(what + down + moved + f"; the other results are in {where}")
    if s.get("moved"):
        raise FarmMovedError(f"all {s['jobs']} jobs done, but {s['moved']} ran on another device than planned"
                             + down + f" (results in {where})")
    return 0


def keys_cmd(args) -> int:
    from ..deploy import keys
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
