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
            out[info.filename] = (info.header_offset + 30 + n + e, info.compress_size)   # as stored (deflated or not)
        return out


def test_flipped_byte_in_every_member_is_refused(bundles, tmp_path):
    src = bundles["int8"].path
    offsets = _member_offsets(src)
    assert {"manifest.json", "manifest.sha256", "arrays.bin"} <= set(offsets)
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
    victim = "arrays.bin"
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
    m["graph"]["nodes"][0][0] = "fancy_new_op"          # stored nodes are [op, out, args, module]
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


# ---------------------------------------------------------------- hostile bundles (issue 13)

import io  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from edgecompress_runtime import bundle as fmt  # noqa: E402


def _raw_zip(entries) -> bytes:
    """A zip written by hand, so sizes, methods and attributes can lie.
    entries: (name, method, payload as stored in the zip, crc, declared size, external_attr)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, method, payload, crc, usize, attr in entries:
        n = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), usize,
                              len(n), 0) + n + payload)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, 0, method, 0, 0x21, crc,
                                  len(payload), usize, len(n), 0, 0, 0, 0, attr, offset) + n)
    cd = central.getvalue()
    count = len(entries)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(cd), out.tell(), 0)
    return out.getvalue() + cd + eocd


def _stored_entries(path, manifest=None):
    """The entries of a real bundle as _raw_zip rows (manifest and its hash replaced when given)."""
    rows = []
    mbytes = json.dumps(manifest).encode() if manifest is not None else None
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            if mbytes is not None and info.filename == MANIFEST:
                data = mbytes
            if mbytes is not None and info.filename == MANIFEST_HASH:
                data = (sha256(mbytes) + "\n").encode()
            rows.append((info.filename, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data), 0o644 << 16))
    return rows


def _manifest(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(MANIFEST))


def _with_manifest(src, dst, manifest_bytes):
    """Copy a bundle with manifest.json replaced and its recorded hash made consistent."""
    def edit(name, data):
        if name == MANIFEST:
            return manifest_bytes
        if name == MANIFEST_HASH:
            return (sha256(manifest_bytes) + "\n").encode()
        return data
    _rewrite(src, dst, edit)
    return dst


BOMB_MIB = 4000   # declared/inflated size of the bomb: 4000 MiB from ~4 MB of deflate


def _bomb_stream(mib=BOMB_MIB) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)   # repeatable after a full flush
    return block * mib + b"\x03\x00"                                     # + an empty final block


def _timed_refusal(path, match):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ecr.BundleError, match=match) as e:
            ecr.load(path)
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return e.value, elapsed, peak


@pytest.mark.parametrize("listed", [False, True])
def test_zip_bomb_is_refused_from_the_central_directory(bundles, tmp_path, listed):
    """A ~4 MB deflated member declaring 4000 MiB: refused by the per-member limit
    before anything is inflated, whether or not the (unsigned) manifest lists it."""
    stream = _bomb_stream()
    assert 3e6 < len(stream) < 6e6
    size = BOMB_MIB << 20
    manifest = _manifest(bundles["fp32"].path)
    if listed:
        manifest["members"]["arrays/bomb.npy"] = {"sha256": "0" * 64, "size": size}
    rows = _stored_entries(bundles["fp32"].path, manifest)
    rows.append(("arrays/bomb.npy", zipfile.ZIP_DEFLATED, stream, 0, size, 0o644 << 16))
    bad = tmp_path / "bomb.ecb"
    bad.write_bytes(_raw_zip(rows))
    err, elapsed, peak = _timed_refusal(bad, "per-member limit")
    assert elapsed < 1.0, elapsed
    assert peak < 50 << 20, peak
    assert str(fmt.MAX_MEMBER_BYTES) in str(err) and str(size) in str(err)


def test_zip_bomb_declaring_a_small_size_is_never_inflated_past_it(bundles, tmp_path):
    """The same 4000 MiB stream declared (in zip and manifest, hashes recomputed) as 1 kB:
    reading stops at the declared size."""
    manifest = _manifest(bundles["fp32"].path)
    manifest["members"]["arrays/bomb.npy"] = {"sha256": "0" * 64, "size": 1024}
    rows = _stored_entries(bundles["fp32"].path, manifest)
    rows.append(("arrays/bomb.npy", zipfile.ZIP_DEFLATED, _bomb_stream(), 0, 1024, 0o644 << 16))
    bad = tmp_path / "smallbomb.ecb"
    bad.write_bytes(_raw_zip(rows))
    err, elapsed, peak = _timed_refusal(bad, "corrupt or truncated|sha256|longer than")
    assert elapsed < 1.0 and peak < 50 << 20, (elapsed, peak)


def test_bundle_size_limits_are_configurable(bundles, monkeypatch):
    path = bundles["fp32"].path
    biggest = max(i.file_size for i in zipfile.ZipFile(path).infolist())
    with pytest.raises(ecr.BundleError, match="per-member limit"):
        ecr.read_bundle(path, max_member_bytes=biggest - 1)
    ecr.read_bundle(path, max_member_bytes=biggest)
    monkeypatch.setenv(fmt.ENV_MAX_BUNDLE_BYTES, "1000")
    with pytest.raises(ecr.BundleError, match="bundle limit of 1000 bytes"):
        ecr.load(path)
    monkeypatch.setenv(fmt.ENV_MAX_BUNDLE_BYTES, "lots")
    with pytest.raises(ecr.BundleError, match="not an integer"):
        ecr.load(path)


@pytest.mark.parametrize("name,attr", [("arrays/link", (0o120777 << 16)), ("arrays/", (0o40755 << 16) | 0x10),
                                       ("arrays/fifo", 0o10644 << 16)])
def test_symlink_directory_and_special_entries_are_refused(bundles, tmp_path, name, attr):
    rows = _stored_entries(bundles["fp32"].path)
    rows.append((name, zipfile.ZIP_STORED, b"/etc/passwd" if "link" in name else b"", 0, 0, attr))
    rows[-1] = rows[-1][:3] + (zlib.crc32(rows[-1][2]), len(rows[-1][2])) + rows[-1][5:]
    bad = tmp_path / "special.ecb"
    bad.write_bytes(_raw_zip(rows))
    with pytest.raises(ecr.BundleError, match="directory, symlink or special-file"):
        ecr.load(bad)


def test_other_compression_methods_are_refused(bundles, tmp_path):
    bad = tmp_path / "bz2.ecb"
    with zipfile.ZipFile(bundles["fp32"].path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info),
                          compress_type=zipfile.ZIP_BZIP2 if info.filename == "arrays.bin" else zipfile.ZIP_STORED)
    with pytest.raises(ecr.BundleError, match="compression method other than stored/deflate"):
        ecr.load(bad)


def test_deflated_members_within_limits_still_load(bundles, tmp_path):
    ok = tmp_path / "deflated.ecb"
    with zipfile.ZipFile(bundles["fp32"].path) as zin, zipfile.ZipFile(ok, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    assert ecr.load(ok).check_parity()["ok"]


def test_duplicate_member_names_are_refused(bundles, tmp_path):
    src = bundles["fp32"].path
    victim = "arrays.bin"
    bad = tmp_path / "dup.ecb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
            zout.writestr(victim, b"evil first copy")
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info))
    with pytest.raises(ecr.BundleError, match="duplicate entries"):
        ecr.load(bad)


def test_entries_the_manifest_does_not_list_are_never_read(bundles, tmp_path, monkeypatch):
    bad = tmp_path / "extra.ecb"
    with zipfile.ZipFile(bundles["fp32"].path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        zout.writestr("arrays/zz_extra.npy", b"x" * 100)
    read = []
    real = fmt._read_member
    monkeypatch.setattr(fmt, "_read_member", lambda zf, info, *a: read.append(info.filename) or real(zf, info, *a))
    with pytest.raises(ecr.BundleError, match="not listed in the manifest.*zz_extra"):
        ecr.load(bad)
    assert not any(n.startswith("arrays/") for n in read), read


@pytest.mark.parametrize("version", [-1, 0, True, "1", 1.0, None, [1]])
def test_format_version_must_be_a_positive_int(bundles, tmp_path, version):
    m = _manifest(bundles["fp32"].path)
    m["format_version"] = version
    bad = _with_manifest(bundles["fp32"].path, tmp_path / "version.ecb", json.dumps(m).encode())
    with pytest.raises(ecr.BundleError, match="format_version must be a positive integer") as e:
        ecr.load(bad)
    assert "newer" not in str(e.value)


@pytest.mark.parametrize("depth,match", [(100_000, "nested too deeply"), (200, "nested 20[0-9] levels deep")])
def test_deeply_nested_manifest_is_a_bundle_error(bundles, tmp_path, depth, match):
    m = _manifest(bundles["fp32"].path)
    m["graph"]["nodes"][0][2] = "@@DEEP@@"
    text = json.dumps(m).replace('"@@DEEP@@"', "[" * depth + "]" * depth)
    bad = _with_manifest(bundles["fp32"].path, tmp_path / "deep.ecb", text.encode())
    with pytest.raises(ecr.BundleError, match=match):
        ecr.load(bad)


def _stored_edit(src, dst, change):
    """A bundle whose stored manifest and members ``change(manifest, members)`` edits, hashes recomputed."""
    from fuzz_mutants import build, members_of
    man, mem = members_of(src)
    change(man, mem)
    dst.write_bytes(build(man, mem))
    return dst


def test_a_table_declaring_a_huge_shape_is_refused_before_allocating(bundles, tmp_path):
    def change(m, a):
        m["arrays"][0][1] = [1 << 20, 1 << 20, 8]           # 32 TiB
    bad = _stored_edit(bundles["fp32"].path, tmp_path / "hugeshape.ecb", change)
    tracemalloc.start()
    with pytest.raises(ecr.BundleError, match=r"manifest\.arrays\[0\]: declares 8796093022208 elements"):
        ecr.load(bad)
    assert tracemalloc.get_traced_memory()[1] < 50 << 20
    tracemalloc.stop()


@pytest.mark.parametrize("change,match", [
    (lambda m, a: m["arrays"].append(["f4", [1]]), r"manifest\.arrays: the arrays add up to \d+ bytes, the member holds"),
    (lambda m, a: a.update({"arrays.bin": a["arrays.bin"][:-4]}), r"add up to \d+ bytes, the member holds"),
    (lambda m, a: m["arrays"][0].__setitem__(0, "O"), r"manifest\.arrays\[0\]: must be \[dtype code"),
    (lambda m, a: m["reference"]["outputs"].__setitem__(1, [-1]), r"manifest\.reference\.outputs: must be \[dtype"),
    (lambda m, a: m["reference"]["outputs"][2].append(1.0), r"manifest\.reference\.outputs: holds \d+ values, its shape"),
    (lambda m, a: next(v for v in m["reference"]["inputs"].values() if v[0] == "i8")[2].__setitem__(0, 2 ** 70),
     r"manifest\.reference\.inputs\[.*\]: values must be integers in int64 range"),
    (lambda m, a: m["reference"]["outputs"][2].__setitem__(0, "x"), r"manifest\.reference\.outputs: values must be numbers"),
    (lambda m, a: m["params"][sorted(m["params"])[0]]["a"].update(data=10 ** 6), r"\.a\[.data.\]: 1000000 is not an "
                                                                                   r"array index in 0\.\."),
    (lambda m, a: m["params"][sorted(m["params"])[0]].pop("a"), r"\.a: must map array roles"),
    (lambda m, a: m["reference"].update(outputs="x"), r"manifest\.reference\.outputs: must be \[dtype"),
    (lambda m, a: m["graph"]["nodes"].__setitem__(0, {"op": "relu"}), r"manifest\.graph\.nodes\[0\]: must be a list"),
])
def test_the_compact_layout_is_checked_naming_the_field(bundles, tmp_path, change, match):
    bad = _stored_edit(bundles["fp32"].path, tmp_path / "layout.ecb", change)
    with pytest.raises(ecr.BundleError, match=match) as e:
        ecr.load(bad)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_an_older_format_version_is_refused_naming_both(bundles, tmp_path):
    m = _manifest(bundles["fp32"].path)
    m["format_version"] = FORMAT_VERSION - 1
    bad = _with_manifest(bundles["fp32"].path, tmp_path / "v1.ecb", json.dumps(m).encode())
    with pytest.raises(ecr.BundleError, match=f"format version {FORMAT_VERSION - 1} is older than the version this "
                                              f"runtime reads \\({FORMAT_VERSION}\\); recompile"):
        ecr.load(bad)


def test_an_entry_with_an_empty_name_is_refused(bundles, tmp_path):
    """Found by benchmarks/fuzz_coverage.py: zipfile's is_dir() raises IndexError on an empty name."""
    rows = _stored_entries(bundles["fp32"].path)
    rows.append(("", zipfile.ZIP_STORED, b"x", zlib.crc32(b"x"), 1, 0o644 << 16))
    bad = tmp_path / "noname.ecb"
    bad.write_bytes(_raw_zip(rows))
    with pytest.raises(ecr.BundleError, match="directory, symlink or special-file"):
        ecr.load(bad)


