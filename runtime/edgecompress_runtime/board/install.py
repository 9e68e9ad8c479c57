"""Install one runtime version on the board so that a failure at any point leaves
the previous install working: build a venv in staging from the uploaded wheels,
smoke-test it, rename it into ``versions/<vid>`` (atomic), switch ``current`` to it
(symlink + rename, atomic), write ``bin/edgecompress-runtime``, pin it for the
deploying session, then drop versions nobody uses and wheels no kept version uses.

Concurrent deploys to one board are safe:

- all of that runs under an exclusive ``flock`` on ``<work>/.lock`` (waiting at most
  ``lock_timeout`` s; the holder writes its pid, host, client and start time into the
  file, so a deploy that cannot get it says who has it: ``{"error": "lock", "holder"}``);
- ``pins/<sshd-pid>.<token>.<vid>`` marks the version a live SSH session deployed: its
  benchmarks run that version by path, so clean-up keeps it until the session ends;
- clean-up also keeps ``current``, the newest ``keep_versions``, any version a running
  process was started from (``/proc/*/cmdline``) and wheels uploaded in the last
  ``blob_grace_s`` (another deploy's, not installed yet; the host sends an hour). A
  wheel that is gone anyway is reported as ``{"error": "missing_blobs", "missing":
  [sha256, ...]}``: the host uploads it again.

Runs with the board's own Python before the runtime exists: the host sends this
file's source (``python3 -c SOURCE ARG``), so standard library only.

    ARG = {"work", "vid", "python", "pid", "token", "wheels": [[name, sha256], ...], "requirements",
           "offline", "python_version", "keep_versions", "lock_timeout", "blob_grace_s", "client"}

Prints ``{"vid", "installed", "steps": {step: seconds}, ...}``, with ``error``
(the failed step), ``detail`` and ``enospc`` when a step failed.
"""
import contextlib
import fcntl
import json
import os
import socket
import shutil
import subprocess
import sys
import time

LOCK_NAME = ".lock"
PINS = "pins"
WRAPPER = '#!/bin/sh\nexec "$(dirname "$0")/../current/venv/bin/python" -m edgecompress_runtime "$@"\n'


class StepFailed(Exception):
    def __init__(self, step: str, detail: str, enospc: bool = False):
        super().__init__(detail)
        self.step, self.detail = step, detail
        self.enospc = enospc or "No space left on device" in detail


def run_step(out: dict, step: str, cmd, env=None) -> None:
    t = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        raise StepFailed(step, "%s: %s" % (cmd[0], e), e.errno == 28) from None
    out["steps"][step] = round(time.time() - t, 3)
    if r.returncode != 0:
        raise StepFailed(step, (r.stderr or r.stdout).strip())


def smoke(out: dict, vpy: str) -> None:
    # importing the executor writes every runtime module's bytecode now, while the disk has room: written
    # lazily at a later run on a full disk, a truncated .pyc breaks every import ("marshal data too short")
    run_step(out, "smoke", [vpy, "-c", "import numpy, edgecompress_runtime, edgecompress_runtime.backends.numpy_graph"])


def pip_has_python_option() -> bool:
    """pip >= 22.3 can install into another interpreter's venv (``--python``)."""
    # read pip's version from its metadata: importing pip in a process that later imports setuptools breaks
    # setuptools' distutils shim (it steps aside for pip)
    try:
        from importlib import metadata
        return tuple(int(x) for x in metadata.version("pip").split(".")[:2]) >= (22, 3)
    except Exception:
        return False


def stage_wheels(a: dict, build: str) -> str:
    try:
        shutil.rmtree(build, ignore_errors=True)
        wh = os.path.join(build, "wheelhouse")
        os.makedirs(wh)
        for name, sha in a["wheels"]:
            os.symlink(os.path.join(a["work"], "blobs", sha), os.path.join(wh, name))
    except OSError as e:
        raise StepFailed("staging", str(e), e.errno == 28) from None
    return wh


