"""torch.export of a model, decomposed to Core ATen, and where each of its nodes comes from
(the file, line and code of forward(), user code or a library) for errors that name it."""
from __future__ import annotations

import re

import torch

from ..errors import CompileError
from .io import CallConvention

aten = torch.ops.aten


def _frames(node) -> list[tuple[str, int, str, str]]:
    """(file, line, function, source text) of the stack that created ``node``, outermost first."""
    trace = node.meta.get("stack_trace") or ""
    return [(m.group(1), int(m.group(2)), m.group(3), m.group(4).strip())
            for m in re.finditer(r'File "([^"]+)", line (\d+), in (\S+)\n?([^\n]*)', trace)]


def _is_library(path: str) -> bool:
    return any(part in path for part in ("site-packages", "dist-packages", "/torch/", "/lib/python"))


def module_path(node) -> str:
    """The path of the innermost module whose forward() made ``node`` ("bottom.0"); "" for the
    model's own forward() (kept on graph nodes as ``"mod"`` for the on-device op profile)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path if isinstance(path, str) and not path.startswith("_") else ""


def where(node) -> str:
    frames = _frames(node)
    stack = node.meta.get("nn_module_stack") or {}
    mod = list(stack.values())[-1][0] if stack else ""
    parts = [f"module {mod!r}"] if mod else []
    if frames:
        f, line, fn, text = frames[-1]
        parts.append(f"{f}:{line} in {fn}" + (f": {text}" if text else ""))
        user = [fr for fr in frames if not _is_library(fr[0])]
        if _is_library(f) and user:
            parts.append("called from {}:{} in {}: {}".format(*user[-1]))
    return "; ".join(parts) or "unknown location"


def unsupported_report(found: dict) -> str:
    """One message listing every unsupported op: count, where, user code or library."""
    lines = []
    for name, nodes in sorted(found.items()):
        frames = [_frames(n) for n in nodes]
        user = [fr for fr in frames if fr and not _is_library(fr[-1][0])]
        owner = "your code" if user else "library code" if any(frames) else "unknown code"
        lines.append(f"  aten.{name} x{len(nodes)} ({owner}) at {where(nodes[0])}")
    return ("the model uses ops the bundle op set does not implement (Core ATen after torch.export "
            f"decomposition): {len(found)} op(s)\n" + "\n".join(lines) +
            "\nadd each with an ATen-named numpy function in edgecompress_runtime/aten/ "
            "(see docs/ops.md, 'Adding an op'), or replace that layer in your model")


# Ops the passes act on are kept whole through decomposition; every other op
# reaches us in its Core ATen form.
PRESERVED = ("linear.default", "embedding.default", "embedding_bag.default", "embedding_bag.padding_idx")


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for name in PRESERVED:
        packet, over = name.split(".")
        table.pop(getattr(getattr(aten, packet), over), None)
    return table


def _export_message(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"the model does not export with torch.export ({type(e).__name__}: {first[:300]}); "
            "make forward() free of data-dependent Python control flow (branches on tensor values, "
            ".item(), variable-length loops), or compile with fixed shapes")


def export_model(model: torch.nn.Module, call: CallConvention, example: dict):
    """torch.export with every input's first dim dynamic (the batch), decomposed to Core ATen."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    kwargs = call.pack({k: torch.as_tensor(v) for k, v in example.items()})
    dyn = {k: ({n: {0: batch} for n in v} if isinstance(v, dict) else {0: batch}) for k, v in kwargs.items()}
    try:
        ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=dyn, strict=False)
    except Exception as e:  # torch raises many kinds; the user needs the first line and what to try
        if "batch" in str(e) and ("specializ" in str(e) or "Constraints violated" in str(e)):
            # a model that fixes the batch dimension (e.g. a view with a literal batch size)
            try:
                ep = torch.export.export(model, (), kwargs=kwargs, strict=False)
            except Exception:
                raise CompileError(_export_message(e)) from e
            else:
                raise CompileError("the model fixes its batch size (torch.export specialised the batch "
                                   f"dimension to {len(next(iter(example.values())))}); use x.shape[0] or -1 in "
                                   "view/reshape instead of a literal batch size") from e
        raise CompileError(_export_message(e)) from e
    try:
        return ep.run_decompositions(decomposition_table())
    except Exception as e:
        raise CompileError(f"torch.export could not decompose the model to Core ATen: {_export_message(e)}") from e
