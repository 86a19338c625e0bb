"""``devloop workspace collect`` and ``devloop run``: recording agents into the store."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    resolve_workspace_dir,
    size_value,
    stop_on_signals,
    workspace_dir_option,
)


def _status_line(status: object) -> str:
    from devloop.units import format_size

    s = status
    return (
        f"ticks {s.ticks}  processes {s.processes}  rows {s.rows}  "  # type: ignore[attr-defined]
        f"spool {format_size(s.spool_bytes)}  {s.elapsed:.0f}s  [{s.source}]"  # type: ignore[attr-defined]
    )


@click.command()
@workspace_dir_option
@click.option("--duration", help="Stop after this long (30s, 10m, 2h). Default: until Ctrl-C.")
@click.option("--interval", help="Seconds between ticks (1s, 0.5s). Default: checkInterval.")
@click.option(
    "--all",
    "all_processes",
    is_flag=True,
    help="Record every process of the machine; unattributed ones as project (other).",
)
@click.option(
    "--source",
    type=click.Choice(["auto", "procfs", "psutil"]),
    default="auto",
    show_default=True,
    help="How processes are read (procfs: Linux /proc fast path).",
)
@click.option("--retention", help="Drop data older than this after each hourly compaction (30d).")
@click.option("--max-size", help="Drop the oldest hours when the store grows past this (2GB).")
@click.option(
    "--enforce",
    is_flag=True,
    help="Also enforce the limits each tick (enforcementAction: pause, warn or throttle).",
)
@click.option("--profile", help="Resource profile to enforce (default: DEVLOOP_RESOURCE_PROFILE "
              "or the time windows).")  # fmt: skip
@click.option(
    "--ship-to",
    metavar="URI",
    help="Also ship each compacted hour to this fleet dataset (see workspace ship).",
)
@click.option(
    "--ship-endpoint-url",
    metavar="URL",
    help="The S3-compatible store of --ship-to (http(s)://HOST:PORT).",
)
@click.option("--prometheus", metavar="HOST:PORT",
              help="Also serve each tick to Prometheus on HOST:PORT (127.0.0.1:9464).")  # fmt: skip
def collect(
    workspace_dir: Path | None,
    duration: str | None,
    interval: str | None,
    all_processes: bool,
    source: str,
    retention: str | None,
    max_size: str | None,
    enforce: bool,
    profile: str | None,
    ship_to: str | None,
    ship_endpoint_url: str | None,
    prometheus: str | None,
) -> None:
    """Record what every agent process uses into the workspace's metrics store.

    Runs in the foreground with a live status line; Ctrl-C or SIGTERM flush and exit 0.
    A second collector on the same workspace is refused. With --enforce it is also the
    workspace's enforcer: every tick it compares usage with the limits in force and pauses,
    warns or throttles (see resource-enforcement.log); on exit every paused agent is resumed.

    \b
    Example:
      devloop workspace collect --workspace-dir .devloop-workspace --duration 10m --interval 1s
      devloop workspace collect --enforce --profile dev
      devloop workspace collect --retention 30d --max-size 2GB
      devloop workspace collect --ship-to s3://fleet-metrics/devloop
    """  # fmt: skip
    from devloop.cli.monitor import prometheus_value, serve_ticks
    from devloop.config import load_workspace
    from devloop.runner.record import Recorder

    seconds = duration_value(duration, "--duration")
    every = duration_value(interval, "--interval")
    max_age = duration_value(retention, "--retention")
    max_bytes = size_value(max_size, "--max-size", positive=True)
    address = prometheus_value(prometheus)
    if ship_to is not None:
        from devloop.store.ship import parse_target  # no pyarrow: the collector stays small

        parse_target(ship_to, ship_endpoint_url)
    elif ship_endpoint_url is not None:
        raise click.UsageError("--ship-endpoint-url needs --ship-to")
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    live = sys.stderr.isatty()
    with stop_on_signals() as stop:
        with Recorder(
            loaded, interval=every, all_processes=all_processes, source=source,
            retention=max_age, max_bytes=max_bytes, enforce=enforce, profile=profile,
            ship_to=ship_to, ship_endpoint_url=ship_endpoint_url,
        ) as rec:  # fmt: skip
            click.echo(f"Recording {loaded.metrics_dir} every {rec.interval:g}s "
                       f"(Ctrl-C to stop)", err=True)  # fmt: skip
            exporter = serve_ticks(rec, address) if address is not None else None

            def show(status: object) -> None:
                if live:
                    click.echo("\r" + _status_line(status) + "\033[K", nl=False, err=True)

            try:
                final = rec.run(duration=seconds, stop=stop, on_tick=show)
            finally:
                if exporter is not None:
                    exporter.close()
    if live:
        click.echo(err=True)
    click.echo("Done: " + _status_line(final), err=True)


@click.command(context_settings={"ignore_unknown_options": True})
@workspace_dir_option
@click.option("--project", "-p", required=True, help="The project the command belongs to.")
@click.option("--agent", "-a", required=True, help="The agent name (linter, test-runner...).")
@click.option("--interval", help="Seconds between ticks while recording. Default: checkInterval.")
@click.option(
    "--cwd",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Run the command in this folder (default: the current one).",
)
@click.option("--no-record", is_flag=True, help="Only tag the process; record nothing.")
@click.option("--no-enforce", is_flag=True, help="Start at once and never pause it (record only).")
@click.option("--profile", help="Resource profile in force (default: DEVLOOP_RESOURCE_PROFILE "
              "or the time windows).")  # fmt: skip
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    workspace_dir: Path | None,
    project: str,
    agent: str,
    interval: str | None,
    cwd: Path | None,
    no_record: bool,
    no_enforce: bool,
    profile: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND as an agent of a project, under the workspace's limits, recording it.

    The command runs without a shell, with DEVLOOP_PROJECT, DEVLOOP_AGENT and a new
    DEVLOOP_RUN_ID in its environment (its children inherit them). It starts when the workspace
    and the project are under their limits and fewer than maxConcurrentAgents run; otherwise it
    waits in the overflow queue (if enabled) or is refused. While it runs this records the
    workspace and enforces the limits, unless a collector already records it (then that
    collector records the command, and enforces if started with --enforce; this wrapper then
    costs ~30 ms). The run gets a row in the store's runs table, with its exact CPU and max RSS
    from the kernel. Exits with the command's exit code.

    \b
    Example:
      devloop run --workspace-dir .devloop-workspace --project api --agent linter -- ruff check .
      DEVLOOP_RESOURCE_PROFILE=ci devloop run -p api -a test-runner -- pytest -x
    """
    from devloop.config import load_workspace
    from devloop.runner.run import run_agent

    every = duration_value(interval, "--interval")
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    code = run_agent(loaded, project, agent, command, cwd=cwd, interval=every,
                     record=not no_record, enforce=not no_enforce, profile=profile)  # fmt: skip
    sys.exit(code)
