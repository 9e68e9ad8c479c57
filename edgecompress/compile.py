"""edgecompress.compile: model + data + target -> a verified bundle on disk.

    model -> lower (torch.export -> op set) -> plan (searched under the budgets,
    or given) -> passes -> bundle draft -> metrics and parity through the
    runtime -> exact size check -> atomic write -> re-verify -> report
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
from .data.roles import overlap, rows_of, split_roles
from .graph import CallConvention, forward_input_names, lower
from .graph.io import all_outputs_flat, head_logits, metric_head, metric_index, output_diff, source_predict_fn
from .graph.spec import apply_declared, input_spec as derive_input_spec
from .graph.torch_exec import ProgramModule
from .passes import apply_plan
from .plan.latency import SlowestBackend, estimates_by_backend, shape_profile
from .plan.fit_formats import describe_exports, export_formats, search_within_budgets
from .plan.format_size import FormatSizes
from .plan.search import BudgetError, Planner
from .plan.size import bundle_size
from .targets import Target, load_target, parse_latency, parse_size

REFERENCE_ROWS = 32
FIDELITY_ROWS = 1000          # rows the bundle is compared with the source model on (vs_source)
PARITY_TOL = {"fp32": 1e-5, "quantized": 1e-2}
SEARCH_ROWS = 20_000          # CTR rows used to score candidate plans
UNTRAINED_AUC = 0.02          # |AUC - 0.5| below this: the source model looks untrained
SEARCH_USERS = 300            # retrieval test users used to score candidate plans


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
    latency_estimate: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)
    search: object = None
    report: dict = field(default_factory=dict)
    model_bytes: int = 0           # the bundle without app artifacts (.pte/.tflite): what memory budgets bound
    warnings: list = field(default_factory=list)     # e.g. an artifact format skipped (toolchain missing)
    vs_source: dict = field(default_factory=dict)    # per backend: the bundle vs the source model (not the program)
    data_roles: dict = field(default_factory=dict)   # which rows each figure came from (train / validation / test)
    formats: dict = field(default_factory=dict)      # per shipped format: bytes vs budget, latency, test metrics

    def summary(self) -> dict:
        return {"bundle": str(self.path), "size_bytes": self.size_bytes, "model_bytes": self.model_bytes,
                "target": self.target,
                "metrics_before": self.metrics_before, "metrics_after": self.metrics_after,
                "parity": self.parity, "vs_source": self.vs_source, "data_roles": self.data_roles,
                "formats": self.formats,
                "plan": [c.to_dict() for c in self.plan],
                "latency_estimate": self.latency_estimate, "budgets": self.budgets,
                "report": {k: str(v) for k, v in self.report.items()}}


def _eval_views(valid, test):
    """(Dataset whose inputs define the spec, evaluation on test rows (every reported figure),
    evaluation on validation rows (plan search), default metric)."""
    from .metrics import evaluate_ctr, evaluate_retrieval
    if hasattr(test, "test_user"):          # RetrievalData: rank held-out items
        return (test.train, lambda fn: evaluate_retrieval(fn, test),
                lambda fn: evaluate_retrieval(fn, valid, max_users=SEARCH_USERS), "recall@10")
    sub = valid.take(np.arange(min(len(valid), SEARCH_ROWS)))
    return test, lambda fn: evaluate_ctr(fn, test), lambda fn: evaluate_ctr(fn, sub), "auc"


def _check_data(model, ds) -> CallConvention:
    """How the model takes the data's inputs: named arguments, or one dict of all of them."""
    call = CallConvention.infer(model, ds.inputs)
    names = forward_input_names(model)
    missing = [n for n in names if n not in ds.inputs] if call.style == "named" else []
    if missing:
        raise DataError(f"the data has no input {missing[0]!r} that the model's forward() takes; "
                        f"data inputs: {', '.join(sorted(ds.inputs))}; forward() takes: {', '.join(names)}")
    extra = sorted(set(ds.inputs) - set(call.names))
    if extra:
        raise DataError(f"data input {extra[0]!r} is not an argument of the model's forward() "
                        f"({', '.join(names)})")
    return call


