"""Facts about the machine a benchmark ran on (numpy-only, Linux-first)."""
from __future__ import annotations

import os
import platform
import sys

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
