"""k-means weight clustering (weight sharing, Han et al.'s "Deep Compression") of Linear layers:
each chosen Linear weight [O, I] keeps only K <= 2**bits distinct values, per layer or (with
``per_channel``) per output row, and stores a ``bits``-bit index per weight plus the K shared
values. A layer costs O*ceil(I*bits/8) bytes of codes + K (per layer) or O*K (per channel) fp16
values, against O*I bytes for int8 per-channel weights: 4-, 3- and 2-bit layers are 2x, 2.7x and
4x smaller than int8.

    plan = [EmbeddingRowwiseQuant(bits=4), ClusterLinear(bits=4)]
    plan = [ClusterLinear(bits=3, per_channel=True, finetune_epochs=1)]   # needs compile(..., train_data=...)

Clustering: one-dimensional k-means (Lloyd) of the layer's (or row's) weights, initialised with
K values evenly spaced between the minimum and maximum weight (Han et al.'s linear
initialisation: large weights, which matter most, keep a centroid of their own), ``kmeans_iters``
iterations at most. The centroids are rounded to fp16 and every weight is re-assigned to the
nearest rounded value, so the indices are the nearest values the device will use. No random
choice is involved: the clustering is a function of the weights.

Fine-tuning (``finetune_epochs > 0``): the assignments stay fixed and only the shared values are
trained (the gradient of a shared value is the sum of its weights' gradients), through a
ProgramModule whose clustered layers compute ``F.linear(x, codebook[codes])``, by distillation
from the source model + labels on training rows (distill.py's loss and batches, as qat.py and
product_quant.py). Seeded (``seed``: torch's initial state and the batch order) and bounded by
epochs / ``max_steps`` only: replaying the manifest's plan gives the same bytes.

Stored as the runtime's ``clustered`` kind (codes uint8 packed as a bit stream per row with
params.pack_bits, codebook float16 [1 or O, K]). The numpy runtime materialises the fp32 weight
once at load (first use), as it does for every Linear kind: clustering saves bundle bytes, not
run-time memory. Chosen layers: fp32 Linear weights read by a linear node (``layers`` names them;
None = every one of at least ``min_params`` weights), so the pass goes after distillation / QAT /
PQ with ``train_dense`` and before LinearInt8Weights, which then quantizes the layers left fp32.
Export: see ``export_cluster`` (the app formats store the de-clustered fp32 values)."""
from __future__ import annotations

import dataclasses

import numpy as np

from edgecompress_runtime.params import pack_bits, unpack_bits

from ..errors import CompileError
from .base import ExportStep, ExportView, PassConfig, export_hook, register


@dataclasses.dataclass(frozen=True)
class ClusterLinear(PassConfig):
    NAME = "cluster_linear"
    VERSION = 1
    bits: int = 4                  # index width: K = 2**bits shared values (2..8)
    per_channel: bool = False      # one codebook per output row (else one per layer)
    layers: tuple | None = None    # Linear weight names; None = every fp32 Linear weight
    min_params: int = 0            # skip layers smaller than this
    kmeans_iters: int = 30
    finetune_epochs: float = 0.0   # 0: k-means only (post-training); > 0 needs training rows
    max_steps: int = 0             # 0 = as many as the epochs take
    lr: float = 1e-3
    batch_size: int = 1024
    distill_weight: float = 0.5    # share of the fine-tuning loss against the source model
    temperature: float = 1.0
    negatives: int = 1             # retrieval data (positives only): random items per positive
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.bits, int) and not isinstance(self.bits, bool)):
            self._fail("bits", "a whole number in 2..8")
        self.check_choice("bits", tuple(range(2, 9)))
        self.check_choice("per_channel", (False, True))
        self.check_names("layers")
        self.check_range("min_params", 0, float("inf"))
        self.check_range("kmeans_iters", 1, 1000)
        self.check_range("finetune_epochs", 0, float("inf"))
        self.check_training()

    @property
    def NEEDS_TRAIN_DATA(self) -> bool:       # k-means alone runs without training rows
        return self.finetune_epochs > 0


