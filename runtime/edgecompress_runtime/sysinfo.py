"""Facts about the machine a benchmark ran on (numpy-only, Linux-first)."""
from __future__ import annotations

import glob
import os
import platform
import sys
import time

import numpy as np

from .allocator import tune


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM from /proc/self/status, which belongs to this process image;
    getrusage's ru_maxrss survives exec and would report a parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    try:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20
    except ImportError:  # Windows
        return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> dict:
    try:
        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        blas = deps.get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"),
                "openblas_config": blas.get("openblas configuration")}
    except Exception:  # numpy < 1.26 has no dict mode; report what we can
        return {"name": "unknown"}


_X86_MARKERS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine")


def emulation() -> dict:
    """Whether this process runs under a user-mode emulator (qemu-user via binfmt),
    so that timings taken here are never presented as device speed.

    Evidence: ``EDGECOMPRESS_EMULATED`` set by the board (e.g. ``qemu-user``; ``0``
    forces "not emulated"); ``platform.machine()`` is not x86 but /proc/cpuinfo
    describes an x86 CPU (qemu-user passes the host's through); a binfmt_misc
    handler for this very machine type is registered and enabled."""
    evidence = []
    forced = os.environ.get("EDGECOMPRESS_EMULATED")
    if forced is not None and forced.strip().lower() in ("0", "no", "false", ""):
        return {"emulated": False, "emulator": None, "emulation_evidence": ["EDGECOMPRESS_EMULATED=" + forced]}
    if forced:
        evidence.append(f"EDGECOMPRESS_EMULATED={forced}")
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "i386"):
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read(65536)
            hit = [m for m in _X86_MARKERS if m in text]
            if hit:
                evidence.append(f"/proc/cpuinfo shows an x86 CPU ({hit[0]}) but the machine is {machine}")
        except OSError:
            pass
    handler = {"aarch64": "qemu-aarch64", "arm64": "qemu-aarch64", "armv7l": "qemu-arm"}.get(machine)
    if handler:
        try:
            with open(f"/proc/sys/fs/binfmt_misc/{handler}") as f:
                if f.readline().strip() == "enabled":
                    evidence.append(f"binfmt_misc handler {handler} is enabled")
        except OSError:
            pass
    return {"emulated": bool(evidence), "emulator": ("qemu-user" if evidence else None),
            "emulation_evidence": evidence}


def system_facts() -> dict:
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "OPENBLAS_CORETYPE") if k in os.environ}
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "thread_env": threads,
        "allocator": tune(),
    }


# ---------------------------------------------------------------- what the machine does during a run

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def our_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_jiffies(cpus) -> dict | None:
    """Busy and steal jiffies summed over ``cpus`` (/proc/stat)."""
    text = _read("/proc/stat")
    if not text:
        return None
    busy = steal = total = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in rest.split()[:8]] + [0] * 8
        user, nice, system, idle, iowait, irq, softirq, st = v[:8]
        busy += user + nice + system + irq + softirq
        steal += st
        total += user + nice + system + idle + iowait + irq + softirq + st
    return {"busy": busy, "steal": steal, "total": total}


def _proc_cpu() -> dict:
    """pid -> (command name, user + system jiffies of all its threads) from /proc/*/stat."""
    out = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        s = _read(f"/proc/{pid}/stat")
        if not s or ")" not in s:
            continue
        f = s[s.rfind(")") + 2:].split()
        try:
            out[int(pid)] = (s[s.find("(") + 1:s.rfind(")")], int(f[11]) + int(f[12]))
        except (IndexError, ValueError):
            continue
    return out


def _thermal() -> dict:
    temps = []
    for zone in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        t = _read(zone)
        if t and t.lstrip("-").isdigit():
            temps.append(int(t) / 1000.0)
    throttle = 0
    for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle/core_throttle_count"):
        v = _read(p)
        throttle += int(v) if v and v.isdigit() else 0
    cooling = []
    for dev in glob.glob("/sys/class/thermal/cooling_device*"):
        kind, cur = _read(dev + "/type") or "", _read(dev + "/cur_state")
        if ("cpu" in kind.lower() or "processor" in kind.lower()) and cur and cur.isdigit() and int(cur) > 0:
            cooling.append(f"{kind} state {cur}/{_read(dev + '/max_state')}")
    return {"temp_max": max(temps) if temps else None, "throttle": throttle, "cooling": cooling}


