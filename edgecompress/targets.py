"""Device profiles: one TOML file per device in ``targets/``.

A profile says what the device is (arch, cores, RAM, Python, wheel platform tags), what an
app on it needs (memory budget for the model bundle, latency budget at a batch size, the
batch sizes it uses), which runtime backends to prefer, and rough cost-model coefficients
for the latency model. ``load_target("raspberry-pi-4")`` returns a validated ``Target``.

Keys ``arch``, ``cores``, ``ram_mb``, ``python`` and ``platform_tags`` may be ``"auto"``:
they are then filled in from the machine that loads the profile (used by ``local.toml``).

Sizes: ``"8MB"`` = 8 * 10^6 bytes, ``"8MiB"`` = 8 * 2^20 bytes (KB/KiB, GB/GiB, TB/TiB alike),
a bare number is bytes. Latencies: ``"2ms@64"`` = 2 ms per batch of 64 (units ns, us, ms, s).
"""

from __future__ import annotations

import difflib
import math
import os
import platform
import re
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from edgecompress.errors import TargetError

__all__ = [
    "Target", "load_target", "list_targets", "targets_dir", "parse_size", "parse_latency",
    "format_size", "ARCHES", "BACKENDS", "COST_KEYS", "ENV_VAR",
]

ENV_VAR = "EDGECOMPRESS_TARGETS"
ARCHES = ("aarch64", "x86_64", "armv7l")
BACKENDS = ("numpy", "litert", "executorch")
COST_KEYS = ("gather_bytes_per_s", "fp32_macs_per_s", "int8_macs_per_s", "op_overhead_s")
AUTO = "auto"
AUTO_KEYS = ("arch", "cores", "ram_mb", "python", "platform_tags")

REQUIRED_KEYS = ("name", "description", "arch", "cores", "ram_mb", "python", "memory_budget",
                 "latency_budget", "batch_sizes", "backends", "platform_tags", "cost")
OPTIONAL_KEYS = ("notes",)

# A wheel platform tag for an arch must end with one of these.
_ARCH_TAG_SUFFIXES = {
    "aarch64": ("_aarch64", "_arm64", "_arm64_v8a"),
    "x86_64": ("_x86_64", "_amd64"),
    "armv7l": ("_armv7l", "_armeabi_v7a"),
}
_MACHINE_TO_ARCH = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64",
                    "armv7l": "armv7l", "armv8l": "armv7l"}


# --------------------------------------------------------------------------- sizes / latencies

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_CANONICAL_UNIT = {u: (u[:-1].upper() + "B" if len(u) <= 2 else u[0].upper() + "iB") for u in _SIZE_UNITS if u}
_SIZE_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*$")
_SIZE_HELP = ("expected a positive size like '8MB' (8*10^6 bytes), '512KiB' (512*2^10), '1.5GB' "
              "or '1234' (bytes)")


