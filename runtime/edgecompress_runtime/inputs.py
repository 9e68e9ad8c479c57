"""Input validation against the bundle's input spec.

Spec entry (manifest ``inputs``): ``name``, ``dtype`` ("float32" | "int64"),
``shape`` (``null`` for the batch dimension), ``kind`` ("dense" | "ids"), and for
ids ``vocab`` (rows per field), ``fields`` (field names), optional ``padding_id``
and ``oov_row`` (per field: a row that unknown ids map to, or null to refuse them).
Every failure is an InputError (a ValueError) that names the input and field.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError


def _field_name(spec: dict, j: int) -> str:
    fields = spec.get("fields") or []
    label = fields[j] if j < len(fields) else f"#{j}"
    return f"{spec['name']}[field {label}]"


def _check_ids(spec: dict, arr: np.ndarray, counters: dict) -> np.ndarray:
    vocab = spec.get("vocab") or []
    oov = spec.get("oov_row") or [None] * len(vocab)
    # ids are [B], [B, F] or [B, F, L]: field axis is 1 when present
    per_field = arr.ndim >= 2 and len(vocab) == arr.shape[1]
    copied = False
    for j, rows in enumerate(vocab):
        col = arr[:, j] if per_field else arr
        if not col.size:
            continue
        bad = (col < 0) if rows is None else (col < 0) | (col >= rows)
        if not bad.any():
            continue
        if oov[j] is not None:
            if not copied:  # never write into the caller's array
                arr, copied = arr.copy(), True
            col = arr[:, j] if per_field else arr
            col[bad] = oov[j]
            key = _field_name(spec, j)
            counters[key] = counters.get(key, 0) + int(bad.sum())
            continue
        first = int(col[bad].flat[0])
        kind = "negative" if first < 0 else "out-of-vocabulary"
        raise InputError(f"input {_field_name(spec, j)}: {kind} id {first} "
                         f"({int(bad.sum())} such ids); valid ids are "
                         + ("non-negative" if rows is None else f"0..{rows - 1}"))
    return arr


def _check_id_columns(spec: dict, arr: np.ndarray) -> None:
    """Ids carried in a float tensor (columns a model casts with .long()): whole numbers in 0..vocab-1."""
    for entry in spec["id_columns"]:
        c, rows = int(entry["column"]), int(entry["vocab"])
        col = arr[:, c]
        bad = (col < 0) | (col >= rows) | (col != np.floor(col))
        if bad.any():
            first = col[bad][0]
            raise InputError(f"input {spec['name']!r} column {c}: value {first:g} is not an id "
                             f"({int(bad.sum())} such values); valid ids are whole numbers 0..{rows - 1}")


def validate(specs: list[dict], inputs: dict, counters: dict | None = None) -> dict[str, np.ndarray]:
    """Check and convert ``inputs``; returns arrays in the spec's dtypes.
    ``counters`` collects how many ids were mapped to OOV rows, per field."""
    if not isinstance(inputs, dict):
        raise InputError(f"predict() takes a dict of named arrays, got {type(inputs).__name__}")
    counters = {} if counters is None else counters
    names = [s["name"] for s in specs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InputError(f"missing input {missing[0]!r}; this model takes: {', '.join(names)}")
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}; this model takes: {', '.join(names)}")
    out, batch = {}, None
    for spec in specs:
        name = spec["name"]
        try:
            arr = np.asarray(inputs[name])
        except (ValueError, TypeError) as e:      # ragged nested lists, objects numpy cannot stack
            raise InputError(f"input {name!r} is not a rectangular array (rows of different lengths?): "
                             f"{str(e).splitlines()[0][:120]}") from None
        want = spec["dtype"]
        if want == "int64":
            if arr.dtype.kind not in "iu":
                raise InputError(f"input {name!r} must hold integer ids (int64), got dtype {arr.dtype}")
            if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
                raise InputError(f"input {name!r}: id {int(arr.max())} is larger than any table can hold "
                                 f"(ids are int64, at most {np.iinfo(np.int64).max})")
            arr = arr.astype(np.int64, copy=False)
        else:
            if arr.dtype.kind != "f":
                raise InputError(f"input {name!r} must be float32, got dtype {arr.dtype}")
            if arr.dtype.itemsize > 4 and arr.size:
                big = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)
                if big.any():
                    raise InputError(f"input {name!r}: value {arr[big].flat[0]:g} is finite but outside float32's "
                                     f"range (|x| <= {np.finfo(np.float32).max:.4g}; {int(big.sum())} such values)")
            arr = arr.astype(np.float32, copy=False)
        shape = spec["shape"]
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            pretty = "[" + ", ".join("B" if s is None else str(s) for s in shape) + "]"
            raise InputError(f"input {name!r} has shape {list(arr.shape)}; expected {pretty}")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise InputError(f"input {name!r} has batch size {arr.shape[0]} but earlier inputs have {batch}")
        if spec.get("kind") == "ids":
            arr = _check_ids(spec, arr, counters)
        elif arr.size and not np.isfinite(arr).all():
            bad = ~np.isfinite(arr)
            col = int(np.argwhere(bad)[0][1]) if arr.ndim > 1 else 0
            raise InputError(f"input {name!r} column {col}: {int(bad.sum())} NaN or infinite values; "
                             "impute them before predict()")
        if spec.get("id_columns"):
            _check_id_columns(spec, arr)
        out[name] = arr
    return out
