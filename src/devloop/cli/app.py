"""The ``devloop`` click application: every command, registered on one group.

Each command parses its options, calls one library function and renders what it returns.
Heavy libraries (polars, duckdb, pyarrow) are imported inside commands, never at module level,
so ``devloop --help`` stays instant.
"""

from __future__ import annotations

from typing import Any

import click

from devloop import __version__
from devloop.errors import DevloopError


class DevloopGroup(click.Group):
    """A group that turns :class:`DevloopError` into ``Error: ...`` and exit 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DevloopError as exc:
            raise click.ClickException(str(exc)) from exc
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
    from devloop.cli.simulate import simulate
    from devloop.cli.store import compact, store_info
    from devloop.cli.stress import stress_test
    from devloop.cli.tune import apply_tuning, autotune
    from devloop.cli.watch import watch
    from devloop.cli.workspace import workspace

    cli.add_command(workspace)
    cli.add_command(run)
    for command in (collect, compact, store_info, simulate):
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
