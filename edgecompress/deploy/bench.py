"""The host's half of benchmarking on a board (``Board.bench`` runs
``edgecompress_runtime.board.bench_run`` there): reading one run's output, checking
parity against the bundle's reference outputs, the agreement between repeats and
the run a single number should show.
"""
from __future__ import annotations

import json
import statistics
import time

from ..errors import ParityError, RemoteCommandError, SignatureError

def parse_run(rc: int, stdout: str, stderr: str, label: str, *, facts: bool = False) -> dict:
    """The bench JSON out of one ``edgecompress_runtime.board.bench_run`` output, with
    ``temps_before``/``temps_after``/``loadavg_before`` (and ``board`` facts when ``facts``)."""
    out = None
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                out = json.loads(line)
            except ValueError:
                pass
            break
    if out is None or out.get("result") is None:
        err = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        msg = err[-1] if err else f"exit status {rc}"
        if "sign" in msg and ("trust" in msg or "unsigned" in msg):
            raise SignatureError(f"{label}: the board refused the bundle: {msg}")
        raise RemoteCommandError(f"{label}: the benchmark failed on the board: {msg[-600:]}")
    res = out["result"]
    res["temps_before"] = out["before"].get("temperatures_c", {})
    res["temps_after"] = out["after"].get("temperatures_c", {})
    res["loadavg_before"] = out["before"].get("loadavg")
    if facts:
        res["board"] = out["before"]
    return res


def agreement(runs: list[dict], tolerance: float = 0.15) -> dict:
    """How well repeats agree: per batch size, the p50s of every run and their
    spread (max - min) / median; ``ok`` when every spread is within ``tolerance``."""
    per_batch = {}
    for run in runs:
        for row in run["latency"]:
            per_batch.setdefault(row["batch"], []).append(row["p50_ms"])
    out = {"tolerance": tolerance, "repeats": len(runs), "batches": {}}
    for b, p50s in sorted(per_batch.items()):
        med = statistics.median(p50s)
        spread = (max(p50s) - min(p50s)) / med if med > 0 else 0.0
        out["batches"][str(b)] = {"p50_ms": p50s, "median_ms": med, "spread": spread}
    out["max_spread"] = max((v["spread"] for v in out["batches"].values()), default=0.0)
    out["ok"] = out["max_spread"] <= tolerance
    return out


def check_parity(run: dict, expected_sha: str, label: str) -> None:
    got = run.get("bundle", {}).get("sha256")
    if got != expected_sha:
        raise ParityError(f"{label}: the board benchmarked a bundle with sha256 {got}, not the one sent "
                          f"({expected_sha})")
    p = run.get("parity", {})
    if not p.get("ok"):
        raise ParityError(f"{label}: on-device outputs differ from the host's reference outputs: max |diff| "
                          f"{p.get('max_abs_diff')} > tolerance {p.get('tolerance')} (backend {p.get('backend')}); "
                          "the board's numpy/backend computes differently: report it with both versions")


def pick_median(runs: list[dict]) -> dict:
    """The run whose first-batch p50 is the median (what a single number should show)."""
    if len(runs) == 1:
        return runs[0]
    order = sorted(runs, key=lambda r: r["latency"][0]["p50_ms"] if r.get("latency") else 0.0)
    return order[(len(order) - 1) // 2]


def sleep_cooldown(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
