"""The recipe of an app artifact: how each pass of the plan is expressed in it.

The compressed Program already carries every pass's effect (quantized storage,
remap/proj arrays, pruned shapes); an exporter only decides how to *store and
compute* it. Each pass says so itself (its ``export_hook`` in passes/, a default
for passes already applied to graph and weights); this module only asks them in
plan order and collects what the artifact does and where it approximates the plan.
"""
from __future__ import annotations

from ..passes.base import ExportView, describe_export


def recipe(program, plan, fmt: str, quantized_linears=None) -> tuple[list[dict], list[str]]:
    """(recipe steps, approximations) of ``plan`` in format ``fmt``. ``quantized_linears``: the Linear
    weights the artifact stores int8 (default: every one the plan quantized)."""
    qlin = program.quantized_linears() if quantized_linears is None else quantized_linears
    view = ExportView(program=program, fmt=fmt, mode=program.linear_activation_mode(), quantized_linears=tuple(qlin))
    steps, approximations = [], []
    for config in plan:
        step, approx = describe_export(config, view)
        steps.append(step)
        approximations += approx
    return steps, approximations
