"""Conversions between units of length and mass."""

from __future__ import annotations

_FACTORS = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "g": 0.001, "kg": 1.0, "t": 1000.0}
_KIND = {"mm": "length", "cm": "length", "m": "length", "km": "length",
         "g": "mass", "kg": "mass", "t": "mass"}  # fmt: skip


def convert(value: float, source: str, target: str) -> float:
    """``value`` in ``source`` units expressed in ``target`` units."""
    if _KIND[source] != _KIND[target]:
        raise ValueError(f"cannot convert {_KIND[source]} to {_KIND[target]}")
    return value * _FACTORS[source] / _FACTORS[target]
