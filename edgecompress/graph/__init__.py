"""Lowering from torch.export to the bundle op set (see edgecompress_runtime.ops)."""
from .io import CallConvention, forward_input_names
from .lower import lower
from .program import Node, Program, StoredParam

__all__ = ["Program", "StoredParam", "Node", "lower", "forward_input_names", "CallConvention"]
