"""The bundle format (``.ecb``): one zip file to copy to a device.

Members (format version 2; the compact layout is ``bundle_layout.py``'s):
- ``manifest.json``   (deflated) format version, input spec, graph, params, the array table,
                      member hashes, host metrics, reference I/O, provenance, plan
- ``manifest.sha256`` hex sha256 of manifest.json (an edited manifest is refused)
- ``manifest.sig``    optional: ed25519 signature over manifest.json (see signing.py);
                      the one member allowed without a manifest entry
- ``arrays.bin``      every weight and constant, raw little-endian, one after another
                      (the reference rows for parity checks are in the manifest)
- ``artifacts/*``     other formats (.pte, .tflite) when the bundle carries them

Reading verifies before it inflates (see ``read_bundle`` and docs/bundle-format.md):
the zip central directory is checked against the limits below, then the manifest and
(with a trust store) its signature, and only then each listed member, streamed and
hashed, never past its listed size.

This module owns the format and reads it; ``bundle_writer.py`` writes it. The host's
writer imports both instead of restating them, so there is one format and one loader.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle_json import clip as _clip, load_json
from .bundle_layout import DEFLATED, expand, views
from .errors import BundleError

FORMAT = "edgecompress-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
SIGNATURE = "manifest.sig"
SUFFIX = ".ecb"
# Fixed timestamp: the same content gives the same bytes (and hashes).
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if name in DEFLATED else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=9)


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
    """A verified bundle in memory: its (logical) manifest and members. Read from a file, the
    members are the zip members other than arrays.bin (artifacts, ...) as bytes and every array
    the manifest names as a read-only ndarray (over arrays.bin, or the reference rows; bundle_layout.py);
    the host's drafts may hold .npy bytes instead."""

    path: str
    manifest: dict
    members: dict[str, bytes]
    size: int
    manifest_bytes: bytes = b""       # exactly as stored: what a signature covers
    signature: dict | None = None     # parsed manifest.sig, None when unsigned

    verification: dict | None = None  # signing.check status when read_bundle applied a policy

    def array(self, member: str) -> np.ndarray:
        try:
            data = self.members[member]
        except (KeyError, TypeError):
            raise BundleError(f"{self.path}: manifest refers to missing member {_name(member)}") from None
        if isinstance(data, np.ndarray):
            return data
        try:
            f = io.BytesIO(data)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise ValueError("object arrays are not allowed")
            # the header must describe exactly the bytes the manifest listed (and hashed):
            # a huge declared shape is refused here, before numpy allocates it
            need = math.prod(int(d) for d in shape) * dtype.itemsize
            have = len(data) - f.tell()
            if need != have:
                raise ValueError(f"header declares shape {_clip(shape, 60)} of {dtype} = {need} bytes, "
                                 f"the member holds {have}")
            f.seek(0)
            return np.load(f, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy parses the header with tokenize/ast: any of their errors
            # (TokenError, SyntaxError, RecursionError, ...) means the member is not a plain .npy array
            raise BundleError(f"{self.path}: member {_name(member)} is not a plain .npy array "
                              f"({type(e).__name__}: {_clip(e)})") from None


def file_sha256(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks (the host's deployer uses it too)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- limits
# A bundle may come from a stranger: everything is checked against these bounds from
# the zip central directory before any member is inflated. The largest real bundles
# are tens of MB (biggest member ~5 MB, manifest ~50 kB, depth 7, ~120 members).
MAX_MEMBER_BYTES = 256 << 20      # declared uncompressed size of one member
MAX_BUNDLE_BYTES = 512 << 20      # sum of declared uncompressed sizes
MAX_MEMBERS = 4096                # entries in the zip
MAX_MANIFEST_BYTES = 16 << 20     # manifest.json
MAX_SIDECAR_BYTES = 4096          # manifest.sha256 and manifest.sig
ENV_MAX_MEMBER_BYTES = "EDGECOMPRESS_RUNTIME_MAX_MEMBER_BYTES"
ENV_MAX_BUNDLE_BYTES = "EDGECOMPRESS_RUNTIME_MAX_BUNDLE_BYTES"
_CHUNK = 1 << 20
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_MAX_MESSAGE_NAMES = 5


def _limit(value, env: str, default: int) -> int:
    if value is None:
        raw = os.environ.get(env)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BundleError(f"{env}={_clip(raw, 40)} is not an integer number of bytes") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BundleError(f"bundle size limit must be a positive integer number of bytes, got {_clip(repr(value), 40)}")
    return value


def _name(name) -> str:
    return _clip(repr(name), 80)


def _few(names) -> str:
    """The first few names and a count of the rest (messages stay one bounded line)."""
    names = list(names)
    shown = ", ".join(_name(n) for n in names[:_MAX_MESSAGE_NAMES])
    rest = len(names) - _MAX_MESSAGE_NAMES
    return shown + (f" and {rest} more" if rest > 0 else "")


def _is_regular(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    # (an empty name is no file either; zipfile's is_dir() would raise on it)
    return bool(info.filename) and kind in (0, stat.S_IFREG) and not info.filename.endswith("/")


def _check_directory(path: str, infos: list, max_member: int, max_total: int) -> dict:
    """Refuse, from the central directory alone, anything a bundle never holds. name -> ZipInfo."""
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{path}: the bundle has {len(infos)} entries, above the limit of {MAX_MEMBERS}")
    seen, dupes = {}, {}
    for info in infos:
        if info.filename in seen:
            dupes[info.filename] = dupes.get(info.filename, 1) + 1
        seen[info.filename] = info
    if dupes:
        raise BundleError(f"{path}: duplicate entries in the zip ({_few(f'{n} x{c}' for n, c in dupes.items())}); "
                          "a bundle holds each member once (tampered)")
    bad = [i.filename for i in infos if not _is_regular(i)]
    if bad:
        raise BundleError(f"{path}: directory, symlink or special-file entries are not allowed: {_few(bad)}")
    bad = [i.filename for i in infos if i.compress_type not in _ALLOWED_METHODS]
    if bad:
        raise BundleError(f"{path}: compression method other than stored/deflate in {_few(bad)}")
    bad = [i.filename for i in infos if i.flag_bits & 0x1]
    if bad:
        raise BundleError(f"{path}: encrypted entries are not allowed: {_few(bad)}")
    big = [i for i in infos if i.file_size > max_member]
    if big:
        raise BundleError(f"{path}: member {_name(big[0].filename)} declares {big[0].file_size} bytes, above the "
                          f"per-member limit of {max_member} bytes ({ENV_MAX_MEMBER_BYTES})"
                          + (f"; {len(big) - 1} more too" if len(big) > 1 else ""))
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise BundleError(f"{path}: members declare {total} bytes in all, above the bundle limit of "
                          f"{max_total} bytes ({ENV_MAX_BUNDLE_BYTES})")
    for name, cap in ((MANIFEST, MAX_MANIFEST_BYTES), (MANIFEST_HASH, MAX_SIDECAR_BYTES),
                      (SIGNATURE, MAX_SIDECAR_BYTES)):
        if name in seen and seen[name].file_size > cap:
            raise BundleError(f"{path}: {name} declares {seen[name].file_size} bytes, above its limit of {cap}")
    return seen


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, digest: str | None, path: str) -> bytes:
    """Inflate one member in chunks, never past ``size``, hashing as it goes."""
    h = hashlib.sha256()
    chunks, n = [], 0
    with zf.open(info) as f:
        while True:
            chunk = f.read(min(_CHUNK, size - n + 1))
            if not chunk:
                break
            n += len(chunk)
            if n > size:
                raise BundleError(f"{path}: member {_name(info.filename)} is longer than the {size} bytes "
                                  "declared (corrupted or tampered)")
            h.update(chunk)
            chunks.append(chunk)
    if n != size:
        raise BundleError(f"{path}: member {_name(info.filename)} has {n} bytes, {size} declared "
                          "(corrupted or tampered)")
    if digest is not None and h.hexdigest() != digest:
        raise BundleError(f"{path}: member {_name(info.filename)} fails its sha256 check (corrupted or tampered)")
    return b"".join(chunks)


def _check_version(version, path: str) -> None:
    if type(version) is not int or version < 1:
        raise BundleError(f"{path}: format_version must be a positive integer, got {_clip(repr(version), 40)} "
                          "(corrupted or tampered)")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version} is newer than this runtime "
                          f"supports ({FORMAT_VERSION}); upgrade edgecompress-runtime")
    if version < FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version} is older than the version this runtime "
                          f"reads ({FORMAT_VERSION}); recompile the bundle with this edgecompress "
                          "(the runtime ships with its bundles)")


