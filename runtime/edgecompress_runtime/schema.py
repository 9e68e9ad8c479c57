"""The manifest schema: every field's type, range and size, checked with explicit code.

``check_manifest(manifest, path)`` runs right after the manifest's hash and signature are
checked and before anything uses the manifest (``bundle.read_bundle``); ``array_checks.check_arrays``
runs once a parameter's arrays are read (``backends/numpy_graph.load_params``). Every
violation is a ``BundleError`` naming the field path, e.g.
``manifest.params["emb0"].bits: 3 not in {2, 4, 8}``. The published table of fields is
docs/bundle-format.md ("Manifest schema"). Fields the runtime does not use (``metrics``,
``provenance``, ``plan``, ...) are free-form but bounded like everything else: nesting
(``bundle_json.MAX_JSON_DEPTH``), string length (``MAX_STRING``), total JSON values
(``MAX_VALUES``). Unknown top-level fields are allowed (newer writers), within those bounds.
"""
from __future__ import annotations

import json
import math
import re

from .errors import BundleError

MAX_STRING = 4096                 # any string or key in the manifest
MAX_NAME = 256                    # names: members, params, values, inputs
MAX_VALUES = 1_000_000            # JSON values in the whole manifest
MAX_NODES = 100_000               # graph nodes
MAX_INPUTS = 256                  # model inputs
MAX_RANK = 8                      # dimensions of any shape
MAX_DIM = 1 << 31                 # one dimension
MAX_ELEMENTS = 1 << 32            # elements of one declared shape
MAX_INT = 1 << 62                 # integer arguments in the graph
MAX_LIST_ARGS = 4096              # one list argument of a graph node (e.g. cat's tensors)
MAX_BATCH = 1 << 31               # largest max_batch a manifest may declare
BITS = {"fp32": {32}, "csr": {32}, "rowwise": {1, 2, 4, 8}, "channel_int8": {8}, "fp16": {16}, "pq": {4, 8},
        "clustered": set(range(2, 9))}
DTYPES = ("float32", "int64")
REQUIRED = ("inputs", "model", "reference")     # besides format, format_version, members (bundle.py)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REF_KEYS = ("v", "p", "c")


def _fail(where: str, what: str):
    raise BundleError(f"{where}: {_short(what)}")


