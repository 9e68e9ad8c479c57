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
    for table, (inp, fld) in program.index_sources.items():
        if table in program.params:
            rows = program.params[table].shape[0]
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
        specs.append(spec)
    return specs
