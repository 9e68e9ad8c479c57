"""The bundle format (``.ecb``): one zip file to copy to a device.

Members (stored, not deflated, so sizes are exact and predictable):
- ``manifest.json``   format version, input spec, graph, params, member hashes,
                      host metrics, reference I/O, provenance, plan
- ``manifest.sha256`` hex sha256 of manifest.json (an edited manifest is refused)
- ``manifest.sig``    optional: ed25519 signature over manifest.json (see signing.py);
                      the one member allowed without a manifest entry
- ``arrays/*.npy``    weights, read with ``allow_pickle=False``
- ``reference/*.npy`` reference inputs and the host's outputs for parity checks
- ``artifacts/*``     other formats (.pte, .tflite) when the bundle carries them

This module owns the format: the host's writer imports ``write_bundle`` and the
constants instead of restating them, so there is one format and one loader.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError

FORMAT = "edgecompress-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
SIGNATURE = "manifest.sig"
SUFFIX = ".ecb"
# Fixed timestamp: the same content gives the same bytes (and hashes).
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _zip_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def bundle_bytes(manifest: dict, members: dict[str, bytes]) -> bytes:
    """Serialize a bundle. Fills ``manifest["members"]`` with sha256 and size
    of every member, then writes manifest, its hash and the members."""
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION
    manifest["members"] = {n: {"sha256": sha256(b), "size": len(b)} for n, b in sorted(members.items())}
    mbytes = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        _zip_entry(zf, MANIFEST, mbytes)
        _zip_entry(zf, MANIFEST_HASH, (sha256(mbytes) + "\n").encode())
        for name in sorted(members):
            _zip_entry(zf, name, members[name])
    return buf.getvalue()


def write_bundle(path, manifest: dict, members: dict[str, bytes]) -> int:
    """Write atomically (temp file + rename): a failure leaves nothing at ``path``."""
    data = bundle_bytes(manifest, members)
    write_atomic(Path(path), data)
    return len(data)


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file in the same directory + rename (the host's key files use it too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Bundle:
    """A verified bundle in memory: its manifest and raw member bytes."""

    path: str
    manifest: dict
    members: dict[str, bytes]
    size: int
    manifest_bytes: bytes = b""       # exactly as stored: what a signature covers
    signature: dict | None = None     # parsed manifest.sig, None when unsigned

    def array(self, member: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(self.members[member]), allow_pickle=False)
        except KeyError:
            raise BundleError(f"{self.path}: manifest refers to missing member {member!r}") from None
        except ValueError as e:
            raise BundleError(f"{self.path}: member {member!r} is not a plain .npy array ({e})") from None


def file_sha256(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks (the host's deployer uses it too)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_bundle(path) -> Bundle:
    """Open, check and hash-verify a bundle. Every failure is a BundleError
    saying what is wrong; nothing from zipfile or json escapes."""
    path = str(path)
    if not os.path.isfile(path):
        raise BundleError(f"{path}: no such bundle file")
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for need in (MANIFEST, MANIFEST_HASH):
                if need not in names:
                    raise BundleError(f"{path}: not an edgecompress bundle ({need} is missing)")
            raw = {n: zf.read(n) for n in zf.namelist()}
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: corrupt or truncated bundle ({type(e).__name__}: {e}); "
                          "copy it again from the host") from None
    mbytes = raw.pop(MANIFEST)
    sig_raw = raw.pop(SIGNATURE, None)
    want = raw.pop(MANIFEST_HASH).decode(errors="replace").strip()
    if sha256(mbytes) != want:
        raise BundleError(f"{path}: manifest.json does not match its recorded hash "
                          "(edited or corrupted); recompile or copy the bundle again")
    try:
        manifest = json.loads(mbytes)
    except ValueError as e:
        raise BundleError(f"{path}: manifest.json is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not an edgecompress bundle (format field missing)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version} is newer than this runtime "
                          f"supports ({FORMAT_VERSION}); upgrade edgecompress-runtime")
    listed = manifest.get("members", {})
    for name, meta in sorted(listed.items()):
        if name not in raw:
            raise BundleError(f"{path}: member {name!r} is missing from the bundle")
        if sha256(raw[name]) != meta.get("sha256"):
            raise BundleError(f"{path}: member {name!r} fails its sha256 check (corrupted or tampered)")
    extra = sorted(set(raw) - set(listed))
    if extra:
        raise BundleError(f"{path}: members not listed in the manifest: {', '.join(extra)}")
    signature = None
    if sig_raw is not None:
        from .signing import parse_signature
        signature = parse_signature(sig_raw, path)
    return Bundle(path=path, manifest=manifest, members=raw, size=size, manifest_bytes=mbytes,
                  signature=signature)


def with_signature(data: bytes, signature: bytes) -> bytes:
    """The bundle ``data`` with ``manifest.sig`` set to ``signature`` (JSON bytes),
    replacing any earlier signature; every other member is copied unchanged."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        names = [n for n in src.namelist() if n != SIGNATURE]
        for name in names:
            _zip_entry(zf, name, src.read(name))
            if name == MANIFEST_HASH:
                _zip_entry(zf, SIGNATURE, signature)
    return buf.getvalue()