def _short(text, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _key(name) -> str:
    return json.dumps(_short(name, 60))


def _int(x) -> bool:
    return type(x) is int


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        _fail(where, what)


def _obj(x, where: str) -> dict:
    _need(isinstance(x, dict), where, f"must be an object, got {type(x).__name__}")
    return x


def _list(x, where: str, most: int) -> list:
    _need(isinstance(x, list), where, f"must be a list, got {type(x).__name__}")
    _need(len(x) <= most, where, f"has {len(x)} entries, above the limit of {most}")
    return x


def _str(x, where: str, most: int = MAX_NAME) -> str:
    _need(isinstance(x, str), where, f"must be a string, got {type(x).__name__}")
    _need(0 < len(x) <= most, where, f"must be 1..{most} characters, got {len(x)}")
    return x


def _pos_int(x, where: str, most: int = MAX_DIM, least: int = 1) -> int:
    _need(_int(x), where, f"must be an integer, got {_short(repr(x), 40)}")
    _need(least <= x <= most, where, f"{x} not in {least}..{most}")
    return x


def _shape(x, where: str, batch: bool = False) -> list:
    _list(x, where, MAX_RANK)
    for i, d in enumerate(x):
        if batch and i == 0 and d is None:
            continue
        _pos_int(d, f"{where}[{i}]", MAX_DIM, 0)
    n = math.prod(d for d in x if d is not None)
    _need(n <= MAX_ELEMENTS, where, f"declares {n} elements, above the limit of {MAX_ELEMENTS}")
    return x


def _bounded(manifest) -> None:
    """Every string and key at most MAX_STRING characters, at most MAX_VALUES values (iterative)."""
    count, stack = 0, [(manifest, "manifest")]
    while stack:
        o, where = stack.pop()
        count += 1
        if count > MAX_VALUES:
            _fail("manifest", f"holds more than {MAX_VALUES} JSON values")
        if isinstance(o, str):
            _need(len(o) <= MAX_STRING, where, f"a string of {len(o)} characters, above the limit of {MAX_STRING}")
        elif isinstance(o, dict):
            for k, v in o.items():
                _need(len(k) <= MAX_STRING, where, f"a key of {len(k)} characters, above the limit of {MAX_STRING}")
                stack.append((v, f"{where}[{_key(k)}]"))
        elif isinstance(o, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(o))


def member_name(name, where: str) -> str:
    """A member name: a plain relative path (no traversal, absolute paths, backslashes or control chars)."""
    _str(name, where)
    parts = name.split("/")
    bad = (name.startswith("/") or "\\" in name or any(ord(c) < 32 for c in name)
           or any(p in ("", ".", "..") for p in parts))
    _need(not bad, where, f"{_short(repr(name), 80)} is not a plain relative member name")
    return name


def _members(m: dict) -> dict:
    listed = _obj(m.get("members", {}), "manifest.members")
    for name, meta in listed.items():
        where = f"manifest.members[{_key(name)}]"
        member_name(name, where)
        _obj(meta, where)
        digest = meta.get("sha256")
        _need(isinstance(digest, str) and _HEX64.fullmatch(digest) is not None, f"{where}.sha256",
              "must be 64 lowercase hex digits")
        _pos_int(meta.get("size"), f"{where}.size", 1 << 40, 0)
    return listed


def _member_ref(x, where: str, listed: dict) -> str:
    _str(x, where)
    _need(x in listed, where, f"{_short(repr(x), 80)} is not a member the manifest lists")
    return x


def _inputs(m: dict) -> list:
    specs = _list(m.get("inputs", []), "manifest.inputs", MAX_INPUTS)
    seen = set()
    for i, s in enumerate(specs):
        where = f"manifest.inputs[{i}]"
        _obj(s, where)
        name = _str(s.get("name"), f"{where}.name")
        _need(name not in seen, f"{where}.name", f"{name!r} appears twice")
        seen.add(name)
        _need(s.get("dtype") in DTYPES, f"{where}.dtype", f"{_short(repr(s.get('dtype')), 40)} not in {DTYPES}")
        shape = _shape(s.get("shape"), f"{where}.shape", batch=True)
        _need(len(shape) >= 1 and shape[0] is None, f"{where}.shape", "must start with null (the batch dimension)")
        _need(None not in shape[1:], f"{where}.shape", "only the first dimension may be null")
        _need(s.get("kind", "dense") in ("dense", "ids"), f"{where}.kind", f"{s.get('kind')!r} not in ('dense', 'ids')")
        _id_spec(s, where)
    return specs


def _id_spec(s: dict, where: str) -> None:
    vocab = s.get("vocab")
    if vocab is not None:
        _list(vocab, f"{where}.vocab", 1 << 16)
        for j, v in enumerate(vocab):
            if v is not None:
                _pos_int(v, f"{where}.vocab[{j}]", MAX_DIM)
    if s.get("fields") is not None:
        for j, f in enumerate(_list(s["fields"], f"{where}.fields", 1 << 16)):
            _str(f, f"{where}.fields[{j}]")
    if s.get("padding_id") is not None:
        _pos_int(s["padding_id"], f"{where}.padding_id", MAX_DIM, 0)
    if s.get("oov_row") is not None:
        oov = _list(s["oov_row"], f"{where}.oov_row", 1 << 16)
        _need(len(oov) == len(vocab or []), f"{where}.oov_row", f"has {len(oov)} entries, vocab has {len(vocab or [])}")
        for j, (r, v) in enumerate(zip(oov, vocab)):
            if r is not None:
                _pos_int(r, f"{where}.oov_row[{j}]", (v or MAX_DIM + 1) - 1, 0)
    if s.get("id_columns") is not None:
        width = s["shape"][1] if len(s["shape"]) > 1 else 1
        for j, e in enumerate(_list(s["id_columns"], f"{where}.id_columns", 1 << 16)):
            _obj(e, f"{where}.id_columns[{j}]")
            _pos_int(e.get("column"), f"{where}.id_columns[{j}].column", width - 1, 0)
            _pos_int(e.get("vocab"), f"{where}.id_columns[{j}].vocab", MAX_DIM)


def _params(m: dict, listed: dict) -> dict:
    from .params import KINDS, OPTIONAL
    params = _obj(m.get("params", {}), "manifest.params")
    for name, p in params.items():
        where = f"manifest.params[{_key(name)}]"
        _str(name, where)
        _obj(p, where)
        kind = p.get("kind")
        _need(isinstance(kind, str) and kind in KINDS, f"{where}.kind",
              f"{_short(repr(kind), 40)} not in {{{', '.join(KINDS)}}}")
        bits = p.get("bits", 32)
        allowed = BITS[kind]
        _need(_int(bits) and bits in allowed, f"{where}.bits",
              f"{_short(repr(bits), 20)} not in {{{', '.join(map(str, sorted(allowed)))}}}")
        shape = _shape(p.get("shape"), f"{where}.shape")
        _need(len(shape) >= 1, f"{where}.shape", "must have at least one dimension")
        _need(p.get("act") in (None, "dynamic", "static"), f"{where}.act",
              f"{_short(repr(p.get('act')), 40)} not in (null, 'dynamic', 'static')")
        # int8 activations are computed against int8 weights only; another kind would fail at run time
        _need(p.get("act") is None or kind == "channel_int8", f"{where}.act",
              f"int8 activations need kind 'channel_int8', not {kind!r}")
        roles = _obj(p.get("members"), f"{where}.members")
        for r, member in roles.items():
            _need(r in KINDS[kind] + OPTIONAL, f"{where}.members", f"unknown array role {_short(repr(r), 40)}")
            _member_ref(member, f"{where}.members[{_key(r)}]", listed)
        missing = [r for r in KINDS[kind] if r not in roles]
        _need(not missing, f"{where}.members", f"lacks {missing} for kind {kind}")
        if p.get("act") == "static":
            _need("act_scale" in roles, f"{where}.members", "act 'static' needs an act_scale array")
    return params


def _graph(m: dict, params: dict, consts: dict, spec_names: list) -> None:
    from .ops import OPS
    g = m.get("graph")
    if g is None or g == [] or g == {}:
        return                      # no graph: the numpy backend refuses to run it (it names why)
    _obj(g, "manifest.graph")
    defined = set()
    for i, name in enumerate(_list(g.get("inputs"), "manifest.graph.inputs", MAX_INPUTS)):
        _str(name, f"manifest.graph.inputs[{i}]")
        _need(name in spec_names, f"manifest.graph.inputs[{i}]", f"{name!r} is not in manifest.inputs")
        defined.add(name)
    nodes = _list(g.get("nodes"), "manifest.graph.nodes", MAX_NODES)
    for i, n in enumerate(nodes):
        where = f"manifest.graph.nodes[{i}]"
        _obj(n, where)
        op = n.get("op")
        _need(isinstance(op, str) and op in OPS, f"{where}.op",
              f"{_short(repr(op), 60)} is not an op this runtime implements; upgrade edgecompress-runtime")
        args = _list(n.get("args", []), f"{where}.args", 64)
        _args(args, f"{where}.args", defined, params, consts)
        out = _str(n.get("out"), f"{where}.out")
        _need(out not in defined, f"{where}.out", f"{out!r} is defined twice")
        defined.add(out)
    outs = _list(g.get("outputs"), "manifest.graph.outputs", 1 << 10)
    _need(len(outs) >= 1, "manifest.graph.outputs", "must name at least one value")
    for i, o in enumerate(outs):
        _str(o, f"manifest.graph.outputs[{i}]")
        _need(o in defined, f"manifest.graph.outputs[{i}]", f"{o!r} is not a value the graph defines")


def _args(args: list, where: str, defined: set, params: dict, consts: dict) -> None:
    """Arguments: null, bool, int (|x| <= 2**62), float, short string, list of arguments, or one
    reference {"v": earlier value} / {"p": parameter} / {"c": constant} (iterative)."""
    stack = [(a, f"{where}[{i}]") for i, a in enumerate(args)]
    while stack:
        a, at = stack.pop()
        if a is None or isinstance(a, (bool, float)):
            continue
        if _int(a):
            _need(abs(a) <= MAX_INT, at, f"integer {a} outside +-2**62")
        elif isinstance(a, str):
            _need(len(a) <= 64, at, f"a string argument of {len(a)} characters (limit 64)")
        elif isinstance(a, list):
            _need(len(a) <= MAX_LIST_ARGS, at, f"a list of {len(a)} arguments (limit {MAX_LIST_ARGS})")
            stack.extend((x, f"{at}[{j}]") for j, x in enumerate(a))
        elif isinstance(a, dict):
            _need(len(a) == 1 and next(iter(a)) in _REF_KEYS, at,
                  "a reference must be one of {\"v\": ...}, {\"p\": ...}, {\"c\": ...}, "
                  f"got keys {sorted(a)[:4]}")
            k, ref = next(iter(a.items()))
            _str(ref, f"{at}.{k}")
            table = {"v": defined, "p": params, "c": consts}[k]
            what = {"v": "a value defined before this node", "p": "a parameter in manifest.params",
                    "c": "a constant in manifest.constants"}[k]
            _need(ref in table, f"{at}.{k}", f"{_short(repr(ref), 60)} is not {what}")
        else:
            _fail(at, f"unsupported argument type {type(a).__name__}")


def _rest(m: dict, listed: dict) -> None:
    consts = _obj(m.get("constants", {}), "manifest.constants")
    for k, v in consts.items():
        _str(k, "manifest.constants")
        _member_ref(v, f"manifest.constants[{_key(k)}]", listed)
    ref = m.get("reference")
    if ref is not None:
        _obj(ref, "manifest.reference")
        _obj(ref.get("inputs", {}), "manifest.reference.inputs")
        for k, v in _obj(ref.get("inputs", {}), "manifest.reference.inputs").items():
            _member_ref(v, f"manifest.reference.inputs[{_key(k)}]", listed)
        _member_ref(ref.get("outputs"), "manifest.reference.outputs", listed)
        tol = ref.get("tolerance", 1e-2)
        _need(isinstance(tol, (int, float)) and not isinstance(tol, bool) and math.isfinite(tol) and tol >= 0,
              "manifest.reference.tolerance", f"{_short(repr(tol), 40)} is not a finite number >= 0")
    arts = m.get("artifacts")
    if arts is not None:
        for name, entry in _obj(arts, "manifest.artifacts").items():
            _obj(entry, f"manifest.artifacts[{_key(name)}]")
            _member_ref(entry.get("member"), f"manifest.artifacts[{_key(name)}].member", listed)
    model = m.get("model")
    if model is not None:
        _obj(model, "manifest.model")
        for field in ("class", "task", "output"):
            if model.get(field) is not None:
                _str(model[field], f"manifest.model.{field}")
        if model.get("outputs") is not None:
            for i, h in enumerate(_list(model["outputs"], "manifest.model.outputs", 1 << 10)):
                at = f"manifest.model.outputs[{i}]"
                _obj(h, at)
                _str(h.get("name"), f"{at}.name")
                _need(h.get("form", "logit") in ("logit", "probability"), f"{at}.form",
                      f"{_short(repr(h.get('form')), 40)} not in ('logit', 'probability')")
                _pos_int(h.get("width", 1), f"{at}.width", 1 << 20)
    for field in ("target", "metrics", "provenance"):
        if m.get(field) is not None:
            _obj(m[field], f"manifest.{field}")
    if isinstance(m.get("metrics"), dict) and m["metrics"].get("host") is not None:
        _obj(m["metrics"]["host"], "manifest.metrics.host")
    if isinstance(m.get("target"), dict) and m["target"].get("backends") is not None:
        for i, name in enumerate(_list(m["target"]["backends"], "manifest.target.backends", 16)):
            _str(name, f"manifest.target.backends[{i}]", 64)
    for i, step in enumerate(_list(m.get("plan", []), "manifest.plan", 1 << 12)):
        _obj(step, f"manifest.plan[{i}]")
        _str(step.get("pass"), f"manifest.plan[{i}].pass")
    if m.get("max_batch") is not None:
        _pos_int(m["max_batch"], "manifest.max_batch", MAX_BATCH)


def check_manifest(m: dict, path: str = "", arrays=()) -> None:
    """Check every field the runtime uses (see the module doc); BundleError naming the field.
    ``arrays``: the names of the arrays the compact layout holds (bundle_layout.expand), which
    params, constants and the reference may name besides the listed members."""
    try:
        _bounded(m)
        for field in REQUIRED:
            _need(field in m, f"manifest.{field}", "is missing")
        listed = {**_members(m), **dict.fromkeys(arrays)}
        specs = _inputs(m)
        params = _params(m, listed)
        _rest(m, listed)
        _graph(m, params, m.get("constants", {}), [s["name"] for s in specs])
    except BundleError as e:
        raise BundleError(f"{path}: {e} (corrupted or tampered)" if path else str(e)) from None
