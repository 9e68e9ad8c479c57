"""Core ATen calls as bundle nodes.

A node for an ATen op is named by its overload, as torch writes it without the
``aten.`` prefix (``convolution.default``, ``sum.dim_IntList``), and carries
every argument of that overload's schema in schema order, keyword-only ones
included and defaults filled in. The runtime (``edgecompress_runtime.ops``)
gives each name its numpy semantics; ``torch.ops.aten`` is the reference.
"""
from __future__ import annotations

import torch

# How graph JSON spells the dtypes an argument may name (np.dtype understands them).
DTYPE_NAMES = {getattr(torch, n): n for n in ("float32", "float64", "float16", "bfloat16", "int64", "int32",
                                              "int16", "int8", "uint8", "bool")}


def op_name(target) -> str:
    """``aten.sum.dim_IntList`` -> ``sum.dim_IntList``."""
    name = str(target)
    return name[len("aten."):] if name.startswith("aten.") else name


def overload(name: str):
    """The torch OpOverload for a bundle op name, or None."""
    packet, _, over = name.partition(".")
    try:
        return getattr(getattr(torch.ops.aten, packet), over or "default")
    except AttributeError:
        return None


def schema_args(target, args, kwargs) -> list:
    """Every schema argument of ``target`` in order, defaults filled in."""
    out = []
    schema = target._schema
    for i, a in enumerate(schema.arguments):
        if not a.kwarg_only and i < len(args):
            out.append(args[i])
        elif a.name in kwargs:
            out.append(kwargs[a.name])
        elif a.has_default_value():
            out.append(a.default_value)
        else:
            raise TypeError(f"{target}: missing argument {a.name!r}")
    return out


def split_args(target, values: list):
    """Inverse of schema_args: (positional, keyword-only) to call ``target`` with."""
    pos, kw = [], {}
    for a, v in zip(target._schema.arguments, values):
        if a.kwarg_only:
            kw[a.name] = v
        else:
            pos.append(v)
    return pos, kw


def to_json_value(v):
    """Literals as graph JSON stores them: dtypes by name, device/layout/memory format as None."""
    if isinstance(v, torch.dtype):
        if v not in DTYPE_NAMES:
            raise TypeError(f"dtype {v} is not supported in bundles")
        return DTYPE_NAMES[v]
    if isinstance(v, (torch.device, torch.layout, torch.memory_format)):
        return None
    if isinstance(v, (list, tuple)):
        return [to_json_value(x) for x in v]
    return v


def from_json_value(v, arg):
    """Graph JSON literal -> what the torch op takes (dtype names back to torch dtypes).
    The schema types dtypes as ints, so the argument's name tells them apart."""
    if isinstance(v, str) and ("dtype" in arg.name or "ScalarType" in str(arg.type)):
        return getattr(torch, v)
    if isinstance(v, torch.Tensor) and v.dim() == 0 and str(arg.type) in ("number", "Optional[number]"):
        return v.item()          # a non-finite scalar literal, stored as a 0-d constant
    return v
