"""The input spec stored in a bundle: names, dtypes, shapes, per-field vocabulary.

Vocabularies come from the model, not the data: the lowering traces which input
field feeds which table, and that table's row count is the field's vocabulary.
Fields that feed no traceable table fall back to the data's declared vocabulary."""
from __future__ import annotations

import numpy as np

from ..errors import DataError


def input_spec(program, inputs: dict, data_vocab: dict | None = None, meta: dict | None = None,
               oov_rows: dict | None = None) -> list[dict]:
    data_vocab, meta, oov_rows = data_vocab or {}, meta or {}, oov_rows or {}
    tables = {}   # (input, field|None) -> min rows
    # a table rewritten as quotient + remainder tables (passes/qr_embedding.py) keeps its row count
    rewritten = {p.info["qr_of"]: p.info["rows"] for p in program.params.values() if "qr_of" in p.info}
    for table, (inp, fld) in program.index_sources.items():
        if table in program.params or table in rewritten:
            rows = program.params[table].shape[0] if table in program.params else rewritten[table]
            tables[(inp, fld)] = min(rows, tables.get((inp, fld), rows))
    specs = []
    for name in program.input_names:
        arr = np.asarray(inputs[name])
        shape = [None] + [int(s) for s in arr.shape[1:]]
        if arr.dtype.kind in "iu":
            nfields = arr.shape[1] if arr.ndim >= 2 else 1
            vocab = []
            for j in range(nfields):
                rows = tables.get((name, j if arr.ndim >= 2 else None), tables.get((name, None)))
                if rows is None:
                    declared = data_vocab.get(name) or []
                    rows = int(declared[j]) if j < len(declared) else None
                vocab.append(rows)
            fields = meta.get("field_names") if name == "sparse" else None
            if not fields or len(fields) != nfields:
                fields = [f"{name}{j}" for j in range(nfields)] if nfields > 1 else [name]
            oov = oov_rows.get(name)
            if isinstance(oov, int):
                oov = [oov] * nfields
            if oov is not None:
                if len(oov) != nfields:
                    raise DataError(f"oov_rows[{name!r}] has {len(oov)} entries for {nfields} fields")
                for j, (r, v) in enumerate(zip(oov, vocab)):
                    if r is not None and v is not None and not 0 <= r < v:
                        raise DataError(f"oov row {r} for {fields[j]} is outside its table (0..{v - 1})")
            spec = {"name": name, "dtype": "int64", "shape": shape, "kind": "ids", "vocab": vocab,
                    "fields": list(fields)}
            if meta.get("padding_id") is not None and arr.ndim == 3:
                spec["padding_id"] = int(meta["padding_id"])
            if oov is not None:
                spec["oov_row"] = list(oov)
        else:
            spec = {"name": name, "dtype": "float32", "shape": shape, "kind": "dense"}
            # ids carried in a float tensor (one concatenated X, cast with .long() in forward)
            cols = sorted((j, rows) for (inp, j), rows in tables.items() if inp == name and j is not None)
            if cols and arr.ndim == 2:
                spec["id_columns"] = [{"column": int(j), "vocab": int(rows)} for j, rows in cols]
        specs.append(spec)
    return specs


def apply_declared(specs: list[dict], declared: dict | None, inputs: dict) -> list[dict]:
    """Merge a user's input declaration (``compile(input_spec=...)`` / ``--input-spec``) into
    the derived spec: for each input, ``vocab`` / ``fields`` / ``padding_id`` of an id input,
    or ``id_columns`` ({column: vocab}) of a float tensor that carries ids. The data must
    agree with it; a contradiction is a DataError naming the column."""
    if not declared:
        return specs
    by_name = {s["name"]: s for s in specs}
    unknown = [k for k in declared if k not in by_name]
    if unknown:
        raise DataError(f"input_spec names input {unknown[0]!r}, which the model does not take "
                        f"(inputs: {', '.join(by_name)})")
    for name, decl in declared.items():
        spec, arr = by_name[name], np.asarray(inputs[name])
        if not isinstance(decl, dict):
            raise DataError(f"input_spec[{name!r}] must be a table of settings, got {type(decl).__name__}")
        if "id_columns" in decl:
            cols = {int(c): int(v) for c, v in dict(decl["id_columns"]).items()}
            for c, v in cols.items():
                if arr.ndim != 2 or not 0 <= c < arr.shape[1]:
                    raise DataError(f"input_spec[{name!r}]: id column {c} does not exist in data of shape "
                                    f"{list(arr.shape)}")
                col = arr[:, c]
                if col.size and (col.min() < 0 or col.max() >= v or np.any(col != np.floor(col))):
                    bad = col[(col < 0) | (col >= v) | (col != np.floor(col))][0]
                    raise DataError(f"input {name!r} column {c}: value {bad} is not an id in 0..{v - 1} "
                                    "as input_spec declares")
            merged = {e["column"]: e["vocab"] for e in spec.get("id_columns", [])}
            merged.update(cols)
            spec["id_columns"] = [{"column": c, "vocab": v} for c, v in sorted(merged.items())]
        for key in ("vocab", "fields", "padding_id"):
            if key in decl:
                if spec.get("kind") != "ids":
                    raise DataError(f"input_spec[{name!r}] sets {key!r} but {name!r} holds floats; "
                                    "declare id columns of a float tensor with id_columns")
                spec[key] = decl[key]
        if "vocab" in decl:
            vocab = list(decl["vocab"])
            nf = arr.shape[1] if arr.ndim >= 2 else 1
            if len(vocab) != nf:
                raise DataError(f"input_spec[{name!r}] lists {len(vocab)} vocabularies for {nf} field(s)")
            for j, v in enumerate(vocab):
                col = arr[:, j] if arr.ndim >= 2 else arr
                if col.size and (col.min() < 0 or col.max() >= v):
                    raise DataError(f"input {name!r} field {j}: id {int(col.max())} is outside the declared "
                                    f"vocabulary 0..{v - 1}")
    return specs
