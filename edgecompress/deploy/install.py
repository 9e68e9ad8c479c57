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
    .lock                  flock'd by the install program around install, switch and clean-up;
                           holds the holder's pid, host, client and start time
    pins/<sshd-pid>.<token>.<id>   the version a live session deployed (its benches run it by
                           path): clean-up keeps it until that session ends

``<id>`` hashes the wheels and the board's Python, so deploying the same thing
again uploads and installs nothing (every upload is skipped when its sha256 is
already on the board). Staging entries of sessions that died (their sshd
process is gone) are removed by the next deploy; old versions beyond the
current and the previous one are garbage-collected, except versions pinned by a
live session or used by a running process. Concurrent deploys to one board
(other hosts, other processes, threads) wait for each other's install (at most
``lock_timeout`` s, then a ``DeployError`` naming the holder), and each one's
benchmarks run the version it installed.

The wheels come from the host (``wheels.py``). The work on the board is done by
small programs of the runtime package, sent as source because they run before the
runtime is installed (``edgecompress_runtime/board/``: probe, verify_move,
install, prune, trust_key).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecompress_runtime.board import source

from ..errors import (ConnectionLostError, DeployError, DiskFullError, RemoteCommandError,
                      SignatureError)
from .connection import Connection
from .wheels import Wheelhouse

