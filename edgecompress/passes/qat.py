"""Quantization-aware training (QAT): the program is fine-tuned with its tables and Linear
weights fake-quantized exactly as the bundle will store them, then converted to those stored
forms, so the bundle computes what the fake-quantized model computed.

    plan = [QAT(bits=4, linear_int8=True, epochs=1)]       # needs compile(..., train_data=...)

Forward: each gathered row is quantized row-wise as ``quantize_embeddings.quantize_rows``
does (range [min, max] of the row, fp16 scale and bias rounded BEFORE the codes; row-wise
quantization of a gathered row equals the gathered row of the quantized table), or with
``bits=1`` to sign codes (+-s, s = mean |w| of the row, fp16); each Linear weight as
``quantize_linear`` stores it (symmetric per output channel, scale = max|w| / 127).
Backward: the straight-through estimator (the gradient of the fake-quantized weight is
passed to the fp32 weight unchanged). Loss: ``distill_weight`` x BCE against the source
model's probabilities + the rest x BCE against the labels (distill.py's batches, retrieval
negatives included). Padding rows are restored after every step (they stay exactly zero).

Conversion reuses EmbeddingRowwiseQuant and LinearInt8Weights on the trained fp32 weights
(1-bit rows: the same ``rowwise`` kind with 1-bit codes, scale 2s and bias -s), so the
stored params are those passes' forms. Seeded and bounded by epochs / ``max_steps`` only
(no wall-clock budget): replaying the manifest's plan gives the same bytes."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import CompileError
from ..graph.program import refs
from .base import ExportStep, ExportView, PassConfig, apply_pass, export_hook, register
from .distill import _batches, _restore_padding, distill_loss
from .quantize_embeddings import EmbeddingRowwiseQuant
from .quantize_linear import LinearInt8Weights

_GATHER_OPS = ("embedding", "embedding_bag", "embedding_bag_offsets")


@dataclasses.dataclass(frozen=True)
class QAT(PassConfig):
    NAME = "qat"
    VERSION = 1
    NEEDS_TRAIN_DATA = True
    bits: int = 4                  # table rows: 8 / 4 / 2-bit codes, or 1-bit sign codes
    tables: tuple | None = None    # names; None = every table the graph only gathers from
    linear_int8: bool = True       # Linear weights int8 per output channel
    epochs: float = 1.0
    max_steps: int = 0             # 0 = as many as the epochs take
    lr: float = 1e-3
    batch_size: int = 1024
    distill_weight: float = 0.5    # share of the loss against the source model (0: labels only)
    temperature: float = 1.0
    negatives: int = 1             # retrieval data (positives only): random items per positive
    seed: int = 0

    def __post_init__(self):
        self.check_choice("bits", (8, 4, 2, 1))
        self.check_names("tables")
        self.check_choice("linear_int8", (False, True))
        for setting in ("epochs", "lr", "temperature"):
            self.check_range(setting, 0, float("inf"), lo_open=True)
        self.check_range("max_steps", 0, float("inf"))
        self.check_range("batch_size", 1, float("inf"))
        self.check_range("distill_weight", 0, 1)
        self.check_range("negatives", 0, float("inf"))
        self.check_range("seed", 0, 2**32 - 1)


# --- the stored forms, in torch (same operations, same order as the numpy passes) -----

def fake_quant_rows(w, bits: int):
    """Row-wise fake quantization of ``w`` [..., D] as the bundle stores it, with a
    straight-through gradient."""
    import torch
    wd = w.detach()
    if bits == 1:
        s = wd.abs().mean(-1).half().float()
        q = torch.where(wd >= 0, s.unsqueeze(-1), -s.unsqueeze(-1))
        q = torch.where(s.unsqueeze(-1) > 0, q, torch.zeros_like(q))
    else:
        levels = (1 << bits) - 1
        lo, hi = wd.amin(-1), wd.amax(-1)
        scale = ((hi - lo) / levels).half().float()
        bias = lo.half().float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.clamp(torch.round((wd - bias.unsqueeze(-1)) / safe.unsqueeze(-1)), 0, levels)
        q = codes * scale.unsqueeze(-1) + bias.unsqueeze(-1)
    return w + (q - wd)


def fake_quant_channels(w):
    import torch
    wd = w.detach()
    amax = wd.abs().amax(1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(wd / scale[:, None]), -127, 127) * scale[:, None]
    return w + (q - wd)


def sign_rows(w: np.ndarray):
    """1-bit rows in the ``rowwise`` kind: code 1 -> +s, code 0 -> -s (scale 2s, bias -s)."""
    from edgecompress_runtime.params import pack_bits
    s = np.abs(w).mean(axis=1).astype(np.float16)
    codes = (w >= 0).astype(np.uint8)
    scale, bias = (s.astype(np.float32) * 2).astype(np.float16), -s
    deq = np.where(codes == 1, s.astype(np.float32)[:, None], -s.astype(np.float32)[:, None])
    return pack_bits(codes, 1), scale, bias, deq.astype(np.float32)


# --- the student ---------------------------------------------------------------------

def gathered_tables(program, config: QAT) -> list[str]:
    """fp32 tables the pass quantizes: chosen, and only ever gathered from (a table also read
    whole, e.g. a tied output layer, stays fp32)."""
    whole = {p for n in program.nodes() for p in refs(n.args[1:] if n.op in _GATHER_OPS else n.args, "p")}
    return [t for t in program.tables() if program.params[t].kind == "fp32" and t not in whole
            and (config.tables is None or t in config.tables)]


def fake_quant_module(program, config: QAT, trainable: bool = False):
    """A ProgramModule whose chosen tables and Linear weights compute fake-quantized: the
    QAT student, and the torch reference the converted bundle is checked against."""
    from ..graph.torch_exec import ProgramModule, _key

    class FakeQuantModule(ProgramModule):
        def _gather(self, pname, idx):
            if pname not in self.fq_tables:
                return super()._gather(pname, idx)
            if pname in self.remaps:
                idx = getattr(self, self.remaps[pname])[idx].long()
            rows = fake_quant_rows(self.tables[_key(pname)](idx), config.bits)
            return rows @ self.projections[_key(pname)] if _key(pname) in self.projections else rows

    module = FakeQuantModule(program, trainable=trainable)
    module.fq_tables = set(gathered_tables(program, config))
    module.fq_linears = set()
    if config.linear_int8:
        import torch.nn.functional as F

        for name, p in program.params.items():
            key = _key(name)
            if key in module.linears and p.kind == "fp32":
                lin = module.linears[key]
                lin.forward = (lambda x, lin=lin: F.linear(x, fake_quant_channels(lin.weight), lin.bias))
                module.fq_linears.add(name)
    return module


def train_fake_quant(program, config: QAT, ctx) -> dict:
    """Fine-tune the fp32 weights of ``program`` through the fake-quantized forward (in place)."""
    import torch

    from ..graph.io import head_logits
    if ctx.train_data is None:
        raise CompileError("qat needs training rows: compile(..., train_data=...) (it never trains on "
                           "held-out rows)")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("qat with distill_weight > 0 needs the source model (PassContext(teacher=...))")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = ctx.train_data
    student = fake_quant_module(program, config, trainable=True).train()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    padding = {}
    for name, rows in program.padding_rows.items():
        key = name.replace(".", "__")
        if key in student.tables:
            padding[key] = (list(rows), student.tables[key].weight.detach()[list(rows)].clone())
    teacher = ctx.teacher.eval() if ctx.teacher is not None and program.call is None else ctx.teacher
    names, t0, steps, seen, losses = program.input_names, time.perf_counter(), 0, 0, []
    total, done = config.epochs * len(data), False
    while not done:
        for inputs, label in _batches(data, config, rng):
            xs = [torch.as_tensor(inputs[k]) for k in names]
            out = head_logits(student(*xs), program.outputs, program.metric_output).reshape(-1)
            loss = distill_loss(out, label, teacher, program, xs, label_weight=1 - config.distill_weight,
                                temperature=config.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _restore_padding(student, padding)
            steps, seen = steps + 1, seen + len(label)
            losses.append(loss.item())
            if seen >= total or (config.max_steps and steps >= config.max_steps):
                done = True
                break
    student.eval()
    student.state_to_program(program)
    return {"steps": steps, "rows_seen": seen, "seconds": round(time.perf_counter() - t0, 2),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "linears": sorted(student.fq_linears), "tables": sorted(student.fq_tables)}


def convert(program, config: QAT, tables, linears):
    """The trained fp32 weights -> the bundle's quantized params (the forms the
    post-training passes write, from the same functions)."""
    if config.bits > 1 and tables:
        apply_pass(program, EmbeddingRowwiseQuant(bits=config.bits, tables=tuple(tables)))
    for name in tables if config.bits == 1 else ():
        p = program.params[name]
        w = p.arrays["data"]
        codes, scale, bias, deq = sign_rows(w)
        extra = {k: v for k, v in p.arrays.items() if k != "data"}
        program.params[name] = p.replace(kind="rowwise", bits=1, arrays={"codes": codes, "scale": scale,
                                                                         "bias": bias, **extra},
                                         info={**p.info, "bits": 1, "bytes_before": p.nbytes,
                                               "rms_error": float(np.sqrt(np.mean((deq - w) ** 2))) if w.size else 0.0})
    if linears:
        chosen = set(linears)
        apply_pass(program, LinearInt8Weights(), filter_fn=lambda name, role: name in chosen)
    return program


@register(QAT)
def qat_(program, config: QAT, ctx, filter_fn):
    bad = [n for n, p in program.params.items() if p.kind != "fp32"]
    if bad:
        raise CompileError(f"qat trains fp32 weights; {bad[0]!r} is already {program.params[bad[0]].kind}: "
                           "put qat before other quantization passes in the plan")
    record = train_fake_quant(program, config, ctx)
    convert(program, config, [t for t in record["tables"] if filter_fn(t, "embedding")],
            [w for w in record["linears"] if filter_fn(w, "linear")])
    program.log.append({"pass": config.NAME, **{k: v for k, v in record.items() if k not in ("linears", "tables")}})
    return program


@export_hook(QAT)
def export_qat(config: QAT, view: ExportView) -> ExportStep:
    """The converted params are those of EmbeddingRowwiseQuant + LinearInt8Weights: expressed as those."""
    from .quantize_embeddings import export_rowwise
    from .quantize_linear import export_linear_int8
    if config.bits == 1:
        rows = ExportStep("1-bit sign rows" + (" stored as their exact fp32 values (no 1-bit kernel)"
                                               if view.fmt == "executorch" else
                                               " with codes packed 8 per byte, unpacked with FLOOR arithmetic; "
                                               "GATHER + CAST + MUL/ADD with per-row scale and bias (exact)"), True)
    else:
        rows = export_rowwise(EmbeddingRowwiseQuant(bits=config.bits), view)
    lin = export_linear_int8(LinearInt8Weights(), view) if config.linear_int8 else ExportStep("", True)
    how = rows.how + ("; Linear: " + lin.how if config.linear_int8 else "")
    return ExportStep(how, rows.exact and lin.exact, tuple(rows.approximations) + tuple(lin.approximations))
