"""Embedding row pruning by frequency: the rows used least in the training data
share one fallback row. A remap array (logical row -> stored row) keeps ids
valid, so apps send the same ids as before. The fallback row is the
frequency-weighted mean of the rows it replaces."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class EmbeddingRowPrune(PassConfig):
    NAME = "embedding_row_prune"
    VERSION = 1
    keep_ratio: float = 0.5
    tables: tuple | None = None
    NEEDS_TRAIN_DATA = True        # row frequencies come from training rows

    def __post_init__(self):
        self.check_range("keep_ratio", 0, 1, lo_open=True)
        self.check_names("tables")


def remap_dtype(stored_rows: int):
    return np.int16 if stored_rows <= np.iinfo(np.int16).max else np.int32


def keep_rows(p, kept: np.ndarray, fallback: np.ndarray, info: dict):
    """The pruned form of table ``p`` (fp32 data [R, d]): rows ``kept`` (sorted ids) then the
    fallback row every other id maps to, and the remap (logical row -> stored row). Shared
    with gradual_prune.py, so both write the same shapes."""
    w = p.arrays["data"]
    keep = len(kept)
    remap = np.full(w.shape[0], keep, dtype=remap_dtype(keep + 1))
    remap[kept] = np.arange(keep, dtype=remap.dtype)
    stored = np.concatenate([w[kept], np.asarray(fallback, np.float32)[None, :]])
    return p.replace(arrays={**p.arrays, "data": stored, "remap": remap},
                     info={**p.info, **info})


@register(EmbeddingRowPrune)
def prune_rows_(program, config: EmbeddingRowPrune, ctx, filter_fn):
    for name in program.tables():
        p = program.params[name]
        if config.tables is not None and name not in config.tables or not filter_fn(name, "embedding"):
            continue
        if p.kind != "fp32" or "remap" in p.arrays:
            raise CompileError(f"embedding_row_prune on {name!r}: prune rows before quantizing, and only once")
        counts = ctx.id_counts(program, name)
        if counts is None:
            program.log.append({"pass": config.NAME, "param": name, "skipped": "no training data traces to it"})
            continue
        w = p.arrays["data"]
        rows = w.shape[0]
        keep = max(1, int(round(rows * config.keep_ratio)))
        if keep >= rows:
            continue
        # most frequent first; ties broken by row id so the result is reproducible
        # padding rows are kept whatever their count: they must stay exactly what they are (zero)
        pinned = np.zeros(rows, dtype=bool)
        pinned[[r for r in program.padding_rows.get(name, []) if r < rows]] = True
        order = np.lexsort((np.arange(rows), -counts, ~pinned))
        kept = np.sort(order[:keep])
        dropped = order[keep:]
        weights = counts[dropped].astype(np.float64) + 1e-3
        fallback = (w[dropped] * weights[:, None]).sum(0) / weights.sum()
        covered = float(counts[kept].sum() / max(counts.sum(), 1))
        program.params[name] = keep_rows(p, kept, fallback, {"keep_ratio": config.keep_ratio, "kept_rows": keep,
                                                             "traffic_covered": covered})
        program.log.append({"pass": config.NAME, "param": name, "kept_rows": keep, "rows": rows,
                            "traffic_covered": covered, "bytes": [p.nbytes, program.params[name].nbytes]})
    return program