def _listed_members(manifest: dict, path: str) -> dict:
    listed = manifest.get("members", {})
    if not isinstance(listed, dict):
        raise BundleError(f"{path}: manifest field 'members' must be an object")
    for name, meta in listed.items():
        if name in (MANIFEST, MANIFEST_HASH, SIGNATURE):
            raise BundleError(f"{path}: manifest lists {name} as a member")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or type(meta.get("size")) is not int or meta["size"] < 0:
            raise BundleError(f"{path}: manifest entry for member {_name(name)} needs sha256 (string) and "
                              "size (non-negative integer)")
    return listed


def read_bundle(path, *, trusted: dict | None = None, max_member_bytes: int | None = None,
                max_bundle_bytes: int | None = None) -> Bundle:
    """Open, check and hash-verify a bundle. Every failure is a BundleError
    saying what is wrong; nothing from zipfile or json escapes.

    Verify before inflate: the zip central directory is checked first (no duplicate
    names, directories, symlinks, unknown compression, declared sizes above
    ``MAX_MEMBER_BYTES`` / ``MAX_BUNDLE_BYTES``, overridable by the keywords or
    ``$EDGECOMPRESS_RUNTIME_MAX_MEMBER_BYTES`` / ``..._MAX_BUNDLE_BYTES``), then the
    manifest, its hash and, when ``trusted`` (key id -> public key, see signing.py)
    is given, the device's signing policy; only then is each member the manifest
    lists inflated, never past its declared size, its sha256 checked as it is read.
    ``trusted=None`` reads without applying a policy (the host's tools; ``load()``
    applies it afterwards). ``Bundle.verification`` holds the policy's status when
    it was applied here."""
    path = str(path)
    max_member = _limit(max_member_bytes, ENV_MAX_MEMBER_BYTES, MAX_MEMBER_BYTES)
    max_total = _limit(max_bundle_bytes, ENV_MAX_BUNDLE_BYTES, MAX_BUNDLE_BYTES)
    if not os.path.isfile(path):
        raise BundleError(f"{path}: no such bundle file")
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            entries = _check_directory(path, zf.infolist(), max_member, max_total)
            for need in (MANIFEST, MANIFEST_HASH):
                if need not in entries:
                    raise BundleError(f"{path}: not an edgecompress bundle ({need} is missing)")
            mbytes = _read_member(zf, entries[MANIFEST], entries[MANIFEST].file_size, None, path)
            want = _read_member(zf, entries[MANIFEST_HASH], entries[MANIFEST_HASH].file_size, None, path)
            want = want.decode(errors="replace").strip()
            if sha256(mbytes) != want:
                raise BundleError(f"{path}: manifest.json does not match its recorded hash "
                                  "(edited or corrupted); recompile or copy the bundle again")
            manifest = load_json(mbytes, "manifest.json", path)
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise BundleError(f"{path}: not an edgecompress bundle (format field missing)")
            _check_version(manifest.get("format_version"), path)
            listed = _listed_members(manifest, path)
            sidecars = {MANIFEST, MANIFEST_HASH, SIGNATURE}
            extra = sorted(n for n in entries if n not in listed and n not in sidecars)
            if extra:
                raise BundleError(f"{path}: members not listed in the manifest: {_few(extra)}")
            missing = sorted(n for n in listed if n not in entries)
            if missing:
                raise BundleError(f"{path}: member {_few(missing)} is missing from the bundle")
            for name, meta in listed.items():
                if entries[name].file_size != meta["size"]:
                    raise BundleError(f"{path}: member {_name(name)} declares {entries[name].file_size} bytes in "
                                      f"the zip, the manifest lists {meta['size']} (corrupted or tampered)")
            signature = None
            if SIGNATURE in entries:
                from .signing import parse_signature
                sig_raw = _read_member(zf, entries[SIGNATURE], entries[SIGNATURE].file_size, None, path)
                signature = parse_signature(sig_raw, path)
            bundle = Bundle(path=path, manifest=manifest, members={}, size=size, manifest_bytes=mbytes,
                            signature=signature)
            if trusted is not None:
                from .signing import check
                bundle.verification = check(bundle, trusted)   # before any member is inflated
            from .schema import check_manifest
            try:
                logical, arrays = expand(manifest, listed)      # the layout's fields, then every field
            except BundleError as e:
                raise BundleError(f"{path}: {e} (corrupted or tampered)") from None
            check_manifest(logical, path, arrays=arrays)        # before anything uses the manifest
            raw = {}
            for name in sorted(listed):
                meta = listed[name]
                raw[name] = _read_member(zf, entries[name], meta["size"], meta["sha256"], path)
            bundle.manifest = logical
            bundle.members = {**{k: v for k, v in raw.items() if k not in _BLOBS}, **views(arrays, raw)}
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, OverflowError, zlib.error) as e:
        raise BundleError(f"{path}: corrupt or truncated bundle ({type(e).__name__}: {_clip(e)}); "
                          "copy it again from the host") from None
    return bundle


_BLOBS = ("arrays.bin",)


def with_signature(data: bytes, signature: bytes) -> bytes:
    """The bundle ``data`` with ``manifest.sig`` set to ``signature`` (JSON bytes),
    replacing any earlier signature; every other member is copied unchanged (and stored
    or deflated as the writer does)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        names = [n for n in src.namelist() if n != SIGNATURE]
        for name in names:
            zip_entry(zf, name, src.read(name))
            if name == MANIFEST_HASH:
                zip_entry(zf, SIGNATURE, signature)
    return buf.getvalue()
