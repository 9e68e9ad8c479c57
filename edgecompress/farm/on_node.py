"""What a farm job does on the lab host (Ray node) it landed on: pick one of the
boards this node reaches (its inventory, named by ``$EDGECOMPRESS_LAB_INVENTORY``,
which ``edgecompress lab start`` sets for the node), hold that board with a
per-board lock file so two jobs on one node never share a board, write the bundle
it was sent to a local file (checking its sha256), and bench it through the same
``SSHBoard`` code as the local pool. Everything it returns is a plain dict: the
outcome, or the error record and how the driver should treat it (bundle fault,
transient, or the board's). No Ray here: the task wrapper is in ray_pool.py."""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
import time
from pathlib import Path

from ..errors import EdgecompressError, InventoryError, NoBannerError
from .jobs import BUNDLE_FAULTS, TRANSIENT, error_record

INVENTORY_ENV = "EDGECOMPRESS_LAB_INVENTORY"
LOCK_DIR_ENV = "EDGECOMPRESS_LAB_LOCKS"


def node_inventory():
    """The inventory of the boards this node reaches."""
    from ..deploy.inventory import load_inventory
    path = os.environ.get(INVENTORY_ENV)
    if not path:
        raise InventoryError(f"this Ray node has no board inventory (${INVENTORY_ENV} is not set): "
                             "start it with `edgecompress lab start --inventory devices.toml`")
    return load_inventory(path)


def _lock_dir() -> Path:
    d = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "edgecompress-lab-locks")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _hold(name: str, wait_s: float):
    """An open, flock'ed lock file of board ``name`` (None if another job holds it after wait_s)."""
    f = open(_lock_dir() / f"{name.replace('/', '_')}.lock", "w")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.05)


def pick_board(inv, kind: str | None, pinned: str | None, exclude=(), wait_s: float = 60.0):
    """(device, held lock) of a free board: ``pinned`` by name, else any of target ``kind``
    not in ``exclude``; (None, None) when every such board here is busy or excluded."""
    if pinned:
        cands = [d for d in inv.devices if d.name == pinned]
        wait = wait_s          # the pinned board frees up when the job ahead of us on it ends
    else:
        cands = [d for d in inv.devices if d.target == kind and d.name not in set(exclude)]
        wait = 0.0
    for d in cands:
        held = _hold(d.name, wait)
        if held is not None:
            return d, held
    return None, None


def _bundle_file(data: bytes, name: str, sha256: str | None, tmp: Path) -> Path:
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise EdgecompressError(f"bundle {name} arrived with another sha256 than sent")
    path = tmp / Path(name).name
    path.write_bytes(data)
    return path


def run_job(data: bytes, bundle_name: str, sha256: str | None, kind: str | None, pinned: str | None,
            exclude=(), settings: dict | None = None, bench_kwargs: dict | None = None,
            board_kwargs: dict | None = None, board_factory=None) -> dict:
    """Bench one bundle on one board this node reaches; a plain dict says what happened."""
    from ..deploy.connection import SSHSettings
    host = socket.gethostname()
    inv = node_inventory()
    dev, held = pick_board(inv, kind, pinned, exclude)
    if dev is None:
        return {"outcome": "no_board", "node": host}
    t0 = time.perf_counter()
    board = None
    try:
        base = SSHSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in (settings or {}).items()})
        with tempfile.TemporaryDirectory(prefix="edgecompress-farm-") as tmp:
            path = _bundle_file(data, bundle_name, sha256, Path(tmp))
            if board_factory is None:
                from ..deploy.ssh_board import SSHBoard
                board = SSHBoard(dev, inv.settings(base), **(board_kwargs or {}))
            else:
                board = board_factory(dev)
            res = board.bench(str(path), **(bench_kwargs or {}))
        return {"outcome": "ok", "ran_on": dev.name, "node": host, "result": res,
                "seconds": time.perf_counter() - t0}
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the driver as a record
        if not isinstance(e, Exception):
            raise
        transient = isinstance(e, TRANSIENT) and not isinstance(e, NoBannerError)
        return {"outcome": "bundle_fault" if isinstance(e, BUNDLE_FAULTS) else "board_failed",
                "transient": transient, "ran_on": dev.name, "node": host, "error": error_record(e),
                "result": getattr(e, "result", None), "seconds": time.perf_counter() - t0}
    finally:
        if board is not None:
            try:
                board.close()
            except Exception:  # noqa: BLE001
                pass
        held.close()
