"""Signed bundles on the device: the trust store and the check ``load()`` makes.

A bundle may carry ``manifest.sig``: JSON ``{"alg": "ed25519", "key_id": ...,
"signature": <base64>}``, an Ed25519 signature over the exact bytes of
``manifest.json``. The manifest lists every member's sha256, so the signature
covers the whole bundle.

The device trusts the public keys in its trust store: every ``*.pub`` file in
``$EDGECOMPRESS_RUNTIME_TRUSTED_KEYS`` when that variable is set, else in
``$XDG_CONFIG_HOME/edgecompress-runtime/trusted_keys`` (``~/.config/...``).
A ``.pub`` file holds one line ``ed25519 <base64 of the 32 raw key bytes> [comment]``.

When the store holds at least one key, ``load()`` refuses unsigned bundles and
bundles signed by any other key. A store that exists but cannot be used (not a
directory, cannot be listed, a broken symlink, a ``.pub`` it cannot read or parse)
makes it refuse everything (fail closed). With an empty or missing store,
signatures are optional.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat as statmod
from pathlib import Path

from . import ed25519
from .bundle_json import load_json
from .errors import BundleError

ENV_VAR = "EDGECOMPRESS_RUNTIME_TRUSTED_KEYS"
ALG = "ed25519"


def key_id(public_key: bytes) -> str:
    """Short, stable name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def format_public_key(public_key: bytes, comment: str = "") -> str:
    line = f"{ALG} {base64.b64encode(public_key).decode()}"
    return (line + (" " + comment if comment else "")) + "\n"


def parse_public_key(text: str, source: str = "public key") -> bytes:
    """The 32 raw bytes of a ``ed25519 <base64> [comment]`` line."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != ALG:
        raise BundleError(f"{source}: expected a line 'ed25519 <base64 key> [comment]'")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{source}: the key is not valid base64") from None
    if len(raw) != ed25519.PUBLIC_KEY_SIZE:
        raise BundleError(f"{source}: an ed25519 public key has 32 bytes, this one has {len(raw)}")
    return raw


def trusted_keys_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgecompress-runtime" / "trusted_keys"


def load_trusted_keys(directory=None) -> dict[str, bytes]:
    """key id -> raw public key for every ``*.pub`` in the trust store.

    Fails closed: only a store path that does not exist at all means "no store"
    (signatures optional). A store that exists but is not a directory, cannot be
    listed, is a dangling or looping symlink, sits under a non-directory, or holds a
    ``.pub`` file that cannot be read or parsed is a BundleError naming the path and
    the problem (the device then refuses every bundle until it is fixed)."""
    d = Path(directory) if directory is not None else trusted_keys_dir()
    fix = "fix or remove it (this device refuses every bundle until then)"
    try:
        st = os.stat(d)
    except FileNotFoundError:
        if os.path.lexists(d):
            raise BundleError(f"trust store {d} is a dangling symlink; {fix}") from None
        return {}
    except OSError as e:
        raise BundleError(f"trust store {d} cannot be read ({e.strerror or e}); {fix}") from None
    if not statmod.S_ISDIR(st.st_mode):
        raise BundleError(f"trust store {d} is not a directory; {fix}")
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        raise BundleError(f"trust store {d} cannot be listed ({e.strerror or e}); {fix}") from None
    keys = {}
    for name in names:
        if not name.endswith(".pub"):
            continue
        p = d / name
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"trusted key file {p} cannot be read ({_one_line(e)}); {fix}") from None
        raw = parse_public_key(text, source=f"trusted key file {p}")
        keys[key_id(raw)] = raw
    return keys


def _keys(trusted) -> str:
    ids = sorted(trusted)
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _one_line(e) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


def parse_signature(data: bytes, path: str) -> dict:
    """Validate the shape of ``manifest.sig``; the signature is checked by ``check``."""
    sig = load_json(data, "manifest.sig", path)
    if not isinstance(sig, dict) or sig.get("alg") != ALG or not isinstance(sig.get("key_id"), str) \
            or not isinstance(sig.get("signature"), str):
        raise BundleError(f"{path}: manifest.sig must hold alg 'ed25519', key_id and signature")
    try:
        raw = base64.b64decode(sig["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{path}: manifest.sig: the signature is not valid base64") from None
    if len(raw) != ed25519.SIGNATURE_SIZE:
        raise BundleError(f"{path}: manifest.sig: an ed25519 signature has 64 bytes, this one has {len(raw)}")
    return {"alg": ALG, "key_id": sig["key_id"], "signature": sig["signature"]}


def signature_file(key_id: str, signature: bytes) -> bytes:
    """The bytes of ``manifest.sig`` (what ``parse_signature`` reads; the host's signer writes it)."""
    return json.dumps({"alg": ALG, "key_id": key_id, "signature": base64.b64encode(signature).decode()},
                      sort_keys=True).encode()


def signature_bytes(sig: dict) -> bytes:
    return base64.b64decode(sig["signature"])


def check(bundle, trusted: dict[str, bytes] | None = None) -> dict:
    """Apply the device's signing policy to a read bundle.

    Returns ``{"signed", "key_id", "verified", "enforced"}``; raises BundleError
    when the trust store is non-empty and the bundle is unsigned, signed by an
    untrusted key, or its signature does not verify."""
    if trusted is None:
        trusted = load_trusted_keys()
    sig = bundle.signature
    status = {"signed": sig is not None, "key_id": sig["key_id"] if sig else None,
              "verified": False, "enforced": bool(trusted)}
    if sig is not None and sig["key_id"] in trusted:
        status["verified"] = ed25519.verify(trusted[sig["key_id"]], bundle.manifest_bytes,
                                            signature_bytes(sig))
    if not trusted:
        return status
    where = trusted_keys_dir()
    if sig is None:
        raise BundleError(f"{bundle.path}: this device only runs signed bundles (it trusts "
                          f"{_keys(trusted)} in {where}) and this bundle is unsigned; "
                          "sign it on the host (`edgecompress keys sign BUNDLE`, or deploy with a "
                          "signing key from `edgecompress keys init`)")
    if sig["key_id"] not in trusted:
        raise BundleError(f"{bundle.path}: signed by key {_one_line(repr(sig['key_id']))[:80]}, which this device does not "
                          f"trust (it trusts {_keys(trusted)} in {where}); sign it with a "
                          "trusted key or add that key's .pub file to the trust store")
    if not status["verified"]:
        raise BundleError(f"{bundle.path}: the signature by key {sig['key_id']} does not verify: the "
                          "manifest was changed after signing, or the signature is corrupt; "
                          "sign the bundle again on the host")
    return status
