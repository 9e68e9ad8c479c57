"""The ``executorch`` backend: the bundle's .pte run by ExecuTorch.

Runtime, in this order:
1. ``executorch.runtime`` (pip install executorch; its pybindings link
   libtorch, so torch must be installed on the device; the import takes
   seconds). ``executorch.kernels.quantized`` is imported first: without it a
   .pte with quantized embedding tables fails with ``Missing operator:
   quantized_decomposed::embedding_byte.out``.
2. ``executorch_numpy_runtime`` (third-party, torch-free, Python >= 3.12,
   ExecuTorch 1.3.1 inside: a .pte from a newer exporter may fail to load).

The .pte has a dynamic batch dimension up to ``batch.max`` from the manifest;
larger batches run in chunks.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..errors import BackendError
from ._common import artifact, installed, join_rows, threads


def runtime_module() -> str | None:
    if installed("executorch") and installed("torch"):
        return "executorch"
    if installed("executorch_numpy_runtime"):
        return "executorch_numpy_runtime"
    return None


def _set_threads(n: int) -> None:
    """XNNPACK's thread pool size (process-wide), when the pybindings expose it."""
    try:
        from executorch.extension.pybindings import portable_lib
        portable_lib._unsafe_reset_threadpool(int(n))
    except (ImportError, AttributeError):
        pass


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, bundle=None, *, data: bytes | None = None, meta: dict | None = None):
        if bundle is not None:
            data, meta = artifact(bundle, "executorch")
        if len(data) < 8 or data[4:6] != b"ET" or not data[6:8].isdigit():
            # checked here: ExecuTorch 1.x logs a bad identifier's raw bytes and aborts the process
            # (std::terminate on a UnicodeDecodeError in its log callback) instead of raising
            raise BackendError(f"ExecuTorch could not load the bundle's .pte: its file identifier is "
                               f"{bytes(data[4:8])!r}, not b'ET' and two digits")
        self.runtime = runtime_module()
        self._data = data
        self.max_batch = int((meta.get("batch") or {}).get("max") or 1024)
        self._inputs = [(s["name"], np.dtype(s["dtype"])) for s in meta.get("inputs", [])]
        method = meta.get("method", "forward")
        if self.runtime == "executorch":
            import torch
            import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed kernels)
            from executorch.runtime import Runtime
            self._torch = torch
            if os.environ.get("EDGECOMPRESS_RUNTIME_THREADS"):
                _set_threads(threads())
            try:
                self._program = Runtime.get().load_program(data)
                self._method = self._program.load_method(method)
            except Exception as e:   # noqa: BLE001 - the pybindings raise RuntimeError/ValueError
                raise BackendError(f"ExecuTorch could not load the bundle's .pte: {e}") from None
        elif self.runtime == "executorch_numpy_runtime":
            import executorch_numpy_runtime as enr
            self._torch = None
            fd, path = tempfile.mkstemp(suffix=".pte")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self._program = enr.Runtime.get().load_program(path)
                self._method = self._program.load_method(method)
            except Exception as e:   # noqa: BLE001
                raise BackendError(f"executorch-numpy-runtime could not load the bundle's .pte "
                                   f"(exported by executorch {meta.get('toolchain', {}).get('executorch')}; "
                                   f"version skew?): {e}") from None
            finally:
                os.unlink(path)
        else:
            raise BackendError("the executorch backend needs executorch with torch (pip install executorch) "
                               "or executorch-numpy-runtime (Python >= 3.12)")

    def _call(self, args: list) -> np.ndarray:
        if self._torch is not None:
            out = self._method.execute([self._torch.from_numpy(a) for a in args])[0]
            return out.numpy().copy()         # the output buffer is reused by the next call
        out = self._method(args)
        return np.array(out[0] if isinstance(out, (list, tuple)) else out, copy=True)

    def run(self, feeds: dict) -> np.ndarray:
        args = [np.ascontiguousarray(feeds[name], dtype=dt) for name, dt in self._inputs]
        n = len(args[0])
        if n <= self.max_batch and n > 0:
            return self._call(args)
        parts = [self._call([a[s:s + self.max_batch] for a in args]).reshape(min(self.max_batch, n - s), -1)
                 for s in range(0, n, self.max_batch)]
        return join_rows(parts)
