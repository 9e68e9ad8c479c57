"""Backends that execute a bundle. ``numpy`` is always there; others are
used when their runtime package is installed and the bundle carries their artifact.

``auto`` (``load(path, backend="auto")``) picks, among the backends installed here
that the bundle carries ("usable"):

1. when the manifest carries *measured* latency estimates
   (``metrics.latency_by_backend[b]["s"][str(latency_batch)]``, written by the compiler
   from the device's calibrated latency table) for at least two usable backends: the
   one measured fastest at the bundle's latency batch (``metrics.latency_batch``).
   Estimates within ``TIE`` (5 %) of the fastest count as a tie, which the target's
   backend order breaks (estimates are about +-10 % accurate; backends the target does
   not list come after those it lists). Usable backends without a measured estimate
   are not compared (they follow as fallbacks if the chosen one fails to load).
2. otherwise the target's order (``manifest.target.backends``), then numpy (as before:
   backends the target does not list are not tried).

An estimate counts as measured when its ``source`` is "table" or starts with "table:"
(a table measured on the device, for that backend); "profile", "numpy-estimate:...",
"profile:..." or anything else does not. ``decide(bundle)`` returns the order and the
reason; ``Model.backend_reason`` carries the reason of the backend it runs.

A backend object has ``.name`` and ``.run(feeds: dict[str, np.ndarray]) -> np.ndarray``
(feeds already validated against the input spec). Artifact backends import
their runtime only when created, so importing this package stays numpy-only.
"""
from __future__ import annotations

from ..errors import BackendError
from ._common import installed  # public: the host asks it which app runtimes are importable

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


TIE = 0.05        # relative: estimates closer than this to the fastest are a tie


def create(name: str, bundle):
    """The backend ``name`` for ``bundle``; "auto" tries ``decide(bundle)``'s order
    (measured fastest first, else the target's preference) among what is installed
    and carried, ending with numpy."""
    return open_backend(name, bundle)[0]


def open_backend(name: str, bundle) -> tuple:
    """(backend, reason): like ``create``, with why this backend runs (for "auto": the
    measured estimates or the target's order; a backend that failed to load is named)."""
    if name != "auto":
        return _create(name, bundle), "requested explicitly"
    order, reason = decide(bundle)
    failed = []
    for cand in order:
        try:
            b = _create(cand, bundle)
        except BackendError as e:
            if cand == "numpy":
                raise
            failed.append(f"{cand} failed to load ({str(e).splitlines()[0][:120]})")
            continue
        if failed:
            return b, f"{'; '.join(failed)}: fell back to {cand}; first choice was by {reason}"
        return b, reason
    return _create("numpy", bundle), "numpy: nothing else could load"


def _create(name: str, bundle):
    if name not in KNOWN:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(KNOWN)}")
    if name not in available():
        raise BackendError(f"backend {name!r} is not installed here ({INSTALL.get(name, '')}); "
                           f"installed: {', '.join(available())}")
    if name not in carried(bundle):
        raise BackendError(f"this bundle carries no {name} artifact; it carries: {', '.join(carried(bundle))} "
                           f"(recompile with --formats including {name})")
    if name == "numpy":
        from .numpy_graph import NumpyBackend
        return NumpyBackend(bundle)
    try:
        if name == "litert":
            from .litert import LiteRTBackend
            backend = LiteRTBackend(bundle)
        else:
            from .executorch import ExecuTorchBackend
            backend = ExecuTorchBackend(bundle)
        _smoke(backend, bundle)
        return backend
    except BackendError:
        raise
    except Exception as e:  # noqa: BLE001 - a runtime rejects a corrupt artifact in its own ways
        text = str(e).strip().splitlines()
        raise BackendError(f"the bundle's {name} artifact does not load in its runtime "
                           f"({type(e).__name__}: {text[0][:160] if text else ''})") from None


def _smoke(backend, bundle) -> None:
    """One run on zero inputs of one row: an artifact that loads but cannot run (a corrupt .tflite
    fails in AllocateTensors, a .pte in execute) fails here, at load, where "auto" falls back."""
    from ..bounds import probe_feeds
    backend.run(probe_feeds(bundle.manifest["inputs"], 1, 1 << 28, bundle.path))


