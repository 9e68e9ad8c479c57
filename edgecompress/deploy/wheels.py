"""The wheels a board installs, built and fetched on the host: the runtime wheel
(py3-none-any, built once per runtime source version) plus a wheelhouse of its
dependencies for the board's platform and Python, fetched with
``pip download --only-binary=:all: --platform ... --python-version ...`` using the
target profile's ``platform_tags`` (or tags derived from the board's glibc and
machine when the device has no profile), so boards need no internet. Everything
is cached under ``~/.cache/edgecompress`` (``EDGECOMPRESS_CACHE``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import edgecompress_runtime
from edgecompress_runtime.bundle import file_sha256

from ..cache import cache_dir
from ..errors import DeployError, InventoryError

log = logging.getLogger("edgecompress.deploy")
_WARNED: set = set()


def runtime_source() -> Path:
    """The runtime package's source tree (holding its pyproject.toml)."""
    src = Path(edgecompress_runtime.__file__).resolve().parent.parent
    if not (src / "pyproject.toml").is_file():
        raise DeployError(f"cannot find the edgecompress-runtime sources next to {src}; "
                          "install edgecompress from a source checkout (pip install -e .)")
    return src


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((root / "edgecompress_runtime").rglob("*.py")) + [root / "pyproject.toml"]:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_runtime_wheel(out_dir: Path | None = None) -> Path:
    """Build the py3-none-any runtime wheel once per source version (other processes and threads
    building the same one wait, then use it; the wheel appears complete or not at all)."""
    src = runtime_source()
    out = (out_dir or cache_dir() / "wheels") / f"runtime-{_tree_hash(src)}"
    wheels = list(out.glob("edgecompress_runtime-*.whl")) if out.is_dir() else []
    if wheels:
        return wheels[0]
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock", what="building the runtime wheel"):
        wheels = list(out.glob("edgecompress_runtime-*.whl"))
        if wheels:
            return wheels[0]
        with tempfile.TemporaryDirectory() as build:
            # building in a copy keeps build/ and *.egg-info out of the source tree
            shutil.copytree(src, Path(build) / "src", ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                     "__pycache__"))
            r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                "-q", "-w", str(Path(build) / "dist"), str(Path(build) / "src")],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise DeployError(f"building the runtime wheel failed: {r.stderr.strip()[-500:]}")
            built = next((Path(build) / "dist").glob("edgecompress_runtime-*.whl"))
            tmp = out / f".{built.name}.part"
            shutil.copy(built, tmp)
            os.replace(tmp, out / built.name)
    return out / built.name


_hash_cache: dict[tuple, str] = {}


