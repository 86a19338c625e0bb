"""The report commands: ``workspace metrics`` (and ``metrics compare``), ``workspace analytics
peak-usage|bottlenecks|efficiency|runs``, ``workspace health``, ``workspace sql``, ``audit query``.

Each parses its options, calls one function of :mod:`devloop.analytics` and writes what
:mod:`devloop.cli.render_reports` renders of the record it returns: a table, JSON (the record's
``to_json()``) or CSV (its main DataFrame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    emit,
    engine_options,
    fleet_options,
    format_option,
    output_option,
    report_folder,
    workspace_dir_option,
)
from devloop.cli.render_reports import (
    render_audit,
    render_bottlenecks,
    render_compare,
    render_efficiency,
    render_export,
    render_health,
    render_metrics,
    render_peak_usage,
    render_runs,
    render_sql,
)
from devloop.store.runs import TRIGGERS

if TYPE_CHECKING:
    from devloop.analytics.timerange import TimeRange

F = TypeVar("F", bound=Callable[..., Any])

#: How many bottlenecks the command shows without --limit or --all.
BOTTLENECKS_SHOWN = 20


def report_options(func: F) -> F:
    """--workspace-dir, --store, --endpoint-url, --host, --format, --output, --project,
    --agent, --start, --end, --period."""
    decorators = [
        workspace_dir_option,
        fleet_options,
        format_option("table", "json", "csv"),
        output_option,
        click.option(
            "--project",
            "projects",
            multiple=True,
            metavar="GLOB",
            help="Only projects matching GLOB (repeatable).",
        ),
        click.option(
            "--agent",
            "agents",
            multiple=True,
            metavar="GLOB",
            help="Only agents matching GLOB (repeatable).",
        ),
        click.option(
            "--start",
            metavar="TIME",
            help='Start of the range: "2 hours ago", "yesterday 09:00", ISO 8601.',
        ),
        click.option("--end", metavar="TIME", help="End of the range (same forms as --start)."),
        click.option(
            "--period",
            metavar="DURATION",
            help="Length of the range (30s, 5m, 24h, 7d); alone: the last DURATION "
            "of recorded data.",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def _range(start: str | None, end: str | None, period: str | None) -> TimeRange:
    from devloop.analytics.timerange import TimeRange, parse_moment, parse_period
    from devloop.errors import UsageError

    values: dict[str, Any] = {}
    for name, text, parse in (
        ("start", start, parse_moment),
        ("end", end, parse_moment),
        ("period", period, parse_period),
    ):
        if text is None:
            continue
        try:
            values[name] = parse(text)
        except UsageError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{name}") from exc
    try:
        return TimeRange(**values)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc


@contextmanager
def _store_warnings() -> Iterator[None]:
    """Show skipped store files as ``Warning: ...`` lines, even when the report fails."""
    from devloop.analytics import collected_warnings

    messages: list[str] = []
    try:
        with collected_warnings() as messages:
            yield
    finally:
        echo_warnings(messages)


# --- workspace metrics ---------------------------------------------------------------------


@click.group("metrics", invoke_without_command=True)
@report_options
@click.option("--detailed", is_flag=True, help="Add agents: file handles, threads, state.")
@click.option(
    "--compare-config",
    is_flag=True,
    help="Add configured vs in-force vs used (avg, p95) limits per project.",
)
@click.option(
    "--interval",
    metavar="DURATION",
    help="Export: one row per DURATION (1m, 5m) and project (agent with --detailed).",
)
@click.option(
    "--baseline", is_flag=True, help="Record the machine (no agents running) and write its summary."
)
@click.option(
    "--duration",
    metavar="DURATION",
    default="60",
    show_default=True,
    help="How long --baseline records (60, 5m).",
)
@engine_options
@click.pass_context
def metrics(
    ctx: click.Context,
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    detailed: bool,
    compare_config: bool,
    interval: str | None,
    baseline: bool,
    duration: str,
    engine: str,
    spark_master: str,
) -> None:
    """Workspace CPU and memory against the limits in force, per project.

    Shows the newest tick in the store (and how old it is when no collector runs). With
    --interval (or --format csv, 1m by default) it exports the history instead: one row per
    interval and project with avg and max CPU %, max memory, file handles and threads (agent
    runs export with `analytics runs --format csv`). --baseline records the machine for
    --duration and writes a summary; `metrics compare` compares two summaries. The export
    also runs on Spark (--engine spark).

    \b
    Example:
      devloop workspace metrics --workspace-dir .devloop-workspace
      devloop workspace metrics --detailed --compare-config
      devloop workspace metrics --format csv --start "2 hours ago" --interval 1m -o metrics.csv
      devloop workspace metrics --baseline --duration 60 --output baseline.json
      devloop workspace metrics --store /mnt/fleet --interval 5m --format json --engine spark
    """
    if ctx.invoked_subcommand is not None:
        return
    time_range = _range(start, end, period)
    seconds = duration_value(interval, "--interval")
    exporting = seconds is not None or fmt == "csv"
    if engine == "spark" and not exporting:
        raise click.UsageError("--engine spark runs the export only (--interval or --format csv)")
    if baseline and ctx.meta.get("devloop.store") is not None:
        raise click.UsageError("--baseline records this machine: not with --store")
    folder = report_folder(workspace_dir)
    if baseline:
        from devloop.cli.render import to_json
        from devloop.runner.record import record_baseline

        length = duration_value(duration, "--duration")
        assert length is not None
        click.echo(f"Recording a baseline for {length:g}s (no agents should run)...", err=True)
        with _store_warnings():
            summary = record_baseline(folder, duration=length)
        emit(to_json(summary), output)
        return
    if exporting and engine == "spark":
        from devloop.analytics.spark import export_spark, spark_engine

        with spark_engine(spark_master) as spark:
            exported = export_spark(spark, folder, time_range, projects, agents,
                                    interval=seconds or 60.0, detailed=detailed,
                                    hosts=_hosts())  # fmt: skip
        emit(render_export(exported, fmt), output)
        return
    if exporting:
        from devloop.analytics import export_metrics

        with _store_warnings():
            exported = export_metrics(
                folder, time_range, projects, agents, interval=seconds or 60.0, detailed=detailed
            )
        emit(render_export(exported, fmt), output)
        return
    from devloop.analytics import workspace_metrics

    with _store_warnings():
        view = workspace_metrics(
            folder, time_range, projects, agents, detailed=detailed, compare_config=compare_config
        )
    emit(render_metrics(view, fmt), output)


@metrics.command("compare")
@click.argument("baseline_file", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("active_file", type=click.Path(path_type=Path, dir_okay=False))
@format_option("table", "json", "csv")
@output_option
def compare(baseline_file: Path, active_file: Path, fmt: str, output: Path) -> None:
    """Compare two metrics summaries: what the agents add to the baseline.

    BASELINE_FILE comes from `metrics --baseline`, ACTIVE_FILE from `watch --metrics-output`
    (or another baseline).

    \b
    Example:
      devloop workspace metrics compare baseline.json active.json
    """
    from devloop.analytics import compare_summaries, read_summary

    frame = compare_summaries(read_summary(baseline_file), read_summary(active_file))
    emit(render_compare(frame, baseline_file, active_file, fmt), output)


# --- workspace analytics -------------------------------------------------------------------


@click.group("analytics")
def analytics() -> None:
    """Reports over the recorded history: peak usage, bottlenecks, efficiency, runs.

    \b
    Example:
      devloop workspace analytics peak-usage --workspace-dir .devloop-workspace --period 24h
    """


@analytics.command("peak-usage")
@report_options
@engine_options
def peak_usage(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    engine: str,
    spark_master: str,
) -> None:
    """Peak and p95 CPU, peak memory (with when), peak file handles and threads.

    Per project and agent; the workspace peak is the coincident peak (the highest per-tick
    sum), never a sum of the projects' peaks.

    \b
    Example:
      devloop workspace analytics peak-usage --workspace-dir .devloop-workspace --period 24h
      devloop workspace analytics peak-usage --store /mnt/fleet --engine spark
    """
    from devloop.analytics import peak_usage as run

    folder = report_folder(workspace_dir)
    time_range = _range(start, end, period)
    report = _on_engine(engine, spark_master, run, "peak_usage_spark", folder, time_range,
                        projects, agents)  # fmt: skip
    emit(render_peak_usage(report, fmt), output)


def _on_engine(
    engine: str,
    master: str,
    run: Callable[..., Any],
    on_spark: str,
    folder: Path,
    time_range: Any,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    **options: Any,
) -> Any:
    """The report ``run`` computes with DuckDB, or with ``engine`` "spark" the function of
    that name in :mod:`devloop.analytics.spark` (the same records) under --host."""
    if engine == "spark":
        from devloop.analytics import spark as reports

        with reports.spark_engine(master) as spark:
            return getattr(reports, on_spark)(spark, folder, time_range, projects, agents,
                                              hosts=_hosts(), **options)  # fmt: skip
    with _store_warnings():
        return run(folder, time_range, projects, agents, **options)


def _hosts() -> tuple[str, ...]:
    """The --host globs, for the Spark engine (DuckDB's reports read them from the context)."""
    hosts: tuple[str, ...] = click.get_current_context().meta.get("devloop.hosts") or ()
    return hosts


@analytics.command("bottlenecks")
@report_options
@click.option(
    "--threshold",
    type=click.FloatRange(0, min_open=True),
    default=80.0,
    show_default=True,
    help="Percent of the limit in force that counts as a bottleneck.",
)
@click.option(
    "--min-duration",
    metavar="DURATION",
    default="0s",
    show_default=True,
    help="Leave out intervals shorter than this (5s, 30s, 5m).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Show the N longest intervals.  [default: {BOTTLENECKS_SHOWN}]",
)
@click.option("--all", "show_all", is_flag=True, help="Show every interval (no --limit).")
@click.option(
    "--resource",
    type=click.Choice(["all", "cpu", "memory"]),
    default="all",
    show_default=True,
    help="Which resource to check.",
)
@engine_options
def bottlenecks(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    threshold: float,
    min_duration: str,
    limit: int | None,
    show_all: bool,
    resource: str,
    engine: str,
    spark_master: str,
) -> None:
    """Intervals where a project or the workspace used >= THRESHOLD % of its limit.

    Ranked longest first, each with the agents that drove it; the 20 longest unless --limit
    or --all says otherwise (the table says how many were left out).

    \b
    Example:
      devloop workspace analytics bottlenecks --threshold 80 --min-duration 30s
      devloop workspace analytics bottlenecks --min-duration 5s --all
      devloop workspace analytics bottlenecks --store /mnt/fleet --engine spark
    """
    from devloop.analytics import bottlenecks as run
    from devloop.errors import UsageError
    from devloop.units import parse_duration

    if show_all and limit is not None:
        raise click.UsageError("give --limit or --all, not both")
    try:
        shortest = parse_duration(min_duration)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-duration") from exc
    folder = report_folder(workspace_dir)
    resources = ("cpu", "memory") if resource == "all" else (resource,)
    time_range = _range(start, end, period)
    shown = None if show_all else (limit or BOTTLENECKS_SHOWN)
    report = _on_engine(engine, spark_master, run, "bottlenecks_spark", folder, time_range,
                        projects, agents, threshold=threshold, min_duration=shortest,
                        limit=shown, resources=resources)  # fmt: skip
    emit(render_bottlenecks(report, fmt, threshold, min_duration), output)


@analytics.command("efficiency")
@report_options
@engine_options
def efficiency(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    engine: str,
    spark_master: str,
) -> None:
    """Allocated vs used per project: utilisation, idle allocation, time over limit, pauses.

    An --output ending in .json is written as JSON unless --format says otherwise.

    \b
    Example:
      devloop workspace analytics efficiency --workspace-dir .devloop-workspace \\
          --output efficiency-report.json
      devloop workspace analytics efficiency --store /mnt/fleet --engine spark
    """
    from devloop.analytics import efficiency as run

    if str(output).endswith(".json") and fmt == "table":
        fmt = "json"
    folder = report_folder(workspace_dir)
    time_range = _range(start, end, period)
    report = _on_engine(engine, spark_master, run, "efficiency_spark", folder, time_range,
                        projects, agents)  # fmt: skip
    emit(render_efficiency(report, fmt), output)


@analytics.command("runs")
@report_options
@click.option(
    "--trigger",
    type=click.Choice([*TRIGGERS, "rule"]),
    help="Only runs started this way (rule: runs estimated from the ticks of agents devloop "
    "did not launch).",
)
@click.option(
    "--failed",
    is_flag=True,
    help="Only failed runs: a non-zero exit, ended by a signal, or incomplete.",
)
@click.option("--slowest", type=click.IntRange(min=1), metavar="N", help="Only the N longest runs.")
@click.option(
    "--summary",
    is_flag=True,
    help="Per project and agent instead: runs, failures, p50/p95 duration, CPU per run, max RSS.",
)
@click.option(
    "--no-estimated",
    "no_estimated",
    is_flag=True,
    help="Leave out the runs estimated from ticks (agents devloop did not launch).",
)
@engine_options
def runs(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    trigger: str | None,
    failed: bool,
    slowest: int | None,
    summary: bool,
    no_estimated: bool,
    engine: str,
    spark_master: str,
) -> None:
    """Agent runs that started in the range: duration, exit, CPU, memory, waits.

    One row per run devloop launched (`devloop run`, `watch`, stress-test), exact from the
    kernel; and, for agents attributed by rule, runs estimated from the ticks (trigger
    "rule": a span of ticks with a process of the agent). --format csv (or json) exports
    them: `{"runs": [...]}`, or with --summary `{"summary": [...]}`. Both also run on Spark
    (--engine spark).

    \b
    Example:
      devloop workspace analytics runs --period 24h --failed
      devloop workspace analytics runs --agent tests --slowest 10 --no-estimated
      devloop workspace analytics runs --summary --start "yesterday 09:00"
      devloop workspace analytics runs --format csv --period 7d -o runs.csv
      devloop workspace analytics runs --summary --store /mnt/fleet --engine spark
    """
    from devloop.analytics import run_summary, runs

    time_range = _range(start, end, period)
    folder = report_folder(workspace_dir)
    filters: dict[str, Any] = {
        "project": projects or None,
        "agent": agents or None,
        "trigger": trigger,
        "failed": True if failed else None,
        "slowest": slowest,
        "estimated": not no_estimated,
    }
    if engine == "spark":
        from devloop.analytics.spark import run_summary_spark, runs_spark, spark_engine

        on_spark = run_summary_spark if summary else runs_spark
        with spark_engine(spark_master) as spark:
            frame = on_spark(spark, folder, time_range, hosts=_hosts(), **filters)
    else:
        with _store_warnings():
            frame = (run_summary if summary else runs)(folder, time_range, **filters)
    emit(render_runs(frame, fmt, summary=summary), output)


# --- workspace health ----------------------------------------------------------------------


@click.command("health")
@report_options
@click.option("--detailed", is_flag=True, help="Also list every check's rows, not only problems.")
@click.option(
    "--memory-analysis",
    is_flag=True,
    help="Show the memory trend (MB/hour, fit) of every long-lived process.",
)
@click.option(
    "--leak-threshold",
    type=float,
    default=5.0,
    show_default=True,
    help="MB per hour of steady growth that counts as a leak.",
)
@click.option(
    "--min-life",
    metavar="DURATION",
    default="1h",
    show_default=True,
    help="Only processes that lived this long are checked for leaks.",
)
def health(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    detailed: bool,
    memory_analysis: bool,
    leak_threshold: float,
    min_life: str,
) -> None:
    """Memory and file-handle leaks, restart loops, stopped processes, collector and store.

    \b
    Example:
      devloop workspace health --detailed --memory-analysis
    """
    from devloop.analytics import health as run

    life = duration_value(min_life, "--min-life")
    assert life is not None
    folder = report_folder(workspace_dir)
    with _store_warnings():
        report = run(
            folder,
            _range(start, end, period),
            projects,
            agents,
            leak_mb_per_hour=leak_threshold,
            min_life=life,
        )

    emit(
        render_health(
            report, fmt, detailed=detailed, memory_analysis=memory_analysis, min_life=min_life
        ),
        output,
    )


# --- workspace sql, audit query -------------------------------------------------------------


@click.command("sql")
@click.argument("statement")
@report_options
def sql(
    statement: str,
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
) -> None:
    """Run a SQL STATEMENT over the views samples, processes, system, events, limits, runs.

    --start/--end/--period and --project/--agent narrow every view first. Read-only: one
    query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of a query) runs;
    writes, COPY, ATTACH, INSTALL/LOAD, SET, PRAGMA and files outside the store are refused.

    \b
    Example:
      devloop workspace sql "SELECT project, max(rss_bytes) FROM samples GROUP BY project"
    """
    from devloop.analytics import run_sql

    folder = report_folder(workspace_dir)
    with _store_warnings():
        frame = run_sql(folder, statement, _range(start, end, period), projects, agents)
    emit(render_sql(frame, fmt), output)


@click.group("audit")
def audit() -> None:
    """Audit what agents used.

    \b
    Example:
      devloop audit query --agent "*" --metric memory
    """


@audit.command("query")
@report_options
@click.option(
    "--metric",
    type=click.Choice(["cpu", "memory", "fds", "threads"]),
    default="memory",
    show_default=True,
    help="The metric to summarise.",
)
def audit_query(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
    metric: str,
) -> None:
    """Per-agent statistics (avg, min, p50, p95, max and when) of one metric.

    \b
    Example:
      devloop audit query --agent "*" --metric memory --project api-service
    """
    from devloop.analytics import audit_query as run

    folder = report_folder(workspace_dir)
    with _store_warnings():
        report = run(folder, metric, _range(start, end, period), projects, agents)
    emit(render_audit(report, fmt, metric), output)
