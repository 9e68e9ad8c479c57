"""Errors of the runtime. Both subclass ValueError so callers that only know
"bad input" can catch them; messages name the member or field at fault."""


class RuntimeErrorBase(Exception):
    """Base class of every error edgecompress_runtime raises on purpose."""


class BundleError(RuntimeErrorBase, ValueError):
    """The bundle is corrupt, tampered, incomplete or of an unsupported format."""


class InputError(RuntimeErrorBase, ValueError):
    """Inputs given to predict() don't match the bundle's input spec."""


class BackendError(RuntimeErrorBase, ValueError):
    """A backend was asked for that is not installed or cannot run this bundle."""
