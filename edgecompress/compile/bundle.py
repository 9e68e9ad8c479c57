"""The plan chosen and applied, the bundle measured through the runtime, app artifacts
added, and the result written and re-verified.

Each step returns new dicts: the draft bundle the runtime measures is never
edited afterwards; the final manifest is built from its parts and the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import edgecompress_runtime
from edgecompress_runtime.bundle_writer import bundle_size
from edgecompress_runtime.model import Model

from ..errors import BudgetError, CompileError
from ..export.assemble import SIZE_SLACK, assemble, metrics_block, placeholder_metrics, reference_outputs, \
    trim_reference
from ..export.bundle import BundleDraft
from ..graph.io import head_logits, output_diff
from ..graph.torch_exec import ProgramModule
from ..passes import apply_plan
from ..plan.fit_formats import describe_exports, export_formats, search_within_budgets
from ..plan.format_size import FormatSizes
from ..plan.latency import estimates_by_backend
from ..plan.search import Planner
from .request import CompileRequest
from .result import CompileResult
from .source import Source

FIDELITY_ROWS = 1000          # rows the bundle is compared with the source model on (vs_source)
PARITY_TOL = {"fp32": 1e-5, "quantized": 1e-2}


@dataclass
class Chosen:
    plan: list
    program: object
    search: object = None
    exported: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)    # app formats no plan fits (left out with a note)


def choose(req: CompileRequest, src: Source, steps, latency_model, app_formats, explicit_formats,
           ref_inputs) -> Chosen:
    if req.explicit:
        steps.say(f"applying {len(src.plan)} pass(es)")
        program = apply_plan(src.program.copy(), src.plan, src.ctx)
        exported = export_formats(app_formats, program, src.plan, req.target, ref_inputs) \
            if req.memory is not None and app_formats else {}
        return Chosen(plan=list(src.plan), program=program, exported=exported)
    steps.say("searching plans under the budgets")
    planner = Planner(src.program, metric=req.metric, evaluate_fn=req.evaluate_fast,
                      size_fn=_size_fn(req, src, latency_model, app_formats, ref_inputs), latency=latency_model,
                      latency_batch=req.latency_batch, memory_budget=req.memory, latency_budget=req.latency,
                      tolerance=req.tolerance, progress=req.progress, context=src.ctx, train_budget=req.train_budget,
                      format_sizes=FormatSizes(app_formats) if app_formats else None)
    search, exported = search_within_budgets(planner, target=req.target, reference_inputs=ref_inputs,
                                             memory_budget=req.memory, may_drop=not explicit_formats,
                                             notes=req.notes, report=req.report, metric=req.metric)
    dropped = [f for f in app_formats if f not in planner.format_sizes.formats] if app_formats else []
    return Chosen(plan=search.chosen.plan, program=search.chosen.program, search=search, exported=exported,
                  dropped=dropped)


def _size_fn(req: CompileRequest, src: Source, latency_model, app_formats, ref_inputs):
    """size_fn(program, plan) -> the bytes of the numpy bundle it would be (metrics as placeholders)."""
    ref_rows = len(next(iter(ref_inputs.values())))
    out_width = sum(o["width"] for o in src.program.outputs) or 1
    source_chars = len(latency_model.estimate(src.program, req.latency_batch)["source"]) + 80

    def size_fn(prog, plan):
        manifest, members = assemble(req.model, prog, plan, req.target, req.ds, ref_inputs,
                                     np.zeros(ref_rows * out_width, np.float32), 0.0, req.oov_rows,
                                     req.input_spec, req.seed is not None)
        manifest = with_retrieval(manifest, req, prog)
        metrics = placeholder_metrics(src.before, src.fp32_bytes, prog.param_bytes(), req.roles,
                                      backends=["numpy"] + app_formats, batches=req.batches,
                                      lat_batch=req.latency_batch, source_chars=source_chars,
                                      reference_values=ref_rows * out_width, fidelity_rows=FIDELITY_ROWS)
        return bundle_size({**manifest, "metrics": metrics}, members) + SIZE_SLACK
    return size_fn


# --- measure: a draft bundle run through the runtime ------------------------------------------------

@dataclass
class Measured:
    manifest: dict                  # without metrics and artifacts
    members: dict
    ref_out: np.ndarray
    parity: dict
    after: dict
    vs_source: dict                 # per backend
    latency: dict                   # batch -> seconds
    latency_source: str
    by_backend: dict
    fidelity: tuple                 # (inputs, the source model's flat outputs)
    model_bytes: int                # the numpy bundle with its metrics
    ref_inputs: dict | None = None  # the reference rows the bundle carries (artifacts are checked on them)

    def metrics(self, src: Source, program, roles, lat_batch, vs_source=None, by_backend=None) -> dict:
        return metrics_block(src.before, self.after, src.fp32_bytes, program.param_bytes(), self.parity,
                             vs_source or self.vs_source, roles, self.latency, self.latency_source, lat_batch,
                             self.by_backend if by_backend is None else by_backend)


def measure(req: CompileRequest, src: Source, chosen, ref_inputs, latency_model, profile,
            app_formats) -> Measured:
    program, plan, call = chosen.program, chosen.plan, src.call
    quantized = any(p.kind != "fp32" for p in program.params.values())
    # the reference for a compressed bundle is the compressed program run by
    # torch (ProgramModule), an implementation independent of the numpy runtime
    ref_out = reference_outputs(ProgramModule(program).eval() if plan else req.model, ref_inputs, call)
    tol = PARITY_TOL["quantized" if quantized else "fp32"]
    manifest, members = assemble(req.model, program, plan, req.target, req.ds, ref_inputs, ref_out, tol,
                                 req.oov_rows, req.input_spec, req.seed is not None)
    manifest = with_retrieval(manifest, req, program)
    runtime_model = Model(BundleDraft(manifest, members).as_runtime_bundle(), backend="numpy")
    parity = runtime_model.check_parity()
    if not parity["ok"]:
        raise CompileError(f"runtime output differs from the host model by {parity['max_abs_diff']:.3g} "
                           f"(tolerance {tol:g}); this is a bug in a pass or an op, please report it")
    after = req.evaluate(_head_fn(runtime_model, program))
    # fidelity: the bundle against the source model itself (not the compressed program), on up to
    # FIDELITY_ROWS rows, outputs in the same form (logit or probability)
    width = sum(o.get("width", 1) for o in program.outputs) or 1     # retrieval: one score per item
    fid_rows = FIDELITY_ROWS if width <= 1 else max(8, min(FIDELITY_ROWS, 4_000_000 // width))
    fid_inputs = {k: np.asarray(req.ds.inputs[k][:fid_rows]) for k in call.names}
    source_out = reference_outputs(req.model, fid_inputs, call)
    vs_source = {"numpy": output_diff(in_chunks(runtime_model.predict_flat, fid_inputs, runtime_model.max_batch),
                                      source_out, fid_inputs)}
    shipping = ["numpy"] + [f for f in app_formats if f not in chosen.dropped]
    by_backend = estimates_by_backend(program, req.target, latency_model.table, batches=req.batches,
                                      backends=shipping, profile=profile)
    m = Measured(manifest=manifest, members=members, ref_out=ref_out, parity=parity, after=after,
                 vs_source=vs_source, latency={str(b): latency_model.estimate(program, b)["total_s"]
                                               for b in req.batches},
                 latency_source=latency_model.estimate(program, req.latency_batch)["source"],
                 by_backend=by_backend, fidelity=(fid_inputs, source_out), model_bytes=0)
    m.ref_inputs, m.ref_out = trim_reference(program, ref_inputs, ref_out)
    m.model_bytes = bundle_size({**manifest, "metrics": m.metrics(src, program, req.roles, req.latency_batch)},
                                members)
    if req.explicit and req.memory is not None and (m.model_bytes > req.memory or
                                                    "(over)" in describe_exports(chosen.exported, req.memory)):
        raise BudgetError(f"this plan does not fit the memory budget of {req.memory:,} B in every shipped format: "
                          f"numpy bundle {m.model_bytes:,} B{' (over)' if m.model_bytes > req.memory else ''}; "
                          + describe_exports(chosen.exported, req.memory))
    return m


def with_retrieval(manifest: dict, req: CompileRequest, program) -> dict:
    """The manifest with its ``retrieval`` section (compile/towers.py) when this is a retrieval compile."""
    if req.retrieval is None:
        return manifest
    from .towers import retrieval_section
    return {**manifest, "retrieval": retrieval_section(req.retrieval, program)}


def _head_fn(runtime_model, program):
    """A runtime model's metric head as logits (what the metrics take)."""
    def predict(inputs):
        return in_chunks(lambda part: head_logits(runtime_model.predict(part), program.outputs, program.metric_output),
                         inputs, runtime_model.max_batch)
    return predict


