"""``devloop workspace simulate``: a synthetic workspace and its metrics history."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from devloop.simulate import ProgressCallback, SimulationSummary
    from devloop.simulate.calibrate import Calibration


def _interval(value: str) -> float:
    from devloop.errors import UsageError
    from devloop.simulate.generator import MAX_INTERVAL, MIN_INTERVAL
    from devloop.units import parse_duration

    try:
        seconds = parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise click.BadParameter(
            f"must be between {MIN_INTERVAL:g}s and {MAX_INTERVAL:g}s, not {value!r}",
            param_hint="--interval",
        )
    return seconds


def _start(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"expected a UTC date like 2026-01-05, not {value!r}", param_hint="--start"
        ) from exc


@click.command("simulate")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="The workspace folder to write: workspace.json, projects/ and metrics/. Required "
    "unless only saving a calibration.",
)
@click.option(
    "--days",
    type=click.FloatRange(0, min_open=True),
    default=7,
    show_default=True,
    help="Length of the history.",
)
@click.option(
    "--hours",
    type=click.FloatRange(0, min_open=True),
    help="Length of the history in hours, instead of --days (for small test stores).",
)
@click.option(
    "--projects",
    type=click.IntRange(1),
    help="Projects proj-1, proj-2, ...  [default: 3; with --calibrate-from: the recorded "
    "ones, cycled as <name>-2, <name>-3... when asked for more]",
)
@click.option(
    "--agents-per-project",
    type=click.IntRange(1),
    help="linter, formatter, test-runner, type-checker, then agent-5...  [default: 4; "
    "with --calibrate-from: the recorded agents]",
)
@click.option(
    "--processes-per-agent",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Concurrent processes per agent (they share its work).",
)
@click.option(
    "--interval", default="1s", show_default=True, help="Time between samples, e.g. 1s, 500ms, 10s."
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Same arguments and seed, same rows.",
)
@click.option(
    "--start",
    "start_text",
    metavar="YYYY-MM-DD",
    help="First day (UTC)  [default: 2026-01-05, a Monday]",
)
@click.option(
    "--cores",
    type=click.IntRange(1, 1024),
    default=2,
    show_default=True,
    help="CPU cores of the simulated host.",
)
@click.option(
    "--calibrate-from",
    "calibrate_from",
    metavar="STORE",
    type=click.Path(path_type=Path),
    help="Replay a real recording instead of the built-in model: run lengths, CPU and memory "
    "per run and the gaps between triggers come from STORE, a workspace (or metrics) folder "
    "with a runs table, or a JSON file saved with --save-calibration. No anomalies are "
    "planted. Example: --calibrate-from sample_data/.devloop-watch",
)
@click.option(
    "--save-calibration",
    "save_calibration",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --calibrate-from: write the calibration as JSON to FILE (small, versioned, "
    "meant to be committed), and print what it says; simulates too when --out is given. "
    "Example: --calibrate-from sample_data/.devloop-watch --save-calibration calib.json",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the folder's workspace.json and delete its metrics first.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def simulate(
    out: Path | None,
    days: float,
    hours: float | None,
    projects: int | None,
    agents_per_project: int | None,
    processes_per_agent: int,
    interval: str,
    seed: int,
    start_text: str | None,
    cores: int,
    calibrate_from: Path | None,
    save_calibration: Path | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write a simulated workspace with a realistic, deterministic usage history.

    Daily cycles, bursts of test runs, processes that come and go, and planted anomalies
    (a memory leak, file-handle growth, a project over its CPU limit for an hour) that are
    listed at the end. 7 days of 12 processes at 1s is about 7.3 million samples.

    With --calibrate-from, the projects, agents, runs and trigger gaps replay a real
    recording (see --calibrate-from; README, "devloop workspace simulate").

    \b
    Example:
      devloop workspace simulate --out sim/.devloop-workspace --days 7
      devloop workspace simulate --out small --hours 2 --interval 5s --seed 1
      devloop workspace simulate --out big --projects 5 --agents-per-project 5 \\
          --processes-per-agent 2 --cores 8
      devloop workspace simulate --out real --days 7 --calibrate-from sample_data/.devloop-watch
      devloop workspace simulate --calibrate-from sample_data/.devloop-watch \\
          --save-calibration calibration.json
    """
    seconds = _interval(interval)
    first_day = _start(start_text)
    if save_calibration is not None and calibrate_from is None:
        raise click.UsageError("--save-calibration needs --calibrate-from STORE")
    if out is None and save_calibration is None:
        raise click.UsageError("Missing option '--out'.")
    if calibrate_from is not None and agents_per_project is not None:
        raise click.UsageError(
            "--agents-per-project does not go with --calibrate-from: the agents are the "
            "recorded ones"
        )

    from devloop.simulate import DEFAULT_START
    from devloop.simulate import simulate as run

    calibration = None
    if calibrate_from is not None:
        from devloop.simulate.calibrate import calibration_from
        from devloop.simulate.calibrate import save_calibration as save

        calibration = calibration_from(calibrate_from)
        if save_calibration is not None:
            save(calibration, save_calibration)
            _echo_calibration(calibration, save_calibration)
    if out is None:
        return

    def go(progress: ProgressCallback | None) -> SimulationSummary:
        return run(
            out,
            days=days,
            hours=hours,
            projects=projects,
            agents_per_project=agents_per_project,
            processes_per_agent=processes_per_agent,
            interval=seconds,
            seed=seed,
            start=first_day or DEFAULT_START,
            cores=cores,
            progress=progress,
            overwrite=overwrite,
            calibration=calibration,
        )

    if quiet:
        summary = go(None)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TimeRemainingColumn(),
        )
        bar = Progress(*columns, console=Console(stderr=True), transient=True)
        task = bar.add_task("Simulating", total=None, rows=0)

        def report(done: int, total: int, rows: int) -> None:
            # Started on the first report, so an argument refused up front prints no bar.
            if not bar.live.is_started:
                bar.start()
            bar.update(task, completed=done, total=total, rows=rows)

        try:
            summary = go(report)
        finally:
            if bar.live.is_started:
                bar.stop()
    _echo_summary(summary)


