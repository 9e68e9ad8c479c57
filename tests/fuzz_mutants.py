"""Mutants of a real bundle, by class, shared by tests/test_fuzz.py (>= 500 mutants, < 3 min)
and benchmarks/fuzz.py (>= 1,000, writes benchmarks/results/fuzz.json); fuzz_runner.py runs them.

Mutants edit the bundle as it is stored (format version 2, edgecompress_runtime/bundle_layout.py):
the compact manifest (array table, parameters' array indices, graph nodes as lists, inline
reference rows) and the zip members (arrays.bin, artifacts), hashes recomputed unless the
class is corruption. Classes (``CLASSES``): corruption (hashes not recomputed); malicious edits
of any stored manifest field (some signed by the trusted key: a malicious author); huge shapes in
the manifest and in the array tables; pickles (object dtypes, pickle bytes as array data); traversal
names; zip bombs (signed store or not); symlinks, directories and special files; duplicate names;
format versions; deep JSON; graph attacks (the issue's expand + bmm, huge arange / full / repeat,
undefined values, unknown ops, random ops with hostile arguments); parameter attacks (bits, kinds,
remap, csr, shapes, dtypes, merged scale+bias); the layout itself (array indices, tables that do
not add up, truncated or padded array data, malformed nodes); input-spec edits; corrupt .tflite /
.pte (the bundle's own when it carries them, else forged).
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

SIDECARS = ("manifest.json", "manifest.sha256", "manifest.sig")


def members_of(path) -> tuple[dict, dict]:
    """(stored manifest without format/version/members, zip members but the sidecars) of a bundle file."""
    with zipfile.ZipFile(path) as zf:
        man = json.loads(zf.read("manifest.json"))
        mem = {n: zf.read(n) for n in zf.namelist() if n not in SIDECARS}
    for k in ("format", "format_version", "members"):
        man.pop(k, None)
    return man, mem


def logical_of(path) -> tuple[dict, dict]:
    """(logical manifest without format/version/members, members: arrays and other members) as read."""
    from edgecompress_runtime.bundle import read_bundle
    b = read_bundle(path)
    return {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}, dict(b.members)


def build_logical(man: dict, mem: dict) -> bytes:
    """A bundle from an edited logical manifest through the host's writer (hashes recomputed)."""
    from edgecompress_runtime.bundle_writer import bundle_bytes
    return bundle_bytes(man, mem)


def add_array(man: dict, mem: dict, array) -> int:
    """Append ``array`` to a stored bundle's array data and table; its index."""
    import numpy as np
    a = np.ascontiguousarray(array)
    man.setdefault("arrays", []).append([a.dtype.str[1:], list(a.shape)])
    mem["arrays.bin"] = mem.get("arrays.bin", b"") + a.tobytes()
    return len(man["arrays"]) - 1


def build(man: dict, mem: dict, key=None, raw_manifest: bytes | None = None) -> bytes:
    """A bundle from a stored manifest and zip members with hashes recomputed (a malicious author's),
    signed with ``key`` when given."""
    from edgecompress_runtime.bundle_writer import container_bytes
    data = container_bytes(man, mem)
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
        self.arrays = sorted(n for n in self.mem if n == "arrays.bin")
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
    how = r.choice(["param", "input", "table", "table_neg", "table_rank", "ref_shape"])
    if how == "param":
        name = r.choice(sorted(man["params"]))
        man["params"][name]["shape"] = r.choice([[2 ** 40, 8], [2 ** 31, 2 ** 31], [-1, 4], [1] * 64, [2 ** 70]])
    elif how == "input":
        spec = r.choice(man["inputs"])
        spec["shape"] = r.choice([[None, 2 ** 31], [None, 2 ** 20, 2 ** 20], [2 ** 40], [None, -3], [None] * 9])
    else:
        ref = man["reference"]
        entry = r.choice(man["arrays"] if how != "ref_shape" else list(ref["inputs"].values()) + [ref["outputs"]])
        entry[1] = {"table_neg": [-5, 4], "table_rank": [1] * 9}.get(how, r.choice([[2 ** 45, 2 ** 20], [2 ** 62],
                                                                                    [2 ** 31, 2 ** 31, 4]]))
    return how, build(man, mem)


def m_pickle(r: random.Random, b: Base):
    import pickle

    import numpy as np
    man, mem = b.copy()
    name = r.choice(b.arrays)
    how = r.choice(["npy", "pickle", "object_code"])
    if how == "npy":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}, os.getpid], dtype=object), allow_pickle=True)  # the attack under test
        mem[name] = buf.getvalue()
    elif how == "pickle":
        mem[name] = pickle.dumps({"x": 1})
    else:                       # an object dtype in the array table or the reference: nothing may unpickle it
        ref = man["reference"]
        r.choice(man["arrays"] + list(ref["inputs"].values()) + [ref["outputs"]])[0] = \
            r.choice(["O", "|O", "O8", "V8", "U8"])
    return f"{how} {name}", build(man, mem)


