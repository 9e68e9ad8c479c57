"""LiteRT (.tflite) export of a compressed Program.

    litert_torch: one signature per batch size the target lists ("b1", "b64", ...),
      static shapes (litert-torch 0.10 fails on dynamic shapes), weights shared
    [-> ai-edge-quantizer on FULLY_CONNECTED: weight-only int8 (the plan's
        LinearInt8Weights; reproduces the plan's per-channel codes), or dynamic int8]

Row-quantized tables are stored as the plan's codes and dequantized by plain
ops in the graph (see torch_modules.LiteRTExportModule): exact, and runnable by
every TFLite runtime including ``tflite_runtime`` (no int4 tensors, no hybrid
gathers). Inputs keep their names; int64 ids become int32 inputs.

Measured facts behind these choices: shared/notes/toolchain.md.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os

import torch

from .recipe import recipe
from .torch_modules import LiteRTExportModule, example_args, fp32_tables_note


def versions() -> dict:
    from importlib.metadata import version
    out = {"torch": torch.__version__}
    for dist in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        try:
            out[dist] = version(dist)
        except Exception:   # noqa: BLE001
            pass
    return out


def signature_name(batch: int) -> str:
    return f"b{int(batch)}"


@contextlib.contextmanager
def _quiet():
    """litert-torch and the quantizer print progress to stdout/stderr; keep it out of ours."""
    out, err = io.StringIO(), io.StringIO()
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        logging.root.setLevel(level)
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old


def _repeat_rows(args: tuple, batch: int) -> tuple:
    n = args[0].shape[0]
    idx = torch.arange(batch) % n
    return tuple(a[idx].contiguous() for a in args)


def _quantize_fc(data: bytes, mode: str) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer
    qz = quantizer.Quantizer(data)
    fc = qtyping.TFLOperationName.FULLY_CONNECTED
    if mode == "weights":
        qz.add_weight_only_config(regex=".*", operation_name=fc, num_bits=8)
    else:
        qz.add_dynamic_config(regex=".*", operation_name=fc, num_bits=8)
    return bytes(qz.quantize().quantized_model)


def export_litert(program, plan, *, example: dict, batch_sizes=(1, 64, 256)) -> tuple[bytes, dict]:
    """(.tflite bytes, meta) for ``program`` compressed by ``plan``, with one
    signature per entry of ``batch_sizes``."""
    import litert_torch

    module = LiteRTExportModule(program).eval()
    names = list(program.graph["inputs"])
    args = example_args(program, example)
    sizes = sorted({int(b) for b in batch_sizes})
    qlin = program.quantized_linears()
    mode = program.linear_activation_mode()
    partial = qlin and len(qlin) < len([n for n in program.params if program.roles.get(n) == "linear"])
    if partial:     # ai-edge-quantizer selects ops by type here; quantizing all would touch layers the plan kept fp32
        qlin = []
    steps, approx = recipe(program, plan, "litert", quantized_linears=qlin)
    if partial:
        approx.append("the plan quantizes only some Linear layers: LiteRT keeps every Linear weight fp32 "
                      "(values as the plan computes them, not its size)")
    with _quiet(), torch.no_grad():
        conv = None
        for b in sizes:
            sample = dict(zip(names, _repeat_rows(args, b)))
            conv = (litert_torch if conv is None else conv).signature(signature_name(b), module,
                                                                      sample_kwargs=sample)
        data = bytes(conv.convert().model_content())
        if qlin:
            # static: the graph already rounds each Linear input with the plan's scale (ProgramModule's
            # fake quantization, ROUND is half-to-even as numpy's rint); weight-only int8 keeps it exact
            data = _quantize_fc(data, "dynamic" if mode == "dynamic" else "weights")
    meta = {
        "size_bytes": len(data),
        "precision": _precision(program, qlin, mode),
        "recipe": steps,
        "approximations": approx,
        "signatures": {signature_name(b): b for b in sizes},
        "inputs": [{"name": n, "dtype": "int32" if a.dtype == torch.int64 else "float32",
                    "shape": [None, *a.shape[1:]]} for n, a in zip(names, args)],
        "output": "output_0",
        # tflite_runtime 2.14 (numpy < 2) gives wrong results for dynamic-range int8 (measured)
        "tflite_runtime_ok": not (qlin and mode == "dynamic"),
        "runtime": "ai_edge_litert.interpreter.Interpreter (or tflite_runtime on numpy < 2)",
        "toolchain": versions(),
    }
    if module.fp32_tables:
        meta["notes"] = [fp32_tables_note(module.fp32_tables)]
    if not meta["tflite_runtime_ok"]:
        meta["tflite_runtime_limits"] = ["dynamic-range int8 FULLY_CONNECTED gives wrong results on "
                                         "tflite_runtime 2.14"]
    return data, meta


def _precision(program, qlin, mode) -> str:
    bits = program.table_bits()
    tables = f"tables int{'/int'.join(map(str, bits))} rows" if bits else "tables fp32"
    if not qlin:
        return f"{tables}, Linear fp32"
    acts = {"weights": "fp32 activations", "dynamic": "dynamic int8 activations",
            "static": "static int8 activations rounded in fp32 with the plan's scales"}
    return f"{tables}, Linear int8 weights + " + acts[mode]
