"""Per-table product quantization (PQ): each row of width d is split into M sub-vectors of
d/M values, and each sub-vector is stored as the index of its nearest entry in a codebook of
K <= 2**bits entries (``entries``, default 2**bits) learnt for that (table, sub-space). A row
costs M*bits/8 bytes; a table adds M*K*(d/M) fp16 codebook values (K*d*2 bytes): on small tables
fewer entries than 2**bits buy back codebook bytes.

    plan = [ProductQuant(sub_vectors=16, bits=8), LinearInt8Weights()]
    plan = [ProductQuant(sub_vectors=8, bits=4, finetune_epochs=1)]   # needs compile(..., train_data=...)

Codebooks: seeded k-means (k-means++-free: initial entries are rows drawn with probability
proportional to their weight) per sub-space, each row weighted by 1 + its frequency in the
training rows when there are some (frequent rows are reconstructed best). Codebooks are
rounded to fp16 and the codes re-assigned against the rounded entries, so the codes are the
nearest entries the device will actually use. Padding rows stay exactly zero: a table with
padding rows reserves entry 0 of every sub-space as the zero vector (k-means fits the other
K - 1), padding rows take code 0 everywhere, and fine-tuning never moves entry 0.

Fine-tuning (``finetune_epochs > 0``): the codes stay fixed and only the codebook entries
are trained (with ``train_dense`` also the fp32 Linear and other non-table weights), through a
ProgramModule whose tables gather through the codebooks, by distillation from the source model + labels on training rows (qat.py's
loss and batches). Seeded and bounded by epochs / ``max_steps`` only: replaying the
manifest's plan gives the same bytes.

Stored as the runtime's ``pq`` kind (codes uint8, 4-bit codes packed two per byte with
params.pack_bits; codebooks float16 [M, K, d/M]); remap / projection arrays of pruned or
reduced tables stay and apply around the PQ gather as for every kind."""
from __future__ import annotations

import dataclasses

import numpy as np

from edgecompress_runtime.params import pack_bits, unpack_bits

from ..errors import CompileError
from .base import ExportStep, ExportView, PassConfig, export_hook, register


@dataclasses.dataclass(frozen=True)
class ProductQuant(PassConfig):
    NAME = "product_quant"
    VERSION = 1
    sub_vectors: int = 8           # M: each row is split into M sub-vectors of d/M values
    bits: int = 8                  # code width: up to 256 (8) or 16 (4) codebook entries per sub-space
    entries: int = 0               # K entries per sub-space; 0 = 2**bits (fewer: smaller codebooks)
    tables: tuple | None = None    # names; None = every fp32 table only ever gathered from
    kmeans_iters: int = 20
    finetune_epochs: float = 0.0   # 0: k-means only (post-training); > 0 needs training rows
    train_dense: bool = False      # fine-tuning also trains the fp32 Linear / other weights (not tables)
    max_steps: int = 0             # 0 = as many as the epochs take
    lr: float = 1e-3
    batch_size: int = 1024
    distill_weight: float = 0.5    # share of the fine-tuning loss against the source model
    temperature: float = 1.0
    negatives: int = 1             # retrieval data (positives only): random items per positive
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.sub_vectors, int) and not isinstance(self.sub_vectors, bool)):
            self._fail("sub_vectors", "a whole number >= 1")
        self.check_range("sub_vectors", 1, float("inf"))
        self.check_choice("bits", (8, 4))
        if self.entries != 0:
            self.check_range("entries", 2, 1 << self.bits)
        self.check_names("tables")
        self.check_range("kmeans_iters", 1, 1000)
        self.check_range("finetune_epochs", 0, float("inf"))
        self.check_choice("train_dense", (False, True))
        self.check_training()

    @property
    def NEEDS_TRAIN_DATA(self) -> bool:       # k-means alone runs without training rows
        return self.finetune_epochs > 0


# --- k-means ------------------------------------------------------------------------

def _assign(x, entries):
    """Index of the nearest entry for each row of x (squared L2, ties to the lowest index)."""
    d = (entries * entries).sum(1)[None, :] - 2.0 * (x @ entries.T)
    return np.argmin(d, axis=1)