def _echo_calibration(calibration: Calibration, path: Path) -> None:
    """What the calibration says, one line per recorded agent."""
    from devloop.units import format_size

    click.echo(
        f"Saved the calibration of {calibration.runs:,} runs ({calibration.source}, "
        f"{calibration.first:%Y-%m-%d %H:%M} to {calibration.last:%Y-%m-%d %H:%M} UTC) "
        f"to {path}"
    )
    for row in calibration.summary():
        click.echo(
            f"  {row['project']}/{row['agent']}: {row['runs']} runs, median "
            f"{row['median_seconds']:.3g} s (p90 {row['p90_seconds']:.3g} s), "
            f"{row['mean_cores']:.3g} cores, peak {format_size(row['median_peak_rss_bytes'])}; "
            f"{row['triggers']} triggers, gap median {row['median_gap_seconds']:.3g} s, "
            f"mean {row['mean_gap_seconds']:.3g} s"
        )


def _echo_summary(summary: SimulationSummary) -> None:
    from devloop.units import format_size

    tables = ", ".join(f"{name} {count:,}" for name, count in summary.rows.items())
    if summary.calibrated_from is not None:
        click.echo(f"Runs and triggers replay the recording {summary.calibrated_from}")
    click.echo(
        f"Wrote {summary.total_rows:,} rows ({tables}) in {summary.seconds:.1f}s "
        f"({summary.rows_per_second:,.0f} rows/s): {summary.files} files, "
        f"{format_size(summary.bytes)} in {summary.metrics_dir}"
    )
    for anomaly in summary.anomalies:
        who = f"{anomaly.project}/{anomaly.agent}" if anomaly.agent else anomaly.project
        click.echo(
            f"Planted {anomaly.kind}: {who}, {anomaly.start:%Y-%m-%d %H:%M} to "
            f"{anomaly.end:%Y-%m-%d %H:%M} UTC: {anomaly.description}"
        )
