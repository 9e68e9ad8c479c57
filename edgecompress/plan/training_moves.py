"""The training-aware moves the planner may try (compile(..., train_data=..., train_budget="10m")).

A move is a name and ``factory(state, budget) -> [pass configs]`` (None when it does not apply to
the model): the whole plan, applied to the source program. ``state`` (MoveState) says what the
move starts from; ``budget`` (MoveBudget) how much it may train: ``epochs`` over the training rows,
at most ``rows`` rows seen. A factory turns that into its passes' own bounds (epochs, max_steps),
so the plan stored in the manifest replays to the same bytes (no wall-clock bound inside a pass).
The planner (plan/training_search.py) calls each factory once with ``PREVIEW`` (one step: the
plan's exact bytes and latency before paying for training), then with the rows the time budget
leaves. Adding a move is one line in ``MOVES``; listed from the least to the most aggressive,
the order the planner tries moves of equal estimated cost in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..passes import EmbeddingRowwiseQuant, LinearInt8Weights
from ..passes.gradual_prune import GradualPrune
from ..passes.product_quant import ProductQuant, pq_tables
from ..passes.qat import QAT
from ..passes.qr_embedding import EmbeddingQR

BATCH = 1024                  # training batch of every move (the passes' default)


@dataclass(frozen=True)
class MoveState:
    program: object           # the source program (fp32): every move starts from it
    train_rows: int           # training rows available
    best: object = None       # the best post-training candidate (plan/states.py Candidate), None if none fits


@dataclass(frozen=True)
class MoveBudget:
    epochs: float             # passes over the training rows asked for
    rows: int                 # rows the move may see at most (from the time budget)

    def steps(self, batch_size: int = BATCH) -> int:
        """The pass's ``max_steps``: as many whole batches as ``rows`` allows, at least one."""
        return max(1, self.rows // batch_size)


PREVIEW = MoveBudget(epochs=1.0, rows=BATCH)      # one step: the bytes and latency without the training


@dataclass(frozen=True)
class TrainingMove:
    name: str
    factory: Callable         # (MoveState, MoveBudget) -> list of pass configs, or None


def qat(bits: int):
    """Quantization-aware training of every table's rows at ``bits`` (1 = sign codes) + int8 Linear."""
    def factory(state: MoveState, budget: MoveBudget):
        return [QAT(bits=bits, linear_int8=True, epochs=budget.epochs, max_steps=budget.steps(BATCH),
                    batch_size=BATCH, seed=0)]
    return factory


def product_quant(bits: int, sub_dim: int | None = None, sub_vectors: int | None = None):
    """Product quantization with fine-tuned codebooks: sub-vectors of ``sub_dim`` values (or
    ``sub_vectors`` per row), ``bits``-bit codes; int8 Linear. Tables of different widths get a
    config each; None when a width does not split."""
    def factory(state: MoveState, budget: MoveBudget):
        prog = state.program
        widths: dict = {}
        for t in pq_tables(prog, ProductQuant()):
            widths.setdefault(prog.params[t].shape[1], []).append(t)
        plan = []
        for d, names in sorted(widths.items()):
            m = sub_vectors or (d // sub_dim if sub_dim and d % sub_dim == 0 else 0)
            if not m or d % m:
                return None
            plan.append(ProductQuant(sub_vectors=m, bits=bits, tables=None if len(widths) == 1 else tuple(names),
                                     finetune_epochs=budget.epochs, max_steps=budget.steps(BATCH),
                                     batch_size=BATCH, seed=0))
        return plan + [LinearInt8Weights()] if plan else None
    return factory


def gradual_prune(row_keep: float, dim_keep: float, neuron_keep: float):
    """Gradual pruning (Zhu & Gupta schedule, fine-tuned) of rows, dimensions and neurons, then int4
    rows (clip search) + int8 Linear: synthetic DLRM at 63x and Δ -0.0006 (benchmarks/results/
    compression_gradual_synthetic.json)."""
    def factory(state: MoveState, budget: MoveBudget):
        return [GradualPrune(row_keep=row_keep, dim_keep=dim_keep, neuron_keep=neuron_keep, epochs=budget.epochs,
                             max_steps=budget.steps(BATCH), batch_size=BATCH, seed=0),
                EmbeddingRowwiseQuant(bits=4, clip_search=True), LinearInt8Weights()]
    return factory


def quotient_remainder(collisions: int):
    """Quotient-remainder tables (m = ``collisions`` ids per quotient row) trained by distillation,
    then int4 rows + int8 Linear: for budgets no quantization reaches (~100x, Δ ~ -0.009 on synthetic)."""
    def factory(state: MoveState, budget: MoveBudget):
        return [EmbeddingQR(collisions=collisions, epochs=budget.epochs, max_steps=budget.steps(BATCH),
                            batch_size=BATCH, seed=0),
                EmbeddingRowwiseQuant(bits=4, clip_search=True), LinearInt8Weights()]
    return factory


MOVES = [
    TrainingMove("QAT int4 rows + int8 Linear", qat(4)),
    TrainingMove("QAT int2 rows + int8 Linear", qat(2)),
    TrainingMove("product quantization, 4 values per 8-bit code + int8 Linear", product_quant(8, sub_dim=4)),
    TrainingMove("QAT 1-bit sign rows + int8 Linear", qat(1)),
    TrainingMove("product quantization, 8 values per 4-bit code + int8 Linear", product_quant(4, sub_dim=8)),
    TrainingMove("product quantization, 2 sub-vectors of 4 bits per row + int8 Linear",
                 product_quant(4, sub_vectors=2)),
    TrainingMove("gradual pruning to 1/8 rows, 1/4 dims, 1/2 neurons + int4 rows + int8 Linear",
                 gradual_prune(0.125, 0.25, 0.5)),
    TrainingMove("product quantization, whole rows as 4-bit codes + int8 Linear", product_quant(4, sub_vectors=1)),
    TrainingMove("quotient-remainder tables (m=16) + int4 rows + int8 Linear", quotient_remainder(16)),
]


def rows_for(epochs: float, train_rows: int) -> int:
    """Rows ``epochs`` passes over ``train_rows`` see."""
    return int(math.ceil(epochs * train_rows))
