"""A board reached over SSH (the ``Board`` interface, see board.py), plus signing,
``uninstall`` and the per-session caches that make a warm redeploy upload nothing.

    from edgecompress.deploy import SSHBoard, resolve
    with SSHBoard(resolve("pi@10.0.0.7")) as board:
        board.deploy("dlrm.ecb")
        result = board.bench("dlrm.ecb", repeat=3, cooldown_s=5)
"""
from __future__ import annotations

import time
from pathlib import Path

from edgecompress_runtime import read_bundle

from ..errors import SignatureError
from . import keys as hostkeys
from .board import Board
from .connection import SSHSettings
from .install import LOCK_TIMEOUT_S, Installer
from .inventory import Device
from ..cache import cache_dir
from .wheels import sha256_file, wheelhouse_for


class SSHBoard(Board):
    """One board over SSH. The connection opens on first use; ``close()`` (or
    ``with``) ends it. ``sign``: None signs when a signing key exists (see
    ``edgecompress keys init``), True requires one, False never signs."""

    def __init__(self, device: Device, settings: SSHSettings | None = None, *, sign: bool | None = None,
                 add_trusted_key: bool = False, offline: bool = True, wheelhouse_dir=None,
                 runtime_wheel=None, extra_wheels=(), space_check: bool = True, on_upload=None, on_step=None,
                 install_timeout: float = 900.0, connect_kwargs: dict | None = None, progress=None,
                 lock_timeout: float | None = None):
        self.device = device
        self.name = device.name
        self.settings = settings or SSHSettings()
        self.conn = device.connection(self.settings, **(connect_kwargs or {}))
        self.sign = sign
        self.add_trusted_key = add_trusted_key
        self.offline = offline
        self.wheelhouse_dir = wheelhouse_dir
        self.runtime_wheel = runtime_wheel
        self.extra_wheels = tuple(extra_wheels)
        self.space_check = space_check
        self.on_upload = on_upload
        self.on_step = on_step
        self.install_timeout = install_timeout
        self.lock_timeout = LOCK_TIMEOUT_S if lock_timeout is None else lock_timeout
        if progress is not None:
            self.progress = progress
        self._installer: Installer | None = None
        self._runtime: dict | None = None
        self._deployed: dict[str, dict] = {}
        self._facts: dict | None = None
        self._key = None
        self._key_loaded = False

    @property
    def target(self) -> str | None:
        return self.device.target

    @property
    def label(self) -> str:
        return self.conn.label

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.conn.close()
        self.reset()

    def reset(self) -> None:
        # a fresh session re-checks what is on the board: it garbage-collects old bundles and
        # versions, which a session's cache would not notice
        self._installer = None
        self._runtime = None
        self._deployed = {}

    def __repr__(self) -> str:
        return f"<SSHBoard {self.name} {self.conn.label}>"

    def _guard(self, fn, *args, **kwargs):
        """Run a step; on any failure drop cached board state (it may be stale)."""
        try:
            return fn(*args, **kwargs)
        except BaseException:
            self.reset()
            if not self.conn.is_connected:
                self.conn.close()
            raise

    # ------------------------------------------------------------------ the transport

    def _exec(self, argv, *, timeout, what):
        r = self.conn.run(argv, timeout=timeout, check=False, what=what)
        return r.exit_code, r.stdout, r.stderr

    def _python(self) -> str:
        return self._installer.venv_python(self._install_runtime(self.progress)["version"])

    def _installed_python(self) -> str | None:
        if self._runtime is None or self._installer is None:
            return None
        return self._installer.venv_python(self._runtime["version"])

    def _system_python(self) -> str:
        return self.device.python

    def _scratch(self, name: str) -> str:
        if self._installer is None or not self.conn.is_connected:
            self._install_runtime(self.progress)
        return self._installer.scratch(name)

    def _read_bytes(self, path: str) -> bytes:
        return self.conn.read_bytes(path)

    def _remove(self, path: str) -> None:
        self.conn.run(["rm", "-f", path], timeout=30, check=False, what="removing a scratch file")

    def _describe(self) -> dict:
        return {"name": self.name, "address": self.conn.address, "target": self.device.target,
                "tags": list(self.device.tags)}

    # ------------------------------------------------------------------ signing

    def signing_key(self):
        if not self._key_loaded:
            self._key = None if self.sign is False else hostkeys.load_key(required=bool(self.sign))
            self._key_loaded = True
        return self._key

    def _prepare_bundle(self, bundle) -> tuple[Path, str]:
        """The file to upload (a signed copy when signing) and its sha256."""
        src = Path(bundle)
        read_bundle(src)  # refuse a corrupt bundle before touching the board
        key = self.signing_key()
        if key is None or hostkeys.signed_by(src, key):
            return src, sha256_file(src)
        src_sha = sha256_file(src)
        out = cache_dir() / "signed" / f"{src_sha[:32]}-{key.key_id}.ecb"
        if not out.exists():
            hostkeys.sign_bundle(src, out, key)
        return out, sha256_file(out)

    def _ensure_trust(self, inst: Installer, progress) -> str | None:
        """First deploy: install our public key in the board's trust store.
        Refuse clearly when the board trusts other keys only."""
        key = self.signing_key()
        trusted = inst.state.get("trusted", {})
        if not key:
            if trusted:
                raise SignatureError(f"{self.conn.label}: the board runs only bundles signed by "
                                     f"{', '.join(sorted(trusted))} and this host has no signing key; copy that "
                                     "key here or run `edgecompress keys init` and redeploy with --add-trusted-key")
            return None
        if key.key_id in trusted:
            return None
        if trusted and not self.add_trusted_key:
            raise SignatureError(f"{self.conn.label}: the board trusts only keys {', '.join(sorted(trusted))}, "
                                 f"not this host's key {key.key_id}; rerun with --add-trusted-key to add it")
        progress(f"installing trusted key {key.key_id} on the board")
        inst.install_trusted_key(key.key_id, key.public_line(f"edgecompress key {key.key_id}"))
        return key.key_id

    # ------------------------------------------------------------------ install and deploy

    def _probe(self, check=(), progress=None) -> Installer:
        inst = Installer(self.conn, workdir=self.device.workdir, python=self.device.python,
                         offline=self.offline, space_check=self.space_check, on_upload=self.on_upload,
                         on_step=self.on_step, progress=progress or self.progress, timeout=self.install_timeout,
                         lock_timeout=self.lock_timeout)
        inst.probe(check)
        self._installer = inst
        return inst

    def install_runtime(self, progress=print) -> dict:
        return self._guard(self._install_runtime, progress)

    def _install_runtime(self, progress=print, bundle_check=()) -> dict:
        if self._runtime is not None and self.conn.is_connected:
            return self._runtime
        t0 = time.perf_counter()
        inst = self._installer if (self._installer and self.conn.is_connected) else None
        if inst is None:
            # one probe answers "which of these files are there?" for the likely wheels too
            inst = self._probe(check=list(bundle_check), progress=progress)
        wh = wheelhouse_for(inst.state, self.device, runtime_wheel=self.runtime_wheel,
                            wheelhouse_dir=self.wheelhouse_dir, extra_wheels=self.extra_wheels,
                            label=self.conn.label, progress=progress)
        listing = wh.listing()
        inst.ensure_checked([f"blobs/{s}" for _, s, _ in listing])
        key_installed = self._ensure_trust(inst, progress)
        rep = inst.install_runtime(wh)
        rep.trusted_key_installed = key_installed
        out = rep.to_dict()
        out.update(wheel=wh.runtime.name, wheels=[n for n, _, _ in listing], platform_tags=wh.platform_tags[:3],
                   python=inst.state["python"], machine=inst.state["machine"], workdir=inst.work,
                   cleaned_staging=inst.state.get("cleaned", []), seconds=time.perf_counter() - t0)
        if rep.installed:
            progress(f"installed runtime {rep.version} in {rep.seconds:.1f} s "
                     f"({rep.uploaded_bytes / 1e6:.1f} MB uploaded)")
        self._runtime = out
        return out

    def _deploy(self, bundle, progress) -> dict:
        t0 = time.perf_counter()
        local, sha = self._prepare_bundle(bundle)
        if sha in self._deployed and self.conn.is_connected:
            return self._deployed[sha]
        runtime = self._install_runtime(progress, bundle_check=[f"bundles/{sha}.ecb"])
        inst = self._installer
        remote, uploaded = inst.put_bundle(local, sha)
        for gone in inst.pruned:   # the board keeps the newest bundles only
            self._deployed.pop(gone, None)
        out = {"device": self.name, "address": self.conn.address, "bundle": str(bundle), "uploaded_file": str(local),
               "sha256": sha, "size_bytes": local.stat().st_size, "remote_path": remote,
               "bundle_uploaded": uploaded, "signed": local != Path(bundle) or bool(read_bundle(local).signature),
               "runtime": runtime, "version": runtime["version"],
               "venv_python": inst.venv_python(runtime["version"]), "seconds": time.perf_counter() - t0}
        self._deployed[sha] = out
        return out

    def uninstall(self, remove_trusted_keys: bool = False) -> None:
        inst = Installer(self.conn, workdir=self.device.workdir, python=self.device.python)
        self._guard(inst.uninstall, remove_trusted_keys)
        self.reset()


__all__ = ["SSHBoard"]
