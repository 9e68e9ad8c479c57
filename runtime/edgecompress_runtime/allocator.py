"""Keep freed memory in the process between inference runs (glibc only).

Why: a graph run allocates its intermediates (0.1-5 MB per run for typical
recommenders) and frees them at the end. glibc's default thresholds then hand
that memory back to the kernel (munmap / heap trim), and the next run faults it
in again, page by page: on a 2-core x86 VM that made batch >= 64 runs 2-3x slower
and bimodal from run to run (identical graphs 0.16 vs 0.32 ms). Inference
runtimes with their own arena (TFLite, ONNX Runtime) do not pay this; our numpy
runtime gets the same effect by asking glibc to keep freed blocks:

- ``M_MMAP_THRESHOLD`` 32 MiB (the largest glibc allows on 64-bit): blocks up to
  that size come from the heap, so freeing them keeps them for the next run;
- ``M_TRIM_THRESHOLD`` 256 MiB: the heap top is not returned to the kernel after
  every run. The process keeps at most what it already used at its peak.

Applied once per process by ``edgecompress_runtime.load`` (and calibrate). Off
with ``EDGECOMPRESS_RUNTIME_MALLOC=system``; left alone when the user already set
glibc malloc tunables (``GLIBC_TUNABLES=...glibc.malloc...``) or on other C libraries.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV = "EDGECOMPRESS_RUNTIME_MALLOC"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 256 * 2**20

_state: dict | None = None


def tune() -> dict:
    """Apply the settings once; returns what this process runs with (for board facts)."""
    global _state
    if _state is not None:
        return _state
    mode = os.environ.get(ENV, "keep").strip().lower()
    if mode in ("system", "default", "off", "0"):
        _state = {"allocator": "system", "reason": f"{ENV}={mode}"}
    elif "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        _state = {"allocator": "system", "reason": "GLIBC_TUNABLES sets malloc tunables"}
    elif platform.libc_ver()[0] != "glibc":
        _state = {"allocator": "system", "reason": "not glibc"}
    else:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError) as e:
            ok, err = False, str(e)
        else:
            err = "mallopt refused the settings"
        _state = ({"allocator": "glibc-keep", "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
                  if ok else {"allocator": "system", "reason": err})
    return _state