def build_venv(a: dict, out: dict, build: str, wh: str) -> None:
    py = a["python"]
    venv = os.path.join(build, "venv")
    vpy = os.path.join(venv, "bin", "python")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    index = ["--find-links", wh]
    if a["offline"]:
        env["PIP_CONFIG_FILE"] = os.devnull   # only the pushed wheels, whatever pip.conf says
        index = ["--no-index"] + index
    pip_args = ["install", "-q", "--no-cache-dir", "--no-compile"] + index + a["requirements"]
    fast = pip_has_python_option()
    if not fast:
        import importlib.util
        if importlib.util.find_spec("ensurepip") is None:
            raise StepFailed("venv", "Python on the board has neither pip (>= 22.3) nor ensurepip, so no venv "
                             "can get packages: install them (sudo apt install python3-venv python3-pip)")
    out["pip_mode"] = "board pip --python" if fast else "venv with ensurepip"
    if fast:
        # a bare venv plus the board's own pip driving it: ~1 s instead of ensurepip's ~4 s
        run_step(out, "venv", [py, "-m", "venv", "--without-pip", venv])
        run_step(out, "pip", [py, "-m", "pip", "--python", vpy] + pip_args, env)
    else:
        run_step(out, "venv", [py, "-m", "venv", venv])
        run_step(out, "pip", [vpy, "-m", "pip"] + pip_args, env)
    smoke(out, vpy)


def install_version(a: dict, out: dict, build: str, final: str) -> None:
    """Build the venv in staging, then rename it into versions/ (never a partial install there)."""
    wh = stage_wheels(a, build)
    build_venv(a, out, build, wh)
    try:
        shutil.rmtree(wh)
        with open(os.path.join(build, "version.json"), "w") as f:
            json.dump({"id": a["vid"], "wheels": a["wheels"], "requirements": a["requirements"],
                       "python": a["python_version"], "installed_at": time.time()}, f)
        os.rename(build, final)   # atomic
    except OSError as e:
        if not os.path.isfile(os.path.join(final, "version.json")):
            raise StepFailed("rename", str(e), e.errno == 28) from None
        shutil.rmtree(build, ignore_errors=True)   # a concurrent deploy won the race
    out["installed"] = True


def switch_current(work: str, vid: str, pid, token: str) -> None:
    """Point ``current`` at versions/<vid> and write the bin/ wrapper, each by an atomic rename."""
    link = os.path.join(work, ".current.%s.%s" % (pid, token))
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join("versions", vid), link)
        os.replace(link, os.path.join(work, "current"))
        bindir = os.path.join(work, "bin")
        os.makedirs(bindir, exist_ok=True)
        tmp = os.path.join(bindir, ".edgecompress-runtime.%s" % token)
        with open(tmp, "w") as f:
            f.write(WRAPPER)
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(bindir, "edgecompress-runtime"))
    except OSError as e:
        try:
            os.unlink(link)
        except OSError:
            pass
        raise StepFailed("switch", str(e), e.errno == 28) from None


class LockBusy(Exception):
    def __init__(self, holder: dict, waited: float, detail: str = "the board's install lock is held by another deploy"):
        super().__init__(detail)
        self.holder, self.waited, self.detail = holder, waited, detail


def read_holder(path: str) -> dict:
    """What the lock's holder wrote into the lock file ({} when unreadable or between holders)."""
    try:
        with open(path) as f:
            got = json.loads(f.read() or "{}")
        return got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def board_lock(work: str, timeout: float, what: str, client=None):
    """Hold the board's install lock (exclusive ``flock`` on <work>/.lock), waiting at most
    ``timeout`` s, else raise ``LockBusy`` with the holder's record. The kernel drops the lock
    when the holder dies, so a crashed deploy never leaves the board locked."""
    path = os.path.join(work, LOCK_NAME)
    try:
        f = open(path, "a+")
    except OSError as e:
        raise LockBusy({}, 0.0, "cannot open %s: %s" % (path, e)) from None
    t0 = time.time()
    try:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.time() - t0 >= timeout:
                    raise LockBusy(read_holder(path), time.time() - t0) from None
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "client": client, "what": what,
                            "since": time.time()}))
        f.flush()
        yield round(time.time() - t0, 3)
        f.seek(0)
        f.truncate()
    finally:
        f.close()     # releases the lock


def session_alive(pid: str) -> bool:
    """Whether the sshd session process ``pid`` still runs (as probe.session_alive; each
    program is sent to the board alone, so it cannot import the other)."""
    if not pid.isdigit():
        return False
    if os.path.isdir("/proc/self"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            return False
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and comm.startswith("sshd")
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:
        return True
    except OSError:
        return False


def pin(work: str, vid: str, pid, token: str) -> None:
    """Mark ``vid`` as used by the deploying session (replacing that session's earlier pin)."""
    d = os.path.join(work, PINS)
    os.makedirs(d, exist_ok=True)
    mine = "%s.%s." % (pid, token)
    for n in os.listdir(d):
        if n.startswith(mine) and n != mine + vid:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, n))
    with open(os.path.join(d, mine + vid), "w") as f:
        f.write("%s\n" % time.time())


