"""Unstructured magnitude pruning of Linear weights with sparse (CSR) storage.

Kept only where it measurably pays: a layer is stored sparse only when its CSR
bytes are smaller than its dense bytes; otherwise its zeros are kept dense (the
pass still records the measured sparsity). On the device the numpy runtime
densifies once at load, so the win is bundle size and download, not latency."""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class LinearSparsePrune(PassConfig):
    NAME = "linear_sparse_prune"
    VERSION = 1
    sparsity: float = 0.5
    min_params: int = 1024

    def __post_init__(self):
        self.check_range("sparsity", 0, 1, hi_open=True)
        self.check_range("min_params", 0, float("inf"))


def to_csr(w: np.ndarray):
    rows, cols = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int32)
    np.add.at(indptr, rows + 1, 1)
    indptr = np.cumsum(indptr).astype(np.int32)
    index_dtype = np.int16 if w.shape[1] <= np.iinfo(np.int16).max else np.int32
    return w[rows, cols].astype(np.float32), cols.astype(index_dtype), indptr


@register(LinearSparsePrune)
def sparse_prune_(program, config: LinearSparsePrune, ctx, filter_fn):
    for name, p in list(program.params.items()):
        if program.roles.get(name) != "linear" or p.kind != "fp32" or not filter_fn(name, "linear"):
            continue
        w = p.arrays["data"]
        if w.ndim != 2 or w.size < config.min_params:
            continue
        cut = np.quantile(np.abs(w), config.sparsity)
        pruned = np.where(np.abs(w) > cut, w, 0).astype(np.float32)
        data, indices, indptr = to_csr(pruned)
        csr_bytes = data.nbytes + indices.nbytes + indptr.nbytes
        if csr_bytes < pruned.nbytes:
            program.params[name] = p.replace(kind="csr", arrays={"data": data, "indices": indices, "indptr": indptr},
                                             info={**p.info, "sparsity": config.sparsity, "stored": "csr"})
        else:
            program.params[name] = p.replace(arrays={"data": pruned},
                                             info={**p.info, "sparsity": config.sparsity,
                                                   "stored": "dense (CSR would not be smaller)"})
        program.log.append({"pass": config.NAME, "param": name, "sparsity": config.sparsity,
                            "bytes": [p.nbytes, program.params[name].nbytes]})
    return program
