"""Concurrent deploys of different runtime versions to one real OpenSSH board (needs root;
issue 13 item 6).

    .venv/bin/python benchmarks/concurrent_deploys.py [--rounds 10] [--deploys 3] [--programs-from REV]

Each round starts ``--deploys`` SSH sessions at once (threads, each its own connection) to
one board; each deploys a different runtime version (the runtime plus a tiny extra wheel
``ecextra==<round>.<i>``, so each is a new install), then benchmarks the bundle (batch 1,
3 runs). A deploy counts as ``ok`` only when its benchmark reports its own version (the
extra wheel's version in the bench's package list and the venv path of its version id).
Other outcomes: ``deploy_failed``, ``bench_failed`` (deploy reported success, the bench
failed), ``wrong_version`` (the bench ran another version).

``--programs-from REV`` sends the board-side programs (install, probe, prune) as they were
at git revision REV, e.g. a commit before the install lock, for a before/after comparison.
Writes benchmarks/results/concurrent_deploys.json (or ``--out``) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _old_programs(rev: str):
    """A ``source(name)`` that returns install/probe/prune as they were at git revision ``rev``."""
    from edgecompress_runtime.board import source
    old = {n: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:runtime/edgecompress_runtime/board/{n}.py"],
                             capture_output=True, text=True, check=True).stdout for n in ("install", "probe", "prune")}
    return lambda name: old.get(name) or source(name)


def _one(b, bundle, extra, want: str, start: threading.Barrier) -> dict:
    from edgecompress.deploy.ssh_board import SSHBoard
    out = {"want": want}
    t0 = time.perf_counter()
    try:
        with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra]) as sb:
            start.wait(60)
            try:
                dep = sb.deploy(bundle)
            except Exception as e:
                return dict(out, outcome="deploy_failed", error=f"{type(e).__name__}: {str(e)[-300:]}")
            out.update(version=dep["version"], lock_wait_s=dep["runtime"]["steps"].get("lock_wait"),
                       deploy_s=round(time.perf_counter() - t0, 2))
            try:
                res = sb.bench(bundle, batches=(1,), warmup=1, iters=3)
            except Exception as e:
                return dict(out, outcome="bench_failed", error=f"{type(e).__name__}: {str(e)[-300:]}")
        got = res["board"]["packages"].get("ecextra")
        own = got == want and f"/versions/{dep['version']}/" in res["board"]["python_executable"]
        return dict(out, outcome="ok" if own else "wrong_version", benched=got, total_s=round(time.perf_counter() - t0, 2))
    except Exception as e:       # connecting failed
        return dict(out, outcome="deploy_failed", error=f"{type(e).__name__}: {str(e)[-300:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--deploys", type=int, default=3)
    ap.add_argument("--programs-from", metavar="REV", help="board programs at this git revision (before/after)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "concurrent_deploys.json"))
    args = ap.parse_args(argv)

    import boards
    import edgecompress.deploy.install as install
    from edgecompress.deploy.ssh_board import SSHBoard
    if boards.ensure_sshd() is None or not boards.is_root():
        print("needs root and OpenSSH sshd (apt-get install openssh-server)", file=sys.stderr)
        return 2
    if args.programs_from:
        install.source = _old_programs(args.programs_from)
    os.environ["EDGECOMPRESS_KEYS_DIR"] = tempfile.mkdtemp(prefix="no-keys-")   # unsigned, like the tests
    tmp = Path(tempfile.mkdtemp(prefix="concurrent-deploys-"))
    bundle = boards.make_bundles(tmp)["fp32"]
    b = boards.start_board()
    t0 = time.perf_counter()
    try:
        with SSHBoard(b.device(), b.settings(), sign=False) as sb:    # numpy + runtime once, as a farm would
            sb.deploy(bundle)
        results = []
        for rnd in range(args.rounds):
            wheels = [boards.make_wheel(tmp / f"r{rnd}", "ecextra", f"{rnd}.{i}") for i in range(args.deploys)]
            start = threading.Barrier(args.deploys)
            outs = [None] * args.deploys

            def run(i, w):
                outs[i] = _one(b, bundle, w, f"{rnd}.{i}", start)
            threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(wheels)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(900)
            results += [dict(o, round=rnd, deploy=i) for i, o in enumerate(outs)]
            print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(o["outcome"] for o in outs), flush=True)
        st = boards.board_state(b)
    finally:
        b.stop()
    counts = Counter(r["outcome"] for r in results)
    reported_success = [r for r in results if r["outcome"] != "deploy_failed"]
    summary = {"rounds": args.rounds, "deploys_per_round": args.deploys, "programs_from": args.programs_from,
               "outcomes": dict(counts), "reported_success": len(reported_success),
               "benched_own_version": counts["ok"], "board_after": st,
               "max_lock_wait_s": max((r.get("lock_wait_s") or 0) for r in results),
               "seconds": round(time.perf_counter() - t0, 1), "machine": platform.machine(),
               "cpus": os.cpu_count(), "runs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{'programs':<14} {'deploys':>7} {'reported ok':>11} {'benched own':>11} {'failed after ok':>15}"
          f" {'deploy failed':>13} {'max lock wait':>13}")
    print(f"{args.programs_from or 'this tree':<14} {len(results):>7} {len(reported_success):>11} {counts['ok']:>11} "
          f"{counts['bench_failed'] + counts['wrong_version']:>15} {counts['deploy_failed']:>13} "
          f"{summary['max_lock_wait_s']:>12.1f}s")
    for r in results:
        if r["outcome"] != "ok":
            print(f"  round {r['round']} deploy {r['deploy']}: {r['outcome']}: {r.get('error', r.get('benched'))}")
    print(f"wrote {args.out}")
    return 0 if counts["ok"] == len(reported_success) else 1


if __name__ == "__main__":
    sys.exit(main())
