"""Installing the runtime and bundles on a board, so that a failure at any
point leaves the previous install working.

On the board (``workdir``, default ``~/.edgecompress``)::

    .incoming/             staging: uploads land here as <sshd-pid>.<random>.<name>.part
                           and venvs are built here; nothing here is ever "installed"
    blobs/<sha256>         uploaded wheels, renamed here only after their sha256 matched
    bundles/<sha256>.ecb   uploaded bundles, the same way
    versions/<id>/         a complete install: venv/ (numpy + edgecompress-runtime) and
                           version.json; renamed here from .incoming only once it imports
    current -> versions/<id>    switched atomically (symlink + rename) after that
    bin/edgecompress-runtime    runs the current install's runtime CLI

``<id>`` hashes the wheels and the board's Python, so deploying the same thing
again uploads and installs nothing (every upload is skipped when its sha256 is
already on the board). Staging entries of sessions that died (their sshd
process is gone) are removed by the next deploy; old versions beyond the
current and the previous one are garbage-collected.

The wheels come from the host: the runtime wheel (py3-none-any) plus a
wheelhouse of its dependencies for the board's platform and Python, fetched
with ``pip download --only-binary=:all: --platform ... --python-version ...``
using the target profile's ``platform_tags`` (or tags derived from the board's
glibc and machine when the device has no profile), so boards need no internet.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import secrets
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgecompress_runtime.bundle import file_sha256

from ..errors import (ConnectionLostError, DeployError, DiskFullError, RemoteCommandError,
                      SignatureError)
from .connection import Connection
from .local import build_runtime_wheel, cache_dir

log = logging.getLogger("edgecompress.deploy")

TRUST_DIR = ".config/edgecompress-runtime/trusted_keys"   # relative to the board user's home
KEEP_VERSIONS = 2
KEEP_BUNDLES = 20

_hash_cache: dict[tuple, str] = {}


def sha256_file(path) -> str:
    """sha256 of a file, remembered per (path, size, mtime): the numpy wheel is hashed once
    per process, not once per board."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = file_sha256(path)
    return _hash_cache[key]


# ---------------------------------------------------------------------------- host side: wheels


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
    with _wheel_lock, _file_lock(cache_dir() / "wheelhouse" / ".lock"):
        wh = _build_wheelhouse(platform_tags, python, packages, runtime_wheel, wheelhouse_dir, progress)
    for w in map(Path, extra_wheels):
        name, version = w.name.split("-")[:2]
        wh.wheels.append(w)
        wh.requirements.append(f"{name}=={version}")
    return wh


_wheel_lock = threading.Lock()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


# ---------------------------------------------------------------------------- board side programs
# Small Python programs run by the board's own interpreter (`python3 -c CODE ARGS`).
# Their data arrives as one JSON argument; they print one JSON line.

