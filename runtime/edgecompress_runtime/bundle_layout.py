"""The compact layout of format version 2: how the manifest a program uses (the *logical*
manifest, ``Bundle.manifest``) is stored, and back.

Stored (what ``manifest.json`` holds and the signature covers):
- every weight and constant is a slice of one member, ``arrays.bin`` (stored, not deflated), listed
  in ``manifest.arrays`` as ``[dtype code, shape]`` in file order; offsets are implicit (each array
  starts where the one before ends, the sizes must add up to the member exactly), and the writer
  orders arrays by item size, largest first, so every slice is aligned and read without a copy;
- the reference inputs and outputs (a few rows, sized to the model) are in the manifest itself,
  ``[dtype code, shape, [values...]]`` (floats in their shortest exact form): a member of their
  own would cost its zip headers and a hash; above INLINE_VALUES values (a retrieval model's score
  per item) they are arrays of ``arrays.bin`` instead, named by index;
- a parameter names its arrays by index (``"a": {role: index}``); a row-wise table's ``scale`` and
  ``bias`` (same dtype, one value per row) are one ``[2, R]`` array under the role ``sb``;
- a graph node is a list ``[op, out, args, mod?]`` instead of an object; ``out`` is 0 when it is the
  name torch.export gives by default (``op``, then ``op_1``, ``op_2``, ... per op).

Logical (what readers see, unchanged from version 1): ``params[name]["members"][role]``,
``constants[name]`` and ``reference.inputs / outputs`` are array names (``arrays/<param>.<role>``,
``constants/<name>``, ``reference/inputs/<name>``, ``reference/outputs``) that ``Bundle.array``
resolves; graph nodes are ``{"op", "args", "out", "mod"?}``; ``manifest.members`` lists the zip
members (``arrays.bin``, artifacts, ...). ``pack(expand(m)) == m``.

Why a layout and not one zip member per array: per array a member cost ~450 bytes (zip headers,
.npy header, a sha256 and a name in the manifest); a small model has 50 of them (issue 16).
"""
from __future__ import annotations

import io
import math

import numpy as np

from .errors import BundleError

ARRAYS = "arrays.bin"
DEFLATED = ("manifest.json",)                 # members written deflated (the rest are stored)
CODES = ("f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1")
MAX_ARRAYS = 1 << 16
MERGED = ("scale", "bias")                    # stored together as role "sb"
INLINE_VALUES = 4096                          # reference rows with more values go to arrays.bin


def code_of(dtype) -> str:
    code = np.dtype(dtype).str[1:]
    if code not in CODES:
        raise ValueError(f"a bundle stores numeric arrays only ({', '.join(CODES)}), got {np.dtype(dtype)}")
    return code


