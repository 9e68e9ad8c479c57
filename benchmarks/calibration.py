"""Latency model vs measurements, before and after calibration, on the x86 board
(this machine as a LocalBoard) and on the emulated aarch64 board
(device_tests/boards/arm64.sh). Writes benchmarks/results/calibration.json.

    .venv/bin/python benchmarks/calibration.py [--boards x86,arm64] [--trials 2] [--small] [--iters 100]
    .venv/bin/python benchmarks/calibration.py --boards x86-apps --trials 1 --small \
        --out benchmarks/results/calibration_backends.json          # numpy + LiteRT + ExecuTorch

Per board and trial, what ``edgecompress calibrate --validate`` does:
``edgecompress-runtime calibrate`` on the board (quick grid under emulation), the
graph fit on probe models measured whole there, then 22 DLRM plans (two model sizes x
bits / kept rows / dims / MLP widths / activation modes; other models than the
probes) compiled, benchmarked on the board (numpy backend; the median over 3 rounds of
each bundle's p50, each batch size timed >= 0.3 s, under emulation >= 1 s) and
compared with the latency model: the target profile's coefficients ("before"), the
table's sum of parts, and the table with its graph fit ("after"). Reported: median
and mean absolute percentage error over every (plan, batch size), and per batch size.

Boards:
- ``x86``: LocalBoard, OPENBLAS_NUM_THREADS=1 (this host has 2 cores shared with other
  jobs: a BLAS worker thread that gets descheduled stalls a matmul for a whole time slice).
- ``x86-apps``: the same board venv plus this host's LiteRT and ExecuTorch runtimes
  (``edgecompress.calibrate.app_runtimes_board``), with EDGECOMPRESS_RUNTIME_THREADS=1 as
  well (XNNPACK / TFLite threads, for the same reason as BLAS): the probes and the
  validation plans are compiled with .tflite and .pte too and measured through each
  backend in its own process; reported per backend: median and worst absolute
  percentage error and the share of (plan, batch) within +-10 %.
- ``x86-system-malloc``: the same with the runtime's allocator setting off
  (EDGECOMPRESS_RUNTIME_MALLOC=system), for comparison.
- ``arm64``: the emulated Debian arm64 board (qemu-user; OpenBLAS single-threaded, see
  arm64.sh). Its timings describe the emulator on this host, NEVER an aarch64 device; they
  are labelled so in the JSON and in the printed table.
Runs at nice -15 when root, to reduce interference from other jobs on the host.
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

os.environ.setdefault("EDGECOMPRESS_FORMATS", "numpy")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "device_tests" / "boards"))

EMULATED_NOTE = ("EMULATED: qemu-user on this x86 host; these timings describe the emulator, "
                 "not the speed of any aarch64 device")


def _load() -> list[float]:
    return list(os.getloadavg())


def run_board(kind: str, models, args, work: Path, say) -> dict:
    from edgecompress.calibrate import add_graph_fit, measure_table, open_board, validate_model
    from edgecompress.plan.latency_table import LatencyTable, save_table
    env_before = dict(os.environ)
    board = None
    out = {"board": kind, "load_before": _load()}
    try:
        os.environ.pop("EDGECOMPRESS_ARM64_SETENV", None)
        if kind.startswith("x86"):
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            os.environ.pop("GLIBC_TUNABLES", None)
            if kind == "x86-system-malloc":
                os.environ["EDGECOMPRESS_RUNTIME_MALLOC"] = "system"
            else:
                os.environ.pop("EDGECOMPRESS_RUNTIME_MALLOC", None)
            if kind == "x86-apps":
                os.environ["EDGECOMPRESS_RUNTIME_THREADS"] = "1"
            runner = open_board("local", app_runtimes=kind == "x86-apps", progress=say)
            target, iters, warmup, repeat = "local", args.iters, 10, 3
            out["config"] = {"OPENBLAS_NUM_THREADS": "1",
                             "EDGECOMPRESS_RUNTIME_THREADS": os.environ.get("EDGECOMPRESS_RUNTIME_THREADS", "all cores"),
                             "EDGECOMPRESS_RUNTIME_MALLOC": os.environ.get("EDGECOMPRESS_RUNTIME_MALLOC", "keep")}
        else:
            import arm64_board
            ok, why = arm64_board.available()
            if not ok:
                return {"board": kind, "skipped": why}
            t0 = time.perf_counter()
            board = arm64_board.start()
            out["board_start_s"] = time.perf_counter() - t0
            from edgecompress.deploy.ssh_board import SSHBoard
            ssh = SSHBoard(board.device(workdir=".edgecompress-calibration"), board.settings(), sign=False,
                           install_timeout=1800, progress=lambda m: None)
            runner = open_board(board=ssh)
            # emulated: noisy from run to run with the host's load -> 3 runs of 60, the median p50;
            # 10 warm-up runs, since qemu translates each new code path on first use
            target, iters, warmup, repeat = arm64_board.TARGET, max(10, int(args.iters * 0.6)), 10, 3
            out["config"] = {"sshd SetEnv": "OPENBLAS_CORETYPE=ARMV8 OPENBLAS_NUM_THREADS=1 EDGECOMPRESS_EMULATED=qemu-user"}
        out["trials"] = []
        for trial in range(args.trials):
            t0 = time.perf_counter()
            load0 = _load()
            table = measure_table(runner, target=target, progress=say)
            t1 = time.perf_counter()
            add_graph_fit(runner, table, target=target, progress=say)
            tr = {"trial": trial + 1, "load_before": load0, "graph_fit_s": time.perf_counter() - t1,
                  "install_and_calibration_s": time.perf_counter() - t0, "calibration_s": table["seconds"]}
            save_table(table, [f"bench-{kind}"])
            lt = LatencyTable(table)
            out["emulated"] = lt.emulated
            out["label"] = table.get("label")
            if lt.emulated:
                out["note"] = EMULATED_NOTE
            tr["table"] = {k: table[k] for k in ("quick", "batches", "dispatch_s", "op_overhead_s", "seconds",
                                                 "predict_overhead_s", "dequant_at_load_bytes", "graph_context")}
            tr["table"]["board"] = table["board"]
            tr["table"]["graph_fit"] = {k: table["graph_fit"][k] for k in ("points", "probes", "skipped", "seconds")}
            tr["table"]["backends_installed"] = table.get("backends_installed")
            tr["table"]["backend_fits"] = table.get("backend_fits") or {}
            tr["table"]["points"] = {"gather": len(table["gather"]), "linear": len(table["linear"]),
                                     "bmm": len(table["bmm"]), "ops": len(table["ops"])}
            say(f"[{kind}] trial {trial + 1}: calibrated in {table['seconds']:.1f} s on the board "
                f"({tr['install_and_calibration_s']:.1f} s with install)"
                f"{' -- ' + EMULATED_NOTE if lt.emulated else ''}")
            try:
                tr["validation"] = validate_model(runner, lt, target=target, models=models, iters=iters,
                                                  warmup=warmup, out_dir=work / target, reuse=True, repeat=repeat,
                                                  min_seconds=1.0 if lt.emulated else 0.3, progress=say)
            except Exception as e:       # keep the other trials and boards; say what happened
                tr["error"] = f"{type(e).__name__}: {e}"
                say(f"[{kind}] trial {trial + 1} failed: {tr['error']}")
            tr["load_after"] = _load()
            out["trials"].append(tr)
            if "validation" in tr:            # the page `calibrate --validate --report` writes, per trial
                from edgecompress.report.calibration_page import render_html
                page = Path(args.out).with_name(f"calibration-{kind}-trial{trial + 1}.html")
                page.write_text(render_html({"table": table, "validation": tr["validation"]}))
        trials = [t for t in out["trials"] if "validation" in t]
        if not trials:
            return out
        out["calibration_s"] = statistics.median(t["calibration_s"] for t in trials)
        out["summary"] = {when: {k: statistics.median(t["validation"][when][k] for t in trials)
                                 for k in ("median_ape", "mean_ape")} for when in ("before", "after")}
        out["summary"]["per_trial_parts_only_median_ape"] = [t["validation"].get("after_parts_only", {}).get(
            "median_ape") for t in trials]
        out["summary"]["per_trial_after_median_ape"] = [t["validation"]["after"]["median_ape"] for t in trials]
        out["summary"]["per_trial_before_median_ape"] = [t["validation"]["before"]["median_ape"] for t in trials]
        out["summary"]["plans"] = trials[0]["validation"]["plans"]
        out["summary"]["by_backend"] = {
            be: {k: statistics.median(t["validation"]["by_backend"][be]["after"][k] for t in trials
                                      if "after" in t["validation"]["by_backend"].get(be, {}))
                 for k in ("median_ape", "max_ape", "within_10pct")}
            | {"plans": trials[0]["validation"]["by_backend"][be].get("plans", out["summary"]["plans"]),
               "estimate": trials[0]["validation"]["by_backend"][be].get("source")}
            for be in trials[0]["validation"].get("by_backend", {})
            if "after" in trials[0]["validation"]["by_backend"][be]}
        out["summary"]["batches"] = trials[0]["validation"]["batches"]
        runner.close()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        if board is not None:
            board.stop()
        out["load_after"] = _load()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", default="x86,arm64", help="any of x86, x86-apps, x86-system-malloc, arm64")
    ap.add_argument("--small", action="store_true", help="one small model (11 plans) instead of two (22)")
    ap.add_argument("--iters", type=int, default=100, help="timed runs per batch size on x86 (arm64: x0.6); 3 runs each")
    ap.add_argument("--trials", type=int, default=2, help="calibrate + validate this many times per board "
                                                           "(the host's load varies over minutes)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration.json"))
    args = ap.parse_args()
    if os.geteuid() == 0:
        try:
            os.nice(-15)
        except OSError:
            pass
    from edgecompress.calibrate import validation_models
    t0 = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ec-calibration-") as tmp:
        os.environ["EDGECOMPRESS_LATENCY_DIR"] = str(Path(tmp) / "latency")   # never the user's tables
        say("training the validation models")
        models = validation_models(small=args.small)
        results = {}
        for kind in [b.strip() for b in args.boards.split(",") if b.strip()]:
            say(f"== {kind}")
            try:
                results[kind] = run_board(kind, models, args, Path(tmp) / "bundles", say)
            except Exception as e:
                results[kind] = {"board": kind, "skipped": f"failed: {type(e).__name__}: {e}"}
                say(f"[{kind}] failed: {type(e).__name__}: {e}")
    report = {"schema": "edgecompress.calibration-benchmark/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "note": "2-core VM shared with other jobs; load averages recorded per board"},
              "metric": "absolute percentage error of the latency model's estimate vs the measured p50 "
                        "(edgecompress-runtime bench, numpy backend), over every (plan, batch size)",
              "boards": results, "seconds": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print()
    print(f"{'board':<17} {'plans':>5} {'batches':<14} {'calib s':>8} {'MdAPE before':>13} {'sum of parts':>13} "
          f"{'MdAPE after':>12} {'mean before':>12} {'mean after':>11}  note")
    for kind, r in results.items():
        if "summary" not in r:
            print(f"{kind:<17} skipped: {r.get('skipped')}")
            continue
        v = r["summary"]
        per = "/".join(f"{x * 100:.0f}%" for x in v["per_trial_after_median_ape"])
        parts = [x for x in v["per_trial_parts_only_median_ape"] if x is not None]
        parts = f"{statistics.median(parts) * 100:>12.1f}%" if parts else f"{'-':>13}"
        print(f"{kind:<17} {v['plans']:>5} {','.join(map(str, v['batches'])):<14} {r['calibration_s']:>8.1f} "
              f"{v['before']['median_ape'] * 100:>12.1f}% {parts} {v['after']['median_ape'] * 100:>11.1f}% "
              f"{v['before']['mean_ape'] * 100:>11.1f}% {v['after']['mean_ape'] * 100:>10.1f}%  "
              f"{'EMULATED (qemu): not device speed' if r.get('emulated') else 'native'}; trials after: {per}")
    print("MdAPE = median absolute percentage error over every (plan, batch size); median over trials. "
          "'sum of parts' = the table without its graph fit; 'after' = with it (what the planner uses)")
    if any(r.get("summary", {}).get("by_backend") for r in results.values()):
        print()
        print(f"{'board':<17} {'backend':<11} {'plans':>5} {'median APE':>10} {'worst APE':>10} {'within 10%':>10}"
              f"  load avg (1 min) before/after  estimate")
        for kind, r in results.items():
            for be, v in (r.get("summary", {}).get("by_backend") or {}).items():
                print(f"{kind:<17} {be:<11} {v['plans']:>5} {v['median_ape'] * 100:>9.1f}% {v['max_ape'] * 100:>9.1f}% "
                      f"{v['within_10pct'] * 100:>9.0f}%  {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}"
                      f"{'':>17}  {v.get('estimate')}")
        print("per backend: absolute percentage error of LatencyModel(backend=...) vs the p50 measured through that "
              "backend, over every (plan, batch size); the host is a 2-core VM shared with other jobs (load averages "
              "above)")
    print(f"written to {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
