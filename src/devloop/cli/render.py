"""Rendering records as terminal tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

#: Decimals a JSON number keeps, by the unit its key names (``cpu_avg_percent``,
#: ``memory_peak_bytes``); 0 makes it an integer. Other numbers are left as they are.
UNIT_DECIMALS = {"percent": 2, "bytes": 0, "seconds": 3, "cores": 3}
#: The unit of a row's numbers whose keys name none (a bottleneck's ``limit`` and ``peak``).
_RESOURCE_UNITS = {"cpu": "percent", "memory": "bytes"}


def to_json(data: Any, *, rounded: bool = False) -> str:
    """Stable, indented JSON; ``rounded``: the numbers as :func:`round_to_units` gives them."""
    return json.dumps(round_to_units(data) if rounded else data, indent=2, sort_keys=False) + "\n"


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
    """The first unit a name such as ``peak_percent_of_limit`` names."""
    if not isinstance(name, str):
        return None
    return next((word for word in name.split("_") if word in UNIT_DECIMALS), None)


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
