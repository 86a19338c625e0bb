"""``devloop workspace stress-test``: load every project, enforce, report how the limits held."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from devloop.cli._options import (
    echo_warnings,
    emit,
    output_option,
    resolve_workspace_dir,
    stop_on_signals,
)


def _number(value: str | None, option: str) -> float | None:
    from devloop.errors import UsageError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{option} must be a number, got {value!r}") from None


def _seconds(value: str | None, option: str) -> float | None:
    from devloop.errors import UsageError
    from devloop.units import parse_duration

    if value is None:
        return None
    if value.strip().startswith("-"):
        raise UsageError(f"{option} must be above 0 seconds, got {value!r}")
    return parse_duration(value)


def _workspace_folder(folder: Path | None, workspace_dir: Path | None) -> Path:
    from devloop.errors import UsageError

    if folder is not None and workspace_dir is not None and folder != workspace_dir:
        raise UsageError("give the workspace folder once: as an argument or as --workspace-dir")
    chosen = folder if folder is not None else workspace_dir
    if chosen is not None and not chosen.is_dir():
        raise UsageError(f"workspace folder not found: {chosen}")
    return resolve_workspace_dir(chosen)


@click.command("stress-test")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option("--workspace-dir", type=click.Path(path_type=Path), default=None,
              help="The .devloop-workspace folder (same as the FOLDER argument).")  # fmt: skip
@click.option("--duration", default="300s", show_default=True,
              help="How long to load the workspace (60s, 5m).")  # fmt: skip
@click.option("--target-cpu", default="80", show_default=True,
              help="CPU to aim at, percent of the whole machine (0-100).")  # fmt: skip
@click.option("--target-memory", default="90", show_default=True,
              help="Memory to aim at, percent of the WORKSPACE's memory limit (not of the "
              "machine); never more than half the machine's available memory.")  # fmt: skip
@click.option("--interval", default="1s", show_default=True,
              help="Seconds between checks (the stress test's checkInterval).")  # fmt: skip
@click.option("--ramp", help="Reach the targets in four steps over this long "
              "(default: the first quarter of --duration).")  # fmt: skip
@click.option("--files", default=64, show_default=True, type=int,
              help="Open file descriptors held per project.")  # fmt: skip
@click.option("--threads", default=8, show_default=True, type=int,
              help="Extra threads run per project.")  # fmt: skip
@click.option("--profile", help="Resource profile in force (default: DEVLOOP_RESOURCE_PROFILE "
              "or the time windows).")  # fmt: skip
@output_option
def stress_test(
    folder: Path | None,
    workspace_dir: Path | None,
    duration: str,
    target_cpu: str,
    target_memory: str,
    interval: str,
    ramp: str | None,
    files: int,
    threads: int,
    profile: str | None,
    output: Path,
) -> None:
    """Load every enabled project with real processes under enforcement; report how the
    limits held.

    Starts load agents in each enabled project (tagged stress-cpu, stress-memory,
    stress-files, stress-threads), sized so that together they use --target-cpu percent of
    the machine's CPU and --target-memory percent of the workspace's memory limit (the pool in
    force, NOT the machine's memory; capped at half the machine's available memory), split
    between projects in proportion to their shares and ramped up in four steps. Meanwhile the
    workspace is recorded and its limits enforced every --interval as enforcementAction says.
    At the end every load agent is stopped and anything paused is continued.

    The JSON report (--output) holds: "parameters", "machine" (cores, memory, load average),
    "enforcement" (action, event counts, the log), "workspace_totals", and per project in
    "projects": cpu_limit, memory_limit_bytes, the load aimed at, "series" (per tick: ts, t,
    cpu_percent, memory_bytes, from the store), and for "cpu" and "memory": limit, max,
    max_overshoot (max of usage - limit: points of CPU, bytes; negative = never over),
    seconds_over, longest_stretch_seconds, seconds_to_react (first tick over the limit to the
    pause/throttle event for it), held; plus pauses, resumes, throttles, warnings and held.
    A limit HELD when usage never went over it, or a reaction came within interval + 1 s of
    the first tick over and no stretch over it lasted longer than interval + 1 s. Memory
    counts paused processes too: a pause gives no memory back.

    \b
    Example:
      devloop workspace stress-test .devloop-workspace --duration 300 --target-cpu 80 \\
          --target-memory 90 --output stress-test-report.json
      devloop workspace stress-test --workspace-dir .devloop-workspace --duration 60s -o -
    """
    from devloop.cli.render import table, to_json
    from devloop.config import load_workspace
    from devloop.runner.stress import (
        SUMMARY_COLUMNS,
        StressOptions,
        run_stress,
        stress_report,
        summary_rows,
    )

    options = StressOptions(
        duration=_seconds(duration, "--duration") or 0.0,
        target_cpu=_number(target_cpu, "--target-cpu") or 0.0,
        target_memory=_number(target_memory, "--target-memory") or 0.0,
        interval=_seconds(interval, "--interval") or 0.0,
        ramp=_seconds(ramp, "--ramp"),
        files=files,
        threads=threads,
        profile=profile,
    )
    options.check()
    loaded = load_workspace(_workspace_folder(folder, workspace_dir))
    echo_warnings(loaded.warnings)
    with stop_on_signals() as stop, _progress(options.duration) as show:
        run = run_stress(loaded, options, stop=stop, on_progress=show)
    report = stress_report(run)
    to_stdout = str(output) == "-"
    emit(to_json(report), output)
    click.echo(
        table(SUMMARY_COLUMNS, summary_rows(report), right=range(2, len(SUMMARY_COLUMNS) - 1),
              title=f"Stress test: {report['enforcement']['action']}, "
                    f"{report['ticks']} ticks of {options.interval:g}s"),
        nl=False, err=to_stdout,
    )  # fmt: skip


class _progress:
    """A rich progress bar on a terminal, else a line every 10 s (on stderr)."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.bar: Any = None
        self.task: Any = None
        self.last_line = 0.0

    def __enter__(self) -> Any:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("stress test"), BarColumn(), TextColumn("{task.description}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("", total=self.duration)
        return self.show

    def show(self, progress: Any) -> None:
        text = (
            f"CPU {progress.workspace_cpu_percent:.1f}%  "
            f"mem {progress.workspace_memory_bytes / (1 << 20):.0f}MB  "
            f"paused {progress.paused}  pauses {progress.pauses}"
        )
        if self.bar is not None:
            self.bar.update(self.task, completed=progress.elapsed, description=text)
        elif progress.elapsed - self.last_line >= 10.0 or progress.elapsed >= self.duration:
            self.last_line = progress.elapsed
            click.echo(f"{progress.elapsed:.0f}/{self.duration:g}s  {text}", err=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
