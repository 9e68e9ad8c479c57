"""Python side of ``arm64.sh``: the emulated aarch64 board (Debian bookworm arm64
under qemu-user, its sshd in network namespace ``eca64-N`` at 10.201.N.2).

    from arm64_board import available, start
    ok, why = available()            # (False, reason) when not root / no binfmt / no namespaces
    board = start(0)                 # builds the cached userland first if needed (cold: ~5-9 min)
    dev, settings = board.device(), board.settings()
    ...
    board.stop()                     # sshd and chrooted processes by PID, unmounts, deletes the namespace

Timings taken on this board describe the emulator (qemu-user), never an aarch64
device: label them ``emulated`` wherever they are shown.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "arm64.sh"
CANNOT = 77
# generic-aarch64 lists manylinux_2_28/2_27/2014 aarch64 tags: what numpy and ai-edge-litert publish
TARGET = "generic-aarch64"


def _run(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def available() -> tuple[bool, str]:
    """Whether this machine can run the board: (True, "") or (False, the reason)."""
    if os.geteuid() != 0:
        return False, "the emulated arm64 board needs root (debootstrap, chroot, binfmt_misc, network namespaces)"
    r = _run("check", timeout=900)
    if r.returncode == 0:
        return True, ""
    why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
    return False, why.removeprefix("arm64.sh: ")


def cached_tarball() -> Path | None:
    cache = Path(os.environ.get("EDGECOMPRESS_BOARD_CACHE", Path.home() / ".cache/edgecompress/boards"))
    p = cache / "arm64-bookworm.tar.gz"
    return p if p.is_file() else None


def build() -> Path:
    r = _run("build", timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"arm64.sh build failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
    return Path(r.stdout.strip().splitlines()[-1])


@dataclass
class Arm64Board:
    index: int
    info: dict

    @property
    def host(self) -> str:
        return self.info["host"]

    @property
    def spec(self) -> str:
        return f"{self.info['user']}@{self.info['host']}"

    def device(self, name: str | None = None, **kw):
        from edgecompress.deploy.inventory import Device
        kw.setdefault("target", TARGET)
        return Device(name=name or self.info["name"], host=self.info["host"], port=self.info["port"],
                      user=self.info["user"], identity_file=self.info["identity_file"], **kw)

    def settings(self, **kw):
        from edgecompress.deploy.connection import SSHSettings
        base = dict(known_hosts=(self.info["known_hosts"],), ssh_config="", allow_agent=False, look_for_keys=False,
                    connect_timeout=10, banner_timeout=10, auth_timeout=10, channel_timeout=120)
        base.update(kw)
        return SSHSettings(**base)

    def stop(self) -> None:
        _run("stop", self.index, timeout=120)


def start(index: int | str = "auto") -> Arm64Board:
    r = _run("start", index, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"arm64.sh start failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
    path = Path(r.stdout.strip().splitlines()[-1])
    info = json.loads(path.read_text())
    return Arm64Board(index=int(path.parent.name), info=info)
