"""Backends that execute a bundle. ``numpy`` is always there; others are
used when their runtime package is installed and the bundle carries their artifact.

A backend object has ``.name`` and ``.run(feeds: dict[str, np.ndarray]) -> np.ndarray``
(feeds already validated against the input spec). Artifact backends import
their runtime only when created, so importing this package stays numpy-only.
"""
from __future__ import annotations

from ..errors import BackendError
from ._common import installed

KNOWN = ("numpy", "litert", "executorch")
# what to install for each artifact backend
INSTALL = {"litert": "pip install ai-edge-litert  (or tflite-runtime with numpy<2)",
           "executorch": "pip install executorch  (needs torch; or executorch-numpy-runtime on Python >= 3.12)"}


def available() -> list[str]:
    """Backends importable on this machine (checked without importing them)."""
    out = ["numpy"]
    if installed("ai_edge_litert") or installed("tflite_runtime"):
        out.append("litert")
    if (installed("executorch") and installed("torch")) or installed("executorch_numpy_runtime"):
        out.append("executorch")
    return out


def carried(bundle) -> list[str]:
    """Backends the bundle has something to run for: numpy (its graph) plus its artifacts."""
    arts = bundle.manifest.get("artifacts") or {}
    return ["numpy"] + [k for k in KNOWN if k != "numpy" and isinstance(arts.get(k), dict)]


def create(name: str, bundle):
    """The backend ``name`` for ``bundle``; "auto" tries the target's
    preference order among what is installed and carried, ending with numpy."""
    if name == "auto":
        for cand in candidates(bundle):
            try:
                return create(cand, bundle)
            except BackendError:
                if cand == "numpy":
                    raise
        return create("numpy", bundle)
    if name not in KNOWN:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(KNOWN)}")
    if name not in available():
        raise BackendError(f"backend {name!r} is not installed here ({INSTALL.get(name, '')}); "
                           f"installed: {', '.join(available())}")
    if name not in carried(bundle):
        raise BackendError(f"this bundle carries no {name} artifact; it carries: {', '.join(carried(bundle))} "
                           f"(recompile with --formats including {name})")
    if name == "litert":
        from .litert import LiteRTBackend
        return LiteRTBackend(bundle)
    if name == "executorch":
        from .executorch import ExecuTorchBackend
        return ExecuTorchBackend(bundle)
    from .numpy_graph import NumpyBackend
    return NumpyBackend(bundle)


def candidates(bundle) -> list[str]:
    """The target's preferred backends that are installed here and that the
    bundle carries, in preference order, numpy last if not listed."""
    preferred = bundle.manifest.get("target", {}).get("backends") or ["numpy"]
    usable = set(available()) & set(carried(bundle))
    out = []
    for name in list(preferred) + ["numpy"]:
        if name in usable and name not in out:
            out.append(name)
    return out


def choose(bundle) -> str:
    """First of the target's preferred backends that is installed here and
    that the bundle carries an artifact for; numpy otherwise."""
    return candidates(bundle)[0]
