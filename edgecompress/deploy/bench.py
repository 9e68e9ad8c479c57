"""Benchmarking a bundle on a board: ``edgecompress-runtime bench`` run there
under a timeout, its JSON fetched back, parity against the bundle's reference
outputs checked, board facts recorded (uname, CPU model, cores, governor,
temperatures before/after, Python and package versions), repeated N times
with a cooldown, and the agreement between repeats reported.
"""
from __future__ import annotations

import json
import statistics
import time

from ..errors import ParityError, RemoteCommandError, RemoteTimeoutError, SignatureError
from .connection import Connection

# Facts about the board, as Python run by the board's interpreter: temperatures,
# load and clocks (what changes during a run) and, with full=True, the rest.
_FACTS_LIB = r"""
import glob, json, os, platform, sys
def _read(p):
    try:
        with open(p) as f:
            return f.read().strip().strip("\x00")
    except OSError:
        return None
def _temps():
    out = {}
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t = _read(z + "/temp")
        if t and t.lstrip("-").isdigit():
            out[(_read(z + "/type") or "zone") + ":" + os.path.basename(z)[12:]] = int(t) / 1000.0
    return out
def _clocks():
    out = {}
    for c in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        v = _read(c)
        if v and v.isdigit():
            out[c.split("/")[5]] = int(v) // 1000
    return out
def facts(full=True):
    info = {"temperatures_c": _temps(), "loadavg": list(os.getloadavg()), "cur_mhz": _clocks()}
    if not full:
        return info
    cpu, model = None, _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() in ("model name", "hardware", "cpu model") and not cpu:
            cpu = v.strip()
        if k.strip().lower() == "model" and not model and not v.strip().isdigit():
            model = v.strip()
    cpufreq = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/"
    govs = sorted({g for g in (_read(p) for p in glob.glob(cpufreq + "scaling_governor")) if g})
    maxs = sorted({int(v) // 1000 for v in (_read(p) for p in glob.glob(cpufreq + "cpuinfo_max_freq")) if v and v.isdigit()})
    mem = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0]) // 1024
    try:
        from importlib import metadata
        pkgs = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    except Exception:
        pkgs = {}
    try:
        avail = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = os.cpu_count()
    u = os.uname()
    info.update({"uname": " ".join(u), "hostname": u.nodename, "kernel": u.release, "machine": u.machine,
                 "cpu_model": cpu or platform.processor() or u.machine, "board_model": model,
                 "cores": os.cpu_count(), "cores_available": avail, "governors": govs, "max_mhz": maxs,
                 "mem_total_mb": mem.get("MemTotal"), "mem_available_mb": mem.get("MemAvailable"),
                 "python": platform.python_version(), "python_executable": sys.executable,
                 "packages": dict(sorted(pkgs.items()))})
    return info
"""

_FACTS = _FACTS_LIB + r"""
print(json.dumps(facts(full=sys.argv[1:] != ["temps"])))
"""

# One process on the board per run: facts and temperatures before, then exactly what
# `edgecompress-runtime bench ... --json FILE` does (its CLI entry point, its table going
# to stderr), then temperatures after; prints one JSON line.
_DRIVER = _FACTS_LIB + r"""
import contextlib
a = json.loads(sys.argv[1])
before = facts(full=a["facts"])
from edgecompress_runtime.cli import main
with contextlib.redirect_stdout(sys.stderr):
    rc = main(["bench", a["bundle"], "--batch", a["batch"], "--warmup", str(a["warmup"]), "--iters", str(a["iters"]),
               "--backend", a["backend"], "--json", a["json"]] + (["--min-seconds", str(a["min_seconds"])] if a["min_seconds"] else []))
result = None
if os.path.exists(a["json"]):
    with open(a["json"]) as f:
        result = json.load(f)
    os.unlink(a["json"])
print(json.dumps({"rc": rc, "result": result, "before": before, "after": facts(full=False)}))
"""


def board_facts(conn: Connection, python: str, temps_only: bool = False) -> dict:
    argv = [python, "-c", _FACTS] + (["temps"] if temps_only else [])
    r = conn.run(argv, timeout=60, check=False, what="reading board facts")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (r.stderr or r.stdout).strip()[-300:]}


def run_bench_once(conn: Connection, venv_python: str, bundle_remote: str, json_remote: str, *,
                   batches=(1, 64, 256), warmup=20, iters=200, backend="auto", min_seconds=0.0,
                   timeout=600.0, facts: bool = False) -> dict:
    """One ``edgecompress-runtime bench`` on the board; returns its JSON with
    ``temps_before``/``temps_after`` (and ``board`` facts when ``facts``)."""
    args = {"bundle": bundle_remote, "batch": ",".join(str(b) for b in batches), "warmup": warmup, "iters": iters,
            "backend": backend, "json": json_remote, "min_seconds": min_seconds, "facts": facts}
    try:
        r = conn.run([venv_python, "-c", _DRIVER, json.dumps(args)], timeout=timeout, check=False,
                     what=f"the benchmark of {bundle_remote.rsplit('/', 1)[-1]}")
    except RemoteTimeoutError:
        conn.run(["rm", "-f", json_remote], timeout=30, check=False, what="removing bench output")
        raise
    out = None
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                out = json.loads(line)
            except ValueError:
                pass
            break
    if out is None or out.get("result") is None:
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        msg = err[-1] if err else f"exit status {r.exit_code}"
        if "sign" in msg and ("trust" in msg or "unsigned" in msg):
            raise SignatureError(f"{conn.label}: the board refused the bundle: {msg}")
        raise RemoteCommandError(f"{conn.label}: the benchmark failed on the board: {msg[-600:]}")
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
