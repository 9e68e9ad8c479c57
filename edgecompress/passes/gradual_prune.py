"""Gradual pruning with retraining (Zhu & Gupta 2017, "To prune, or not to prune"): table rows,
embedding dimensions and hidden MLP neurons are masked a little at a time while the program is
fine-tuned (distillation from the source model + labels), then the layers are made physically
smaller exactly as the one-shot structural passes make them.

    plan = [GradualPrune(row_keep=0.5, dim_keep=0.5, neuron_keep=0.5, epochs=1)]   # needs train_data
    plan = [GradualPrune(row_keep=0.25), EmbeddingRowwiseQuant(bits=4), LinearInt8Weights()]

Schedule: the share of each unit pruned at step t is s_t = s_f + (s_i - s_f) (1 - t / n)^3 with
s_f = 1 - keep, s_i = ``initial_sparsity`` and n = ``ramp`` x the training steps; masks are
updated every ``prune_every`` steps up to n, the rest of the steps fine-tune the final masks.
A pruned unit stays pruned. Scores: ``first_order`` (|w x grad| summed over the steps so far:
rows the fine-tuning never gathers score 0, so it also follows row frequency) or ``magnitude``
(norm of the projected row; norm of a dimension's column times its projection row; a neuron's
producer-row norm times its consumer-column norm, as prune_mlp). Magnitude is weak for rows:
on the test DLRM, 10 % of rows kept, one-shot by frequency + fine-tuning 0.7659 AUC, gradual by
magnitude 0.7457, gradual by first order 0.7692 (fp32 0.7776).

What the student computes, so the final shapes compute the same:
- rows: pruned ids go through a remap to one extra trainable fallback row (set to the
  count-weighted mean of the rows it replaces when they are pruned), as prune_rows stores them;
- dimensions: the table starts as A = W V, P = V^T (full-rank eigenbasis of W^T W, reduce_dims'
  low_rank: A P = W) and pruned columns of A are masked; A and P are trained;
- neurons: the consumer's input columns of pruned neurons are masked (exactly zero contribution
  whatever the activation).
At the end the kept rows / columns / neurons are written by prune_rows.keep_rows,
reduce_dims.with_projection and prune_mlp.shrink_group: the same params and graph as the
one-shot passes, so every export format expresses it as today (no export hook). Padding rows
are pinned (never pruned) and restored after every step. Seeded and bounded by epochs /
``max_steps`` (no wall-clock budget): replaying the manifest's plan gives the same bytes."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register
from .distill import _restore_padding, fine_tune, teacher_of
from .prune_mlp import find_groups, shrink_group
from .prune_rows import keep_rows
from .reduce_dims import low_rank, with_projection


@dataclasses.dataclass(frozen=True)
class GradualPrune(PassConfig):
    NAME = "gradual_prune"
    VERSION = 1
    NEEDS_TRAIN_DATA = True
    row_keep: float = 1.0          # share of each table's rows kept at the end (final sparsity 1 - row_keep)
    dim_keep: float = 1.0          # share of each table's dimensions kept (stored as rows [R, d] + projection)
    neuron_keep: float = 1.0       # share of each prunable MLP group's hidden neurons kept
    tables: tuple | None = None    # names; None = every fp32 table only ever gathered from
    layers: tuple | None = None    # producer weight names; None = every prunable group (prune_mlp.find_groups)
    min_width: int = 4             # neurons: never fewer per group (as prune_mlp)
    criterion: str = "first_order"  # or "magnitude" (weak for rows: rarely seen rows keep their large norms)
    initial_sparsity: float = 0.0  # s_i of the schedule
    ramp: float = 0.75             # share of the steps over which sparsity rises; the rest fine-tunes
    prune_every: int = 10          # steps between mask updates
    epochs: float = 1.0
    max_steps: int = 0             # 0 = as many as the epochs take
    lr: float = 1e-3
    batch_size: int = 1024
    distill_weight: float = 0.5    # share of the loss against the source model (0: labels only)
    temperature: float = 1.0
    negatives: int = 1             # retrieval data (positives only): random items per positive
    seed: int = 0

    def __post_init__(self):
        for setting in ("row_keep", "dim_keep", "neuron_keep"):
            self.check_range(setting, 0, 1, lo_open=True)
        if min(self.row_keep, self.dim_keep, self.neuron_keep) == 1:
            self._fail("row_keep", "below 1 for at least one of row_keep, dim_keep, neuron_keep (nothing to prune)")
        self.check_names("tables")
        self.check_names("layers")
        self.check_range("min_width", 1, float("inf"))
        self.check_choice("criterion", ("magnitude", "first_order"))
        pruned = [k for k in (self.row_keep, self.dim_keep, self.neuron_keep) if k < 1]
        self.check_range("initial_sparsity", 0, 1 - max(pruned))      # s_i <= every final sparsity
        self.check_range("ramp", 0, 1)
        self.check_range("prune_every", 1, float("inf"))
        self.check_range("epochs", 0, float("inf"), lo_open=True)
        self.check_training()


# --- the schedule ----------------------------------------------------------------------

def sparsity_at(t: int, ramp_steps: int, s_i: float, s_f: float) -> float:
    """Zhu & Gupta's cubic schedule: s_f + (s_i - s_f) (1 - t/n)^3, s_f from step n on."""
    if ramp_steps <= 0 or t >= ramp_steps:
        return s_f
    return s_f + (s_i - s_f) * (1 - t / ramp_steps) ** 3