TRUST_DIR = ".config/edgecompress-runtime/trusted_keys"   # relative to the board user's home
KEEP_VERSIONS = 2
KEEP_BUNDLES = 20
LOCK_TIMEOUT_S = 600.0   # how long an install waits for another deploy's install on the same board
BLOB_GRACE_S = 3600      # clean-up keeps wheels uploaded this recently (another deploy may be about to use them)
MISSING_RETRIES = 2      # uploads again of wheels another deploy's clean-up removed


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
                 progress=None, timeout: float = 900.0, lock_timeout: float = LOCK_TIMEOUT_S):
        self.conn = conn
        self.workdir = workdir
        self.python = python
        self.offline = offline
        self.space_check = space_check
        self.on_upload = on_upload
        self.on_step = on_step or (lambda step: None)
        self.progress = progress or (lambda msg: None)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.state: dict | None = None
        self.token = secrets.token_hex(4)
        self.pruned: list[str] = []      # hashes of the bundles the last put_bundle removed

    def _program(self, name: str, arg: dict, *, timeout: float, what: str):
        """Run board program ``name`` (edgecompress_runtime/board/) with the board's Python."""
        return self.conn.run([self.python, "-c", source(name), json.dumps(arg)], timeout=timeout, check=False,
                             what=what)

    # -- board state ----------------------------------------------------------------------------

    def probe(self, check=()) -> dict:
        """Facts the deploy needs in one round trip; also creates the layout and
        removes staging leftovers of dead sessions."""
        self.on_step("probe")
        r = self._program("probe", {"workdir": self.workdir, "check": list(check), "trust_dir": TRUST_DIR},
                          timeout=60, what="probing the board")
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

    def venv_python(self, version: str) -> str:
        """The Python of installed runtime ``version`` on the board."""
        return self._abs(f"versions/{version}/venv/bin/python")

    def scratch(self, name: str) -> str:
        """A path in staging for a file of this session (removed with the session if it dies)."""
        return self._abs(f".incoming/{self.pid}.{self.token}.{name}")

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
            staged.append([part, u.sha256, self._abs(u.remote)])
            sent_total += u.size
        self.on_step("verify")
        r = self._program("verify_move", {"items": staged}, timeout=300, what="verifying uploads")
        if r.exit_code == 3:
            raise ConnectionLostError(f"{self.conn.label}: an upload arrived corrupted ({r.stderr.strip()}); "
                                      "it was deleted; retry (a flaky link or failing storage on the board)")
        if r.exit_code != 0:
            self._cleanup_parts([s[0] for s in staged])
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
        """Install (or just pin, when it is already current) the wheelhouse's runtime on the
        board under the board's install lock; see edgecompress_runtime/board/install.py."""
        t0 = time.perf_counter()
        listing = wh.listing()
        vid = self.version_id(wh, listing)
        uploads = [Upload(p, s, n, f"blobs/{s}") for p, (_, s, n) in zip(wh.wheels, listing)]
        up, skipped, nbytes = [], [n for n, _, _ in listing], 0
        if self.state.get("current") != vid and vid not in self.state.get("versions", []):
            # unpacked, numpy & co take ~3x their wheel size
            self._space(sum(n for _, _, n in listing) * 4, f"installing runtime {vid}")
            self.ensure_checked([u.remote for u in uploads])
            up, skipped, nbytes = self.upload(uploads)
        for attempt in range(MISSING_RETRIES + 1):
            self.on_step("install")
            if self.state.get("current") != vid:
                self.progress(f"installing runtime {vid} on the board")
            res = self._run_install(vid, wh, listing)
            if res.get("error") != "missing_blobs" or attempt == MISSING_RETRIES:
                break
            # another deploy's clean-up removed wheels this one found on the board: upload them again
            gone = {f"blobs/{sha}" for sha in res.get("missing", [])}
            self.state["have"] = [h for h in self.state.get("have", []) if h not in gone]
            more, _, more_bytes = self.upload([u for u in uploads if u.remote in gone])
            up, nbytes = up + more, nbytes + more_bytes
        if res.get("error"):
            self._install_failed(vid, res)
        self.state["current"] = vid
        steps = dict(res.get("steps", {}), lock_wait=res.get("lock_wait_s", 0.0))
        return InstallReport(version=vid, installed=res["installed"], uploaded=up, skipped=skipped,
                             uploaded_bytes=nbytes, seconds=time.perf_counter() - t0, steps=steps)

    def _run_install(self, vid: str, wh: Wheelhouse, listing) -> dict:
        args = {"work": self.work, "vid": vid, "python": self.python, "pid": self.pid, "token": self.token,
                "wheels": [[n, s] for n, s, _ in listing], "requirements": wh.requirements,
                "offline": self.offline, "python_version": self.state["python"],
                "keep_versions": KEEP_VERSIONS, "lock_timeout": self.lock_timeout, "blob_grace_s": BLOB_GRACE_S,
                "client": f"{socket.gethostname()} pid {os.getpid()}"}
        r = self._program("install", args, timeout=self.timeout + self.lock_timeout, what="installing the runtime")
        res = _last_json(r.stdout)
        if r.exit_code != 0 or res is None:
            raise RemoteCommandError(f"{self.conn.label}: the install program failed (exit {r.exit_code}): "
                                     f"{(r.stderr or r.stdout).strip()[-600:]}")
        return res

    def _install_failed(self, vid: str, res: dict):
        if res["error"] == "lock":
            raise DeployError(f"{self.conn.label}: {lock_message(res, f'{self.work}/.lock')}; runtime {vid} was not "
                              "installed and the board is unchanged")
        if res.get("enospc"):
            raise DiskFullError(f"{self.conn.label}: no space left on the board while installing runtime "
                                f"{vid} ({res['error']} step); the half-built venv was removed and the "
                                "previous install is untouched; free space on the board")
        raise RemoteCommandError(f"{self.conn.label}: installing runtime {vid} failed at the {res['error']} "
                                 f"step: {res['detail'][-600:]}; the previous install is untouched")

    def ensure_checked(self, rels) -> None:
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
        self.ensure_checked([rel])
        up, _, _ = self.upload([Upload(Path(path), sha, Path(path).stat().st_size, rel)])
        self.pruned = []
        if up:
            r = self._program("prune", {"work": self.work, "keep": KEEP_BUNDLES, "protect": [f"{sha}.ecb"]},
                              timeout=60, what="pruning old bundles")
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
        r = self._program("trust_key", {"dir": f"{home}/{TRUST_DIR}", "name": f"{key_id}.pub", "part": part},
                          timeout=60, what="installing the trusted key")
        if r.exit_code != 0:
            raise RemoteCommandError(f"{self.conn.label}: installing the trusted key failed: "
                                     f"{r.stderr.strip()[-400:]}")
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


def lock_message(res: dict, path: str) -> str:
    """Why the install program could not take the board's lock, naming the holder."""
    h = res.get("holder") or {}
    if not h and "held by another" not in res.get("detail", ""):
        return f"cannot take the board's install lock: {res.get('detail', '?')}"
    who = (f"pid {h.get('pid', '?')} on {h.get('host', '?')}" + (f" (deploying from {h['client']})"
           if h.get("client") else "") + (f": {h['what']}" if h.get("what") else "")) if h else "a process"
    since = ""
    if isinstance(h.get("since"), (int, float)):
        since = (f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(h['since']))} UTC "
                 f"({max(0.0, time.time() - h['since']):.0f} s ago)")
    return (f"the board is busy: {who} holds its install lock {path}{since}; waited "
            f"{res.get('waited_s', 0):.0f} s (lock_timeout). Retry when that deploy ends (the lock frees "
            "itself when its process exits) or raise lock_timeout")


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None

