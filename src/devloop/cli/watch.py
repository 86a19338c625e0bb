"""``devloop watch``: run the agents on file changes, recording and enforcing meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    resolve_workspace_dir,
    stop_on_signals,
    workspace_dir_option,
)

#: Lines of a failed run's output shown under its line (without --verbose).
FAILED_TAIL = 20
INDENT = "    "


def _run_line(result: Any) -> str:
    if result.code is None:
        return f"{result.name}: not run: {result.reason}"
    killed = f" (signal {result.signal})" if result.signal is not None else ""
    return f"{result.name}: exit {result.code}{killed} after {result.seconds:.1f}s"


def _run_text(result: Any, verbose: bool = False) -> str:
    """What the console shows of one run: its line, then its output (all of it with
    ``verbose``; else the last FAILED_TAIL lines of a run that failed), indented."""
    from devloop.runner.watch import log_lines

    line = _run_line(result)
    if result.code is None or result.log_path is None or not (verbose or result.code != 0):
        return line
    output = log_lines(result.log_path, None if verbose else FAILED_TAIL)
    return "\n".join([line, *(f"{INDENT}{text}" if text else "" for text in output)])


@click.command()
@click.argument(
    "path", type=click.Path(path_type=Path, exists=True, file_okay=False), default=Path(".")
)
@workspace_dir_option
@click.option(
    "--metrics-output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="On exit, write the metrics summary of the watch here (for `metrics compare`).",
)
@click.option(
    "--all",
    "all_processes",
    is_flag=True,
    help="Record every process of the machine, not only the agents (the rest as (other)), as "
    "`metrics --baseline` does: for a --metrics-output to compare with a baseline.",
)
@click.option("--verbose", "-v", is_flag=True,
              help="Show every run's output under its line (else only a failed run's last "
              f"{FAILED_TAIL} lines).")  # fmt: skip
@click.option("--profile", help="Resource profile to enforce (default: DEVLOOP_RESOURCE_PROFILE "
              "or the time windows).")  # fmt: skip
@click.option("--duration", help="Stop after this long (30s, 10m, 2h). Default: until Ctrl-C.")
@click.option("--debounce", default="0.5s", show_default=True,
              help="Quiet time (no change at all) before the agents run: a burst of changes "
              "is one round, however long (a stream that never pauses: 60s at most).")  # fmt: skip
@click.option("--interval", help="Seconds between ticks of the collector and the enforcement "
              "(1s). Default: checkInterval.")  # fmt: skip
def watch(
    path: Path,
    workspace_dir: Path | None,
    metrics_output: Path | None,
    all_processes: bool,
    verbose: bool,
    profile: str | None,
    duration: str | None,
    debounce: str,
    interval: str | None,
) -> None:
    """Run the projects' agents when their files change, within the workspace's limits.

    Watches the folders of the enabled projects in or around PATH. Once they have been quiet
    for --debounce after changes, every enabled agent with a command whose triggers
    (file:created, file:modified, file:deleted; none = any) and config.filePatterns match runs
    in its project's folder, one run at a time per agent, through the overflow queue
    (maxConcurrentAgents). The watch
    records the workspace and enforces its limits (it is the workspace's collector: stop any
    other one first). Ctrl-C or SIGTERM end the running agents and exit 0.

    One line per run (`api/linter: exit 0 after 1.3s`); the agents' output goes to
    <workspace-dir>/logs/<project>/<agent>/<run_id>.log (the newest 20 per agent, at most 7 days
    old), shown under the line with --verbose, or its last 20 lines when the run fails. Every
    run is a row of the store's `runs` table (trigger watch). --all records every process of
    the machine, as `metrics --baseline` does, for comparing the watch with a baseline.

    \b
    Example:
      devloop watch . --workspace-dir .devloop-workspace --verbose
      devloop watch . --all --metrics-output active.json --duration 10m
      devloop workspace metrics compare baseline.json active.json
      DEVLOOP_RESOURCE_PROFILE=dev devloop watch .
      devloop watch services/api --profile ci --duration 10m --interval 1s
    """
    from devloop.config import load_workspace
    from devloop.runner.watch import watch_workspace

    seconds = duration_value(duration, "--duration")
    quiet = duration_value(debounce, "--debounce")
    every = duration_value(interval, "--interval")
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)

    def ready(projects: list[Any], recorder: Any) -> None:
        manager = recorder.manager
        profile_name = manager.allocation.profile if manager is not None else None
        click.echo(
            f"Watching {len(projects)} project(s) under {path.resolve()} (Ctrl-C to stop); "
            f"recording every {recorder.interval:g}s, enforcing "
            f"{loaded.config.global_.resource_limits.enforcement_action}"
            + (f" (profile {profile_name})" if profile_name else ""),
            err=True,
        )
        for project in projects:
            names = ", ".join(a.agent for a in project.agents) or "no agent with a command"
            click.echo(f"  {project.name}: {names}", err=True)

    def on_run(result: Any) -> None:
        click.echo(_run_text(result, verbose))  # one write: runs end in threads of their own

    with stop_on_signals() as stop:
        summary = watch_workspace(
            loaded, path, profile=profile, interval=every, debounce=quiet or 0.5,
            duration=seconds, metrics_output=metrics_output, all_processes=all_processes,
            stop=stop, on_ready=ready, on_run=on_run,
        )  # fmt: skip
    click.echo(
        f"Done: {summary.runs} run(s), {summary.failed} failed, {summary.dropped} not run; "
        f"{summary.status.ticks} ticks recorded",
        err=True,
    )
    if summary.metrics_output is not None:
        click.echo(f"Wrote {summary.metrics_output}", err=True)
