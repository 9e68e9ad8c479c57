"""Lowering from torch.export to the bundle op set (see edgecompress_runtime.ops)."""
from .io import CallConvention, forward_input_names
from .lower import Program, StoredParam, lower

__all__ = ["Program", "StoredParam", "lower", "forward_input_names", "CallConvention"]