def parse_size(text: str | int) -> int:
    """``"8MB"`` -> 8_000_000, ``"8MiB"`` -> 8_388_608, ``"1234"`` or 1234 -> 1234 (bytes).

    Units: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024); the prefix may be
    lower case ("kB"), the B may not ("8mb" is rejected: b is bits).
    Raises TargetError for anything that is not a positive whole number of bytes.
    """
    if isinstance(text, bool):
        raise TargetError(f"invalid size {text!r}: {_SIZE_HELP}")
    if isinstance(text, int):
        if text <= 0:
            raise TargetError(f"invalid size {text!r}: must be positive")
        return text
    if not isinstance(text, str):
        raise TargetError(f"invalid size {text!r}: {_SIZE_HELP}")
    m = _SIZE_RE.match(text)
    if not m:
        if text.strip().startswith("-"):
            raise TargetError(f"invalid size {text!r}: must be positive")
        raise TargetError(f"invalid size {text!r}: {_SIZE_HELP}")
    unit = m["unit"].lower()
    if unit not in _SIZE_UNITS:
        raise TargetError(f"invalid size {text!r}: unknown unit {m['unit']!r} "
                          f"(use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    if unit and not m["unit"].endswith("B"):
        raise TargetError(f"invalid size {text!r}: write the byte unit with a capital B "
                          f"({_CANONICAL_UNIT[unit]}; a lowercase b means bits)")
    value = Decimal(m["num"]) * _SIZE_UNITS[unit]
    if value <= 0:
        raise TargetError(f"invalid size {text!r}: must be positive")
    if value != value.to_integral_value():
        raise TargetError(f"invalid size {text!r}: is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """Bytes -> short human string using decimal units (the inverse style of parse_size)."""
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= mult:
            return f"{n / mult:.3g}{unit}"
    return f"{n}B"


_TIME_UNITS = {"ns": Decimal("1e-9"), "us": Decimal("1e-6"), "µs": Decimal("1e-6"), "μs": Decimal("1e-6"),
               "ms": Decimal("1e-3"), "s": Decimal(1)}
_LATENCY_RE = re.compile(
    r"^\s*(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[a-zA-Zµμ]*)"
    r"\s*@\s*(?P<batch>[0-9]+)\s*$")
_LATENCY_HELP = ("expected '<time><unit>@<batch size>' like '2ms@64', '500us@1' or '0.01s@256' "
                 "(units ns, us, ms, s)")


def parse_latency(text: str) -> tuple[float, int]:
    """``"2ms@64"`` -> (0.002, 64): the latency budget in seconds for one batch of that size."""
    if not isinstance(text, str):
        raise TargetError(f"invalid latency {text!r}: {_LATENCY_HELP}")
    m = _LATENCY_RE.match(text)
    if not m:
        if text.strip().startswith("-"):
            raise TargetError(f"invalid latency {text!r}: must be positive")
        if "@" not in text:
            raise TargetError(f"invalid latency {text!r}: missing '@<batch size>'; {_LATENCY_HELP}")
        raise TargetError(f"invalid latency {text!r}: {_LATENCY_HELP}")
    unit = m["unit"].lower()
    if not unit:
        raise TargetError(f"invalid latency {text!r}: missing time unit (use ns, us, ms or s, e.g. '2ms@64')")
    if unit not in _TIME_UNITS:
        raise TargetError(f"invalid latency {text!r}: unknown time unit {m['unit']!r} (use ns, us, ms or s)")
    try:
        seconds = Decimal(m["num"]) * _TIME_UNITS[unit]
    except InvalidOperation:  # pragma: no cover - the regex only passes valid numbers
        raise TargetError(f"invalid latency {text!r}: {_LATENCY_HELP}") from None
    if seconds <= 0:
        raise TargetError(f"invalid latency {text!r}: the time must be positive")
    batch = int(m["batch"])
    if batch <= 0:
        raise TargetError(f"invalid latency {text!r}: the batch size must be >= 1")
    return float(seconds), batch


# --------------------------------------------------------------------------- Target


@dataclass(frozen=True)
class Target:
    """A validated device profile. Lists from the TOML are stored as tuples."""

    name: str
    description: str
    arch: str
    cores: int
    ram_mb: int
    python: str
    memory_budget: str  # as written, e.g. "16MB"; see memory_budget_bytes
    latency_budget: str  # as written, e.g. "5ms@64"; see latency_budget_s / latency_batch
    batch_sizes: tuple[int, ...]
    backends: tuple[str, ...]  # in order of preference
    platform_tags: tuple[str, ...]
    cost: dict[str, float] = field(hash=False)  # COST_KEYS -> float
    notes: str = ""
    source: str = ""  # path of the TOML it was loaded from

    @property
    def memory_budget_bytes(self) -> int:
        return parse_size(self.memory_budget)

    @property
    def latency_budget_s(self) -> float:
        return parse_latency(self.latency_budget)[0]

    @property
    def latency_batch(self) -> int:
        return parse_latency(self.latency_budget)[1]

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly dict (lists, not tuples; a copy of ``cost``)."""
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "cores": self.cores,
            "ram_mb": self.ram_mb,
            "python": self.python,
            "memory_budget": self.memory_budget,
            "latency_budget": self.latency_budget,
            "batch_sizes": list(self.batch_sizes),
            "backends": list(self.backends),
            "platform_tags": list(self.platform_tags),
            "cost": dict(self.cost),
            "notes": self.notes,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> "Target":
        """Validate a dict with the TOML keys (e.g. ``to_dict()`` output; ``source`` is ignored)."""
        data = dict(data)
        data.pop("source", None)
        return _validate(data, source, expected_name=None)


# --------------------------------------------------------------------------- locating profiles


def targets_dir() -> Path:
    """Directory of the profiles: ``$EDGECOMPRESS_TARGETS`` if set, else the source tree's
    ``targets/`` (editable install), else the copy a built wheel carries (``edgecompress/_targets``,
    made by setup.py)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent
    repo = here.parent / "targets"
    return repo if repo.is_dir() or not (here / "_targets").is_dir() else here / "_targets"


def _available(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml"))


def _looks_like_path(value: str | os.PathLike) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return value.endswith(".toml") or "/" in value or os.sep in value or (os.altsep or "/") in value


def load_target(name_or_path: str | os.PathLike | Target) -> Target:
    """Load a profile by name (``targets_dir()/<name>.toml``) or from a ``.toml`` path."""
    if isinstance(name_or_path, Target):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TargetError(f"a target is a profile name or a path to a .toml file, got {name_or_path!r}")
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise TargetError(f"target file {path} does not exist")
        return _load_file(path)
    name = str(name_or_path)
    directory = targets_dir()
    path = directory / f"{name}.toml"
    if not path.is_file():
        available = _available(directory)
        if not directory.is_dir():
            raise TargetError(f"unknown target {name!r}: the targets directory {directory} does not exist "
                              f"(set {ENV_VAR} to a directory of profile .toml files)")
        hint = difflib.get_close_matches(name, available, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise TargetError(f"unknown target {name!r}.{did_you_mean} Available targets: "
                          f"{', '.join(available) or '(none)'} (in {directory}); or pass a path to a .toml file")
    return _load_file(path)


def list_targets() -> list[Target]:
    """All profiles in ``targets_dir()``, sorted by name. An invalid profile raises TargetError."""
    directory = targets_dir()
    if not directory.is_dir():
        raise TargetError(f"the targets directory {directory} does not exist "
                          f"(set {ENV_VAR} to a directory of profile .toml files)")
    return [_load_file(p) for p in sorted(directory.glob("*.toml"))]


def _load_file(path: Path) -> Target:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise TargetError(f"{path}: cannot read: {e.strerror or e}") from None
    return _validate(data, str(path), expected_name=path.stem)


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, msg: str) -> TargetError:
        return TargetError(f"{self.source}: key '{key}': {msg}")

    def wrong_type(self, key: str, expected: str, value: Any) -> TargetError:
        return self.fail(key, f"expected {expected}, got {_type_name(value)} ({_show(value)})")

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(key, "a string", value)
        if not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def pos_int(self, key: str, value: Any) -> int:
        if type(value) is not int:  # bool is an int subclass: reject it explicitly
            raise self.wrong_type(key, "an integer", value)
        if value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        return value

    def pos_float(self, key: str, value: Any) -> float:
        if type(value) not in (int, float):
            raise self.wrong_type(key, "a number", value)
        if not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"must be a finite number > 0, got {value}")
        return float(value)

    def array(self, key: str, value: Any) -> list:
        if not isinstance(value, list):
            raise self.wrong_type(key, "an array", value)
        if not value:
            raise self.fail(key, "must not be empty")
        return value

    def unique(self, key: str, values: list) -> None:
        dupes = sorted({_show(v) for v in values if values.count(v) > 1})
        if dupes:
            raise self.fail(key, f"duplicate entries: {', '.join(dupes)}")


def _validate(data: dict[str, Any], source: str, *, expected_name: str | None) -> Target:
    c = _Checker(source)
    allowed = REQUIRED_KEYS + OPTIONAL_KEYS
    unknown = [k for k in data if k not in allowed]
    if unknown:
        k = unknown[0]
        hint = difflib.get_close_matches(k, allowed, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise c.fail(k, f"unknown key{did_you_mean}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise c.fail(missing[0], "missing required key" + (
            f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))

    def auto(key: str) -> bool:
        return key in AUTO_KEYS and data[key] == AUTO

    name = c.string("name", data["name"])
    if expected_name is not None and name != expected_name:
        raise c.fail("name", f"is {name!r} but must equal the file name without .toml ({expected_name!r})")
    description = c.string("description", data["description"])

    if auto("arch"):
        arch = _host_arch(c)
    else:
        arch = c.string("arch", data["arch"])
        if arch not in ARCHES:
            raise c.fail("arch", f"must be one of {', '.join(ARCHES)} (or \"auto\"), got {arch!r}")

    cores = _host_cores() if auto("cores") else c.pos_int("cores", data["cores"])
    ram_mb = _host_ram_mb(c) if auto("ram_mb") else c.pos_int("ram_mb", data["ram_mb"])

    if auto("python"):
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    else:
        python = c.string("python", data["python"])
        if not re.fullmatch(r"3\.[0-9]{1,2}", python):
            raise c.fail("python", f"must be a Python 3 minor version like \"3.11\", got {python!r}")

    memory_budget = c.string("memory_budget", data["memory_budget"])
    try:
        budget_bytes = parse_size(memory_budget)
    except TargetError as e:
        raise c.fail("memory_budget", str(e)) from None
    if budget_bytes > ram_mb * 2**20:
        raise c.fail("memory_budget", f"{memory_budget} is more than the device's RAM (ram_mb = {ram_mb})")

    latency_budget = c.string("latency_budget", data["latency_budget"])
    try:
        parse_latency(latency_budget)
    except TargetError as e:
        raise c.fail("latency_budget", str(e)) from None

    batch_sizes = c.array("batch_sizes", data["batch_sizes"])
    for b in batch_sizes:
        if type(b) is not int or b <= 0:
            raise c.fail("batch_sizes", f"entries must be integers > 0, got {_type_name(b)} ({_show(b)})")
    c.unique("batch_sizes", batch_sizes)

    backends = c.array("backends", data["backends"])
    for b in backends:
        if not isinstance(b, str):
            raise c.fail("backends", f"entries must be strings, got {_type_name(b)} ({_show(b)})")
        if b not in BACKENDS:
            raise c.fail("backends", f"unknown backend {b!r}; known backends: {', '.join(BACKENDS)}")
    c.unique("backends", backends)

    if auto("platform_tags"):
        platform_tags = _host_platform_tags(arch)
    else:
        platform_tags = c.array("platform_tags", data["platform_tags"])
        suffixes = _ARCH_TAG_SUFFIXES[arch]
        for t in platform_tags:
            if not isinstance(t, str):
                raise c.fail("platform_tags", f"entries must be strings, got {_type_name(t)} ({_show(t)})")
            if not re.fullmatch(r"[a-z0-9_]+", t):
                raise c.fail("platform_tags", f"{t!r} is not a wheel platform tag (e.g. 'manylinux_2_28_aarch64')")
            if not t.endswith(suffixes):
                raise c.fail("platform_tags", f"{t!r} does not match arch {arch!r} (expected a tag ending in "
                                              f"{' or '.join(suffixes)})")
        c.unique("platform_tags", platform_tags)

    cost_raw = data["cost"]
    if not isinstance(cost_raw, dict):
        raise c.wrong_type("cost", "a table ([cost])", cost_raw)
    for k in cost_raw:
        if k not in COST_KEYS:
            hint = difflib.get_close_matches(k, COST_KEYS, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise c.fail(f"cost.{k}", f"unknown key{did_you_mean}; allowed keys: {', '.join(COST_KEYS)}")
    for k in COST_KEYS:
        if k not in cost_raw:
            raise c.fail(f"cost.{k}", "missing required key")
    cost = {k: c.pos_float(f"cost.{k}", cost_raw[k]) for k in COST_KEYS}

    notes = data.get("notes", "")
    if not isinstance(notes, str):
        raise c.wrong_type("notes", "a string", notes)

    return Target(
        name=name, description=description, arch=arch, cores=cores, ram_mb=ram_mb, python=python,
        memory_budget=memory_budget, latency_budget=latency_budget,
        batch_sizes=tuple(batch_sizes), backends=tuple(backends), platform_tags=tuple(platform_tags),
        cost=cost, notes=notes, source=source,
    )


# --------------------------------------------------------------------------- "auto" (this host)


def _host_arch(c: _Checker) -> str:
    machine = platform.machine().lower()
    arch = _MACHINE_TO_ARCH.get(machine)
    if arch is None:
        raise c.fail("arch", f"is \"auto\" but this machine's type {platform.machine()!r} is not one of "
                             f"{', '.join(ARCHES)}; set it explicitly")
    return arch


def _host_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _host_ram_mb(c: _Checker) -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = -1
    if total <= 0:
        raise c.fail("ram_mb", "is \"auto\" but this machine's RAM size cannot be determined; set it explicitly")
    return max(1, total // 2**20)


def _host_platform_tags(arch: str) -> list[str]:
    """Wheel platform tags this interpreter accepts, most specific first (like pip, simplified)."""
    if sys.platform.startswith("linux"):
        libc, version = platform.libc_ver()
        tags: list[str] = []
        m = re.match(r"(\d+)\.(\d+)", version or "")
        if libc == "glibc" and m and int(m[1]) == 2:
            for minor in range(int(m[2]), 16, -1):
                tags.append(f"manylinux_2_{minor}_{arch}")
            if arch in ("x86_64", "aarch64", "armv7l"):
                tags.append(f"manylinux2014_{arch}")
            if arch == "x86_64":
                tags += ["manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64",
                         "manylinux1_x86_64"]
        tags.append(f"linux_{arch}")
        return tags
    return [re.sub(r"[^a-z0-9]", "_", sysconfig.get_platform().lower())]
