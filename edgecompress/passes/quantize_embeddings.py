"""Row-wise quantization of embedding tables: uint8 codes + fp16 scale and bias
per row (FBGEMM's fused-rowwise layout, 4 bytes of metadata per row).

Scale and bias are rounded to fp16 BEFORE the codes are computed, so the codes
are optimal for the values the device will actually use."""
from __future__ import annotations

import dataclasses

import numpy as np

from edgecompress_runtime.params import pack_bits

from ..errors import CompileError
from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class EmbeddingRowwiseQuant(PassConfig):
    NAME = "embedding_rowwise_quant"
    VERSION = 1
    bits: int = 8
    tables: tuple | None = None    # names; None = every embedding table


def quantize_rows(w: np.ndarray, bits: int):
    """fp32 [R, D] -> (packed codes, fp16 scale [R], fp16 bias [R], dequantized)."""
    levels = (1 << bits) - 1
    lo = w.min(axis=1)
    hi = w.max(axis=1)
    scale = ((hi - lo) / levels).astype(np.float16)
    bias = lo.astype(np.float16)
    s32 = scale.astype(np.float32)
    b32 = bias.astype(np.float32)
    safe = np.where(s32 > 0, s32, 1.0)
    codes = np.clip(np.rint((w - b32[:, None]) / safe[:, None]), 0, levels).astype(np.uint8)
    deq = codes.astype(np.float32) * s32[:, None] + b32[:, None]
    return pack_bits(codes, bits), scale, bias, deq


@register(EmbeddingRowwiseQuant)
def quantize_embeddings_(program, config: EmbeddingRowwiseQuant, filter_fn):
    if config.bits not in (8, 4, 2):
        raise CompileError(f"embedding_rowwise_quant: bits must be 8, 4 or 2, got {config.bits}")
    for name, p in list(program.params.items()):
        role = program.roles.get(name)
        if role != "embedding" or p.kind != "fp32" or not filter_fn(name, role):
            continue
        if config.tables is not None and name not in config.tables:
            continue
        w = p.arrays["data"]
        codes, scale, bias, deq = quantize_rows(w, config.bits)
        from ..graph import StoredParam
        program.params[name] = StoredParam(
            "rowwise", {"codes": codes, "scale": scale, "bias": bias}, p.shape, config.bits,
            info={"pass": config.NAME, "bits": config.bits,
                  "max_abs_error": float(np.abs(deq - w).max()) if w.size else 0.0,
                  "bytes_before": p.nbytes})
    return program
