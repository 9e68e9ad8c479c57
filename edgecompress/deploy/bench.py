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
    """The run whose first-batch p50 is the median (what a single number should show), over
    the stable runs when there are any: a noisy run is never averaged in silently."""
    if len(runs) == 1:
        return runs[0]
    stable = [r for r in runs if verdict(r) == "stable"]
    order = sorted(stable or runs, key=lambda r: r["latency"][0]["p50_ms"] if r.get("latency") else 0.0)
    return order[(len(order) - 1) // 2]


def verdict(run: dict) -> str:
    """stable | noisy | unusable (``unknown`` from a runtime without verdicts)."""
    return (run.get("stability") or {}).get("verdict", "unknown")


def verdict_line(run: dict) -> str:
    """``stable``, or ``noisy: <the first reasons>``."""
    st = run.get("stability") or {}
    why = [f"b={x['batch']}: {x['text']}" for x in st.get("reasons", []) if x["severity"] != "note"]
    return verdict(run) + (": " + "; ".join(why[:2]) if why else "")


def rerun_worthy(run: dict) -> bool:
    """Not stable because of the machine (load, other processes, clocks, heat, spread), not
    only because of too few samples: a second run after a cooldown may be better."""
    return bool((run.get("stability") or {}).get("rerun_worthy"))


def keep_better(first: dict, second: dict, cooldown_s: float) -> dict:
    """The re-run when it is at least as good as the first run (else the first), recording
    the other run's verdict and reasons under ``rerun``."""
    from edgecompress_runtime.stability import rank
    keep, other = (second, first) if rank(verdict(second)) <= rank(verdict(first)) else (first, second)
    st = other.get("stability") or {}
    keep["rerun"] = {"verdict": verdict(other), "reasons": st.get("reasons", []), "cooldown_s": cooldown_s,
                     "kept": "second" if keep is second else "first",
                     "p50_ms": {str(r["batch"]): r["p50_ms"] for r in other.get("latency", [])}}
    return keep


def sleep_cooldown(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def attach_estimates(prof: dict, bundle, target=None) -> None:
    """The latency model's estimate per op and layer of the bundle at the profile's batch
    (``plan/node_estimates.py``; ``target``: the board's profile, default the bundle's) under
    ``prof["estimate"]``, or why not under ``prof["estimate_error"]``: a profile is worth having
    even when the host cannot price it."""
    from ..plan.node_estimates import node_estimates
    try:
        prof["estimate"] = node_estimates(bundle, prof["batch"], target=target)
    except Exception as e:  # noqa: BLE001 - any failure of the estimate must not lose the measurement
        prof["estimate_error"] = f"{type(e).__name__}: {e}"[:300]
