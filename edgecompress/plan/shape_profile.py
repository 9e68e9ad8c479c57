"""What each node of a program does per sample (ids gathered, MACs, output values),
measured once by running the program through the runtime's numpy executor. The cost
models (``plan/cost.py``) turn these counts into seconds."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph.program import IDS_ARG, TABLE_ARG

EMBEDDING_OPS = {"embedding", "embedding_bag", "embedding_bag_offsets"}


@dataclass
class ShapeProfile:
    """Per-sample work of each node, measured once by running the fp32 program."""

    ids: dict = field(default_factory=dict)          # node out -> ids gathered per sample
    macs: dict = field(default_factory=dict)         # node out -> bmm/matmul MACs per sample
    values: dict = field(default_factory=dict)       # node out -> output values per sample
    mm: dict = field(default_factory=dict)           # node out -> (a.ndim, m, k, n) of bmm/matmul (per sample)
    inputs: list = field(default_factory=list)       # (name, is_ids, id_fields, values per sample)
    tables: dict = field(default_factory=dict)       # table param -> ids gathered from it per sample


def shape_profile(program, batch: int = 8) -> ShapeProfile:
    feeds = {k: np.repeat(np.asarray(v)[:1], batch, axis=0) for k, v in program.example.items()}
    env = program.executor().run(feeds, keep=set())
    prof = ShapeProfile()
    for n in program.nodes():
        out = env.get(n.out)
        if isinstance(out, np.ndarray):
            prof.values[n.out] = out.size / batch
        if n.op in EMBEDDING_OPS:
            idx = env.get(n.value(IDS_ARG))
            prof.ids[n.out] = (idx.size / batch) if isinstance(idx, np.ndarray) else 1.0
            table = n.param(TABLE_ARG)
            if table is not None:
                prof.tables[table] = prof.tables.get(table, 0.0) + prof.ids[n.out]
        elif n.op in ("bmm", "matmul"):
            a = env.get(n.value(0))
            if isinstance(a, np.ndarray) and isinstance(out, np.ndarray):
                prof.macs[n.out] = a.size * out.shape[-1] / batch
                if a.ndim >= 2:
                    prof.mm[n.out] = (a.ndim, int(a.shape[-2]) if a.ndim >= 3 else 1, int(a.shape[-1]),
                                         int(out.shape[-1]))
    for name in program.graph.get("inputs", []):
        if name not in feeds:
            continue
        x = np.asarray(feeds[name])
        ids = x.dtype.kind in "iu"
        prof.inputs.append((name, ids, (int(x.shape[1]) if x.ndim >= 2 else 1) if ids else 0, x.size / batch))
    return prof