_PROBE = r"""
import json, os, sys, platform, time, shutil, hashlib, base64
a = json.loads(sys.argv[1])
home = os.path.expanduser("~")
wd = os.path.expanduser(a["workdir"])
work = os.path.normpath(wd if os.path.isabs(wd) else os.path.join(home, wd))
staging = os.path.join(work, ".incoming")
try:
    for d in (work, staging, os.path.join(work, "blobs"), os.path.join(work, "bundles"), os.path.join(work, "versions")):
        os.makedirs(d, exist_ok=True)
except OSError as e:
    print(json.dumps({"error": "mkdir", "detail": str(e), "enospc": e.errno == 28})); sys.exit(0)
cleaned = []
for name in os.listdir(staging):
    p = os.path.join(staging, name)
    pid = name.split(".", 1)[0]
    alive = False
    if pid.isdigit():
        if os.path.isdir("/proc/self"):
            # alive = that sshd process still exists and is not a zombie (and its PID was not reused)
            try:
                with open("/proc/%s/stat" % pid) as f:
                    stat = f.read()
                comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
                state = stat.rsplit(")", 1)[1].split()[0]
                alive = state != "Z" and comm.startswith("sshd")
            except OSError:
                alive = False
        else:
            try:
                os.kill(int(pid), 0); alive = True
            except PermissionError:
                alive = True
            except OSError:
                alive = False
    try:
        old = time.time() - os.lstat(p).st_mtime > 6 * 3600
    except OSError:
        continue
    if not alive or old:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try: os.unlink(p)
            except OSError: pass
        cleaned.append(name)
for name in os.listdir(work):
    if name.startswith(".current."):
        try: os.unlink(os.path.join(work, name))
        except OSError: pass
cur = os.path.join(work, "current")
current = os.path.basename(os.readlink(cur)) if os.path.islink(cur) else None
versions = sorted(v for v in os.listdir(os.path.join(work, "versions"))
                  if os.path.isfile(os.path.join(work, "versions", v, "version.json")))
have = [rel for rel in a.get("check", []) if os.path.isfile(os.path.join(work, rel))]
st = os.statvfs(work)
trusted = {}
tdir = os.path.join(home, a["trust_dir"])
if os.path.isdir(tdir):
    for n in sorted(os.listdir(tdir)):
        if n.endswith(".pub"):
            try:
                raw = base64.b64decode(open(os.path.join(tdir, n)).read().split()[1])
                trusted[hashlib.sha256(raw).hexdigest()[:16]] = n
            except Exception:
                trusted["unreadable:" + n] = n
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION").split()   # instant; platform.libc_ver() reads the binary
except (AttributeError, ValueError, OSError):
    libc = list(platform.libc_ver())
print(json.dumps({
    "home": home, "work": work,
    "python": platform.python_version(), "python_executable": sys.executable,
    "implementation": platform.python_implementation(), "machine": platform.machine(),
    "libc": [libc[0], libc[1]] if len(libc) == 2 else ["", ""],
    "current": current, "versions": versions, "have": have, "cleaned": cleaned,
    "free_bytes": st.f_bavail * st.f_frsize, "trusted": trusted,
    "tools": {t: bool(shutil.which(t)) for t in ("timeout", "sha256sum")},
}))
"""

_VERIFY_MOVE = r"""
set -u
while [ $# -ge 3 ]; do
  part=$1; want=$2; dst=$3; shift 3
  if command -v sha256sum >/dev/null 2>&1; then
    got=$(sha256sum "$part" | cut -d' ' -f1)
  else
    got=$(python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
print(h.hexdigest())' "$part")
  fi
  if [ "$got" != "$want" ]; then
    rm -f "$part"; echo "sha256 mismatch for $dst: expected $want, got $got" >&2; exit 3
  fi
  chmod 0644 "$part" && mv -f "$part" "$dst" || { rm -f "$part"; exit 4; }
done
"""

