"""This machine as a board (the ``Board`` interface, see board.py): a separate venv
holding only numpy and edgecompress-runtime (no torch), where benchmarks run in
their own processes exactly as on a device; used by ``edgecompress demo`` and
``edgecompress calibrate --device local``."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import venv
from pathlib import Path

from edgecompress_runtime import read_bundle

from ..errors import DeployError, RemoteTimeoutError
from .board import Board
from ..cache import cache_dir
from .wheels import build_runtime_wheel, file_lock, sha256_file


class LocalBoard(Board):
    """A venv on this machine standing in for a device."""

    name = "local"
    target = "local"

    def __init__(self, root: Path | None = None, progress=None, lock_timeout: float = 900.0):
        self.root = Path(root or cache_dir() / "local-board")
        self.lock_timeout = lock_timeout
        self.venv = self.root / "venv"
        self.python = self.venv / "bin" / "python"
        if progress is not None:
            self.progress = progress
        self._runtime: dict | None = None
        self._token = secrets.token_hex(4)

    def __repr__(self) -> str:
        return f"<LocalBoard {self.root}>"

    def install_runtime(self, progress=print) -> dict:
        """Create the venv if missing and install the current runtime wheel;
        a no-op when that exact wheel is already installed. The venv is shared by every
        ``LocalBoard`` with the same root (other threads, other processes): it is created and
        updated under a lock on ``<root>/.lock`` (waiting at most ``lock_timeout`` s)."""
        wheel = build_runtime_wheel()
        # the wheel's directory is named after the source tree's hash: a one-character change
        # to the runtime can keep the wheel's name and size
        ident = f"{wheel.parent.name}/{wheel.name}"
        out = {"wheel": wheel.name, "version": wheel.parent.name, "installed": False, "workdir": str(self.root)}
        if not self._has(ident):
            with file_lock(self.root / ".lock", self.lock_timeout, f"installing the runtime into {self.venv}"):
                if not self._has(ident):      # another board finished it while this one waited
                    self._install(wheel, ident, progress)
                    out["installed"] = True
        self._runtime = out
        return out

    def _has(self, ident: str) -> bool:
        stamp = self.venv / ".edgecompress-wheel"
        return self.python.exists() and stamp.exists() and stamp.read_text() == ident

    def _install(self, wheel: Path, ident: str, progress) -> None:
        stamp = self.venv / ".edgecompress-wheel"
        stamp.unlink(missing_ok=True)       # half-updated until the stamp is back
        if not self.python.exists():
            progress(f"creating the board venv at {self.venv}")
            venv.EnvBuilder(with_pip=True, clear=True).create(self.venv)
        progress("installing numpy + edgecompress-runtime into the board venv")
        r = subprocess.run([str(self.python), "-m", "pip", "install", "-q", "--force-reinstall",
                            str(wheel)], capture_output=True, text=True)
        if r.returncode != 0:
            raise DeployError(f"pip install on the board failed: {r.stderr.strip()[-800:]}")
        stamp.write_text(ident)

    def packages(self) -> dict[str, str]:
        import json
        r = subprocess.run([str(self.python), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, check=True)
        return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}

    def _deploy(self, bundle, progress) -> dict:
        """Nothing to upload: the board reads the bundle where it is."""
        t0 = time.perf_counter()
        path = Path(bundle).resolve()
        signed = bool(read_bundle(path).signature)    # refuses a corrupt bundle before running anything
        runtime = self._runtime or self.install_runtime(progress)
        return {"device": self.name, "address": "local", "bundle": str(bundle), "uploaded_file": str(path),
                "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "remote_path": str(path),
                "bundle_uploaded": False, "signed": signed, "runtime": runtime, "version": runtime["version"],
                "venv_python": str(self.python), "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------ the transport

    def _exec(self, argv, *, timeout, what):
        try:
            r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteTimeoutError(f"{what} on the local board did not finish within {timeout:.0f} s") from None
        return r.returncode, r.stdout, r.stderr

    def _python(self) -> str:
        if self._runtime is None:
            self.install_runtime(self.progress)
        return str(self.python)

    def _installed_python(self) -> str | None:
        return str(self.python) if self._runtime is not None else None

    def _system_python(self) -> str:
        return sys.executable

    def _scratch(self, name: str) -> str:
        d = self.root / "scratch"
        d.mkdir(parents=True, exist_ok=True)
        return str(d / f"{os.getpid()}.{self._token}.{name}")

    def _read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def _remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def _describe(self) -> dict:
        return {"name": self.name, "address": "local", "target": self.target, "tags": []}