def sha256_file(path) -> str:
    """sha256 of a file, remembered per (path, size, mtime): the numpy wheel is hashed once
    per process, not once per board."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = file_sha256(path)
    return _hash_cache[key]


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel without extras-only entries."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if "extra ==" not in req.replace("extra==", "extra =="):
                reqs.append(req)
    return reqs


def manylinux_tags(machine: str, glibc: str | None) -> list[str]:
    """Wheel platform tags a glibc Linux board accepts, newest first."""
    if not glibc:
        return [f"linux_{machine}"]
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    tags += [f"manylinux2014_{machine}"]
    if machine in ("x86_64", "i686"):
        tags += [f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags


@dataclass
class Wheelhouse:
    runtime: Path
    wheels: list[Path]                 # every wheel to push, runtime first
    requirements: list[str]            # what pip installs on the board
    platform_tags: list[str]
    python: str                        # "3.11"

    def listing(self) -> list[tuple[str, str, int]]:
        return [(w.name, sha256_file(w), w.stat().st_size) for w in self.wheels]


def build_wheelhouse(platform_tags, python: str, packages=(), runtime_wheel: Path | None = None,
                     wheelhouse_dir: Path | None = None, extra_wheels=(), progress=None) -> Wheelhouse:
    """The runtime wheel plus binary wheels of its dependencies (and ``packages``)
    for ``platform_tags`` / CPython ``python``; cached under ~/.cache/edgecompress.
    ``extra_wheels``: local wheel files to install as well."""
    # farms build for many boards at once, and other edgecompress processes share the cache
    with _wheel_lock, file_lock(cache_dir() / "wheelhouse" / ".lock", what="fetching a wheelhouse"):
        wh = _build_wheelhouse(platform_tags, python, packages, runtime_wheel, wheelhouse_dir, progress)
    for w in map(Path, extra_wheels):
        name, version = w.name.split("-")[:2]
        wh.wheels.append(w)
        wh.requirements.append(f"{name}=={version}")
    return wh


_wheel_lock = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 600.0, what: str = "building wheels"):
    """An exclusive ``flock`` on ``path`` for this machine's processes and threads (each call opens
    the file anew, so two threads exclude each other too). Waits at most ``timeout`` s, then raises
    a ``DeployError`` naming the holder (its pid, host, what it does and since when, which it
    wrote into the file). The kernel drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() - t0 >= timeout:
                    raise DeployError(f"{_holder_text(path)} holds the lock {path}; waited {timeout:.0f} s. "
                                      "Retry when it is done (the lock frees itself when that process "
                                      "exits)") from None
                time.sleep(0.05)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                "thread": threading.current_thread().name, "since": time.time()}))
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _holder_text(path: Path) -> str:
    try:
        h = json.loads(path.read_text() or "{}")
        since = time.strftime("%H:%M:%S", time.localtime(h["since"]))
        return f"pid {h['pid']} on {h['host']} ({h['what']}, thread {h['thread']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _build_wheelhouse(platform_tags, python, packages, runtime_wheel, wheelhouse_dir, progress) -> Wheelhouse:
    runtime = Path(runtime_wheel) if runtime_wheel else build_runtime_wheel()
    reqs = wheel_requirements(runtime) + list(packages)
    tags = list(platform_tags)
    if wheelhouse_dir is not None:   # the user brings the wheels (an offline host)
        wheels = sorted(Path(wheelhouse_dir).glob("*.whl"))
        if not wheels:
            raise DeployError(f"--wheelhouse {wheelhouse_dir} holds no .whl files")
        return Wheelhouse(runtime, [runtime] + [w for w in wheels if w.name != runtime.name],
                          [_runtime_req(runtime)] + list(packages), tags, python)
    key = hashlib.sha256(json.dumps([reqs, tags, python]).encode()).hexdigest()[:16]
    out = cache_dir() / "wheelhouse" / key
    done = out / ".complete"
    if not done.exists():
        if progress:
            progress(f"downloading {', '.join(reqs) or 'nothing'} for {tags[0] if tags else '?'} / Python {python}")
        out.mkdir(parents=True, exist_ok=True)
        if reqs:
            cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-cache-dir", "-q",
                   "--python-version", python, "--implementation", "cp", "-d", str(out)]
            for t in tags:
                cmd += ["--platform", t]
            r = subprocess.run(cmd + reqs, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise DeployError(f"cannot fetch wheels of {', '.join(reqs)} for the board ({tags[0] if tags else '?'}, "
                                  f"Python {python}): {(r.stderr or r.stdout).strip()[-600:]}; if this host is "
                                  "offline, put the wheels in a directory and pass --wheelhouse DIR")
        done.write_text(json.dumps({"requirements": reqs, "platform_tags": tags, "python": python}))
    deps = sorted(w for w in out.glob("*.whl"))
    return Wheelhouse(runtime, [runtime] + deps, [_runtime_req(runtime)] + list(packages), tags, python)


def _runtime_req(runtime: Path) -> str:
    version = runtime.name.split("-")[1]
    return f"edgecompress-runtime=={version}"


def wheelhouse_for(state: dict, device, *, runtime_wheel=None, wheelhouse_dir=None, extra_wheels=(),
                   label: str = "", progress=None) -> Wheelhouse:
    """The wheelhouse for a probed board (``state``: machine, python, libc): the device's
    target profile's platform tags, or tags derived from the board's libc."""
    machine = state["machine"]
    python = ".".join(state["python"].split(".")[:2])
    target = None
    if device.target:
        from ..targets import load_target
        target = load_target(device.target)
    if target is not None:
        arch = {"arm64": "aarch64", "amd64": "x86_64", "armv8l": "armv7l"}.get(machine, machine)
        if target.arch != arch:
            raise InventoryError(f"{label}: devices.toml gives target {target.name} ({target.arch}) "
                                 f"but the board reports {machine}; fix 'target' for this device")
        if target.python != python and (device.name, target.name, python) not in _WARNED:
            _WARNED.add((device.name, target.name, python))      # once per board, not per session
            log.warning("%s: target %s expects Python %s, the board has %s; building for the board's",
                        device.name, target.name, target.python, python)
        tags = list(target.platform_tags)
    else:
        libc, ver = state.get("libc") or ["", ""]
        tags = manylinux_tags(machine, ver) if libc == "glibc" else \
            [f"musllinux_1_2_{machine}", f"musllinux_1_1_{machine}"]
    return build_wheelhouse(tags, python, packages=device.packages, runtime_wheel=runtime_wheel,
                            wheelhouse_dir=wheelhouse_dir, extra_wheels=extra_wheels, progress=progress)
