"""edgecompress.compile: model + data + target -> a verified bundle on disk.

    model -> lower (torch.export -> op set) -> plan -> passes -> bundle draft
          -> metrics and parity through the runtime -> atomic write -> re-verify
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import edgecompress_runtime
from edgecompress_runtime.model import Model

from .errors import CompileError, DataError
from .export.bundle import BundleDraft, program_members, provenance, reference_members
from .graph import forward_input_names, lower
from .graph.spec import input_spec
from .graph.torch_exec import ProgramModule
from .passes import DEFAULT_PLAN, apply_plan
from .targets import Target, load_target


REFERENCE_ROWS = 64
PARITY_TOL = {"fp32": 1e-5, "quantized": 1e-2}


@dataclass
class CompileResult:
    path: Path
    size_bytes: int
    metrics_before: dict
    metrics_after: dict
    parity: dict
    plan: list
    target: str
    param_bytes: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"bundle": str(self.path), "size_bytes": self.size_bytes, "target": self.target,
                "metrics_before": self.metrics_before, "metrics_after": self.metrics_after,
                "parity": self.parity, "plan": [c.to_dict() for c in self.plan]}


def _eval_view(data):
    """(Dataset whose inputs define the spec, evaluation function)."""
    from .metrics import evaluate_ctr, evaluate_retrieval
    if hasattr(data, "test_user"):          # RetrievalData: rank held-out items
        return data.train, lambda fn: evaluate_retrieval(fn, data)
    return data, lambda fn: evaluate_ctr(fn, data)


def _check_data(model, ds) -> None:
    names = forward_input_names(model)
    have = set(ds.inputs)
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(f"the data has no input {missing[0]!r} that the model's forward() takes; "
                        f"data inputs: {', '.join(sorted(have))}; forward() takes: {', '.join(names)}")
    extra = sorted(have - set(names))
    if extra:
        raise DataError(f"data input {extra[0]!r} is not an argument of the model's forward() "
                        f"({', '.join(names)})")
    for name, vocab in (ds.vocab or {}).items():
        arr = np.asarray(ds.inputs[name])
        if arr.size and arr.min() < 0:
            raise DataError(f"data input {name!r} holds negative ids")


def _torch_outputs(model, inputs: dict) -> np.ndarray:
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in inputs.items()})
    return out.detach().float().reshape(-1).numpy()


def compile(model: torch.nn.Module, *, target, data, output, plan=None, oov_rows=None,
            progress: bool = True) -> CompileResult:
    """Compile ``model`` for ``target`` (a profile name, path or Target).

    ``data``: held-out data (a Dataset, or RetrievalData for retrieval models)
    used for the input spec, metrics before/after and reference I/O.
    ``plan``: list of pass configs; None = the default (int8 rows + int8
    Linear weights); [] = fp32. ``oov_rows``: {input: row or [row per field]}
    to map unknown ids to a fallback row instead of refusing them.
    Nothing is written at ``output`` unless every check passes."""
    from .metrics import torch_predict_fn

    tgt = target if isinstance(target, Target) else load_target(target)
    plan = list(DEFAULT_PLAN if plan is None else plan)
    ds, evaluate = _eval_view(data)
    _check_data(model, ds)
    model = model.eval()
    n = len(ds)
    if n < 2:
        raise DataError("compile needs at least 2 rows of data")
    names = forward_input_names(model)
    example = {k: np.asarray(ds.inputs[k][:8]) for k in names}

    steps = _Progress(progress, 5)
    steps.say("lowering with torch.export")
    program = lower(model, example)
    fp32_bytes = program.param_bytes()
    steps.say("measuring the source model")
    before = evaluate(torch_predict_fn(model))
    steps.say(f"applying {len(plan)} pass(es)")
    apply_plan(program, plan)

    ref_inputs = {k: np.asarray(ds.inputs[k][:REFERENCE_ROWS]) for k in names}
    quantized = any(p.kind != "fp32" or set(p.arrays) - {"data"} for p in program.params.values())
    # the reference for a compressed bundle is the compressed program run by
    # torch (ProgramModule), an implementation independent of the numpy runtime
    host_ref = ProgramModule(program).eval() if quantized else model
    ref_out = _torch_outputs(host_ref, ref_inputs)
    tol = PARITY_TOL["quantized" if quantized else "fp32"]

    spec = input_spec(program, ds.inputs, ds.vocab, ds.meta, oov_rows)
    params, consts, members = program_members(program)
    ref_manifest, ref_members = reference_members(ref_inputs, ref_out)
    members.update(ref_members)
    manifest = {
        "model": {"class": type(model).__name__, "task": ds.task,
                  "output": getattr(model, "output", "logit" if ds.task == "ctr" else "score")},
        "inputs": spec,
        "graph": program.graph,
        "params": params,
        "constants": consts,
        "reference": {**ref_manifest, "tolerance": tol},
        "target": {"name": tgt.name, "backends": list(tgt.backends), "arch": tgt.arch},
        "plan": [c.to_dict() for c in plan],
        "provenance": provenance(model, plan),
    }
    steps.say("measuring the bundle through the runtime")
    draft = BundleDraft(manifest, members)
    runtime_model = Model(draft.as_runtime_bundle(), backend="numpy")
    parity = runtime_model.check_parity()
    if not parity["ok"]:
        raise CompileError(f"runtime output differs from the host model by {parity['max_abs_diff']:.3g} "
                           f"(tolerance {tol:g}); this is a bug in a pass or an op, please report it")
    after = evaluate(runtime_model.predict)
    manifest["metrics"] = {"host": {"before": before, "after": after, "fp32_param_bytes": fp32_bytes,
                                    "param_bytes": program.param_bytes(), "parity": parity}}

    steps.say(f"writing {output}")
    size = draft.write(output)
    written = edgecompress_runtime.load(output, backend="numpy")   # re-verify what is on disk
    final_parity = written.check_parity()
    steps.done()
    return CompileResult(path=Path(output), size_bytes=size, metrics_before=before, metrics_after=after,
                         parity=final_parity, plan=plan, target=tgt.name,
                         param_bytes={"fp32": fp32_bytes, "compressed": program.param_bytes()})


class _Progress:
    """A few named steps on one tqdm bar (tqdm hides it when not on a terminal)."""

    def __init__(self, enabled: bool, total: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc="compile", leave=False, disable=None if enabled else True,
                        bar_format="{desc}: {n}/{total} {postfix}")
        self.started = False

    def say(self, what: str):
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(what)

    def done(self):
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()