def pinned(work: str) -> set:
    """Versions pinned by live sessions; pins of sessions that ended are removed."""
    d = os.path.join(work, PINS)
    got = set()
    for n in os.listdir(d) if os.path.isdir(d) else []:
        parts = n.split(".", 2)
        if len(parts) == 3 and session_alive(parts[0]):
            got.add(parts[2])
        else:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, n))
    return got


def in_use(paths: dict) -> set:
    """Keys of ``paths`` ({key: path}) that appear in a running process's command line."""
    used = set()
    if not os.path.isdir("/proc/self"):
        return used
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        used |= {k for k, p in paths.items() if p in cmd}
    return used


def current_version(work: str):
    cur = os.path.join(work, "current")
    return os.path.basename(os.readlink(cur)) if os.path.islink(cur) else None


def collect_garbage(work: str, vid: str, keep_versions: int, blob_grace_s: float = 0.0) -> list:
    """Keep the new install, ``current``, the newest ones before it (rollback targets), versions
    pinned by live sessions and versions running processes use; drop the other versions and the
    wheels only they used (not wheels uploaded within ``blob_grace_s``). Returns the versions removed."""
    vdir = os.path.join(work, "versions")
    vs = sorted((v for v in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, v, "version.json"))),
                key=lambda v: os.path.getmtime(os.path.join(vdir, v, "version.json")), reverse=True)
    keep = {vid, current_version(work)} | set(vs[:keep_versions]) | pinned(work)
    rest = [v for v in os.listdir(vdir) if v not in keep]
    keep |= in_use({v: os.path.join(vdir, v) + "/" for v in rest})
    removed = []
    for v in rest:
        if v not in keep:
            shutil.rmtree(os.path.join(vdir, v), ignore_errors=True)
            removed.append(v)
    used = set()
    for v in keep:
        try:
            with open(os.path.join(vdir, v, "version.json")) as f:
                used |= {sha for _, sha in json.load(f)["wheels"]}
        except Exception:
            pass
    bdir = os.path.join(work, "blobs")
    for b in os.listdir(bdir):
        path = os.path.join(bdir, b)
        with contextlib.suppress(OSError):
            if b not in used and time.time() - os.path.getmtime(path) >= blob_grace_s:
                os.unlink(path)
    return removed


def missing_blobs(a: dict) -> list:
    """The wheels this install needs that are not on the board (another deploy's clean-up
    removed them); the ones there are touched so that no clean-up takes them next."""
    missing = []
    for _, sha in a["wheels"]:
        try:
            os.utime(os.path.join(a["work"], "blobs", sha))
        except OSError:
            missing.append(sha)
    return missing


def locked_install(a: dict, out: dict) -> dict:
    work, vid = a["work"], a["vid"]
    final = os.path.join(work, "versions", vid)
    build = os.path.join(work, ".incoming", "%s.%s.build-%s" % (a["pid"], a["token"], vid))
    complete = os.path.isfile(os.path.join(final, "version.json"))
    try:
        if complete and current_version(work) == vid:   # already installed and current: only pin it
            pin(work, vid, a["pid"], a["token"])
            return out
        if not complete:
            missing = missing_blobs(a)
            if missing:
                out.update(error="missing_blobs", missing=missing, enospc=False,
                           detail="%d wheel(s) not on the board" % len(missing))
                return out
            install_version(a, out, build, final)
        smoke(out, os.path.join(final, "venv", "bin", "python"))   # again: the venv moved
        switch_current(work, vid, a["pid"], a["token"])
        pin(work, vid, a["pid"], a["token"])
    except StepFailed as e:
        shutil.rmtree(build, ignore_errors=True)
        out.update(error=e.step, detail=e.detail[-1500:], enospc=e.enospc)
        return out
    except OSError as e:     # pinning
        out.update(error="pin", detail=str(e), enospc=e.errno == 28)
        return out
    removed = collect_garbage(work, vid, a["keep_versions"], float(a.get("blob_grace_s", 0)))
    if removed:
        out["removed_versions"] = removed
    return out


def install(a: dict) -> dict:
    out = {"vid": a["vid"], "installed": False, "steps": {}}
    try:
        with board_lock(a["work"], float(a.get("lock_timeout", 600)), "installing runtime %s" % a["vid"],
                        a.get("client")) as waited:
            out["lock_wait_s"] = waited
            return locked_install(a, out)
    except LockBusy as e:
        out.update(error="lock", holder=e.holder, waited_s=round(e.waited, 1), detail=e.detail,
                   enospc="No space left" in e.detail)
        return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(install(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
