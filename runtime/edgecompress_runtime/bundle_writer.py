"""Writing a bundle (the format is ``bundle.py``'s, the compact layout ``bundle_layout.py``'s): its
bytes, the file, and its exact size before writing.

The bundle is a zip with no extra fields, so its size is: for each member a local header
(30 + len(name)) + its data as stored (deflated for manifest.json, else as is)
+ a central directory entry (46 + len(name)), plus the 22-byte end record. Deflate is zlib at
level 9, deterministic for the same input, so ``bundle_size`` deflates the small members itself
and is exact; the host's planner sizes every candidate plan with it, tests check it against real
written bundles."""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .bundle import FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_HASH, Bundle, sha256, write_atomic, zip_entry
from .bundle_layout import ARRAYS, DEFLATED, expand, pack, views

_END_RECORD = 22
LEVEL = 9


def manifest_json(stored: dict, members: dict[str, bytes]) -> bytes:
    """manifest.json as written: a stored (packed) manifest with the format, its version and every
    zip member's sha256 and size filled in."""
    m = dict(stored)
    m["format"] = FORMAT
    m["format_version"] = FORMAT_VERSION
    m["members"] = {n: {"sha256": sha256(b), "size": len(b)} for n, b in sorted(members.items())}
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def container_bytes(stored: dict, members: dict[str, bytes]) -> bytes:
    """The zip of a stored manifest and its zip members (hashes and sizes filled in). Fuzz tests
    call it with hostile stored manifests; ``bundle_bytes`` is what the host uses."""
    mbytes = manifest_json(stored, members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zip_entry(zf, MANIFEST, mbytes)
        zip_entry(zf, MANIFEST_HASH, (sha256(mbytes) + "\n").encode())
        for name in sorted(members):
            zip_entry(zf, name, members[name])
    return buf.getvalue()


def bundle_bytes(manifest: dict, members: dict) -> bytes:
    """Serialize a bundle from its logical manifest and members (array names -> ndarray or .npy
    bytes, other members -> bytes): packed (bundle_layout.pack), then zipped."""
    return container_bytes(*pack(manifest, members))


def write_bundle(path, manifest: dict, members: dict) -> int:
    """Write atomically (temp file + rename): a failure leaves nothing at ``path``. Mode 0644:
    a bundle is a deliverable others read (mkstemp alone would leave it 0600)."""
    data = bundle_bytes(manifest, members)
    write_atomic(Path(path), data, mode=0o644)
    return len(data)


def deflated_size(data: bytes) -> int:
    c = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    return len(c.compress(data)) + len(c.flush())


def _entry(name: str, data: bytes) -> int:
    n = len(name.encode())
    return 30 + n + (deflated_size(data) if name in DEFLATED else len(data)) + 46 + n


def _size(mbytes: bytes, zmembers: dict) -> int:
    total = _entry(MANIFEST, mbytes) + _entry(MANIFEST_HASH, b"x" * 65) + _END_RECORD
    return total + sum(_entry(n, b) for n, b in zmembers.items())


def bundle_size(manifest: dict, members: dict) -> int:
    """Bytes ``bundle_bytes(manifest, members)`` will be, without building the zip."""
    stored, zmembers = pack(manifest, members)
    return _size(manifest_json(stored, zmembers), zmembers)


def in_memory(manifest: dict, members: dict, path: str = "<in-memory bundle>") -> Bundle:
    """The Bundle a reader gets from ``bundle_bytes(manifest, members)`` (same logical manifest, the
    same arrays), without the zip: what the host measures is what ships."""
    stored, zmembers = pack(manifest, members)
    mbytes = manifest_json(stored, zmembers)
    full = json.loads(mbytes)
    logical, arrays = expand(full, full["members"])
    kept = {k: v for k, v in zmembers.items() if k != ARRAYS}
    return Bundle(path=path, manifest=logical, members={**kept, **views(arrays, zmembers)},
                  size=_size(mbytes, zmembers), manifest_bytes=mbytes)
