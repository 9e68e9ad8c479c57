"""One SSH connection to a board. The only module that imports paramiko.

Modelled on Fabric's ``Connection``: the constructor only records where to go
(``Connection("pi@10.0.0.7:22")``), connecting happens on first use or with
``open()``, and ``with Connection(...) as c:`` closes it. Settings that
paramiko's ``SSHClient.connect`` takes and we don't name pass through
``connect_kwargs``.

Safety by default:
- host keys: ``known_hosts`` files + a reject policy; an unknown host is an
  error unless ``trust_on_first_use`` is set, which records the key it saw;
- auth: keys and the ssh-agent only; a password is used only with
  ``allow_password`` (and never logged);
- time: connect, banner, auth and channel timeouts; TCP keepalive, an SSH
  keepalive and ``TCP_USER_TIMEOUT`` on a socket we make ourselves, so a dead
  link fails within bounded time instead of hanging; remote commands run under
  the board's ``timeout`` so a hung one is stopped there too;
- bastions: ``ProxyJump`` hops (``SSHSettings.proxy_jump``, a device's
  ``proxy_jump``, or ``ProxyJump`` in ~/.ssh/config) are opened one after the
  other, each through a ``direct-tcpip`` channel of the previous one, each with
  the same known_hosts, host-key policy and timeouts as the board; an error
  names the hop ("jump host 2 of 2 (user@host:22) on the way to ...");
  ``close()`` closes every hop. ``ProxyCommand`` is not supported (a warning);
- quoting: ``run([argv...])`` quotes every argument with ``shlex.quote``; shell
  snippets go through ``script(code, *args)`` with the data as positional
  parameters, never pasted into the code.

Every failure comes out as one of the ``edgecompress.errors`` deploy errors
(UnreachableError, NoBannerError, UnknownHostError, HostKeyError, AuthError,
ConnectionLostError, RemoteTimeoutError, RemoteCommandError) with a message
that says what happened and what to do.

Why this module is long: it is the one module that imports paramiko (so that no
other module depends on the SSH library's API), and paramiko's pieces are
intertwined: the ssh_config lookup, the host-key policies and the transfers all
work on the same client and transport the ``Connection`` owns. Split by job,
each part would import paramiko again; the sections below follow the path of a
connection instead (settings and specs, host keys, connecting through jump hosts,
commands, files).
"""
from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from ..errors import (AuthError, ConnectionLostError, DeployError, HostKeyError, InventoryError,
                      NoBannerError, RemoteCommandError, RemoteTimeoutError, UnknownHostError,
                      UnreachableError)

log = logging.getLogger("edgecompress.deploy")
# paramiko logs the tracebacks of its transport thread (e.g. "Error reading SSH protocol banner")
# at ERROR; without a handler Python prints them to stderr. We report those failures ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

PASSWORD_ENV = "EDGECOMPRESS_SSH_PASSWORD"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_known_hosts_lock = threading.Lock()


def q(arg) -> str:
    """Quote one argument for the remote shell."""
    return shlex.quote(str(arg))


