"""Passes: a small versioned config + one registered function that applies it,
and (optionally) a hook saying how an app artifact expresses it.

    program = apply_pass(program, EmbeddingRowwiseQuant(bits=8), ctx=PassContext(train_data=rows))

A plan is a list of configs; ``plan_to_json`` / ``plan_from_json`` store it in
the manifest so it can be diffed and replayed. Configs carry their version and
refuse to load a different one (the torchao pattern: fail loudly on mismatch);
each checks its settings when built, so a bad plan fails when it is read.

Adding a pass: a module in this folder with the config (checks in
``__post_init__``), the function (``@register``), an ``@export_hook`` when the
artifact formats express the pass differently from the program's arithmetic,
and an import in ``__init__.py``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from ..errors import CompileError
from .context import PassContext

_REGISTRY: dict[str, tuple[type, Callable]] = {}
_EXPORT_HOOKS: dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class PassConfig:
    """Base of every pass config. Subclasses set NAME and VERSION."""

    NAME = "base"
    VERSION = 1
    NEEDS_TRAIN_DATA = False      # learns from training rows: skipped when a compile has none

    def to_dict(self) -> dict:
        return {"pass": self.NAME, "version": self.VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "PassConfig":
        d = dict(d)
        name, version = d.pop("pass", None), d.pop("version", None)
        if name not in _REGISTRY:
            raise CompileError(f"unknown pass {name!r} in plan; known: {', '.join(sorted(_REGISTRY))}")
        config_cls = _REGISTRY[name][0]
        if version != config_cls.VERSION:
            raise CompileError(f"pass {name!r} config version {version} does not match this "
                               f"edgecompress (version {config_cls.VERSION}); recompile the plan")
        fields = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise CompileError(f"pass {name!r}: unknown settings {unknown}")
        # JSON has lists where configs hold tuples (hashable, comparable)
        return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    # --- checks for __post_init__ -------------------------------------------
    def _fail(self, setting: str, must: str) -> None:
        raise CompileError(f"{self.NAME}: {setting} must be {must}, got {getattr(self, setting)!r}")

    def check_choice(self, setting: str, allowed: tuple) -> None:
        if getattr(self, setting) not in allowed:
            self._fail(setting, " or ".join(", ".join(map(repr, allowed)).rsplit(", ", 1)))

    def check_range(self, setting: str, lo: float, hi: float, *, lo_open=False, hi_open=False) -> None:
        v = getattr(self, setting)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
            (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not ok:
            self._fail(setting, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")

    def check_training(self) -> None:
        """The settings every training pass shares (passes/distill.py fine_tune): lr, temperature,
        max_steps, batch_size, distill_weight, negatives, seed."""
        for setting in ("lr", "temperature"):
            self.check_range(setting, 0, float("inf"), lo_open=True)
        self.check_range("max_steps", 0, float("inf"))
        self.check_range("batch_size", 1, float("inf"))
        self.check_range("distill_weight", 0, 1)
        self.check_range("negatives", 0, float("inf"))
        self.check_range("seed", 0, 2**32 - 1)

    def check_names(self, setting: str) -> None:
        v = getattr(self, setting)
        if v is not None and not (isinstance(v, tuple) and all(isinstance(n, str) for n in v)):
            self._fail(setting, "None or a list of parameter names")


def register(config_cls: type):
    """Decorator for the function ``fn(program, config, ctx, filter_fn)`` that applies ``config_cls``."""
    def wrap(fn):
        _REGISTRY[config_cls.NAME] = (config_cls, fn)
        return fn
    return wrap


def apply_pass(program, config: PassConfig, filter_fn: Callable[[str, str], bool] | None = None,
               ctx: PassContext | None = None):
    """Apply one pass to ``program`` in place and return it. ``filter_fn(name,
    role)`` limits it to some parameters (role: embedding | linear | bias | other);
    ``ctx`` gives what some passes learn from (teacher, training, calibration rows)."""
    if config.NAME not in _REGISTRY:
        raise CompileError(f"pass {config.NAME!r} is not registered")
    return _REGISTRY[config.NAME][1](program, config, ctx or PassContext(), filter_fn or (lambda name, role: True))


def plan_to_json(plan) -> list[dict]:
    return [c.to_dict() for c in plan]


def plan_from_json(items) -> list[PassConfig]:
    return [PassConfig.from_dict(d) for d in items]


def apply_plan(program, plan, ctx: PassContext | None = None):
    ctx = ctx or PassContext()
    for config in plan:
        apply_pass(program, config, ctx=ctx)
    return program


# --- how app artifacts express a pass -----------------------------------------

@dataclasses.dataclass(frozen=True)
class ExportView:
    """What an export hook sees: the compressed program and the artifact being built."""
    program: object
    fmt: str                       # "executorch" | "litert"
    mode: str                      # the program's Linear activations: weights | dynamic | static
    quantized_linears: tuple       # Linear weights the artifact stores int8 (empty: every Linear stays fp32)


class ExportStep(NamedTuple):
    how: str                       # what the artifact does for this pass
    exact: bool                    # the plan's arithmetic exactly (else an approximation, said why)
    approximations: tuple = ()


def export_hook(*config_classes: type):
    """Decorator for ``hook(config, view: ExportView) -> ExportStep`` of these passes."""
    def wrap(fn):
        for c in config_classes:
            _EXPORT_HOOKS[c.NAME] = fn
        return fn
    return wrap


def _already_applied(config, view: ExportView) -> ExportStep:
    """Passes whose effect is in the graph and weights (shapes, remap, projections, sparse weights)."""
    return ExportStep("already applied to the graph and weights (shapes, remap, projections, sparse "
                      "weights densified): exported as the host program computes it", True)


def describe_export(config: PassConfig, view: ExportView) -> tuple[dict, list[str]]:
    """(recipe step, approximations) of one pass in the artifact ``view`` describes."""
    step = _EXPORT_HOOKS.get(config.NAME, _already_applied)(config, view)
    return {"pass": config.NAME, "as": step.how, "exact": step.exact}, list(step.approximations)