def kmeans(x: np.ndarray, weight: np.ndarray, k: int, iters: int, rng, fixed: np.ndarray | None = None):
    """Weighted k-means of x [N, s] into k entries; ``fixed`` [f, s] entries come first and never move."""
    f = 0 if fixed is None else len(fixed)
    free = k - f
    p = weight / weight.sum()
    take = rng.choice(len(x), size=free, replace=free > int((p > 0).sum()), p=p)
    entries = np.concatenate([fixed, x[take]]) if f else x[take].copy()
    for _ in range(iters):
        a = _assign(x, entries)
        sums = np.zeros_like(entries)
        np.add.at(sums, a, x * weight[:, None])
        mass = np.bincount(a, weights=weight, minlength=k)
        moved = mass > 0
        moved[:f] = False
        new = entries.copy()
        new[moved] = sums[moved] / mass[moved, None]
        if np.allclose(new, entries):
            break
        entries = new
    return entries


def quantize_table(w: np.ndarray, m: int, entries: int, weight: np.ndarray, padding, iters: int, seed: int):
    """fp32 [R, d] -> (codes uint8 [R, M], fp16 codebooks [M, K, d/M]), K <= entries."""
    rows, d = w.shape
    sub = d // m
    padding = sorted(int(r) for r in padding)
    keep = np.ones(rows, bool)
    keep[padding] = False
    k = max(1, min(entries, int(keep.sum()) + bool(padding)))
    rng = np.random.default_rng(seed)
    fixed = np.zeros((1, sub), np.float32) if padding else None
    codes = np.zeros((rows, m), np.uint8)
    books = np.zeros((m, k, sub), np.float16)
    for j in range(m):
        x = np.ascontiguousarray(w[:, j * sub:(j + 1) * sub], dtype=np.float32)
        if keep.any():
            entries = kmeans(x[keep], weight[keep], k, iters, rng, fixed)
        else:
            entries = np.zeros((k, sub), np.float32)
        books[j] = entries.astype(np.float16)
        codes[:, j] = _assign(x, books[j].astype(np.float32))     # nearest of the entries as stored
        codes[padding, j] = 0
    return codes, books


# --- fine-tuning: codebooks only, through a ProgramModule that gathers via codes ---------

def pq_module(program, names, trainable: bool = False, train_dense: bool = False):
    """A ProgramModule whose ``names`` tables (pq kind) gather codebook entries by code: the
    fine-tuning student, and the torch reference the bundle is checked against."""
    import torch
    from torch import nn

    from ..graph.torch_exec import ProgramModule, _key

    class PQModule(ProgramModule):
        def _gather(self, pname, idx):
            key = _key(pname)
            if key not in self.books:
                return super()._gather(pname, idx)
            if pname in self.remaps:
                idx = getattr(self, self.remaps[pname])[idx].long()
            codes = getattr(self, f"pqcodes__{key}")[idx]                  # [..., M] int64
            book = self.books[key]                                          # [M, K, s]
            m, k, _ = book.shape
            flat = codes + torch.arange(m) * k
            rows = book.reshape(m * k, -1)[flat].reshape(*codes.shape[:-1], -1)
            return rows @ self.projections[key] if key in self.projections else rows

    module = PQModule(program, trainable=train_dense)
    module.tables.requires_grad_(False)              # other tables (and their padding rows) stay as they are
    module.projections.requires_grad_(False)
    module.books = nn.ParameterDict()
    for name in names:
        p, key = program.params[name], _key(name)
        cb = p.arrays["codebooks"]
        codes = unpack_bits(p.arrays["codes"], p.bits, cb.shape[0]).astype(np.int64)
        module.register_buffer(f"pqcodes__{key}", torch.from_numpy(codes))
        module.books[key] = nn.Parameter(torch.from_numpy(cb.astype(np.float32)), requires_grad=trainable)
        del module.tables[key]
    return module


