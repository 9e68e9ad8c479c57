"""edgecompress-runtime: load and run edgecompress bundles on a device.

    import edgecompress_runtime as ecr
    model = ecr.load("model.ecb")            # verifies hashes, picks a backend
    logits = model.predict({"dense": d, "sparse": s})
"""
# the Core ATen overloads register into ops.OPS here, so the op set is whole whenever the package is imported
from . import aten  # noqa: F401
from .bundle import FORMAT_VERSION, read_bundle
from .errors import BackendError, BundleError, InputError
from .model import Model, load

__version__ = "0.1.0"
__all__ = ["load", "Model", "read_bundle", "FORMAT_VERSION", "BundleError", "InputError",
           "BackendError", "__version__"]