def m_traversal(r: random.Random, b: Base):
    name = r.choice(["../evil.bin", "/etc/evil", "arrays/../../evil", "./arrays.bin", "a\\..\\b", "arrays//x",
                     "..", "arrays\x00.bin"])
    man, mem = b.copy()
    how = r.choice(["listed", "unlisted", "rename"])
    if how == "rename":                     # the listing follows the rename (hashes recomputed)
        mem[name] = mem.pop(r.choice(b.arrays))
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
        entries.append(("bomb.bin", _BOMB, 0o644 << 16) + bomb)
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
        from edgecompress_runtime.bundle import FORMAT_VERSION
        field, v = "format_version", r.choice([-1, 0, True, False, "1", "2", 1.0, FORMAT_VERSION - 1, FORMAT_VERSION + 1,
                                               2 ** 64, None, [], {}, 10 ** 30])
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
        text = mbytes.replace('[{"v":', "[" + _deep(n) + ',{"v":', 1)       # the first node's arguments
    return f"{where} {n}", build(man, mem, raw_manifest=text.encode())


def _n(op, args, out):
    """A stored graph node (bundle_layout: [op, out, args])."""
    return [op, out, args]


def m_graph(r: random.Random, b: Base):
    from edgecompress_runtime.ops import OPS
    man, mem = b.copy()
    g = man["graph"]
    nodes, out0 = g["nodes"], g["outputs"][0]
    values = list(g["inputs"]) + [n[1] for n in nodes]
    how = r.choice(["bmm_attack", "arange", "full", "repeat", "undefined", "unknown_op", "dup_out", "random_op",
                    "random_op", "random_op", "drop_node", "swap", "bad_output", "reshape", "cat_many"])
    extra = {
        "bmm_attack": [_n("sum", [{"v": out0}], "z0"), _n("reshape", [{"v": "z0"}, [1, 1, 1]], "z1"),
                       _n("expand", [{"v": "z1"}, [1, 8192, 8192]], "z2"), _n("bmm", [{"v": "z2"}, {"v": "z2"}], "z3"),
                       _n("bmm", [{"v": "z3"}, {"v": "z2"}], "z4"), _n("bmm", [{"v": "z4"}, {"v": "z2"}], "z5")],
        "arange": [_n("arange", [0, r.choice([10 ** 12, 1e300, 2 ** 62, -5]), r.choice([1, 0, 1e-300])], "z5")],
        "full": [_n("full.default", [[2 ** 20, 2 ** 20], 1.0], "z5")],
        "repeat": [_n("repeat.default", [{"v": out0}, [1, 2 ** 30]], "z5")],
        "reshape": [_n("reshape", [{"v": out0}, [r.choice([-1, 7, 2 ** 40]), 3]], "z5")],
        "cat_many": [_n("cat", [[{"v": out0}] * 60000, 0], "z5")],
        "undefined": [_n("relu", [{"v": "nowhere"}], "z5")],
        "unknown_op": [_n("os.system", ["true"], "z5")],
        "dup_out": [_n("relu", [{"v": out0}], g["inputs"][0])],
    }
    if how in extra:
        nodes += extra[how]
        if r.random() < 0.7 and nodes[-1][1] == "z5":
            g["outputs"] = ["z5"]
    elif how == "random_op":
        pool = [{"v": r.choice(values)} for _ in range(3)] + [{"p": r.choice(sorted(man["params"]))}] + HOSTILE[:12]
        nodes.append(_n(r.choice(sorted(OPS)), [r.choice(pool) for _ in range(r.randint(0, 5))], "z5"))
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
    man, mem = b.copy()
    name = r.choice(sorted(man["params"]))
    p = man["params"][name]
    how = r.choice(["bits", "kind", "remap", "shape", "role", "dtype", "csr", "act", "proj", "sb"])
    if how == "bits":
        p["bits"] = r.choice([0, 1, 3, 16, -8, "8", None, 2 ** 40])
    elif how == "kind":
        p["kind"] = r.choice(["rowwise", "csr", "channel_int8", "fp16", None])
    elif how == "remap":
        p["a"]["remap"] = add_array(man, mem, np.full(p["shape"][0], r.choice([10 ** 9, -1, 2 ** 31 - 1]), np.int32))
    elif how == "shape":
        p["shape"] = [d * r.choice([2, 3]) + 1 for d in p["shape"]]
    elif how == "role":             # another array of the table (or one past its end)
        p["a"][r.choice(list(p["a"]))] = r.randrange(len(man["arrays"]) + 1)
    elif how == "dtype":            # the table entry of one of its arrays says another dtype
        entry = man["arrays"][p["a"][r.choice(list(p["a"]))]]
        entry[0] = r.choice(["f2", "f8", "i4", "u1", "i8", "c8", "b1", "M8", "f4"])
    elif how == "csr":
        rows = p["shape"][0]
        p.update(kind="csr", a={"data": add_array(man, mem, np.ones(4, np.float32)),
                                "indices": add_array(man, mem, np.array([0, 10 ** 6, -3, 2], np.int32)),
                                "indptr": add_array(man, mem, np.array([0] + [5] * rows, np.int32))})
    elif how == "act":
        p["act"] = r.choice(["static", "dynamic", "weird"])
    elif how == "proj":
        p["a"]["proj"] = add_array(man, mem, np.ones((3, 7), np.float32))
    else:                           # the merged scale + bias of a row-wise table (or a role "sb" where none was)
        if "sb" in p["a"]:
            man["arrays"][p["a"]["sb"]][1] = r.choice([[3, p["shape"][0]], [2, p["shape"][0] + 1], [2], [4, 1]])
        else:
            p["a"]["sb"] = add_array(man, mem, np.ones((2, p["shape"][0]), np.float16))
    return f"{how} {name}"[:60], build(man, mem)


