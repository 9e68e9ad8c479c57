"""The ``litert`` backend: the bundle's .tflite run by LiteRT.

Interpreter, in this order:
1. ``ai_edge_litert`` (pip install ai-edge-litert; no torch, ~0.15 s import);
2. ``tflite_runtime`` (old boards), only with numpy < 2 (it fails to start on
   numpy 2) and only for artifacts the exporter marked ``tflite_runtime_ok``:
   tflite-runtime 2.14 gives wrong results for dynamic-range int8 layers.

The .tflite has one signature per batch size ("b1", "b64", ...; static shapes).
A batch of another size runs as whole chunks of the largest signature plus the
remainder padded into the smallest signature that holds it.
"""
from __future__ import annotations

import numpy as np

from ..errors import BackendError
from ._common import artifact, installed, join_rows, plan_chunks, take_rows, threads


def runtime_module() -> str | None:
    """Which interpreter package is usable here ("ai_edge_litert", "tflite_runtime") or None."""
    if installed("ai_edge_litert"):
        return "ai_edge_litert"
    if installed("tflite_runtime"):
        return "tflite_runtime"
    return None


def _interpreter_class(meta: dict):
    which = runtime_module()
    if which == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, which
    if which == "tflite_runtime":
        if int(np.__version__.split(".")[0]) >= 2:
            raise BackendError("tflite_runtime does not work with numpy >= 2 (found numpy "
                               f"{np.__version__}); pip install ai-edge-litert, or numpy<2")
        if not meta.get("tflite_runtime_ok", False):
            limits = "; ".join(meta.get("tflite_runtime_limits") or ["not verified for tflite_runtime"])
            raise BackendError(f"this .tflite cannot run on tflite_runtime ({limits}); "
                               "pip install ai-edge-litert")
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, which
    raise BackendError("the litert backend needs ai-edge-litert (pip install ai-edge-litert) "
                       "or tflite-runtime with numpy < 2")


class LiteRTBackend:
    name = "litert"

    def __init__(self, bundle=None, *, data: bytes | None = None, meta: dict | None = None,
                 num_threads: int | None = None):
        if bundle is not None:
            data, meta = artifact(bundle, "litert")
        Interpreter, self.runtime = _interpreter_class(meta)
        self._data = data                                   # the interpreter reads this buffer
        self.interpreter = Interpreter(model_content=data, num_threads=num_threads or threads())
        sigs = meta.get("signatures") or {}
        listed = self.interpreter.get_signature_list()
        missing = sorted(set(sigs) - set(listed))
        if missing or not sigs:
            raise BackendError(f"the .tflite lacks signatures {missing or '(none listed)'}; "
                               f"it has {sorted(listed)}")
        self.sizes = sorted(int(b) for b in sigs.values())
        self._runners = {int(b): self.interpreter.get_signature_runner(k) for k, b in sigs.items()}
        self._dtypes = {s["name"]: np.dtype(s["dtype"]) for s in meta.get("inputs", [])}
        self._output = meta.get("output", "output_0")

    def _call(self, size: int, feeds: dict) -> np.ndarray:
        out = self._runners[size](**feeds)
        return np.asarray(out[self._output] if self._output in out else next(iter(out.values())))

    def run(self, feeds: dict) -> np.ndarray:
        feeds = {k: np.asarray(v, dtype=self._dtypes.get(k, np.asarray(v).dtype)) for k, v in feeds.items()}
        n = len(next(iter(feeds.values())))
        if n in self._runners:
            return self._call(n, feeds)
        parts = [self._call(size, take_rows(feeds, start, rows, size)).reshape(size, -1)[:rows]
                 for start, rows, size in plan_chunks(n, self.sizes)]
        return join_rows(parts)