# --- one-dimensional k-means ----------------------------------------------------------

def _nearest(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``values`` for each x (ties to the lower one)."""
    return np.searchsorted((values[1:] + values[:-1]) / 2, x, side="left")


def kmeans_1d(x: np.ndarray, k: int, iters: int) -> np.ndarray:
    """Sorted centroids [k] of the values x (Lloyd from k values evenly spaced over [min, max])."""
    x = x.astype(np.float64)
    c = np.linspace(x.min(), x.max(), k) if x.size else np.zeros(k)
    for _ in range(iters):
        a = _nearest(x, c)
        mass = np.bincount(a, minlength=k)
        sums = np.bincount(a, weights=x, minlength=k)
        new = np.sort(np.where(mass > 0, sums / np.maximum(mass, 1), c))
        if np.array_equal(new, c):
            break
        c = new
    return c


def cluster_weight(w: np.ndarray, bits: int, per_channel: bool, iters: int):
    """fp32 [O, I] -> (codes uint8 [O, I], codebook float16 [1 or O, K]), K = min(2**bits, values)."""
    groups = w if per_channel else w.reshape(1, -1)
    k = max(1, min(1 << bits, groups.shape[1]))
    book = np.zeros((len(groups), k), np.float16)
    codes = np.zeros(groups.shape, np.uint8)
    for g, x in enumerate(groups):
        book[g] = kmeans_1d(x, k, iters).astype(np.float16)       # rounding keeps the order
        codes[g] = _nearest(x, book[g].astype(np.float32))        # nearest of the values as stored
    return codes.reshape(w.shape), book


def declustered(codes: np.ndarray, book: np.ndarray) -> np.ndarray:
    """The fp32 weight the codes [O, I] and codebook [1 or O, K] stand for."""
    b = book.astype(np.float32)
    return np.take(b[0], codes.astype(np.int64)) if len(b) == 1 else np.take_along_axis(b, codes.astype(np.int64), 1)


# --- fine-tuning: the shared values only, assignments fixed ------------------------------

def clustered_module(program, names, trainable: bool = False):
    """A ProgramModule whose ``names`` Linear layers (clustered kind) compute with
    ``codebook[codes]``: the fine-tuning student (codebooks trainable), and a torch reference."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from ..graph.torch_exec import ProgramModule, _key

    module = ProgramModule(program, trainable=False)
    module.books = nn.ParameterDict()
    for name in names:
        p, key = program.params[name], _key(name)
        codes = unpack_bits(p.arrays["codes"], p.bits, p.shape[1]).astype(np.int64)
        module.register_buffer(f"clcodes__{key}", torch.from_numpy(codes))
        book = module.books[key] = nn.Parameter(torch.from_numpy(p.arrays["codebook"].astype(np.float32)),
                                                requires_grad=trainable)
        idx = getattr(module, f"clcodes__{key}")
        lin = module.linears[key]
        weight = (lambda book=book, idx=idx: book[0][idx]) if len(book) == 1 else \
            (lambda book=book, idx=idx: torch.gather(book, 1, idx))
        lin.forward = (lambda x, lin=lin, weight=weight: F.linear(x, weight(), lin.bias))
    return module


def finetune(program, names, config: ClusterLinear, ctx) -> dict:
    """Train the shared values of the ``names`` layers (in place in the program's clustered params)."""
    import torch

    from ..graph.torch_exec import _key
    from .distill import fine_tune, teacher_of
    if ctx.train_data is None:
        raise CompileError("cluster_linear with finetune_epochs > 0 needs training rows: "
                           "compile(..., train_data=...) (it never trains on held-out rows)")
    if config.distill_weight > 0 and ctx.teacher is None:
        raise CompileError("cluster_linear fine-tuning with distill_weight > 0 needs the source model "
                           "(PassContext(teacher=...))")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = ctx.train_data
    student = clustered_module(program, names, trainable=True).train()
    opt = torch.optim.Adam(list(student.books.parameters()), lr=config.lr)
    record = fine_tune(student, opt, program, data, config, teacher_of(ctx, program), rng,
                       label_weight=1 - config.distill_weight,
                       stop=lambda steps, seen: seen >= config.finetune_epochs * len(data)
                       or bool(config.max_steps and steps >= config.max_steps))
    for name in names:
        p = program.params[name]
        book = student.books[_key(name)].detach().numpy().astype(np.float16)
        program.params[name] = p.replace(arrays={**p.arrays, "codebook": book})
    return record


# --- the pass -----------------------------------------------------------------------------

def chosen_layers(program, config: ClusterLinear, filter_fn) -> list[str]:
    """fp32 2-D Linear weights read by a linear node, named (or all), big enough, allowed by the filter."""
    out = []
    for name in program.linear_bias():
        p = program.params.get(name)
        if p is None or p.kind != "fp32" or program.roles.get(name) != "linear" or p.arrays["data"].ndim != 2:
            continue
        if (config.layers is None or name in config.layers) and p.arrays["data"].size >= max(config.min_params, 1) \
                and filter_fn(name, "linear"):
            out.append(name)
    return out


@register(ClusterLinear)
def cluster_linear_(program, config: ClusterLinear, ctx, filter_fn):
    known = set(program.linear_bias())
    unknown = sorted(set(config.layers or ()) - known)
    if unknown:
        raise CompileError(f"cluster_linear: {unknown[0]!r} is not a Linear weight of this model; "
                           f"Linear weights: {', '.join(sorted(known)) or 'none'}")
    names = chosen_layers(program, config, filter_fn)
    originals = {}
    for name in names:
        p = program.params[name]
        w = originals[name] = p.arrays["data"]
        codes, book = cluster_weight(w, config.bits, config.per_channel, config.kmeans_iters)
        program.params[name] = p.replace(kind="clustered", bits=config.bits,
                                         arrays={"codes": pack_bits(codes, config.bits), "codebook": book},
                                         info={**p.info, "bits": config.bits, "shared_values": book.shape[1],
                                               "per_channel": config.per_channel, "bytes_before": p.nbytes})
    record = finetune(program, names, config, ctx) if config.finetune_epochs > 0 and names else {}
    for name in names:
        p, w = program.params[name], originals[name]
        err = float(np.sqrt(np.mean((p.to_runtime(name).storage_dense() - w) ** 2)))
        program.params[name] = p.replace(info={**p.info, "rms_error": err})
        program.log.append({"pass": config.NAME, "param": name, "bits": config.bits,
                            "shared_values": int(p.arrays["codebook"].size),
                            "bytes": [p.info["bytes_before"], p.nbytes]})
    if record:
        program.log.append({"pass": config.NAME, **record})
    return program


@export_hook(ClusterLinear)
def export_cluster(config: ClusterLinear, view: ExportView) -> ExportStep:
    """Neither format has a Linear whose weights are a codebook lookup (XNNPACK and TFLite
    FULLY_CONNECTED take dense fp32 or int8 weights, and int8 cannot hold arbitrary shared
    values exactly): the artifact stores the de-clustered fp32 weight, exactly the plan's values
    (the bundle is smaller; the artifact is not). Layers other passes quantize are unaffected."""
    kernel = "XNNPACK fp32 Linear" if view.fmt == "executorch" else "fp32 FULLY_CONNECTED"
    return ExportStep(f"k-means clustered Linear weights ({config.bits}-bit indices, "
                      f"{'per-row' if config.per_channel else 'per-layer'} codebooks) stored as their de-clustered "
                      f"fp32 values, {kernel} (exact; not smaller in this format)", True)
