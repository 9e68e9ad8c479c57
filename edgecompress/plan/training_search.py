"""Training-aware moves under a time budget: what the planner does after its post-training
search when a compile has training rows and ``train_budget`` and the best post-training plan
misses the budgets, or meets them only beyond ``tolerance`` of the fp32 metric.

1. Preview every move of plan/training_moves.py: its plan with one training step gives the exact
   bytes and latency estimate (training changes values, never sizes) and a first measure of the
   seconds per training row. Moves whose plan cannot fit the budgets are skipped untrained, as are
   moves that make the same plan as one before.
2. Train the rest, cheapest first (estimated seconds: the preview's fixed cost + rows x epochs x
   seconds per row, ties in registry order), each bounded to the rows the remaining budget pays for
   (at most ``EPOCHS`` epochs; estimates corrected by measured / estimated seconds of the last move
   trained); the bound becomes the pass's ``max_steps``, so the plan replays to the same bytes.
   Each trained plan is scored on the validation rows like every candidate.
3. Stop when a trained plan fits the budgets within ``tolerance`` of fp32, when every move was
   tried, or when the budget cannot pay for ``MIN_STEPS`` more steps; the record says which.

The budget counts wall time of everything this stage does (previews, training, conversion,
scoring), measured as it goes. The first move trains at least ``MIN_STEPS`` steps even when the
budget is smaller (one measurement is needed to know the rate), so a tiny budget overruns by
that much and the record says so.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from ..data.roles import rows_of
from ..errors import CompileError
from .states import Candidate, PlanState
from .training_moves import BATCH, MOVES, PREVIEW, MoveBudget, MoveState, rows_for

EPOCHS = 1.0                  # training per move when the budget allows it
MIN_STEPS = 4                 # fewer steps than this are not worth a candidate (the first move always trains)


@dataclass
class MoveRun:
    """One training-aware move: what it bought and what it cost."""
    move: str
    status: str = "not tried"          # trained | skipped | not tried
    why: str = ""
    plan: list = field(default_factory=list)
    bytes: int | None = None           # the largest shipped payload (what the memory budget binds)
    latency_s: float | None = None
    metric: float | None = None        # on the validation rows
    rows: int = 0                      # training rows seen
    train_s: float = 0.0               # seconds the passes spent training (their program.log)
    wall_s: float = 0.0                # everything the move cost here: preview, training, conversion, scoring
    fits: bool | None = None

    def to_dict(self, fp32_metric: float, fp32_bytes: int) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "plan"}
        d["plan"] = [c.to_dict() for c in self.plan]
        d["delta_metric"] = None if self.metric is None else self.metric - fp32_metric
        d["ratio_vs_fp32"] = None if not self.bytes else fp32_bytes / self.bytes
        return d


@dataclass
class TrainingRecord:
    """What the training-aware stage did, for the compile report, the notes and a BudgetError."""
    budget_s: float
    reason: str
    metric: str
    fp32: dict                          # {"bytes", "metric"} of the fp32 plan (validation rows)
    post_training: dict | None          # the best post-training plan that fits: describe, bytes, metric
    runs: list = field(default_factory=list)
    spent_s: float = 0.0
    stopped: str = ""

    def summary(self) -> dict:
        return {"budget_s": self.budget_s, "spent_s": round(self.spent_s, 2), "reason": self.reason,
                "stopped": self.stopped, "metric": self.metric, "fp32": self.fp32,
                "post_training": self.post_training,
                "moves": [r.to_dict(self.fp32["metric"], self.fp32["bytes"]) for r in self.runs]}

    def describe(self) -> str:
        """One paragraph: the budget, each move's outcome, why the stage stopped."""
        parts = []
        for r in self.runs:
            if r.status == "trained":
                parts.append(f"{r.move}: {r.bytes:,} B, {self.metric} {r.metric:.4f}, {r.train_s:.1f} s training "
                             f"({r.rows:,} rows)" + ("" if r.fits else ", over the budgets"))
            else:
                parts.append(f"{r.move}: {r.status}" + (f" ({r.why})" if r.why else ""))
        return (f"training-aware moves ({self.reason}; --train-budget {self.budget_s:g} s, {self.spent_s:.1f} s "
                f"spent): " + "; ".join(parts) + f". {self.stopped}")


