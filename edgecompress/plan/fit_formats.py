"""The plan search when app formats ship: every format's payload held to the memory budget.

    search, exported = search_within_budgets(planner, target=tgt, reference_inputs=ref, memory_budget=mem,
                                             may_drop=True, notes=notes, report=None, metric="auc")

1. One export of the int8 plan per app format teaches the size model (``plan/format_size.py``)
   each format's graph bytes before the search steers by them.
2. ``Planner.run()``; when no plan fits every format and the formats were not asked for
   explicitly (``may_drop``), the app formats no plan fits are left out with a note.
3. The chosen plan is exported in every format and its exact bytes held to the budget; an
   artifact over it teaches the size model, and the planner chooses again among the plans it
   measured, or keeps shrinking (``run(resume=True)``), up to ``SIZE_ROUNDS`` exports.
When no plan fits and ``report`` is set, the report page says why before the BudgetError.
"""
from __future__ import annotations

from ..passes import DEFAULT_PLAN, apply_plan
from ..errors import BudgetError

SIZE_ROUNDS = 4               # exports of a chosen plan before giving up on fitting every format


def export_formats(formats, program, plan, target, reference_inputs) -> dict:
    """{format: (bytes, meta)} or {format: the exception its exporter raised} (reported later)."""
    from ..export.artifacts import export
    out = {}
    for fmt in formats:
        try:
            out[fmt] = export(fmt, program, plan, target, reference_inputs)
        except Exception as e:  # noqa: BLE001 - toolchains raise anything; build_artifacts reports it
            out[fmt] = e
    return out


def describe_exports(exported, mem) -> str:
    """"litert artifact 309,808 B (over); executorch artifact 201,004 B" against ``mem``."""
    sizes = {f: len(x[0]) for f, x in exported.items() if not isinstance(x, Exception)}
    return "; ".join([f"{f} artifact {n:,} B (over)" for f, n in sizes.items() if n > mem] +
                     [f"{f} artifact {n:,} B" for f, n in sizes.items() if n <= mem]) or "no app artifact measured"


def search_within_budgets(planner, *, target, reference_inputs, memory_budget, may_drop, notes, report=None,
                          metric=None):
    """(search result, exported artifacts of the chosen plan); see the module doc."""
    sizes = planner.format_sizes
    fitting = memory_budget is not None and sizes is not None and bool(sizes.formats)
    if fitting:
        int8 = apply_plan(planner.base.copy(), list(DEFAULT_PLAN))
        for fmt, got in export_formats(sizes.formats, int8, list(DEFAULT_PLAN), target, reference_inputs).items():
            if not isinstance(got, Exception):
                sizes.observe(fmt, int8, len(got[0]))
    try:
        try:
            search = planner.run()
        except BudgetError:
            if not may_drop or not planner.drop_unfit_formats(notes):
                raise
            search = planner.choose()
        while fitting:
            try:
                return _fit(planner, search, target, reference_inputs, memory_budget)
            except BudgetError:     # the exports taught the size model more: drop what cannot fit
                if not may_drop or not planner.drop_unfit_formats(notes):
                    raise
                search = planner.choose()
        return search, {}
    except BudgetError as e:
        if report is not None:
            from .report import write_budget_report
            write_budget_report(report, error=e, planner=planner, target=target.name, metric=metric)
        raise


def _fit(planner, search, target, reference_inputs, mem):
    for _ in range(SIZE_ROUNDS):
        chosen = search.chosen
        exported = export_formats(planner.format_sizes.formats, chosen.program, chosen.plan, target,
                                  reference_inputs)
        sizes = {f: len(x[0]) for f, x in exported.items() if not isinstance(x, Exception)}
        for fmt, n in sizes.items():
            planner.format_sizes.observe(fmt, chosen.program, n)
        if all(n <= mem for n in sizes.values()):
            return search, exported
        try:
            search = planner.choose()
        except BudgetError:           # what the search took to fit does not: shrink further
            search = planner.run(resume=True)
    raise BudgetError(f"after {SIZE_ROUNDS} exports the chosen plan's artifacts still exceed the memory budget "
                      f"of {mem:,} B ({describe_exports(exported, mem)}); ship fewer formats (--formats) or raise "
                      "the budget")
