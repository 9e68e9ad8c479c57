"""Deploy and farm timings on real OpenSSH boards on this machine (needs root).

    .venv/bin/python benchmarks/deploy.py [--repeats 3] [--farm-sizes 1,4,8] [--bundle B.ecb]

- cold deploy + bench: a new loopback board (127.0.0.1, own user and sshd), nothing
  installed: connect, probe, upload runtime wheel + numpy wheel + bundle, verify,
  create the venv, pip install, switch ``current``, then one benchmark and board facts.
  The host's wheelhouse cache is warm (the numpy wheel for the board's platform was
  downloaded before), as it is for every deploy after the first one on a host.
- warm redeploy + bench: a new SSH session to the same board, same runtime and bundle:
  every upload is skipped on its hash, nothing installed; then the same benchmark.
  Target: <= 5 s.
- farm wall time for N boards (each its own sshd, user and network namespace,
  runtime already installed): ``Farm`` benchmarks the bundle on all N in parallel.
  Target: 8 boards <= 1.5x one board.

The benchmark on the board is the same everywhere: batch 1 and 64, 10 warm-up and
100 timed runs. Every board shares this machine's cores, so the farm numbers
include the boards competing for CPU (a real farm has a CPU per board).
Writes benchmarks/results/deploy.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BENCH = dict(batches=(1, 64), warmup=10, iters=100)


def _stats(xs):
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "runs_s": xs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--farm-sizes", default="1,4,8")
    ap.add_argument("--bundle", help="bundle to use (default: a small DLRM built here)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deploy.json"))
    args = ap.parse_args(argv)

    import boards
    from edgecompress.deploy.ssh_board import SSHBoard
    from edgecompress.farm import Farm
    if boards.ensure_sshd() is None or not boards.is_root():
        print("needs root and OpenSSH sshd (apt-get install openssh-server)", file=sys.stderr)
        return 2
    os.environ["EDGECOMPRESS_KEYS_DIR"] = tempfile.mkdtemp(prefix="no-keys-")   # unsigned, like the tests
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    bundle = Path(args.bundle) if args.bundle else boards.make_bundles(tmp)["int8"]
    started = []

    def new_board(**kw):
        b = boards.start_board(**kw)
        started.append(b)
        return b
    out = {"machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                       "loadavg_at_start": os.getloadavg()},
           "bundle": {"path": str(bundle), "size_bytes": bundle.stat().st_size}, "bench": {**BENCH}}
    try:
        # warm the host's wheelhouse cache once (a first deploy on a new host downloads numpy's wheel)
        b0 = new_board(loopback=True)
        with SSHBoard(b0.device(), b0.settings(), sign=False) as sb:
            sb.install_runtime(progress=lambda m: None)

        cold, warm = [], []
        for i in range(args.repeats):
            b = new_board(loopback=True)
            t0 = time.perf_counter()
            with SSHBoard(b.device(), b.settings(), sign=False) as sb:
                res = sb.bench(bundle, **BENCH)
            cold.append(time.perf_counter() - t0)
            assert res["parity"]["ok"]
            for _ in range(2):
                t0 = time.perf_counter()
                with SSHBoard(b.device(), b.settings(), sign=False) as sb:
                    res = sb.bench(bundle, **BENCH)
                warm.append(time.perf_counter() - t0)
                assert not res["deploy"]["bundle_uploaded"] and res["parity"]["ok"]
            print(f"cold deploy + bench {cold[-1]:.2f} s, warm redeploy + bench {warm[-2]:.2f} / {warm[-1]:.2f} s")
        out["cold_deploy_and_bench"] = _stats(cold)
        out["warm_redeploy_and_bench"] = {**_stats(warm), "target_s": 5.0, "ok": max(warm) <= 5.0}

        sizes = [int(x) for x in args.farm_sizes.split(",")]
        fleet = [new_board() for _ in range(max(sizes))]
        settings = fleet[0].settings(known_hosts=tuple(str(b.known_hosts) for b in fleet))
        devices = [b.device(f"board{i + 1}", target="local") for i, b in enumerate(fleet)]
        prep = Farm(devices, [bundle], settings, progress=lambda m: None, board_kwargs=dict(sign=False),
                    bench_kwargs=dict(BENCH)).run()   # installs the runtime on every board
        assert prep["summary"]["failed"] == 0, prep["summary"]
        farm = {}
        cores = os.cpu_count()
        for n in sizes:
            walls, cpus = [], []
            for _ in range(args.repeats):
                c0 = [b.cpu_seconds() for b in fleet[:n]]
                h0 = time.process_time()
                rep = Farm(devices[:n], [bundle], settings, progress=lambda m: None, board_kwargs=dict(sign=False),
                           bench_kwargs=dict(BENCH)).run()
                assert rep["summary"]["failed"] == 0
                walls.append(rep["wall_s"])
                if None not in c0:
                    cpus.append(sum(b.cpu_seconds() - c for b, c in zip(fleet[:n], c0)) + time.process_time() - h0)
            farm[str(n)] = _stats(walls)
            if cpus:
                cpu = statistics.median(cpus)
                # the boards share this machine's cores: N boards' CPU work can't finish faster than this
                farm[str(n)].update(cpu_s=cpu, cpu_per_board_s=cpu / n, cpu_floor_s=cpu / cores)
            print(f"farm of {n} board(s): {statistics.median(walls):.2f} s"
                  + (f" (board+host CPU {cpu:.2f} s: on {cores} cores at least {cpu / cores:.2f} s)" if cpus else ""))
        ratio = farm[str(max(sizes))]["median_s"] / farm[str(min(sizes))]["median_s"]
        out["farm_wall"] = {"boards": farm, "ratio_largest_to_one": ratio, "target_ratio": 1.5, "ok": ratio <= 1.5,
                            "netns": bool(fleet[0].netns), "cores": cores}
        big = farm[str(max(sizes))]
        if "cpu_floor_s" in big:
            # what the farm adds on top of the CPU the boards need (0 = perfectly parallel)
            out["farm_wall"]["overhead_over_cpu_floor_s"] = big["median_s"] - max(big["cpu_floor_s"],
                                                                                  farm[str(min(sizes))]["median_s"])
            out["farm_wall"]["ratio_floor"] = max(big["cpu_floor_s"], farm[str(min(sizes))]["median_s"]) / \
                farm[str(min(sizes))]["median_s"]
        print(f"farm {max(sizes)} boards / 1 board: {ratio:.2f}x (target <= 1.5x)")
    finally:
        for b in started:
            b.stop()
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
