"""int8 Linear layers: symmetric per-output-channel weights, and optionally
int8 activations, dynamic (scale per row at run time) or static (one scale
calibrated on data). Three configs, one function. Convolution weights
(xDeepFM's CIN, CCPM) get the same per-output-channel int8 storage (ConvInt8Weights)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from ..graph.program import WEIGHT_ARG
from .base import ExportStep, ExportView, PassConfig, export_hook, register


@dataclasses.dataclass(frozen=True)
class LinearInt8Weights(PassConfig):
    NAME = "linear_int8_weights"
    VERSION = 1
    min_params: int = 0      # skip layers smaller than this (not worth the scales)

    def __post_init__(self):
        self.check_range("min_params", 0, float("inf"))


@dataclasses.dataclass(frozen=True)
class ConvInt8Weights(PassConfig):
    """Weight-only int8 for convolution kernels [out, in/groups, *k], one scale per output channel;
    the device dequantizes them once at load, as Linear weights."""
    NAME = "conv_int8_weights"
    VERSION = 1
    min_params: int = 0

    def __post_init__(self):
        self.check_range("min_params", 0, float("inf"))


@dataclasses.dataclass(frozen=True)
class LinearInt8Dynamic(PassConfig):
    NAME = "linear_int8_dynamic"
    VERSION = 1
    min_params: int = 0

    def __post_init__(self):
        self.check_range("min_params", 0, float("inf"))


@dataclasses.dataclass(frozen=True)
class LinearInt8Static(PassConfig):
    NAME = "linear_int8_static"
    VERSION = 1
    min_params: int = 0
    percentile: float = 100.0    # of |activation| on calibration data (100 = max, as MinMax observers)

    def __post_init__(self):
        self.check_range("min_params", 0, float("inf"))
        self.check_range("percentile", 0, 100, lo_open=True)


def quantize_channels(w: np.ndarray):
    from edgecompress_runtime.params import quantize_channels as runtime_form   # the runtime owns the format
    codes, scale = runtime_form(w)
    return codes, scale, codes.astype(np.float32) * scale[:, None]


def _activation_scales(program, weights, percentile, ctx):
    """Per Linear weight: the percentile of |input| over calibration rows,
    measured by running the fp32 program in numpy with input capture."""
    data = ctx.calibration_rows()
    if data is None:
        raise CompileError("linear_int8_static needs calibration data (compile(..., data=...))")
    n = min(len(data), 4096)
    feeds = {k: np.asarray(data.inputs[k][:n]) for k in program.input_names}
    want = {node.value(0): node.param(WEIGHT_ARG) for node in program.nodes_of("linear")
            if node.param(WEIGHT_ARG) in weights}
    env = program.executor().run(feeds, keep=set(want))
    return {want[v]: float(np.percentile(np.abs(env[v]), percentile)) / 127.0 or 1.0 for v in want}


def _apply(program, config, ctx, filter_fn, act):
    chosen = []
    for name, p in program.params.items():
        if program.roles.get(name) != "linear" or p.kind != "fp32" or not filter_fn(name, "linear"):
            continue
        if p.arrays["data"].ndim == 2 and p.arrays["data"].size >= config.min_params:
            chosen.append(name)
    scales = _activation_scales(program, set(chosen), config.percentile, ctx) if act == "static" else {}
    for name in chosen:
        p = program.params[name]
        w = p.arrays["data"]
        codes, scale, deq = quantize_channels(w)
        arrays = {"codes": codes, "scale": scale}
        if act == "static":
            arrays["act_scale"] = np.array([scales[name]], dtype=np.float32)
        program.params[name] = p.replace(kind="channel_int8", arrays=arrays, bits=8, act=act,
                                         info={**p.info, "activations": act or "fp32",
                                               "max_abs_error": float(np.abs(deq - w).max()) if w.size else 0.0,
                                               "bytes_before": p.nbytes})
        program.log.append({"pass": config.NAME, "param": name, "bytes": [p.nbytes, program.params[name].nbytes]})
    return program


@register(LinearInt8Weights)
def quantize_linear_(program, config: LinearInt8Weights, ctx, filter_fn):
    return _apply(program, config, ctx, filter_fn, None)


@register(ConvInt8Weights)
def quantize_conv_(program, config: ConvInt8Weights, ctx, filter_fn):
    for name, p in list(program.params.items()):
        if program.roles.get(name) != "conv" or p.kind != "fp32" or not filter_fn(name, "conv"):
            continue
        w = p.arrays["data"]
        if w.size < max(config.min_params, 1):
            continue
        codes, scale, deq = quantize_channels(w.reshape(w.shape[0], -1))    # stored [out, in*k]
        program.params[name] = p.replace(kind="channel_int8", arrays={"codes": codes, "scale": scale}, bits=8,
                                         info={**p.info, "max_abs_error": float(np.abs(deq - w.reshape(deq.shape)).max()),
                                               "bytes_before": p.nbytes})
        program.log.append({"pass": config.NAME, "param": name, "bytes": [p.nbytes, program.params[name].nbytes]})
    return program


@register(LinearInt8Dynamic)
def quantize_linear_dynamic_(program, config: LinearInt8Dynamic, ctx, filter_fn):
    return _apply(program, config, ctx, filter_fn, "dynamic")


@register(LinearInt8Static)
def quantize_linear_static_(program, config: LinearInt8Static, ctx, filter_fn):
    return _apply(program, config, ctx, filter_fn, "static")


# --- how app artifacts express these passes ----------------------------------------

@export_hook(LinearInt8Weights, LinearInt8Dynamic, LinearInt8Static)
def export_linear_int8(config, view: ExportView) -> ExportStep:
    """XNNPACK (ExecuTorch) and ai-edge-quantizer (LiteRT) each quantize Linear layers their own
    way from the program's per-channel weights; where that differs from the plan, say how."""
    if not view.program.quantized_linears():
        return ExportStep("no Linear layer was quantized by this pass: nothing to express", True)
    if not view.quantized_linears:
        return ExportStep("Linear weights kept as their dequantized fp32 values, fp32 activations",
                          view.mode == "weights")
    return (_executorch_linear if view.fmt == "executorch" else _litert_linear)(config.NAME, view.mode)