def total_steps(config: GradualPrune, rows: int) -> int:
    steps = max(1, math.ceil(config.epochs * math.ceil(rows / config.batch_size)))
    return min(steps, config.max_steps) if config.max_steps else steps


def schedule(config: GradualPrune, steps: int) -> list[int]:
    """The steps before which masks are updated: every ``prune_every`` up to the end of the ramp
    (which may be after the last step: ramp = 1 prunes to the final masks with no recovery)."""
    end = int(config.ramp * steps)
    return sorted(set(range(0, end, config.prune_every)) | {end})


# --- what is pruned ----------------------------------------------------------------------

@dataclasses.dataclass
class Unit:
    """One prunable axis: a table's rows or dims, or a group's hidden neurons."""
    kind: str                      # "rows" | "dims" | "neurons"
    name: str                      # table name, or the group's producer weight
    n: int
    final: int                     # units kept at the end
    alive: np.ndarray              # bool [n]
    pinned: np.ndarray             # bool [n]: never pruned (padding rows)
    group: object = None
    score_acc: np.ndarray | None = None      # first_order: accumulated |w x grad|


def choose_units(program, config: GradualPrune, filter_fn) -> list[Unit]:
    from .qat import gathered_tables
    units = []
    for name in gathered_tables(program, config):
        p = program.params[name]
        if program.roles.get(name) != "embedding" or not filter_fn(name, "embedding"):
            continue
        if "remap" in p.arrays or "proj" in p.arrays:
            raise CompileError(f"gradual_prune on {name!r}: the table is already pruned or reduced; prune once")
        rows, dims = p.arrays["data"].shape
        pinned = np.zeros(rows, bool)
        pinned[[r for r in program.padding_rows.get(name, []) if r < rows]] = True
        keep = max(1, int(round(rows * config.row_keep)), int(pinned.sum()))
        if keep < rows:
            units.append(Unit("rows", name, rows, keep, np.ones(rows, bool), pinned))
        keep = max(1, int(round(dims * config.dim_keep)))
        if keep < dims:
            units.append(Unit("dims", name, dims, keep, np.ones(dims, bool), np.zeros(dims, bool)))
    for g in find_groups(program):
        if (config.layers is not None and g.producer not in config.layers) or not filter_fn(g.producer, "linear"):
            continue
        width = program.params[g.producer].shape[0]
        keep = max(config.min_width, int(round(width * config.neuron_keep)))
        if keep < width:
            units.append(Unit("neurons", g.producer, width, keep, np.ones(width, bool), np.zeros(width, bool), g))
    return units


def working_program(program, units):
    """A copy the student is built from: pruned tables get an identity remap to a fallback row
    appended at the end, reduced tables the full-rank form A = W V, P = V^T."""
    work = program.copy()
    for u in units:
        p = work.params[u.name]
        w = p.arrays["data"]
        if u.kind == "dims":
            a, proj = low_rank(w, w.shape[1])
            work.params[u.name] = p.replace(arrays={**p.arrays, "data": a, "proj": proj})
        elif u.kind == "rows":
            data = np.concatenate([w, np.zeros((1, w.shape[1]), np.float32)])
            work.params[u.name] = p.replace(arrays={**p.arrays, "data": data,
                                                    "remap": np.arange(len(w), dtype=np.int64)})
    return work