def _as_array(value, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return np.load(io.BytesIO(value), allow_pickle=False)   # the host's .npy bytes (its own, trusted)


class _Blob:
    """Arrays for one member, in the order they were added; written largest item size first."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []

    def add(self, a: np.ndarray) -> int:
        code_of(a.dtype)
        self.arrays.append(np.ascontiguousarray(a))
        return len(self.arrays) - 1

    def finish(self) -> tuple[list, bytes, dict]:
        order = sorted(range(len(self.arrays)), key=lambda i: -self.arrays[i].dtype.itemsize)   # stable
        index = {old: new for new, old in enumerate(order)}
        table = [[code_of(self.arrays[i].dtype), list(self.arrays[i].shape)] for i in order]
        data = b"".join(self.arrays[i].astype(self.arrays[i].dtype.newbyteorder("<"), copy=False).tobytes()
                        for i in order)
        return table, data, index


def _merge(arrays: dict) -> dict:
    """role -> array, with scale and bias stacked into ``sb`` when they have one dtype and shape [R]."""
    s, b = arrays.get("scale"), arrays.get("bias")
    if s is None or b is None or s.dtype != b.dtype or s.ndim != 1 or s.shape != b.shape:
        return arrays
    out = {r: a for r, a in arrays.items() if r not in MERGED}
    out["sb"] = np.stack([s, b])
    return out


def pack(manifest: dict, members: dict) -> tuple[dict, dict]:
    """(stored manifest, zip members) for a logical manifest and its members (array names ->
    ndarray or .npy bytes; other members -> bytes). Members no array name refers to are kept."""
    m = dict(manifest)
    used, blob, refs = set(), _Blob(), {}

    def take(name):
        if name not in members:
            raise ValueError(f"the manifest refers to array {name!r}, which is not among the members")
        used.add(name)
        return _as_array(members[name], name)
    params = {}
    for pname, p in sorted((m.get("params") or {}).items()):       # sorted: the same bytes from any dict order
        arrays = _merge({role: take(member) for role, member in sorted(p["members"].items())})
        refs[pname] = {role: blob.add(a) for role, a in sorted(arrays.items())}
        params[pname] = {k: v for k, v in p.items() if k != "members"}
    consts = {k: blob.add(take(v)) for k, v in sorted((m.get("constants") or {}).items())}
    ref = m.get("reference")
    rins = rout = None
    if isinstance(ref, dict) and "outputs" in ref:
        rins = {k: take(v) for k, v in sorted(ref.get("inputs", {}).items())}
        rout = take(ref["outputs"])
        if sum(a.size for a in rins.values()) + rout.size > INLINE_VALUES:      # e.g. a score per item
            rins, rout = {k: blob.add(a) for k, a in rins.items()}, blob.add(rout)
    table, data, index = blob.finish()
    for pname, r in refs.items():
        params[pname]["a"] = {role: index[i] for role, i in r.items()}
    m["params"], m["constants"], m["arrays"] = params, {k: index[i] for k, i in consts.items()}, table
    out = {ARRAYS: data} if table else {}
    if rout is not None:
        put = (lambda x: index[x]) if isinstance(rout, int) else _inline
        m["reference"] = {**ref, "inputs": {k: put(v) for k, v in rins.items()}, "outputs": put(rout)}
    if isinstance(m.get("graph"), dict) and isinstance(m["graph"].get("nodes"), list):
        seen: dict = {}
        m["graph"] = {**m["graph"], "nodes": [_node(n, seen) for n in m["graph"]["nodes"]]}
    out.update((k, v) for k, v in members.items() if k not in used)
    return m, out


def _inline(a: np.ndarray) -> list:
    """[code, shape, values]: floats as the shortest text that reads back to the same value."""
    code = code_of(a.dtype)
    flat = a.reshape(-1)
    values = [float(str(x)) for x in flat] if a.dtype.kind == "f" else [int(x) for x in flat]
    return [code, list(a.shape), values]


def _default_name(op, seen: dict) -> str:
    """torch.export's default name of the next ``op`` node (``op``, ``op_1``, ...)."""
    k = seen.get(op, 0)
    seen[op] = k + 1
    return str(op) if k == 0 else f"{op}_{k}"


def _node(n: dict, seen: dict) -> list:
    extra = {k for k in n if k not in ("op", "out", "args", "mod")}
    if extra:
        raise ValueError(f"graph node fields {sorted(extra)} have no place in the compact layout")
    out = 0 if n["out"] == _default_name(n["op"], seen) else n["out"]
    return [n["op"], out, n.get("args", [])] + ([n["mod"]] if "mod" in n else [])


# --------------------------------------------------------------------------- reading (hostile input)

def _fail(where: str, what: str):
    raise BundleError(f"{where}: {what}")


def _table(table, where: str, size: int | None) -> list:
    """Checked ``[[code, shape], ...]`` -> [(dtype, shape, offset)]; the sizes must add up to ``size``."""
    from .schema import MAX_ELEMENTS, MAX_RANK
    if not isinstance(table, list) or len(table) > MAX_ARRAYS:
        _fail(where, f"must be a list of at most {MAX_ARRAYS} [dtype, shape] entries")
    out, offset = [], 0
    for i, e in enumerate(table):
        at = f"{where}[{i}]"
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and e[0] in CODES
                and isinstance(e[1], list) and len(e[1]) <= MAX_RANK
                and all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in e[1])):
            _fail(at, f"must be [dtype code in {CODES}, shape of at most {MAX_RANK} non-negative integers]")
        n = math.prod(e[1])
        if n > MAX_ELEMENTS:
            _fail(at, f"declares {n} elements, above the limit of {MAX_ELEMENTS}")
        dtype = np.dtype("<" + e[0])
        out.append((dtype, tuple(e[1]), offset))
        offset += n * dtype.itemsize
    if size is not None and offset != size:
        _fail(where, f"the arrays add up to {offset} bytes, the member holds {size} (corrupted or tampered)")
    return out


def _index(x, where: str, n: int) -> int:
    if type(x) is not int or not 0 <= x < n:
        _fail(where, f"{repr(x)[:40]} is not an array index in 0..{n - 1}")
    return x


