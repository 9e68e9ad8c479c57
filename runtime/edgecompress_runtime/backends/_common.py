"""Helpers shared by the artifact backends (numpy only; no runtime imports here)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..errors import BackendError

# For tests and for users who want to pin a backend: import names listed here
# count as not installed (e.g. EDGECOMPRESS_HIDE_PACKAGES=executorch,ai_edge_litert).
HIDE_ENV = "EDGECOMPRESS_HIDE_PACKAGES"


def hidden() -> set[str]:
    return {p.strip() for p in os.environ.get(HIDE_ENV, "").split(",") if p.strip()}


def installed(module: str) -> bool:
    """Is ``module`` importable? Checked without importing it (cheap)."""
    if module in hidden() or module.split(".")[0] in hidden():
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def threads() -> int:
    """Threads for backends that take a count: $EDGECOMPRESS_RUNTIME_THREADS or every core we may use."""
    env = os.environ.get("EDGECOMPRESS_RUNTIME_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def artifact(bundle, fmt: str) -> tuple[bytes, dict]:
    """(artifact bytes, its manifest entry) or a BackendError saying what the bundle carries."""
    arts = bundle.manifest.get("artifacts") or {}
    entry = arts.get(fmt)
    if not isinstance(entry, dict) or entry.get("member") not in bundle.members:
        carried = ", ".join(["numpy"] + sorted(k for k in arts if k != "numpy"))
        raise BackendError(f"this bundle carries no {fmt} artifact (it carries: {carried}); "
                           f"recompile with --formats including {fmt}")
    return bundle.members[entry["member"]], entry


def plan_chunks(n: int, sizes: list[int]) -> list[tuple[int, int, int]]:
    """Split ``n`` rows into calls of the fixed ``sizes``: (start, rows, size).
    Whole chunks of the largest size, then the remainder in the smallest size
    that holds it (padded), else more chunks."""
    sizes = sorted(sizes)
    out, start = [], 0
    while start < n:
        left = n - start
        fit = [s for s in sizes if s >= left]
        if fit:
            out.append((start, left, fit[0]))
            break
        out.append((start, sizes[-1], sizes[-1]))
        start += sizes[-1]
    return out


def take_rows(feeds: dict, start: int, rows: int, size: int) -> dict:
    """Rows start..start+rows of every input, padded to ``size`` by repeating
    the chunk's first row (always a valid input)."""
    out = {}
    for k, v in feeds.items():
        part = v[start:start + rows]
        if size > rows:
            part = np.concatenate([part, np.repeat(part[:1], size - rows, axis=0)])
        out[k] = np.ascontiguousarray(part)
    return out


def join_rows(parts: list) -> np.ndarray:
    """Concatenate per-chunk outputs [rows, k]; a single column comes back as [B]."""
    if not parts:
        return np.zeros(0, np.float32)
    out = np.concatenate(parts)
    return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out
