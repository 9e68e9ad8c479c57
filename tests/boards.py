"""Real OpenSSH boards for tests: each an ``sshd`` with its own host key, user,
authorized key and home, in its own network namespace with its own address
(10.200.x.y, a veth pair to the host) when the machine allows it, else on
127.0.0.1 with a free port. Torn down by PID. Faults are injected on the real
thing: killed sshd session processes, a link taken down, packet loss
(nftables), low bandwidth (tc tbf), a full disk (small tmpfs).

Used by tests/ and device_tests/ (see their conftest.py). Needs root for users,
namespaces and mounts; ``ensure_sshd()`` installs openssh-server with apt-get
when it is missing.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
_PREFIX = "ecb"
_live: list["Board"] = []
_lock = threading.Lock()


def _sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=check, capture_output=True, text=True, **kw)


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_sshd() -> str | None:
    """Path of sshd, installing openssh-server if missing; None when impossible."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    if not is_root() or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], env=env, capture_output=True,
                   timeout=900)
    return SSHD if os.access(SSHD, os.X_OK) else None


def ensure_tool(binary: str, package: str) -> bool:
    if shutil.which(binary):
        return True
    if not is_root() or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, timeout=900)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, timeout=900)
    return bool(shutil.which(binary))


_netns_ok: bool | None = None


def netns_available() -> bool:
    """Whether this machine lets us create network namespaces and veth pairs."""
    global _netns_ok
    if _netns_ok is None:
        _netns_ok = False
        if is_root() and shutil.which("ip"):
            name = f"{_PREFIX}probe{os.getpid()}"
            if _sh("ip", "netns", "add", name, check=False).returncode == 0:
                ok = _sh("ip", "link", "add", f"{name[:10]}h", "type", "veth", "peer", "name", f"{name[:10]}b",
                         check=False).returncode == 0
                _sh("ip", "link", "del", f"{name[:10]}h", check=False)
                _sh("ip", "netns", "del", name, check=False)
                _netns_ok = ok
    return _netns_ok


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc), deepest last."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _wait_port(host: str, port: int, netns: str | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(2)
                if s.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"sshd did not start listening on {host}:{port}")


def _wait_port_in(netns: str, host: str, port: int, timeout: float = 10.0) -> None:
    """Like _wait_port, seen from inside ``netns`` (for a board the host cannot reach)."""
    code = ("import socket,sys,time\n"
            "d=time.monotonic()+float(sys.argv[3])\n"
            "while time.monotonic()<d:\n"
            " try:\n"
            "  s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=0.5);s.settimeout(2)\n"
            "  if s.recv(8).startswith(b'SSH-'): sys.exit(0)\n"
            " except OSError: pass\n"
            " time.sleep(0.02)\n"
            "sys.exit(1)\n")
    r = _sh("ip", "netns", "exec", netns, sys.executable, "-c", code, host, port, timeout, check=False,
            timeout=timeout + 10)
    if r.returncode != 0:
        raise RuntimeError(f"sshd did not start listening on {host}:{port} (seen from {netns})")


