"""Device profiles: one TOML file per device in ``targets/``.

A profile says what the device is (arch, cores, RAM, Python, wheel platform tags), what an
app on it needs (memory budget for the model bundle, latency budget at a batch size, the
batch sizes it uses), which runtime backends to prefer, and rough cost-model coefficients
for the latency model. ``load_target("raspberry-pi-4")`` returns a validated ``Target``.

Keys ``arch``, ``cores``, ``ram_mb``, ``python`` and ``platform_tags`` may be ``"auto"``:
they are then filled in from the machine that loads the profile (used by ``local.toml``).

Sizes and latencies are read by ``edgecompress/units.py`` (``"8MB"``, ``"2ms@64"``); each
key is checked by ``edgecompress/target_checks.py``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import TargetError
from edgecompress.target_checks import ARCHES, BACKENDS, COST_KEYS, check_profile
from edgecompress.units import format_size, parse_latency, parse_size

__all__ = [
    "Target", "load_target", "list_targets", "targets_dir", "parse_size", "parse_latency",
    "format_size", "ARCHES", "BACKENDS", "COST_KEYS", "ENV_VAR",
]

ENV_VAR = "EDGECOMPRESS_TARGETS"


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
        return cls(**check_profile(data, source, expected_name=None), source=source)


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
    return Target(**check_profile(data, str(path), expected_name=path.stem), source=str(path))


