"""Sizes and latencies as written in profiles and on the command line.

Sizes: ``"8MB"`` = 8 * 10^6 bytes, ``"8MiB"`` = 8 * 2^20 bytes (KB/KiB, GB/GiB, TB/TiB alike),
a bare number is bytes. Latencies: ``"2ms@64"`` = 2 ms per batch of 64 (units ns, us, ms, s).
Durations (training budgets): ``"10m"``, ``"90s"``, ``"1.5h"``; a bare number is seconds.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from edgecompress.errors import TargetError

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


_DURATION_UNITS = {"": Decimal(1), "s": Decimal(1), "m": Decimal(60), "min": Decimal(60), "h": Decimal(3600)}
_DURATION_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-zA-Z]*)\s*$")
_DURATION_HELP = "expected a positive duration like '10m', '90s', '1.5h' or a number of seconds"


def parse_duration(text) -> float:
    """``"10m"`` -> 600.0, ``"90s"`` -> 90.0, ``"1.5h"`` -> 5400.0, ``45`` or ``"45"`` -> 45.0 (seconds).

    Units: s, m / min (minutes), h. Raises TargetError for anything that is not a positive duration."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise TargetError(f"invalid duration {text!r}: {_DURATION_HELP}")
    if isinstance(text, (int, float)):
        if not text > 0 or text == float("inf"):
            raise TargetError(f"invalid duration {text!r}: must be positive and finite")
        return float(text)
    m = _DURATION_RE.match(text)
    if not m:
        if text.strip().startswith("-"):
            raise TargetError(f"invalid duration {text!r}: must be positive")
        raise TargetError(f"invalid duration {text!r}: {_DURATION_HELP}")
    unit = m["unit"].lower()
    if unit not in _DURATION_UNITS:
        raise TargetError(f"invalid duration {text!r}: unknown unit {m['unit']!r} (use s, m or h)")
    seconds = Decimal(m["num"]) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise TargetError(f"invalid duration {text!r}: must be positive")
    return float(seconds)
