"""Backends that execute a bundle. ``numpy`` is always there; others are
used when their runtime package is installed and the bundle carries their artifact."""
from __future__ import annotations

from ..errors import BackendError

KNOWN = ("numpy",)


def available() -> list[str]:
    """Backends importable on this machine, in preference order."""
    return ["numpy"]


def create(name: str, bundle):
    if name == "auto":
        name = choose(bundle)
    if name not in KNOWN:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(KNOWN)}")
    if name not in available():
        raise BackendError(f"backend {name!r} is not installed here; installed: {', '.join(available())}")
    from .numpy_graph import NumpyBackend
    return NumpyBackend(bundle)


def choose(bundle) -> str:
    """First of the target's preferred backends that is installed and usable."""
    preferred = bundle.manifest.get("target", {}).get("backends") or ["numpy"]
    for name in list(preferred) + ["numpy"]:
        if name in available():
            return name
    return "numpy"
