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

    exit_code = 10


# --- deploying to boards over SSH (edgecompress.deploy). Each kind has its own exit code
# so scripts and device farms can tell "board down" from "key changed" from "disk full".


class InventoryError(EdgecompressError, ValueError):
    """devices.toml, a user@host:port string or ~/.ssh/config is invalid."""

    exit_code = 11


class UnreachableError(DeployError):
    """Nothing answers at the board's address and port."""

    exit_code = 12


class NoBannerError(UnreachableError):
    """Something accepts TCP connections at the address but does not speak SSH."""

    exit_code = 13


class HostKeyError(DeployError):
    """The board's host key differs from the one recorded in known_hosts."""

    exit_code = 14


class UnknownHostError(HostKeyError):
    """The board's host key is not in known_hosts (and trust-on-first-use is off)."""

    exit_code = 15


class AuthError(DeployError):
    """The board refused our key, user or password."""

    exit_code = 16


class ConnectionLostError(DeployError):
    """The SSH connection died or stopped answering in the middle of an operation."""

    exit_code = 17


class RemoteTimeoutError(DeployError):
    """A command on the board did not finish within its timeout (it was stopped)."""

    exit_code = 18


class RemoteCommandError(DeployError):
    """A command on the board failed (non-zero exit status)."""

    exit_code = 19


class DiskFullError(DeployError):
    """The board ran out of disk space in its work directory."""

    exit_code = 20


class SignatureError(DeployError):
    """Signing keys or bundle signatures are missing, unreadable or not trusted."""

    exit_code = 21


class ParityError(DeployError):
    """The board's outputs differ from the host's reference outputs beyond tolerance."""

    exit_code = 22


class FarmError(DeployError):
    """Some farm jobs failed (their results and errors are in farm.json)."""

    exit_code = 23
