"""Mutants of a real bundle, by class, shared by tests/test_fuzz.py (>= 500 mutants, < 3 min)
and benchmarks/fuzz.py (>= 1,000, writes benchmarks/results/fuzz.json); fuzz_runner.py runs them.

Classes (``CLASSES``): corruption (hashes not recomputed); malicious edits of any manifest field
with hashes recomputed (some signed by the trusted key: a malicious author); huge shapes in the
manifest and in .npy headers; pickles; traversal names; zip bombs (signed store or not);
symlinks, directories and special files; duplicate names; format versions; deep JSON; graph
attacks (the issue's expand + bmm, huge arange / full / repeat, undefined values, unknown ops,
random ops with hostile arguments); parameter attacks (bits, kinds, remap, csr, shapes, dtypes);
input-spec edits; corrupt .tflite / .pte (the bundle's own when it carries them, else forged).
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile
import zlib
from pathlib import Path

BOMB_MIB = 64
HOSTILE = [-1, 0, 1, 3, 2 ** 31, 2 ** 64, -2 ** 63, 1e300, float("nan"), True, False, None, "", "x" * 5000,
           "../../etc/passwd", [], [None], [-1, -1], {}, {"v": "nope"}, {"p": 1}, [[[[1]]]], "int64", 0.5]


# --------------------------------------------------------------------------- zip and bundle helpers

def members_of(path) -> tuple[dict, dict]:
    """(manifest without format/version/members, members) of a bundle file."""
    with zipfile.ZipFile(path) as zf:
        man = json.loads(zf.read("manifest.json"))
        mem = {n: zf.read(n) for n in zf.namelist() if n.startswith(("arrays/", "constants/", "reference/",
                                                                         "artifacts/"))}
    for k in ("format", "format_version", "members"):
        man.pop(k, None)
    return man, mem


def build(man: dict, mem: dict, key=None, raw_manifest: bytes | None = None) -> bytes:
    """A bundle with hashes recomputed (a malicious author's), signed with ``key`` when given."""
    from edgecompress_runtime.bundle_writer import bundle_bytes
    data = bundle_bytes(man, mem)
    if raw_manifest is not None:
        data = replace_manifest(data, raw_manifest)
    return sign(data, key) if key is not None else data


def replace_manifest(data: bytes, mbytes: bytes) -> bytes:
    """``data`` with manifest.json replaced by ``mbytes`` and its hash recomputed."""
    import hashlib
    entries = read_entries(data)
    out = []
    for name, body, attr, method in entries:
        if name == "manifest.json":
            body = mbytes
        elif name == "manifest.sha256":
            body = (hashlib.sha256(mbytes).hexdigest() + "\n").encode()
        out.append((name, body, attr, method))
    return raw_zip(out)


def sign(data: bytes, key) -> bytes:
    from edgecompress_runtime.bundle import with_signature
    from edgecompress_runtime.signing import signature_file
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        mbytes = zf.read("manifest.json")
    return with_signature(data, signature_file(key.key_id, key.sign(mbytes)))


def read_entries(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i), i.external_attr, zipfile.ZIP_STORED) for i in zf.infolist()]


def raw_zip(entries, lie: dict | None = None) -> bytes:
    """A zip from (name, data, external_attr, method) with exact control over every header;
    ``lie`` maps a name to the uncompressed size its headers declare instead of the real one."""
    lie = lie or {}
    buf, central = io.BytesIO(), []
    for name, data, attr, method in entries:
        nb = name.encode()
        body = data if method == zipfile.ZIP_STORED else _deflate(data)
        crc, size = zlib.crc32(data), lie.get(name, len(data))
        off = buf.tell()
        buf.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(body), size,
                              len(nb), 0) + nb + body)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x0314, 20, 0, method, 0, 0x21, crc, len(body),
                                   size, len(nb), 0, 0, 0, 0, attr, off) + nb)
    start = buf.tell()
    cd = b"".join(central)
    buf.write(cd + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), start, 0))
    return buf.getvalue()