def training_said(planner) -> str:
    """What a BudgetError says about training: what the stage tried, or how to ask for it."""
    if planner.training is not None:
        return planner.training.describe()
    if planner.train_budget is not None and planner.context.train_data is None:
        return "No training-aware move was tried: the compile has no training rows (train_data)."
    if planner.train_budget is not None:
        return ""
    return ("Only post-training moves were tried: with training rows, --train-budget 10m (compile(train_budget=...)) "
            "lets the planner try training-aware moves (quantization-aware training, product quantization).")


def needs_training(planner, fp32: Candidate, feasible: list):
    """Why the training-aware stage should run (None: the post-training plans are good enough)."""
    if not feasible:
        return "no post-training plan fits the budgets"
    best = max(feasible, key=lambda c: c.metric if planner.higher else -c.metric)
    loss = planner._loss(fp32.metric, best.metric)
    if loss > planner.tolerance:
        return (f"the best post-training plan that fits loses {loss:.4f} {planner.metric} vs fp32, more than the "
                f"tolerance {planner.tolerance:g}")
    return None


def search_training(planner, fp32: Candidate, feasible: list) -> TrainingRecord | None:
    """Run the stage when needed (module doc; None when not); trained candidates join ``planner.cache``."""
    reason = needs_training(planner, fp32, feasible)
    if reason is None:
        return None
    planner.log(f"trying training-aware moves: {reason}")
    t0 = time.perf_counter()
    best = max(feasible, key=lambda c: c.metric if planner.higher else -c.metric) if feasible else None
    train_rows = rows_of(planner.context.train_data)
    state = MoveState(program=planner.base, train_rows=train_rows, best=best)
    rec = TrainingRecord(budget_s=planner.train_budget, reason=reason, metric=planner.metric,
                         fp32={"bytes": planner._bytes(fp32), "metric": fp32.metric},
                         post_training=None if best is None else {"describe": best.state.describe(),
                                                                  "bytes": planner._bytes(best),
                                                                  "metric": best.metric})
    rec.runs = [MoveRun(m.name) for m in MOVES]
    queue = _previews(planner, state, rec, t0)
    queue.sort(key=lambda q: (q[2], q[0]))
    trained, scale = 0, 1.0           # scale: measured / estimated seconds of the moves trained so far
    for n, (i, rate, est, fixed) in enumerate(queue):
        run, move = rec.runs[i], MOVES[i]
        left = planner.train_budget - (time.perf_counter() - t0)
        rows = min(rows_for(EPOCHS, train_rows), int(max(left / scale - fixed, 0) / rate))
        if rows < MIN_STEPS * BATCH and trained:
            for j, *_ in queue[n:]:
                rec.runs[j].why = "the budget was spent"
            break
        if rows < MIN_STEPS * BATCH:
            run.why = f"the budget pays for < {MIN_STEPS} steps: trained {MIN_STEPS} (the first move always does)"
        _train(planner, state, move, run, max(rows, MIN_STEPS * BATCH), train_rows)
        trained += 1
        scale = max(run.wall_s / (fixed + run.rows * rate), 0.1)
        if run.fits and planner._loss(fp32.metric, run.metric) <= planner.tolerance:
            rec.stopped = (f"Stopped: {run.move} fits the budgets within {planner.tolerance:g} of fp32 "
                           f"{planner.metric} on the validation rows.")
            for j, *_ in queue[n + 1:]:
                rec.runs[j].status, rec.runs[j].why = "skipped", "not needed"
            for r in rec.runs:
                if r.status == "not tried":
                    r.status, r.why = "skipped", "not needed"
            break
    rec.spent_s = time.perf_counter() - t0
    untried = [r.move for r in rec.runs if r.status == "not tried"]
    if not rec.stopped and untried:
        rec.stopped = (f"Stopped: the training budget is spent ({rec.spent_s:.1f} s of {planner.train_budget:g} s); "
                       f"not tried: {', '.join(untried)}; a larger --train-budget tries them.")
    if not rec.stopped:
        rec.stopped = (f"Every applicable move was tried ({trained} trained)." if queue else
                       "No training-aware move can fit the budgets: each plan's bytes or latency is over them "
                       "before any training.")
    return rec