def preference(bundle) -> list[str]:
    """The target's preferred backends that are installed here and that the
    bundle carries, in preference order, numpy last if not listed."""
    preferred = bundle.manifest.get("target", {}).get("backends") or ["numpy"]
    usable = set(available()) & set(carried(bundle))
    out = []
    for name in list(preferred) + ["numpy"]:
        if name in usable and name not in out:
            out.append(name)
    return out


def is_measured(entry) -> bool:
    """An estimate from a latency table measured on the device ("table" / "table:<device>")."""
    src = entry.get("source") if isinstance(entry, dict) else None
    return isinstance(src, str) and (src == "table" or src.startswith("table:"))


def measured_estimates(bundle, usable=None) -> tuple[int | None, dict]:
    """(latency batch, {backend: seconds}) of the usable backends with a measured estimate
    at the bundle's latency batch."""
    metrics = bundle.manifest.get("metrics") or {}
    lbb = metrics.get("latency_by_backend")
    batch = metrics.get("latency_batch")
    if not isinstance(lbb, dict) or not lbb or isinstance(batch, bool) or not isinstance(batch, int):
        return (batch if isinstance(batch, int) and not isinstance(batch, bool) else None), {}
    usable = preference(bundle) if usable is None else usable
    out = {}
    for name in usable:
        entry = lbb.get(name)
        if not is_measured(entry):
            continue
        s = (entry.get("s") or {}).get(str(batch))
        if isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0:
            out[name] = float(s)
    return batch, out


def usable(bundle) -> list[str]:
    """Every backend installed here that the bundle carries: the target's order first
    (``preference``), then the others in ``KNOWN`` order."""
    pref = preference(bundle)
    have = set(available()) & set(carried(bundle))
    return pref + [n for n in KNOWN if n in have and n not in pref]


def decide(bundle) -> tuple[list[str], str]:
    """(backends to try in order, why the first): see the module doc."""
    order = preference(bundle)
    everything = usable(bundle)
    batch, est = measured_estimates(bundle, everything)
    target_order = ", ".join(order)
    if len(est) < 2:
        if not (bundle.manifest.get("metrics") or {}).get("latency_by_backend"):
            why = "no measured latency estimates in the bundle"
        elif batch is None:
            why = "the bundle names no latency batch"
        elif est:
            why = f"only {next(iter(est))} has a measured estimate at batch {batch} among the backends usable here"
        else:
            why = f"no usable backend has a measured estimate at batch {batch}"
        return order, f"the target's order ({target_order}): {why}"
    best = min(est.values())
    tied = [n for n in everything if n in est and est[n] <= best * (1 + TIE)]
    chosen = tied[0]
    rest = sorted((n for n in est if n != chosen), key=lambda n: est[n])
    ranking = " < ".join(f"{n} {est[n] * 1e3:.3f} ms" for n in sorted(est, key=lambda n: est[n]))
    src = ((bundle.manifest.get("metrics") or {}).get("latency_by_backend") or {}).get(chosen, {}).get("source")
    emu = " (measured under emulation)" if any(
        (bundle.manifest.get("metrics") or {}).get("latency_by_backend", {}).get(n, {}).get("emulated")
        for n in est) else ""
    if len(tied) > 1:
        why = (f"measured estimates at batch {batch} within {TIE * 100:.0f}% of the fastest for "
               f"{', '.join(tied)} ({ranking}; {src}){emu}: the target's order ({target_order}) breaks the tie")
    else:
        why = f"measured fastest at batch {batch}: {ranking} ({src}){emu}"
    unmeasured = [n for n in everything if n not in est]
    if unmeasured:
        why += f"; not compared (no measured estimate): {', '.join(unmeasured)}"
    new_order = [chosen] + rest + unmeasured
    return new_order, why


def candidates(bundle) -> list[str]:
    """Usable backends (installed here, carried by the bundle) in the order "auto" tries them."""
    return decide(bundle)[0]


def choose(bundle) -> str:
    """The backend "auto" picks first: measured fastest at the bundle's latency batch when
    the manifest carries measured estimates, else the target's order (see the module doc)."""
    return candidates(bundle)[0]
