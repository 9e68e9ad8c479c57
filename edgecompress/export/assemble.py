"""A compile's bundle, assembled: the manifest and members of a program with its
reference I/O, and the metrics block its manifest carries.

Every function returns new dicts: compile() builds a draft to measure, then the
final manifest from the draft's parts and the measurements, never editing a
draft another object holds.
"""
from __future__ import annotations

import numpy as np
import torch

from ..graph.io import all_outputs_flat, metric_head
from ..graph.spec import apply_declared, input_spec as derive_input_spec
from ..graph.torch_exec import ProgramModule
from .bundle import program_members, provenance, reference_members

LONG = -1.2345678901234567e-123       # the longest repr of a float: placeholders size an upper bound
MIN_REFERENCE_ROWS = 4                # the parity check runs every op on at least this many rows
SIZE_SLACK = 64                       # bytes a search-time size adds: deflate is not monotone in its input
REFERENCE_SHARE = 0.005               # reference rows: about this share of the parameter bytes


def reference_rows(param_bytes: int, row_bytes: int, available: int) -> int:
    """How many reference rows a bundle carries: sized to the model (a small model's bundle would
    otherwise spend more on its parity rows than on some of its tables), at least
    MIN_REFERENCE_ROWS, at most the rows the host gives (compile's REFERENCE_ROWS)."""
    fit = int(param_bytes * REFERENCE_SHARE) // max(row_bytes, 1)
    return max(1, min(available, max(MIN_REFERENCE_ROWS, fit)))


def trim_reference(program, ref_inputs: dict, ref_out) -> tuple[dict, np.ndarray]:
    """The reference rows a bundle of ``program`` carries (``reference_rows``): inputs and flat outputs."""
    available = len(next(iter(ref_inputs.values()))) if ref_inputs else 0
    if not available:
        return ref_inputs, np.asarray(ref_out)
    out = np.asarray(ref_out).reshape(available, -1)
    row_bytes = sum(np.asarray(v[:1]).nbytes for v in ref_inputs.values()) + out[:1].nbytes
    n = reference_rows(program.param_bytes(), row_bytes, available)
    return {k: np.asarray(v)[:n] for k, v in ref_inputs.items()}, out[:n].reshape(-1)


def reference_outputs(model, inputs: dict, call) -> np.ndarray:
    """Every head of ``model`` (an nn.Module or a ProgramModule) on ``inputs``, flat (the bundle's reference layout)."""
    tensors = {k: torch.as_tensor(inputs[k]) for k in call.names}
    with torch.no_grad():
        if isinstance(model, ProgramModule):
            out = model(*[tensors[k] for k in call.names])
        else:
            out = call(model, tensors)
    return all_outputs_flat(out, len(next(iter(tensors.values()))))


def assemble(model, program, plan, tgt, ds, ref_inputs, ref_out, tol, oov_rows, declared=None,
             reproducible=False) -> tuple[dict, dict]:
    """Manifest (without metrics) and members of the bundle for a program."""
    spec = apply_declared(derive_input_spec(program, ds.inputs, ds.vocab, ds.meta, oov_rows), declared, ds.inputs)
    params, consts, members = program_members(program)
    ref_inputs, ref_out = trim_reference(program, ref_inputs, ref_out)
    ref_manifest, ref_members = reference_members(ref_inputs, ref_out)
    manifest = {
        "model": {"class": type(model).__name__, "task": ds.task,
                  "output": metric_head(program)["form"] if program.outputs else "logit",
                  "outputs": program.outputs, "metric_output": program.metric_output,
                  "call": program.call.to_dict() if program.call is not None else None},
        "inputs": spec,
        "graph": program.graph,
        "params": params,
        "constants": consts,
        "reference": {**ref_manifest, "tolerance": tol},
        "target": {"name": tgt.name, "backends": list(tgt.backends), "arch": tgt.arch},
        "plan": [c.to_dict() for c in plan],
        "provenance": provenance(model, plan, reproducible=reproducible),
    }
    return manifest, {**members, **ref_members}


def metrics_block(before, after, fp32_bytes, param_bytes, parity, vs_source, roles, latency, latency_source,
                  lat_batch, by_backend) -> dict:
    """manifest["metrics"]: figures on test rows, parity, fidelity, latency estimates (per backend)."""
    return {"host": {"before": before, "after": after, "fp32_param_bytes": fp32_bytes, "param_bytes": param_bytes,
                     "parity": parity, "vs_source": vs_source, "data_roles": roles},
            "latency_estimate_s": latency, "latency_model": latency_source,
            "latency_by_backend": by_backend, "latency_batch": int(lat_batch)}


def placeholder_metrics(before, fp32_bytes, param_bytes, roles, *, backends, batches, lat_batch, source_chars,
                        reference_values, fidelity_rows) -> dict:
    """The metrics block with a longest float (of random digits) in every measured place and random
    text for the latency source: search-time sizes bound the numpy bundle written later (its
    manifest carries these figures). Random, not repeated: the manifest is deflated, and a repeated
    placeholder would compress better than the real figures (SIZE_SLACK covers the rest)."""
    rng = np.random.default_rng(0)

    def long():
        while True:
            x = float(f"-1.{''.join(map(str, rng.integers(0, 10, 16)))}e-123")
            if len(repr(x)) == len(repr(LONG)):
                return x

    def text():
        return "".join(chr(c) for c in rng.integers(97, 123, source_chars))
    after = {k: (long() if isinstance(v, float) else v) for k, v in before.items()}
    return metrics_block(
        before, after, fp32_bytes, param_bytes,
        {"backend": "numpy", "max_abs_diff": long(), "tolerance": long(), "ok": False, "n": reference_values},
        {b: {"rows": fidelity_rows, "max_abs_diff": long(), "mean_abs_diff": long()} for b in backends}, roles,
        {str(b): long() for b in batches}, text(), lat_batch,
        {b: {"source": text(), "model": text(), "s": {str(x): long() for x in batches}} for b in backends})