def _executorch_linear(name: str, mode: str) -> ExportStep:
    if mode == "static":
        return ExportStep("int8 per-channel weights, static int8 activations (XNNPACK quantizer, pt2e)", False,
                          (f"{name}: XNNPACK recalibrates the static activation scales on the bundle's "
                           "reference rows (and quantizes the outputs of quantized layers too); the "
                           "plan's calibrated scales are not imposed",))
    approx = () if mode == "dynamic" else (
        f"{name}: the plan keeps Linear activations fp32; XNNPACK has no fast "
        "weight-only int8 Linear, so activations are quantized dynamically per row",)
    return ExportStep("int8 per-channel weights, dynamic int8 activations (XNNPACK quantizer, pt2e)",
                      mode == "dynamic", approx)


def _litert_linear(name: str, mode: str) -> ExportStep:
    if mode == "weights":
        return ExportStep("int8 per-channel weights, fp32 activations (ai-edge-quantizer weight_only wi8)", True)
    if mode == "static":    # LiteRT static quantization would make the model's inputs/outputs int8
        return ExportStep("int8 per-channel weights (ai-edge-quantizer weight_only wi8); static int8 activations "
                          "rounded with the plan's scales by DIV + ROUND (half-to-even) + clamp + MUL in fp32 "
                          "(exact values, fp32 compute)", True)
    return ExportStep("int8 per-channel weights, dynamic int8 activations (ai-edge-quantizer dynamic wi8)", True)


@export_hook(ConvInt8Weights)
def export_conv_int8(config, view: ExportView) -> ExportStep:
    return ExportStep("the plan's int8 kernel values stored dequantized as fp32 (exact values; the kernels "
                      "are not smaller in this format)", True)
