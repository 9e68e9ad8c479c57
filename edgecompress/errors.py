"""Every error edgecompress raises on purpose, and the exit code of each.

Each message says what went wrong and what to do; the CLI prints it on one line and
exits with the code of ``EXIT_CODES`` (documented in docs/cli.md) instead of showing a
traceback. The runtime's errors (``edgecompress_runtime.errors``: a bundle, inputs or a
backend at fault) are re-exported here, so ``edgecompress.errors`` is the one place to
catch: ``except edgecompress.errors.ERRORS``."""
from __future__ import annotations

from edgecompress_runtime.errors import BackendError, BundleError, InputError, RuntimeErrorBase

__all__ = ["EdgecompressError", "TargetError", "LatencyTableError", "DataError", "ModelError", "CompileError",
           "UnsupportedOpError", "BudgetError", "DeployError", "InventoryError", "UnreachableError",
           "NoBannerError", "HostKeyError", "UnknownHostError", "AuthError", "ConnectionLostError",
           "RemoteTimeoutError", "RemoteCommandError", "DiskFullError", "SignatureError", "ParityError",
           "FarmError", "FarmMovedError", "AgreementError", "RuntimeErrorBase", "BundleError", "InputError",
           "BackendError", "ERRORS", "EXIT_CODES", "exit_code"]


class EdgecompressError(Exception):
    """Base class of every error edgecompress raises on purpose."""

    exit_code = 2   # set from EXIT_CODES below, for every class


# --- what the user asked for: profiles, data, models


class TargetError(EdgecompressError, ValueError):
    """A device profile is missing or invalid."""


class LatencyTableError(TargetError):
    """A latency table that cannot be used (wrong schema or version, malformed)."""


class DataError(EdgecompressError, ValueError):
    """Data that doesn't load or doesn't match the model."""


class ModelError(EdgecompressError, ValueError):
    """Unknown zoo model or bad model arguments."""


# --- compiling


class CompileError(EdgecompressError):
    """The model could not be compiled (lowering, passes, bundle writing)."""


class UnsupportedOpError(CompileError):
    """The model uses an operator outside the bundle op set."""


class BudgetError(CompileError):
    """No plan found fits the budgets."""


# --- deploying to boards over SSH (edgecompress.deploy). Each kind has its own exit code
# so scripts and device farms can tell "board down" from "key changed" from "disk full".


class DeployError(EdgecompressError):
    """Installing on, or running on, a board failed."""


class InventoryError(EdgecompressError, ValueError):
    """devices.toml, a user@host:port string or ~/.ssh/config is invalid."""


class UnreachableError(DeployError):
    """Nothing answers at the board's address and port."""


class NoBannerError(UnreachableError):
    """Something accepts TCP connections at the address but does not speak SSH."""


class HostKeyError(DeployError):
    """The board's host key differs from the one recorded in known_hosts."""


class UnknownHostError(HostKeyError):
    """The board's host key is not in known_hosts (and trust-on-first-use is off)."""


class AuthError(DeployError):
    """The board refused our key, user or password."""


class ConnectionLostError(DeployError):
    """The SSH connection died or stopped answering in the middle of an operation."""


class RemoteTimeoutError(DeployError):
    """A command on the board did not finish within its timeout (it was stopped)."""


class RemoteCommandError(DeployError):
    """A command on the board failed (non-zero exit status)."""


class DiskFullError(DeployError):
    """The board ran out of disk space in its work directory."""


class SignatureError(DeployError):
    """Signing keys or bundle signatures are missing, unreadable or not trusted."""


class ParityError(DeployError):
    """The board's outputs differ from the host's reference outputs beyond tolerance."""


class FarmError(DeployError):
    """Some farm jobs failed (their results and errors are in farm.json)."""


class FarmMovedError(FarmError):
    """Every farm job finished, but some ran on another board than planned (their board went down)."""


class AgreementError(DeployError):
    """The bundle was compiled for a target the board cannot be (architecture); ``--force`` overrides."""


# The one table of exit codes (docs/cli.md lists it). A class not named here takes its
# nearest listed base's code. 0 is success, 1 an unexpected crash (a bug: a traceback),
# 2 also argparse's code for a bad command line, 130 an interrupt (Ctrl-C).
EXIT_CODES: dict[type[BaseException], int] = {  # flat table
    EdgecompressError: 2,      # bad input: profile, data, model, plan, options
    RuntimeErrorBase: 2,       # the runtime refused a bundle, inputs or a backend
    BudgetError: 3,            # no plan fits the budgets
    DeployError: 10,           # installing on / running on a board failed
    InventoryError: 11,
    UnreachableError: 12,
    NoBannerError: 13,
    HostKeyError: 14,
    UnknownHostError: 15,
    AuthError: 16,
    ConnectionLostError: 17,
    RemoteTimeoutError: 18,
    RemoteCommandError: 19,
    DiskFullError: 20,
    SignatureError: 21,
    ParityError: 22,
    FarmError: 23,
    AgreementError: 24,
    FarmMovedError: 25,
}

# Everything the CLI reports as one line and an exit code (anything else is a bug: a traceback).
ERRORS = (EdgecompressError, RuntimeErrorBase)


def exit_code(error: BaseException) -> int:
    """The exit code of ``error``: its own class's in EXIT_CODES, else its nearest listed base's."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def _set_exit_codes() -> None:
    # `err.exit_code` reads the table too (scripts and tests use it); the table stays the one source.
    for cls in list(globals().values()):
        if isinstance(cls, type) and issubclass(cls, EdgecompressError):
            cls.exit_code = next(EXIT_CODES[c] for c in cls.__mro__ if c in EXIT_CODES)


_set_exit_codes()
