"""Row-wise quantization of embedding tables: int8 / int4 / int2 codes + fp16
scale and bias per row (FBGEMM's fused-rowwise layout, 4 bytes of metadata per
row: d*bits/8 + 4 bytes a row).

Scale and bias are rounded to fp16 BEFORE the codes are computed, so the codes
are optimal for the values the device will actually use. ``clip_search``
shrinks each row's [min, max] range greedily while the row's L2 error falls
(Guan et al. 2019, arXiv 1911.02079): it helps most at 4 and 2 bits."""
from __future__ import annotations

import dataclasses

import numpy as np

from edgecompress_runtime.params import pack_bits

from .base import ExportStep, ExportView, PassConfig, export_hook, register


@dataclasses.dataclass(frozen=True)
class EmbeddingRowwiseQuant(PassConfig):
    NAME = "embedding_rowwise_quant"
    VERSION = 1
    bits: int = 8
    tables: tuple | None = None    # names; None = every embedding table
    clip_search: bool = False

    def __post_init__(self):
        self.check_choice("bits", (8, 4, 2))
        self.check_names("tables")
        self.check_choice("clip_search", (False, True))


def _fake_quant(w, lo, hi, levels):
    scale = ((hi - lo) / levels).astype(np.float16).astype(np.float32)
    bias = lo.astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint((w - bias[:, None]) / safe[:, None]), 0, levels)
    return codes, scale, bias, codes * scale[:, None] + bias[:, None]


def _clip_search(w, levels, steps=12, frac=0.02):
    """Greedy per-row shrinking of [lo, hi]: at each step try moving lo up or
    hi down by ``frac`` of the original range; keep the better move for rows
    whose error drops, freeze rows whose error would rise."""
    lo, hi = w.min(axis=1), w.max(axis=1)
    delta = (hi - lo) * frac
    err = ((_fake_quant(w, lo, hi, levels)[3] - w) ** 2).sum(1)
    active = np.ones(len(w), bool)
    for _ in range(steps):
        if not active.any():
            break
        e_lo = ((_fake_quant(w, lo + delta, hi, levels)[3] - w) ** 2).sum(1)
        e_hi = ((_fake_quant(w, lo, hi - delta, levels)[3] - w) ** 2).sum(1)
        take_lo = active & (e_lo < err) & (e_lo <= e_hi)
        take_hi = active & (e_hi < err) & ~take_lo
        lo = np.where(take_lo, lo + delta, lo)
        hi = np.where(take_hi, hi - delta, hi)
        err = np.where(take_lo, e_lo, np.where(take_hi, e_hi, err))
        active &= take_lo | take_hi
    return lo, hi


def quantize_rows(w: np.ndarray, bits: int, clip_search: bool = False, lo=None, hi=None):
    """fp32 [R, D] -> (packed codes, fp16 scale [R], fp16 bias [R], dequantized). ``lo``/``hi``
    (float32 [R]): a given range per row (QAT's learned ranges) instead of min/max or clip search."""
    levels = (1 << bits) - 1
    if lo is not None:
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    elif clip_search and len(w):
        lo, hi = _clip_search(w, levels)
    else:
        lo, hi = w.min(axis=1), w.max(axis=1)
    codes, s32, b32, deq = _fake_quant(w, lo, hi, levels)
    scale = s32.astype(np.float16)
    bias = b32.astype(np.float16)
    return pack_bits(codes.astype(np.uint8), bits), scale, bias, deq.astype(np.float32)


@register(EmbeddingRowwiseQuant)
def quantize_embeddings_(program, config: EmbeddingRowwiseQuant, ctx, filter_fn):
    for name in program.tables():
        p = program.params[name]
        if p.kind != "fp32" or not filter_fn(name, "embedding"):
            continue
        if config.tables is not None and name not in config.tables:
            continue
        w = p.arrays["data"]
        codes, scale, bias, deq = quantize_rows(w, config.bits, config.clip_search)
        extra = {k: v for k, v in p.arrays.items() if k != "data"}     # remap / proj stay
        info = {**p.info, "bits": config.bits, "clip_search": config.clip_search,
                "rms_error": float(np.sqrt(np.mean((deq - w) ** 2))) if w.size else 0.0,
                "bytes_before": p.nbytes}
        program.params[name] = p.replace(kind="rowwise", arrays={"codes": codes, "scale": scale, "bias": bias,
                                                                 **extra}, bits=config.bits, info=info)
        program.log.append({"pass": config.NAME, "param": name, "bits": config.bits,
                            "bytes": [p.nbytes, program.params[name].nbytes]})
    return program


_EXECUTORCH_KERNELS = {8: "embedding_byte", 4: "embedding_4bit", 2: "embedding_2bit"}


@export_hook(EmbeddingRowwiseQuant)
def export_rowwise(config: EmbeddingRowwiseQuant, view: ExportView) -> ExportStep:
    """Both formats reproduce the plan's codes, scales and biases exactly."""
    bits = config.bits
    if view.fmt == "executorch":
        return ExportStep(f"{bits}-bit rows with the plan's codes, per-row scale and float zero point "
                          f"-> quantized_decomposed::{_EXECUTORCH_KERNELS[bits]} (exact)", True)
    return ExportStep(f"{bits}-bit rows with the plan's codes stored as int8"
                      + (" (packed, unpacked with FLOOR arithmetic)" if bits < 8 else "")
                      + "; GATHER + CAST + MUL/ADD with per-row scale and bias (exact)", True)
