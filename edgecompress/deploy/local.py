"""The local machine as a board: a separate venv holding only numpy and
edgecompress-runtime (no torch), and benchmarks run there in their own process.
The SSH deployer follows the same steps on a remote board."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import edgecompress_runtime

from ..errors import DeployError


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))


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
    """Build the py3-none-any runtime wheel once per source version."""
    src = runtime_source()
    out = (out_dir or cache_dir() / "wheels") / f"runtime-{_tree_hash(src)}"
    wheels = list(out.glob("edgecompress_runtime-*.whl")) if out.is_dir() else []
    if wheels:
        return wheels[0]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build:
        # building in a copy keeps build/ and *.egg-info out of the source tree
        import shutil
        shutil.copytree(src, Path(build) / "src", ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                 "__pycache__"))
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(out), str(Path(build) / "src")], capture_output=True, text=True)
    if r.returncode != 0:
        raise DeployError(f"building the runtime wheel failed: {r.stderr.strip()[-500:]}")
    return next(out.glob("edgecompress_runtime-*.whl"))


class LocalBoard:
    """A venv on this machine standing in for a device."""

    name = "local"

    def __init__(self, root: Path | None = None):
        self.root = Path(root or cache_dir() / "local-board")
        self.venv = self.root / "venv"
        self.python = self.venv / "bin" / "python"

    def install_runtime(self, progress=print) -> dict:
        """Create the venv if missing and install the current runtime wheel;
        a no-op when that exact wheel is already installed."""
        wheel = build_runtime_wheel()
        stamp = self.venv / ".edgecompress-wheel"
        # the wheel's directory is named after the source tree's hash: a one-character change
        # to the runtime can keep the wheel's name and size
        ident = f"{wheel.parent.name}/{wheel.name}"
        if self.python.exists() and stamp.exists() and stamp.read_text() == ident:
            return {"wheel": wheel.name, "installed": False}
        if not self.python.exists():
            progress(f"creating the board venv at {self.venv}")
            venv.EnvBuilder(with_pip=True, clear=True).create(self.venv)
        progress("installing numpy + edgecompress-runtime into the board venv")
        r = subprocess.run([str(self.python), "-m", "pip", "install", "-q", "--force-reinstall",
                            str(wheel)], capture_output=True, text=True)
        if r.returncode != 0:
            raise DeployError(f"pip install on the board failed: {r.stderr.strip()[-800:]}")
        stamp.write_text(ident)
        return {"wheel": wheel.name, "installed": True}

    def packages(self) -> dict[str, str]:
        r = subprocess.run([str(self.python), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, check=True)
        return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}

    def bench(self, bundle, batches=(1, 64, 256), warmup=20, iters=200, backend="auto",
              timeout_s: float = 600, min_seconds: float = 0.0) -> dict:
        """Run ``edgecompress-runtime bench`` in the board venv; return its JSON."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            cmd = [str(self.venv / "bin" / "edgecompress-runtime"), "bench", str(bundle),
                   "--batch", ",".join(str(b) for b in batches), "--warmup", str(warmup),
                   "--iters", str(iters), "--backend", backend, "--json", str(out)] + \
                (["--min-seconds", str(min_seconds)] if min_seconds else [])
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise DeployError(f"bench on the local board did not finish within {timeout_s:.0f} s") from None
            if not out.exists():
                raise DeployError(f"bench on the local board failed: {(r.stderr or r.stdout).strip()[-800:]}")
            return json.loads(out.read_text())