def _check_ids_fit(program, ds) -> None:
    """Ids in the data must exist in the tables they feed."""
    for table, (inp, fld) in program.index_sources.items():
        if table not in program.params or inp not in ds.inputs:
            continue
        ids = np.asarray(ds.inputs[inp])
        if fld is not None and ids.ndim >= 2:
            ids = ids[:, fld]
        rows = program.params[table].shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= rows):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            where = f"{inp}[field {fld}]" if fld is not None else inp
            raise DataError(f"data input {where} holds id {bad}, outside table {table!r} (rows 0..{rows - 1}); "
                            "remap ids to 0..rows-1 or give the table more rows")


def _torch_outputs(model, inputs: dict, call: CallConvention) -> np.ndarray:
    """Every head of the model on ``inputs``, flat (the bundle's reference layout)."""
    tensors = {k: torch.as_tensor(inputs[k]) for k in call.names}
    with torch.no_grad():
        if isinstance(model, ProgramModule):
            out = model(*[tensors[k] for k in call.names])
        else:
            out = call(model, tensors)
    return all_outputs_flat(out, len(next(iter(tensors.values()))))


def _budgets(tgt: Target, memory_budget, latency_budget, explicit_plan: bool):
    """Bytes and (seconds, batch). Defaults come from the target unless a plan is given."""
    mem = parse_size(memory_budget) if isinstance(memory_budget, str) else memory_budget
    if latency_budget is None:
        lat, batch = (None, tgt.latency_batch) if explicit_plan else (tgt.latency_budget_s, tgt.latency_batch)
    elif isinstance(latency_budget, str):
        lat, batch = parse_latency(latency_budget)
    else:
        lat, batch = latency_budget
    if mem is None and not explicit_plan:
        mem = tgt.memory_budget_bytes
    return mem, lat, batch


def _assemble(model, program, plan, tgt, ds, ref_inputs, ref_out, tol, oov_rows, declared=None,
              reproducible=False):
    """Manifest (without metrics) and members of the bundle for a program."""
    spec = apply_declared(derive_input_spec(program, ds.inputs, ds.vocab, ds.meta, oov_rows), declared, ds.inputs)
    params, consts, members = program_members(program)
    ref_manifest, ref_members = reference_members(ref_inputs, ref_out)
    members.update(ref_members)
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
    return manifest, members


