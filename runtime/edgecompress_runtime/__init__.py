"""edgecompress-runtime: load and run edgecompress bundles on a device.

    import edgecompress_runtime as ecr
    model = ecr.load("model.ecb")            # verifies hashes, picks a backend
    logits = model.predict({"dense": d, "sparse": s})
"""
from .bundle import FORMAT_VERSION, read_bundle
from .errors import BackendError, BundleError, InputError
from .model import Model, load

__version__ = "0.1.0"
__all__ = ["load", "Model", "read_bundle", "FORMAT_VERSION", "BundleError", "InputError",
           "BackendError", "__version__"]
