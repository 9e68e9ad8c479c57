"""Quotient-remainder (QR) embeddings (Shi et al. 2020, "Compositional Embeddings Using
Complementary Partitions", arXiv 1909.02107): a table of R rows becomes a quotient table
Q [ceil(R/m), d] and a remainder table Rm [m, d], and row i is ``Q[i // m] * Rm[i % m]``
(``op="mult"``, the paper's best) or ``Q[i // m] + Rm[i % m]`` (``op="add"``). A table of
R x d values shrinks to (ceil(R/m) + m) x d: at most sqrt(R)/2 times smaller (m ~ sqrt(R)).

    plan = [EmbeddingQR(collisions=8, epochs=1), EmbeddingRowwiseQuant(bits=4), LinearInt8Weights()]
    plan = [EmbeddingQR(collisions=0, ratio=6.0)]          # per table the smallest m making it 6x smaller

A graph rewrite, not a storage kind: every gather of the table becomes standard ops (the ids
floor-divided by m and their remainder mod m, two ordinary ``embedding`` gathers, one mul/add,
then the bag's reduction), so Q and Rm are ordinary fp32 tables that the later passes
(row-wise quantization, QAT, PQ, fp16) compress, and every format runs it with its own ops.
Padding rows (``padding_idx`` of the table, or the bag's) stay exactly zero: the composed rows
are multiplied by ``ids != pad``, the mask bags already apply.

Initialisation from the trained table: per column, a weighted alternating least-squares fit of
the [ceil(R/m), m] matrix of that column by Q[b] * Rm[j] (rank one) or Q[b] + Rm[j], each row
weighted by 1 + its frequency in the training rows (padding rows weigh nothing). Training
(``epochs > 0``): Q and Rm (with ``train_dense`` also the other fp32 weights) by distillation
from the source model + labels on training rows (distill.py's loss and batches, as qat.py).
Seeded and bounded by epochs / ``max_steps`` only: replaying the manifest's plan gives the same
bytes. program.log records m, rows and bytes before/after, the fit's error and training seconds.

Not supported (refused with a CompileError when the table is named, skipped and logged when
chosen by ``min_rows``): tables already quantized, pruned (remap: put this pass before
embedding_row_prune) or reduced (projection), tables read whole (tied weights), jagged bags
(``embedding_bag_offsets``) and ids carried in float tensors."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import CompileError
from ..graph.program import IDS_ARG, TABLE_ARG, refs
from .base import ExportStep, ExportView, PassConfig, export_hook, register
from .distill import _restore_padding, fine_tune, teacher_of

_OPS = ("embedding", "embedding_bag", "embedding_bag_offsets")


@dataclasses.dataclass(frozen=True)
class EmbeddingQR(PassConfig):
    NAME = "embedding_qr"
    VERSION = 1
    collisions: int = 8            # m: ids sharing one quotient row (0: chosen per table from ``ratio``)
    ratio: float = 0.0             # > 0 (with collisions=0): the smallest m making each table this much smaller
    op: str = "mult"               # how the two rows combine: "mult" (elementwise product) or "add"
    tables: tuple | None = None    # names; None = every fp32 table of >= min_rows rows only ever gathered from
    min_rows: int = 1000
    fit_iters: int = 10            # alternating least-squares steps of the initial fit
    epochs: float = 1.0            # 0: the fit only (no training rows needed)
    max_steps: int = 0             # 0 = as many as the epochs take
    train_dense: bool = False      # training also moves the other fp32 weights (Linear, other tables)
    lr: float = 1e-3
    batch_size: int = 1024
    distill_weight: float = 0.5    # share of the loss against the source model (0: labels only)
    temperature: float = 1.0
    negatives: int = 1             # retrieval data (positives only): random items per positive
    seed: int = 0

    def __post_init__(self):
        for setting in ("collisions", "min_rows", "fit_iters", "max_steps", "batch_size"):
            if not (isinstance(getattr(self, setting), int) and not isinstance(getattr(self, setting), bool)):
                self._fail(setting, "a whole number")
        self.check_range("collisions", 0, float("inf"))
        self.check_range("ratio", 0, float("inf"))
        if (self.collisions > 0) == (self.ratio > 0):
            raise CompileError(f"{self.NAME}: set exactly one of collisions (m >= 2) and ratio (> 1; it picks m "
                               f"per table, with collisions=0), got collisions={self.collisions!r}, "
                               f"ratio={self.ratio!r}")
        if self.collisions:
            self.check_range("collisions", 2, float("inf"))
        else:
            self.check_range("ratio", 1, float("inf"), lo_open=True)
        self.check_choice("op", ("mult", "add"))
        self.check_names("tables")
        self.check_range("min_rows", 1, float("inf"))
        self.check_range("fit_iters", 0, 1000)
        self.check_range("epochs", 0, float("inf"))
        self.check_choice("train_dense", (False, True))
        self.check_training()

    @property
    def NEEDS_TRAIN_DATA(self) -> bool:        # the fit alone runs without training rows
        return self.epochs > 0


# --- sizes -------------------------------------------------------------------------------

def qr_rows(rows: int, m: int) -> int:
    """Rows stored for a table of ``rows`` rows at ``m`` collisions (quotient + remainder)."""
    return -(-rows // m) + m


def collisions_for(rows: int, ratio: float) -> int | None:
    """The smallest m >= 2 with rows / (ceil(rows/m) + m) >= ratio, or None when no m reaches it."""
    best = max(2, math.isqrt(rows))
    for m in range(2, best + 2):
        if rows / qr_rows(rows, m) >= ratio:
            return m
    return None


# --- the initial fit -------------------------------------------------------------------------

def fit_qr(w: np.ndarray, m: int, op: str, weight: np.ndarray, iters: int):
    """(Q [ceil(R/m), d], Rm [m, d]) fitting ``w`` [R, d] by Q[i // m] (*|+) Rm[i % m], each row
    weighted by ``weight`` [R] (0: ignored), column by column (weighted alternating least squares)."""
    rows, d = w.shape
    nb = -(-rows // m)
    x = np.zeros((nb * m, d), np.float32)            # float32: half the memory of float64 on big tables
    x[:rows] = w
    x = x.reshape(nb, m, d)
    g = np.zeros(nb * m, np.float32)
    g[:rows] = weight
    g = g.reshape(nb, m, 1)
    tiny = 1e-12
    if op == "mult":
        q = (g * x).sum(1) / np.maximum(g.sum(1), tiny)            # bucket means, Rm = 1
        r = np.ones((m, d))
        for _ in range(iters):
            r = np.where((g * q[:, None] ** 2).sum(0) > tiny,
                         (g * q[:, None] * x).sum(0) / np.maximum((g * q[:, None] ** 2).sum(0), tiny), r)
            q = (g * r[None] * x).sum(1) / np.maximum((g * r[None] ** 2).sum(1), tiny)
        scale = np.sqrt(np.mean(r ** 2, axis=0))                 # Rm columns at rms 1: Q carries the size
        scale = np.where(scale > tiny, scale, 1.0)
        q, r = q * scale, r / scale
    else:
        q = (g * x).sum(1) / np.maximum(g.sum(1), tiny)
        r = np.zeros((m, d))
        for _ in range(iters):
            r = (g * (x - q[:, None])).sum(0) / np.maximum(g.sum(0), tiny)
            q = (g * (x - r[None])).sum(1) / np.maximum(g.sum(1), tiny)
    return q.astype(np.float32), r.astype(np.float32)


def compose(q: np.ndarray, r: np.ndarray, rows: int, op: str) -> np.ndarray:
    """The [rows, d] table Q and Rm stand for (a host check; the graph never builds it)."""
    i = np.arange(rows)
    return q[i // len(r)] * r[i % len(r)] if op == "mult" else q[i // len(r)] + r[i % len(r)]


# --- choosing tables -----------------------------------------------------------------------

def _skip_reason(program, name: str) -> str | None:
    """Why table ``name`` cannot take QR here (None: it can)."""
    p = program.params[name]
    if p.kind != "fp32":
        return f"it is already {p.kind}: put embedding_qr before quantization in the plan"
    if "remap" in p.arrays:
        return "its rows are pruned (remap): put embedding_qr before embedding_row_prune in the plan"
    if "proj" in p.arrays:
        return "its dimensions are reduced (projection): put embedding_qr before embedding_dim_reduce"
    if name in _read_whole(program):
        return "the graph also reads it whole (e.g. a tied output layer)"
    if any(n.op == "embedding_bag_offsets" for n in program.param_consumers(name)):
        return "it feeds jagged bags (embedding_bag_offsets), which this rewrite does not express"
    src = program.index_sources.get(name)
    example = program.example.get(src[0]) if src else None
    if example is not None and np.asarray(example).dtype.kind == "f":
        return "its ids come in a float tensor"
    return None


def _read_whole(program) -> set:
    """Params some node reads as a whole tensor (not through a row gather)."""
    return {p for n in program.nodes() for p in refs(n.args[1:] if n.op in _OPS else n.args, "p")}


def choose_tables(program, config: EmbeddingQR, filter_fn) -> tuple[dict, list]:
    """(name -> m for each table the pass rewrites, [(name, why) skipped])."""
    names = program.tables()
    if config.tables is not None:
        unknown = [t for t in config.tables if t not in names]
        if unknown:
            raise CompileError(f"embedding_qr: {unknown[0]!r} is not an embedding table of this model; "
                               f"tables: {', '.join(names)}")
        names = [t for t in names if t in config.tables]
    chosen, skipped = {}, []
    for name in names:
        if not filter_fn(name, "embedding"):
            continue
        rows = program.params[name].shape[0]
        if config.tables is None and rows < config.min_rows:
            continue
        why = _skip_reason(program, name)
        m = config.collisions or collisions_for(rows, config.ratio)
        if why is None and m is None:
            best = max(rows / qr_rows(rows, k) for k in range(2, math.isqrt(rows) + 2))
            why = f"no m reaches ratio {config.ratio:g} on its {rows} rows (at most {best:.2f}x)"
        elif why is None and qr_rows(rows, m) >= rows:
            why = f"collisions={m} stores {qr_rows(rows, m)} rows for its {rows}: nothing saved"
        if why is not None:
            if config.tables is not None:
                raise CompileError(f"embedding_qr on {name!r}: {why}")
            skipped.append((name, why))
            continue
        chosen[name] = m
    return chosen, skipped


# --- the graph rewrite -----------------------------------------------------------------------

def _rewrite_node(node: dict, q: str, r: str, m: int, op: str, pads: list) -> list[dict]:
    """The standard-op nodes that compute ``node`` (embedding or fixed embedding_bag) from Q and Rm."""
    args, out, pre = node["args"], node["out"], f"{node['out']}__qr"
    ids = args[IDS_ARG]
    mod = {"mod": node["mod"]} if "mod" in node else {}
    nodes = [{"op": "div", "args": [ids, m, "floor"], "out": f"{pre}_quotient"},
             {"op": "remainder.Scalar", "args": [ids, m], "out": f"{pre}_remainder"},
             {"op": "embedding", "args": [{"p": q}, {"v": f"{pre}_quotient"}], "out": f"{pre}_qrows"},
             {"op": "embedding", "args": [{"p": r}, {"v": f"{pre}_remainder"}], "out": f"{pre}_rrows"},
             {"op": "mul" if op == "mult" else "add",
              "args": [{"v": f"{pre}_qrows"}, {"v": f"{pre}_rrows"}] + ([] if op == "mult" else [1]),
              "out": f"{pre}_rows"}]
    rows, keep = f"{pre}_rows", None
    for k, pad in enumerate(pads):                  # padding ids give exactly zero rows, as bags skip them
        nodes += [{"op": "ne.Scalar", "args": [ids, pad], "out": f"{pre}_ne{k}"},
                  {"op": "to", "args": [{"v": f"{pre}_ne{k}"}, "float32"], "out": f"{pre}_keep{k}"}]
        if keep is not None:
            nodes.append({"op": "mul", "args": [{"v": keep}, {"v": f"{pre}_keep{k}"}], "out": f"{pre}_keepall{k}"})
        keep = nodes[-1]["out"]
    if keep is not None:
        nodes += [{"op": "unsqueeze", "args": [{"v": keep}, -1], "out": f"{pre}_mask"},
                  {"op": "mul", "args": [{"v": rows}, {"v": f"{pre}_mask"}], "out": f"{pre}_kept"}]
        rows = f"{pre}_kept"
    if node["op"] == "embedding_bag":
        mode = args[2]
        psw = args[4] if len(args) > 4 else None
        if psw is not None:                         # sum mode only (ATen): weight each row, then sum
            nodes += [{"op": "unsqueeze", "args": [psw, -1], "out": f"{pre}_psw"},
                      {"op": "mul", "args": [{"v": rows}, {"v": f"{pre}_psw"}], "out": f"{pre}_weighted"}]
            rows = f"{pre}_weighted"
        if mode == 1 and keep is not None:          # mean over the bag's non-padding rows
            nodes += [{"op": "sum", "args": [{"v": rows}, [1], False], "out": f"{pre}_sum"},
                      {"op": "sum", "args": [{"v": keep}, [1], True], "out": f"{pre}_count"},
                      {"op": "clamp_min", "args": [{"v": f"{pre}_count"}, 1], "out": f"{pre}_count1"},
                      {"op": "div", "args": [{"v": f"{pre}_sum"}, {"v": f"{pre}_count1"}, None], "out": out}]
        else:
            nodes.append({"op": ("sum", "mean", "amax")[mode], "args": [{"v": rows}, [1], False], "out": out})
    else:
        nodes[-1]["out"] = out
    return [{**n, **mod} for n in nodes]


def rewrite(program, name: str, m: int, op: str, q: np.ndarray, r: np.ndarray) -> tuple[str, str]:
    """Replace table ``name`` by its quotient and remainder tables, in the params and in the graph."""
    from ..graph.program import StoredParam
    p = program.params[name]
    qn, rn = f"{name}.qr_quotient", f"{name}.qr_remainder"
    taken = [n for n in (qn, rn) if n in program.params]
    if taken:
        raise CompileError(f"embedding_qr: the model already has a parameter {taken[0]!r}")
    info = {"qr_of": name, "rows": int(p.shape[0]), "collisions": m, "op": op}
    program.params[qn] = StoredParam("fp32", {"data": q}, tuple(q.shape), info={**info, "part": "quotient"})
    program.params[rn] = StoredParam("fp32", {"data": r}, tuple(r.shape), info={**info, "part": "remainder"})
    program.roles[qn] = program.roles[rn] = "embedding"
    table_pads = list(program.padding_rows.get(name, ()))
    nodes = []
    for raw in program.graph["nodes"]:
        if raw["op"] in ("embedding", "embedding_bag") and raw["args"][TABLE_ARG] == {"p": name}:
            bag_pad = raw["args"][3] if raw["op"] == "embedding_bag" else None
            pads = sorted({int(x) for x in table_pads} | ({int(bag_pad)} if bag_pad is not None else set()))
            nodes += _rewrite_node(raw, qn, rn, m, op, pads)
        else:
            nodes.append(raw)
    program.graph["nodes"] = nodes
    del program.params[name]
    program.roles.pop(name, None)
    program.padding_rows.pop(name, None)     # the masks keep padding rows zero whatever Q and Rm become
    return qn, rn


# --- training ------------------------------------------------------------------------------

def train(program, parts: list[str], config: EmbeddingQR, ctx) -> dict:
    """Train the quotient / remainder tables ``parts`` (with ``train_dense`` every fp32 weight), in place."""
    import torch

    from ..graph.torch_exec import ProgramModule, _key
    if ctx.train_data is None:
        raise CompileError("embedding_qr with epochs > 0 needs training rows: compile(..., train_data=...) "
                           "(it never trains on held-out rows); epochs=0 keeps the initial fit")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("embedding_qr training with distill_weight > 0 needs the source model "
                           "(PassContext(teacher=...))")
    bad = [n for n, p in program.params.items() if p.kind != "fp32"]
    if config.train_dense and bad:
        raise CompileError(f"embedding_qr with train_dense trains fp32 weights; {bad[0]!r} is already "
                           f"{program.params[bad[0]].kind}: put embedding_qr before quantization in the plan")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = ProgramModule(program, trainable=config.train_dense).train()
    for part in parts:
        student.tables[_key(part)].weight.requires_grad_(True)
    padding = {}
    for name, rows in program.padding_rows.items() if config.train_dense else ():
        key = _key(name)
        if key in student.tables:
            padding[key] = (list(rows), student.tables[key].weight.detach()[list(rows)].clone())
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    data = ctx.train_data
    record = fine_tune(student, opt, program, data, config, teacher_of(ctx, program), rng,
                       label_weight=1 - config.distill_weight, after_step=lambda: _restore_padding(student, padding),
                       stop=lambda steps, seen: seen >= config.epochs * len(data)
                       or bool(config.max_steps and steps >= config.max_steps))
    student.eval()
    if config.train_dense:
        student.state_to_program(program)
    for part in parts:
        p = program.params[part]
        program.params[part] = p.replace(arrays={"data": student.tables[_key(part)].weight.detach().numpy().copy()})
    return record


# --- the pass ------------------------------------------------------------------------------

@register(EmbeddingQR)
def embedding_qr_(program, config: EmbeddingQR, ctx, filter_fn):
    chosen, skipped = choose_tables(program, config, filter_fn)
    for name, why in skipped:
        program.log.append({"pass": config.NAME, "param": name, "skipped": why})
    parts, fits = [], {}
    for name, m in chosen.items():
        p = program.params[name]
        w = p.arrays["data"]
        counts = ctx.id_counts(program, name) if ctx is not None and ctx.train_data is not None else None
        weight = np.ones(len(w)) if counts is None else 1.0 + counts[:len(w)].astype(np.float64)
        pads = [int(x) for x in program.padding_rows.get(name, ()) if int(x) < len(w)]
        weight[pads] = 0.0
        q, r = fit_qr(w, m, config.op, weight, config.fit_iters)
        keep = np.ones(len(w), bool)
        keep[pads] = False
        err = float(np.sqrt(np.mean((compose(q, r, len(w), config.op)[keep] - w[keep]) ** 2))) if keep.any() else 0.0
        fits[name] = (m, p.nbytes, err, rewrite(program, name, m, config.op, q, r))
        parts += list(fits[name][3])
    record = train(program, parts, config, ctx) if config.epochs > 0 and parts else {}
    for name, (m, before, err, (qn, rn)) in fits.items():
        q, r = program.params[qn], program.params[rn]
        rows = q.info["rows"]
        program.log.append({"pass": config.NAME, "param": name, "collisions": m, "op": config.op,
                            "rows": [rows, q.shape[0], r.shape[0]], "bytes": [before, q.nbytes + r.nbytes],
                            "fit_rms_error": err})
    if record:
        program.log.append({"pass": config.NAME, **record})
    return program


@export_hook(EmbeddingQR)
def export_qr(config: EmbeddingQR, view: ExportView) -> ExportStep:
    """The rewrite is in the graph: both formats run its standard ops on the two ordinary tables."""
    combine = "MUL" if config.op == "mult" else "ADD"
    return ExportStep(f"quotient-remainder tables: ids floor-divided and remaindered by m, two GATHERs and a "
                      f"{combine} (padding ids masked by NOT_EQUAL), then the bag's reduction: standard ops (exact)",
                      True)