_DEFLATED: dict = {}


def _deflate(data: bytes) -> bytes:
    key = (len(data), data[:16], data[-16:])
    if key not in _DEFLATED:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        _DEFLATED[key] = c.compress(data) + c.flush()
    return _DEFLATED[key]


def npy_header(shape, descr="<f4", version=1, fortran=False) -> bytes:
    head = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode()
    head += b" " * ((64 - (len(head) + 11) % 64) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(head)) + head


class Key:
    """An ed25519 signing key (cryptography, host side) and the trust-store line of its public half."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from edgecompress_runtime.signing import format_public_key, key_id
        self._k = Ed25519PrivateKey.generate()
        raw = self._k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id, self.line = key_id(raw), format_public_key(raw, "fuzz")

    def sign(self, data: bytes) -> bytes:
        return self._k.sign(data)


# --------------------------------------------------------------------------- mutant classes

class Base:
    def __init__(self, path, key: Key):
        self.path, self.key = Path(path), key
        self.data = self.path.read_bytes()
        self.man, self.mem = members_of(path)
        self.arrays = sorted(n for n in self.mem if n.endswith(".npy"))
        self.arts = {k: v["member"] for k, v in (self.man.get("artifacts") or {}).items()
                     if isinstance(v, dict) and v.get("member") in self.mem}

    def copy(self):
        return json.loads(json.dumps(self.man)), dict(self.mem)


def _paths(obj, prefix=()):
    """Every JSON path in ``obj`` (dict keys and list indices)."""
    out, stack = [], [(obj, prefix)]
    while stack:
        o, p = stack.pop()
        if p:
            out.append(p)
        if isinstance(o, dict):
            stack.extend((v, p + (k,)) for k, v in o.items())
        elif isinstance(o, list):
            stack.extend((v, p + (i,)) for i, v in enumerate(o))
    return out


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def m_corrupt(r: random.Random, b: Base):
    data = bytearray(b.data)
    how = r.choice(["flip", "truncate", "zero", "drop", "swap"])
    if how == "flip":
        for _ in range(r.randint(1, 8)):
            data[r.randrange(len(data))] ^= 1 << r.randrange(8)
        return how, bytes(data)
    if how == "truncate":
        return how, bytes(data[:r.randrange(len(data))])
    if how == "zero":
        s = r.randrange(len(data))
        data[s:s + 64] = bytes(len(data[s:s + 64]))
        return how, bytes(data)
    entries = read_entries(b.data)
    if how == "drop":
        entries.pop(r.randrange(len(entries)))
    else:
        i, j = r.sample(range(len(entries)), 2)
        entries[i], entries[j] = (entries[i][0],) + entries[j][1:], (entries[j][0],) + entries[i][1:]
    return how, raw_zip(entries)


def m_edit(r: random.Random, b: Base):
    man, mem = b.copy()
    paths = [p for p in _paths(man) if p[0] not in ("provenance",)]
    p = r.choice(paths)
    _set(man, p, r.choice(HOSTILE))
    signed = r.random() < 0.3
    label = f"{'signed ' if signed else ''}{'.'.join(map(str, p))[:60]}"
    return label, build(man, mem, b.key if signed else None), signed


def m_huge_shape(r: random.Random, b: Base):
    man, mem = b.copy()
    how = r.choice(["param", "input", "npy", "npy_neg", "npy_dtype", "npy_version"])
    if how == "param":
        name = r.choice(sorted(man["params"]))
        man["params"][name]["shape"] = r.choice([[2 ** 40, 8], [2 ** 31, 2 ** 31], [-1, 4], [1] * 64, [2 ** 70]])
    elif how == "input":
        spec = r.choice(man["inputs"])
        spec["shape"] = r.choice([[None, 2 ** 31], [None, 2 ** 20, 2 ** 20], [2 ** 40], [None, -3], [None] * 9])
    else:
        name = r.choice(b.arrays)
        shape = {"npy": [2 ** 45, 2 ** 20], "npy_neg": [-5, 4], "npy_dtype": [4]}.get(how, [4])
        descr = {"npy_dtype": r.choice(["<U8", "|V8", "|O", "<M8[s]", "bogus"])}.get(how, "<f4")
        head = npy_header(shape, descr, version=3 if how == "npy_version" else 1)
        mem[name] = head + mem[name][len(head):] if len(mem[name]) > len(head) else head
    return how, build(man, mem)


def m_pickle(r: random.Random, b: Base):
    import pickle

    import numpy as np
    man, mem = b.copy()
    name = r.choice(b.arrays)
    if r.random() < 0.5:
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}, os.getpid], dtype=object), allow_pickle=True)  # the attack under test
        mem[name] = buf.getvalue()
    else:
        mem[name] = pickle.dumps({"x": 1})
    return name[-40:], build(man, mem)


def m_traversal(r: random.Random, b: Base):
    name = r.choice(["../evil.npy", "/etc/evil", "arrays/../../evil", "arrays/./x.npy", "a\\..\\b", "arrays//x",
                     "..", "arrays/\x00x"])
    man, mem = b.copy()
    how = r.choice(["listed", "unlisted", "rename"])
    if how == "rename":
        old = r.choice(b.arrays)
        mem[name] = mem.pop(old)
        for p in _paths(man):
            try:
                v = man
                for k in p:
                    v = v[k]
            except (KeyError, IndexError, TypeError):
                continue
            if v == old:
                _set(man, p, name)
        return f"{how} {name!r}", build(man, mem)
    if how == "listed":
        mem[name] = b"evil"
        return f"{how} {name!r}", build(man, mem)
    entries = read_entries(b.data) + [(name, b"evil", 0o644 << 16, zipfile.ZIP_STORED)]
    return f"{how} {name!r}", raw_zip(entries)


_BOMB = bytes(BOMB_MIB << 20)


def m_zip_bomb(r: random.Random, b: Base):
    signed = r.random() < 0.5
    data = sign(b.data, b.key) if signed else b.data
    entries = read_entries(data)
    how = r.choice(["extra", "replace", "manifest", "lie_small"])
    bomb = (zipfile.ZIP_DEFLATED,)
    if how == "extra":
        entries.append(("arrays/bomb.npy", _BOMB, 0o644 << 16) + bomb)
        lie = {}
    elif how in ("replace", "lie_small"):
        i = next(k for k, e in enumerate(entries) if e[0] in b.arrays)
        entries[i] = (entries[i][0], _BOMB, entries[i][2]) + bomb
        lie = {entries[i][0]: len(b.mem[entries[i][0]])} if how == "lie_small" else {}
    else:
        i = next(k for k, e in enumerate(entries) if e[0] == "manifest.json")
        entries[i] = ("manifest.json", _BOMB, entries[i][2]) + bomb
        lie = {}
    return f"{'signed ' if signed else ''}{how}", raw_zip(entries, lie), signed


def m_symlink(r: random.Random, b: Base):
    entries = read_entries(b.data)
    kind = r.choice([(0o120777, "symlink"), (0o040755, "dir"), (0o010644, "fifo"), (0o020644, "chardev")])
    if r.random() < 0.5:
        i = next(k for k, e in enumerate(entries) if e[0] in b.arrays)
        entries[i] = (entries[i][0], b"/etc/passwd", kind[0] << 16, zipfile.ZIP_STORED)
        how = "member"
    else:
        entries.append(("arrays/link" + ("/" if kind[1] == "dir" else ""), b"/etc/passwd", kind[0] << 16,
                        zipfile.ZIP_STORED))
        how = "extra"
    return f"{kind[1]} {how}", raw_zip(entries)


def m_duplicate(r: random.Random, b: Base):
    signed = r.random() < 0.5
    data = sign(b.data, b.key) if signed else b.data
    entries = read_entries(data)
    name = r.choice(["manifest.json", "manifest.sha256", "manifest.sig", r.choice(b.arrays)])
    if not any(e[0] == name for e in entries):
        name = "manifest.json"
    src = next(e for e in entries if e[0] == name)
    fake = (name, src[1][::-1] if name != "manifest.json" else src[1].replace(b'"Tiny"', b'"Evil"') + b" ",
            src[2], src[3])
    first = r.random() < 0.5
    entries = [fake] + entries if first else entries + [fake]
    return f"{'signed ' if signed else ''}{name} {'first' if first else 'last'}", raw_zip(entries), signed


def m_version(r: random.Random, b: Base):
    man, mem = b.copy()
    full = json.loads(zipfile.ZipFile(io.BytesIO(build(man, mem))).read("manifest.json"))
    if r.random() < 0.2:
        field, v = "format", r.choice(["", "edgecompress-bundle2", None, 1])
    else:
        field, v = "format_version", r.choice([-1, 0, True, False, "1", "2", 1.0, 2, 2 ** 64, None, [], {}, 10 ** 30])
    full[field] = v
    return f"{field}={v!r}"[:40], build(man, mem, raw_manifest=json.dumps(full).encode())


def _deep(n: int, leaf=1):
    s = "[" * n + json.dumps(leaf) + "]" * n
    return s


def m_deep_json(r: random.Random, b: Base):
    n = r.choice([65, 200, 1000, 5000, 100_000])
    where = r.choice(["metrics", "graph_arg", "sig", "top"])
    man, mem = b.copy()
    base = build(man, mem)
    mbytes = zipfile.ZipFile(io.BytesIO(base)).read("manifest.json").decode()
    if where == "sig":
        entries = read_entries(base) + [("manifest.sig", ('{"alg": "ed25519", "key_id": ' + _deep(n) + "}").encode(),
                                         0o644 << 16, zipfile.ZIP_STORED)]
        return f"{where} {n}", raw_zip(entries)
    if where == "top":
        text = mbytes[:-1] + ',"zz":' + _deep(n) + "}"
    elif where == "metrics":
        text = mbytes.replace('"metrics":{', '"metrics":{"deep":' + _deep(n) + ",", 1)
    else:
        text = mbytes.replace('"args":[', '"args":[' + _deep(n) + ",", 1)
    return f"{where} {n}", build(man, mem, raw_manifest=text.encode())


def m_graph(r: random.Random, b: Base):
    from edgecompress_runtime.ops import OPS
    man, mem = b.copy()
    g = man["graph"]
    nodes, out0 = g["nodes"], g["outputs"][0]
    values = list(g["inputs"]) + [n["out"] for n in nodes]
    how = r.choice(["bmm_attack", "arange", "full", "repeat", "undefined", "unknown_op", "dup_out", "random_op",
                    "random_op", "random_op", "drop_node", "swap", "bad_output", "reshape", "cat_many"])
    extra = {
        "bmm_attack": [{"op": "sum", "args": [{"v": out0}], "out": "z0"},
                       {"op": "reshape", "args": [{"v": "z0"}, [1, 1, 1]], "out": "z1"},
                       {"op": "expand", "args": [{"v": "z1"}, [1, 8192, 8192]], "out": "z2"},
                       {"op": "bmm", "args": [{"v": "z2"}, {"v": "z2"}], "out": "z3"},
                       {"op": "bmm", "args": [{"v": "z3"}, {"v": "z2"}], "out": "z4"},
                       {"op": "bmm", "args": [{"v": "z4"}, {"v": "z2"}], "out": "z5"}],
        "arange": [{"op": "arange", "args": [0, r.choice([10 ** 12, 1e300, 2 ** 62, -5]), r.choice([1, 0, 1e-300])],
                    "out": "z5"}],
        "full": [{"op": "full.default", "args": [[2 ** 20, 2 ** 20], 1.0], "out": "z5"}],
        "repeat": [{"op": "repeat.default", "args": [{"v": out0}, [1, 2 ** 30]], "out": "z5"}],
        "reshape": [{"op": "reshape", "args": [{"v": out0}, [r.choice([-1, 7, 2 ** 40]), 3]], "out": "z5"}],
        "cat_many": [{"op": "cat", "args": [[{"v": out0}] * 60000, 0], "out": "z5"}],
        "undefined": [{"op": "relu", "args": [{"v": "nowhere"}], "out": "z5"}],
        "unknown_op": [{"op": "os.system", "args": ["true"], "out": "z5"}],
        "dup_out": [{"op": "relu", "args": [{"v": out0}], "out": g["inputs"][0]}],
    }
    if how in extra:
        nodes += extra[how]
        if r.random() < 0.7 and nodes[-1]["out"] == "z5":
            g["outputs"] = ["z5"]
    elif how == "random_op":
        pool = [{"v": r.choice(values)} for _ in range(3)] + [{"p": r.choice(sorted(man["params"]))}] + HOSTILE[:12]
        nodes.append({"op": r.choice(sorted(OPS)), "args": [r.choice(pool) for _ in range(r.randint(0, 5))],
                      "out": "z5"})
        g["outputs"] = ["z5"] if r.random() < 0.7 else g["outputs"]
    elif how == "drop_node":
        nodes.pop(r.randrange(len(nodes)))
    elif how == "swap":
        i, j = r.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
    else:
        g["outputs"] = [r.choice(["nowhere", 5, None, "z5"])]
    return how, build(man, mem)


def m_params(r: random.Random, b: Base):
    import numpy as np

    from edgecompress_runtime.bundle_writer import npy_bytes
    man, mem = b.copy()
    name = r.choice(sorted(man["params"]))
    p = man["params"][name]
    how = r.choice(["bits", "kind", "remap", "shape", "role", "dtype", "csr", "act", "proj"])
    if how == "bits":
        p["bits"] = r.choice([0, 1, 3, 16, -8, "8", None, 2 ** 40])
    elif how == "kind":
        p["kind"] = r.choice(["rowwise", "csr", "channel_int8", "fp16", None])
    elif how == "remap":
        mem["arrays/remap.npy"] = npy_bytes(np.full(p["shape"][0], r.choice([10 ** 9, -1, 2 ** 31 - 1]), np.int32))
        p["members"]["remap"] = "arrays/remap.npy"
    elif how == "shape":
        p["shape"] = [d * r.choice([2, 3]) + 1 for d in p["shape"]]
    elif how == "role":
        p["members"][r.choice(list(p["members"]))] = r.choice(sorted(mem))
    elif how == "dtype":
        role = r.choice(list(p["members"]))
        mem[p["members"][role]] = npy_bytes(np.zeros(p["shape"], r.choice([np.complex64, np.bool_, "<M8[s]",
                                                                            np.float16])))
    elif how == "csr":
        p.update(kind="csr", members={"data": "arrays/d.npy", "indices": "arrays/i.npy", "indptr": "arrays/p.npy"})
        rows = p["shape"][0]
        mem.update({"arrays/d.npy": npy_bytes(np.ones(4, np.float32)),
                    "arrays/i.npy": npy_bytes(np.array([0, 10 ** 6, -3, 2], np.int32)),
                    "arrays/p.npy": npy_bytes(np.array([0] + [5] * rows, np.int32))})
    elif how == "act":
        p["act"] = r.choice(["static", "dynamic", "weird"])
    else:
        mem["arrays/proj.npy"] = npy_bytes(np.ones((3, 7), np.float32))
        p["members"]["proj"] = "arrays/proj.npy"
    return f"{how} {name}"[:60], build(man, mem)


def m_inputs(r: random.Random, b: Base):
    man, mem = b.copy()
    spec = r.choice(man["inputs"])
    how = r.choice(["dtype", "vocab", "oov", "name", "id_columns", "drop"])
    if how == "dtype":
        spec["dtype"] = r.choice(["float64", "object", "int8", None])
    elif how == "vocab":
        spec["vocab"] = [r.choice([0, -1, 2 ** 63, None, "x"]) for _ in spec.get("vocab") or [1]]
    elif how == "oov":
        spec["oov_row"] = [10 ** 9 for _ in spec.get("vocab") or [1]]
    elif how == "name":
        spec["name"] = r.choice(["", None, man["inputs"][0]["name"], "x" * 300])
    elif how == "id_columns":
        spec["id_columns"] = [{"column": r.choice([-1, 99, "0"]), "vocab": r.choice([0, 5])}]
    else:
        man["inputs"].remove(spec)
    return how, build(man, mem)


def m_artifact(r: random.Random, b: Base):
    """Corrupt .tflite / .pte: the bundle's own when it carries them, else a forged artifact entry."""
    man, mem = b.copy()
    arts = dict(b.arts)
    fmt = r.choice(["litert", "executorch"])
    if fmt not in arts:
        arts[fmt] = f"artifacts/model.{'tflite' if fmt == 'litert' else 'pte'}"
        man.setdefault("artifacts", {})[fmt] = {"member": arts[fmt], "signatures": {"b1": 1}, "batch": {"max": 8},
                                                "inputs": [{"name": s["name"], "dtype": s["dtype"]}
                                                           for s in man["inputs"]]}
        mem[arts[fmt]] = (b"\x1c\x00\x00\x00TFL3" if fmt == "litert" else b"\x00\x00\x00\x00ET12") + \
            r.randbytes(r.choice([0, 16, 4096]))
    data = bytearray(mem[arts[fmt]])
    how = r.choice(["flip", "truncate", "random", "zero"])
    if how == "flip" and data:
        for _ in range(r.randint(1, 32)):
            data[r.randrange(len(data))] ^= 1 << r.randrange(8)
    elif how == "truncate":
        data = data[:r.randrange(len(data) + 1)]
    elif how == "random":
        data = bytearray(r.randbytes(len(data)))
    elif data:
        s = r.randrange(len(data))
        data[s:s + 256] = bytes(len(data[s:s + 256]))
    mem[arts[fmt]] = bytes(data)
    man.setdefault("target", {})["backends"] = [fmt, "numpy"]
    return f"{fmt} {how}", build(man, mem)