def compile(model: torch.nn.Module, *, target, data, output, plan=None, memory_budget=None,
            latency_budget=None, metric=None, metric_output=None, input_spec=None, train_data=None,
            valid_data=None, test_data=None, seed: int | None = None, oov_rows=None, report=None,
            tolerance: float = 5e-4, formats=None, progress: bool = True, latency_table=None) -> CompileResult:
    """Compile ``model`` for ``target`` (a profile name, path or Target).

    ``data``: held-out data (a Dataset, RetrievalData for retrieval models, or a .npz path / name as ``--data``)
    used for the input spec, metrics before/after, plan search and reference I/O.
    ``train_data``: training rows for row frequencies, distillation and activation calibration; without
    it those passes are skipped (never trained on held-out rows). ``valid_data`` / ``test_data``: the rows
    plans are chosen on and the rows every reported figure comes from; by default a searched compile splits
    ``data`` in two (seeded by ``seed``, stratified by label) and says so in ``warnings``. With ``seed``
    given the bundle is reproducible: the same inputs give the same bytes (no wall-clock time inside).
    ``plan``: None searches the most accurate plan inside the budgets
    (``memory_budget`` like "8MB", ``latency_budget`` like "2ms@64"; both default
    to the target's); a list of pass configs replays that plan ([] = fp32).
    ``metric``: auc | logloss | recall@10 | ndcg@10, measured on the output named
    ``metric_output`` (multi-head models; default the first; "name[j]" reads column j of
    a [B, k] output, default column 0). Among plans within
    ``tolerance`` of the best metric the smallest wins. ``oov_rows``:
    {input: row or [row per field]} maps unknown ids to a fallback row.
    ``report``: a directory for report.json and report.html.
    ``formats``: app artifacts to add (executorch, litert; see export/artifacts.py);
    None = every format whose toolchain is installed.
    ``latency_table``: the measured latency table the latency model uses (a stored
    device or target name, a path to its JSON, or a LatencyTable); None = the one
    stored for ``target`` if calibrated (``edgecompress calibrate``), False = none
    (the profile's coefficients).
    Nothing is written at ``output`` unless every check passes."""
    from .metrics import higher_is_better

    from .data import load as load_data
    data, train_data = load_data(data), load_data(train_data)   # paths and names as the CLI takes them
    valid_data, test_data = load_data(valid_data), load_data(test_data)
    tgt = target if isinstance(target, Target) else load_target(target)
    explicit = plan is not None
    mem, lat, lat_batch = _budgets(tgt, memory_budget, latency_budget, explicit)
    notes = []
    # three roles: train rows (frequencies, distillation), validation rows (plan search), test rows (figures)
    if valid_data is not None or test_data is not None:
        valid, test = (valid_data if valid_data is not None else data), (test_data if test_data is not None else data)
        roles = {"validation": "valid_data" if valid_data is not None else "data",
                 "test": "test_data" if test_data is not None else "data"}
    elif explicit:                # nothing is chosen on the rows: all of them report
        valid = test = data
        roles = {"validation": "none (plan given)", "test": "data"}
    else:
        valid, test = split_roles(data, seed or 0)
        roles = {"validation": f"half of data ({rows_of(valid)} rows, seed {seed or 0}, stratified)",
                 "test": f"the other half ({rows_of(test)} rows)"}
        notes.append(f"data split into {rows_of(valid)} validation rows (plan search) and {rows_of(test)} test rows "
                     "(every reported figure); pass valid_data= and test_data= to choose them")
    ds, evaluate, evaluate_fast, default_metric = _eval_views(valid, test)
    metric = metric or default_metric
    try:
        higher_is_better(metric)
    except Exception:
        raise DataError(f"unknown metric {metric!r}; use auc, logloss, recall@10 or ndcg@10") from None
    call = _check_data(model, ds)
    model = model.eval()
    if len(ds) < 2:
        raise DataError("compile needs at least 2 rows of data")
    names = call.names
    example = {k: np.asarray(ds.inputs[k][:8]) for k in names}

    steps = _Progress(progress, 6)
    steps.say("lowering with torch.export")
    program = lower(model, example, call)
    program.metric_output = metric_index(program.outputs, metric_output)
    apply_declared(derive_input_spec(program, ds.inputs, ds.vocab, ds.meta, oov_rows), input_spec, ds.inputs)
    _check_ids_fit(program, ds)
    # retrieval data carries its own training interactions; CTR rows without train_data train nothing
    train = getattr(train_data, "train", train_data) if train_data is not None else \
        (data.train if hasattr(data, "train") else None)
    calibration = train if train is not None else (valid.train if hasattr(valid, "train") else valid)
    program.context.update(teacher=model, train_data=train, calibration_data=calibration)
    roles["train"] = "train_data" if train_data is not None else ("data.train" if train is not None else "none")
    for role, rows in (("validation", valid), ("test", test)):
        shared = overlap(train, rows)
        if shared:
            notes.append(f"{shared} of {rows_of(rows)} {role} rows also appear among the train rows: figures on "
                         "them are optimistic; hold rows out before training")
    if train is None:
        if not explicit:
            notes.append("no train_data: the planner tries no distillation and no frequency-based row pruning "
                         "(they would learn from held-out rows)")
        else:
            dropped = [c for c in plan if c.NAME in ("distill", "embedding_row_prune")]
            plan = [c for c in plan if c.NAME not in ("distill", "embedding_row_prune")]
            if dropped:
                notes.append(f"skipped {', '.join(c.NAME for c in dropped)}: needs train_data (it would learn "
                             "from held-out rows)")
    fp32_bytes = program.param_bytes()
    steps.say("measuring the source model")
    head = metric_head(program) if isinstance(program.metric_output, int) and program.outputs else None
    if head is not None and head.get("width", 1) > 1:
        # [B, k]: k tasks (MMOE) or k candidates (list-wise retrieval); only the user knows which column to rank by
        if not explicit:
            raise DataError(f"output {head['name']!r} holds {head['width']} scores per row; name the column the "
                            f"planner should rank plans by, e.g. metric_output=\"{head['name']}[0]\" "
                            f"(--metric-output '{head['name']}[0]')")
        notes.append(f"metrics read column 0 of output {head['name']!r} ({head['width']} scores per row); "
                     f"name another with metric_output=\"{head['name']}[j]\"")
    before = evaluate(source_predict_fn(model, call, program.outputs, program.metric_output))
    if metric not in before:
        raise DataError(f"metric {metric!r} is not measured for {ds.task} data (have: {', '.join(before)})")
    if "auc" in before and abs(before["auc"] - 0.5) < UNTRAINED_AUC:
        notes.append(f"the source model scores AUC {before['auc']:.3f} on these rows, near chance: it looks "
                     "untrained, or the data does not match it (labels, id mapping, which output)")
    from .export.artifacts import shipped_formats
    app_formats, explicit_formats, _ = shipped_formats(formats, tgt)
    profile = shape_profile(program)
    latency_model = SlowestBackend(tgt, profile, table=_latency_table(tgt, latency_table),
                                   backends=["numpy"] + app_formats)
    ref_inputs = {k: np.asarray(ds.inputs[k][:REFERENCE_ROWS]) for k in names}
    ref_rows, out_width = len(next(iter(ref_inputs.values()))), sum(o["width"] for o in program.outputs) or 1

    def size_fn(prog, p):
        manifest, members = _assemble(model, prog, p, tgt, ds, ref_inputs,
                                      np.zeros(ref_rows * out_width, np.float32), 0.0, oov_rows, input_spec,
                                      seed is not None)
        manifest["metrics"] = placeholder(prog)
        return bundle_size(manifest, members)

    def placeholder(prog):
        """The metrics block with the longest float in every measured place: search-time sizes are
        an upper bound of the numpy bundle written later (its manifest carries these figures)."""
        after = {k: (LONG if isinstance(v, float) else v) for k, v in before.items()}
        diff = {"rows": FIDELITY_ROWS, "max_abs_diff": LONG, "mean_abs_diff": LONG}
        backends = ["numpy"] + app_formats
        batches = sorted(set(tgt.batch_sizes) | {lat_batch})
        return _metrics_block(
            before, after, fp32_bytes, prog.param_bytes(),
            {"backend": "numpy", "max_abs_diff": LONG, "tolerance": LONG, "ok": False, "n": ref_rows * out_width},
            {b: diff for b in backends}, roles, {str(b): LONG for b in batches}, placeholder_source, lat_batch,
            {b: {"source": placeholder_source, "model": placeholder_source, "s": {str(x): LONG for x in batches}}
             for b in backends})
    placeholder_source = "x" * (len(latency_model.estimate(program, lat_batch)["source"]) + 80)

    search, exported, dropped = None, {}, []
    if explicit:
        steps.say(f"applying {len(plan)} pass(es)")
        plan = list(plan)
        program = apply_plan(program.copy(), plan)
        if mem is not None and app_formats:
            exported = export_formats(app_formats, program, plan, tgt, ref_inputs)
    else:
        steps.say("searching plans under the budgets")
        planner = Planner(program, metric=metric, evaluate_fn=evaluate_fast, size_fn=size_fn,
                          latency=latency_model, latency_batch=lat_batch, memory_budget=mem, latency_budget=lat,
                          tolerance=tolerance, progress=progress,
                          format_sizes=FormatSizes(app_formats) if app_formats else None)
        search, exported = search_within_budgets(planner, target=tgt, reference_inputs=ref_inputs,
                                                 memory_budget=mem, may_drop=not explicit_formats, notes=notes,
                                                 report=report, metric=metric)
        dropped = [f for f in app_formats if f not in planner.format_sizes.formats] if app_formats else []
        plan, program = search.chosen.plan, search.chosen.program

    quantized = any(p.kind != "fp32" for p in program.params.values())
    # the reference for a compressed bundle is the compressed program run by
    # torch (ProgramModule), an implementation independent of the numpy runtime
    host_ref = ProgramModule(program).eval() if plan else model
    ref_out = _torch_outputs(host_ref, ref_inputs, call)
    tol = PARITY_TOL["quantized" if quantized else "fp32"]
    manifest, members = _assemble(model, program, plan, tgt, ds, ref_inputs, ref_out, tol, oov_rows, input_spec,
                                  seed is not None)

    steps.say("measuring the bundle through the runtime")
    draft = BundleDraft(manifest, members)
    runtime_model = Model(draft.as_runtime_bundle(), backend="numpy")
    parity = runtime_model.check_parity()
    if not parity["ok"]:
        raise CompileError(f"runtime output differs from the host model by {parity['max_abs_diff']:.3g} "
                           f"(tolerance {tol:g}); this is a bug in a pass or an op, please report it")
    after = evaluate(_head_fn(runtime_model, program))
    # fidelity: the bundle against the source model itself (not the compressed program), on up to
    # FIDELITY_ROWS rows, outputs in the same form (logit or probability)
    fid_inputs = {k: np.asarray(ds.inputs[k][:FIDELITY_ROWS]) for k in names}
    source_out = _torch_outputs(model, fid_inputs, call)
    vs_source = {"numpy": output_diff(runtime_model.predict_flat(fid_inputs), source_out, fid_inputs)}
    batches = sorted(set(tgt.batch_sizes) | {lat_batch})
    latency = {str(b): latency_model.estimate(program, b)["total_s"] for b in batches}
    latency_source = latency_model.estimate(program, lat_batch)["source"]
    shipping = ["numpy"] + [f for f in app_formats if f not in dropped]
    by_backend = estimates_by_backend(program, tgt, latency_model.table, batches=batches, backends=shipping,
                                      profile=profile)
    manifest["metrics"] = _metrics_block(before, after, fp32_bytes, program.param_bytes(), parity, vs_source, roles,
                                         latency, latency_source, lat_batch, by_backend)
    # the numpy bundle alone: what the memory budget bounds for the numpy format
    model_bytes = bundle_size(manifest, members)
    if explicit and mem is not None and (model_bytes > mem or "(over)" in describe_exports(exported, mem)):
        raise BudgetError(f"this plan does not fit the memory budget of {mem:,} B in every shipped format: "
                          f"numpy bundle {model_bytes:,} B{' (over)' if model_bytes > mem else ''}; "
                          + describe_exports(exported, mem))
    from .export.artifacts import build_artifacts
    gate = (metric, after[metric], higher_is_better(metric), tolerance)
    artifacts, warnings = build_artifacts(program, plan, target=tgt, reference_inputs=ref_inputs,
                                          reference_outputs=ref_out, formats=formats, evaluate=evaluate,
                                          source=(fid_inputs, source_out), exported=exported, gate=gate, exclude=dropped,
                                          progress=progress)
    warnings = notes + warnings
    shipped = {"numpy": {"bytes": model_bytes, "metrics": after, "vs_source": vs_source["numpy"]}}
    for art in artifacts:
        members[art.member] = art.data
        if "vs_source" in art.meta:
            vs_source[art.format] = art.meta["vs_source"]
        manifest.setdefault("artifacts", {})[art.format] = {"member": art.member, **art.meta}
        shipped[art.format] = {"bytes": len(art.data), "metrics": art.meta.get("metrics"),
                               "vs_source": art.meta.get("vs_source")}
    for fmt in [b for b in by_backend if b not in shipped]:       # dropped at export: no estimate to load
        del by_backend[fmt]
    for fmt, row in shipped.items():
        row.update(memory_budget=mem, fits=mem is None or row["bytes"] <= mem,
                   latency_estimate_s=by_backend[fmt]["s"], latency_source=by_backend[fmt]["model"])
    model_bytes = bundle_size({k: v for k, v in manifest.items() if k != "artifacts"},
                              {m: b for m, b in members.items() if not m.startswith("artifacts/")})
    shipped["numpy"].update(bytes=model_bytes, fits=mem is None or model_bytes <= mem)
    if search is not None and mem is not None and model_bytes > mem:
        raise CompileError(f"the numpy bundle came out {model_bytes:,} B, over the memory budget of {mem:,} B "
                           "that the plan's size estimate fitted; please report this bug")
    expected = bundle_size(manifest, members)

    steps.say(f"writing {output}")
    size = draft.write(output)
    if size != expected:
        Path(output).unlink(missing_ok=True)
        raise CompileError(f"bundle size {size} differs from the size model's {expected}; please report this bug")
    written = edgecompress_runtime.load(output, backend="numpy")   # re-verify what is on disk
    final_parity = written.check_parity()
    budgets = {"memory_bytes": mem, "latency_s": lat, "latency_batch": lat_batch}
    result = CompileResult(path=Path(output), size_bytes=size, metrics_before=before, metrics_after=after,
                           parity=final_parity, plan=plan, target=tgt.name,
                           param_bytes={"fp32": fp32_bytes, "compressed": program.param_bytes()},
                           latency_estimate=latency, budgets=budgets, search=search, warnings=warnings,
                           model_bytes=model_bytes, vs_source=vs_source, data_roles=roles, formats=shipped)
    if report is not None:
        steps.say(f"writing the report to {report}")
        from .plan.report import write_report
        result.report = write_report(report, result=result, program=program, base_program=None, model=model,
                                     data=test, train=train, metric=metric, latency_model=latency_model)
    steps.done()
    return result


