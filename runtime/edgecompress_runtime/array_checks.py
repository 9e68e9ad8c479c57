"""A parameter's arrays against its manifest entry (dtypes, shapes, index ranges), once read:
so no op can index out of range or divide by a bad width later. Part of the manifest schema
(schema.py, docs/bundle-format.md "Manifest schema"); every violation is a BundleError naming
the field path."""
from __future__ import annotations

import math

import numpy as np

from .schema import _key, _need

def check_arrays(name: str, kind: str, shape, bits: int, arrays: dict) -> None:
    """A parameter's arrays agree with its manifest entry (dtypes, shapes, index ranges),
    so no op can index out of range or divide by a bad width later."""
    where = f"manifest.params[{_key(name)}]"
    shape = tuple(shape)
    for role, a in arrays.items():
        _need(a.dtype.kind in "biuf" and a.dtype.itemsize <= 8, f"{where}.members[{_key(role)}]",
              f"dtype {a.dtype} is not a plain number type")
    proj = arrays.get("proj")
    width = shape[-1]
    if proj is not None:
        _need(proj.ndim == 2 and proj.shape[1] == width, f"{where}.members[\"proj\"]",
              f"shape {list(proj.shape)}, want [d, {width}]")
        width = proj.shape[0]
    stored = _stored_rows(where, kind, shape, bits, width, arrays)
    remap = arrays.get("remap")
    if remap is not None:
        _need(remap.dtype.kind in "iu" and remap.shape == (shape[0],), f"{where}.members[\"remap\"]",
              f"must be integers of shape [{shape[0]}], got {remap.dtype} {list(remap.shape)}")
        if remap.size:
            _need(int(remap.min()) >= 0 and int(remap.max()) < stored, f"{where}.members[\"remap\"]",
                  f"values must be in 0..{stored - 1}")
    elif kind in ("fp32", "fp16", "rowwise", "pq") and len(shape) >= 1:
        _need(stored == shape[0], f"{where}.shape", f"{list(shape)} but the stored array has {stored} rows")
    act = arrays.get("act_scale")
    if act is not None:
        _need(act.size == 1 and np.isfinite(act).all() and float(act.reshape(-1)[0]) > 0,
              f"{where}.members[\"act_scale\"]", "must be one finite positive number")


def _stored_rows(where: str, kind: str, shape, bits: int, width: int, arrays: dict) -> int:
    rows = shape[0]
    if kind in ("fp32", "fp16"):
        d = arrays["data"]
        if kind == "fp16":
            _need(d.dtype == np.float16, f"{where}.members[\"data\"]", f"must be float16, got {d.dtype}")
        if arrays.get("remap") is None and arrays.get("proj") is None:
            _need(d.shape == shape, f"{where}.members[\"data\"]", f"shape {list(d.shape)}, manifest says {list(shape)}")
        else:
            _need(d.ndim == 2 and d.shape[1] == width, f"{where}.members[\"data\"]",
                  f"shape {list(d.shape)}, want [rows, {width}]")
        return d.shape[0] if d.ndim else 0
    if kind == "rowwise":
        c = arrays["codes"]
        per = math.ceil(width * bits / 8)
        _need(c.dtype == np.uint8 and c.ndim == 2 and c.shape[1] == per, f"{where}.members[\"codes\"]",
              f"must be uint8 [rows, {per}], got {c.dtype} {list(c.shape)}")
        for r in ("scale", "bias"):
            _need(arrays[r].shape == (c.shape[0],), f"{where}.members[{_key(r)}]",
                  f"shape {list(arrays[r].shape)}, want [{c.shape[0]}]")
        return c.shape[0]
    if kind == "pq":
        return _pq_rows(where, bits, width, arrays)
    if kind == "clustered":
        return _clustered_rows(where, shape, bits, arrays)
    if kind == "channel_int8":
        c = arrays["codes"]
        _need(c.dtype == np.int8 and c.ndim == 2 and c.shape[0] == rows and c.size == math.prod(shape),
              f"{where}.members[\"codes\"]", f"must be int8 [{rows}, {math.prod(shape[1:])}] (shape {list(shape)}), "
              f"got {c.dtype} {list(c.shape)}")
        _need(arrays["scale"].shape == (rows,), f"{where}.members[\"scale\"]",
              f"shape {list(arrays['scale'].shape)}, want [{rows}]")
        return rows
    d, idx, ptr = arrays["data"], arrays["indices"], arrays["indptr"]      # csr
    _need(len(shape) == 2, f"{where}.shape", "a csr weight is 2-D")
    _need(d.ndim == 1 and idx.shape == d.shape and idx.dtype.kind in "iu", f"{where}.members[\"indices\"]",
          f"must be integers shaped like data {list(d.shape)}")
    _need(ptr.dtype.kind in "iu" and ptr.shape == (rows + 1,), f"{where}.members[\"indptr\"]",
          f"must be integers of shape [{rows + 1}]")
    ok = (int(ptr[0]) == 0 and int(ptr[-1]) == d.size and bool(np.all(np.diff(ptr.astype(np.int64)) >= 0))
          and (idx.size == 0 or (int(idx.min()) >= 0 and int(idx.max()) < shape[1])))
    _need(ok, f"{where}.members", "csr indptr/indices out of range")
    return rows