def in_chunks(fn, inputs: dict, rows: int):
    """``fn`` over at most ``rows`` rows at a time (the runtime refuses batches above its max_batch), joined."""
    n = len(next(iter(inputs.values()))) if inputs else 0
    if n <= rows:
        return fn(inputs)
    parts = [fn({k: v[s:s + rows] for k, v in inputs.items()}) for s in range(0, n, rows)]
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


# --- the final bundle: artifacts, metrics, sizes ------------------------------------------------------

@dataclass
class Final:
    manifest: dict
    members: dict
    model_bytes: int                # the numpy bundle alone (no app artifacts)
    vs_source: dict
    shipped: dict                   # per format: bytes vs budget, latency, test metrics
    warnings: list


def with_artifacts(req: CompileRequest, src: Source, chosen, measured: Measured, ref_inputs) -> Final:
    from ..export.artifacts import build_artifacts
    from ..metrics import higher_is_better
    gate = (req.metric, measured.after[req.metric], higher_is_better(req.metric), req.tolerance)
    artifacts, warnings = build_artifacts(chosen.program, chosen.plan, target=req.target,
                                          reference_inputs=measured.ref_inputs,
                                          reference_outputs=measured.ref_out, formats=req.formats,
                                          evaluate=req.evaluate, source=measured.fidelity, exported=chosen.exported,
                                          gate=gate, exclude=chosen.dropped, progress=req.progress)
    vs_source = dict(measured.vs_source)
    shipped = {"numpy": {"bytes": measured.model_bytes, "metrics": measured.after, "vs_source": vs_source["numpy"]}}
    for art in artifacts:
        if "vs_source" in art.meta:
            vs_source[art.format] = art.meta["vs_source"]
        shipped[art.format] = {"bytes": len(art.data), "metrics": art.meta.get("metrics"),
                               "vs_source": art.meta.get("vs_source")}
    # formats dropped at export: no estimate to load
    by_backend = {fmt: row for fmt, row in measured.by_backend.items() if fmt in shipped}
    metrics = measured.metrics(src, chosen.program, req.roles, req.latency_batch, vs_source, by_backend)
    numpy_manifest = {**measured.manifest, "metrics": metrics}
    model_bytes = bundle_size(numpy_manifest, measured.members)
    mem = req.memory
    for fmt, row in shipped.items():
        row.update(memory_budget=mem, fits=mem is None or row["bytes"] <= mem,
                   latency_estimate_s=by_backend[fmt]["s"], latency_source=by_backend[fmt]["model"])
    shipped["numpy"].update(bytes=model_bytes, fits=mem is None or model_bytes <= mem)
    if chosen.search is not None and mem is not None and model_bytes > mem:
        raise CompileError(f"the numpy bundle came out {model_bytes:,} B, over the memory budget of {mem:,} B "
                           "that the plan's size estimate fitted; please report this bug")
    manifest = dict(numpy_manifest)
    if artifacts:
        manifest["artifacts"] = {a.format: {"member": a.member, **a.meta} for a in artifacts}
    members = {**measured.members, **{a.member: a.data for a in artifacts}}
    if artifacts:       # raw-id maps and dense statistics for `edgecompress package` (export/app_data.py)
        from ..export.app_data import app_members
        members.update(app_members(manifest["inputs"], req.ds, req.train))
    return Final(manifest=manifest, members=members, model_bytes=model_bytes, vs_source=vs_source,
                 shipped=shipped, warnings=req.notes + warnings)


def write(req: CompileRequest, src: Source, chosen, measured: Measured, final: Final) -> CompileResult:
    expected = bundle_size(final.manifest, final.members)
    size = BundleDraft(final.manifest, final.members).write(req.output)
    if size != expected:
        req.output.unlink(missing_ok=True)
        raise CompileError(f"bundle size {size} differs from the size model's {expected}; please report this bug")
    written = edgecompress_runtime.load(req.output, backend="numpy")   # re-verify what is on disk
    return CompileResult(path=req.output, size_bytes=size, metrics_before=src.before, metrics_after=measured.after,
                         parity=written.check_parity(), plan=chosen.plan, target=req.target.name,
                         param_bytes={"fp32": src.fp32_bytes, "compressed": chosen.program.param_bytes()},
                         latency_estimate=measured.latency,
                         budgets={"memory_bytes": req.memory, "latency_s": req.latency,
                                  "latency_batch": req.latency_batch},
                         search=chosen.search, warnings=final.warnings, model_bytes=final.model_bytes,
                         vs_source=final.vs_source, data_roles=req.roles, formats=final.shipped)