@dataclass
class Board:
    """One sshd board. ``start()`` it, use ``spec``/``device()``/``settings()``, ``stop()`` it."""

    root: Path
    index: int
    netns: str | None = None
    host: str = "127.0.0.1"
    port: int = 22
    user: str = ""
    password_only: bool = False
    workdir_tmpfs_mb: int | None = None
    sshd_pid: int | None = None
    extra_config: str = ""
    loopback: bool = False           # force 127.0.0.1 even where namespaces work
    behind: "Board | None" = None    # a namespace board reachable only from this (jump) board's namespace
    _faults: list = field(default_factory=list)

    # -- paths
    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def workdir(self) -> Path:
        return self.home / ".edgecompress"

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def host_key_pub(self) -> str:
        return (self.root / "host_key.pub").read_text().strip()

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        kt, b64 = self.host_key_pub.split()[:2]
        return f"{name} {kt} {b64}\n"

    def device(self, name: str | None = None, **kw):
        from edgecompress.deploy.inventory import Device
        return Device(name=name or f"board{self.index}", host=self.host, port=self.port, user=self.user,
                      identity_file=str(self.client_key), **kw)

    def settings(self, **kw):
        from edgecompress.deploy.connection import SSHSettings
        base = dict(known_hosts=(str(self.known_hosts),), ssh_config="", allow_agent=False, look_for_keys=False,
                    connect_timeout=5, banner_timeout=5, auth_timeout=5, channel_timeout=10, keepalive=1,
                    tcp_user_timeout=4)
        base.update(kw)
        return SSHSettings(**base)

    # -- lifecycle
    def start(self) -> "Board":
        try:
            return self._start()
        except BaseException:
            # a half-started board (user, namespace, sshd) must not outlive us
            pidfile = self.root / "sshd.pid"
            if self.sshd_pid is None and pidfile.exists() and pidfile.read_text().strip().isdigit():
                self.sshd_pid = int(pidfile.read_text())
            self.stop()
            raise

    def _start(self) -> "Board":
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.user = f"{_PREFIX}{self.index}p{os.getpid()}"
        if is_root():
            if _sh("useradd", "-M", "-d", self.home, "-s", "/bin/bash", self.user, check=False).returncode:
                self.user += f"x{int(time.time()) % 100000}"   # a leftover of a crashed run
                _sh("useradd", "-M", "-d", self.home, "-s", "/bin/bash", self.user)
            self._created_user = True     # only a user we created is ever deleted (or has processes killed)
            _sh("usermod", "-p", "*", self.user)   # no password, but not "locked" (UsePAM no refuses locked)
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
        self.home.mkdir(mode=0o755, exist_ok=True)
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"board{self.index}-host", "-f", self.root / "host_key")
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecompress-tests", "-f", self.client_key)
        shutil.copy(self.client_key.with_suffix(".pub"), ssh / "authorized_keys")
        os.chmod(ssh / "authorized_keys", 0o600)
        if self.workdir_tmpfs_mb:
            self.workdir.mkdir(mode=0o755, exist_ok=True)
            u = pwd.getpwnam(self.user)
            _sh("mount", "-t", "tmpfs", "-o", f"size={self.workdir_tmpfs_mb}m,uid={u.pw_uid},gid={u.pw_gid},mode=0755",
                "tmpfs", self.workdir)
        if is_root():
            u = pwd.getpwnam(self.user)
            for p in (self.home, ssh, ssh / "authorized_keys"):
                os.chown(p, u.pw_uid, u.pw_gid)
        if self.netns is None and not self.loopback and netns_available():
            self._make_netns()
        if self.netns is None:
            self.host, self.port = "127.0.0.1", free_port()
        self.known_hosts.write_text(self.known_hosts_line())
        if is_root():
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # privilege separation directory
        self._write_config()
        cmd = [SSHD, "-f", self.root / "sshd_config", "-E", self.root / "sshd.log"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        r = _sh(*cmd, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"sshd failed to start: {r.stderr} {self.log()}")
        deadline = time.monotonic() + 5
        pidfile = self.root / "sshd.pid"
        while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text().strip().isdigit()):
            time.sleep(0.01)
        self.sshd_pid = int(pidfile.read_text())
        self._join_cgroup()
        with _lock:
            _live.append(self)
        if self.behind is not None:
            _wait_port_in(self.behind.netns, self.host, self.port)
        else:
            _wait_port(self.host, self.port, self.netns)
        return self

    # CPU accounting: the board's sshd (and so every session and command it starts) in its own
    # cgroup (v1 cpuacct or v2), so benchmarks can say how much CPU a board's work cost.
    def _join_cgroup(self) -> None:
        self.cgroup = None
        for base, usage in (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"), ("/sys/fs/cgroup/unified", "cpu.stat")):
            if is_root() and os.path.isdir(base):
                path = Path(base) / f"edgecompress-{self.user}"
                try:
                    path.mkdir(exist_ok=True)
                    (path / "cgroup.procs").write_text(str(self.sshd_pid))
                    if (path / usage).exists():
                        self.cgroup = (path, usage)
                        return
                except OSError:
                    with contextlib.suppress(OSError):
                        path.rmdir()

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the board's sshd and everything it ran."""
        if not getattr(self, "cgroup", None):
            return None
        path, usage = self.cgroup
        text = (path / usage).read_text()
        if usage == "cpuacct.usage":
            return int(text) / 1e9
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6

    def _make_netns(self) -> None:
        if self.behind is not None:
            return self._make_netns_behind()
        # claim a /30 in 10.200.0.0/16 by creating the namespace (fails if another run holds it)
        base = (os.getpid() * 7 + self.index * 131) % 16000 + 1
        for k in range(base, base + 16000):
            n = k % 16000 + 1
            name = f"{_PREFIX}{n}"
            if _sh("ip", "netns", "add", name, check=False).returncode != 0:
                continue
            h, b = f"{_PREFIX}{n}h", f"{_PREFIX}{n}b"
            if _sh("ip", "link", "add", h, "type", "veth", "peer", "name", b, check=False).returncode != 0:
                _sh("ip", "netns", "del", name, check=False)
                continue
            a = n * 4
            hostip, boardip = f"10.200.{a // 256}.{a % 256 + 1}", f"10.200.{a // 256}.{a % 256 + 2}"
            _sh("ip", "link", "set", b, "netns", name)
            _sh("ip", "addr", "add", f"{hostip}/30", "dev", h)
            _sh("ip", "link", "set", h, "up")
            _sh("ip", "-n", name, "addr", "add", f"{boardip}/30", "dev", b)
            _sh("ip", "-n", name, "link", "set", b, "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")
            self.netns, self.veth_host, self.veth_board = name, h, b
            self.host, self.port = boardip, 22
            return

    def _make_netns_behind(self) -> None:
        """Own namespace B with a veth pair into the jump board's namespace A (10.201.x.y/30):
        A reaches B, the host has no link or route to B."""
        jump = self.behind
        assert jump.netns, "a board behind a jump board needs the jump board in a namespace"
        base = (os.getpid() * 11 + self.index * 131) % 16000 + 1
        for k in range(base, base + 16000):
            n = k % 16000 + 1
            name = f"{_PREFIX}{n}"
            if _sh("ip", "netns", "add", name, check=False).returncode != 0:
                continue
            a_end, b_end = f"{_PREFIX}{n}j", f"{_PREFIX}{n}b"
            if _sh("ip", "link", "add", a_end, "type", "veth", "peer", "name", b_end, check=False).returncode:
                _sh("ip", "netns", "del", name, check=False)
                continue
            a = n * 4
            jumpip, boardip = f"10.201.{a // 256}.{a % 256 + 1}", f"10.201.{a // 256}.{a % 256 + 2}"
            _sh("ip", "link", "set", a_end, "netns", jump.netns)
            _sh("ip", "link", "set", b_end, "netns", name)
            _sh("ip", "-n", jump.netns, "addr", "add", f"{jumpip}/30", "dev", a_end)
            _sh("ip", "-n", jump.netns, "link", "set", a_end, "up")
            _sh("ip", "-n", name, "addr", "add", f"{boardip}/30", "dev", b_end)
            _sh("ip", "-n", name, "link", "set", b_end, "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")
            self.netns, self.veth_board = name, b_end   # no veth_host: nothing on the host's side
            self.host, self.port = boardip, 22
            return
        raise RuntimeError("no free namespace for a board behind a jump board")

    def _write_config(self) -> None:
        cfg = f"""
Port {self.port}
ListenAddress {self.host}
HostKey {self.root / 'host_key'}
PidFile {self.root / 'sshd.pid'}
PubkeyAuthentication {'no' if self.password_only else 'yes'}
PasswordAuthentication {'yes' if self.password_only else 'no'}
KbdInteractiveAuthentication no
UsePAM no
AllowUsers {self.user}
Subsystem sftp internal-sftp
ClientAliveInterval 2
ClientAliveCountMax 2
MaxStartups 64:30:128
MaxSessions 64
LogLevel INFO
{'StrictModes no' if not is_root() else ''}
{self.extra_config}
"""
        (self.root / "sshd_config").write_text(cfg)
        r = _sh(SSHD, "-t", "-f", self.root / "sshd_config", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"sshd config rejected: {r.stderr}")

    def log(self) -> str:
        try:
            return (self.root / "sshd.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.clear_faults()
        if self.sshd_pid:
            for pid in [self.sshd_pid] + _children(self.sshd_pid)[::-1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.sshd_pid = None
        self._kill_user_processes()
        if getattr(self, "cgroup", None):
            for _ in range(50):
                try:
                    self.cgroup[0].rmdir()
                    break
                except OSError:
                    time.sleep(0.02)   # killed processes are still exiting
        if self.workdir_tmpfs_mb:
            _sh("umount", "-l", self.workdir, check=False)
        if self.netns:
            if getattr(self, "veth_host", None):
                _sh("ip", "link", "del", self.veth_host, check=False)
            _sh("ip", "netns", "del", self.netns, check=False)
            self.netns = None
        if is_root() and getattr(self, "_created_user", False):
            _sh("userdel", self.user, check=False)
            self._created_user = False
        shutil.rmtree(self.root, ignore_errors=True)
        with _lock:
            if self in _live:
                _live.remove(self)

    def _kill_user_processes(self) -> None:
        """Processes still running as this board's own user (we created that user)."""
        if not is_root() or not getattr(self, "_created_user", False):
            return
        try:
            uid = pwd.getpwnam(self.user).pw_uid
        except KeyError:
            return
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                with contextlib.suppress(OSError):
                    if p.stat().st_uid == uid:
                        os.kill(int(p.name), signal.SIGKILL)

    # -- faults
    def kill_sessions(self) -> list[int]:
        """SIGKILL every sshd session process (and their children), keeping the listener."""
        pids = _children(self.sshd_pid) if self.sshd_pid else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def link(self, up: bool) -> None:
        assert self.netns, "link faults need a namespace board"
        _sh("ip", "-n", self.netns, "link", "set", self.veth_board, "up" if up else "down")
        if up:
            self._link_is_back()
        else:
            self._faults.append(("link",))

    def _link_is_back(self) -> None:
        # While the link was down the host's ARP entry for the board went FAILED; until it ages out the next
        # connect gets "No route to host". Forget it and wait until sshd answers again.
        if getattr(self, "veth_host", None):        # boards behind another namespace are not seen from here
            _sh("ip", "neigh", "flush", "dev", self.veth_host, check=False)
            _wait_port(self.host, self.port, None)

    def loss(self, percent: int) -> None:
        assert self.netns
        ns = ["ip", "netns", "exec", self.netns, "nft"]
        _sh(*ns, "add", "table", "inet", "chaos")
        _sh(*ns, "add", "chain", "inet", "chaos", "input", "{ type filter hook input priority 0; }")
        _sh(*ns, "add", "rule", "inet", "chaos", "input", "tcp", "dport", str(self.port), "numgen", "random",
            "mod", "100", "<", str(percent), "drop")
        self._faults.append(("nft",))

    def rate(self, rate: str = "8mbit") -> None:
        assert self.netns
        _sh("ip", "netns", "exec", self.netns, "tc", "qdisc", "replace", "dev", self.veth_board, "root", "tbf",
            "rate", rate, "burst", "32kbit", "latency", "400ms")
        _sh("tc", "qdisc", "replace", "dev", self.veth_host, "root", "tbf", "rate", rate, "burst", "32kbit",
            "latency", "400ms")
        self._faults.append(("tc",))

    def clear_faults(self) -> None:
        for f in self._faults[::-1]:
            if f[0] == "link" and self.netns:
                _sh("ip", "-n", self.netns, "link", "set", self.veth_board, "up", check=False)
                self._link_is_back()
            elif f[0] == "nft" and self.netns:
                _sh("ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", "chaos", check=False)
            elif f[0] == "tc" and self.netns:
                _sh("ip", "netns", "exec", self.netns, "tc", "qdisc", "del", "dev", self.veth_board, "root",
                    check=False)
                _sh("tc", "qdisc", "del", "dev", self.veth_host, "root", check=False)
        self._faults.clear()

    def fill_disk(self, leave_bytes: int) -> Path:
        """Fill the tmpfs work dir until ``leave_bytes`` remain (needs workdir_tmpfs_mb)."""
        st = os.statvfs(self.workdir)
        free = st.f_bavail * st.f_frsize
        filler = self.workdir / ".filler"
        _sh("fallocate", "-l", str(max(0, free - leave_bytes)), filler)
        return filler

    # -- looking at the board from the host (as root; the board's files are local files)
    def board_python(self, *args, env=None, timeout=60) -> subprocess.CompletedProcess:
        """Run the board's current runtime as the board user (like an app on the board would)."""
        py = self.workdir / "current" / "venv" / "bin" / "python"
        e = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", **(env or {})}
        cmd = [str(py), *map(str, args)]
        if is_root():
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, cwd="/")


_counter = itertools.count(1)


def start_board(index: int | None = None, **kw) -> Board:
    """Start a board; ``index`` names its user (default: the next free number in this process)."""
    index = next(_counter) if index is None else index
    root = Path(tempfile.mkdtemp(prefix=f"ecboard{index}-", dir="/tmp"))
    return Board(root=root, index=index, **kw).start()


@atexit.register
def _stop_all() -> None:
    for b in list(_live):
        with contextlib.suppress(Exception):
            b.stop()


class SilentListener:
    """A TCP listener on loopback that accepts and never says a word (no SSH banner)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def close(self):
        self._stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


# ---------------------------------------------------------------------------- bundles for deploy tests

def start_bastion_pair(index: int | None = None) -> tuple[Board, Board]:
    """A jump board A (own namespace, reachable from the host) and a target board B in a
    namespace reachable only from A. A also accepts B's client key, and B's known_hosts
    file holds both host keys, so ``b.device()`` / ``b.settings()`` work through A."""
    jump = start_board(index)
    try:
        target = start_board(behind=jump)
    except BaseException:
        jump.stop()
        raise
    auth = jump.home / ".ssh" / "authorized_keys"
    with open(auth, "a") as f:
        f.write(target.client_key.with_suffix(".pub").read_text())
    target.known_hosts.write_text(jump.known_hosts_line() + target.known_hosts_line())
    return jump, target


def make_bundles(out_dir: Path) -> dict[str, Path]:
    """Two small, different, valid bundles (numpy only, no app artifacts): fp32 and int8."""
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.train import train
    out_dir = Path(out_dir)
    data = synthetic_ctr(n=6000, vocab_sizes=(4000, 1500, 600, 100), dense_dim=4, seed=5)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=16, bottom_mlp=(16,), top_mlp=(16,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    fp32 = ec.compile(model, target="local", data=te, output=out_dir / "fp32.ecb", plan=[], formats=[],
                      progress=False)
    try:
        from edgecompress.passes import DEFAULT_PLAN
        int8 = ec.compile(model, target="local", data=te, output=out_dir / "int8.ecb", plan=list(DEFAULT_PLAN),
                          formats=[], progress=False)
    except Exception:  # the planner is moving; any second valid bundle will do
        torch.manual_seed(1)
        other = model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,))
        int8 = ec.compile(other, target="local", data=te, output=out_dir / "int8.ecb", plan=[], formats=[],
                          progress=False)
    return {"fp32": Path(fp32.path), "int8": Path(int8.path)}


def unique_bundle(src: Path, dst: Path, nonce: str) -> Path:
    """A valid copy of ``src`` with different bytes (a nonce in its manifest), so that
    its upload is not skipped by the hash check."""
    from edgecompress_runtime.bundle import read_bundle
    from edgecompress_runtime.bundle_writer import write_bundle
    b = read_bundle(src)
    manifest = dict(b.manifest)
    manifest.pop("members", None)
    manifest["test_nonce"] = nonce
    write_bundle(dst, manifest, b.members)
    return Path(dst)


# ---------------------------------------------------------------------------- pytest fixtures
# tests/conftest.py and device_tests/conftest.py import these.

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_signing_keys(tmp_path_factory):
    """Never sign with (or write) the developer's real signing key during tests."""
    old = os.environ.get("EDGECOMPRESS_KEYS_DIR")
    os.environ["EDGECOMPRESS_KEYS_DIR"] = str(tmp_path_factory.mktemp("no-signing-key"))
    yield
    if old is None:
        os.environ.pop("EDGECOMPRESS_KEYS_DIR", None)
    else:
        os.environ["EDGECOMPRESS_KEYS_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _pinned_runtime_wheel(tmp_path_factory):
    """Build the runtime wheel once per session and deploy that one everywhere, so tests that
    expect "nothing to upload" hold even while someone edits runtime/ during the run."""
    import edgecompress.deploy.wheels as wheels
    try:
        src = wheels.build_runtime_wheel()
    except Exception:   # no runtime sources here: let deploys fail on their own terms
        yield
        return
    pinned = tmp_path_factory.mktemp("runtime-wheel") / src.name
    shutil.copy(src, pinned)
    orig = wheels.build_runtime_wheel
    wheels.build_runtime_wheel = lambda out_dir=None: pinned
    yield pinned
    wheels.build_runtime_wheel = orig


@pytest.fixture(scope="session")
def sshd():
    path = ensure_sshd()
    if path is None:
        pytest.skip("OpenSSH sshd is not installed and cannot be installed here (needs root and apt-get)")
    if not is_root():
        pytest.skip("test boards need root (a user, a namespace and mounts per board)")
    return path


@pytest.fixture(scope="session")
def deploy_bundles(tmp_path_factory):
    return make_bundles(tmp_path_factory.mktemp("deploy-bundles"))


@pytest.fixture()
def board_factory(sshd):
    """Start boards on demand (``board_factory(netns=..., password_only=..., workdir_tmpfs_mb=...)``);
    all stopped at the end of the test."""
    started = []

    def start(**kw):
        b = start_board(**kw)
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


@pytest.fixture(scope="session")
def board(sshd):
    """A session-long board (own namespace and address where possible)."""
    b = start_board()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def installed_board(board, deploy_bundles):
    """``board`` with the runtime and the fp32 bundle deployed: the "previous install"
    every fault test checks is still working afterwards."""
    from edgecompress.deploy.ssh_board import SSHBoard
    with SSHBoard(board.device(), board.settings(), sign=False) as sb:
        rep = sb.deploy(deploy_bundles["fp32"])
    return {"board": board, "deploy": rep, "bundle": deploy_bundles["fp32"]}


def make_wheel(out_dir: Path, name: str, version: str) -> Path:
    """A tiny pure-Python wheel (one module): a cheap way to make a new runtime version."""
    import base64
    import hashlib
    import zipfile
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n".encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return path


def board_state(board: Board) -> dict:
    """What is in the board's work dir, checked from the host (as root):
    complete versions only, a working ``current``, every stored file matching its hash."""
    import hashlib
    w = board.workdir
    versions = sorted(p.name for p in (w / "versions").iterdir()) if (w / "versions").is_dir() else []
    incomplete = [v for v in versions if not (w / "versions" / v / "version.json").is_file()]
    bad = []
    for sub in ("bundles", "blobs"):
        for f in (w / sub).iterdir() if (w / sub).is_dir() else []:
            if hashlib.sha256(f.read_bytes()).hexdigest() != f.name.split(".")[0]:
                bad.append(f"{sub}/{f.name}")
    cur = w / "current"
    staging = sorted(p.name for p in (w / ".incoming").iterdir()) if (w / ".incoming").is_dir() else []
    return {"versions": versions, "incomplete": incomplete, "corrupt": bad,
            "current": os.readlink(cur) if cur.is_symlink() else None, "staging": staging,
            "stray": sorted(p.name for p in w.iterdir() if p.name not in
                            {"versions", "bundles", "blobs", "current", "bin", ".incoming", ".filler", ".lock",
                             "pins"})
            if w.is_dir() else []}


def assert_previous_install_works(board: Board, bundle_sha: str) -> dict:
    """The fault left the board as it was: complete versions, no corrupt or partial files in
    the install directories, and the current runtime still verifies a bundle deployed before."""
    st = board_state(board)
    assert st["current"] and st["current"].split("/")[-1] in st["versions"], st
    assert not st["incomplete"] and not st["corrupt"] and not st["stray"], st
    r = board.board_python("-m", "edgecompress_runtime", "verify", board.workdir / "bundles" / f"{bundle_sha}.ecb")
    assert r.returncode == 0, r.stderr
    assert '"ok": true' in r.stdout
    return st
