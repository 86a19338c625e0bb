"""Rendering records as terminal tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

#: Decimals a JSON number keeps, by the unit its key names (``cpu_avg_percent``,
#: ``memory_peak_bytes``); 0 makes it an integer. Other numbers are left as they are.
UNIT_DECIMALS = {"percent": 2, "bytes": 0, "seconds": 3, "cores": 3}
#: The unit of a row's numbers whose keys name none (a bottleneck's ``limit`` and ``peak``).
_RESOURCE_UNITS = {"cpu": "percent", "memory": "bytes"}


def to_json(data: Any, *, rounded: bool = False) -> str:
    """Stable, indented JSON; ``rounded``: the numbers as :func:`round_to_units` gives them.

    The text is ``json.dumps(data, indent=2)``'s, byte for byte, written in one pass that
    rounds as it goes: the standard encoder is pure Python once indented, and a report of 40,000
    rows spent a second in it and in rounding a copy first."""
    parts: list[str] = []
    _write(data, None, rounded, 0, parts)
    parts.append("\n")
    return "".join(parts)


def _write(data: Any, unit: str | None, rounded: bool, depth: int, out: list[str]) -> None:
    """Append ``data`` as ``json.dumps(indent=2)`` writes it at ``depth`` (see to_json)."""
    if isinstance(data, dict):
        if not data:
            out.append("{}")
            return
        flat = _flat(data, unit, rounded, depth)
        if flat is not None:
            out.append(flat)
            return
        inside = (_row_unit(data) or unit) if rounded else None
        pad = "\n" + "  " * (depth + 1)
        out.append("{")
        first = True
        for key, value in data.items():
            out.append(pad if first else "," + pad)
            first = False
            out.append(_key(key))
            out.append(": ")
            _write(value, (_unit(key) or inside) if rounded else None, rounded, depth + 1, out)
        out.append("\n" + "  " * depth + "}")
    elif isinstance(data, list | tuple):
        if not data:
            out.append("[]")
            return
        if _flat_rows(data, unit, rounded, depth, out):
            return
        pad = "\n" + "  " * (depth + 1)
        out.append("[")
        first = True
        for item in data:
            out.append(pad if first else "," + pad)
            first = False
            _write(item, unit, rounded, depth + 1, out)
        out.append("\n" + "  " * depth + "]")
    elif rounded and isinstance(data, float) and unit is not None and math.isfinite(data):
        decimals = UNIT_DECIMALS[unit]
        value = round(data) if decimals == 0 else round(data, decimals) + 0.0  # no -0.0
        out.append(_scalar(value))
    else:
        out.append(_scalar(data))


#: The exact types of the values a flat dict holds (subclasses take the general way).
_FLAT = frozenset({str, int, float, bool, type(None)})
#: Per depth, the C encoder writing a flat dict's items as ``indent=2`` does at that depth.
_FLAT_ENCODERS: dict[int, Callable[[Any], str]] = {}


def _flat(data: dict[Any, Any], unit: str | None, rounded: bool, depth: int) -> str | None:
    """A dict of string keys and scalar values (a report's row) as :func:`_write` writes it,
    by json's C encoder (the indented encoder is pure Python): its separator carries the
    newline and indent, as no value of a flat dict spans lines. None for any other dict."""
    items: dict[str, Any] = {}
    inside = (_row_unit(data) or unit) if rounded else None
    for key, value in data.items():
        kind = type(value)
        if type(key) is not str or kind not in _FLAT:
            return None
        if rounded and kind is float and math.isfinite(value):
            found = _unit(key) or inside
            if found is not None:
                decimals = UNIT_DECIMALS[found]
                value = round(value) if decimals == 0 else round(value, decimals) + 0.0
        items[key] = value
    text = _flat_encoder(depth)(items)  # {"key": value,<pad>"key": value}
    return "{\n" + "  " * (depth + 1) + text[1:-1] + "\n" + "  " * depth + "}"


def _flat_rows(
    items: list[Any] | tuple[Any, ...], unit: str | None, rounded: bool, depth: int, out: list[str]
) -> bool:
    """A list of flat dicts with the same keys in the same order (a report's rows) as
    :func:`_write` writes it, rounded a column at a time and encoded by json's C encoder in
    one call; False (nothing written) for any other list.

    The encoder's item separator carries the newline and the rows' indent: a flat dict's
    values never span lines (strings are escaped), so ``},<newline><indent>{`` only occurs
    between two rows, where the row's own indent is put back."""
    first = items[0]
    if type(first) is not dict or not first:
        return False
    names = tuple(first)
    if any(type(key) is not str or key in _ROW_UNIT_KEYS for key in names):
        return False
    if not all(type(item) is dict and tuple(item) == names for item in items):
        return False
    columns: list[Any] = list(zip(*[item.values() for item in items], strict=True))
    if not all(_FLAT.issuperset(map(type, column)) for column in columns):
        return False
    if rounded:
        # No key names a row's unit: each number's unit is its key's, else the list's.
        for index, key in enumerate(names):
            found = _unit(key) or unit
            if found is None:
                continue
            places = UNIT_DECIMALS[found]
            columns[index] = [
                (round(v) if places == 0 else round(v, places) + 0.0)
                if type(v) is float and math.isfinite(v)
                else v
                for v in columns[index]
            ]
        items = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    row = "  " * (depth + 1)
    inside = "  " * (depth + 2)
    text = _flat_encoder(depth + 1)(items)  # [{"k": v,<nl><inside>"k": v},<nl><inside>{...}]
    text = text[2:-2].replace("},\n" + inside + "{", f"\n{row}}},\n{row}{{\n{inside}")
    out.append(f"[\n{row}{{\n{inside}{text}\n{row}}}\n{'  ' * depth}]")
    return True


#: The keys whose value may name the unit of a row's other numbers (see :func:`_row_unit`).
_ROW_UNIT_KEYS = frozenset({"unit", "resource", "metric"})


def _flat_encoder(depth: int) -> Callable[[Any], str]:
    """The C encoder writing a flat dict at ``depth`` with ``indent=2``'s separators."""
    encode = _FLAT_ENCODERS.get(depth)
    if encode is None:
        pad = "\n" + "  " * (depth + 1)
        encode = json.JSONEncoder(separators=("," + pad, ": ")).encode
        _FLAT_ENCODERS[depth] = encode
    return encode


def _scalar(value: Any) -> str:
    """One scalar as json.dumps writes it (strings escaped to ASCII, floats by repr, NaN as
    NaN); the common types without the encoder's dispatch."""
    kind = type(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _ASCII(value)
    return _SCALAR(value)


#: Keys already escaped (a report repeats a few keys on every row).
_KEYS: dict[str, str] = {}

#: The standard encoder, for the rest (None, booleans, NaN, subclasses; TypeError as json's).
_SCALAR = json.JSONEncoder(indent=None).encode
_ASCII: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _key(key: Any) -> str:
    """A dict key as json.dumps writes it (keys that are not strings become strings)."""
    if type(key) is str:
        found = _KEYS.get(key)
        if found is None:
            found = _ASCII(key)
            if len(_KEYS) < 4096:
                _KEYS[key] = found
        return found
    if isinstance(key, str):
        return _ASCII(key)
    if isinstance(key, bool):
        return '"true"' if key else '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, float):
        return '"' + _SCALAR(key) + '"'
    return '"' + str(int(key)) + '"'


def round_to_units(data: Any, unit: str | None = None) -> Any:
    """``data`` (JSON-ready) with each number rounded to what it means: percents to 2
    decimals, bytes to integers, seconds and cores to 3 (:data:`UNIT_DECIMALS`), so float32
    noise such as ``94.000001`` prints ``94.0``.

    A number's unit is the one its key names, else its parent's (``"cpu_percent": {"avg": ...}``),
    else, in a row, the one its ``unit``, ``resource`` or ``metric`` value names.
    """
    if isinstance(data, dict):
        inside = _row_unit(data) or unit
        return {key: round_to_units(value, _unit(key) or inside) for key, value in data.items()}
    if isinstance(data, list):
        return [round_to_units(item, unit) for item in data]
    if isinstance(data, float) and unit is not None and math.isfinite(data):
        decimals = UNIT_DECIMALS[unit]
        return round(data) if decimals == 0 else round(data, decimals) + 0.0  # no -0.0
    return data


def _unit(name: object) -> str | None:
    """The first unit a name such as ``peak_percent_of_limit`` names (remembered per name: a
    report repeats a few keys on every row)."""
    if not isinstance(name, str):
        return None
    try:
        return _UNITS[name]
    except KeyError:
        found = next((word for word in name.split("_") if word in UNIT_DECIMALS), None)
        if len(_UNITS) < 4096:
            _UNITS[name] = found
        return found


_UNITS: dict[str, str | None] = {}


def _row_unit(row: dict[Any, Any]) -> str | None:
    for key in ("unit", "resource", "metric"):
        value = row.get(key)
        if isinstance(value, str):
            found = _unit(_RESOURCE_UNITS.get(value, value))
            if found is not None:
                return found
    return None


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[int] = (),
) -> str:
    """A plain-text table drawn by rich, fitted to the terminal, colourless when not a tty."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for index, name in enumerate(columns):
        grid.add_column(
            name,
            justify="right" if index in right else "left",
            no_wrap=index in right,
            min_width=len(name),
            overflow="fold",
        )
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    # Fit the terminal when there is one; files and pipes get full-width lines.
    # A pseudo-terminal may report a width of 0 (``script``, some CI runners): then 200.
    width = (
        int(os.environ.get("COLUMNS", "0") or 0)
        or (os.get_terminal_size().columns if os.isatty(1) else 0)
        or 200
    )
    console = Console(
        file=io.StringIO(), width=width, color_system=None, no_color=True, highlight=False
    )
    console.print(grid)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"
