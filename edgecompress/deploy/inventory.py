"""Which boards exist and how to reach them.

``devices.toml``::

    [ssh]                          # optional: how to connect (all keys optional)
    known_hosts = "~/.ssh/known_hosts"
    connect_timeout = 10           # seconds; also banner_timeout, auth_timeout,
                                   # channel_timeout, command_timeout, keepalive, tcp_user_timeout
    [defaults]                     # optional: default values for every [[device]]
    user = "pi"
    target = "raspberry-pi-4"

    [[device]]
    name = "pi-kitchen"            # letters, digits, . _ -
    host = "10.0.0.21"             # or an alias from ~/.ssh/config
    port = 22
    user = "pi"
    identity_file = "~/.ssh/id_ed25519"   # else ssh-agent / ~/.ssh/id_*
    proxy_jump = "me@bastion.lab:22"      # jump host(s), "a,b" or ["a", "b"]; "none" ignores
                                   # ~/.ssh/config's ProxyJump; --jump on the command line wins
    target = "raspberry-pi-4"      # device profile (edgecompress targets)
    python = "python3"             # interpreter on the board that creates the venv
    workdir = ".edgecompress"      # on the board, relative to the user's home
    tags = ["lab", "rpi4"]
    packages = ["ai-edge-litert"]  # extra wheels for the board's wheelhouse

A board can also be given as ``user@host[:port]`` on the command line; values
missing there come from ``~/.ssh/config`` (paramiko's SSHConfig), then defaults.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import InventoryError, TargetError
from .connection import SSHSettings, parse_jumps, split_spec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SSH_KEYS = {"known_hosts": "paths", "ssh_config": "str", "allow_agent": "bool", "look_for_keys": "bool",
             "trust_on_first_use": "bool", "connect_timeout": "seconds", "banner_timeout": "seconds",
             "auth_timeout": "seconds", "channel_timeout": "seconds", "command_timeout": "seconds",
             "keepalive": "seconds", "tcp_user_timeout": "seconds"}


@dataclass(frozen=True)
class Device:
    """One board. ``None`` fields are filled from ~/.ssh/config or defaults when connecting."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    target: str | None = None
    python: str = "python3"
    workdir: str = ".edgecompress"
    tags: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    allow_password: bool = False
    proxy_jump: str | None = None   # "[user@]host[:port],..." (see connection.parse_jumps)

    @property
    def spec(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}" + (f":{self.port}" if self.port else "")

    def connection(self, settings: SSHSettings | None = None, **connect_kwargs):
        from .connection import Connection
        settings = settings or SSHSettings()
        if self.identity_file:
            settings = settings.with_(identity_files=(self.identity_file,))
        if self.allow_password:
            settings = settings.with_(allow_password=True)
        if self.proxy_jump and settings.proxy_jump is None:   # --jump on the command line wins
            settings = settings.with_(proxy_jump=self.proxy_jump)
        return Connection(self.host, user=self.user, port=self.port, settings=settings, name=self.name,
                          connect_kwargs=connect_kwargs or None)

    def with_(self, **changes) -> "Device":
        from dataclasses import replace
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


_DEVICE_KEYS = tuple(f.name for f in fields(Device))


