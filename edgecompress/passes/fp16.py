"""fp16 storage of embedding tables and Linear weights: half the bytes of fp32 and, unlike
int8 rows, no per-row scale and an error of at most 2**-11 relative per weight.

The runtime stores them as the ``fp16`` param kind and computes in fp32: a table gathers
fp16 rows and widens only those (it stays half size in memory), a Linear weight is widened
once on first use. The .pte keeps fp16 tables as fp16 constants (gather, then a cast of the
gathered rows) and Linear weights as fp32; the .tflite stores both as fp32 (exact, not smaller):
TFLite gathers no fp16 (an fp16 table costs a CAST of the whole table on every invoke,
measured in export/torch_modules.py).

Weights whose magnitude exceeds fp16's range (65504) would become inf: the pass refuses them."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from .base import ExportStep, ExportView, PassConfig, export_hook, register

FP16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class Fp16Weights(PassConfig):
    NAME = "fp16_weights"
    VERSION = 1
    embeddings: bool = True
    linear: bool = True
    tables: tuple | None = None    # names; None = every embedding table (when ``embeddings``)

    def __post_init__(self):
        self.check_choice("embeddings", (False, True))
        self.check_choice("linear", (False, True))
        self.check_names("tables")


def to_fp16(w: np.ndarray, name: str) -> np.ndarray:
    big = float(np.abs(w).max()) if w.size else 0.0
    if not np.isfinite(big) or big > FP16_MAX:
        raise CompileError(f"fp16_weights: {name!r} holds {big:g}, outside fp16's range (+-{FP16_MAX:g}); "
                           "leave it out of the pass (tables=[...] / linear=False)")
    return w.astype(np.float16)


def _chosen(program, config: Fp16Weights, filter_fn) -> list[str]:
    out = []
    for name, p in program.params.items():
        role = program.roles.get(name)
        if p.kind != "fp32":
            continue
        if role == "embedding" and config.embeddings and filter_fn(name, "embedding") and \
                (config.tables is None or name in config.tables):
            out.append(name)
        elif role == "linear" and config.linear and p.arrays["data"].ndim == 2 and filter_fn(name, "linear"):
            out.append(name)
    return out


@register(Fp16Weights)
def fp16_weights_(program, config: Fp16Weights, ctx, filter_fn):
    for name in _chosen(program, config, filter_fn):
        p = program.params[name]
        w = p.arrays["data"]
        half = to_fp16(w, name)
        arrays = {**p.arrays, "data": half}          # remap / proj stay as they are
        info = {**p.info, "max_abs_error": float(np.abs(half.astype(np.float32) - w).max()) if w.size else 0.0,
                "bytes_before": p.nbytes}
        program.params[name] = p.replace(kind="fp16", arrays=arrays, bits=16, info=info)
        program.log.append({"pass": config.NAME, "param": name, "bytes": [p.nbytes, program.params[name].nbytes]})
    return program


@export_hook(Fp16Weights)
def export_fp16(config: Fp16Weights, view: ExportView) -> ExportStep:
    if view.fmt == "executorch":
        return ExportStep("tables: the plan's fp16 rows as fp16 constants, gathered then CAST to fp32 (exact, "
                          "half the bytes); Linear weights: the fp16 values stored as fp32 (exact; XNNPACK "
                          "Linear takes fp32 weights)", True)
    return ExportStep("the plan's fp16 values stored as fp32 (exact values, not smaller: TFLite gathers no "
                      "fp16 rows, and an fp16 table would cost a CAST of the whole table per invoke)", True)
