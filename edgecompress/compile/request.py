"""A compile's arguments resolved: data loaded, target loaded, budgets parsed, and the
rows of each role (validation rows choose plans, test rows give every figure, train
rows teach the passes that learn)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.roles import overlap, rows_of, split_roles
from ..errors import DataError
from ..targets import Target, load_target, parse_latency, parse_size
from ..units import parse_duration

SEARCH_ROWS = 20_000          # CTR rows used to score candidate plans
SEARCH_USERS = 300            # retrieval test users used to score candidate plans


@dataclass
class CompileRequest:
    """compile()'s arguments, resolved: datasets loaded, target loaded, budgets parsed, and the rows of
    each role (validation rows choose plans, test rows give every figure, train rows teach passes)."""
    model: torch.nn.Module
    target: Target
    output: Path
    plan: list | None
    memory: int | None
    latency: float | None
    latency_batch: int
    metric: str
    metric_output: object
    input_spec: dict | None
    seed: int | None
    oov_rows: dict | None
    report: object
    tolerance: float
    formats: object
    progress: bool
    latency_table: object
    data: object
    ds: object                      # the dataset whose inputs define the spec (test rows; retrieval: its train rows)
    valid: object
    test: object
    train: object                   # rows passes learn from (None: no training rows)
    roles: dict                     # which rows each figure came from, said in words
    evaluate: object                # predict_fn -> metrics on test rows
    evaluate_fast: object           # predict_fn -> metrics on (a subset of) validation rows
    notes: list = field(default_factory=list)
    retrieval: object = None        # compile/towers.py Retrieval: a user tower + item matrix compile
    train_budget: float | None = None   # seconds the planner may spend on training-aware moves (None: none)

    @property
    def explicit(self) -> bool:
        return self.plan is not None

    @property
    def batches(self) -> list[int]:
        return sorted(set(self.target.batch_sizes) | {self.latency_batch})


def build_request(model, *, target, data, output, plan, memory_budget, latency_budget, metric, metric_output,
                  input_spec, train_data, valid_data, test_data, seed, oov_rows, report, tolerance, formats,
                  progress, latency_table, retrieval=None, train_budget=None) -> CompileRequest:
    """compile()'s keyword arguments resolved (see compile's docstring for each)."""
    from ..data import load as load_data
    from ..metrics import higher_is_better
    data, train_data = load_data(data), load_data(train_data)   # paths and names as the CLI takes them
    valid_data, test_data = load_data(valid_data), load_data(test_data)
    tgt = target if isinstance(target, Target) else load_target(target)
    mem, lat, lat_batch = _budgets(tgt, memory_budget, latency_budget, plan is not None)
    valid, test, roles, notes = _data_roles(data, valid_data, test_data, plan is not None, seed)
    ds, evaluate, evaluate_fast, default_metric = _eval_views(valid, test)
    if retrieval is not None:       # figures stay pairwise: the [B, items] scorer read per (user, item) row
        from .towers import pairwise_evaluation
        from .towers import user_rows
        evaluate, evaluate_fast = pairwise_evaluation(retrieval, evaluate), pairwise_evaluation(retrieval, evaluate_fast)
        ds = user_rows(ds, retrieval)
    metric = metric or default_metric
    try:
        higher_is_better(metric)
    except Exception:
        raise DataError(f"unknown metric {metric!r}; use auc, logloss, recall@10 or ndcg@10") from None
    # retrieval data carries its own training interactions; CTR rows without train_data train nothing
    train = getattr(train_data, "train", train_data) if train_data is not None else \
        (data.train if hasattr(data, "train") else None)
    roles["train"] = "train_data" if train_data is not None else ("data.train" if train is not None else "none")
    for role, rows in (("validation", valid), ("test", test)):
        shared = overlap(train, rows)
        if shared:
            notes.append(f"{shared} of {rows_of(rows)} {role} rows also appear among the train rows: figures on "
                         "them are optimistic; hold rows out before training")
    train_s = None if train_budget is None else parse_duration(train_budget)
    if train_s is not None and (plan is not None or train is None):
        why = "a plan was given (nothing is searched)" if plan is not None else "no training rows (train_data=...)"
        notes.append(f"train_budget ignored: {why}")
        train_s = None
    return CompileRequest(
        model=model.eval(), target=tgt, output=Path(output), plan=None if plan is None else list(plan),
        memory=mem, latency=lat, latency_batch=lat_batch, metric=metric, metric_output=metric_output,
        input_spec=input_spec, seed=seed, oov_rows=oov_rows, report=report, tolerance=tolerance, formats=formats,
        progress=progress, latency_table=latency_table, data=data, ds=ds, valid=valid, test=test, train=train,
        roles=roles, evaluate=evaluate, evaluate_fast=evaluate_fast, notes=notes, retrieval=retrieval,
        train_budget=train_s)


def _data_roles(data, valid_data, test_data, explicit: bool, seed):
    """(validation rows, test rows, roles in words, notes)."""
    if valid_data is not None or test_data is not None:
        valid, test = (valid_data if valid_data is not None else data), (test_data if test_data is not None else data)
        return valid, test, {"validation": "valid_data" if valid_data is not None else "data",
                             "test": "test_data" if test_data is not None else "data"}, []
    if explicit:                # nothing is chosen on the rows: all of them report
        return data, data, {"validation": "none (plan given)", "test": "data"}, []
    valid, test = split_roles(data, seed or 0)
    roles = {"validation": f"half of data ({rows_of(valid)} rows, seed {seed or 0}, stratified)",
             "test": f"the other half ({rows_of(test)} rows)"}
    return valid, test, roles, [f"data split into {rows_of(valid)} validation rows (plan search) and "
                                f"{rows_of(test)} test rows (every reported figure); pass valid_data= and "
                                "test_data= to choose them"]


def _eval_views(valid, test):
    """(Dataset whose inputs define the spec, evaluation on test rows (every reported figure),
    evaluation on validation rows (plan search), default metric)."""
    from ..metrics import evaluate_ctr, evaluate_retrieval
    if hasattr(test, "test_user"):          # RetrievalData: rank held-out items
        return (test.train, lambda fn: evaluate_retrieval(fn, test),
                lambda fn: evaluate_retrieval(fn, valid, max_users=SEARCH_USERS), "recall@10")
    sub = valid.take(np.arange(min(len(valid), SEARCH_ROWS)))
    return test, lambda fn: evaluate_ctr(fn, test), lambda fn: evaluate_ctr(fn, sub), "auc"


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
