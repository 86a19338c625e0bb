"""``devloop workspace dashboard`` and ``devloop workspace exporter``: watching a workspace live."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    resolve_workspace_dir,
    stop_on_signals,
    workspace_dir_option,
)

if TYPE_CHECKING:
    from devloop.exporter import Exporter
    from devloop.runner.record import Recorder

METRIC_CHOICES = ("cpu", "memory", "agents")


def metrics_value(text: str) -> tuple[str, ...]:
    """``cpu,memory,agents`` as a tuple, each checked against METRIC_CHOICES."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in METRIC_CHOICES]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown {', '.join(repr(n) for n in unknown) or 'empty list'} "
            f"(choose from {', '.join(METRIC_CHOICES)})",
            param_hint="--metrics",
        )
    return names


@click.command()
@workspace_dir_option
@click.option("--refresh", default="2s", show_default=True, help="Seconds between frames.")
@click.option(
    "--metrics",
    "metrics_text",
    default=",".join(METRIC_CHOICES),
    show_default=True,
    help="What to show, comma-separated: cpu, memory (bars and columns), agents (agents and "
    "the latest enforcement events).",
)
@click.option(
    "--window", default="5m", show_default=True, help="The span of the projects' sparklines."
)
@click.option(
    "--record/--no-record",
    default=False,
    show_default=True,
    help="Also record and enforce the workspace while no collector runs, as `devloop "
    "workspace collect --enforce` does. Without it the dashboard only reads the store.",
)
@click.option("--profile", help="With --record: the resource profile to enforce (default: "
              "DEVLOOP_RESOURCE_PROFILE or the time windows).")  # fmt: skip
def dashboard(
    workspace_dir: Path | None,
    refresh: str,
    metrics_text: str,
    window: str,
    record: bool,
    profile: str | None,
) -> None:
    """A live terminal dashboard of the workspace's usage against its limits.

    Workspace CPU and memory bars against the pool, one row per project with bars and a
    sparkline of the last minutes, the agents with their state (running, paused, throttled,
    queued, idle) and the latest enforcement events. It only reads the store and never
    changes it; the status line says when no collector runs. With --record it is the
    collector and enforcer itself while no other collector runs, and on quitting it stores
    its last ticks and resumes the agents it paused. q or Ctrl-C quits. Honours NO_COLOR.

    \b
    Example:
      devloop workspace dashboard --workspace-dir .devloop-workspace --refresh 5s \\
          --metrics cpu,memory,agents
      devloop workspace dashboard --record
    """
    from devloop.config import load_workspace
    from devloop.dashboard.app import run_dashboard

    if profile is not None and not record:
        raise click.UsageError("--profile is the profile to enforce: it needs --record")
    every = duration_value(refresh, "--refresh")
    span = duration_value(window, "--window")
    assert every is not None and span is not None  # both have defaults
    metrics = metrics_value(metrics_text)
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    run_dashboard(
        loaded, refresh=every, metrics=metrics, window=span, record=record, profile=profile
    )


@click.command()
@workspace_dir_option
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="TCP port to serve /metrics on (0: any free port).")  # fmt: skip
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (0.0.0.0 to let other machines scrape).",
)
@click.option(
    "--stale-after",
    help="Age (30s, 2m) beyond which the newest tick is stale: devloop_up 0 and no usage "
    "series. Default: 3 collector intervals, at least 10s.",
)
def exporter(workspace_dir: Path | None, port: int, host: str, stale_after: str | None) -> None:
    """Serve the workspace's newest tick to Prometheus (the exposition format, on /metrics).

    Per project and agent: CPU (percent of the machine and cores), memory, file handles,
    threads, their limits, agent states, pause counts and the queue length, read from the
    store at every scrape (and from enforcement-state.json while an enforcement runs). Only
    while the tick is live (devloop_up 1: fresh, and its collector runs); a stale tick exports
    just devloop_up 0 and its age. Runs until Ctrl-C or SIGTERM. contrib/grafana-devloop.json
    is a dashboard for these metrics.

    \b
    Example:
      devloop workspace exporter --workspace-dir .devloop-workspace --port 9464
      curl -s http://127.0.0.1:9464/metrics | grep devloop_project_cpu_percent
    """
    from devloop.config import load_workspace
    from devloop.exporter import StoreReadings, serve

    bound = duration_value(stale_after, "--stale-after")
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    with stop_on_signals() as stop:
        server = serve(StoreReadings(loaded), host=host, port=port, stale_after=bound)
        try:
            click.echo(f"Serving {loaded.metrics_dir} on {server.url} (Ctrl-C to stop)", err=True)
            while not stop.wait(1.0):
                pass
        finally:
            server.close()
    click.echo("Stopped.", err=True)


def prometheus_value(text: str | None) -> tuple[str, int] | None:
    """``collect --prometheus HOST:PORT`` (or PORT) as (host, port)."""
    from devloop.errors import UsageError
    from devloop.exporter import parse_address

    if text is None:
        return None
    try:
        return parse_address(text)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--prometheus") from exc


def serve_ticks(recorder: Recorder, address: tuple[str, int]) -> Exporter:
    """Serve every tick ``recorder`` takes to Prometheus on ``address`` (``collect``)."""
    from devloop.dashboard.snapshot import LiveSnapshots, attach
    from devloop.exporter import LiveReadings, serve

    source = LiveSnapshots(recorder.workspace)
    attach(recorder, source)
    server = serve(LiveReadings(source, recorder.interval), host=address[0], port=address[1])
    click.echo(f"Serving each tick to Prometheus on {server.url}", err=True)
    return server
