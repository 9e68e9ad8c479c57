"""Errors a user can cause. Each message says what went wrong and what to do;
the CLI prints it on one line and exits non-zero instead of showing a traceback."""


class EdgecompressError(Exception):
    """Base class of every error edgecompress raises on purpose."""

    exit_code = 2


class TargetError(EdgecompressError, ValueError):
    """A device profile is missing or invalid."""


class DataError(EdgecompressError, ValueError):
    """Data that doesn't load or doesn't match the model."""


class CompileError(EdgecompressError):
    """The model could not be compiled (lowering, passes, bundle writing)."""


class UnsupportedOpError(CompileError):
    """The model uses an operator outside the bundle op set."""


class DeployError(EdgecompressError):
    """Installing on, or running on, a board failed."""
