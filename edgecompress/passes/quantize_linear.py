"""int8 Linear layers: symmetric per-output-channel weights, and optionally
int8 activations, dynamic (scale per row at run time) or static (one scale
calibrated on data). Three configs, one function. Convolution weights
(xDeepFM's CIN, CCPM) get the same per-output-channel int8 storage (ConvInt8Weights)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class LinearInt8Weights(PassConfig):
    NAME = "linear_int8_weights"
    VERSION = 1
    min_params: int = 0      # skip layers smaller than this (not worth the scales)


@dataclasses.dataclass(frozen=True)
class ConvInt8Weights(PassConfig):
    """Weight-only int8 for convolution kernels [out, in/groups, *k], one scale per output channel;
    the device dequantizes them once at load, as Linear weights."""
    NAME = "conv_int8_weights"
    VERSION = 1
    min_params: int = 0


@dataclasses.dataclass(frozen=True)
class LinearInt8Dynamic(PassConfig):
    NAME = "linear_int8_dynamic"
    VERSION = 1
    min_params: int = 0


@dataclasses.dataclass(frozen=True)
class LinearInt8Static(PassConfig):
    NAME = "linear_int8_static"
    VERSION = 1
    min_params: int = 0
    percentile: float = 100.0    # of |activation| on calibration data (100 = max, as MinMax observers)


def quantize_channels(w: np.ndarray):
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale, codes.astype(np.float32) * scale[:, None]


def _activation_scales(program, weights, percentile):
    """Per Linear weight: the percentile of |input| over calibration rows,
    measured by running the fp32 program in numpy with input capture."""
    from edgecompress_runtime.backends.numpy_graph import GraphExecutor
    data = program.context.get("calibration_data") or program.context.get("train_data")
    if data is None:
        raise CompileError("linear_int8_static needs calibration data (compile(..., data=...))")
    n = min(len(data), 4096)
    feeds = {k: np.asarray(data.inputs[k][:n]) for k in program.input_names}
    params = {k: v.to_runtime(k) for k, v in program.params.items()}
    ex = GraphExecutor(program.graph, params, program.constants)
    want = {}
    for node in program.graph["nodes"]:
        if node["op"] == "linear" and node["args"][1]["p"] in weights:
            want[node["args"][0]["v"]] = node["args"][1]["p"]
    env = ex.run(feeds, keep=set(want))
    return {want[v]: float(np.percentile(np.abs(env[v]), percentile)) / 127.0 or 1.0 for v in want}


def _apply(program, config, filter_fn, act):
    chosen = []
    for name, p in program.params.items():
        if program.roles.get(name) != "linear" or p.kind != "fp32" or not filter_fn(name, "linear"):
            continue
        if p.arrays["data"].ndim == 2 and p.arrays["data"].size >= config.min_params:
            chosen.append(name)
    scales = _activation_scales(program, set(chosen), config.percentile) if act == "static" else {}
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
def quantize_linear_(program, config: LinearInt8Weights, filter_fn):
    return _apply(program, config, filter_fn, None)


@register(ConvInt8Weights)
def quantize_conv_(program, config: ConvInt8Weights, filter_fn):
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
def quantize_linear_dynamic_(program, config: LinearInt8Dynamic, filter_fn):
    return _apply(program, config, filter_fn, "dynamic")


@register(LinearInt8Static)
def quantize_linear_static_(program, config: LinearInt8Static, filter_fn):
    return _apply(program, config, filter_fn, "static")