def student_module(work, units):
    """The masked student: a ProgramModule whose gathers apply the dimension masks and whose
    consumer Linears apply the neuron masks (masks are buffers the schedule updates in place)."""
    import torch
    import torch.nn.functional as F

    from ..graph.torch_exec import ProgramModule, _key

    class MaskedModule(ProgramModule):
        def _gather(self, pname, idx):
            key = _key(pname)
            if key not in self.dim_masks:
                return super()._gather(pname, idx)
            if pname in self.remaps:
                idx = getattr(self, self.remaps[pname])[idx].long()
            return (self.tables[key](idx) * self.dim_masks[key]) @ self.projections[key]

    module = MaskedModule(work, trainable=True)
    module.dim_masks, module.neuron_masks = {}, {}
    for u in units:
        if u.kind == "dims":
            module.dim_masks[_key(u.name)] = torch.ones(u.n)
        elif u.kind == "neurons":
            mask = module.neuron_masks[u.name] = torch.ones(u.n)
            lin = module.linears[_key(u.group.consumer)]
            lin.forward = (lambda x, lin=lin, mask=mask: F.linear(x, lin.weight * mask, lin.bias))
    return module


# --- scores and mask updates -------------------------------------------------------------

def _magnitude(student, u: Unit):
    import torch

    from ..graph.torch_exec import _key
    with torch.no_grad():
        if u.kind == "neurons":
            w1 = student.linears[_key(u.group.producer)].weight
            w2 = student.linears[_key(u.group.consumer)].weight
            return (w1.norm(dim=1) * w2.norm(dim=0)).numpy()
        key = _key(u.name)
        a = student.tables[key].weight
        if u.kind == "dims":
            return (a.norm(dim=0) * student.projections[key].norm(dim=1)).numpy()
        rows = a[:u.n]
        if key in student.dim_masks:
            rows = (rows * student.dim_masks[key]) @ student.projections[key]
        return rows.norm(dim=1).numpy()


def _accumulate_first_order(student, units) -> None:
    """|w x grad| of each unit's weights, summed onto its axis (called after backward)."""
    from ..graph.torch_exec import _key

    def fo(p, axis):
        return (p.detach() * p.grad).abs().sum(axis).numpy() if p.grad is not None else 0.0
    for u in units:
        if u.kind == "neurons":
            s = fo(student.linears[_key(u.group.consumer)].weight, 0) + \
                fo(student.linears[_key(u.group.producer)].weight, 1)
        elif u.kind == "dims":
            s = fo(student.tables[_key(u.name)].weight, 0) + fo(student.projections[_key(u.name)], 1)
        else:
            s = fo(student.tables[_key(u.name)].weight, 1)
            s = s[:u.n] if not np.isscalar(s) else s
        u.score_acc = s if u.score_acc is None else u.score_acc + s


def _prune_to(student, u: Unit, keep: int, criterion: str, counts: dict) -> None:
    """Drop the lowest-scoring alive, unpinned units until ``keep`` are alive (ties: lowest id first)."""
    import torch

    from ..graph.torch_exec import _key
    drop = int(u.alive.sum()) - keep
    if drop <= 0:
        return
    score = u.score_acc if criterion == "first_order" and u.score_acc is not None else \
        _magnitude(student, u)           # first order before any step has a gradient: magnitude
    score = np.where(u.alive & ~u.pinned, np.asarray(score, np.float64), np.inf)
    dropped = np.sort(np.lexsort((np.arange(u.n), score))[:drop])
    u.alive[dropped] = False
    with torch.no_grad():
        if u.kind == "neurons":
            student.neuron_masks[u.name][dropped] = 0.0
        elif u.kind == "dims":
            student.dim_masks[_key(u.name)][dropped] = 0.0
        else:        # the fallback row becomes the count-weighted mean of every row it stands for
            w = student.tables[_key(u.name)].weight
            c = counts[u.name]
            mass_old = float(c[~u.alive].sum() - c[dropped].sum())
            weights = torch.as_tensor(c[dropped], dtype=torch.float64)
            new = (w[dropped].double() * weights[:, None]).sum(0)
            w[u.n] = ((w[u.n].double() * mass_old + new) / (mass_old + float(weights.sum()))).float()
            getattr(student, student.remaps[u.name])[dropped] = u.n


# --- training -----------------------------------------------------------------------------

