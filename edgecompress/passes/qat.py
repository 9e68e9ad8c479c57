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

``learn_ranges``: each row's range is a trained parameter instead of its min/max (LSQ-style,
Esser et al. 2020): [lo, hi] per row initialised by the post-training clip search (1-bit: s per
row, initialised to mean |w|), learned through the rounding by the straight-through estimator
(values outside the range get no gradient; the range gets the LSQ gradient). ``act_int8``:
static int8 activations for the int8 Linear layers, one scale per layer initialised from max
|input| / 127 on training rows and learned the same way; converted to LinearInt8Static's form
(``act: static``, ``act_scale``), which the torch reference and the runtime round identically.
Learned ranges and scales are ``lr x range_lr_scale`` (Adam), kept valid after every step.

Every forward value is computed with the numpy passes' own arithmetic (detached, in the same
order) and the gradient is attached by ``value + (surrogate - surrogate.detach())``, so the
fake-quantized forward is exactly what the converted params compute. Conversion reuses
EmbeddingRowwiseQuant and LinearInt8Weights on the trained fp32 weights (learned ranges: the
same ``quantize_rows`` with the learned lo / hi; 1-bit rows: the same ``rowwise`` kind with
1-bit codes, scale 2s and bias -s), so the stored params are those passes' forms. Seeded and
bounded by epochs / ``max_steps`` only (no wall-clock budget): replaying the manifest's plan
gives the same bytes."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from ..graph.program import WEIGHT_ARG, refs
from .base import ExportStep, ExportView, PassConfig, apply_pass, export_hook, register
from .distill import _restore_padding, fine_tune, teacher_of
from .quantize_embeddings import EmbeddingRowwiseQuant, _clip_search, quantize_rows
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
    learn_ranges: bool = False     # per-row ranges (1-bit: per-row s) trained, from the clip search
    act_int8: bool = False         # static int8 Linear activations, scale per layer trained
    range_lr_scale: float = 1.0    # learned ranges and activation scales train at lr x this (Adam)

    def __post_init__(self):
        self.check_choice("bits", (8, 4, 2, 1))
        self.check_choice("learn_ranges", (False, True))
        self.check_choice("act_int8", (False, True))
        self.check_range("range_lr_scale", 0, float("inf"), lo_open=True)
        if self.act_int8 and not self.linear_int8:
            self._fail("act_int8", "False unless linear_int8 is True (int8 activations need int8 weights)")
        self.check_names("tables")
        self.check_choice("linear_int8", (False, True))
        self.check_range("epochs", 0, float("inf"), lo_open=True)
        self.check_training()


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


def _with_grad(value, surrogate):
    """``value`` exactly in the forward, the gradient of ``surrogate`` in the backward."""
    return value.detach() + (surrogate - surrogate.detach())


def _round_ste(t):
    return t + (t.round() - t).detach()