def _previews(planner, state: MoveState, rec: TrainingRecord, t0: float) -> list:
    """[(move index, seconds per row, estimated seconds, fixed seconds)] of the moves worth training."""
    queue, seen = [], {}
    for i, move in enumerate(MOVES):
        run = rec.runs[i]
        plan = move.factory(state, PREVIEW)
        if not plan:
            run.status, run.why = "skipped", "does not apply to this model's tables"
            continue
        key = tuple(_untrained(c) for c in plan)
        if key in seen:
            run.status, run.why = "skipped", f"the same plan as {MOVES[seen[key]].name}"
            continue
        seen[key] = i
        if time.perf_counter() - t0 > planner.train_budget and queue:
            run.why = "the budget was spent before its preview"
            continue
        start = time.perf_counter()
        try:
            prog = planner.build(PlanState({}, training=tuple(plan), move=move.name))
        except CompileError as e:         # a pass that cannot apply to this model: said, not fatal
            run.status, run.why = "skipped", f"cannot apply: {e}"
            continue
        cand = _candidate(planner, plan, prog, move.name)
        wall = time.perf_counter() - start
        run.bytes, run.latency_s, run.fits = planner._bytes(cand), cand.latency_s, planner._fits(cand)
        if not run.fits:
            run.status = "skipped"
            run.why = (f"its plan is {run.bytes:,} B, {cand.latency_s * 1e3:.3g} ms before training: over the "
                       "budgets")
            continue
        seconds, rows = _trained(prog)
        rate = max(seconds, 0.005) / rows if rows else wall / BATCH     # the passes log seconds to 0.01 s
        fixed = max(wall - seconds, 0.0) * 2        # build + size again, then scoring: about the preview's cost
        queue.append((i, rate, fixed + rows_for(EPOCHS, state.train_rows) * rate, fixed))
    return queue


def _train(planner, state: MoveState, move, run: MoveRun, rows: int, train_rows: int) -> None:
    start = time.perf_counter()
    epochs = round(min(EPOCHS, rows / max(train_rows, 1)), 4)
    plan = move.factory(state, MoveBudget(epochs=max(epochs, 1e-4), rows=rows))
    cand = planner.evaluate(PlanState({}, training=tuple(plan), move=move.name), move.name + " (trained)")
    run.status, run.plan = "trained", plan
    run.bytes, run.latency_s, run.metric, run.fits = planner._bytes(cand), cand.latency_s, cand.metric, \
        planner._fits(cand)
    run.train_s, run.rows = _trained(cand.program)
    run.wall_s = time.perf_counter() - start


def _candidate(planner, plan, prog, name) -> Candidate:
    """A preview's bytes and latency (not scored, not kept among the candidates)."""
    cand = Candidate(state=PlanState({}, training=tuple(plan), move=name), plan=plan, metric=float("nan"),
                     metrics={}, size_bytes=planner.size_fn(prog, plan),
                     latency_s=planner.latency.estimate(prog, planner.batch)["total_s"], program=prog)
    if planner.format_sizes is not None:
        planner.format_sizes.add(cand)
    return cand


def _trained(program) -> tuple[float, int]:
    """(seconds, rows) of training the passes recorded in ``program.log``."""
    recs = [r for r in program.log if isinstance(r, dict) and "seconds" in r and "rows_seen" in r]
    return float(sum(r["seconds"] for r in recs)), int(sum(r["rows_seen"] for r in recs))


def _untrained(config):
    """A config with its training bounds cleared: two moves making the same plan compare equal."""
    bounds = {f.name: None for f in dataclasses.fields(config)
              if f.name in ("epochs", "finetune_epochs", "max_steps")}
    return (type(config).__name__, tuple(sorted((k, v) for k, v in dataclasses.asdict(config).items()
                                                if k not in bounds)))
