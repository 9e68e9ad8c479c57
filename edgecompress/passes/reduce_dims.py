"""Per-table embedding dimension reduction (mixed dimensions, Ginart et al.
arXiv 1909.11810): a table W [R, D] becomes A [R, d] and a projection P [d, D]
with A @ P the best rank-d approximation of W (truncated SVD). The projection
brings rows back to the common width D that the interaction needs, so the rest
of the graph is unchanged."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class EmbeddingDimReduce(PassConfig):
    NAME = "embedding_dim_reduce"
    VERSION = 1
    dim: int = 16
    tables: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            self._fail("dim", "an integer >= 1")
        self.check_names("tables")


def low_rank(w: np.ndarray, d: int):
    """(A [R, d], P [d, D]) with A @ P the best rank-d fit of w (via the D x D Gram matrix,
    cheap for tall tables)."""
    gram = w.T.astype(np.float64) @ w.astype(np.float64)
    vals, vecs = np.linalg.eigh(gram)
    top = vecs[:, np.argsort(vals)[::-1][:d]]          # [D, d], orthonormal
    return (w @ top).astype(np.float32), np.ascontiguousarray(top.T).astype(np.float32)


def with_projection(p, a: np.ndarray, proj: np.ndarray, info: dict):
    """The reduced form of table ``p``: rows A [R, d] and the projection P [d, D] back to the
    full width. Shared with gradual_prune.py, so both write the same shapes."""
    return p.replace(arrays={**p.arrays, "data": a, "proj": proj},
                     info={**p.info, "dim": a.shape[1], "full_dim": proj.shape[1], **info})


@register(EmbeddingDimReduce)
def reduce_dims_(program, config: EmbeddingDimReduce, ctx, filter_fn):
    for name in program.tables():
        p = program.params[name]
        if config.tables is not None and name not in config.tables or not filter_fn(name, "embedding"):
            continue
        if p.kind != "fp32" or "proj" in p.arrays:
            raise CompileError(f"embedding_dim_reduce on {name!r}: reduce dims before quantizing, and only once")
        w = p.arrays["data"]
        full = w.shape[1]
        if config.dim >= full:
            continue
        a, proj = low_rank(w, config.dim)
        kept_energy = float((a ** 2).sum() / max((w.astype(np.float64) ** 2).sum(), 1e-30))
        program.params[name] = with_projection(p, a, proj, {"energy_kept": kept_energy})
        program.log.append({"pass": config.NAME, "param": name, "dim": [full, config.dim],
                            "energy_kept": kept_energy, "bytes": [p.nbytes, program.params[name].nbytes]})
    return program
