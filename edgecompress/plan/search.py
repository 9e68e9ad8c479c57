"""The planner: the most accurate plan that fits a device's memory and latency budgets.

1. Measure sensitivity: each table alone at 4 / 2 bits, keep 50 / 25 / 10 % of
   rows, half / quarter dims; each MLP group alone at 50 / 25 % width; all on
   top of the int8 baseline, on held-out data through the numpy runtime.
2. Shrink progressively from int8 (NetAdapt-style): each step takes the move
   with the least estimated metric loss per byte / second saved toward the
   budgets, then measures the real plan. Table bit allocation follows
   sensitivity: robust tables go to 4 / 2 bits first.
3. Keep the Pareto front (size, latency, metric); for the best structural plan
   try distillation. Pick the most accurate plan inside both budgets, preferring
   the smallest among those within ``tolerance`` of the best.
4. With training rows and ``train_budget`` (seconds), when no plan fits or the best that fits is
   beyond ``tolerance`` of fp32: training-aware moves (QAT, product quantization: the registry
   plan/training_moves.py) within that time (plan/training_search.py).
5. Nothing fits: BudgetError naming the smallest and the fastest plans found, the budgets
   they would need, and what training tried (or that --train-budget would try it).

The memory budget holds for every format that ships: the numpy bundle (exact,
``size_fn``) and each app artifact (``format_sizes``: its stored tensors plus
the format's graph overhead, learned from real exports; compile exports the
chosen plan, checks the exact bytes and calls ``observe`` + ``choose`` again
when an artifact came out larger than estimated).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import BudgetError
from ..graph.io import head_logits
from ..metrics import higher_is_better
from ..passes import (ConvInt8Weights, Distill, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                      LinearInt8Weights, MLPNeuronPrune, PassContext, apply_plan, find_groups)
from ..passes.fp16 import Fp16Weights
from ..passes.prune_rows import remap_dtype
from .cost import TableLayout
from .states import Candidate, PlanState, SearchResult, TableState, pareto
from .training_search import search_training, training_said

BITS = (32, 8, 4, 2)
KEEPS = (1.0, 0.5, 0.25, 0.1, 0.05)
LAYER_KEEPS = (1.0, 0.5, 0.25, 0.125)


class Planner:
    """Holds what every evaluation needs. ``evaluate_fn(predict_fn) -> metrics``
    is the held-out evaluation (a subset during search); ``size_fn(program, plan)``
    gives exact bundle bytes; ``latency`` is a CostModel (plan/cost.py) that both
    estimates plans and scores moves; ``format_sizes`` a
    FormatSizes for the app formats that ship (None: the numpy bundle only)."""

    def __init__(self, program, *, metric: str, evaluate_fn, size_fn, latency, latency_batch: int,
                 memory_budget: int | None, latency_budget: float | None, tolerance: float = 5e-4,
                 max_steps: int = 40, extra_steps: int = 3, distill: Distill | None = None, progress=True,
                 log=None, format_sizes=None, context=None, train_budget: float | None = None):
        self.base, self.context = program, context or PassContext()   # what passes learn from
        self.metric = metric
        self.higher = higher_is_better(metric)
        self.evaluate_fn, self.size_fn, self.latency = evaluate_fn, size_fn, latency
        self.batch = latency_batch
        self.mem, self.lat = memory_budget, latency_budget
        self.tolerance, self.max_steps, self.extra_steps = tolerance, max_steps, extra_steps
        self.distill_config = distill or Distill()
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.format_sizes = format_sizes
        self.train_budget, self.training = train_budget, None    # seconds; plan/training_search.py's record
        self.cache: dict = {}
        self.table_cache: dict = {}
        self.tables = program.tables()
        self.groups = find_groups(program)

    # --- evaluation ----------------------------------------------------------
    def _loss(self, a: float, b: float) -> float:
        """How much worse b is than a (positive = worse)."""
        return (a - b) if self.higher else (b - a)

    def _table_param(self, name, st: TableState):
        key = (name, st)
        if key not in self.table_cache:
            prog = self.base.copy()
            plan = []
            if st.keep < 1:
                plan.append(EmbeddingRowPrune(keep_ratio=st.keep, tables=(name,)))
            if st.dim:
                plan.append(EmbeddingDimReduce(dim=st.dim, tables=(name,)))
            if st.bits == 16:
                plan.append(Fp16Weights(linear=False, tables=(name,)))
            elif st.bits < 32:
                plan.append(EmbeddingRowwiseQuant(bits=st.bits, tables=(name,)))
            apply_plan(prog, plan, self.context)
            self.table_cache[key] = prog.params[name]
        return self.table_cache[key]

    def plan_of(self, state: PlanState) -> list:
        """A state's pass configs; where Linear layers go int8, convolution kernels do too."""
        plan = state.plan(self.distill_config)
        if state.linear == "int8" and any(r == "conv" for r in self.base.roles.values()):
            plan.append(ConvInt8Weights())
        return plan

    def build(self, state: PlanState):
        """The compressed program for a state (tables from the per-table cache)."""
        if state.distill or state.training:
            prog = self.base.copy()
            return apply_plan(prog, self.plan_of(state), self.context)
        prog = self.base.copy()
        for name, st in state.tables.items():
            prog.params[name] = self._table_param(name, st)
        rest = [c for c in self.plan_of(state) if isinstance(c, (MLPNeuronPrune, LinearInt8Weights, ConvInt8Weights))]
        if state.linear == "fp16":          # the tables came from the cache: only the Linear half of the pass
            rest.insert(0, Fp16Weights(embeddings=False))
        return apply_plan(prog, rest, self.context)

    def evaluate(self, state: PlanState, label: str = "") -> Candidate:
        key = state.key()
        if key in self.cache:
            return self.cache[key]
        prog = self.build(state)
        ex = prog.executor()
        metrics = self.evaluate_fn(lambda feeds: np.asarray(
            head_logits(ex.run(feeds), prog.outputs, prog.metric_output), dtype=np.float32).reshape(-1))
        plan = self.plan_of(state)
        cand = Candidate(state=state, plan=plan, metric=float(metrics[self.metric]), metrics=metrics,
                         size_bytes=self.size_fn(prog, plan), latency_s=self.latency.estimate(prog, self.batch)["total_s"],
                         program=prog, label=label or state.describe())
        if self.format_sizes is not None:
            self.format_sizes.add(cand)
        self.cache[key] = cand
        return cand

    def sizes(self, c: Candidate) -> dict:
        """Bytes per shipped format: the numpy bundle (exact) and each artifact (estimated)."""
        out = {"numpy": c.size_bytes}
        if self.format_sizes is not None:
            out.update(self.format_sizes.estimate(c))
        return out

    def _bytes(self, c: Candidate) -> int:
        """What the memory budget binds: the largest shipped payload."""
        return max(self.sizes(c).values())

    # --- analytic estimates for choosing moves --------------------------------
    def _layout(self, name, st: TableState) -> TableLayout:
        rows, full = self.base.params[name].shape
        return TableLayout.planned(rows, full, bits=st.bits, keep=st.keep, dim=st.dim)

    def _table_bytes(self, name, st: TableState) -> float:
        t = self._layout(name, st)
        remap = t.rows * np.dtype(remap_dtype(t.stored_rows)).itemsize if t.remap else 0
        proj = t.dim * t.full_dim * 4 if t.proj else 0
        return t.stored_rows * t.row_bytes + remap + proj

    def _moves(self, state: PlanState):
        for name in self.tables:
            st = state.tables[name]
            full = self.base.params[name].shape[1]
            if st.bits in BITS[:-1]:
                nb = BITS[BITS.index(st.bits) + 1]
                yield ("bits", name, nb), state.with_table(name, bits=nb)
            if st.keep in KEEPS[:-1]:
                nk = KEEPS[KEEPS.index(st.keep) + 1]
                yield ("keep", name, nk), state.with_table(name, keep=nk)
            dims = [d for d in (full // 2, full // 4, full // 8) if d >= 4]
            cur = st.dim or full
            nxt = [d for d in dims if d < cur]
            if nxt:
                yield ("dim", name, nxt[0]), state.with_table(name, dim=nxt[0])
        for g in self.groups:
            k = state.layers.get(g.producer, 1.0)
            if k in LAYER_KEEPS[:-1]:
                nk = LAYER_KEEPS[LAYER_KEEPS.index(k) + 1]
                yield ("layer", g.producer, nk), state.with_layer(g.producer, nk)

    def _est_loss(self, state: PlanState) -> float:
        """Sum of measured single-change losses (sensitivity is additive here)."""
        total = 0.0
        for name, st in state.tables.items():
            s = self.sens.get(name, {})
            total += s.get(("bits", st.bits), 0.0) + s.get(("keep", st.keep), 0.0) + s.get(("dim", st.dim), 0.0)
        for layer, k in state.layers.items():
            total += self.sens.get(layer, {}).get(("layer", k), 0.0)
        return total

    def _state_bytes(self, state: PlanState) -> float:
        """Tables plus prunable MLP weights: what the moves can change."""
        per = 1 if state.linear == "int8" else 4
        mlp = 0.0
        for g in self.groups:
            out_f, in_f = self.base.params[g.producer].shape
            consumer = self.base.params[g.consumer].shape[0]
            mlp += state.layers.get(g.producer, 1.0) * out_f * (in_f + consumer) * per
        return sum(self._table_bytes(n, st) for n, st in state.tables.items()) + mlp

    # --- the search -------------------------------------------------------------
    def run(self, resume: bool = False) -> SearchResult:
        """Search; ``resume`` continues shrinking from the smallest plan measured so far (after
        the size model learned from real exports that the plans it took to fit do not)."""
        from tqdm.auto import tqdm
        t0 = time.perf_counter()
        fp32 = PlanState({t: TableState(bits=32) for t in self.tables}, {}, "fp32")
        int8 = PlanState({t: TableState() for t in self.tables}, {}, "int8")
        bar = tqdm(total=2 + self.max_steps, desc="plan search", disable=None if self.progress else True,
                   leave=False)
        if resume:
            state = min((c for c in self.cache.values() if not (c.state.distill or c.state.training)),
                        key=self._bytes).state
        else:
            self.evaluate(fp32, "fp32")
            # fp16 everywhere: half of fp32 at (nearly) its accuracy, for budgets int8 rows would overshoot
            self.evaluate(PlanState({t: TableState(bits=16) for t in self.tables}, {}, "fp16"), "fp16")
            base = self.evaluate(int8, "int8 rows + int8 Linear")
            self.sens = self._sensitivity(base, int8, bar)
            state = int8
        bar.update(2)
        extra = 0
        for _ in range(self.max_steps):
            cur = self.evaluate(state)
            excess_b = max(0.0, self._bytes(cur) - self.mem) if self.mem else 0.0
            excess_t = max(0.0, cur.latency_s - self.lat) if self.lat else 0.0
            if excess_b == 0 and excess_t == 0:
                extra += 1
                if extra > self.extra_steps:
                    break
                # keep shrinking a little to map the front below the budget
                excess_b = max(self._bytes(cur) * 0.25, 1.0)
            best, best_score = None, None
            cur_bytes, cur_loss = self._state_bytes(state), self._est_loss(state)
            for move, nxt in self._moves(state):
                saved_b = cur_bytes - self._state_bytes(nxt)
                saved_t = self._latency_saving(move, state, nxt)
                gain = (saved_b / excess_b if excess_b else 0.0) + (saved_t / excess_t if excess_t else 0.0)
                if gain <= 0:
                    continue
                loss = max(self._est_loss(nxt) - cur_loss, 0.0) + 1e-6
                score = loss / gain
                if best_score is None or score < best_score:
                    best, best_score = nxt, score
            if best is None:
                break
            state = best
            self.evaluate(state)
            bar.update(1)
        bar.close()
        cands = list(self.cache.values())
        feasible = [c for c in cands if self._fits(c)]
        if feasible:
            top = self._choose(feasible)
            structural = any(s.keep < 1 or s.dim for s in top.state.tables.values()) or \
                any(k < 1 for k in top.state.layers.values())
            if structural and self.context.train_data is not None:   # never on held-out rows
                self.log("distilling the chosen plan from the source model")
                d = self.evaluate(dataclasses.replace(top.state, distill=True))
                if self._fits(d):
                    feasible.append(d)
            cands = list(self.cache.values())
        if not resume and self.train_budget is not None and self.context.train_data is not None:
            self.training = search_training(self, self.evaluate(fp32), feasible)
            cands = list(self.cache.values())
            feasible = [c for c in cands if self._fits(c)]
        self._result = SearchResult(chosen=None, candidates=cands, front=pareto(cands, self.higher),
                                    sensitivity=self._sens_report(),
                                    budgets={"memory_bytes": self.mem, "latency_s": self.lat,
                                             "latency_batch": self.batch},
                                    metric_name=self.metric, seconds=time.perf_counter() - t0, feasible=feasible,
                                    training=self.training)
        if not feasible:
            raise self._infeasible(cands)
        self._result.chosen = self._choose(feasible)
        return self._result

    def choose(self) -> SearchResult:
        """Choose again among the plans already measured (after ``format_sizes.observe``
        learned that an artifact is larger than estimated); BudgetError if none fits now."""
        cands = list(self.cache.values())
        feasible = [c for c in cands if self._fits(c)]
        if not feasible:
            raise self._infeasible(cands)
        return dataclasses.replace(self._result, chosen=self._choose(feasible), feasible=feasible,
                                   candidates=cands, front=pareto(cands, self.higher))

    def _latency_saving(self, move, state, nxt) -> float:
        """Seconds per batch a move saves, from the cost model that estimates the plans
        (the device's measured table when there is one)."""
        if not self.lat:
            return 0.0
        kind, name, _ = move
        if kind == "layer":
            return self._layer_seconds(name, state) - self._layer_seconds(name, nxt)
        return self._gather_seconds(name, state.tables[name]) - self._gather_seconds(name, nxt.tables[name])

    def _gather_seconds(self, name, st: TableState) -> float:
        ids = self.latency.profile.tables.get(name)
        if ids is None:     # a profile without per-table counts: the mean over the tables
            ids = sum(self.latency.profile.ids.values()) / max(len(self.tables), 1)
        return self.latency.gather_s(self._layout(name, st), self.batch * ids)

    def _layer_seconds(self, producer, state: PlanState) -> float:
        """The producer Linear and its consumer at the state's width of the producer's outputs
        (int8 weights are dequantized at load: fp32 speed)."""
        g = next(g for g in self.groups if g.producer == producer)
        out_f, in_f = self.base.params[producer].shape
        consumer = self.base.params[g.consumer].shape[0]
        width = state.layers.get(producer, 1.0) * out_f
        return self.latency.linear_s(in_f, width, "fp32", self.batch) + \
            self.latency.linear_s(width, consumer, "fp32", self.batch)

    def _sensitivity(self, base: Candidate, int8: PlanState, bar) -> dict:
        total = sum(self._table_bytes(t, TableState()) for t in self.tables) or 1
        sens: dict = {}
        self.measured = set()
        for name in self.tables:
            sens[name] = {("bits", 8): 0.0, ("bits", 32): 0.0, ("keep", 1.0): 0.0, ("dim", None): 0.0}
            if self._table_bytes(name, TableState()) < 0.01 * total:
                continue     # too small to matter: never worth a measurement
            full = self.base.params[name].shape[1]
            trials = [("bits", 4), ("bits", 2)] + [("keep", k) for k in KEEPS[1:]]
            trials += [("dim", d) for d in (full // 2, full // 4, full // 8) if d >= 4]
            for kind, v in trials:
                st = int8.with_table(name, **{kind: v})
                if kind == "keep" and self.context.id_counts(self.base, name) is None:
                    continue
                sens[name][(kind, v)] = self._loss(base.metric, self.evaluate(st).metric)
                self.measured.add((name, (kind, v)))
        for g in self.groups:
            sens[g.producer] = {("layer", 1.0): 0.0}
            for k in LAYER_KEEPS[1:]:
                sens[g.producer][("layer", k)] = self._loss(base.metric,
                                                            self.evaluate(int8.with_layer(g.producer, k)).metric)
                self.measured.add((g.producer, ("layer", k)))
        # unmeasured moves (small tables, no frequency data) are made expensive, not free
        big = max([abs(v) for s in sens.values() for v in s.values()] + [1e-3])
        for name in self.tables:
            full = self.base.params[name].shape[1]
            for key in [("bits", 4), ("bits", 2)] + [("keep", k) for k in KEEPS[1:]] + \
                    [("dim", d) for d in (full // 2, full // 4, full // 8) if d >= 4]:
                sens[name].setdefault(key, big * 10)
        return sens

    def _sens_report(self) -> dict:
        """Measured sensitivities only (placeholders for unmeasured moves are left out)."""
        return {name: {f"{k[0]}={k[1]}": v for k, v in s.items() if (name, k) in self.measured}
                for name, s in self.sens.items()}

    def drop_unfit_formats(self, notes=None) -> list:
        """Stop budgeting the app formats in which no measured plan fits the memory budget
        (their smallest plan named in ``notes``); the numpy bundle always ships. Returns them."""
        if self.format_sizes is None or self.mem is None or not self.cache:
            return []
        cands = list(self.cache.values())
        out = []
        for fmt in list(self.format_sizes.formats):
            least = min(self.format_sizes.estimate(c)[fmt] for c in cands)
            if least > self.mem:
                out.append(fmt)
                if notes is not None:
                    notes.append(f"{fmt} artifact not produced: no plan found fits the memory budget of "
                                 f"{self.mem:,} B in {fmt} (smallest {least:,} B, {self.format_sizes.how(fmt)}); "
                                 f"ask for it with formats=[...] to make that an error")
        self.format_sizes.formats = [f for f in self.format_sizes.formats if f not in out]
        return out

    def _fits(self, c: Candidate) -> bool:
        return (self.mem is None or self._bytes(c) <= self.mem) and (self.lat is None or c.latency_s <= self.lat)

    def _choose(self, feasible) -> Candidate:
        best = max(feasible, key=lambda c: c.metric if self.higher else -c.metric)
        near = [c for c in feasible if self._loss(best.metric, c.metric) <= self.tolerance]
        return min(near, key=lambda c: (self._bytes(c), c.latency_s))

    def _infeasible(self, cands) -> BudgetError:
        fastest = min(cands, key=lambda c: c.latency_s)
        budget = []
        if self.mem:
            budget.append(f"memory {self.mem:,} B")
        if self.lat:
            budget.append(f"latency {self.lat * 1e3:.3g} ms at batch {self.batch}")
        per_format = []
        for fmt in self.sizes(cands[0]):
            smallest = min(cands, key=lambda c: self.sizes(c)[fmt])
            n = self.sizes(smallest)[fmt]
            how = "exact" if fmt == "numpy" else self.format_sizes.how(fmt)
            per_format.append(f"{fmt}: smallest plan {n:,} B ({how}; {smallest.state.describe()}, "
                              f"{self.metric} {smallest.metric:.4f})" + (" - over the memory budget"
                                                                          if self.mem and n > self.mem else ""))
        need = self._bytes(min(cands, key=self._bytes))
        return BudgetError(
            f"no plan fits the budgets ({', '.join(budget)}) in every shipped format after {len(cands)} plans. "
            + "; ".join(per_format) +
            f"; fastest plan: {fastest.latency_s * 1e3:.3g} ms at batch {self.batch} "
            f"({fastest.state.describe()}). Raise the budgets to at least --memory-budget "
            f"{need}B / --latency-budget {fastest.latency_s * 1e3:.3g}ms@{self.batch}, ship fewer formats "
            "(--formats), or pick a bigger target. " + training_said(self))
