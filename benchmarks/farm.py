"""The farm's scheduling cost: the local thread pool vs the pool on a Ray lab (needs root,
``ip netns`` and the extra ``edgecompress[farm]``).

    .venv/bin/python benchmarks/farm.py [--job-seconds 0.2] [--bundles 8] [--boards 1,4,8,16]

A Ray lab on this machine (tests/ray_lab.py ``RayLab``): a head and 4 lab hosts, each a
``ray start`` node in its own network namespace, each offering 4 simulated boards (one
profile). A simulated board's benchmark is a sleep of ``--job-seconds`` (no SSH, no
runtime): what is left of a job's wall time is the pool's own cost. For N boards (spread
round-robin over the 4 hosts) every board benchmarks every one of ``--bundles`` bundles,
so the ideal wall time is bundles x job-seconds, whatever N. ``overhead_ms_per_job`` =
(wall - ideal) / bundles: the time per job each board spends not benchmarking. Ray is run
twice from one driver: ``ray_cold_wall_s`` includes starting a Ray worker per board (each
imports edgecompress, and with it torch: ~2 s of CPU each), ``ray_wall_s`` is the same jobs
again on the running workers. The same
jobs on the same (simulated) boards through the local pool (``Farm``, threads) give the
baseline. Writes benchmarks/results/farm.json and prints a table.

What a real lab changes: here every node, every Ray worker and the driver share this
machine's 2 cores, so the Ray numbers include their contention; in a lab each host has
its own CPUs and the boards their own, a job's bench runs on the board, and the per-job
cost that remains is the driver's scheduling plus a network round trip to the lab host.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
HOSTS, PER_HOST = 4, 4


class SimBoard:
    """A board whose benchmark takes ``seconds`` and does nothing (pickled by value to the nodes)."""

    def __init__(self, device, seconds: float):
        self.name, self.seconds = device.name, seconds

    def bench(self, bundle, **kw):
        time.sleep(self.seconds)
        lat = [{"batch": 1, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "min_ms": 1.0, "mean_ms": 1.0, "cv": 0.0,
                "iters": 1}]
        return {"latency": lat, "parity": {"ok": True, "max_abs_diff": 0.0}, "board": {"simulated": True},
                "runs": [{"latency": lat}]}

    def close(self):
        pass


def _factory(seconds: float):
    return lambda device: SimBoard(device, seconds)


def drive(address: str, names: list[str], bundles: list[str], seconds: float) -> dict:
    """One run through each pool (in the head's namespace); wall times."""
    from edgecompress.deploy.inventory import Device
    from edgecompress.farm import Farm
    from edgecompress.farm.ray_pool import RayFarm
    t0 = time.perf_counter()
    rf = RayFarm(address, bundles, names=names, board_factory=_factory(seconds), progress=None)
    connect_s = time.perf_counter() - t0
    cold = rf.run()["wall_s"]            # includes starting a Ray worker per board (each imports edgecompress)
    rep = RayFarm(address, bundles, names=names, board_factory=_factory(seconds), progress=None).run()
    ray_wall = rep["wall_s"]             # the same jobs again, on the workers now running
    assert rep["summary"]["ok"] == len(names) * len(bundles), rep["summary"]
    devs = [Device(n, "sim", target="local") for n in names]
    loc = Farm(devs, bundles, board_factory=_factory(seconds), progress=None).run()
    assert loc["summary"]["ok"] == len(names) * len(bundles), loc["summary"]
    return {"ray_wall_s": ray_wall, "ray_cold_wall_s": cold, "ray_connect_s": connect_s,
            "local_wall_s": loc["wall_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job-seconds", type=float, default=0.2)
    ap.add_argument("--bundles", type=int, default=8)
    ap.add_argument("--boards", default="1,4,8,16")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "farm.json"))
    ap.add_argument("--drive", nargs=3, metavar=("ADDRESS", "NAMES", "BUNDLES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        addr, names, bundles = args.drive
        print(json.dumps(drive(addr, names.split(","), bundles.split(","), args.job_seconds)))
        return 0
    from boards import is_root, netns_available
    from ray_lab import RayLab
    if not is_root() or not netns_available():
        print("needs root and network namespaces")
        return 77
    root = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    bundles = []
    for i in range(args.bundles):
        p = root / f"b{i}.ecb"
        p.write_bytes(os.urandom(1000))
        bundles.append(str(p))
    lab = RayLab(root, [["local"] * PER_HOST] * HOSTS, simulated=True)
    t0 = time.perf_counter()
    lab.start()
    rows = []
    try:
        start_s = time.perf_counter() - t0
        by_host = [sorted(n for n, h in lab.board_host.items() if h == i) for i in range(1, HOSTS + 1)]
        spread = [by_host[k % HOSTS][k // HOSTS] for k in range(HOSTS * PER_HOST)]
        for n in [int(x) for x in args.boards.split(",")]:
            names = spread[:n]
            cmd = lab.command(0)[:5] + [str(Path(__file__).resolve()), "--job-seconds", str(args.job_seconds),
                                        "--drive", lab.address, ",".join(names), ",".join(bundles)]
            r = subprocess.run(cmd, capture_output=True, text=True, env=lab.env, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            ideal = args.bundles * args.job_seconds
            rows.append({"boards": n, "nodes": len({lab.board_host[x] for x in names}), "jobs": n * args.bundles,
                         "ideal_wall_s": ideal, **{k: round(v, 3) for k, v in res.items()},
                         "ray_overhead_ms_per_job": round((res["ray_wall_s"] - ideal) / args.bundles * 1000, 1),
                         "local_overhead_ms_per_job": round((res["local_wall_s"] - ideal) / args.bundles * 1000, 1)})
            print(rows[-1], flush=True)
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)
    out = {"benchmark": "farm", "job_seconds": args.job_seconds, "bundles": args.bundles, "hosts": HOSTS,
           "boards_per_host": PER_HOST, "lab_start_s": round(start_s, 1), "rows": rows,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "note": "simulated boards (a sleep per job): the pools' own cost; all nodes share this machine's CPUs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nfarm scheduling, {args.bundles} bundles per board, {args.job_seconds * 1000:.0f} ms per job "
          f"(simulated boards over {HOSTS} Ray nodes; this machine: {os.cpu_count()} CPUs)")
    print(f"{'boards':>6} {'nodes':>5} {'jobs':>5} {'ideal s':>8} {'ray cold s':>10} {'ray s':>7} {'local s':>8} "
          f"{'ray ms/job':>10} {'local ms/job':>12}")
    for r in rows:
        print(f"{r['boards']:>6} {r['nodes']:>5} {r['jobs']:>5} {r['ideal_wall_s']:>8.2f} {r['ray_cold_wall_s']:>10.2f} "
              f"{r['ray_wall_s']:>7.2f} "
              f"{r['local_wall_s']:>8.2f} {r['ray_overhead_ms_per_job']:>10.1f} {r['local_overhead_ms_per_job']:>12.1f}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
