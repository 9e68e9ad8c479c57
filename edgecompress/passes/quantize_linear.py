"""int8 weights for Linear layers: symmetric, one scale per output channel."""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class LinearInt8Weights(PassConfig):
    NAME = "linear_int8_weights"
    VERSION = 1
    min_params: int = 0      # skip layers smaller than this (not worth the scales)


def quantize_channels(w: np.ndarray):
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale, codes.astype(np.float32) * scale[:, None]


@register(LinearInt8Weights)
def quantize_linear_(program, config: LinearInt8Weights, filter_fn):
    from ..graph import StoredParam
    for name, p in list(program.params.items()):
        role = program.roles.get(name)
        if role != "linear" or p.kind != "fp32" or not filter_fn(name, role):
            continue
        w = p.arrays["data"]
        if w.ndim != 2 or w.size < config.min_params:
            continue
        codes, scale, deq = quantize_channels(w)
        program.params[name] = StoredParam(
            "channel_int8", {"codes": codes, "scale": scale}, p.shape, 8,
            info={"pass": config.NAME, "max_abs_error": float(np.abs(deq - w).max()) if w.size else 0.0,
                  "bytes_before": p.nbytes})
    return program
