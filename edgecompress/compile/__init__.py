"""edgecompress.compile: model + data + target -> a verified bundle on disk.

    request (arguments resolved: data, target, budgets, the role of each row set)
    -> source (lower with torch.export, measure the source model)
    -> choose (the plan given, or searched under the budgets) and apply it
    -> measure (a draft bundle run through the runtime: parity, metrics, fidelity, latency)
    -> artifacts (app formats) -> final manifest -> exact size check -> atomic write -> re-verify -> report

Each step is a function returning what the next needs; nothing edits a dict
another step already handed on.
"""
from __future__ import annotations

import numpy as np
import torch

from ..plan.latency import SlowestBackend, shape_profile
from .bundle import FIDELITY_ROWS, PARITY_TOL, choose, measure, with_artifacts, write
from .request import SEARCH_ROWS, SEARCH_USERS, build_request
from .result import CompileResult
from .source import UNTRAINED_AUC, lower_and_measure

REFERENCE_ROWS = 32

__all__ = ["compile", "CompileResult", "REFERENCE_ROWS", "FIDELITY_ROWS", "PARITY_TOL", "SEARCH_ROWS",
           "SEARCH_USERS", "UNTRAINED_AUC"]


def compile(model: torch.nn.Module, *, target, data, output, plan=None, memory_budget=None,
            latency_budget=None, metric=None, metric_output=None, input_spec=None, train_data=None,
            valid_data=None, test_data=None, seed: int | None = None, oov_rows=None, report=None,
            tolerance: float = 5e-4, formats=None, progress: bool = True, latency_table=None,
            towers=None, train_budget=None) -> CompileResult:
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
    ``towers``: compile a two-tower model for on-device retrieval (compile/towers.py): "auto" (a model with
    user_embedding()/item_embedding(), e.g. the zoo's TwoTower), (user method, item method) or a Towers;
    the bundle holds the user tower and the item-embedding matrix, and ``topk(user_inputs, k)`` ranks
    every item with one call. None = the model as a pairwise scorer.
    ``train_budget``: seconds (or "10m", "90s", "1.5h") the planner may spend on training-aware moves
    (quantization-aware training, product quantization: plan/training_moves.py) when no post-training
    plan meets the budgets within ``tolerance`` of fp32; needs ``train_data``. None = post-training
    moves only. Each trained plan is bounded by steps, so replaying the manifest's plan gives the same bytes.
    Nothing is written at ``output`` unless every check passes."""
    retrieval = None
    if towers is not None:       # the model becomes user tower + item matrix; the data its user-side rows
        from .towers import prepare_compile
        retrieval, model, data, train_data, valid_data, test_data = prepare_compile(
            model, towers, data, train_data, valid_data, test_data)
    req = build_request(model, target=target, data=data, output=output, plan=plan, memory_budget=memory_budget,
                   latency_budget=latency_budget, metric=metric, metric_output=metric_output,
                   input_spec=input_spec, train_data=train_data, valid_data=valid_data, test_data=test_data,
                   seed=seed, oov_rows=oov_rows, report=report, tolerance=tolerance, formats=formats,
                   progress=progress, latency_table=latency_table, retrieval=retrieval, train_budget=train_budget)
    steps = _Progress(progress, 6)
    steps.say("lowering with torch.export")
    src = lower_and_measure(req, steps)
    from ..export.artifacts import shipped_formats
    app_formats, explicit_formats, _ = shipped_formats(req.formats, req.target)
    profile = shape_profile(src.program)
    latency_model = SlowestBackend(req.target, profile, table=_latency_table(req.target, req.latency_table),
                                   backends=["numpy"] + app_formats)
    names = src.call.names
    ref_rows = REFERENCE_ROWS if retrieval is None else max(2, min(REFERENCE_ROWS, 16384 // retrieval.num_items))
    ref_inputs = {k: np.asarray(req.ds.inputs[k][:ref_rows]) for k in names}
    chosen = choose(req, src, steps, latency_model, app_formats, explicit_formats, ref_inputs)
    training = getattr(chosen.search, "training", None)
    if training is not None:         # what training-aware moves did and why they stopped, in the warnings
        req.notes.append(training.describe())
    steps.say("measuring the bundle through the runtime")
    measured = measure(req, src, chosen, ref_inputs, latency_model, profile, app_formats)
    final = with_artifacts(req, src, chosen, measured, ref_inputs)
    steps.say(f"writing {output}")
    result = write(req, src, chosen, measured, final)
    if report is not None:
        steps.say(f"writing the report to {report}")
        from ..plan.report import write_report
        result.report = write_report(report, result=result, program=chosen.program, base_program=None,
                                     model=req.model, data=req.test, train=req.train, metric=req.metric,
                                     latency_model=latency_model)
    steps.done()
    return result


def _latency_table(tgt, spec=None):
    """A measured per-device latency table: the one given, else the one calibrated
    for the target (``edgecompress calibrate``; see plan/latency_table.py)."""
    from ..plan.latency_table import load_for_target, resolve_table
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
