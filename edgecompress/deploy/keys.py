"""Signing keys on the host and signed bundles.

``edgecompress keys init`` makes an Ed25519 key pair (with ``cryptography``)
in ``$EDGECOMPRESS_KEYS_DIR`` or ``~/.config/edgecompress/keys``:

    signing_key       PKCS#8 PEM, unencrypted, mode 0600 (keep it secret)
    signing_key.pub   ``ed25519 <base64> <comment>`` (what a board trusts)

Signing adds ``manifest.sig`` to a bundle (format: edgecompress_runtime.signing).
The first deploy to a board copies ``signing_key.pub`` into the board's trust
store; from then on the runtime there refuses unsigned or foreign-signed bundles.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecompress_runtime import bundle as fmt
from edgecompress_runtime import signing

from ..errors import SignatureError

ENV_VAR = "EDGECOMPRESS_KEYS_DIR"
KEY_NAME = "signing_key"


def keys_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgecompress" / "keys"


@dataclass(frozen=True)
class SigningKey:
    path: Path
    public_key: bytes      # 32 raw bytes
    _private: object       # cryptography Ed25519PrivateKey (never logged or printed)

    @property
    def key_id(self) -> str:
        return signing.key_id(self.public_key)

    def public_line(self, comment: str = "") -> str:
        return signing.format_public_key(self.public_key, comment)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, path={str(self.path)!r})"


def _raw_public(private) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def init_key(directory: Path | None = None, force: bool = False, comment: str | None = None) -> SigningKey:
    """Create a new key pair; refuses to overwrite an existing one unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    d = Path(directory) if directory is not None else keys_dir()
    path = d / KEY_NAME
    if path.exists() and not force:
        raise SignatureError(f"a signing key already exists at {path} (key {load_key(d).key_id}); "
                             "pass --force to replace it (boards that trust the old key will then "
                             "refuse bundles signed with the new one)")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fmt.write_atomic(path, pem, mode=0o600)
    if comment is None:
        comment = f"edgecompress@{os.uname().nodename}"
    pub = signing.format_public_key(_raw_public(private), comment)
    fmt.write_atomic(path.with_name(KEY_NAME + ".pub"), pub.encode(), mode=0o644)
    return SigningKey(path=path, public_key=_raw_public(private), _private=private)


def load_key(directory: Path | None = None, required: bool = True) -> SigningKey | None:
    """The signing key, or None when there is none and ``required`` is False."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    d = Path(directory) if directory is not None else keys_dir()
    path = d / KEY_NAME
    if not path.exists():
        if required:
            raise SignatureError(f"no signing key at {path}: create one with `edgecompress keys init`")
        return None
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise SignatureError(f"cannot read the signing key {path} ({type(e).__name__}); "
                             "it must be an unencrypted PKCS#8 ed25519 key from `edgecompress keys init`") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an ed25519 key; create one with `edgecompress keys init --force`")
    return SigningKey(path=path, public_key=_raw_public(private), _private=private)


def signature_for(manifest_bytes: bytes, key: SigningKey) -> bytes:
    return signing.signature_file(key.key_id, key.sign(manifest_bytes))


def signed_by(path, key: SigningKey) -> bool:
    """Whether the bundle at ``path`` carries a valid signature by ``key``."""
    b = fmt.read_bundle(path)
    return bool(b.signature and signing.check(b, trusted={key.key_id: key.public_key})["verified"])


def sign_bundle(src, dst=None, key: SigningKey | None = None) -> Path:
    """Write ``src`` signed by ``key`` to ``dst`` (default: in place), atomically.
    The bundle is fully verified first: only intact bundles get signed."""
    key = key or load_key()
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    b = fmt.read_bundle(src)  # raises BundleError for anything corrupt
    data = fmt.with_signature(src.read_bytes(), signature_for(b.manifest_bytes, key))
    fmt.write_atomic(dst, data, mode=0o644)
    return dst
