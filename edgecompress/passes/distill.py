"""Knowledge distillation after structural passes: the compressed program
(run by torch as a ProgramModule) learns from the uncompressed model.

loss = alpha * BCE(student, label) + (1 - alpha) * T^2 * BCE(sigmoid(student/T), sigmoid(teacher/T))

Bounded by ``time_budget_s`` and ``epochs``, whichever ends first. Run it after
pruning / dimension reduction and before quantization (it trains fp32 weights;
pruned rows keep their remap, reduced tables keep training through their
projection)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register


@dataclasses.dataclass(frozen=True)
class Distill(PassConfig):
    NAME = "distill"
    VERSION = 1
    epochs: float = 1.0
    time_budget_s: float = 30.0
    temperature: float = 2.0
    alpha: float = 0.5
    lr: float = 1e-3
    batch_size: int = 1024
    negatives: int = 1       # retrieval data (positives only): random items per positive
    seed: int = 0
    NEEDS_TRAIN_DATA = True

    def __post_init__(self):
        for setting in ("epochs", "time_budget_s", "temperature", "lr"):
            self.check_range(setting, 0, float("inf"), lo_open=True)
        self.check_range("alpha", 0, 1)
        self.check_range("batch_size", 1, float("inf"))
        self.check_range("negatives", 0, float("inf"))


def _batches(data, config, rng):
    """Yield (inputs dict, labels) from training data; retrieval positives get
    random-item negatives."""
    n = len(data)
    order = rng.permutation(n)
    retrieval = data.task == "retrieval"
    num_items = int(data.meta.get("num_items", 0)) if retrieval else 0
    step = config.batch_size
    for start in range(0, n, step):
        idx = order[start:start + step]
        inputs = {k: np.asarray(v[idx]) for k, v in data.inputs.items()}
        label = np.asarray(data.label[idx], dtype=np.float32)
        if retrieval and num_items and config.negatives:
            reps = config.negatives
            neg = {k: np.repeat(v, reps, axis=0) for k, v in inputs.items()}
            neg["item_id"] = rng.integers(0, num_items, size=len(idx) * reps)
            inputs = {k: np.concatenate([inputs[k], neg[k]]) for k in inputs}
            label = np.concatenate([label, np.zeros(len(idx) * reps, np.float32)])
        yield inputs, label


def teacher_of(ctx, program):
    """The source model in eval mode (a model called through ``program.call`` is left as given)."""
    return ctx.teacher.eval() if ctx.teacher is not None and program.call is None else ctx.teacher


def fine_tune(student, opt, program, data, config, teacher, rng, *, label_weight: float, stop,
              before_step=None, after_backward=None, after_step=None) -> dict:
    """The one training loop of every training pass: batches of ``data`` (``_batches``), the student's
    logits, ``distill_loss``, one optimizer step, until ``stop(steps, rows_seen)``. The hooks run at the
    pass's own points: ``before_step(step)``, ``after_backward()`` (gradients in place),
    ``after_step()`` (e.g. restore padding rows). Returns what program.log records."""
    import torch

    from ..graph.io import head_logits
    names, t0, steps, seen, losses = program.input_names, time.perf_counter(), 0, 0, []
    while True:
        for inputs, label in _batches(data, config, rng):
            if before_step is not None:
                before_step(steps)
            xs = [torch.as_tensor(inputs[k]) for k in names]
            out = head_logits(student(*xs), program.outputs, program.metric_output).reshape(-1)
            loss = distill_loss(out, label, teacher, program, xs, label_weight=label_weight,
                                temperature=config.temperature)
            opt.zero_grad()
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if after_step is not None:
                after_step()
            steps, seen = steps + 1, seen + len(label)
            losses.append(loss.item())
            if stop(steps, seen):
                return {"steps": steps, "rows_seen": seen, "seconds": round(time.perf_counter() - t0, 2),
                        "loss_first": losses[0], "loss_last": losses[-1]}


@register(Distill)
def distill_(program, config: Distill, ctx, filter_fn):
    import torch

    from ..graph.torch_exec import ProgramModule
    teacher, data = ctx.teacher, ctx.train_data
    if teacher is None or data is None:
        raise CompileError("distill needs the source model and training data (compile(..., train_data=...))")
    bad = [n for n, p in program.params.items() if p.kind != "fp32"]
    if bad:
        raise CompileError(f"distill trains fp32 weights; {bad[0]!r} is already {program.params[bad[0]].kind}: "
                           "put distill before quantization and sparse pruning in the plan")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = ProgramModule(program, trainable=True).train()
    teacher = teacher.eval()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    padding = {}                     # padding rows stay exactly as they were (zero): Adam would move them
    for name, rows in program.padding_rows.items():
        key = name.replace(".", "__")
        if key in student.tables:
            w = student.tables[key].weight
            padding[key] = (list(rows), w.detach()[list(rows)].clone())
    t0, total = time.perf_counter(), config.epochs * len(data)
    record = fine_tune(student, opt, program, data, config, teacher, rng, label_weight=config.alpha,
                       stop=lambda steps, seen: seen >= total or time.perf_counter() - t0 > config.time_budget_s,
                       after_step=lambda: _restore_padding(student, padding))
    student.eval()
    student.state_to_program(program)
    program.log.append({"pass": config.NAME, **record})
    return program


def distill_loss(out, label, teacher, program, xs, *, label_weight: float, temperature: float):
    """``label_weight`` x BCE against the labels + the rest x T^2 x BCE of ``out / T`` against the
    teacher's probabilities at temperature T (Hinton et al.); the teacher runs only when weighted.
    ``out``: the student's logits [B]; ``xs``: the batch's input tensors in ``program.input_names`` order."""
    import torch
    import torch.nn.functional as F

    from ..graph.io import head_logits
    loss = label_weight * F.binary_cross_entropy_with_logits(out, torch.as_tensor(label))
    if label_weight < 1:
        feeds = dict(zip(program.input_names, xs))
        with torch.no_grad():
            t_out = program.call(teacher, feeds) if program.call is not None else teacher(**feeds)
            soft = torch.sigmoid(head_logits(t_out, program.outputs, program.metric_output).reshape(-1)
                                 / temperature)
        loss = loss + (1 - label_weight) * temperature ** 2 * \
            F.binary_cross_entropy_with_logits(out / temperature, soft)
    return loss


def _restore_padding(student, padding) -> None:
    import torch
    with torch.no_grad():
        for key, (rows, values) in padding.items():
            student.tables[key].weight[rows] = values