def test_error_messages_stay_one_short_line(bundles, tmp_path):
    # 3000 unlisted members: a few are named, the rest counted
    bad = tmp_path / "many.ecb"
    with zipfile.ZipFile(bundles["fp32"].path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        for i in range(3000):
            zout.writestr(f"extra/{i:05d}-" + "x" * 200 + "\n.npy", b"")
    with pytest.raises(ecr.BundleError, match="and 2995 more") as e:
        ecr.load(bad)
    assert len(str(e.value)) < 1000 and "\n" not in str(e.value)
    # 100k entries: refused by count, in a short message
    huge = tmp_path / "huge.ecb"
    with zipfile.ZipFile(huge, "w") as zf:
        for i in range(100_000):
            zf.writestr(f"m{i}", b"")
    with pytest.raises(ecr.BundleError, match="100000 entries, above the limit") as e:
        ecr.load(huge)
    assert len(str(e.value)) < 300


def test_bundles_are_written_readable_by_others(bundles):
    import stat
    assert stat.S_IMODE(bundles["int8"].path.stat().st_mode) == 0o644


# ---------------------------------------------------------------- manifest schema (issue 13)

def _rebuilt(src, dst, change):
    """A malicious author's bundle: ``change(manifest, members)`` edits, hashes recomputed."""
    from fuzz_mutants import build_logical, logical_of
    man, mem = logical_of(src)
    change(man, mem)
    dst.write_bytes(build_logical(man, mem))
    return dst


@pytest.mark.parametrize("change,match", [
    (lambda m, a: m["params"][sorted(m["params"])[0]].update(bits=3),
     r'manifest\.params\["[^"]+"\]\.bits: 3 not in \{32\}'),
    (lambda m, a: m["params"][sorted(m["params"])[0]].update(kind="fp64"), r"\.kind: 'fp64' not in"),
    (lambda m, a: m["params"][sorted(m["params"])[0]].update(shape=[-1, 4]), r"\.shape\[0\]: -1 not in 0\.\."),
    (lambda m, a: m["params"][sorted(m["params"])[0]].update(shape=[2 ** 30, 2 ** 30]),
     r"\.shape: declares 1152921504606846976 elements, above"),
    (lambda m, a: m["graph"]["nodes"][3]["args"].insert(0, {"v": "nowhere"}),
     r"manifest\.graph\.nodes\[3\]\.args\[0\]\.v: 'nowhere' is not a value defined before this node"),
    (lambda m, a: m["graph"]["nodes"][0]["args"].append({"p": "x", "v": "y"}), r"a reference must be one of"),
    (lambda m, a: m["graph"].update(outputs=["nowhere"]), r"manifest\.graph\.outputs\[0\]: 'nowhere' is not"),
    (lambda m, a: m["inputs"][0].update(dtype="object"), r"manifest\.inputs\[0\]\.dtype: 'object' not in"),
    (lambda m, a: m["inputs"][0].update(shape=[None, 2 ** 40]), r"manifest\.inputs\[0\]\.shape\[1\]: .* not in"),
    (lambda m, a: m.update(max_batch=0), r"manifest\.max_batch: 0 not in 1\.\."),
    (lambda m, a: m.update(plan=5), r"manifest\.plan: must be a list"),
    (lambda m, a: m["reference"].update(tolerance="big"), r"manifest\.reference\.tolerance"),
    (lambda m, a: m.pop("model"), r"manifest\.model: is missing"),
    (lambda m, a: m["model"].update(note="x" * 5000), r"a string of 5000 characters"),
])
def test_manifest_schema_names_the_field(bundles, tmp_path, change, match):
    bad = _rebuilt(bundles["fp32"].path, tmp_path / "schema.ecb", change)
    with pytest.raises(ecr.BundleError, match=match) as e:
        ecr.load(bad)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_rowwise_bits_must_be_2_4_or_8(bundles, tmp_path):
    def change(m, a):
        name = next(n for n, p in m["params"].items() if p["kind"] == "rowwise")
        m["params"][name]["bits"] = 3
    bad = _rebuilt(bundles["int8"].path, tmp_path / "bits.ecb", change)
    with pytest.raises(ecr.BundleError, match=r'manifest\.params\["[^"]+"\]\.bits: 3 not in \{(1, )?2, 4, 8\}'):
        ecr.load(bad)


def test_remap_out_of_range_is_refused_at_load(bundles, tmp_path):
    from edgecompress_runtime.bundle_writer import npy_bytes

    def change(m, a):
        name = next(n for n, p in m["params"].items() if p.get("role") == "embedding" or n.startswith("emb"))
        a["arrays/remap.npy"] = npy_bytes(np.full(m["params"][name]["shape"][0], 10 ** 9, np.int32))
        m["params"][name]["members"]["remap"] = "arrays/remap.npy"
    bad = _rebuilt(bundles["fp32"].path, tmp_path / "remap.ecb", change)
    with pytest.raises(ecr.BundleError, match=r'\.members\["remap"\]: values must be in 0\.\.'):
        ecr.load(bad)


# ---------------------------------------------------------------- bounded execution (issue 13)

_ATTACK = [{"op": "sum", "args": [{"v": "@OUT"}], "out": "z0"},
           {"op": "reshape", "args": [{"v": "z0"}, [1, 1, 1]], "out": "z1"},
           {"op": "expand", "args": [{"v": "z1"}, [1, 8192, 8192]], "out": "z2"},
           {"op": "bmm", "args": [{"v": "z2"}, {"v": "z2"}], "out": "z3"},
           {"op": "bmm", "args": [{"v": "z3"}, {"v": "z2"}], "out": "z4"},
           {"op": "bmm", "args": [{"v": "z4"}, {"v": "z2"}], "out": "z5"}]


def test_the_expand_bmm_graph_attack_is_refused_at_load_without_allocating(bundles, tmp_path):
    def change(m, a):
        out = m["graph"]["outputs"][0]
        m["graph"]["nodes"] += json.loads(json.dumps(_ATTACK).replace("@OUT", out))
    bad = _rebuilt(bundles["fp32"].path, tmp_path / "attack.ecb", change)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ecr.BundleError, match=r"graph node \d+ \(bmm -> 'z3'\) would need .* refused before running"):
        ecr.load(bad)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5 and peak < 64 << 20, (seconds, peak)


