"""Lowering from torch.export to the bundle op set (see edgecompress_runtime.ops)."""
from .lower import Program, StoredParam, forward_input_names, lower

__all__ = ["Program", "StoredParam", "lower", "forward_input_names"]
