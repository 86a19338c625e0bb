"""Rendering records as terminal tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from typing import Any


def to_json(data: Any) -> str:
    """Stable, indented JSON."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


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
