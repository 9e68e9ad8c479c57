"""Install one runtime version on the board so that a failure at any point leaves
the previous install working: build a venv in staging from the uploaded wheels,
smoke-test it, rename it into ``versions/<vid>`` (atomic), switch ``current`` to it
(symlink + rename, atomic), write ``bin/edgecompress-runtime``, then drop versions
older than the newest ``keep_versions`` and wheels no kept version uses.

Runs with the board's own Python before the runtime exists: the host sends this
file's source (``python3 -c SOURCE ARG``), so standard library only.

    ARG = {"work", "vid", "python", "pid", "token", "wheels": [[name, sha256], ...],
           "requirements", "offline", "python_version", "keep_versions"}

Prints ``{"vid", "installed", "steps": {step: seconds}, ...}``, with ``error``
(the failed step), ``detail`` and ``enospc`` when a step failed.
"""
import json
import os
import shutil
import subprocess
import sys
import time

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
    try:
        import pip
        return tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3)
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


def collect_garbage(work: str, vid: str, keep_versions: int) -> list:
    """Keep the current install and the newest ones before it (rollback targets); drop older
    versions and the wheels only they used. Returns the versions removed."""
    vdir = os.path.join(work, "versions")
    vs = sorted((v for v in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, v, "version.json"))),
                key=lambda v: os.path.getmtime(os.path.join(vdir, v, "version.json")), reverse=True)
    keep = {vid} | set(vs[:keep_versions])
    removed = []
    for v in os.listdir(vdir):
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
        if b not in used:
            try:
                os.unlink(os.path.join(bdir, b))
            except OSError:
                pass
    return removed


def install(a: dict) -> dict:
    work, vid = a["work"], a["vid"]
    final = os.path.join(work, "versions", vid)
    build = os.path.join(work, ".incoming", "%s.%s.build-%s" % (a["pid"], a["token"], vid))
    out = {"vid": vid, "installed": False, "steps": {}}
    try:
        if not os.path.isfile(os.path.join(final, "version.json")):
            install_version(a, out, build, final)
        smoke(out, os.path.join(final, "venv", "bin", "python"))   # again: the venv moved
        switch_current(work, vid, a["pid"], a["token"])
    except StepFailed as e:
        shutil.rmtree(build, ignore_errors=True)
        out.update(error=e.step, detail=e.detail[-1500:], enospc=e.enospc)
        return out
    removed = collect_garbage(work, vid, a["keep_versions"])
    if removed:
        out["removed_versions"] = removed
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(install(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
