"""Writing a bundle (the format is ``bundle.py``'s): its bytes, the file, and its exact size
before writing.

The bundle is a zip of stored (uncompressed) members with no extra fields, so its size is:
for each member a local header (30 + len(name)) + data + a central directory entry
(46 + len(name)), plus the 22-byte end record. The host's planner sizes every candidate
plan with ``bundle_size``; tests check it against real written bundles."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .bundle import FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_HASH, sha256, write_atomic, zip_entry

_END_RECORD = 22


def manifest_json(manifest: dict, members: dict[str, bytes]) -> bytes:
    """manifest.json as written: the format, its version and every member's sha256 and size filled in."""
    m = dict(manifest)
    m["format"] = FORMAT
    m["format_version"] = FORMAT_VERSION
    m["members"] = {n: {"sha256": sha256(b), "size": len(b)} for n, b in sorted(members.items())}
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def bundle_bytes(manifest: dict, members: dict[str, bytes]) -> bytes:
    """Serialize a bundle. Fills ``manifest["members"]`` with sha256 and size
    of every member, then writes manifest, its hash and the members."""
    mbytes = manifest_json(manifest, members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zip_entry(zf, MANIFEST, mbytes)
        zip_entry(zf, MANIFEST_HASH, (sha256(mbytes) + "\n").encode())
        for name in sorted(members):
            zip_entry(zf, name, members[name])
    return buf.getvalue()


def write_bundle(path, manifest: dict, members: dict[str, bytes]) -> int:
    """Write atomically (temp file + rename): a failure leaves nothing at ``path``. Mode 0644:
    a bundle is a deliverable others read (mkstemp alone would leave it 0600)."""
    data = bundle_bytes(manifest, members)
    write_atomic(Path(path), data, mode=0o644)
    return len(data)


def _entry(name: str, size: int) -> int:
    n = len(name.encode())
    return 30 + n + size + 46 + n


def bundle_size(manifest: dict, members: dict[str, bytes]) -> int:
    """Bytes ``bundle_bytes(manifest, members)`` will be, without building them."""
    mb = manifest_json(manifest, members)
    total = _entry(MANIFEST, len(mb)) + _entry(MANIFEST_HASH, 65) + _END_RECORD
    return total + sum(_entry(n, len(b)) for n, b in members.items())