def fake_quant_rows_learned(w, lo, hi, bits: int):
    """Row-wise fake quantization of ``w`` [..., D] in the learned range [lo, hi] [...] (1-bit:
    ``lo`` holds s, ``hi`` is unused): forward = quantize_rows(w, bits, lo=lo, hi=hi)."""
    import torch
    wd, lod = w.detach(), lo.detach()
    if bits == 1:
        s = lod.half().float().unsqueeze(-1)
        value = torch.where(s > 0, torch.where(wd >= 0, s, -s), torch.zeros_like(wd))
        return _with_grad(value, w + torch.where(wd >= 0, lo.unsqueeze(-1), -lo.unsqueeze(-1)))
    levels = (1 << bits) - 1
    scale = ((hi.detach() - lod) / levels).half().float().unsqueeze(-1)
    bias = lod.half().float().unsqueeze(-1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    value = torch.clamp(torch.round((wd - bias) / safe), 0, levels) * scale + bias
    raw = ((hi - lo) / levels).unsqueeze(-1)
    raw_safe = torch.where(raw.detach() > 0, raw, torch.ones_like(raw))
    surrogate = torch.clamp(_round_ste((w - lo.unsqueeze(-1)) / raw_safe), 0, levels) * raw + lo.unsqueeze(-1)
    return _with_grad(value, surrogate)


def fake_quant_activations(x, scale):
    """Static symmetric int8 of a Linear input with a learned per-layer scale: forward as
    torch_exec._fake_quant_activations / the runtime's ops.linear, LSQ gradient."""
    import torch
    s = scale.detach()
    value = torch.clamp(torch.round(x.detach() / s), -127, 127) * s
    return _with_grad(value, torch.clamp(_round_ste(x / scale), -127, 127) * scale)


def fake_quant_channels(w):
    import torch
    wd = w.detach()
    amax = wd.abs().amax(1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(wd / scale[:, None]), -127, 127) * scale[:, None]
    return w + (q - wd)


def sign_rows(w: np.ndarray, s=None):
    """1-bit rows in the ``rowwise`` kind: code 1 -> +s, code 0 -> -s (scale 2s, bias -s);
    ``s`` per row (learned), else mean |w|."""
    from edgecompress_runtime.params import pack_bits
    s = (np.abs(w).mean(axis=1) if s is None else np.maximum(np.asarray(s, np.float32), 0)).astype(np.float16)
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


def initial_ranges(program, config: QAT, data) -> dict:
    """Where learned ranges start: per table [lo, hi] per row from the post-training clip search
    (1-bit: s = mean |w| per row, in ``lo``), per int8 Linear max |input| / 127 on training rows."""
    out = {"tables": {}, "acts": {}}
    if config.learn_ranges:
        for name in gathered_tables(program, config):
            w = program.params[name].arrays["data"]
            if config.bits == 1:
                s = np.abs(w).mean(axis=1).astype(np.float32)
                out["tables"][name] = (s, s.copy())
            else:
                lo, hi = _clip_search(w, (1 << config.bits) - 1) if len(w) else (w.min(1), w.max(1))
                out["tables"][name] = (lo.astype(np.float32), hi.astype(np.float32))
    if config.act_int8:
        want = {node.value(0): node.param(WEIGHT_ARG) for node in program.nodes_of("linear")
                if node.param(WEIGHT_ARG) in _int8_linears(program)}
        n = min(len(data), 4096)
        feeds = {k: np.asarray(data.inputs[k][:n]) for k in program.input_names}
        env = program.executor().run(feeds, keep=set(want))
        for v, name in want.items():
            amax = float(np.abs(env[v]).max()) if env[v].size else 0.0
            out["acts"][name] = np.float32(amax / 127.0 if amax > 0 else 1.0)
    return out


def _int8_linears(program) -> list[str]:
    return [n for n, p in program.params.items() if program.roles.get(n) == "linear" and p.kind == "fp32"
            and p.arrays["data"].ndim == 2 and n in program.linear_bias()]


def fake_quant_module(program, config: QAT, trainable: bool = False, ranges: dict | None = None):
    """A ProgramModule whose chosen tables and Linear weights compute fake-quantized: the
    QAT student, and the torch reference the converted bundle is checked against.
    ``ranges`` (``initial_ranges`` / the training record's): learned ranges and activation scales."""
    import torch

    from ..graph.torch_exec import ProgramModule, _key

    class FakeQuantModule(ProgramModule):
        def _gather(self, pname, idx):
            if pname not in self.fq_tables:
                return super()._gather(pname, idx)
            if pname in self.remaps:
                idx = getattr(self, self.remaps[pname])[idx].long()
            key = _key(pname)
            if key in self.range_lo:
                rows = fake_quant_rows_learned(self.tables[key](idx), self.range_lo[key][idx],
                                               self.range_hi[key][idx], config.bits)
            else:
                rows = fake_quant_rows(self.tables[key](idx), config.bits)
            return rows @ self.projections[key] if key in self.projections else rows

    module = FakeQuantModule(program, trainable=trainable)
    module.fq_tables = set(gathered_tables(program, config))
    module.fq_linears = set()
    ranges = ranges or {"tables": {}, "acts": {}}
    if config.learn_ranges and not ranges["tables"] and module.fq_tables:
        raise CompileError("qat learn_ranges: the fake-quantized module needs the learned ranges")
    module.range_lo, module.range_hi = torch.nn.ParameterDict(), torch.nn.ParameterDict()
    module.act_scale = torch.nn.ParameterDict()
    for name, (lo, hi) in ranges["tables"].items():
        module.range_lo[_key(name)] = torch.nn.Parameter(torch.tensor(lo), requires_grad=trainable)
        module.range_hi[_key(name)] = torch.nn.Parameter(torch.tensor(hi), requires_grad=trainable)
    if config.linear_int8:
        import torch.nn.functional as F

        for name in _int8_linears(program):
            key = _key(name)
            lin = module.linears[key]
            if name in ranges["acts"]:
                module.act_scale[key] = torch.nn.Parameter(torch.tensor(ranges["acts"][name]).reshape(()),
                                                           requires_grad=trainable)
                lin.forward = (lambda x, lin=lin, key=key: F.linear(
                    fake_quant_activations(x, module.act_scale[key]), fake_quant_channels(lin.weight), lin.bias))
            else:
                lin.forward = (lambda x, lin=lin: F.linear(x, fake_quant_channels(lin.weight), lin.bias))
            module.fq_linears.add(name)
    return module


def _keep_ranges_valid(student, padding) -> None:
    """After a step: hi >= lo, s >= 0, activation scales > 0; padding rows keep their (zero) range."""
    import torch
    with torch.no_grad():
        for key, lo in student.range_lo.items():
            hi = student.range_hi[key]
            hi.copy_(torch.maximum(hi, lo))
            lo.clamp_(min=0) if key in student.sign_keys else None
            if key in padding:
                lo[padding[key][0]] = 0
                hi[padding[key][0]] = 0
        for scale in student.act_scale.values():
            scale.clamp_(min=1e-12)


def train_fake_quant(program, config: QAT, ctx) -> dict:
    """Fine-tune the fp32 weights of ``program`` through the fake-quantized forward (in place)."""
    import torch

    if ctx.train_data is None:
        raise CompileError("qat needs training rows: compile(..., train_data=...) (it never trains on "
                           "held-out rows)")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("qat with distill_weight > 0 needs the source model (PassContext(teacher=...))")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = ctx.train_data
    student = fake_quant_module(program, config, trainable=True,
                                ranges=initial_ranges(program, config, data)).train()
    student.sign_keys = set(student.range_lo.keys()) if config.bits == 1 else set()
    learned = [p for d in (student.range_lo, student.range_hi, student.act_scale) for p in d.values()]
    ids = {id(p) for p in learned}
    opt = torch.optim.Adam([{"params": [p for p in student.parameters() if p.requires_grad and id(p) not in ids]},
                            {"params": learned, "lr": config.lr * config.range_lr_scale}], lr=config.lr)
    padding = {}
    for name, rows in program.padding_rows.items():
        key = name.replace(".", "__")
        if key in student.tables:
            padding[key] = (list(rows), student.tables[key].weight.detach()[list(rows)].clone())
    total = config.epochs * len(data)

    def after_step():
        _restore_padding(student, padding)
        _keep_ranges_valid(student, padding)
    record = fine_tune(student, opt, program, data, config, teacher_of(ctx, program), rng,
                       label_weight=1 - config.distill_weight, after_step=after_step,
                       stop=lambda steps, seen: seen >= total or bool(config.max_steps and steps >= config.max_steps))
    student.eval()
    student.state_to_program(program)
    key_of = {_k(n): n for n in program.params}
    ranges = {"tables": {key_of[k]: (lo.detach().numpy().copy(), student.range_hi[k].detach().numpy().copy())
                         for k, lo in student.range_lo.items()},
              "acts": {key_of[k]: np.float32(s.detach().item()) for k, s in student.act_scale.items()}}
    return {**record, "linears": sorted(student.fq_linears), "tables": sorted(student.fq_tables), "ranges": ranges}


def _k(name: str) -> str:
    return name.replace(".", "__")


def _store_rows(program, name, bits, codes, scale, bias, deq, info):
    p = program.params[name]
    w = p.arrays["data"]
    extra = {k: v for k, v in p.arrays.items() if k != "data"}
    program.params[name] = p.replace(kind="rowwise", bits=bits, arrays={"codes": codes, "scale": scale,
                                                                       "bias": bias, **extra},
                                     info={**p.info, "bits": bits, "bytes_before": p.nbytes, **info,
                                           "rms_error": float(np.sqrt(np.mean((deq - w) ** 2))) if w.size else 0.0})
    program.log.append({"pass": QAT.NAME, "param": name, "bits": bits, "bytes": [p.nbytes, program.params[name].nbytes]})


def convert(program, config: QAT, tables, linears, ranges: dict | None = None):
    """The trained fp32 weights -> the bundle's quantized params (the forms the
    post-training passes write, from the same functions); ``ranges``: the learned ones."""
    learned = (ranges or {}).get("tables", {})
    if config.bits > 1 and [t for t in tables if t not in learned]:
        apply_pass(program, EmbeddingRowwiseQuant(bits=config.bits, tables=tuple(t for t in tables if t not in learned)))
    for name in [t for t in tables if config.bits == 1 or t in learned]:
        w = program.params[name].arrays["data"]
        if config.bits == 1:
            codes, scale, bias, deq = sign_rows(w, learned[name][0] if name in learned else None)
        else:
            codes, scale, bias, deq = quantize_rows(w, config.bits, lo=learned[name][0], hi=learned[name][1])
        _store_rows(program, name, config.bits, codes, scale, bias, deq, {"learned_range": name in learned})
    if linears:
        chosen = set(linears)
        apply_pass(program, LinearInt8Weights(), filter_fn=lambda name, role: name in chosen)
    for name, scale in (ranges or {}).get("acts", {}).items():
        p = program.params.get(name)
        if name in linears and p is not None and p.kind == "channel_int8":
            program.params[name] = p.replace(act="static", arrays={**p.arrays, "act_scale": np.array([scale], np.float32)},
                                             info={**p.info, "activations": "static"})
    return program


@register(QAT)
def qat_(program, config: QAT, ctx, filter_fn):
    bad = [n for n, p in program.params.items() if p.kind != "fp32"]
    if bad:
        raise CompileError(f"qat trains fp32 weights; {bad[0]!r} is already {program.params[bad[0]].kind}: "
                           "put qat before other quantization passes in the plan")
    record = train_fake_quant(program, config, ctx)
    convert(program, config, [t for t in record["tables"] if filter_fn(t, "embedding")],
            [w for w in record["linears"] if filter_fn(w, "linear")], record["ranges"])
    program.log.append({"pass": config.NAME, **{k: v for k, v in record.items()
                                                if k not in ("linears", "tables", "ranges")}})
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
    lin = export_linear_int8(config, view) if config.linear_int8 else ExportStep("", True)
    how = rows.how + ("; Linear: " + lin.how if config.linear_int8 else "")
    return ExportStep(how, rows.exact and lin.exact, tuple(rows.approximations) + tuple(lin.approximations))