def _pq_rows(where: str, bits: int, width: int, arrays: dict) -> int:
    """codebooks [M, K, width/M] (K <= 2**bits, float), codes uint8 [rows, ceil(M*bits/8)] < K."""
    from .params import unpack_bits
    cb, c = arrays["codebooks"], arrays["codes"]
    _need(cb.ndim == 3 and cb.dtype.kind == "f" and cb.shape[0] >= 1 and cb.shape[0] * cb.shape[2] == width
          and 1 <= cb.shape[1] <= (1 << bits), f"{where}.members[\"codebooks\"]",
          f"must be float [M, K <= {1 << bits}, {width}/M], got {cb.dtype} {list(cb.shape)}")
    _need(bool(np.isfinite(cb).all()), f"{where}.members[\"codebooks\"]", "must be finite")
    per = math.ceil(cb.shape[0] * bits / 8)
    _need(c.dtype == np.uint8 and c.ndim == 2 and c.shape[1] == per, f"{where}.members[\"codes\"]",
          f"must be uint8 [rows, {per}], got {c.dtype} {list(c.shape)}")
    if c.size and (1 << bits) > cb.shape[1]:
        _need(int(unpack_bits(c, bits, cb.shape[0]).max()) < cb.shape[1], f"{where}.members[\"codes\"]",
              f"values must be in 0..{cb.shape[1] - 1}")
    return c.shape[0]


def _clustered_rows(where: str, shape, bits: int, arrays: dict) -> int:
    """A 2-D weight [O, I]: codes uint8 [O, ceil(I*bits/8)] < K, codebook float [1 or O, K <= 2**bits]."""
    from .params import unpack_bits
    _need(len(shape) == 2, f"{where}.shape", f"a clustered weight is 2-D, got {list(shape)}")
    _need("remap" not in arrays and "proj" not in arrays, f"{where}.members", "a clustered weight has no remap / proj")
    rows, cols = shape
    cb, c = arrays["codebook"], arrays["codes"]
    _need(cb.ndim == 2 and cb.dtype.kind == "f" and cb.shape[0] in (1, rows) and 1 <= cb.shape[1] <= (1 << bits),
          f"{where}.members[\"codebook\"]", f"must be float [1 or {rows}, K <= {1 << bits}], got {cb.dtype} {list(cb.shape)}")
    _need(bool(np.isfinite(cb).all()), f"{where}.members[\"codebook\"]", "must be finite")
    per = math.ceil(cols * bits / 8)
    _need(c.dtype == np.uint8 and c.shape == (rows, per), f"{where}.members[\"codes\"]",
          f"must be uint8 [{rows}, {per}], got {c.dtype} {list(c.shape)}")
    if c.size and (1 << bits) > cb.shape[1]:
        _need(int(unpack_bits(c, bits, cols).max()) < cb.shape[1], f"{where}.members[\"codes\"]",
              f"values must be in 0..{cb.shape[1] - 1}")
    return rows
