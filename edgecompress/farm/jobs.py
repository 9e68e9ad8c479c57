"""A farm job (one bundle on one device) and how failures are classed: transient
(retry the device), the bundle's fault (fail the job alone), or the device's."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgecompress_runtime.errors import BundleError

from ..errors import AgreementError, ConnectionLostError, ParityError, RemoteTimeoutError, UnreachableError

TRANSIENT = (UnreachableError, ConnectionLostError, RemoteTimeoutError)   # worth retrying
BUNDLE_FAULTS = (ParityError, BundleError, AgreementError)                 # not the device's fault


@dataclass
class Job:
    id: int
    bundle: str
    device: str                      # assigned device
    status: str = "pending"          # pending | running | ok | moved (done on another device) | failed
    ran_on: str | None = None
    attempts: int = 0
    moved_from: list[str] = field(default_factory=list)
    error: dict | None = None
    result: dict | None = None
    seconds: float = 0.0
    bundle_sha256: str | None = None
    resumed: bool = False            # done by an earlier run (--resume): carried over, not run again

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def error_record(e: BaseException) -> dict:
    return {"type": type(e).__name__, "message": str(e),
            "exit_code": getattr(e, "exit_code", 1)}
