"""Checking a device profile's TOML data, key by key, with messages that name the file and key.

Keys ``arch``, ``cores``, ``ram_mb``, ``python`` and ``platform_tags`` may be ``"auto"``:
they are then filled in from the machine that loads the profile (used by ``local.toml``).
"""
from __future__ import annotations

import difflib
import math
import os
import platform
import re
import sys
import sysconfig
from typing import Any

from edgecompress_runtime.backends import KNOWN

from edgecompress.errors import TargetError
from edgecompress.units import parse_latency, parse_size

ARCHES = ("aarch64", "x86_64", "armv7l")
BACKENDS = KNOWN             # the runtime's backends, in its default order
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


def check_profile(data: dict[str, Any], source: str, *, expected_name: str | None) -> dict[str, Any]:
    """The fields of a ``Target`` from a profile's TOML data, each checked; TargetError naming
    the file and key of the first problem."""
    c = _Checker(source)
    _check_keys(c, data, REQUIRED_KEYS + OPTIONAL_KEYS, REQUIRED_KEYS, prefix="")
    name = c.string("name", data["name"])
    if expected_name is not None and name != expected_name:
        raise c.fail("name", f"is {name!r} but must equal the file name without .toml ({expected_name!r})")
    fields = dict(name=name, description=c.string("description", data["description"]))
    fields.update(_check_machine(c, data))
    fields.update(_check_budgets(c, data, fields["ram_mb"]))
    fields.update(_check_lists(c, data, fields["arch"]))
    fields["cost"] = _check_cost(c, data["cost"])
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        raise c.wrong_type("notes", "a string", notes)
    fields["notes"] = notes
    return fields


def _check_keys(c: _Checker, data: dict, allowed, required, prefix: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        k = unknown[0]
        hint = difflib.get_close_matches(k, allowed, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise c.fail(prefix + k, f"unknown key{did_you_mean}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise c.fail(prefix + missing[0], "missing required key" + (
            f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 and not prefix else ""))


def _auto(data: dict, key: str) -> bool:
    return key in AUTO_KEYS and data[key] == AUTO


def _check_machine(c: _Checker, data: dict) -> dict:
    """arch, cores, ram_mb, python: as written, or this host's for "auto"."""
    if _auto(data, "arch"):
        arch = _host_arch(c)
    else:
        arch = c.string("arch", data["arch"])
        if arch not in ARCHES:
            raise c.fail("arch", f"must be one of {', '.join(ARCHES)} (or \"auto\"), got {arch!r}")
    cores = _host_cores() if _auto(data, "cores") else c.pos_int("cores", data["cores"])
    ram_mb = _host_ram_mb(c) if _auto(data, "ram_mb") else c.pos_int("ram_mb", data["ram_mb"])
    if _auto(data, "python"):
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    else:
        python = c.string("python", data["python"])
        if not re.fullmatch(r"3\.[0-9]{1,2}", python):
            raise c.fail("python", f"must be a Python 3 minor version like \"3.11\", got {python!r}")
    return dict(arch=arch, cores=cores, ram_mb=ram_mb, python=python)


def _check_budgets(c: _Checker, data: dict, ram_mb: int) -> dict:
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
    return dict(memory_budget=memory_budget, latency_budget=latency_budget)


def _check_lists(c: _Checker, data: dict, arch: str) -> dict:
    """batch_sizes, backends (in order of preference) and platform_tags, as tuples."""
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
    platform_tags = _host_platform_tags(arch) if _auto(data, "platform_tags") else \
        _check_platform_tags(c, data["platform_tags"], arch)
    return dict(batch_sizes=tuple(batch_sizes), backends=tuple(backends), platform_tags=tuple(platform_tags))


def _check_platform_tags(c: _Checker, value, arch: str) -> list:
    platform_tags = c.array("platform_tags", value)
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
    return platform_tags


def _check_cost(c: _Checker, cost_raw) -> dict:
    if not isinstance(cost_raw, dict):
        raise c.wrong_type("cost", "a table ([cost])", cost_raw)
    _check_keys(c, cost_raw, COST_KEYS, COST_KEYS, prefix="cost.")
    return {k: c.pos_float(f"cost.{k}", cost_raw[k]) for k in COST_KEYS}


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