def m_layout(r: random.Random, b: Base):
    """The compact layout's own structures: array indices, tables, the array data, node lists."""
    import numpy as np
    man, mem = b.copy()
    how = r.choice(["index", "const_index", "ref_values", "table_swap", "table_drop", "table_extra", "blob_short",
                    "blob_long", "ref_form", "node_form", "default_name", "no_table", "sb_alone"])
    if how == "index":
        p = man["params"][r.choice(sorted(man["params"]))]
        p["a"][r.choice(list(p["a"]))] = r.choice(HOSTILE[:12] + [len(man["arrays"]), 2 ** 40])
    elif how == "const_index" and man.get("constants"):
        man["constants"][r.choice(sorted(man["constants"]))] = r.choice(HOSTILE[:12])
    elif how == "ref_values":          # values of the wrong type, range or count
        ref = man["reference"]
        entry = r.choice(list(ref["inputs"].values()) + [ref["outputs"]])
        if entry[2] and r.random() < 0.7:
            entry[2][r.randrange(len(entry[2]))] = r.choice(HOSTILE + [2 ** 63, -2 ** 64, 10 ** 400, 1e308])
        else:
            entry[2] = entry[2][:-1] if r.random() < 0.5 else entry[2] + [0]
    elif how == "table_swap":       # same total bytes, shapes moved between arrays
        t = man["arrays"]
        i, j = r.sample(range(len(t)), 2)
        t[i], t[j] = t[j], t[i]
    elif how == "table_drop":
        man["arrays"].pop(r.randrange(len(man["arrays"])))
    elif how == "table_extra":
        man["arrays"].append([r.choice(["f4", "u1"]), [r.choice([0, 1, 7, 2 ** 20])]])
    elif how in ("blob_short", "blob_long"):
        data = mem["arrays.bin"]
        mem["arrays.bin"] = data[:-r.choice([1, 4, len(data)])] if how == "blob_short" else data + r.randbytes(
            r.choice([1, 8, 4096]))
    elif how == "ref_form":
        ref = man["reference"]
        key = r.choice(sorted(ref["inputs"]) + [None])
        bad = r.choice(HOSTILE[:12] + [["i8", [2 ** 20, 2 ** 20], []], ["f4", [1], [1.0], 4]])
        if key is None:
            ref["outputs"] = bad
        else:
            ref["inputs"][key] = bad
    elif how == "node_form":
        nodes = man["graph"]["nodes"]
        i = r.randrange(len(nodes))
        nodes[i] = r.choice([nodes[i][:2], nodes[i] + ["x", "y"], {"op": nodes[i][0]}, nodes[i][0], [], None])
    elif how == "default_name":        # value names as 0 (the default name) where they were not, or hostile
        nodes = man["graph"]["nodes"]
        nodes[r.randrange(len(nodes))][1] = r.choice([0, 0.0, False, -1, None])
    elif how == "no_table":
        man.pop("arrays")
    else:
        name = next((n for n, p in man["params"].items() if "sb" in p["a"]), sorted(man["params"])[0])
        p = man["params"][name]
        p["a"].pop("sb", None)
        p["a"]["scale"] = add_array(man, mem, np.ones(p["shape"][0], np.float16))
    return how, build(man, mem)


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
           "layout": m_layout, "inputs": m_inputs, "artifact": m_artifact}
# the classes that matter most get more mutants
WEIGHTS = {"corruption": 3, "malicious_edit": 4, "graph": 4, "params": 2, "layout": 3, "huge_shape": 2,
           "artifact": 2}


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
