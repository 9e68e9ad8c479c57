"""Signed bundles: the runtime's pure-Python Ed25519 verify against `cryptography`'s
signatures, and the device policy (trusted keys -> only signed bundles load)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgecompress_runtime import ed25519, load, read_bundle, signing
from edgecompress_runtime.bundle_writer import bundle_bytes
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
    from edgecompress_runtime.bundle_writer import npy_bytes
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
    assert b.manifest == before.manifest and b.members.keys() == before.members.keys()
    assert all(np.array_equal(b.members[k], before.members[k]) for k in b.members)
    assert ed25519.verify(key.public_key, b.manifest_bytes, base64.b64decode(b.signature["signature"]))
    with zipfile.ZipFile(tiny_bundle) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "manifest.sha256", "manifest.sig"]
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


# ------------------------------------------------------------ hostile bundles (issue 13)


def test_a_duplicate_manifest_placed_first_does_not_ride_on_the_signature(trust, key, tiny_bundle, tmp_path):
    """zipfile reads the last of two same-named entries, other readers the first: a signed
    bundle with an attacker's manifest.json placed before the signed one is refused."""
    import hashlib
    import warnings
    from edgecompress.deploy import keys
    trust.mkdir()
    (trust / f"{key.key_id}.pub").write_text(key.public_line())
    signed = keys.sign_bundle(tiny_bundle, tmp_path / "signed.ecb", key=key)
    assert load_status(signed)["verified"]
    evil = json.loads(read_bundle(signed).manifest_bytes)
    evil["model"]["class"] = "Evil"
    ebytes = json.dumps(evil).encode()
    bad = tmp_path / "dup.ecb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(signed) as src, zipfile.ZipFile(bad, "w") as dst:
            dst.writestr("manifest.json", ebytes)
            dst.writestr("manifest.sha256", hashlib.sha256(ebytes).hexdigest() + "\n")
            for n in src.namelist():
                dst.writestr(n, src.read(n))
    with zipfile.ZipFile(bad) as zf:      # the bypass: the signed copy is what zipfile reads
        assert zf.read("manifest.json") == read_bundle(signed).manifest_bytes
    with pytest.raises(BundleError, match="duplicate entries.*manifest.json"):
        read_bundle(bad)
    with pytest.raises(BundleError, match="duplicate entries"):
        signing.check(read_bundle(bad))


def load_status(path):
    return signing.check(read_bundle(path))


def test_with_a_trust_store_the_signature_is_checked_before_any_member_is_read(trust, key, tiny_bundle,
                                                                               monkeypatch):
    from edgecompress_runtime import bundle as fmt
    trust.mkdir()
    (trust / f"{key.key_id}.pub").write_text(key.public_line())
    read = []
    real = fmt._read_member
    monkeypatch.setattr(fmt, "_read_member", lambda zf, info, *a: read.append(info.filename) or real(zf, info, *a))
    with pytest.raises(BundleError, match="only runs signed bundles"):
        read_bundle(tiny_bundle, trusted=signing.load_trusted_keys())
    assert read == ["manifest.json", "manifest.sha256"]
    b = read_bundle(tiny_bundle, trusted={})          # an empty store: nothing enforced, members read
    assert b.verification["enforced"] is False and "reference/outputs" in b.members


def _store_in_place_of_a_file(tmp_path):
    p = tmp_path / "trusted"
    p.write_text("ed25519 not-a-directory\n")
    return p, "is not a directory"


def _store_under_a_file(tmp_path):
    (tmp_path / "parent").write_text("a file\n")
    return tmp_path / "parent" / "trusted", "cannot be read"


def _store_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    return tmp_path / "a", "cannot be read"


def _store_dangling_symlink(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "trusted")
    return tmp_path / "trusted", "dangling symlink"


def _store_listing_fails(tmp_path):
    d = tmp_path / "trusted"
    d.mkdir()
    return d, "cannot be listed"


@pytest.mark.parametrize("make", [_store_in_place_of_a_file, _store_under_a_file, _store_symlink_loop,
                                  _store_dangling_symlink, _store_listing_fails])
def test_a_trust_store_that_cannot_be_read_fails_closed(make, tiny_bundle, tmp_path, monkeypatch):
    """We run as root, so chmod 000 would not stop us: these stores are unreadable for
    everyone (a file where the directory should be, a path under a file (ENOTDIR), a
    symlink loop (ELOOP), a dangling symlink), and one whose listing fails (EACCES,
    injected into os.listdir since root bypasses permission bits)."""
    store, problem = make(tmp_path)
    if make is _store_listing_fails:
        real = os.listdir

        def listdir(p):
            if os.fspath(p) == os.fspath(store):
                raise PermissionError(13, "Permission denied", os.fspath(p))
            return real(p)
        monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setenv(signing.ENV_VAR, str(store))
    with pytest.raises(BundleError, match=problem) as e:
        signing.load_trusted_keys()
    assert str(store) in str(e.value)
    with pytest.raises(BundleError, match=problem):
        signing.check(read_bundle(tiny_bundle))
    with pytest.raises(BundleError, match=problem):
        load(tiny_bundle)


def test_a_missing_trust_store_is_no_store(tmp_path, monkeypatch, tiny_bundle):
    monkeypatch.setenv(signing.ENV_VAR, str(tmp_path / "nothing-here"))
    assert signing.load_trusted_keys() == {}
    assert signing.check(read_bundle(tiny_bundle))["enforced"] is False


@pytest.mark.parametrize("sig,match", [(b"[" * 2000 + b"]" * 2000, "manifest.sig is nested too deeply"),
                                       (b"[" * 100 + b"]" * 100, "manifest.sig is nested 100 levels deep"),
                                       (b"{" * 5000, "above its limit")])
def test_hostile_manifest_sig_is_a_bundle_error(tiny_bundle, tmp_path, sig, match):
    from edgecompress_runtime.bundle import with_signature
    bad = tmp_path / "sig.ecb"
    bad.write_bytes(with_signature(tiny_bundle.read_bytes(), sig))
    with pytest.raises(BundleError, match=match):
        read_bundle(bad)