@dataclass(frozen=True)
class SSHSettings:
    """How to connect. Times are seconds. ``None`` file paths mean the usual ones."""

    known_hosts: tuple[str, ...] | None = None   # default: ~/.ssh/known_hosts (+ /etc/ssh/ssh_known_hosts)
    trust_on_first_use: bool = False             # record unknown host keys instead of refusing
    allow_password: bool = False
    password: str | None = field(default=None, repr=False)   # else $EDGECOMPRESS_SSH_PASSWORD
    identity_files: tuple[str, ...] = ()
    allow_agent: bool = True
    look_for_keys: bool = True                    # ~/.ssh/id_* when no identity file is given
    ssh_config: str | None = None                 # default ~/.ssh/config; "" to ignore it
    connect_timeout: float = 10.0                 # TCP connect (and SSH key exchange)
    banner_timeout: float = 10.0                  # waiting for "SSH-2.0-..." after TCP connect
    auth_timeout: float = 15.0
    channel_timeout: float = 30.0                 # opening a channel; one SFTP/exec read
    command_timeout: float = 600.0                # default for run() without its own timeout
    keepalive: float = 5.0                        # SSH keepalive packet every N idle seconds
    tcp_user_timeout: float = 20.0                # unacknowledged data for N s kills the link
    proxy_jump: str | None = None                 # "[user@]host[:port],..." hops, or "none"; else ssh config

    def with_(self, **changes) -> "SSHSettings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def split_spec(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``) -> (user, host, port)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InventoryError(f"a device must be NAME or user@host[:port], got {spec!r}")
    s = spec.strip()
    user = None
    if "@" in s:
        user, _, s = s.rpartition("@")
        if not user:
            raise InventoryError(f"{spec!r}: empty user name before '@'")
    port = None
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise InventoryError(f"{spec!r}: missing ']' after an IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise InventoryError(f"{spec!r}: expected ':PORT' after ']'")
            port = rest[1:]
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
    else:
        host = s  # a bare IPv6 address or a plain host name
    if not host or any(c.isspace() for c in host):
        raise InventoryError(f"{spec!r}: missing or invalid host")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InventoryError(f"{spec!r}: port must be a number from 1 to 65535, got {port!r}")
        port = int(port)
    return user, host, port


def parse_jumps(value, where: str = "ProxyJump") -> tuple[str, ...]:
    """``ProxyJump`` hops: "a,b@c:2222" (or a list) -> ("a", "b@c:2222"); "none" or empty -> ()."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    if len(items) == 1 and str(items[0]).strip().lower() in ("", "none"):
        return ()
    hops = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InventoryError(f"{where}: empty jump host in {value!r}; write [user@]host[:port],...")
        hop = item.strip()
        hop = hop[len("ssh://"):] if hop.startswith("ssh://") else hop
        try:
            split_spec(hop)
        except InventoryError as e:
            raise InventoryError(f"{where}: jump host {e}") from None
        hops.append(hop)
    return tuple(hops)


def ssh_config_lookup(alias: str, path: str | None = None) -> dict:
    """What ``~/.ssh/config`` (or ``path``) says about ``alias`` (paramiko.SSHConfig);
    {} when there is no config file. Keys are lower-case ssh_config options."""
    if path == "":
        return {}
    p = Path(path).expanduser() if path else Path.home() / ".ssh" / "config"
    if not p.is_file():
        if path:
            raise InventoryError(f"ssh config file {p} does not exist")
        return {}
    try:
        cfg = paramiko.SSHConfig.from_path(str(p))
        found = cfg.lookup(alias)
    except Exception as e:  # paramiko raises several kinds for a bad config
        raise InventoryError(f"cannot read ssh config {p}: {e}") from None
    return dict(found)


def fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Reject(paramiko.MissingHostKeyPolicy):
    def __init__(self, conn: "Connection"):
        self.conn = conn

    def missing_host_key(self, client, hostname, key):
        c = self.conn
        files = ", ".join(c.known_hosts_files) or "(no known_hosts file)"
        port_opt = f"-p {c.port} " if c.port != 22 else ""
        scan = f"ssh-keyscan {port_opt}{c.host}"
        if c._via is not None:   # ssh-keyscan cannot go through jump hosts: run it on the last one
            hops = _path_to(c._via)
            jumps = f"-J {','.join(h.address for h in hops[:-1])} " if len(hops) > 1 else ""
            scan = f"ssh {jumps}-p {hops[-1].port} {hops[-1].user}@{hops[-1].host} {scan}"
        raise UnknownHostError(
            f"{c.label}: host {hostname} is not in known_hosts ({files}); it offered "
            f"{key.get_name()} key {fingerprint(key)}. Check that fingerprint on the board "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_{_short_type(key)}_key.pub), then record it with "
            f"`{scan} >> {c.user_known_hosts}` or rerun with --trust-on-first-use")


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host's key and append it to the user's known_hosts file."""

    def __init__(self, conn: "Connection"):
        self.conn = conn

    def missing_host_key(self, client, hostname, key):
        path = Path(self.conn.user_known_hosts)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # other edgecompress processes append too
                f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.conn.recorded_host_key = fingerprint(key)
        log.warning("%s: trusting %s on first use: recorded %s key %s in %s", self.conn.label, hostname,
                    key.get_name(), fingerprint(key), path)


def _path_to(conn: "Connection") -> list["Connection"]:
    """The hops from here to ``conn`` (itself included), first hop first."""
    out = [conn]
    while out[0]._via is not None:
        out.insert(0, out[0]._via)
    return out


def _short_type(key) -> str:
    name = key.get_name()
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(name, "ecdsa" if "ecdsa" in name else name)


class Connection:
    """A lazily opened SSH connection to one board."""

    def __init__(self, host: str, user: str | None = None, port: int | None = None,
                 settings: SSHSettings | None = None, name: str | None = None,
                 connect_kwargs: dict | None = None, *, _hop: tuple | None = None):
        s_user, s_host, s_port = split_spec(host)
        self.settings = settings or SSHSettings()
        self.alias = s_host
        cfg = ssh_config_lookup(s_host, self.settings.ssh_config)
        self.ssh_config = cfg
        # explicit arguments > user@host:port > ~/.ssh/config > defaults (as in Fabric)
        self.host = cfg.get("hostname", s_host)
        self.user = user or s_user or cfg.get("user") or _local_user()
        try:
            self.port = int(port or s_port or cfg.get("port") or 22)
        except ValueError:
            raise InventoryError(f"ssh config for {s_host}: invalid Port {cfg.get('port')!r}") from None
        self.name = name or host
        self.connect_kwargs = dict(connect_kwargs or {})
        self.identity_files = tuple(str(Path(p).expanduser()) for p in
                                    (self.settings.identity_files or cfg.get("identityfile", ())))
        if self.settings.known_hosts is not None:
            self.known_hosts_files = tuple(str(Path(p).expanduser()) for p in self.settings.known_hosts)
        elif cfg.get("userknownhostsfile"):
            self.known_hosts_files = tuple(str(Path(p).expanduser())
                                           for p in cfg["userknownhostsfile"].split())
        else:
            self.known_hosts_files = (str(Path.home() / ".ssh" / "known_hosts"), "/etc/ssh/ssh_known_hosts")
        self.user_known_hosts = self.known_hosts_files[0] if self.known_hosts_files else \
            str(Path.home() / ".ssh" / "known_hosts")
        self._hop = _hop          # (i, n, target) when this is jump host i of n on the way to target
        self._via = None          # the jump host whose direct-tcpip channel carries this connection
        self.jumps: list[Connection] = []
        if _hop is None:
            self._make_jumps(cfg)
        self.client = None
        self._sftp = None
        self._home = None
        self._session_pid = None
        self._has_timeout = None
        self.recorded_host_key = None

    def _make_jumps(self, cfg: dict) -> None:
        st = self.settings
        if st.proxy_jump is not None:
            specs = parse_jumps(st.proxy_jump, "--jump / proxy_jump")
        else:
            specs = parse_jumps(cfg.get("proxyjump"), f"ssh config ProxyJump for {self.alias}")
        if "proxycommand" in cfg and not specs:
            log.warning("%s: ProxyCommand in ssh config is not supported (use ProxyJump); connecting directly",
                        self.name)
        hop_settings = replace(st, proxy_jump="none")
        for i, spec in enumerate(specs):
            hop = Connection(spec, settings=hop_settings, _hop=(i + 1, len(specs), self))
            hop._via = self.jumps[-1] if self.jumps else None
            self.jumps.append(hop)
        self._via = self.jumps[-1] if self.jumps else None

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def hop_name(self) -> str:
        """"jump host 1 of 2 (user@host:port)" for a hop; the address otherwise."""
        if self._hop is None:
            return self.address
        return f"jump host {self._hop[0]} of {self._hop[1]} ({self.address})"

    @property
    def label(self) -> str:
        where = f"{self.user}@{self.host}:{self.port}"
        if self._hop is not None:
            return f"{self.hop_name} on the way to {self._hop[2].label}"
        plain = {_sanitize(x) for x in (where, f"{self.user}@{self.alias}", f"{self.user}@{self.alias}:{self.port}",
                                        self.alias, f"{self.alias}:{self.port}")}
        if self.name is None or self.name == where or _sanitize(self.name) in plain:
            return where       # named after its address: say it once
        return f"board '{self.name}' ({where})"

    @property
    def is_connected(self) -> bool:
        t = self.client.get_transport() if self.client else None
        return bool(t and t.is_active())

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Connection {self.label} {'open' if self.is_connected else 'closed'}>"

    def close(self) -> None:
        for closer in (self._sftp, self.client):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()
        self._sftp = None
        self.client = None
        self._home = None
        self._session_pid = None
        self._has_timeout = None
        for hop in reversed(self.jumps):   # the board's transport ran inside the last hop's channel
            hop.close()

    def open(self) -> "Connection":
        if self.is_connected:
            return self
        self.close()
        try:
            for hop in self.jumps:
                hop.open()
            return self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> "Connection":
        st = self.settings
        sock = self._socket()
        client = paramiko.SSHClient()
        for i, path in enumerate(self.known_hosts_files):
            if not os.path.isfile(path):
                continue
            try:
                if i == 0:
                    client.load_host_keys(path)
                else:
                    client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException) as e:
                sock.close()
                raise HostKeyError(f"cannot read known_hosts file {path}: {e}") from None
        client.set_missing_host_key_policy(_TrustOnFirstUse(self) if st.trust_on_first_use else _Reject(self))
        # paramiko's `timeout` bounds the whole handshake, which starts with the banner wait
        kwargs = dict(hostname=self.host, port=self.port, username=self.user, sock=sock,
                      timeout=st.connect_timeout + st.banner_timeout, banner_timeout=st.banner_timeout,
                      auth_timeout=st.auth_timeout, channel_timeout=st.channel_timeout,
                      allow_agent=st.allow_agent,
                      look_for_keys=st.look_for_keys and not self.identity_files,
                      key_filename=list(self.identity_files) or None)
        for f in self.identity_files:
            if not os.path.isfile(f):
                sock.close()
                raise AuthError(f"{self.label}: identity file {f} does not exist")
        if st.allow_password:
            pw = st.password if st.password is not None else os.environ.get(PASSWORD_ENV)
            if pw is not None:
                kwargs["password"] = pw
        elif "password" in self.connect_kwargs:
            sock.close()
            raise AuthError(f"{self.label}: a password was given but password login is off; "
                            "pass --allow-password to use it")
        kwargs.update(self.connect_kwargs)
        t0 = time.perf_counter()
        try:
            client.connect(**kwargs)
        except DeployError:
            client.close()
            sock.close()
            raise
        except BaseException as e:
            client.close()
            sock.close()
            raise self._connect_error(e) from None
        transport = client.get_transport()
        if st.keepalive:
            transport.set_keepalive(max(1, int(round(st.keepalive))))
        self.client = client
        log.debug("%s: connected and authenticated in %.3f s", self.label, time.perf_counter() - t0)
        return self

    def _socket(self) -> socket.socket:
        st = self.settings
        if self._via is not None:
            return self._tunnel()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=st.connect_timeout)
        except ConnectionRefusedError:
            raise UnreachableError(f"{self.label}: nothing is listening on {self.host}:{self.port} "
                                   "(connection refused); is sshd running on the board, and is the port "
                                   "right?") from None
        except socket.gaierror as e:
            raise UnreachableError(f"{self.label}: cannot resolve host name {self.host!r} ({e.strerror}); "
                                   "check the address in devices.toml or ~/.ssh/config") from None
        except (socket.timeout, TimeoutError):
            raise UnreachableError(f"{self.label}: no answer from {self.host}:{self.port} within "
                                   f"{st.connect_timeout:g} s; is the board powered, on this network, "
                                   "and not behind a firewall that drops packets?") from None
        except OSError as e:
            raise UnreachableError(f"{self.label}: cannot reach {self.host}:{self.port} "
                                   f"({e.strerror or e}); check the network link to the board") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        idle = max(1, int(st.keepalive or 5))
        for opt, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 3),
                           ("TCP_USER_TIMEOUT", int(st.tcp_user_timeout * 1000))):
            if hasattr(socket, opt) and value > 0:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        return sock

    def _tunnel(self):
        """A ``direct-tcpip`` channel from the previous jump host to this host: the socket
        of this connection's SSH transport."""
        st, via = self.settings, self._via
        where = f"{self.host}:{self.port}"
        try:
            return via.client.get_transport().open_channel("direct-tcpip", (self.host, self.port),
                                                           ("127.0.0.1", 0), timeout=st.connect_timeout)
        except paramiko.ChannelException as e:
            if e.code == 1:   # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                raise UnreachableError(f"{self.label}: {via.hop_name} refused to forward a connection to "
                                       f"{where} ({e.text}); its sshd needs AllowTcpForwarding yes") from None
            raise UnreachableError(f"{self.label}: {via.hop_name} cannot reach {where} ({e.text}); check the "
                                   "address and port as seen from the jump host, and that sshd runs "
                                   "there") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            if "timeout" in str(e).lower():
                raise UnreachableError(f"{self.label}: no answer from {where} through {via.hop_name} within "
                                       f"{st.connect_timeout:g} s; is the board powered and reachable from "
                                       "the jump host?") from None
            raise ConnectionLostError(f"{self.label}: lost the connection to {via.hop_name} while opening "
                                      f"a tunnel to {where} ({type(e).__name__}: {e or 'EOF'})") from None

    def _connect_error(self, e: BaseException) -> Exception:
        st = self.settings
        if isinstance(e, paramiko.BadHostKeyException):
            files = ", ".join(self.known_hosts_files)
            name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            return HostKeyError(
                f"{self.label}: HOST KEY CHANGED: known_hosts ({files}) records {e.expected_key.get_name()} "
                f"{fingerprint(e.expected_key)} but the board offered {e.key.get_name()} {fingerprint(e.key)}. "
                "This can be an attack (someone in the middle) or a reinstalled board. If you know the board "
                f"was reinstalled, remove the old key with `ssh-keygen -R '{name}' -f {self.user_known_hosts}` "
                "and connect again")
        if isinstance(e, paramiko.BadAuthenticationType):
            allowed = ", ".join(e.allowed_types) or "none"
            if "publickey" not in e.allowed_types and not st.allow_password:
                return AuthError(f"{self.label}: the board accepts only {allowed} login, and password login is "
                                 "off: install your public key on the board (ssh-copy-id) or rerun with "
                                 f"--allow-password (password from ${PASSWORD_ENV} or the prompt)")
            return AuthError(f"{self.label}: the board accepts only {allowed} login for {self.user}")
        if isinstance(e, paramiko.PasswordRequiredException):
            return AuthError(f"{self.label}: the identity file is encrypted; load it into ssh-agent "
                             "(ssh-add) so edgecompress can use it")
        if isinstance(e, paramiko.AuthenticationException):
            keys = ", ".join(self.identity_files) or ("the ssh-agent's keys and ~/.ssh/id_*"
                                                      if st.allow_agent else "~/.ssh/id_*")
            return AuthError(f"{self.label}: the board refused login as {self.user!r} with {keys} ({e}); "
                             f"check the user name and that the public key is in ~{self.user}/.ssh/authorized_keys "
                             "on the board")
        text = str(e)
        if isinstance(e, paramiko.SSHException) and "No authentication methods available" in text:
            return AuthError(f"{self.label}: no SSH key to offer (no identity file, no ssh-agent key, no "
                             "~/.ssh/id_*); pass --identity FILE or start ssh-agent; password login is off "
                             "unless you pass --allow-password")
        if isinstance(e, paramiko.SSHException) and "protocol banner" in text:
            return NoBannerError(f"{self.label}: something accepts connections on {self.host}:{self.port} but "
                                 f"sent no SSH banner within {st.banner_timeout:g} s; it is not sshd (wrong "
                                 "port?) or the board is overloaded")
        if isinstance(e, (socket.timeout, TimeoutError)) or "timed out" in text.lower() \
                or "No existing session" in text:
            return ConnectionLostError(f"{self.label}: the SSH handshake did not complete within "
                                       f"{st.connect_timeout + st.banner_timeout:g} s; the link is too slow or "
                                       "lossy, or sshd is stuck")
        if isinstance(e, (EOFError, ConnectionError, OSError, paramiko.SSHException)):
            return ConnectionLostError(f"{self.label}: the connection closed during the SSH handshake "
                                       f"({type(e).__name__}: {text or 'EOF'}); sshd may have refused us "
                                       "(MaxStartups, AllowUsers) or crashed; see its log on the board")
        return e

    @property
    def transport(self):
        self.open()
        return self.client.get_transport()

    # ------------------------------------------------------------------ errors during operations

    @contextlib.contextmanager
    def _lost(self, what: str):
        """Turn a dead or silent link during ``what`` into ConnectionLostError."""
        try:
            yield
        except DeployError:
            raise
        except (socket.timeout, TimeoutError):
            self.close()
            raise ConnectionLostError(f"{self.label}: no answer from the board for "
                                      f"{self.settings.channel_timeout:g} s during {what}; the link went down "
                                      "or the board hangs. Nothing was switched on the board; retry when it "
                                      "answers again") from None
        except (EOFError, ConnectionError, paramiko.SSHException, paramiko.SFTPError, socket.error) as e:
            if isinstance(e, OSError) and not isinstance(e, ConnectionError) and self.is_connected \
                    and e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, errno.ENOTCONN):
                raise  # an SFTP status error (no such file, failure) on a live connection
            self.close()
            raise ConnectionLostError(f"{self.label}: lost the connection during {what} "
                                      f"({type(e).__name__}: {e or 'EOF'}). Nothing was switched on the board, "
                                      "so its previous install still works; check the link and power, then "
                                      "retry") from None

    # ------------------------------------------------------------------ commands

    def command_line(self, argv, env: dict | None = None, cwd: str | None = None,
                     timeout: float | None = None) -> str:
        if isinstance(argv, str):
            raise TypeError("run() takes a list of arguments; use script() for shell code")
        parts = []
        if cwd:
            parts.append(f"cd {q(cwd)} &&")
        if env:
            bad = [k for k in env if not _ENV_NAME.match(k)]
            if bad:
                raise ValueError(f"invalid environment variable names: {bad}")
            parts.append("env " + " ".join(q(f"{k}={v}") for k, v in env.items()))
        if timeout and self.has_timeout():
            parts.append(f"timeout -k 5 {int(math.ceil(timeout))}")
        parts.append(" ".join(q(a) for a in argv))
        return " ".join(parts)

    def has_timeout(self) -> bool:
        """Whether the board has the coreutils/busybox ``timeout`` command."""
        if self._has_timeout is None:
            self._session_info()
        return self._has_timeout

    def run(self, argv, *, timeout: float | None = None, env: dict | None = None, cwd: str | None = None,
            check: bool = True, stdin: bytes | None = None, what: str | None = None) -> Result:
        """Run ``argv`` (every element quoted) on the board; stop it after ``timeout`` s."""
        timeout = self.settings.command_timeout if timeout is None else timeout
        cmd = self.command_line(argv, env=env, cwd=cwd, timeout=timeout)
        return self._exec(cmd, timeout=timeout, check=check, stdin=stdin, what=what or argv[0],
                          remote_timeout=bool(timeout) and self.has_timeout())

    def script(self, code: str, *args, timeout: float | None = None, env: dict | None = None,
               check: bool = True, stdin: bytes | None = None, what: str = "a shell script") -> Result:
        """Run our own POSIX sh ``code`` with ``args`` as $1, $2, ... (all quoted)."""
        return self.run(["sh", "-c", code, "sh", *[str(a) for a in args]], timeout=timeout, env=env,
                        check=check, stdin=stdin, what=what)

    def _exec(self, cmd: str, timeout: float, check: bool = True, stdin: bytes | None = None,
              what: str = "command", remote_timeout: bool = False) -> Result:
        st = self.settings
        log.debug("%s: run %s", self.label, cmd if len(cmd) < 300 else cmd[:300] + "...")
        t0 = time.perf_counter()
        # the board's `timeout` stops the command; this deadline is the backstop for a board without it
        deadline = t0 + timeout + max(10.0, st.channel_timeout)
        out, err = bytearray(), bytearray()
        with self._lost(what):
            transport = self.transport   # opens the connection if needed; never reopened below
            chan = transport.open_session(timeout=st.channel_timeout)
            try:
                chan.settimeout(st.channel_timeout)
                chan.exec_command(cmd)
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
                delay = 0.001
                while True:
                    got = False
                    while chan.recv_ready():
                        out += chan.recv(1 << 16)
                        got = True
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(1 << 16)
                        got = True
                    if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if not transport.is_active():
                        raise EOFError("the SSH transport closed")
                    if time.perf_counter() > deadline:
                        raise RemoteTimeoutError(f"{self.label}: {what} did not finish within {timeout:g} s "
                                                 "(and the board's `timeout` did not stop it); the connection "
                                                 "was closed")
                    if got:
                        delay = 0.001
                    else:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
                code = chan.recv_exit_status()
                if code == -1:   # closed without an exit status: the link died, or a signal killed it
                    for _ in range(20):
                        if not transport.is_active():
                            raise EOFError("the SSH connection closed before the command finished")
                        time.sleep(0.05)
                    raise RemoteCommandError(f"{self.label}: {what} was killed on the board (by a signal, "
                                             "e.g. out of memory) before it finished")
                # drain what arrived with the exit status
                while True:
                    chunk = chan.recv(1 << 16)
                    if not chunk:
                        break
                    out += chunk
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
            finally:
                with contextlib.suppress(Exception):
                    chan.close()
        res = Result(cmd, code, out.decode(errors="replace"), err.decode(errors="replace"),
                     time.perf_counter() - t0)
        if remote_timeout and code == 124:  # what timeout(1) returns after stopping the command
            raise RemoteTimeoutError(f"{self.label}: {what} did not finish within {timeout:g} s and was "
                                     "stopped on the board; raise the timeout if it is just slow")
        if check and code != 0:
            raise RemoteCommandError(f"{self.label}: {what} failed with exit status {code}: "
                                     f"{_tail(res.stderr or res.stdout)}")
        return res

    # ------------------------------------------------------------------ facts about the session

    def _session_info(self) -> None:
        """One round trip for $HOME, the session's sshd PID and whether `timeout` exists."""
        r = self._exec('printf "%s\\n%s\\n" "$HOME" "$PPID"; command -v timeout || true',
                       timeout=self.settings.channel_timeout, what="reading $HOME")
        lines = r.stdout.splitlines() + ["", "", ""]
        self._home = lines[0].strip() or "."
        self._session_pid = int(lines[1].strip()) if lines[1].strip().isdigit() else 0
        self._has_timeout = bool(lines[2].strip())

    @property
    def home(self) -> str:
        if self._home is None:
            self._session_info()
        return self._home

    @property
    def session_pid(self) -> int:
        """PID of this connection's sshd process on the board (it dies with the connection)."""
        self.home  # noqa: B018 - one round trip reads both
        return self._session_pid

    # ------------------------------------------------------------------ files

    def sftp(self):
        if self._sftp is None or not self.is_connected:
            with self._lost("opening SFTP"):
                self._sftp = self.transport.open_sftp_client()
                self._sftp.get_channel().settimeout(self.settings.channel_timeout)
        return self._sftp

    def put(self, local, remote: str, callback=None) -> int:
        """Upload ``local`` to ``remote``; ``callback(sent, total)`` after each chunk."""
        size = os.path.getsize(local)
        with self._lost(f"the upload of {os.path.basename(str(local))}"), open(local, "rb") as f:
            self.sftp().putfo(f, remote, file_size=size, callback=callback, confirm=True)
        return size

    def read_bytes(self, remote: str, limit: int = 64 << 20) -> bytes:
        with self._lost(f"reading {remote}"):
            with self.sftp().open(remote, "rb") as f:
                f.prefetch()
                return f.read(limit)

    def write_bytes(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        with self._lost(f"writing {remote}"):
            with self.sftp().open(remote, "wb") as f:
                f.write(data)
            self.sftp().chmod(remote, mode)


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")


def _local_user() -> str:
    import getpass
    return getpass.getuser()


def _tail(text: str, n: int = 600) -> str:
    text = " ".join(text.strip().split())
    return text if len(text) <= n else "..." + text[-n:]
