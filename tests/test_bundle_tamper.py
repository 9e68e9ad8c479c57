"""A bundle that is corrupt, tampered, incomplete or too new is refused with a
BundleError that says what is wrong; never a traceback from zipfile or numpy."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

import edgecompress_runtime as ecr
from edgecompress_runtime.bundle import FORMAT_VERSION, MANIFEST, MANIFEST_HASH, sha256


def _rewrite(src, dst, change):
    """Copy a bundle member by member, letting change(name, data) edit or drop members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def test_clean_bundle_loads(bundles):
    m = ecr.load(bundles["int8"].path)
    assert m.check_parity()["ok"]


def _member_offsets(path):
    with zipfile.ZipFile(path) as zf:
        out = {}
        for info in zf.infolist():
            # local header: 30 bytes + name + extra; data follows
            with open(path, "rb") as f:
                f.seek(info.header_offset + 26)
                n, e = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
            out[info.filename] = (info.header_offset + 30 + n + e, info.file_size)
        return out


def test_flipped_byte_in_every_member_is_refused(bundles, tmp_path):
    src = bundles["int8"].path
    offsets = _member_offsets(src)
    assert len(offsets) > 5
    for name, (start, size) in offsets.items():
        if size == 0:
            continue
        bad = tmp_path / "flipped.ecb"
        shutil.copy(src, bad)
        with open(bad, "r+b") as f:
            f.seek(start + size // 2)
            b = f.read(1)
            f.seek(start + size // 2)
            f.write(bytes([b[0] ^ 0x01]))
        with pytest.raises(ecr.BundleError) as e:
            ecr.load(bad)
        assert "bundle" in str(e.value) or name in str(e.value)


def test_edited_manifest_is_refused(bundles, tmp_path):
    def edit(name, data):
        if name == MANIFEST:
            m = json.loads(data)
            m["reference"]["tolerance"] = 1e9
            return json.dumps(m).encode()
        return data
    bad = tmp_path / "edited.ecb"
    _rewrite(bundles["int8"].path, bad, edit)
    with pytest.raises(ecr.BundleError, match="manifest.json does not match its recorded hash"):
        ecr.load(bad)


def test_missing_member_is_refused(bundles, tmp_path):
    bad = tmp_path / "missing.ecb"
    victim = next(n for n in zipfile.ZipFile(bundles["int8"].path).namelist() if n.startswith("arrays/"))
    _rewrite(bundles["int8"].path, bad, lambda n, d: None if n == victim else d)
    with pytest.raises(ecr.BundleError, match="is missing"):
        ecr.load(bad)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_file_is_refused(bundles, tmp_path, keep):
    data = bundles["int8"].path.read_bytes()
    bad = tmp_path / "truncated.ecb"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ecr.BundleError, match="corrupt or truncated|not an edgecompress bundle"):
        ecr.load(bad)


def test_newer_format_version_is_refused(bundles, tmp_path):
    def bump(name, data):
        return data
    bad = tmp_path / "newer.ecb"
    with zipfile.ZipFile(bundles["fp32"].path) as zin:
        m = json.loads(zin.read(MANIFEST))
    m["format_version"] = FORMAT_VERSION + 1
    mbytes = json.dumps(m).encode()

    def newer(name, data):
        if name == MANIFEST:
            return mbytes
        if name == MANIFEST_HASH:
            return (sha256(mbytes) + "\n").encode()
        return data
    _rewrite(bundles["fp32"].path, bad, newer)
    with pytest.raises(ecr.BundleError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        ecr.load(bad)


def test_not_a_bundle(tmp_path):
    p = tmp_path / "x.ecb"
    p.write_text("hello")
    with pytest.raises(ecr.BundleError):
        ecr.load(p)
    with pytest.raises(ecr.BundleError, match="no such bundle"):
        ecr.load(tmp_path / "absent.ecb")


def test_unknown_op_is_refused(bundles, tmp_path):
    with zipfile.ZipFile(bundles["fp32"].path) as zin:
        m = json.loads(zin.read(MANIFEST))
    m["graph"]["nodes"][0]["op"] = "fancy_new_op"
    mbytes = json.dumps(m).encode()

    def edit(name, data):
        if name == MANIFEST:
            return mbytes
        if name == MANIFEST_HASH:
            return (sha256(mbytes) + "\n").encode()
        return data
    bad = tmp_path / "newop.ecb"
    _rewrite(bundles["fp32"].path, bad, edit)
    with pytest.raises(ecr.BundleError, match="fancy_new_op"):
        ecr.load(bad)
