"""The on-device op profile (``bench --profile``, issue 14 item 2) on the boards we can reach:
this machine as a board (LocalBoard), a real OpenSSH board on loopback (needs root), and
the emulated arm64 board (``--arm64``; needs root, binfmt and the cached userland; slow).

    .venv/bin/python benchmarks/op_profile.py [--batch 1024] [--runs 100] [--arm64] [--arm64-batch 64]

Per board: the sum of the per-node medians vs the whole-model p50 (the profile must account
for the model's time: within 15 %), the top ops and layers with the latency model's estimate.
Writes benchmarks/results/op_profile.json and prints a table. Emulated timings describe qemu
on this host, not an aarch64 device.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "device_tests" / "boards"))


def _bundle(out: Path, target: str, formats) -> str:
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import DEFAULT_PLAN
    from edgecompress.train import train
    data = synthetic_ctr(n=4000, vocab_sizes=(3000, 800, 200, 50), dense_dim=4, seed=7)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=16, bottom_mlp=(32, 16), top_mlp=(32,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    return ec.compile(model, target=target, data=te, output=out, plan=list(DEFAULT_PLAN), formats=formats,
                      progress=False, latency_table=False).path


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _row(name: str, res: dict, seconds: float) -> dict:
    p = res["profile"]
    est = p.get("estimate") or {}
    return {"board": name, "machine": (res.get("board") or {}).get("machine"), "emulated": res.get("emulated"),
            "verdict": (res.get("stability") or {}).get("verdict"), "batch": p["batch"], "runs": p["runs"],
            "sum_ms": p["sum_ms"], "whole_p50_ms": p["whole_p50_ms"], "sum_vs_whole": p["sum_vs_whole"],
            "within_15pct": abs(p["sum_vs_whole"]) <= 0.15, "estimate_total_ms": est.get("total_ms"),
            "profiled_run_p50_ms": p.get("profiled_run_p50_ms"), "stalled_runs": p.get("stalled_runs"),
            "unstalled_p50_ms": p.get("unstalled_p50_ms"),
            "loadavg": os.getloadavg(),
            "estimate_source": est.get("source"),
            "top_ops": [{"op": g["op"], "ms": g["ms"], "share": g["share"],
                         "estimate_ms": est.get("by_op", {}).get(g["op"])} for g in p["by_op"][:6]],
            "top_layers": [{"layer": g["layer"], "ms": g["ms"], "share": g["share"],
                            "estimate_ms": est.get("by_layer", {}).get(g["layer"])} for g in p["by_layer"][:6]],
            "seconds": seconds, "profile": p}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--arm64", action="store_true", help="also the emulated arm64 board (slow)")
    ap.add_argument("--arm64-batch", default="16,64", help="batch sizes on the arm64 board (comma list)")
    ap.add_argument("--arm64-runs", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "op_profile.json"))
    args = ap.parse_args()
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="ec-op-profile-"))
    os.environ.setdefault("EDGECOMPRESS_LATENCY_DIR", str(work / "latency"))
    from edgecompress.deploy.local import LocalBoard
    from edgecompress_runtime.profile import format_profile
    bundle = _bundle(work / "dlrm-int8.ecb", "local", ["numpy", "litert"])
    prof = {"batch": args.batch, "runs": args.runs}
    rows = []

    def run(name, board, bundle_path, batch_prof, batches):
        t0 = time.perf_counter()
        res = board.bench(bundle_path, batches=batches, warmup=3, iters=30, rerun=False, profile=batch_prof)
        rows.append(_row(name, res, time.perf_counter() - t0))
        print(f"\n== {name} ==\n" + format_profile(res["profile"], top=6, estimates=res["profile"].get("estimate")))

    with LocalBoard(root=work / "local-board") as b:
        run("local (LocalBoard)", b, bundle, prof, (1, args.batch))
    import boards
    if boards.is_root() and boards.ensure_sshd():
        from edgecompress.deploy.ssh_board import SSHBoard
        sb = boards.start_board()
        try:
            with SSHBoard(sb.device(), sb.settings(), sign=False) as b:
                run("loopback sshd board", b, bundle, prof, (1, args.batch))
        finally:
            sb.stop()
    if args.arm64:
        import arm64_board
        ok, why = arm64_board.available()
        if not ok:
            print(f"arm64 board unavailable: {why}")
        else:
            from edgecompress.deploy.ssh_board import SSHBoard
            arm = arm64_board.start()
            try:
                abundle = _bundle(work / "dlrm-int8-arm64.ecb", arm64_board.TARGET, ["numpy"])
                dev = arm.device(packages=("ai-edge-litert",), workdir=".edgecompress-device-tests")
                with SSHBoard(dev, arm.settings(), sign=False, install_timeout=1800) as b:
                    for batch in [int(x) for x in args.arm64_batch.split(",")]:
                        run(f"arm64 board (EMULATED) b={batch}", b, abundle, {"batch": batch, "runs": args.arm64_runs},
                            (1, batch))
            finally:
                arm.stop()
    out = {"schema": "edgecompress.bench-op-profile/1", "host": platform.node(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'board':<36} {'batch':>5} {'runs':>5} {'sum ms':>9} {'whole p50':>9} {'diff':>6} {'<=15%':>5} "
          f"{'stalled':>7} {'unstalled p50':>13} {'model est':>9}  top op")
    for r in rows:
        top = r["top_ops"][0]
        est = r["estimate_total_ms"]
        print(f"{r['board']:<36} {r['batch']:>5} {r['runs']:>5} {r['sum_ms']:>9.3f} {r['whole_p50_ms']:>9.3f} "
              f"{r['sum_vs_whole'] * 100:>+5.0f}% {'yes' if r['within_15pct'] else 'NO':>5} "
              f"{r['stalled_runs'] * 100:>6.0f}% "
              f"{_num(r['unstalled_p50_ms']):>13} "
              f"{_num(est):>9}  {top['op']} {top['share'] * 100:.0f}%")
    print(f"results: {args.out}")
    return 0 if all(r["within_15pct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
