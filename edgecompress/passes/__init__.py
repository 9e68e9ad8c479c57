"""Compression passes. Each module holds one config class and the function
that applies it (and, when an app format expresses it differently, its export
hook); ``apply_pass`` is the one entry point, a plan is a list of configs, and
``PassContext`` carries what passes learn from (teacher, training and calibration rows).

Canonical order in a plan (the planner emits it; replay keeps any order but
passes refuse orders that cannot work, e.g. pruning an already quantized table):
row pruning -> dimension reduction -> MLP neuron pruning -> distillation ->
sparse pruning -> embedding quantization (or fp16, or product quantization, or QAT, which trains and then writes
both the row and the Linear quantization) -> Linear quantization."""
from .base import PassConfig, apply_pass, apply_plan, plan_from_json, plan_to_json
from .context import PassContext
from .distill import Distill
from .fp16 import Fp16Weights
from .prune_mlp import MLPNeuronPrune, find_groups
from .product_quant import ProductQuant
from .prune_rows import EmbeddingRowPrune
from .qat import QAT
from .quantize_embeddings import EmbeddingRowwiseQuant
from .quantize_linear import ConvInt8Weights, LinearInt8Dynamic, LinearInt8Static, LinearInt8Weights
from .reduce_dims import EmbeddingDimReduce
from .sparse import LinearSparsePrune

DEFAULT_PLAN = (EmbeddingRowwiseQuant(bits=8), LinearInt8Weights())


def _register_every_pass() -> None:
    """Import every module of this folder: a new pass registers itself (and its export hook) by
    being here, so plans naming it load without editing this file."""
    import importlib
    import pkgutil
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_register_every_pass()

__all__ = ["PassConfig", "PassContext", "apply_pass", "apply_plan", "plan_to_json", "plan_from_json", "DEFAULT_PLAN",
           "EmbeddingRowwiseQuant", "EmbeddingRowPrune", "EmbeddingDimReduce", "MLPNeuronPrune", "find_groups",
           "LinearInt8Weights", "ConvInt8Weights", "LinearInt8Dynamic", "LinearInt8Static", "LinearSparsePrune", "Distill",
           "Fp16Weights", "QAT", "ProductQuant"]
