"""What a deploy needs to know about the board, in one round trip; also creates the
install layout and removes staging leftovers of sessions that died.

Runs with the board's own Python before any runtime is installed: the host sends
this file's source (``python3 -c SOURCE ARG``), so standard library only.

    ARG = {"workdir": ".edgecompress", "check": ["blobs/<sha>", ...], "trust_dir": ".config/..."}

Prints the board's state (python, machine, libc, free space, installed versions,
which of ``check`` exist, trusted keys), or ``{"error": "mkdir", ...}``.
"""
import base64
import hashlib
import json
import os
import platform
import shutil
import sys
import time

STALE_S = 6 * 3600          # staging older than this goes even when its session looks alive


def session_alive(pid: str) -> bool:
    """Whether the sshd process that named a staging entry still runs (and is not a zombie,
    and its PID was not reused by something else)."""
    if not pid.isdigit():
        return False
    if os.path.isdir("/proc/self"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            return False
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        state = stat.rsplit(")", 1)[1].split()[0]
        return state != "Z" and comm.startswith("sshd")
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:
        return True
    except OSError:
        return False


def clean_staging(work: str, staging: str) -> list:
    cleaned = []
    for name in os.listdir(staging):
        path = os.path.join(staging, name)
        try:
            old = time.time() - os.lstat(path).st_mtime > STALE_S
        except OSError:
            continue
        if session_alive(name.split(".", 1)[0]) and not old:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
        cleaned.append(name)
    for name in os.listdir(work):          # half-made `current` links of an interrupted switch
        # (.current.<sshd-pid>.<token>: a live session's may be mid-switch under the install lock)
        if name.startswith(".current.") and not session_alive(name.split(".")[2]):
            try:
                os.unlink(os.path.join(work, name))
            except OSError:
                pass
    return cleaned


def trusted_keys(tdir: str) -> dict:
    """key id (sha256 of the raw public key, 16 hex) -> file name, as the runtime computes it."""
    trusted = {}
    if os.path.isdir(tdir):
        for n in sorted(os.listdir(tdir)):
            if n.endswith(".pub"):
                try:
                    with open(os.path.join(tdir, n)) as f:
                        raw = base64.b64decode(f.read().split()[1])
                    trusted[hashlib.sha256(raw).hexdigest()[:16]] = n
                except Exception:
                    trusted["unreadable:" + n] = n
    return trusted


def libc() -> list:
    try:
        got = os.confstr("CS_GNU_LIBC_VERSION").split()   # instant; platform.libc_ver() reads the binary
    except (AttributeError, ValueError, OSError):
        got = list(platform.libc_ver())
    return [got[0], got[1]] if len(got) == 2 else ["", ""]


def probe(a: dict) -> dict:
    home = os.path.expanduser("~")
    wd = os.path.expanduser(a["workdir"])
    work = os.path.normpath(wd if os.path.isabs(wd) else os.path.join(home, wd))
    staging = os.path.join(work, ".incoming")
    try:
        for d in (work, staging, os.path.join(work, "blobs"), os.path.join(work, "bundles"),
                  os.path.join(work, "versions")):
            os.makedirs(d, exist_ok=True)
    except OSError as e:
        return {"error": "mkdir", "detail": str(e), "enospc": e.errno == 28}
    cleaned = clean_staging(work, staging)
    cur = os.path.join(work, "current")
    vdir = os.path.join(work, "versions")
    st = os.statvfs(work)
    return {
        "home": home, "work": work,
        "python": platform.python_version(), "python_executable": sys.executable,
        "implementation": platform.python_implementation(), "machine": platform.machine(), "libc": libc(),
        "current": os.path.basename(os.readlink(cur)) if os.path.islink(cur) else None,
        "versions": sorted(v for v in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, v, "version.json"))),
        "have": [rel for rel in a.get("check", []) if os.path.isfile(os.path.join(work, rel))],
        "cleaned": cleaned, "free_bytes": st.f_bavail * st.f_frsize,
        "trusted": trusted_keys(os.path.join(home, a["trust_dir"])),
        "tools": {t: bool(shutil.which(t)) for t in ("timeout", "sha256sum")},
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(probe(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
