"""Exact bundle size, computed from the manifest and members without writing.

The bundle is a zip of stored (uncompressed) members with no extra fields, so
its size is: for each member a local header (30 + len(name)) + data + a
central directory entry (46 + len(name)), plus the 22-byte end record. The
runtime's writer (edgecompress_runtime.bundle) is the one that must agree:
tests check this function against real written bundles."""
from __future__ import annotations

import json

import numpy as np

from edgecompress_runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_HASH, sha256

_END_RECORD = 22


def _entry(name: str, size: int) -> int:
    n = len(name.encode())
    return 30 + n + size + 46 + n


def npy_size(array: np.ndarray) -> int:
    """Bytes np.save writes for ``array`` (format 1.0 header padded to 64)."""
    header = np.lib.format.header_data_from_array_1_0(np.ascontiguousarray(array))
    text = repr({k: header[k] for k in ("descr", "fortran_order", "shape")})
    # np.lib.format pads "magic(6) + version(2) + len(2) + header + \n" to a multiple of 64
    total = 10 + len(text) + 1
    return total + (-total % 64) + array.nbytes


def manifest_bytes(manifest: dict, members: dict[str, bytes]) -> bytes:
    """The manifest.json bytes the writer will produce (same fields it fills in)."""
    m = dict(manifest)
    m["format"] = FORMAT
    m["format_version"] = FORMAT_VERSION
    m["members"] = {n: {"sha256": sha256(b), "size": len(b)} for n, b in sorted(members.items())}
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def bundle_size(manifest: dict, members: dict[str, bytes]) -> int:
    mb = manifest_bytes(manifest, members)
    total = _entry(MANIFEST, len(mb)) + _entry(MANIFEST_HASH, 65) + _END_RECORD
    return total + sum(_entry(n, len(b)) for n, b in members.items())
