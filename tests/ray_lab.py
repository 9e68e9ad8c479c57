"""A Ray lab on this machine for the farm's Ray tests and benchmark (``farm --ray``): a head and lab
hosts, each in its own network namespace, each lab host reaching its own real sshd boards
(tests/boards.py) that no other node can reach."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from boards import Board, _sh, start_board


class _Host:
    """A lab host's network namespace (boards behind it need only ``.netns``)."""

    def __init__(self, netns: str, ip: str):
        self.netns, self.ip = netns, ip


class RayLab:
    """A Ray lab on this machine, each part in its own network namespace: the head (and the
    farm driver) in ``hosts[0]`` with a bridge; each lab host joined to that bridge by a veth
    pair; each lab host's sshd boards in namespaces reachable only from that host (no
    forwarding), so no other node can reach them. Ray listens on all addresses -- of
    namespaces created here. ``layout``: one list of target profiles per lab host (its
    boards). Stopped by the PIDs in each namespace (never ``ray stop``: that stops every Ray
    on the machine)."""

    def __init__(self, root: Path, layout: list[list[str]], env: dict | None = None, simulated: bool = False):
        self.root, self.layout, self.simulated = Path(root), layout, simulated   # simulated: no sshd boards
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), self.env.get(
            "PYTHONPATH", "")]).rstrip(os.pathsep)
        self.hosts: list[_Host] = []          # [head, lab host 1, ...]
        self.boards: dict[str, Board] = {}     # name -> board
        self.board_host: dict[str, int] = {}   # name -> index of the lab host reaching it
        self.port = 6379

    @property
    def address(self) -> str:
        return f"{self.hosts[0].ip}:{self.port}"

    def _net(self) -> None:
        tag = os.getpid() % 100000
        sub = 210 + os.getpid() % 40
        for i in range(len(self.layout) + 1):
            ns = f"ecl{tag}n{i}"
            _sh("ip", "netns", "add", ns)
            self.hosts.append(_Host(ns, f"10.{sub}.{tag % 250}.{i + 1}"))
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        head = self.hosts[0]
        _sh("ip", "-n", head.netns, "link", "add", "eclbr", "type", "bridge")
        _sh("ip", "-n", head.netns, "addr", "add", f"{head.ip}/24", "dev", "eclbr")
        _sh("ip", "-n", head.netns, "link", "set", "eclbr", "up")
        for i, h in enumerate(self.hosts[1:], 1):
            a, b = f"ecl{tag}a{i}", f"ecl{tag}b{i}"
            _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _sh("ip", "link", "set", a, "netns", head.netns)
            _sh("ip", "link", "set", b, "netns", h.netns)
            _sh("ip", "-n", head.netns, "link", "set", a, "master", "eclbr")
            _sh("ip", "-n", head.netns, "link", "set", a, "up")
            _sh("ip", "-n", h.netns, "addr", "add", f"{h.ip}/24", "dev", b)
            _sh("ip", "-n", h.netns, "link", "set", b, "up")

    def _inventory(self, i: int) -> Path:
        mine = [(n, b) for n, b in self.boards.items() if self.board_host[n] == i]
        if self.simulated:
            path = self.root / f"host{i}.toml"
            path.write_text("".join(f'[[device]]\nname = "{n}"\nhost = "{b.host}"\ntarget = "{b.target}"\n\n'
                                    for n, b in mine))
            return path
        text = f"""[ssh]
known_hosts = [{', '.join(f'"{b.known_hosts}"' for _, b in mine)}]
ssh_config = ""
allow_agent = false
look_for_keys = false
connect_timeout = 3
banner_timeout = 3
auth_timeout = 5
tcp_user_timeout = 5
"""
        for n, b in mine:
            text += (f'\n[[device]]\nname = "{n}"\nhost = "{b.host}"\nport = {b.port}\nuser = "{b.user}"\n'
                     f'identity_file = "{b.client_key}"\ntarget = "{b.target}"\n')
        path = self.root / f"host{i}.toml"
        path.write_text(text)
        return path

    def start(self) -> "RayLab":
        try:
            self._net()
            for i, kinds in enumerate(self.layout, 1):
                for k, kind in enumerate(kinds):
                    b = (_Host(None, f"sim{i}-{k}") if self.simulated else start_board(behind=self.hosts[i]))
                    b.host = b.ip if self.simulated else b.host
                    b.target = kind
                    name = f"{kind}-{i}{'abcdefgh'[k]}"
                    self.boards[name], self.board_host[name] = b, i
            for i, h in enumerate(self.hosts):     # one at a time: 2 cores cannot start three raylets at once
                cmd = ["lab", "start", "--node-ip", h.ip, "--object-store-mb", "80"]
                cmd += ["--inventory", self._inventory(i)] if i else []     # the head has no boards
                cmd += ["--port", self.port] if i == 0 else ["--address", self.address]
                r = self.cli(i, *cmd, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError(f"lab start on host {i} failed: {r.stdout} {r.stderr}")
            return self
        except BaseException:
            self.stop()
            raise

    def command(self, i: int, *args) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[i].netns, sys.executable, "-m", "edgecompress.cli",
                *[str(a) for a in args]]

    def cli(self, i: int, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        """``edgecompress ARGS`` on lab host ``i`` (0: the head, where the farm driver runs)."""
        return subprocess.run(self.command(i, *args), capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=self.root)

    def popen(self, i: int, *args, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(i, *args), env=self.env, cwd=self.root, text=True, **kw)

    def kill_host(self, i: int) -> list[int]:
        """SIGKILL every process of lab host ``i`` (its raylet, workers, ...); its boards stay up."""
        pids = [int(p) for p in _sh("ip", "netns", "pids", self.hosts[i].netns).stdout.split()]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        for _ in range(5):          # every host at once; again for what was starting meanwhile
            if not sum(len(self.kill_host(i)) for i in range(len(self.hosts))):
                break
            time.sleep(0.2)
        for b in self.boards.values():
            if not self.simulated:
                b.stop()
        for h in self.hosts:
            _sh("ip", "netns", "del", h.netns, check=False)
        self.hosts.clear()
