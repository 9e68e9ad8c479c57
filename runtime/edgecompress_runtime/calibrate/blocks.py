"""Building blocks timed in tight loops: gathers, remap lookups, Linear layers, batched matmuls."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..params import Param
from .timing import linear_param, table_param, timer, zipf_ids

def measure_gathers(cfg, rng, progress=None) -> list[dict]:
    out = []
    for rows in cfg["gather_rows"]:
        for dim in cfg["gather_dims"]:
            for bits in cfg["gather_bits"]:
                p = table_param(rng, rows, dim, bits)
                for n in cfg["gather_n"]:
                    ids = zipf_ids(rng, rows, n)
                    out.append({"rows": rows, "dim": dim, "bits": bits, "n": n,
                                "s": timer(lambda: p.gather(ids), cfg)})
                p = None      # free this table before building the next
        if progress:
            progress(f"gathers: rows {rows} done")
    return out


def measure_remap(cfg, rng) -> list[dict]:
    """Extra seconds of the remap lookup that row-pruned tables do before the gather."""
    rows, dim = cfg["gather_rows"][1], 32
    p = table_param(rng, rows, dim, 32)
    remap = rng.integers(0, rows, size=rows).astype(np.int32)
    q = Param("t", "fp32", {"data": p.arrays["data"], "remap": remap}, (rows, dim))
    out = []
    for n in cfg["gather_n"]:
        ids = zipf_ids(rng, rows, n)
        out.append({"n": n, "s": max(timer(lambda: q.gather(ids), cfg) - timer(lambda: p.gather(ids), cfg), 0.0)})
    return out



def measure_linears(cfg, rng, batches, progress=None) -> list[dict]:
    out = []
    for act in cfg["linear_acts"]:
        for in_f in cfg["linear_sizes"]:
            for out_f in cfg["linear_sizes"]:
                p, bias = linear_param(rng, in_f, out_f, act)
                for b in batches:
                    x = rng.standard_normal((b, in_f), dtype=np.float32)
                    out.append({"in": in_f, "out": out_f, "act": act, "batch": int(b),
                                "s": timer(lambda: ops.linear(x, p, bias), cfg)})
        if progress:
            progress(f"linear {act} done")
    return out


def measure_bmm(cfg, rng, batches) -> list[dict]:
    out = []
    for m, k in cfg["bmm_mk"]:
        for b in batches:
            a = rng.standard_normal((b, m, k), dtype=np.float32)
            bt = np.ascontiguousarray(a.transpose(0, 2, 1))
            at = a.transpose(0, 2, 1)       # the graph feeds a transposed view, as DLRM does
            out.append({"batch": int(b), "m": m, "k": k, "n": m,
                        "s": timer(lambda: ops.bmm(a, at), cfg)})
            del bt
    return out

