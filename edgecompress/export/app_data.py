"""What an app needs from the training data, stored in the bundle beside the app artifacts.

    members = app_members(spec, ds, train)     # {"app/id_maps.json": bytes, "app/dense_stats.json": bytes}

- ``app/id_maps.json``: per id field whose raw ids the compile data carries, the raw id of
  every row (``raw[row]``, ints or strings as in the training data). Sources, in order:
  ``meta["raw_ids"][field]`` (any loader may set it), MovieLens' ``meta["user_ids"]`` /
  ``meta["item_ids"]`` (fields ``user``/``user_id``, ``item``/``item_id``) and
  ``meta["categories"][field]`` (label of each code). Fields without one take their row
  ids as raw ids (synthetic data, already dense ids): they are listed as ``identity``.
- ``app/dense_stats.json``: per dense input, per column mean / std / min / max over the
  training rows (else the compile data's rows), as the model sees them, plus the loader's
  own raw -> model transform when it recorded one (``meta["dense_norm"]``, e.g. MovieLens
  standardises timestamp, counts, age and release year).

Only bundles that carry app artifacts get these members (compile/bundle.py), so the numpy
bundle's size model is unchanged. ``edgecompress package`` reads them (export/app_package.py).
"""
from __future__ import annotations

import json

import numpy as np

ID_MAPS = "app/id_maps.json"
DENSE_STATS = "app/dense_stats.json"
_MOVIELENS = {"user": "user_ids", "user_id": "user_ids", "item": "item_ids", "item_id": "item_ids"}


def _raw_table(meta: dict, field: str):
    explicit = meta.get("raw_ids") or {}
    if field in explicit:
        return explicit[field]
    if field in _MOVIELENS and meta.get(_MOVIELENS[field]) is not None:
        return meta[_MOVIELENS[field]]
    cats = meta.get("categories") or {}
    return cats.get(field)


def _plain(values) -> tuple[list, str]:
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return [int(v) for v in arr.tolist()], "int"
    return [str(v) for v in arr.tolist()], "string"


def id_maps(spec: list[dict], meta: dict) -> dict:
    """{"schema", "fields": {field: {"input", "field", "rows", "raw_type", "raw" | "identity"}}}."""
    fields = {}
    for s in spec:
        if s.get("kind") != "ids":
            continue
        names = s.get("fields") or [s["name"]]
        vocab = s.get("vocab") or [None] * len(names)
        for j, name in enumerate(names):
            entry = {"input": s["name"], "field": j, "rows": vocab[j]}
            table = _raw_table(meta, name)
            if table is None:
                entry.update(raw_type="int", identity=True)
            else:
                raw, kind = _plain(table)
                if vocab[j] is not None and len(raw) > vocab[j]:
                    raw = raw[: vocab[j]]           # rows past the table are not ids the model knows
                if len(set(raw)) != len(raw):
                    entry.update(raw_type=kind, identity=True, note="raw ids are not unique; not stored")
                else:
                    entry.update(raw_type=kind, raw=raw)
            fields[name] = entry
    return {"schema": "edgecompress.app-id-maps/1", "fields": fields}


def dense_stats(spec: list[dict], rows: dict, meta: dict, source: str) -> dict:
    """{"schema", "rows_from", "inputs": {input: {"columns", "mean", "std", "min", "max", "rows", "raw_transform"?}}}."""
    out = {}
    norm = meta.get("dense_norm") or {}
    for s in spec:
        if s.get("kind") != "dense" or s["name"] not in rows:
            continue
        x = np.asarray(rows[s["name"]], dtype=np.float64)
        x = x.reshape(len(x), -1)
        names = meta.get("dense_names") if x.shape[1] == len(meta.get("dense_names") or []) else None
        entry = {"columns": list(names or [f"{s['name']}[{c}]" for c in range(x.shape[1])]), "rows": int(len(x)),
                 "mean": _floats(x.mean(0) if len(x) else np.zeros(x.shape[1])),
                 "std": _floats(x.std(0) if len(x) else np.ones(x.shape[1])),
                 "min": _floats(x.min(0) if len(x) else np.zeros(x.shape[1])),
                 "max": _floats(x.max(0) if len(x) else np.zeros(x.shape[1]))}
        if id_cols := s.get("id_columns"):
            entry["id_columns"] = [int(c["column"]) for c in id_cols]
        if s["name"] in norm:
            entry["raw_transform"] = norm[s["name"]]
        out[s["name"]] = entry
    return {"schema": "edgecompress.app-dense-stats/1", "rows_from": source, "inputs": out}


def _floats(a) -> list[float]:
    return [float(round(v, 9)) for v in np.asarray(a, dtype=np.float64).tolist()]


def app_members(spec: list[dict], ds, train=None) -> dict[str, bytes]:
    """The app members for a bundle whose input spec is ``spec``, compiled on ``ds`` (a Dataset)
    with training rows ``train`` (a Dataset, RetrievalData or None)."""
    train_ds = getattr(train, "train", train)
    rows_ds, source = (train_ds, "training rows") if train_ds is not None else (ds, "compile data rows")
    meta = dict(getattr(ds, "meta", None) or {})
    members = {ID_MAPS: id_maps(spec, meta)}
    stats = dense_stats(spec, rows_ds.inputs, {**meta, **(getattr(rows_ds, "meta", None) or {})}, source)
    if stats["inputs"]:
        members[DENSE_STATS] = stats
    return {k: (json.dumps(v, separators=(",", ":"), sort_keys=True) + "\n").encode() for k, v in members.items()}
