"""The ``devloop`` click application: every command, registered on one group.

Each command parses its options, calls one library function and renders what it returns.
Heavy libraries (polars, duckdb, pyarrow) are imported inside commands, never at module level,
so ``devloop --help`` stays instant.
"""

from __future__ import annotations

import re
from typing import Any

import click

from devloop import __version__
from devloop.errors import DevloopError

#: DuckDB's pointer under a quoted query line: ``LINE 1: SELEC 1`` then ``        ^^^^^``.
_QUERY_LINE = re.compile(r"^LINE (\d+): ")


def one_line(message: str) -> str:
    """``message`` on one line, as every ``Error:`` is: its lines joined by a space, DuckDB's
    quoted query line and the ``^^^`` under it turned into ``(at line L, column C)``."""
    lines = message.splitlines()
    parts: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        quoted = _QUERY_LINE.match(line)
        below = lines[index + 1] if index + 1 < len(lines) else ""
        if quoted and below.strip() and set(below.strip()) == {"^"}:
            column = len(below) - len(below.lstrip()) - quoted.end() + 1
            parts.append(f"(at line {quoted[1]}, column {column})")
            index += 2
            continue
        if line.strip():
            parts.append(line.strip())
        index += 1
    return " ".join(parts)


class DevloopGroup(click.Group):
    """A group that turns :class:`DevloopError` into ``Error: ...`` and exit 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DevloopError as exc:
            raise click.ClickException(one_line(str(exc))) from exc
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=DevloopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devloop")
def cli() -> None:
    """Share one machine between the background agents of many projects.

    DevLoop Workspace records what every agent really uses, shares CPU and memory between
    projects by strategy, enforces the limits, and turns the history into better limits.

    \b
    Example:
      devloop workspace init . --project api=services/api --project web=services/web
      devloop workspace limits --format json
    """


def _register() -> None:
    from devloop.cli.analytics import analytics, audit, health, metrics, sql
    from devloop.cli.monitor import dashboard, exporter
    from devloop.cli.record import collect, run
    from devloop.cli.ship import ship
    from devloop.cli.simulate import simulate
    from devloop.cli.store import compact, store_info
    from devloop.cli.stress import stress_test
    from devloop.cli.tune import apply_tuning, autotune
    from devloop.cli.watch import watch
    from devloop.cli.workspace import workspace

    cli.add_command(workspace)
    cli.add_command(run)
    for command in (collect, compact, store_info, simulate, ship):
        workspace.add_command(command)
    for command in (metrics, analytics, health, sql):
        workspace.add_command(command)
    workspace.add_command(dashboard)
    workspace.add_command(exporter)
    workspace.add_command(stress_test)
    workspace.add_command(autotune)
    workspace.add_command(apply_tuning)
    cli.add_command(audit)
    cli.add_command(watch)


_register()
