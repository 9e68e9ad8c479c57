"""Signed bundles: the runtime's pure-Python Ed25519 verify against `cryptography`'s
signatures, and the device policy (trusted keys -> only signed bundles load)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgecompress_runtime import ed25519, load, read_bundle, signing
from edgecompress_runtime.bundle import bundle_bytes
from edgecompress_runtime.errors import BundleError

L = 2**252 + 27742317777372353535851937790883648493


def _raw(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_rfc8032_test_vector_1():
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33b"
                        "acc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert ed25519.verify(pk, b"", sig)
    assert not ed25519.verify(pk, b"\x00", sig)


def test_verify_matches_cryptography_on_random_messages():
    rng = __import__("random").Random(0)
    for i in range(25):
        k = Ed25519PrivateKey.generate()
        pk = _raw(k.public_key())
        msg = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        sig = k.sign(msg)
        assert ed25519.verify(pk, msg, sig)
        other = _raw(Ed25519PrivateKey.generate().public_key())
        assert not ed25519.verify(other, msg, sig), "wrong key accepted"
        if msg:
            bad = bytearray(msg)
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            assert not ed25519.verify(pk, bytes(bad), sig), "tampered message accepted"
        for pos in (0, 31, 32, 63):   # R and S
            bad = bytearray(sig)
            bad[pos] ^= 0x01
            assert not ed25519.verify(pk, msg, bytes(bad))


def test_verify_rejects_malformed_input():
    k = Ed25519PrivateKey.generate()
    pk, msg = _raw(k.public_key()), b"manifest"
    sig = k.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    assert not ed25519.verify(pk, msg, sig[:32] + (s + L).to_bytes(32, "little"))   # non-canonical S
    assert not ed25519.verify(pk, msg, sig[:63])
    assert not ed25519.verify(pk[:31], msg, sig)
    assert not ed25519.verify(b"\xff" * 32, msg, sig)          # not a point (y >= p)
    assert not ed25519.verify("not bytes", msg, sig)


# ---------------------------------------------------------------------------- signed bundles


@pytest.fixture()
def tiny_bundle(tmp_path):
    """The smallest valid bundle (enough for read_bundle and the signing policy)."""
    import numpy as np
    from edgecompress_runtime.bundle import npy_bytes
    manifest = {"model": {"class": "Tiny", "task": "ctr"}, "inputs": [], "graph": [], "params": {},
                "reference": {"inputs": {}, "outputs": "reference/out.npy"}}
    data = bundle_bytes(manifest, {"reference/out.npy": npy_bytes(np.zeros(2, np.float32))})
    p = tmp_path / "tiny.ecb"
    p.write_bytes(data)
    return p


@pytest.fixture()
def key(tmp_path, monkeypatch):
    from edgecompress.deploy import keys
    monkeypatch.setenv("EDGECOMPRESS_KEYS_DIR", str(tmp_path / "keys"))
    return keys.init_key()


@pytest.fixture()
def trust(tmp_path, monkeypatch):
    d = tmp_path / "trusted"
    monkeypatch.setenv(signing.ENV_VAR, str(d))
    return d


def test_keys_init_writes_a_private_key_only_we_can_read(key, tmp_path):
    from edgecompress.deploy import keys
    assert oct(key.path.stat().st_mode & 0o777) == "0o600"
    assert (key.path.parent / "signing_key.pub").read_text().startswith("ed25519 ")
    assert keys.load_key().key_id == key.key_id
    assert "SigningKey(key_id=" in repr(key) and "PRIVATE" not in repr(key)
    from edgecompress.errors import SignatureError
    with pytest.raises(SignatureError, match="already exists"):
        keys.init_key()


def test_sign_adds_one_member_and_read_bundle_exposes_it(key, tiny_bundle):
    from edgecompress.deploy import keys
    before = read_bundle(tiny_bundle)
    assert before.signature is None
    keys.sign_bundle(tiny_bundle, key=key)
    b = read_bundle(tiny_bundle)
    assert b.signature["key_id"] == key.key_id and b.signature["alg"] == "ed25519"
    assert b.manifest == before.manifest and b.members == before.members
    assert ed25519.verify(key.public_key, b.manifest_bytes, base64.b64decode(b.signature["signature"]))
    with zipfile.ZipFile(tiny_bundle) as zf:
        assert sorted(set(zf.namelist()) - set(before.members)) == ["manifest.json", "manifest.sha256",
                                                                   "manifest.sig"]
    keys.sign_bundle(tiny_bundle, key=key)   # re-signing replaces, never duplicates
    with zipfile.ZipFile(tiny_bundle) as zf:
        assert zf.namelist().count("manifest.sig") == 1


def test_other_unlisted_members_are_still_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "extra.ecb"
    with zipfile.ZipFile(tiny_bundle) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
        dst.writestr("manifest.sig2", b"{}")
    with pytest.raises(BundleError, match="not listed"):
        read_bundle(bad)


def test_without_trusted_keys_unsigned_bundles_load(trust, tiny_bundle):
    status = signing.check(read_bundle(tiny_bundle))
    assert status == {"signed": False, "key_id": None, "verified": False, "enforced": False}


def test_with_a_trusted_key_only_bundles_it_signed_load(trust, key, tiny_bundle, tmp_path):
    from edgecompress.deploy import keys
    trust.mkdir()
    (trust / f"{key.key_id}.pub").write_text(key.public_line("test"))
    with pytest.raises(BundleError, match="only runs signed bundles.*unsigned"):
        signing.check(read_bundle(tiny_bundle))
    signed = keys.sign_bundle(tiny_bundle, tmp_path / "signed.ecb", key=key)
    status = signing.check(read_bundle(signed))
    assert status["verified"] and status["enforced"] and status["key_id"] == key.key_id

    # a bundle signed by a key the device does not trust
    other = keys.init_key(tmp_path / "otherkeys")
    foreign = keys.sign_bundle(tiny_bundle, tmp_path / "foreign.ecb", key=other)
    with pytest.raises(BundleError, match="does not trust"):
        signing.check(read_bundle(foreign))

    # the manifest changed after signing (hashes re-made consistently, signature kept)
    b = read_bundle(signed)
    manifest = json.loads(b.manifest_bytes)
    manifest["model"]["class"] = "Evil"
    mbytes = json.dumps(manifest).encode()
    tampered = tmp_path / "tampered.ecb"
    with zipfile.ZipFile(signed) as src, zipfile.ZipFile(tampered, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            data = {"manifest.json": mbytes,
                    "manifest.sha256": (__import__("hashlib").sha256(mbytes).hexdigest() + "\n").encode()}.get(n, data)
            dst.writestr(n, data)
    with pytest.raises(BundleError, match="does not verify"):
        signing.check(read_bundle(tampered))


def test_a_broken_trust_store_refuses_everything(trust, tiny_bundle):
    trust.mkdir()
    (trust / "junk.pub").write_text("ssh-rsa AAAA nope")
    with pytest.raises(BundleError, match="trusted key file"):
        signing.check(read_bundle(tiny_bundle))


def test_load_enforces_the_policy(trust, key, deploy_bundles, tmp_path):
    from edgecompress.deploy import keys
    src = deploy_bundles["fp32"]
    assert load(src).signature["enforced"] is False
    trust.mkdir()
    (trust / f"{key.key_id}.pub").write_text(key.public_line())
    with pytest.raises(BundleError, match="unsigned"):
        load(src)
    signed = keys.sign_bundle(src, tmp_path / "signed.ecb", key=key)
    m = load(signed)
    assert m.signature["verified"] and m.check_parity()["ok"]


def test_keys_cli_and_compile_sign(tmp_path, monkeypatch, tiny_bundle, capsys):
    from edgecompress.cli import main
    monkeypatch.setenv("EDGECOMPRESS_KEYS_DIR", str(tmp_path / "k"))
    assert main(["keys", "show"]) == 21                         # no key yet: SignatureError
    assert "keys init" in capsys.readouterr().err
    assert main(["keys", "init"]) == 0
    assert main(["keys", "init"]) == 21                         # refuses to overwrite
    assert main(["keys", "sign", str(tiny_bundle)]) == 0
    assert read_bundle(tiny_bundle).signature is not None
    assert main(["keys", "show"]) == 0
    assert capsys.readouterr().out.count("ed25519 ") == 1


def test_the_runtime_needs_no_crypto_package():
    """Verification on the device is pure Python: no cryptography, paramiko or torch."""
    code = ("import sys, edgecompress_runtime, edgecompress_runtime.signing, edgecompress_runtime.ed25519;"
            "print(sorted(m for m in ('cryptography', 'paramiko', 'torch', 'edgecompress', 'nacl') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.stdout.strip() == "[]"
