"""The source model lowered to a Program and measured on the test rows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..graph import CallConvention, forward_input_names, lower
from ..graph.io import metric_head, metric_index, source_predict_fn
from ..graph.spec import apply_declared, input_spec as derive_input_spec
from ..passes import PassContext
from .request import CompileRequest

UNTRAINED_AUC = 0.02          # |AUC - 0.5| below this: the source model looks untrained


@dataclass
class Source:
    """The lowered program and the source model's figures."""
    program: object
    call: CallConvention
    ctx: PassContext
    before: dict
    fp32_bytes: int
    plan: list | None               # the plan given, without passes that need training rows when there are none


def lower_and_measure(req: CompileRequest, steps) -> Source:
    ds, model = req.ds, req.model
    call = _check_data(model, ds)
    if len(ds) < 2:
        raise DataError("compile needs at least 2 rows of data")
    program = lower(model, {k: np.asarray(ds.inputs[k][:8]) for k in call.names}, call)
    program.metric_output = metric_index(program.outputs, req.metric_output)
    if req.retrieval is not None:           # metrics read every item's score (towers.pairwise_fn)
        program.metric_output = (0, None)
    apply_declared(derive_input_spec(program, ds.inputs, ds.vocab, ds.meta, req.oov_rows), req.input_spec,
                   ds.inputs)
    _check_ids_fit(program, ds)
    calibration = req.train if req.train is not None else (req.valid.train if hasattr(req.valid, "train")
                                                            else req.valid)
    plan = _plan_without_training(req)
    if req.retrieval is not None and req.train is not None:
        plan = _retrieval_without_training(req, plan)
    ctx = PassContext(teacher=model, train_data=req.train, calibration_data=calibration)
    steps.say("measuring the source model")
    _check_metric_head(req, program)
    before = req.evaluate(source_predict_fn(model, call, program.outputs, program.metric_output))
    if req.metric not in before:
        raise DataError(f"metric {req.metric!r} is not measured for {ds.task} data (have: {', '.join(before)})")
    if "auc" in before and abs(before["auc"] - 0.5) < UNTRAINED_AUC:
        req.notes.append(f"the source model scores AUC {before['auc']:.3f} on these rows, near chance: it looks "
                         "untrained, or the data does not match it (labels, id mapping, which output)")
    return Source(program=program, call=call, ctx=ctx, before=before, fp32_bytes=program.param_bytes(), plan=plan)


def _retrieval_without_training(req: CompileRequest, plan):
    """A retrieval compile learns nothing from training rows: distillation and row frequencies learn
    from pairwise labels, and the [B, items] scorer has none. The plan without those passes."""
    dropped = [c.NAME for c in plan or [] if c.NEEDS_TRAIN_DATA]
    if not req.explicit or dropped:
        what = f"skipped {', '.join(dropped)}" if dropped else \
            "the planner tries no distillation and no frequency-based row pruning"
        req.notes.append(f"retrieval compile: {what} (they learn from pairwise training rows, which do not apply "
                         "to the user tower + item matrix)")
    req.train = None
    return None if plan is None else [c for c in plan if not c.NEEDS_TRAIN_DATA]


def _plan_without_training(req: CompileRequest):
    """The plan given, without the passes that learn from training rows when there are none."""
    if req.train is not None:
        return req.plan
    if not req.explicit:
        req.notes.append("no train_data: the planner tries no distillation and no frequency-based row pruning "
                         "(they would learn from held-out rows)")
        return None
    dropped = [c for c in req.plan if c.NEEDS_TRAIN_DATA]
    if dropped:
        req.notes.append(f"skipped {', '.join(c.NAME for c in dropped)}: needs train_data (it would learn "
                         "from held-out rows)")
    return [c for c in req.plan if not c.NEEDS_TRAIN_DATA]


def _check_metric_head(req: CompileRequest, program) -> None:
    head = metric_head(program) if isinstance(program.metric_output, int) and program.outputs else None
    if head is None or head.get("width", 1) <= 1:
        return
    # [B, k]: k tasks (MMOE) or k candidates (list-wise retrieval); only the user knows which column to rank by
    if not req.explicit:
        raise DataError(f"output {head['name']!r} holds {head['width']} scores per row; name the column the "
                        f"planner should rank plans by, e.g. metric_output=\"{head['name']}[0]\" "
                        f"(--metric-output '{head['name']}[0]')")
    req.notes.append(f"metrics read column 0 of output {head['name']!r} ({head['width']} scores per row); "
                     f"name another with metric_output=\"{head['name']}[j]\"")


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