def snapshot(cpus=None) -> dict:
    """What a run's verdict compares before and after: time, CPU use of every process and
    of ``cpus`` (default: the ones we may run on), load, clocks, governors, temperatures."""
    cpus = our_cpus() if cpus is None else sorted(cpus)
    freq = "/sys/devices/system/cpu/cpu{}/cpufreq/"
    mhz = {f"cpu{c}": int(v) // 1000 for c in cpus
           for v in [_read(freq.format(c) + "scaling_cur_freq")] if v and v.isdigit()}
    govs = [g for g in (_read(freq.format(c) + "scaling_governor") for c in cpus) if g]
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        load1 = None
    return {"t": time.perf_counter(), "cpus": cpus, "jiffies": _cpu_jiffies(cpus), "procs": _proc_cpu(),
            "load1": load1, "mhz": mhz, "governors": govs, **_thermal()}


def environment(before: dict, after: dict, emulated: bool = False) -> dict:
    """What happened between two snapshots, as ``stability.judge`` reads it: cores' worth of
    CPU other processes used on our cores (and the top ones), steal share, load, clocks,
    governors, temperature rise, throttling."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    wall = max(after["t"] - before["t"], 1e-9)
    me = os.getpid()
    procs0, procs1 = before["procs"], after["procs"]
    mine = procs1.get(me, ("", 0))[1] - procs0.get(me, ("", 0))[1]
    top = []
    for pid, (comm, j1) in procs1.items():
        if pid != me and pid in procs0:
            share = (j1 - procs0[pid][1]) / hz / wall
            if share >= 0.1:
                top.append({"pid": pid, "comm": comm, "cpu_share": round(share, 3)})
    top.sort(key=lambda p: -p["cpu_share"])
    env = {"wall_s": wall, "load1": before["load1"], "cores": os.cpu_count(), "cpus_measured": len(before["cpus"]),
           "governors": before["governors"], "mhz_before": before["mhz"], "mhz_after": after["mhz"],
           "temp_before": before["temp_max"], "temp_after": after["temp_max"],
           "throttle_events": max(0, after["throttle"] - before["throttle"]),
           "cooling_active": after["cooling"], "top": top[:5], "emulated": emulated,
           "others_cores": None, "steal_share": None}
    j0, j1 = before["jiffies"], after["jiffies"]
    if j0 and j1 and me in procs0 and me in procs1:
        env["others_cores"] = round(max(0.0, (j1["busy"] - j0["busy"] - mine) / hz / wall), 3)
        dt = j1["total"] - j0["total"]
        env["steal_share"] = round((j1["steal"] - j0["steal"]) / dt, 3) if dt > 0 else 0.0
    return env


# ---------------------------------------------------------------- core pinning

def core_groups() -> dict:
    """``{"big": [...], "little": [...], "by": ...}``: the cores of the highest and the lowest
    ``cpu_capacity`` (or, without it, ``cpuinfo_max_freq``); the same list on uniform CPUs."""
    online = our_cpus()
    for key, by in (("cpu_capacity", "cpu_capacity"), ("cpufreq/cpuinfo_max_freq", "max frequency")):
        vals = {c: _read(f"/sys/devices/system/cpu/cpu{c}/{key}") for c in online}
        vals = {c: int(v) for c, v in vals.items() if v and v.isdigit()}
        if len(vals) == len(online) and vals:
            hi, lo = max(vals.values()), min(vals.values())
            return {"big": [c for c in online if vals[c] == hi], "little": [c for c in online if vals[c] == lo],
                    "by": by, "values": vals}
    return {"big": online, "little": online, "by": None, "values": {}}


def parse_cores(spec: str) -> list[int]:
    """``big`` | ``little`` | a list like ``0-3,6``; refuses cores we may not run on."""
    from .errors import InputError
    spec = spec.strip().lower()
    if spec in ("big", "little"):
        return core_groups()[spec]
    cpus = set()
    try:
        for part in spec.split(","):
            a, _, b = part.strip().partition("-")
            cpus.update(range(int(a), int(b or a) + 1))
    except ValueError:
        raise InputError(f"--cores takes big, little or a list like 0-3,6, got {spec!r}") from None
    bad = sorted(cpus - set(our_cpus()))
    if not cpus or bad:
        raise InputError(f"--cores {spec}: core(s) {bad} are not online or not allowed here "
                         f"(allowed: {our_cpus()})")
    return sorted(cpus)


def pin(spec: str) -> dict:
    """Pin this process, every thread of it (BLAS workers too), to the cores of ``spec``."""
    groups = core_groups()
    cpus = parse_cores(spec)
    tids = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass
    os.sched_setaffinity(0, cpus)
    return {"spec": spec, "cpus": cpus, "groups_by": groups["by"], "big": groups["big"], "little": groups["little"]}