def expand(stored: dict, listed: dict) -> tuple[dict, dict]:
    """(logical manifest, array name -> (member, dtype, shape, offset)) of a stored manifest whose
    member listing ``listed`` was checked. Checks the layout's own fields; the logical manifest is
    then checked by schema.check_manifest."""
    m = dict(stored)
    sizes = {k: v["size"] for k, v in listed.items()}
    table = _table(m.pop("arrays", []), "manifest.arrays", sizes.get(ARRAYS, 0))
    names = {}

    def name(member, spec, logical):
        names[logical] = (member,) + spec
        return logical
    params = m.get("params")
    if isinstance(params, dict):
        out = {}
        for pname, p in params.items():
            where = f"manifest.params[{str(pname)[:60]!r}]"
            if not isinstance(p, dict) or not isinstance(p.get("a"), dict):
                _fail(f"{where}.a", "must map array roles to array indices")
            roles = {}
            for role, i in p["a"].items():
                spec = table[_index(i, f"{where}.a[{str(role)[:40]!r}]", len(table))]
                if role == "sb":
                    if len(spec[1]) != 2 or spec[1][0] != 2:
                        _fail(f"{where}.a.sb", f"must be a [2, rows] array, got shape {list(spec[1])}")
                    row = spec[1][1] * spec[0].itemsize
                    for k, r in enumerate(MERGED):
                        roles[r] = name(ARRAYS, (spec[0], (spec[1][1],), spec[2] + k * row), f"arrays/{pname}.{r}")
                else:
                    roles[role] = name(ARRAYS, spec, f"arrays/{pname}.{role}")
            out[pname] = {**{k: v for k, v in p.items() if k != "a"}, "members": roles}
        m["params"] = out
    consts = m.get("constants")
    if isinstance(consts, dict):
        m["constants"] = {k: name(ARRAYS, table[_index(i, f"manifest.constants[{str(k)[:60]!r}]", len(table))],
                                  f"constants/{k}") for k, i in consts.items()}
    ref = m.get("reference")
    if isinstance(ref, dict):
        ins = ref.get("inputs", {})
        if not isinstance(ins, dict):
            _fail("manifest.reference.inputs", "must map input names to [dtype, shape, values]")
        logical = {k: f"reference/inputs/{k}" for k in ins}

        def array(v, where):        # inline rows, or (large ones) an index into arrays.bin
            if type(v) is int:
                return (ARRAYS,) + table[_index(v, where, len(table))]
            return _uninline(v, where)
        for k, v in ins.items():
            names[logical[k]] = array(v, f"manifest.reference.inputs[{str(k)[:60]!r}]")
        names["reference/outputs"] = array(ref.get("outputs"), "manifest.reference.outputs")
        m["reference"] = {**ref, "inputs": logical, "outputs": "reference/outputs"}
    g = m.get("graph")
    if isinstance(g, dict) and isinstance(g.get("nodes"), list):
        seen: dict = {}
        m["graph"] = {**g, "nodes": [_unnode(n, f"manifest.graph.nodes[{i}]", seen) for i, n in enumerate(g["nodes"])]}
    clash = sorted(set(names) & set(listed))
    if clash:
        _fail("manifest.members", f"member {clash[0][:80]!r} has the name of an array the layout defines")
    return m, names


def _unnode(n, where: str, seen: dict) -> dict:
    if not isinstance(n, list) or not 3 <= len(n) <= 4:
        _fail(where, "must be a list [op, out, args] or [op, out, args, module]")
    default = _default_name(n[0], seen) if isinstance(n[0], str) else None
    out = default if n[1] == 0 and type(n[1]) is int and default is not None else n[1]
    return {"op": n[0], "out": out, "args": n[2], **({"mod": n[3]} if len(n) == 4 else {})}


def _uninline(v, where: str) -> np.ndarray:
    """A checked [code, shape, values] -> read-only ndarray."""
    from .schema import MAX_ELEMENTS, MAX_RANK
    if not (isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and v[0] in CODES
            and isinstance(v[1], list) and len(v[1]) <= MAX_RANK
            and all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in v[1]) and isinstance(v[2], list)):
        _fail(where, f"must be [dtype code in {CODES}, shape, list of values]")
    dtype = np.dtype("<" + v[0])
    if len(v[2]) != math.prod(v[1]):
        _fail(where, f"holds {len(v[2])} values, its shape {v[1]} needs {math.prod(v[1])}")
    if dtype.kind == "f":
        ok = all(type(x) in (int, float) for x in v[2])
    else:
        info = np.iinfo(dtype)
        ok = all(type(x) is int and info.min <= x <= info.max for x in v[2])
    if not ok:
        _fail(where, f"values must be {'numbers' if dtype.kind == 'f' else f'integers in {dtype} range'}")
    try:
        with np.errstate(over="ignore"):
            a = np.array(v[2], dtype=dtype).reshape(v[1])
    except (OverflowError, ValueError) as e:
        _fail(where, f"values do not fit {dtype} ({type(e).__name__})")
    a.flags.writeable = False
    return a


def views(names: dict, blobs: dict) -> dict:
    """array name -> read-only ndarray over the member bytes (no copy), or as given (reference rows)."""
    out = {}
    for logical, spec in names.items():
        if isinstance(spec, np.ndarray):
            out[logical] = spec
            continue
        member, dtype, shape, offset = spec
        n = math.prod(shape)
        if n == 0:
            a = np.zeros(0, dtype)
            a.flags.writeable = False
        else:
            a = np.frombuffer(blobs[member], dtype=dtype, count=n, offset=offset)
        out[logical] = a.reshape(shape)
    return out