def finetune(program, names, config: ProductQuant, ctx, reserved: dict) -> dict:
    """Train the codebook entries of ``names`` (in place in the program's pq params)."""
    import torch

    from .distill import fine_tune, teacher_of
    if ctx.train_data is None:
        raise CompileError("product_quant with finetune_epochs > 0 needs training rows: "
                           "compile(..., train_data=...) (it never trains on held-out rows)")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("product_quant fine-tuning with distill_weight > 0 needs the source model "
                           "(PassContext(teacher=...))")
    tables = set(program.tables())
    bad = [n for n, p in program.params.items() if n not in tables and p.kind != "fp32"]
    if config.train_dense and bad:
        raise CompileError(f"product_quant with train_dense trains fp32 weights; {bad[0]!r} is already "
                           f"{program.params[bad[0]].kind}: put product_quant before Linear quantization")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = ctx.train_data
    student = pq_module(program, names, trainable=True, train_dense=config.train_dense).train()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)

    def after_step():
        with torch.no_grad():                   # the reserved zero entries stay zero
            for key in reserved:
                student.books[key][:, 0] = 0.0
    record = fine_tune(student, opt, program, data, config, teacher_of(ctx, program), rng,
                       label_weight=1 - config.distill_weight, after_step=after_step,
                       stop=lambda steps, seen: seen >= config.finetune_epochs * len(data)
                       or bool(config.max_steps and steps >= config.max_steps))
    from ..graph.torch_exec import _key
    if config.train_dense:
        student.state_to_program(program)            # Linear and other fp32 weights (PQ tables are skipped)
    for name in names:
        p = program.params[name]
        books = student.books[_key(name)].detach().numpy().astype(np.float16)
        program.params[name] = p.replace(arrays={**p.arrays, "codebooks": books})
    return record


# --- the pass -----------------------------------------------------------------------------

def pq_tables(program, config: ProductQuant) -> list[str]:
    """fp32 tables the pass quantizes: chosen, and only ever gathered from."""
    from .qat import gathered_tables
    return [t for t in gathered_tables(program, config) if program.roles.get(t) == "embedding"]


@register(ProductQuant)
def product_quant_(program, config: ProductQuant, ctx, filter_fn):
    names = [t for t in pq_tables(program, config) if filter_fn(t, "embedding")]
    for name in names:
        d = program.params[name].arrays["data"].shape[1]
        if d % config.sub_vectors:
            raise CompileError(f"product_quant: table {name!r} has width {d}, not divisible by "
                               f"sub_vectors={config.sub_vectors}")
    reserved, originals = {}, {}
    for i, name in enumerate(names):
        p = program.params[name]
        w = originals[name] = p.arrays["data"]
        counts = ctx.id_counts(program, name) if ctx.train_data is not None and "remap" not in p.arrays else None
        weight = np.ones(len(w)) if counts is None else 1.0 + counts[:len(w)].astype(np.float64)
        padding = program.padding_rows.get(name, ()) if "remap" not in p.arrays else ()
        codes, books = quantize_table(w, config.sub_vectors, config.entries or 1 << config.bits, weight, padding,
                                      config.kmeans_iters, config.seed + i)
        if len(padding):
            reserved[name.replace(".", "__")] = True
        extra = {k: v for k, v in p.arrays.items() if k != "data"}     # remap / proj stay
        program.params[name] = p.replace(kind="pq", bits=config.bits, arrays={
            "codes": pack_bits(codes, config.bits), "codebooks": books, **extra},
            info={**p.info, "sub_vectors": config.sub_vectors, "bits": config.bits, "bytes_before": p.nbytes})
    record = finetune(program, names, config, ctx, reserved) if config.finetune_epochs > 0 and names else {}
    for name in names:
        p, w = program.params[name], originals[name]
        err = float(np.sqrt(np.mean((p.to_runtime(name).storage_dense() - w) ** 2))) if w.size else 0.0
        program.params[name] = p.replace(info={**p.info, "rms_error": err})
        program.log.append({"pass": config.NAME, "param": name, "sub_vectors": config.sub_vectors,
                            "bits": config.bits, "bytes": [p.info["bytes_before"], p.nbytes]})
    if record:
        program.log.append({"pass": config.NAME, **record})
    return program


@export_hook(ProductQuant)
def export_pq(config: ProductQuant, view: ExportView) -> ExportStep:
    """Both formats gather codes, then codebook entries (exact: the plan's codes and entries)."""
    codes = "int8 (code - 128)" + (", 4-bit codes unpacked with FLOOR arithmetic" if config.bits == 4 else "")
    return ExportStep(f"product-quantized tables: codes stored as {codes}; GATHER of the ids' codes, "
                      "CAST to int, + sub-space offsets, GATHER of fp32 codebook entries, RESHAPE (exact)", True)