_INSTALL = r"""
import json, os, sys, shutil, subprocess, time
a = json.loads(sys.argv[1])
work, vid, py = a["work"], a["vid"], a["python"]
final = os.path.join(work, "versions", vid)
build = os.path.join(work, ".incoming", "%s.%s.build-%s" % (a["pid"], a["token"], vid))
out = {"vid": vid, "installed": False, "steps": {}}
def fail(kind, detail, enospc=False):
    shutil.rmtree(build, ignore_errors=True)
    out.update(error=kind, detail=detail[-1500:], enospc=enospc or "No space left on device" in detail)
    print(json.dumps(out)); sys.exit(0)
def run(step, cmd, env=None):
    t = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        fail(step, "%s: %s" % (cmd[0], e), e.errno == 28)
    out["steps"][step] = round(time.time() - t, 3)
    if r.returncode != 0:
        fail(step, (r.stderr or r.stdout).strip())
def smoke(vpy):
    # importing the executor writes every runtime module's bytecode now, while the disk has room: written
    # lazily at a later run on a full disk, a truncated .pyc breaks every import ("marshal data too short")
    run("smoke", [vpy, "-c", "import numpy, edgecompress_runtime, edgecompress_runtime.backends.numpy_graph"])
if not os.path.isfile(os.path.join(final, "version.json")):
    try:
        shutil.rmtree(build, ignore_errors=True)
        wh = os.path.join(build, "wheelhouse")
        os.makedirs(wh)
        for name, sha in a["wheels"]:
            os.symlink(os.path.join(work, "blobs", sha), os.path.join(wh, name))
    except OSError as e:
        fail("staging", str(e), e.errno == 28)
    venv = os.path.join(build, "venv")
    vpy = os.path.join(venv, "bin", "python")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    index = ["--find-links", wh]
    if a["offline"]:
        env["PIP_CONFIG_FILE"] = os.devnull   # only the pushed wheels, whatever pip.conf says
        index = ["--no-index"] + index
    pip_args = ["install", "-q", "--no-cache-dir", "--no-compile"] + index + a["requirements"]
    try:
        import pip
        fast = tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3)   # has --python
    except Exception:
        fast = False
    if not fast:
        try:
            import ensurepip  # noqa: F401
        except ImportError:
            fail("venv", "Python on the board has neither pip (>= 22.3) nor ensurepip, so no venv can get "
                 "packages: install them (sudo apt install python3-venv python3-pip)")
    out["pip_mode"] = "board pip --python" if fast else "venv with ensurepip"
    if fast:
        # a bare venv plus the board's own pip driving it: ~1 s instead of ensurepip's ~4 s
        run("venv", [py, "-m", "venv", "--without-pip", venv])
        run("pip", [py, "-m", "pip", "--python", vpy] + pip_args, env)
    else:
        run("venv", [py, "-m", "venv", venv])
        run("pip", [vpy, "-m", "pip"] + pip_args, env)
    smoke(vpy)
    try:
        shutil.rmtree(wh)
        with open(os.path.join(build, "version.json"), "w") as f:
            json.dump({"id": vid, "wheels": a["wheels"], "requirements": a["requirements"],
                       "python": a["python_version"], "installed_at": time.time()}, f)
        os.rename(build, final)   # atomic; versions/ never holds a partial install
    except OSError as e:
        if os.path.isfile(os.path.join(final, "version.json")):
            shutil.rmtree(build, ignore_errors=True)   # a concurrent deploy won the race
        else:
            fail("rename", str(e), e.errno == 28)
    out["installed"] = True
smoke(os.path.join(final, "venv", "bin", "python"))   # again: the venv moved
link = os.path.join(work, ".current.%s.%s" % (a["pid"], a["token"]))
try:
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.join("versions", vid), link)
    os.replace(link, os.path.join(work, "current"))   # the atomic switch
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir, exist_ok=True)
    tmp = os.path.join(bindir, ".edgecompress-runtime.%s" % a["token"])
    with open(tmp, "w") as f:
        f.write('#!/bin/sh\nexec "$(dirname "$0")/../current/venv/bin/python" -m edgecompress_runtime "$@"\n')
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(bindir, "edgecompress-runtime"))
except OSError as e:
    try: os.unlink(link)
    except OSError: pass
    fail("switch", str(e), e.errno == 28)
# keep the current install and the one before it (a rollback target); drop older ones
vdir = os.path.join(work, "versions")
vs = sorted((v for v in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, v, "version.json"))),
            key=lambda v: os.path.getmtime(os.path.join(vdir, v, "version.json")), reverse=True)
keep = {vid} | set(vs[:a["keep_versions"]])
for v in os.listdir(vdir):
    if v not in keep:
        shutil.rmtree(os.path.join(vdir, v), ignore_errors=True)
        out.setdefault("removed_versions", []).append(v)
used = set()
for v in keep:
    try:
        used |= {sha for _, sha in json.load(open(os.path.join(vdir, v, "version.json")))["wheels"]}
    except Exception:
        pass
bdir = os.path.join(work, "blobs")
for b in os.listdir(bdir):
    if b not in used:
        try: os.unlink(os.path.join(bdir, b))
        except OSError: pass
print(json.dumps(out))
"""

_SWITCH_KEY = r"""
set -eu
tdir=$1; name=$2; part=$3
mkdir -p "$tdir"; chmod 700 "$tdir"
mv -f "$part" "$tdir/$name"
"""

_PRUNE_BUNDLES = r"""
import os, sys, json
a = json.loads(sys.argv[1])
d = os.path.join(a["work"], "bundles")
fs = sorted((f for f in os.listdir(d) if f.endswith(".ecb")), key=lambda f: os.path.getmtime(os.path.join(d, f)),
            reverse=True)
gone = []
for f in fs[a["keep"]:]:
    if f not in a["protect"]:
        os.unlink(os.path.join(d, f)); gone.append(f)
print(json.dumps(gone))
"""