LONG = -1.2345678901234567e-123       # the longest repr of a float


def _metrics_block(before, after, fp32_bytes, param_bytes, parity, vs_source, roles, latency, latency_source,
                   lat_batch, by_backend) -> dict:
    """manifest["metrics"]: figures on test rows, parity, fidelity, latency estimates (per backend)."""
    return {"host": {"before": before, "after": after, "fp32_param_bytes": fp32_bytes, "param_bytes": param_bytes,
                     "parity": parity, "vs_source": vs_source, "data_roles": roles},
            "latency_estimate_s": latency, "latency_model": latency_source,
            "latency_by_backend": by_backend, "latency_batch": int(lat_batch)}


def _head_fn(runtime_model, program):
    """A runtime model's metric head as logits (what the metrics take)."""
    def predict(inputs):
        return head_logits(runtime_model.predict(inputs), program.outputs, program.metric_output)
    return predict


def _latency_table(tgt, spec=None):
    """A measured per-device latency table: the one given, else the one calibrated
    for the target (``edgecompress calibrate``; see plan/latency_table.py)."""
    from .plan.latency_table import load_for_target, resolve_table
    if spec is not None:
        return resolve_table(spec)
    return load_for_target(tgt)


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
        self.bar.update(max(self.bar.total - self.bar.n, 0))
        self.bar.close()
