"""Facts about the board: temperatures, load and clocks (what changes during a run)
and, with ``full``, the rest (uname, CPU and board model, cores, governors, memory,
Python and installed packages).

    python -m edgecompress_runtime.board.facts [temps]
"""
from __future__ import annotations

import glob
import json
import os
import platform
import sys


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip().strip("\x00")
    except OSError:
        return None


def temperatures() -> dict:
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t = _read(zone + "/temp")
        if t and t.lstrip("-").isdigit():
            out[(_read(zone + "/type") or "zone") + ":" + os.path.basename(zone)[12:]] = int(t) / 1000.0
    return out


def clocks() -> dict:
    out = {}
    for c in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        v = _read(c)
        if v and v.isdigit():
            out[c.split("/")[5]] = int(v) // 1000
    return out


def _cpu_and_model():
    cpu, model = None, _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() in ("model name", "hardware", "cpu model") and not cpu:
            cpu = v.strip()
        if k.strip().lower() == "model" and not model and not v.strip().isdigit():
            model = v.strip()
    return cpu, model


def _memory_mb() -> dict:
    mem = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0]) // 1024
    return mem


def _packages() -> dict:
    try:
        from importlib import metadata
        return dict(sorted((d.metadata["Name"].lower(), d.version) for d in metadata.distributions()))
    except Exception:
        return {}


def facts(full: bool = True) -> dict:
    info = {"temperatures_c": temperatures(), "loadavg": list(os.getloadavg()), "cur_mhz": clocks()}
    if not full:
        return info
    cpu, model = _cpu_and_model()
    cpufreq = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/"
    govs = sorted({g for g in (_read(p) for p in glob.glob(cpufreq + "scaling_governor")) if g})
    maxs = sorted({int(v) // 1000 for v in (_read(p) for p in glob.glob(cpufreq + "cpuinfo_max_freq"))
                   if v and v.isdigit()})
    mem = _memory_mb()
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
                 "packages": _packages()})
    return info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(facts(full=list(argv) != ["temps"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