def test_max_batch_is_enforced_and_overridable(bundles, tmp_path):
    m = ecr.load(bundles["fp32"].path)
    assert m.max_batch == 65536 and m.bounds.source == "default"
    assert 0 < m.bounds.peak_bytes <= m.bounds.limit_bytes
    inputs, _ = m.reference()
    small = ecr.load(bundles["fp32"].path, max_batch=8)
    assert small.max_batch == 8 and small.bounds.source == "caller"
    n = len(next(iter(inputs.values())))
    assert n > 8
    with pytest.raises(ecr.InputError, match=f"a batch of {n} rows is above this model's max_batch of 8"):
        small.predict(inputs)
    part = {k: v[:8] for k, v in inputs.items()}
    np.testing.assert_array_equal(small.predict(part), m.predict(part))
    # the manifest's max_batch applies when the caller gives none
    bad = _rebuilt(bundles["fp32"].path, tmp_path / "mb.ecb", lambda man, a: man.update(max_batch=4))
    assert ecr.load(bad).max_batch == 4 and ecr.load(bad, max_batch=16).max_batch == 16
    with pytest.raises(ecr.InputError, match="max_batch must be a positive integer"):
        ecr.load(bundles["fp32"].path, max_batch=0)


def test_a_max_batch_beyond_the_limits_is_refused_naming_them(bundles, monkeypatch):
    from edgecompress_runtime import bounds
    m = ecr.load(bundles["fp32"].path, max_batch=1024)
    per_row = m.bounds.peak_bytes // 1024
    monkeypatch.setenv(bounds.ENV_MAX_PEAK_BYTES, str(per_row * 2048))
    assert ecr.load(bundles["fp32"].path).max_batch < 65536          # the default shrinks to fit
    with pytest.raises(ecr.BundleError, match=r"at max_batch 65536 \(from the caller\).*EDGECOMPRESS_RUNTIME_MAX_PEAK"
                                              r"_BYTES.*the largest batch within them is \d+"):
        ecr.load(bundles["fp32"].path, max_batch=65536)
    monkeypatch.setenv(bounds.ENV_MAX_FLOPS, "1000")
    with pytest.raises(ecr.BundleError, match="FLOPs"):
        ecr.load(bundles["fp32"].path)
