"""The main job, end to end on an embedded default: train a DLRM on synthetic
click data, compile it (fp32 and compressed) for a target, install the runtime
on a board (by default this machine, in its own torch-free venv), benchmark
both bundles there and print one table."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

DEMO_VOCAB = (40000, 20000, 10000, 5000, 2000, 1000, 500, 100)


def run_demo(target: str = "raspberry-pi-4", out_dir="out/demo", json_out=None, board=None,
             rows: int = 200_000, epochs: int = 2, iters: int = 200, progress: bool = True,
             log=print, *, min_seconds: float = 0.5, cooldown_s: float = 2.0, rerun: bool = True,
             cores: str | None = None, force: bool = False) -> dict:
    """``board`` None: this machine stands in for ``target`` (said so in the table; bundles of
    another architecture run on it as a stand-in). A board given must be able to be ``target``
    (its architecture; ``force`` overrides), checked before anything is trained."""
    from .compile import compile
    from .data import synthetic_ctr
    from .deploy.agreement import check_target, profile_target
    from .deploy.local import LocalBoard
    from .models.zoo import model_for_data
    from .train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stand_in = board is None
    board = board or LocalBoard()
    t_start = time.perf_counter()
    agreement = check_target(None, board, force=force or stand_in, target=profile_target(target))
    for w in agreement["warnings"]:
        log(f"warning: {w}" if not stand_in else f"note: this machine stands in for {target}: {w}")

    log(f"[1/5] synthetic click data: {rows:,} rows, {len(DEMO_VOCAB)} categorical fields")
    data = synthetic_ctr(n=rows, vocab_sizes=DEMO_VOCAB, seed=0)
    train_ds, valid_ds, test_ds = data.split((0.8, 0.1, 0.1), seed=0)

    log("[2/5] training a DLRM (embedding dim 32)")
    torch.manual_seed(0)
    model = model_for_data("dlrm", train_ds, embedding_dim=32, bottom_mlp=(64,), top_mlp=(64, 32))
    t0 = time.perf_counter()
    history = train(model, train_ds, epochs=epochs, batch_size=1024, lr=2e-3, progress=progress)
    train_s = time.perf_counter() - t0

    log(f"[3/5] compiling for {target}: fp32, and the planner's most accurate plan inside the target's budgets")
    # numpy bundles only: the demo compares sizes like for like and runs the
    # torch-free runtime (formats=None adds the target's app formats, e.g. .tflite, each held to the budget)
    fp32 = compile(model, target=target, data=test_ds, output=out_dir / "dlrm-fp32.ecb", plan=[],
                   formats=["numpy"], progress=progress)
    # the plan is chosen on the validation rows; both bundles report on the same test rows
    compressed = compile(model, target=target, data=test_ds, valid_data=valid_ds, test_data=test_ds,
                         train_data=train_ds, output=out_dir / "dlrm-compressed.ecb", report=out_dir / "report", formats=["numpy"],
                         progress=progress)
    log(f"      chosen plan: {compressed.search.chosen.state.describe()} "
        f"({len(compressed.search.candidates)} plans searched in {compressed.search.seconds:.1f} s; "
        f"report: {out_dir / 'report' / 'report.html'})")

    log(f"[4/5] installing the runtime on board '{board.name}'")
    install = board.install_runtime(progress=lambda m: log(f"      {m}"))

    log(f"[5/5] benchmarking both bundles on '{board.name}' ({iters} timed runs per batch size)")
    benches = {name: board.bench(res.path, batches=(1, 256), iters=iters, min_seconds=min_seconds,
                                 cooldown_s=cooldown_s, rerun=rerun, cores=cores, force=force or stand_in,
                                 progress=lambda m: log(f"      {m}"))
               for name, res in (("fp32", fp32), ("compressed", compressed))}

    result = {
        "target": target, "board": board.name, "rows": rows, "train_seconds": train_s,
        "train_history": history, "install": install, "stand_in": stand_in, "target_check": agreement,
        "bundles": {name: {"compile": res.summary(), "bench": benches[name]}
                    for name, res in (("fp32", fp32), ("compressed", compressed))},
        "chosen_plan": compressed.search.chosen.state.describe(),
        "size_ratio": compressed.size_bytes / fp32.size_bytes,
        "auc_drop": fp32.metrics_after["auc"] - compressed.metrics_after["auc"],
        "seconds": time.perf_counter() - t_start,
    }
    log("")
    log(format_demo_table(result))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=1, default=str))
        log(f"\nfull results: {json_out}")
    return result


def _cell(row: dict, digits: int) -> str:
    flag = "" if row.get("verdict", "stable") == "stable" else f" {row['verdict'].upper()}"
    return f"{row['p50_ms']:.{digits}f} / {row['p99_ms']:.{digits}f}{flag}"


def format_demo_table(result: dict) -> str:
    from .cli.output import render, table
    rows = []
    for name, b in result["bundles"].items():
        c, bench = b["compile"], b["bench"]
        lat = {r["batch"]: r for r in bench["latency"]}
        rows.append([name, f"{c['size_bytes'] / 1e6:.2f} MB", f"{c['metrics_after']['auc']:.4f}",
                     f"{c['metrics_after']['logloss']:.4f}", _cell(lat[1], 3), _cell(lat[256], 2),
                     f"{bench['peak_rss_mb']:.0f} MiB", f"{bench['parity']['max_abs_diff']:.1e}"])
    head = ["bundle", "size", "AUC", "log-loss", "b=1 p50/p99 ms", "b=256 p50/p99 ms", "peak RSS", "parity"]
    lines = [render(table(head, rows, right=tuple(head[1:])))]
    sys_ = next(iter(result["bundles"].values()))["bench"]["system"]
    lines.append("")
    lines.append(f"compressed/fp32 size: {result['size_ratio'] * 100:.1f} %   "
                 f"AUC change (compressed - fp32): {-result['auc_drop']:+.4f}   target profile: {result['target']}")
    lines += speed_lines(result)
    lines.append(f"compressed plan: {result.get('chosen_plan', '')}")
    lines.append(f"latency and RSS measured on board '{result['board']}': {sys_['cpu_model']} ({sys_['machine']}), "
                 f"numpy {sys_['numpy']}, backend {next(iter(result['bundles'].values()))['bench']['backend']}")
    if result["board"] == "local":
        lines.append(f"(this machine stands in for {result['target']}: these are not {result['target']} timings)")
    return "\n".join(lines)


def speed_lines(result: dict) -> list[str]:
    """compressed vs fp32 p50 per batch size, only where both runs are stable; else why not."""
    b = result["bundles"]
    if "fp32" not in b or "compressed" not in b:
        return []
    lat = {n: {r["batch"]: r for r in b[n]["bench"]["latency"]} for n in ("fp32", "compressed")}
    parts, why = [], []
    for batch in sorted(set(lat["fp32"]) & set(lat["compressed"])):
        f, c = lat["fp32"][batch], lat["compressed"][batch]
        bad = [(n, r) for n, r in (("fp32", f), ("compressed", c)) if r.get("verdict", "stable") != "stable"]
        if bad:
            parts.append(f"b={batch} not compared")
            why += [f"{n} b={batch} {r['verdict']}: " + "; ".join(x["text"] for x in r.get("reasons", [])
                                                                   if x["severity"] != "note")
                    for n, r in bad]
        else:
            parts.append(f"b={batch} {f['p50_ms'] / c['p50_ms']:.2f}x")
    out = ["speed-up of compressed over fp32 (p50): " + ", ".join(parts)]
    if why:
        out.append("NOT STABLE, so no speed-up is claimed there (re-run on a quiet board, see --cooldown): "
                   + " | ".join(why))
    return out
