"""ExecuTorch (.pte) export of a compressed Program.

    torch.export(ExecuTorchExportModule, dynamic batch 1..max_batch)
      [-> pt2e XNNPACK quantizer for the plan's int8 Linear layers]
      -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch()

Tables the plan row-quantized run on ExecuTorch's quantized embedding kernels
with the plan's codes (see torch_modules.py); every Linear, matmul and
elementwise op the XNNPACK partitioner takes runs on XNNPACK; the rest on the
portable kernels. The runtime must ``import executorch.kernels.quantized``
before loading (edgecompress_runtime's executorch backend does).

Measured facts behind these choices: shared/notes/toolchain.md.
"""
from __future__ import annotations

import re

import torch

from .recipe import recipe
from .torch_modules import ExecuTorchExportModule, example_args, fp32_tables_note


def versions() -> dict:
    from importlib.metadata import version
    out = {"torch": torch.__version__}
    for dist in ("executorch", "torchao"):
        try:
            out[dist] = version(dist)
        except Exception:   # noqa: BLE001 - missing metadata: leave it out
            pass
    return out


def _register_ops() -> None:
    # quantized_decomposed::embedding_byte/_4bit/_2bit and their out variants
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401


def _quantize_linears(ep, module, args, dynamic_shapes, names: list[str], mode: str):
    """pt2e with the XNNPACK quantizer on the plan's int8 Linear layers only."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=(mode != "static"))
    quantizer = XNNPACKQuantizer()
    all_linears = set(module.linears.keys())
    chosen = {n.replace(".", "__") for n in names}
    if chosen >= all_linears:
        quantizer.set_global(config)
    else:
        for key in sorted(chosen & all_linears):
            quantizer.set_module_name(f"linears.{key}", config)
    gm = prepare_pt2e(ep.module(), quantizer)
    with torch.no_grad():
        gm(*args)                                   # calibration (static) / observer init (dynamic)
    gm = convert_pt2e(gm)
    return torch.export.export(gm, args, dynamic_shapes=dynamic_shapes)


def export_executorch(program, plan, *, example: dict, max_batch: int = 1024) -> tuple[bytes, dict]:
    """(.pte bytes, meta) for ``program`` compressed by ``plan``.

    ``example``: a few real input rows (>= 2; also the calibration data when
    the plan asks for static int8 activations). The batch dimension is dynamic
    in 1..``max_batch``; the runtime splits larger batches."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    _register_ops()
    module = ExecuTorchExportModule(program).eval()
    args = example_args(program, example)
    if args[0].shape[0] < 2:
        raise ValueError("export needs an example batch of at least 2 rows (batch 1 specialises the shape)")
    batch = torch.export.Dim("batch", min=1, max=int(max_batch))
    dynamic_shapes = tuple({0: batch} for _ in args)
    with torch.no_grad():
        ep = torch.export.export(module, args, dynamic_shapes={"args": dynamic_shapes})
        qlin = program.quantized_linears()
        mode = program.linear_activation_mode()
        if qlin:
            ep = _quantize_linears(ep, module, args, dynamic_shapes, qlin, mode)
        edge = to_edge_transform_and_lower(
            ep, partitioner=[XnnpackPartitioner()],
            # quantized_decomposed embedding ops are not core ATen: skip that check
            compile_config=EdgeCompileConfig(_check_ir_validity=False))
        ops = sorted({_op_name(n.target) for n in edge.exported_program().graph.nodes if n.op == "call_function"})
        et = edge.to_executorch()
    data = bytes(et.buffer)
    steps, approx = recipe(program, plan, "executorch")
    meta = {
        "size_bytes": len(data),
        "precision": _precision(program, qlin, mode),
        "recipe": steps,
        "approximations": approx,
        "method": "forward",
        "inputs": [{"name": n, "dtype": str(a.dtype).replace("torch.", ""), "shape": [None, *a.shape[1:]]}
                   for n, a in zip(program.graph["inputs"], args)],
        "batch": {"dynamic": True, "min": 1, "max": int(max_batch)},
        "ops": ops,
        "runtime": "executorch.runtime (import executorch.kernels.quantized first)",
        "toolchain": versions(),
    }
    if module.fp32_tables:
        meta["notes"] = [fp32_tables_note(module.fp32_tables)]
    return data, meta


def _op_name(target) -> str:
    text = str(target)        # "<EdgeOpOverload: aten.sum.dim_IntList>: schema = ..." or "aten.sym_size.int"
    m = re.match(r"<EdgeOpOverload: ([^>]+)>", text)
    return m.group(1) if m else getattr(target, "__name__", text)


def _precision(program, qlin, mode) -> str:
    bits = program.table_bits()
    tables = f"tables int{'/int'.join(map(str, bits))} rows" if bits else "tables fp32"
    if not qlin:
        return f"{tables}, Linear fp32"
    act = "static int8" if mode == "static" else "dynamic int8"
    return f"{tables}, Linear int8 weights + {act} activations (XNNPACK)"