def train_masked(program, config: GradualPrune, ctx, filter_fn=lambda name, role: True):
    """Fine-tune while masking on the schedule. Returns (work program with the trained weights,
    units with their final masks, the masked student (the torch reference), record)."""
    import torch

    from ..graph.torch_exec import _key
    if ctx.train_data is None:
        raise CompileError("gradual_prune needs training rows: compile(..., train_data=...) (it never trains "
                           "on held-out rows)")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("gradual_prune with distill_weight > 0 needs the source model (PassContext(teacher=...))")
    units = choose_units(program, config, filter_fn)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = ctx.train_data
    work = working_program(program, units)
    student = student_module(work, units).train()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    padding = {}
    for name, rows in program.padding_rows.items():
        if _key(name) in student.tables:
            padding[_key(name)] = (list(rows), student.tables[_key(name)].weight.detach()[list(rows)].clone())
    counts = {}
    for u in units:
        if u.kind == "rows":
            c = ctx.id_counts(program, u.name)
            counts[u.name] = (np.zeros(u.n) if c is None else c.astype(np.float64)) + 1e-3
    steps = total_steps(config, len(data))
    events, ramp = schedule(config, steps), int(config.ramp * steps)
    log = []

    def prune(t):
        for u in units:
            s_f = 1 - u.final / u.n
            keep = max(u.final, min(u.n, int(round(u.n * (1 - sparsity_at(t, ramp, config.initial_sparsity, s_f))))))
            _prune_to(student, u, keep, config.criterion, counts)
        log.append([t, {f"{u.kind}:{u.name}": int(u.alive.sum()) for u in units}])
    trained = {}
    if steps:
        first_order = (lambda: _accumulate_first_order(student, units)) if config.criterion == "first_order" else None
        trained = fine_tune(student, opt, program, data, config, teacher_of(ctx, program), rng,
                            label_weight=1 - config.distill_weight,
                            before_step=lambda t: prune(t) if t in events else None, after_backward=first_order,
                            after_step=lambda: _restore_padding(student, padding),
                            stop=lambda done, seen: done >= steps)
    prune(steps)                                     # the final masks (a no-op when the ramp ended earlier)
    student.eval()
    student.state_to_program(work)
    record = {"steps": steps, "seconds": trained.get("seconds", 0.0), "ramp_steps": ramp,
              "schedule": log, "kept": log[-1][1] if log else {},
              "loss_first": trained.get("loss_first"), "loss_last": trained.get("loss_last")}
    return work, units, student, record


def shrink(program, work, units) -> None:
    """The trained weights, with the final masks made physical by the one-shot passes' own code."""
    for name in program.params:
        program.params[name] = work.params[name]
    tables = {}
    for u in units:
        tables.setdefault(u.name, {})[u.kind] = u
    for name, by_kind in tables.items():
        if "neurons" in by_kind:
            continue
        p, w = program.params[name], work.params[name]
        data, proj = w.arrays["data"], w.arrays.get("proj")
        orig = {k: v for k, v in w.arrays.items() if k not in ("data", "proj", "remap")}
        if "dims" in by_kind:
            kept_d = np.flatnonzero(by_kind["dims"].alive)
            data, proj = np.ascontiguousarray(data[:, kept_d]), np.ascontiguousarray(proj[kept_d])
        rows = by_kind.get("rows")
        new = p.replace(arrays={**orig, "data": data[:rows.n] if rows else data})
        if rows:
            kept = np.flatnonzero(rows.alive)
            new = keep_rows(new, kept, data[rows.n], {"keep_ratio": round(rows.final / rows.n, 6),
                                                      "kept_rows": len(kept)})
        if "dims" in by_kind:
            new = with_projection(new, new.arrays["data"], proj, {})
        program.params[name] = new
    for u in units:
        if u.kind == "neurons":
            shrink_group(program, u.group, np.flatnonzero(u.alive))


@register(GradualPrune)
def gradual_prune_(program, config: GradualPrune, ctx, filter_fn):
    bad = [n for n, p in program.params.items() if p.kind != "fp32"]
    if bad:
        raise CompileError(f"gradual_prune trains fp32 weights; {bad[0]!r} is already {program.params[bad[0]].kind}: "
                           "put gradual_prune before quantization passes in the plan")
    work, units, _, record = train_masked(program, config, ctx, filter_fn)
    bytes_before = sum(p.nbytes for p in program.params.values())
    shrink(program, work, units)
    record["bytes"] = [bytes_before, sum(p.nbytes for p in program.params.values())]
    program.log.append({"pass": config.NAME, "criterion": config.criterion, **record})
    return program
