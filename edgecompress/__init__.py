"""edgecompress: put PyTorch recommenders on edge devices.

    import edgecompress as ec
    result = ec.compile(model, target="raspberry-pi-4", data=eval_data, output="model.ecb")
"""
__version__ = "0.1.0"

from .compile import CompileResult, compile  # noqa: E402
from .errors import CompileError, DataError, EdgecompressError, TargetError, UnsupportedOpError  # noqa: E402

__all__ = ["compile", "CompileResult", "EdgecompressError", "CompileError", "DataError", "TargetError",
           "UnsupportedOpError", "__version__"]
