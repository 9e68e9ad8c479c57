"""A board reached over SSH, with the same interface as ``LocalBoard``
(``name``, ``install_runtime(progress=)``, ``bench(bundle, batches=, iters=)``)
so ``run_demo(board=SSHBoard(...))`` works unchanged, plus ``deploy`` and
``uninstall``.

    from edgecompress.deploy import SSHBoard, resolve
    with SSHBoard(resolve("pi@10.0.0.7")) as board:
        board.deploy("dlrm.ecb")
        result = board.bench("dlrm.ecb", repeat=3, cooldown_s=5)
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from edgecompress_runtime import read_bundle

from ..errors import DeployError, InventoryError, ParityError, SignatureError
from . import bench as rbench
from . import keys as hostkeys
from .connection import SSHSettings
from .install import Installer, Wheelhouse, build_wheelhouse, manylinux_tags, sha256_file
from .inventory import Device
from .local import cache_dir

log = logging.getLogger("edgecompress.deploy")
_WARNED: set = set()


def _quiet(msg: str) -> None:
    log.info(msg)


class SSHBoard:
    """One board over SSH. The connection opens on first use; ``close()`` (or
    ``with``) ends it. ``sign``: None signs when a signing key exists (see
    ``edgecompress keys init``), True requires one, False never signs."""

    def __init__(self, device: Device, settings: SSHSettings | None = None, *, sign: bool | None = None,
                 add_trusted_key: bool = False, offline: bool = True, wheelhouse_dir=None,
                 runtime_wheel=None, extra_wheels=(), space_check: bool = True, on_upload=None, on_step=None,
                 install_timeout: float = 900.0, connect_kwargs: dict | None = None, progress=None):
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
        self.progress = progress or _quiet
        self._installer: Installer | None = None
        self._runtime: dict | None = None
        self._deployed: dict[str, dict] = {}
        self._facts: dict | None = None
        self._key = None
        self._key_loaded = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "SSHBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()
        self._reset()

    def _reset(self) -> None:
        self._installer = None
        self._runtime = None
        self._deployed = {}

    def __repr__(self) -> str:
        return f"<SSHBoard {self.name} {self.conn.label}>"

    # ------------------------------------------------------------------ pieces

    def signing_key(self):
        if not self._key_loaded:
            self._key = None if self.sign is False else hostkeys.load_key(required=bool(self.sign))
            self._key_loaded = True
        return self._key

    def _target(self):
        if not self.device.target:
            return None
        from ..targets import load_target
        return load_target(self.device.target)

    def _wheelhouse(self, state: dict, progress) -> Wheelhouse:
        machine = state["machine"]
        python = ".".join(state["python"].split(".")[:2])
        target = self._target()
        if target is not None:
            arch = {"arm64": "aarch64", "amd64": "x86_64", "armv8l": "armv7l"}.get(machine, machine)
            if target.arch != arch:
                raise InventoryError(f"{self.conn.label}: devices.toml gives target {target.name} ({target.arch}) "
                                     f"but the board reports {machine}; fix 'target' for this device")
            if target.python != python and (self.name, target.name, python) not in _WARNED:
                _WARNED.add((self.name, target.name, python))      # once per board, not per session
                log.warning("%s: target %s expects Python %s, the board has %s; building for the board's",
                            self.name, target.name, target.python, python)
            tags = list(target.platform_tags)
        else:
            libc, ver = state.get("libc") or ["", ""]
            tags = manylinux_tags(machine, ver) if libc == "glibc" else \
                [f"musllinux_1_2_{machine}", f"musllinux_1_1_{machine}"]
        return build_wheelhouse(tags, python, packages=self.device.packages, runtime_wheel=self.runtime_wheel,
                                wheelhouse_dir=self.wheelhouse_dir, extra_wheels=self.extra_wheels,
                                progress=progress)

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

    def _probe(self, check=(), progress=None) -> Installer:
        inst = Installer(self.conn, workdir=self.device.workdir, python=self.device.python,
                         offline=self.offline, space_check=self.space_check, on_upload=self.on_upload,
                         on_step=self.on_step, progress=progress or self.progress, timeout=self.install_timeout)
        inst.probe(check)
        self._installer = inst
        return inst

    def _guard(self, fn, *args, **kwargs):
        """Run a step; on any failure drop cached board state (it may be stale)."""
        try:
            return fn(*args, **kwargs)
        except BaseException:
            self._reset()
            if not self.conn.is_connected:
                self.conn.close()
            raise

    # ------------------------------------------------------------------ the LocalBoard interface

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
        wh = self._wheelhouse(inst.state, progress)
        listing = wh.listing()
        inst._ensure_checked([f"blobs/{s}" for _, s, _ in listing])
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

    def deploy(self, bundle, progress=None) -> dict:
        """Install the runtime if needed and put ``bundle`` on the board."""
        return self._guard(self._deploy, bundle, progress or self.progress)

    def _deploy(self, bundle, progress) -> dict:
        t0 = time.perf_counter()
        local, sha = self._prepare_bundle(bundle)
        if sha in self._deployed and self.conn.is_connected:
            return self._deployed[sha]
        runtime = self._install_runtime(progress, bundle_check=[f"bundles/{sha}.ecb"])
        inst = self._installer
        remote, uploaded = inst.put_bundle(local, sha)
        for gone in getattr(inst, "pruned", []):   # the board keeps the newest bundles only
            self._deployed.pop(gone, None)
        out = {"device": self.name, "address": self.conn.address, "bundle": str(bundle), "uploaded_file": str(local),
               "sha256": sha, "size_bytes": local.stat().st_size, "remote_path": remote,
               "bundle_uploaded": uploaded, "signed": local != Path(bundle) or bool(read_bundle(local).signature),
               "runtime": runtime, "version": runtime["version"],
               "venv_python": f"{inst.work}/versions/{runtime['version']}/venv/bin/python",
               "seconds": time.perf_counter() - t0}
        self._deployed[sha] = out
        return out

    def facts(self, refresh: bool = False) -> dict:
        if self._facts is None or refresh:
            self._facts = rbench.board_facts(self.conn, self._venv_python() or self.device.python)
        return self._facts

    def _venv_python(self) -> str | None:
        if self._runtime is None or self._installer is None:
            return None
        return f"{self._installer.work}/versions/{self._runtime['version']}/venv/bin/python"

    def bench(self, bundle, batches=(1, 64, 256), warmup: int = 20, iters: int = 200, backend: str = "auto",
              timeout_s: float = 600.0, repeat: int = 1, cooldown_s: float = 0.0, min_seconds: float = 0.0,
              progress=None, check_parity: bool = True) -> dict:
        return self._guard(self._bench, bundle, batches, warmup, iters, backend, timeout_s, repeat, cooldown_s,
                           min_seconds, progress or self.progress, check_parity)

    def _bench(self, bundle, batches, warmup, iters, backend, timeout_s, repeat, cooldown_s, min_seconds,
               progress, check_parity) -> dict:
        t0 = time.perf_counter()
        dep = self._deploy(bundle, progress)
        inst = self._installer
        vpy = dep["venv_python"]
        runs = []
        for i in range(max(1, repeat)):
            if i and cooldown_s:
                rbench.sleep_cooldown(cooldown_s)
            out = f"{inst.work}/.incoming/{inst.pid}.{inst.token}.bench-{i}.json"
            res = rbench.run_bench_once(self.conn, vpy, dep["remote_path"], out, batches=batches, warmup=warmup,
                                        iters=iters, backend=backend, min_seconds=min_seconds, timeout=timeout_s,
                                        facts=(i == 0))
            if i == 0:
                facts = self._facts = res.pop("board")
            runs.append(res)
            progress(f"run {i + 1}/{max(1, repeat)} on {self.name}: " + ", ".join(
                f"b={r['batch']} p50 {r['p50_ms']:.3f} ms" for r in res["latency"]))
        best = dict(rbench.pick_median(runs))
        best.update({
            "device": {"name": self.name, "address": self.conn.address, "target": self.device.target,
                       "tags": list(self.device.tags)},
            "board": facts,
            "deploy": {k: dep[k] for k in ("sha256", "size_bytes", "remote_path", "bundle_uploaded", "version",
                                           "signed")},
            "runs": [{k: r.get(k) for k in ("latency", "load_s", "first_inference_s", "peak_rss_mb", "parity",
                                            "temps_before", "temps_after", "loadavg_before")} for r in runs],
            "agreement": rbench.agreement(runs),
            "deploy_seconds": dep["seconds"],
            "seconds": time.perf_counter() - t0,
        })
        if check_parity:
            for r in runs:
                try:
                    rbench.check_parity(r, dep["sha256"], self.conn.label)
                except ParityError as e:
                    e.result = best
                    raise
        return best

    def uninstall(self, remove_trusted_keys: bool = False) -> None:
        inst = Installer(self.conn, workdir=self.device.workdir, python=self.device.python)
        self._guard(inst.uninstall, remove_trusted_keys)
        self._reset()


def bundle_sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["SSHBoard", "DeployError"]
