"""How a plan's passes map onto what an export format can express.

The compressed Program already carries every pass's effect (quantized storage,
remap/proj arrays, pruned shapes); an exporter only decides how to *store and
compute* it. Per pass we record what the artifact does and whether that is the
plan's arithmetic exactly or an approximation (said in the manifest).
"""
from __future__ import annotations


def quantized_linears(program) -> list[str]:
    """Linear weights the plan stored quantized (ProgramModule dequantizes them)."""
    return sorted(n for n, p in program.params.items() if program.roles.get(n) == "linear" and p.kind != "fp32")


def linear_activation_mode(plan, program=None) -> str:
    """"weights" (weight-only, fp32 activations), "dynamic" or "static" int8
    activations: from the quantized Linear params' ``act`` when the program
    records it, else from the plan's Linear pass names (the last one wins)."""
    if program is not None:
        acts = {getattr(program.params[n], "act", None) for n in quantized_linears(program)}
        if "static" in acts:
            return "static"
        if "dynamic" in acts:
            return "dynamic"
        if acts:
            return "weights"
    mode = "weights"
    for c in plan:
        name = getattr(c, "NAME", "")
        if not name.startswith("linear_int8"):
            continue
        if "dynamic" in name:
            mode = "dynamic"
        elif "static" in name:
            mode = "static"
    return mode


def table_bits(program) -> list[int]:
    return sorted({int(p.bits) for n, p in program.params.items()
                   if program.roles.get(n) == "embedding" and p.kind == "rowwise"})


def steps(program, plan, fmt: str) -> tuple[list[dict], list[str]]:
    """(recipe steps, approximations) of ``plan`` in format ``fmt``."""
    out, approx = [], []
    qlin = quantized_linears(program)
    mode = linear_activation_mode(plan, program)
    for c in plan:
        name = getattr(c, "NAME", type(c).__name__)
        step = {"pass": name}
        if name == "embedding_rowwise_quant":
            bits = getattr(c, "bits", 8)
            if fmt == "executorch":
                kernel = {8: "embedding_byte", 4: "embedding_4bit", 2: "embedding_2bit"}[bits]
                step["as"] = (f"{bits}-bit rows with the plan's codes, per-row scale and float zero point "
                              f"-> quantized_decomposed::{kernel} (exact)")
            else:
                step["as"] = (f"{bits}-bit rows with the plan's codes stored as int8"
                              + (" (packed, unpacked with FLOOR arithmetic)" if bits < 8 else "")
                              + "; GATHER + CAST + MUL/ADD with per-row scale and bias (exact)")
            step["exact"] = True
        elif name.startswith("linear_int8") and qlin:
            if fmt == "executorch":
                if mode == "static":
                    step["as"] = "int8 per-channel weights, static int8 activations (XNNPACK quantizer, pt2e)"
                    step["exact"] = False
                    approx.append(f"{name}: XNNPACK recalibrates the static activation scales on the bundle's "
                                  "reference rows (and quantizes the outputs of quantized layers too); the "
                                  "plan's calibrated scales are not imposed")
                else:
                    step["as"] = "int8 per-channel weights, dynamic int8 activations (XNNPACK quantizer, pt2e)"
                    step["exact"] = mode == "dynamic"
                    if mode == "weights":
                        approx.append(f"{name}: the plan keeps Linear activations fp32; XNNPACK has no fast "
                                      "weight-only int8 Linear, so activations are quantized dynamically per row")
            else:
                if mode == "weights":
                    step["as"] = "int8 per-channel weights, fp32 activations (ai-edge-quantizer weight_only wi8)"
                    step["exact"] = True
                else:
                    step["as"] = "int8 per-channel weights, dynamic int8 activations (ai-edge-quantizer dynamic wi8)"
                    step["exact"] = mode == "dynamic"
                    if mode == "static":
                        approx.append(f"{name}: static int8 activations are approximated by dynamic int8 "
                                      "(LiteRT static quantization makes the model's inputs/outputs int8)")
        elif name == "conv_int8_weights":
            step["as"] = ("the plan's int8 kernel values stored dequantized as fp32 (exact values; the kernels "
                          "are not smaller in this format)")
            step["exact"] = True
        elif name.startswith("linear_int8"):
            step["as"] = "no Linear layer was quantized by this pass: nothing to express"
            step["exact"] = True
        else:
            step["as"] = ("already applied to the graph and weights (shapes, remap, projections, sparse "
                          "weights densified): exported as the host program computes it")
            step["exact"] = True
        out.append(step)
    return out, approx