@dataclass
class Inventory:
    devices: list[Device]
    ssh: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    source: str = "<inventory>"

    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    def get(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        hint = difflib.get_close_matches(name, self.names(), n=1)
        raise InventoryError(f"{self.source}: no device named {name!r}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; devices: {', '.join(self.names()) or '(none)'}")

    def select(self, tags=None, names=None) -> list[Device]:
        """Devices having every tag in ``tags`` (and named in ``names`` if given)."""
        tags = [t for t in (tags or []) if t]
        chosen = [self.get(n) for n in names] if names else list(self.devices)
        chosen = [d for d in chosen if all(t in d.tags for t in tags)]
        if not chosen:
            known = sorted({t for d in self.devices for t in d.tags})
            raise InventoryError(f"{self.source}: no device has all of the tags {', '.join(tags)} "
                                 f"(tags in use: {', '.join(known) or 'none'})")
        return chosen

    def settings(self, base: SSHSettings | None = None) -> SSHSettings:
        """``base`` (e.g. from the command line) filled with this file's [ssh] table;
        values given in ``base`` explicitly win over the file."""
        base = base or SSHSettings()
        defaults = SSHSettings()
        merged = {}
        for k, v in self.ssh.items():
            if getattr(base, k) == getattr(defaults, k):   # not overridden on the command line
                merged[k] = v
        return base.with_(**merged)


def _fail(source: str, where: str, msg: str) -> InventoryError:
    return InventoryError(f"{source}: {where}: {msg}")


def _check_keys(source: str, where: str, table: dict, allowed) -> None:
    for k in table:
        if k not in allowed:
            hint = difflib.get_close_matches(k, list(allowed), n=1)
            raise _fail(source, where, f"unknown key {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; allowed: {', '.join(allowed)}")


def _device(source: str, where: str, raw: dict, base_dir: Path) -> Device:
    _check_keys(source, where, raw, _DEVICE_KEYS)
    d = dict(raw)
    for key in ("name", "host"):
        if key not in d:
            raise _fail(source, where, f"missing required key {key!r}")
    for key in ("name", "host", "user", "identity_file", "target", "python", "workdir"):
        if key in d and (not isinstance(d[key], str) or not d[key].strip()):
            raise _fail(source, where, f"{key!r} must be a non-empty string, got {d[key]!r}")
    if not _NAME.match(d["name"]):
        raise _fail(source, where, f"name {d['name']!r} may hold only letters, digits, '.', '_' and '-'")
    if "port" in d:
        if type(d["port"]) is not int or not 0 < d["port"] < 65536:
            raise _fail(source, where, f"port must be an integer from 1 to 65535, got {d['port']!r}")
    if any(c.isspace() or c in "@/" for c in d["host"]):
        raise _fail(source, where, f"host {d['host']!r} must be a host name or address "
                                   "(put the user in 'user' and the port in 'port')")
    for key in ("tags", "packages"):
        if key in d:
            if not isinstance(d[key], list) or not all(isinstance(t, str) and t.strip() for t in d[key]):
                raise _fail(source, where, f"{key!r} must be an array of non-empty strings")
            d[key] = tuple(d[key])
    if "allow_password" in d and not isinstance(d["allow_password"], bool):
        raise _fail(source, where, "'allow_password' must be true or false")
    if "proxy_jump" in d:
        v = d["proxy_jump"]
        if not (isinstance(v, str) or isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise _fail(source, where, "'proxy_jump' must be \"[user@]host[:port],...\" or an array of those")
        try:
            d["proxy_jump"] = ",".join(parse_jumps(v, "proxy_jump")) or "none"
        except InventoryError as e:
            raise _fail(source, where, str(e)) from None
    if "identity_file" in d:
        p = Path(d["identity_file"]).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            raise _fail(source, where, f"identity_file {p} does not exist")
        d["identity_file"] = str(p)
    if "workdir" in d:
        wd = d["workdir"].strip()
        if ".." in Path(wd).parts or "\n" in wd or wd.rstrip("/") in ("", ".", "~", "/") \
                or Path(wd).as_posix() in (".", "~"):
            raise _fail(source, where, f"workdir {d['workdir']!r} must be a directory of its own below the home "
                                       "(like '.edgecompress') or an absolute path, without '..'")
    if "target" in d:
        from ..targets import load_target
        try:
            load_target(d["target"])
        except TargetError as e:
            raise _fail(source, where, f"target: {e}") from None
    return Device(**d)


def _ssh_table(source: str, raw: dict, base_dir: Path) -> dict:
    _check_keys(source, "[ssh]", raw, _SSH_KEYS)
    out = {}
    for k, v in raw.items():
        kind = _SSH_KEYS[k]
        if kind == "bool" and not isinstance(v, bool):
            raise _fail(source, "[ssh]", f"{k!r} must be true or false")
        if kind == "seconds" and (type(v) not in (int, float) or v <= 0):
            raise _fail(source, "[ssh]", f"{k!r} must be a number of seconds > 0, got {v!r}")
        if kind == "str" and not isinstance(v, str):
            raise _fail(source, "[ssh]", f"{k!r} must be a string")
        if kind == "paths":
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise _fail(source, "[ssh]", f"{k!r} must be a path or an array of paths")
            v = tuple(str(p if (p := Path(x).expanduser()).is_absolute() else base_dir / p) for x in v)
        out[k] = float(v) if kind == "seconds" else v
    return out


def load_inventory(path) -> Inventory:
    p = Path(path).expanduser()
    source = str(p)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InventoryError(f"inventory {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(f"{source}: not valid TOML: {e}") from None
    except OSError as e:
        raise InventoryError(f"{source}: cannot read: {e.strerror or e}") from None
    _check_keys(source, "top level", data, ("ssh", "defaults", "device"))
    ssh = _ssh_table(source, data.get("ssh", {}), p.parent)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _fail(source, "[defaults]", "must be a table")
    _check_keys(source, "[defaults]", defaults, [k for k in _DEVICE_KEYS if k != "name"])
    if isinstance(defaults.get("identity_file"), str):   # relative to the inventory, also for resolve()
        f = Path(defaults["identity_file"]).expanduser()
        defaults = {**defaults, "identity_file": str(f if f.is_absolute() else p.parent / f)}
    raw_devices = data.get("device", [])
    if not isinstance(raw_devices, list) or not raw_devices:
        raise InventoryError(f"{source}: no devices: add at least one [[device]] table with name and host")
    devices, seen = [], set()
    for i, raw in enumerate(raw_devices):
        label = f"[[device]] #{i + 1}" + (f" ({raw.get('name')})" if isinstance(raw.get("name"), str) else "")
        dev = _device(source, label, {**defaults, **raw}, p.parent)
        if dev.name in seen:
            raise _fail(source, label, f"duplicate device name {dev.name!r}")
        seen.add(dev.name)
        devices.append(dev)
    return Inventory(devices=devices, ssh=ssh, defaults=defaults, source=source)


def device_from_spec(spec: str, **fields_) -> Device:
    """A Device for ``user@host[:port]`` (named by the spec itself)."""
    user, host, port = split_spec(spec)
    fields_ = {k: v for k, v in fields_.items() if v is not None}
    return _device("command line", spec, {**fields_, "name": _spec_name(spec), "host": host,
                                          **({"user": user} if user else {}),
                                          **({"port": port} if port else {})}, Path.cwd())


def _spec_name(spec: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.strip()).strip("_.-") or "board"
    return name[:64]


def resolve(spec: str, inventory: Inventory | None = None, **fields_) -> Device:
    """``spec`` is a device name from ``inventory`` or ``user@host[:port]``."""
    if inventory is not None and spec in inventory.names():
        return inventory.get(spec)
    if inventory is not None and "@" not in spec and ":" not in spec and "." not in spec:
        inventory.get(spec)  # raises with a did-you-mean
    defaults = dict(inventory.defaults) if inventory is not None else {}
    return device_from_spec(spec, **{**defaults, **fields_})