# ---------------------------------------------------------------------------- the installer


@dataclass
class Upload:
    local: Path
    sha256: str
    size: int
    remote: str          # final path relative to workdir


@dataclass
class InstallReport:
    version: str
    installed: bool
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    seconds: float = 0.0
    steps: dict = field(default_factory=dict)
    trusted_key_installed: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Installer:
    """Puts wheels and bundles on one board through one Connection.

    ``on_upload(name, sent, total)`` and ``on_step(step)`` are called as work
    progresses (the fault-injection tests hook in there)."""

    def __init__(self, conn: Connection, workdir: str = ".edgecompress", python: str = "python3",
                 offline: bool = True, space_check: bool = True, on_upload=None, on_step=None,
                 progress=None, timeout: float = 900.0):
        self.conn = conn
        self.workdir = workdir
        self.python = python
        self.offline = offline
        self.space_check = space_check
        self.on_upload = on_upload
        self.on_step = on_step or (lambda step: None)
        self.progress = progress or (lambda msg: None)
        self.timeout = timeout
        self.state: dict | None = None
        self.token = secrets.token_hex(4)

    # -- board state ----------------------------------------------------------------------------

    def probe(self, check=()) -> dict:
        """Facts the deploy needs in one round trip; also creates the layout and
        removes staging leftovers of dead sessions."""
        self.on_step("probe")
        arg = json.dumps({"workdir": self.workdir, "check": list(check), "trust_dir": TRUST_DIR})
        r = self.conn.run([self.python, "-c", _PROBE, arg], timeout=60, check=False, what="probing the board")
        if r.exit_code == 127 or (r.exit_code != 0 and "not found" in r.stderr):
            raise RemoteCommandError(f"{self.conn.label}: no {self.python!r} on the board; install Python 3 "
                                     "there (e.g. sudo apt install python3 python3-venv) or set 'python' "
                                     "in devices.toml")
        if r.exit_code != 0:
            raise RemoteCommandError(f"{self.conn.label}: probing the board failed: {r.stderr.strip()[-500:]}")
        try:
            state = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteCommandError(f"{self.conn.label}: unexpected probe output {r.stdout[-200:]!r}") from None
        if state.get("error"):
            if state.get("enospc"):
                raise DiskFullError(f"{self.conn.label}: no space left on the board to create {self.workdir}: "
                                    f"{state['detail']}; free some space on the board")
            raise RemoteCommandError(f"{self.conn.label}: cannot create the work directory {self.workdir} on "
                                     f"the board: {state['detail']}")
        self.state = state
        self.checked = set(check)
        # staging names start with the PID of this connection's sshd process: the next
        # deploy removes them once that process is gone (the connection died)
        self.pid = self.conn.session_pid
        return state

    @property
    def work(self) -> str:
        return self.state["work"]

    def _abs(self, rel: str) -> str:
        return f"{self.work}/{rel}"

    # -- uploads --------------------------------------------------------------------------------

    def upload(self, items: list[Upload]) -> tuple[list[str], list[str], int]:
        """Upload what is not on the board yet (by sha256), verify, rename into place."""
        have = set(self.state.get("have", []))
        todo = [u for u in items if u.remote not in have]
        skipped = [u.remote for u in items if u.remote in have]
        if not todo:
            return [], skipped, 0
        need = sum(u.size for u in todo)
        self._space(need, "the upload of " + ", ".join(Path(u.remote).name for u in todo))
        staged = []
        sent_total = 0
        for u in todo:
            part = f"{self.work}/.incoming/{self.pid}.{self.token}.{Path(u.remote).name}.part"
            self.on_step("upload")
            self.progress(f"uploading {u.local.name} ({u.size / 1e6:.1f} MB)")
            cb = (lambda sent, total, n=u.local.name: self.on_upload(n, sent, total)) if self.on_upload else None
            try:
                self.conn.put(u.local, part, callback=cb)
            except OSError as e:   # an SFTP status error on a live connection
                self._upload_failed(part, e, need - sent_total)
            staged += [part, u.sha256, self._abs(u.remote)]
            sent_total += u.size
        self.on_step("verify")
        r = self.conn.script(_VERIFY_MOVE, *staged, check=False, timeout=300, what="verifying uploads")
        if r.exit_code == 3:
            raise ConnectionLostError(f"{self.conn.label}: an upload arrived corrupted ({r.stderr.strip()}); "
                                      "it was deleted; retry (a flaky link or failing storage on the board)")
        if r.exit_code != 0:
            self._cleanup_parts(staged[0::3])
            if "No space left" in r.stderr:
                raise DiskFullError(f"{self.conn.label}: no space left on the board while moving uploads into "
                                    f"{self.work}; free space there")
            raise RemoteCommandError(f"{self.conn.label}: moving verified uploads into place failed: "
                                     f"{r.stderr.strip()[-400:]}")
        self.state["have"] = list(self.state.get("have", [])) + [u.remote for u in todo]
        return [u.remote for u in todo], skipped, sent_total

    def _upload_failed(self, part: str, e: OSError, need: int):
        free = None
        try:
            self._cleanup_parts([part])
            free = self._free_bytes()
        except DeployError:
            pass
        if free is not None and free < need + (1 << 20):
            raise DiskFullError(f"{self.conn.label}: the board ran out of disk space during the upload "
                                f"({free / 1e6:.1f} MB free in {self.work}, about {need / 1e6:.1f} MB needed); "
                                "the partial file was removed and the previous install is untouched; free "
                                "space on the board or set 'workdir' to a bigger filesystem") from None
        raise RemoteCommandError(f"{self.conn.label}: the board's SFTP server refused the upload to {part} "
                                 f"({e}); the partial file was removed") from None

    def _cleanup_parts(self, parts):
        if parts:
            self.conn.run(["rm", "-f", *parts], timeout=60, check=False, what="removing partial uploads")

    def _free_bytes(self) -> int:
        r = self.conn.run(["df", "-Pk", self.work], timeout=30, check=False, what="df")
        try:
            return int(r.stdout.strip().splitlines()[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            return 1 << 62

    def _space(self, need: int, what: str):
        if not self.space_check:
            return
        free = self.state.get("free_bytes", 1 << 62)
        if free < need + (1 << 20):
            raise DiskFullError(f"{self.conn.label}: not enough disk space on the board for {what}: "
                                f"{free / 1e6:.1f} MB free in {self.work}, {need / 1e6:.1f} MB needed; nothing "
                                "was changed. Free space on the board or set 'workdir' to a bigger filesystem")

    # -- the runtime ----------------------------------------------------------------------------

    def version_id(self, wh: Wheelhouse, listing) -> str:
        key = json.dumps([[n, s] for n, s, _ in listing] + [wh.requirements, self.state["python"],
                                                             self.state["machine"], self.python])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def install_runtime(self, wh: Wheelhouse) -> InstallReport:
        t0 = time.perf_counter()
        listing = wh.listing()
        vid = self.version_id(wh, listing)
        if self.state.get("current") == vid:
            return InstallReport(version=vid, installed=False, skipped=[n for n, _, _ in listing],
                                 seconds=time.perf_counter() - t0)
        if vid not in self.state.get("versions", []):
            uploads = [Upload(p, s, n, f"blobs/{s}") for p, (_, s, n) in zip(wh.wheels, listing)]
            # unpacked, numpy & co take ~3x their wheel size
            self._space(sum(n for _, _, n in listing) * 4, f"installing runtime {vid}")
            self._ensure_checked([u.remote for u in uploads])
            up, skipped, nbytes = self.upload(uploads)
        else:
            up, skipped, nbytes = [], [n for n, _, _ in listing], 0
        self.on_step("install")
        self.progress(f"installing runtime {vid} on the board")
        args = {"work": self.work, "vid": vid, "python": self.python, "pid": self.pid, "token": self.token,
                "wheels": [[n, s] for n, s, _ in listing], "requirements": wh.requirements,
                "offline": self.offline, "python_version": self.state["python"],
                "keep_versions": KEEP_VERSIONS}
        r = self.conn.run([self.python, "-c", _INSTALL, json.dumps(args)], timeout=self.timeout, check=False,
                          what="installing the runtime")
        res = _last_json(r.stdout)
        if r.exit_code != 0 or res is None:
            raise RemoteCommandError(f"{self.conn.label}: the install program failed (exit {r.exit_code}): "
                                     f"{(r.stderr or r.stdout).strip()[-600:]}")
        if res.get("error"):
            if res.get("enospc"):
                raise DiskFullError(f"{self.conn.label}: no space left on the board while installing runtime "
                                    f"{vid} ({res['error']} step); the half-built venv was removed and the "
                                    "previous install is untouched; free space on the board")
            raise RemoteCommandError(f"{self.conn.label}: installing runtime {vid} failed at the {res['error']} "
                                     f"step: {res['detail'][-600:]}; the previous install is untouched")
        self.state["current"] = vid
        return InstallReport(version=vid, installed=res["installed"], uploaded=up, skipped=skipped,
                             uploaded_bytes=nbytes, seconds=time.perf_counter() - t0, steps=res.get("steps", {}))

    def _ensure_checked(self, rels) -> None:
        """Make sure state["have"] knows whether each of ``rels`` is on the board."""
        rels = [r for r in rels if r not in self.checked]
        if not rels:
            return
        r = self.conn.script('cd "$1" && shift && for f in "$@"; do [ -f "$f" ] && echo "$f"; done; true',
                             self.work, *rels, timeout=60, what="looking for files already on the board")
        self.state["have"] = list(self.state.get("have", [])) + r.stdout.split()
        self.checked |= set(rels)

    # -- bundles and keys -------------------------------------------------------------------------

    def put_bundle(self, path: Path, sha: str) -> tuple[str, bool]:
        """Upload a bundle (unless its hash is there); returns (remote path, uploaded)."""
        rel = f"bundles/{sha}.ecb"
        self._ensure_checked([rel])
        up, _, _ = self.upload([Upload(Path(path), sha, Path(path).stat().st_size, rel)])
        self.pruned = []
        if up:
            r = self.conn.run([self.python, "-c", _PRUNE_BUNDLES,
                               json.dumps({"work": self.work, "keep": KEEP_BUNDLES, "protect": [f"{sha}.ecb"]})],
                              timeout=60, check=False, what="pruning old bundles")
            try:       # the hashes of the bundles it removed: callers drop them from their caches
                self.pruned = [f[:-len(".ecb")] for f in json.loads(r.stdout.strip().splitlines()[-1])]
            except (ValueError, IndexError, TypeError, AttributeError):
                self.pruned = []
            gone = {f"bundles/{h}.ecb" for h in self.pruned}
            self.state["have"] = [h for h in self.state.get("have", []) if h not in gone]
            self.checked -= gone
        return self._abs(rel), bool(up)

    def install_trusted_key(self, key_id: str, public_line: str) -> None:
        """Add a public key to the board's runtime trust store (atomically)."""
        home = self.state["home"]
        part = f"{self.work}/.incoming/{self.pid}.{self.token}.{key_id}.pub.part"
        try:
            self.conn.write_bytes(part, public_line.encode(), mode=0o644)
        except OSError as e:
            raise SignatureError(f"{self.conn.label}: cannot write the trusted key to the board ({e})") from None
        self.conn.script(_SWITCH_KEY, f"{home}/{TRUST_DIR}", f"{key_id}.pub", part, timeout=60,
                         what="installing the trusted key")
        self.state.setdefault("trusted", {})[key_id] = f"{key_id}.pub"

    def uninstall(self, remove_trusted_keys: bool = False) -> None:
        home = posixpath.normpath(self.conn.home)
        wd = self.workdir
        wd = home + wd[1:] if wd == "~" or wd.startswith("~/") else wd
        work = posixpath.normpath(wd if wd.startswith("/") else f"{home}/{wd}")
        if work == "/" or home == work or home.startswith(work.rstrip("/") + "/"):
            raise DeployError(f"refusing to remove {work!r}: it is the board user's home or one of its parents")
        self.conn.run(["rm", "-rf", "--", work], timeout=300, what="removing the install")
        if remove_trusted_keys:
            self.conn.run(["rm", "-rf", "--", f"{home}/{TRUST_DIR}"], timeout=60, what="removing trusted keys")


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None

