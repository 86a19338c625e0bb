"""Sizes and durations as users write them.

MB and GB are binary here (``"2GB"`` is 2147483648 bytes): the resource-sharing guide's own
figures require it (2/5 of 2GB is 819MB). ``MiB``/``GiB`` spell the same units; ``KB``/``K``,
``MB``/``M``, ``GB``/``G``, ``TB``/``T`` likewise. A bare number in a size is megabytes, as DevLoop
0.10 wrote ``maxMemory``.
"""

from __future__ import annotations

import math
import re

from devloop.errors import UsageError

KIB = 1024
MIB = 1024**2
GIB = 1024**3

_SIZE_UNITS = {
    "b": 1,
    "k": KIB, "kb": KIB, "kib": KIB,
    "m": MIB, "mb": MIB, "mib": MIB,
    "g": GIB, "gb": GIB, "gib": GIB,
    "t": 1024**4, "tb": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)")


def parse_size(text: str | int | float) -> int:
    """Bytes in a size such as ``"512MB"``, ``"1.5GiB"`` or ``512`` (a bare number is MB).

    >>> parse_size("2GB")
    2147483648
    >>> parse_size(128)
    134217728
    """
    if isinstance(text, bool):
        raise UsageError(f"not a size: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise UsageError(f"not a size: {text!r} (must be a non-negative number of MB)")
        return round(text * MIB)
    if text.strip().startswith("-"):
        raise UsageError(f"size must not be negative: {text!r}")
    match = _SIZE_RE.match(text)
    if match is None:
        raise UsageError(f"not a size: {text!r} (expected a number and a unit, like '512MB')")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower()) if unit else MIB
    if factor is None:
        raise UsageError(f"unknown size unit {unit!r} in {text!r} (use B, KB, MB, GB, TB)")
    return round(float(number) * factor)


def format_size(n_bytes: float) -> str:
    """A size in the largest binary unit that keeps it at or above 1: ``'819.2MB'``, ``'2GB'``."""
    for unit, factor in (("TB", 1024**4), ("GB", GIB), ("MB", MIB), ("KB", KIB)):
        if abs(n_bytes) >= factor:
            value = n_bytes / factor
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{int(n_bytes)}B"


def mb(n_bytes: float) -> float:
    """Bytes as binary megabytes."""
    return n_bytes / MIB


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as ``"30s"``, ``"5m"``, ``"24h"``, ``"7d"``, ``"1h30m"``, ``10``.

    A bare number is seconds.
    """
    if isinstance(text, bool):
        raise UsageError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise UsageError(f"not a duration: {text!r}")
        return float(text)
    stripped = text.strip().lower()
    if not stripped:
        raise UsageError("empty duration")
    total = 0.0
    position = 0
    for match in _DURATION_RE.finditer(stripped):
        if stripped[position : match.start()].strip():
            break
        number, unit = match.groups()
        factor = _DURATION_UNITS.get(unit or "s")
        if factor is None:
            raise UsageError(f"unknown duration unit {unit!r} in {text!r} (use s, m, h, d)")
        total += float(number) * factor
        position = match.end()
    if position == 0 or stripped[position:].strip():
        raise UsageError(f"not a duration: {text!r} (expected something like 30s, 5m, 24h, 7d)")
    return total