CLASSES = {"corruption": m_corrupt, "malicious_edit": m_edit, "huge_shape": m_huge_shape, "pickle": m_pickle,
           "traversal": m_traversal, "zip_bomb": m_zip_bomb, "symlink": m_symlink, "duplicate": m_duplicate,
           "version": m_version, "deep_json": m_deep_json, "graph": m_graph, "params": m_params,
           "inputs": m_inputs, "artifact": m_artifact}
# the classes that matter most get more mutants
WEIGHTS = {"corruption": 3, "malicious_edit": 4, "graph": 4, "params": 2, "huge_shape": 2, "artifact": 2}


def generate(src, n: int, workdir, seed: int = 0) -> list[dict]:
    """``n`` mutants of the bundle ``src`` written under ``workdir``; returns their descriptions.
    A trust store holding the signing key is at ``workdir/trust`` (used by signed mutants)."""
    workdir = Path(workdir)
    (workdir / "m").mkdir(parents=True, exist_ok=True)
    key = Key()
    (workdir / "trust").mkdir(exist_ok=True)
    (workdir / "trust" / "fuzz.pub").write_text(key.line)
    base = Base(src, key)
    r = random.Random(seed)
    order = [c for c in CLASSES for _ in range(WEIGHTS.get(c, 1))]
    out = []
    for i in range(n):
        cls = order[i % len(order)]
        got = CLASSES[cls](r, base)
        label, data, trusted = (got + (False,))[:3]
        path = workdir / "m" / f"{i:05d}-{cls}.ecb"
        path.write_bytes(data)
        out.append({"i": i, "cls": cls, "label": label, "path": str(path),
                    "trust": str(workdir / "trust") if trusted else str(workdir / "no-trust-store")})
    return out
