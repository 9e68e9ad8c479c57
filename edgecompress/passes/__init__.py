"""Compression passes. Each module holds one config class and the function
that applies it; ``apply_pass`` is the one entry point."""
from .base import PassConfig, apply_pass, apply_plan, plan_from_json, plan_to_json
from .quantize_embeddings import EmbeddingRowwiseQuant
from .quantize_linear import LinearInt8Weights

DEFAULT_PLAN = (EmbeddingRowwiseQuant(bits=8), LinearInt8Weights())

__all__ = ["PassConfig", "apply_pass", "apply_plan", "plan_to_json", "plan_from_json",
           "EmbeddingRowwiseQuant", "LinearInt8Weights", "DEFAULT_PLAN"]
