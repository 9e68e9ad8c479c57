"""Passes: a small versioned config + one registered function that applies it.

    program = apply_pass(program, EmbeddingRowwiseQuant(bits=8), filter_fn=None)

A plan is a list of configs; ``plan_to_json`` / ``plan_from_json`` store it in
the manifest so it can be diffed and replayed. Configs carry their version and
refuse to load a different one (the torchao pattern: fail loudly on mismatch).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..errors import CompileError

_REGISTRY: dict[str, tuple[type, Callable]] = {}


@dataclasses.dataclass(frozen=True)
class PassConfig:
    """Base of every pass config. Subclasses set NAME and VERSION."""

    NAME = "base"
    VERSION = 1

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


def register(config_cls: type):
    """Decorator for the function that applies ``config_cls``."""
    def wrap(fn):
        _REGISTRY[config_cls.NAME] = (config_cls, fn)
        return fn
    return wrap


def apply_pass(program, config: PassConfig, filter_fn: Callable[[str, str], bool] | None = None):
    """Apply one pass to ``program`` in place and return it. ``filter_fn(name,
    role)`` limits it to some parameters (role: embedding | linear | bias | other)."""
    if config.NAME not in _REGISTRY:
        raise CompileError(f"pass {config.NAME!r} is not registered")
    return _REGISTRY[config.NAME][1](program, config, filter_fn or (lambda name, role: True))


def plan_to_json(plan) -> list[dict]:
    return [c.to_dict() for c in plan]


def plan_from_json(items) -> list[PassConfig]:
    return [PassConfig.from_dict(d) for d in items]


def apply_plan(program, plan):
    for config in plan:
        apply_pass(program, config)
    return program
