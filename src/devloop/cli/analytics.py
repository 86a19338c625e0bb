"""The report commands: ``workspace metrics`` (and ``metrics compare``), ``workspace analytics
peak-usage|bottlenecks|efficiency|runs``, ``workspace health``, ``workspace sql``, ``audit query``.

Each parses its options, calls one function of :mod:`devloop.analytics` and renders the record
it returns as a table, JSON (the record's ``to_json()``) or CSV (its main DataFrame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    emit,
    format_option,
    output_option,
    resolve_workspace_dir,
    workspace_dir_option,
)
from devloop.store.runs import TRIGGERS

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics.timerange import TimeRange

F = TypeVar("F", bound=Callable[..., Any])

MIB = 1024**2


def report_options(func: F) -> F:
    """--workspace-dir, --format, --output, --project, --agent, --start, --end, --period."""
    decorators = [
        workspace_dir_option,
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


# --- rendering ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return "; ".join(_driver(item) for item in value)
    return str(value)


def _driver(item: Any) -> str:
    if isinstance(item, dict) and "agent" in item:
        return f"{item['project']}/{item['agent']} {item['share_percent']:.0f}%"
    return str(item)


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value / MIB:.0f}MB"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}%"


def _csv(frame: pl.DataFrame) -> str:
    from devloop.analytics import iso
    from devloop.cli.render import to_csv

    def cell(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso(value)
        if isinstance(value, list):
            return "; ".join(_driver(item) for item in value)
        if isinstance(value, float):
            return round(value, 6) + 0.0
        return value

    rows = [[cell(v) for v in row] for row in frame.iter_rows()]
    return to_csv(frame.columns, rows)


def _table(
    frame: pl.DataFrame,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    title: str | None = None,
) -> str:
    from devloop.cli.render import table

    formats = formats or {}
    rows = [
        [formats.get(name, _cell)(value) for name, value in zip(frame.columns, row, strict=True)]
        for row in frame.iter_rows()
    ]
    numeric = [i for i, dtype in enumerate(frame.dtypes) if dtype.is_numeric()]
    return table(frame.columns, rows, title=title, right=numeric)


def _render(
    report: Any, fmt: str, output: Path, frame: pl.DataFrame, text: Callable[[], str]
) -> None:
    from devloop.cli.render import to_json

    if fmt == "json":
        emit(to_json(report.to_json()), output)
    elif fmt == "csv":
        emit(_csv(frame), output)
    else:
        emit(text(), output)


def _range_line(report: Any) -> str:
    return f"Range: {report.selection.label}\n"


def _notes(notes: tuple[str, ...] | list[str]) -> str:
    return "".join(f"Note: {note}\n" for note in notes)


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
) -> None:
    """Workspace CPU and memory against the limits in force, per project.

    Shows the newest tick in the store (and how old it is when no collector runs). With
    --interval (or --format csv, 1m by default) it exports the history instead: one row per
    interval and project with avg and max CPU %, max memory, file handles and threads (agent
    runs export with `analytics runs --format csv`). --baseline records the machine for
    --duration and writes a summary; `metrics compare` compares two summaries.

    \b
    Example:
      devloop workspace metrics --workspace-dir .devloop-workspace
      devloop workspace metrics --detailed --compare-config
      devloop workspace metrics --format csv --start "2 hours ago" --interval 1m -o metrics.csv
      devloop workspace metrics --baseline --duration 60 --output baseline.json
    """
    if ctx.invoked_subcommand is not None:
        return
    time_range = _range(start, end, period)
    seconds = duration_value(interval, "--interval")
    folder = resolve_workspace_dir(workspace_dir)
    if baseline:
        from devloop.analytics import record_baseline
        from devloop.cli.render import to_json

        length = duration_value(duration, "--duration")
        assert length is not None
        click.echo(f"Recording a baseline for {length:g}s (no agents should run)...", err=True)
        with _store_warnings():
            summary = record_baseline(folder, duration=length)
        emit(to_json(summary), output)
        return
    if seconds is not None or fmt == "csv":
        from devloop.analytics import export_metrics

        with _store_warnings():
            exported = export_metrics(
                folder, time_range, projects, agents, interval=seconds or 60.0, detailed=detailed
            )
        _render(
            exported,
            fmt,
            output,
            exported.rows,
            lambda: (
                _range_line(exported)
                + _table(
                    exported.rows,
                    {"cpu_avg_percent": _pct, "cpu_max_percent": _pct, "memory_max_bytes": _mb},
                )
            ),
        )
        return
    from devloop.analytics import workspace_metrics

    with _store_warnings():
        view = workspace_metrics(
            folder, time_range, projects, agents, detailed=detailed, compare_config=compare_config
        )
    frame = view.agents if view.agents is not None else view.projects
    _render(view, fmt, output, frame, lambda: _metrics_text(view))


def _metrics_text(view: Any) -> str:
    from devloop.analytics.timerange import format_moment

    def limit(value: float | None, shown: str) -> str:
        return f" / {shown} limit" if value is not None else " (no limit recorded)"

    cpu_limit = view.cpu_limit_percent
    memory_limit = view.memory_limit_bytes
    lines = [
        "Workspace Resource Usage",
        "═" * 25,
        f"CPU:        {view.cpu_percent:.1f}%"
        + limit(cpu_limit, f"{cpu_limit:g}%" if cpu_limit is not None else ""),
        f"Memory:     {view.memory_bytes / MIB:.0f}MB" + limit(memory_limit, _mb(memory_limit)),
        "",
        "Per-Project:",
    ]
    names = view.projects["project"].to_list()
    width = max((len(name) for name in names), default=0) + 1
    for row in view.projects.iter_rows(named=True):
        cpu = f"{row['cpu_percent']:.1f}%"
        lim = (
            f" / {row['cpu_limit_percent']:g}% limit"
            if row["cpu_limit_percent"] is not None
            else ""
        )
        mem = f"{row['memory_bytes'] / MIB:.0f}MB"
        mem_lim = (
            f" / {_mb(row['memory_limit_bytes'])}" if row["memory_limit_bytes"] is not None else ""
        )
        lines.append(f"{row['project'] + ':':<{width}} {cpu:>6}{lim}   {mem}{mem_lim}")
    age = view.age_seconds
    tick = f"Tick: {format_moment(view.at)}"
    if view.stale:
        tick += f" ({_age(age)} old: no collector is running; `devloop workspace collect`)"
    lines += ["", tick]
    text = "\n".join(lines) + "\n"
    if view.agents is not None:
        text += "\n" + _table(
            view.agents,
            {
                "cpu_percent": _pct,
                "cpu_limit_percent": _pct,
                "memory_bytes": _mb,
                "memory_limit_bytes": _mb,
            },
            title="Agents",
        )
    if view.config is not None:
        text += "\n" + _table(
            view.config,
            {
                "configured_cpu_percent": _pct,
                "in_force_cpu_percent": _pct,
                "used_avg_cpu_percent": _pct,
                "used_p95_cpu_percent": _pct,
                "configured_memory_bytes": _mb,
                "in_force_memory_bytes": _mb,
                "used_avg_memory_bytes": _mb,
                "used_p95_memory_bytes": _mb,
            },
            title=f"Configured vs actual ({view.selection.label})",
        )
    return text + _notes(view.notes)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes and not days else "",
        f"{secs}s" if not (days or hours or minutes) else "",
    ]
    return " ".join(part for part in parts if part)


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
    from devloop.cli.render import to_json

    frame = compare_summaries(read_summary(baseline_file), read_summary(active_file))
    if fmt == "json":
        emit(
            to_json(
                {
                    "baseline": str(baseline_file),
                    "active": str(active_file),
                    "rows": frame.to_dicts(),
                }
            ),
            output,
        )
    elif fmt == "csv":
        emit(_csv(frame), output)
    else:

        def value(metric: str) -> Callable[[Any], str]:
            return _pct if "cpu" in metric else (_mb if "bytes" in metric else _cell)

        from devloop.cli.render import table

        rows = [
            [scope, metric, stat, value(metric)(b), value(metric)(a), value(metric)(d)]
            for scope, metric, stat, b, a, d in frame.iter_rows()
        ]
        emit(table(list(frame.columns), rows, right=(3, 4, 5)), output)


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
def peak_usage(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
) -> None:
    """Peak and p95 CPU, peak memory (with when), peak file handles and threads.

    Per project and agent; the workspace peak is the coincident peak (the highest per-tick
    sum), never a sum of the projects' peaks.

    \b
    Example:
      devloop workspace analytics peak-usage --workspace-dir .devloop-workspace --period 24h
    """
    from devloop.analytics import peak_usage as run

    folder = resolve_workspace_dir(workspace_dir)
    with _store_warnings():
        report = run(folder, _range(start, end, period), projects, agents)
    formats = {
        "cpu_peak_percent": _pct,
        "cpu_p95_percent": _pct,
        "cpu_avg_percent": _pct,
        "memory_peak_bytes": _mb,
    }
    _render(
        report,
        fmt,
        output,
        report.peaks,
        lambda: _range_line(report) + _table(report.peaks, formats),
    )


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
    help="Only intervals lasting at least this long (30s, 5m).",
)
@click.option(
    "--resource",
    type=click.Choice(["all", "cpu", "memory"]),
    default="all",
    show_default=True,
    help="Which resource to check.",
)
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
    resource: str,
) -> None:
    """Intervals where a project or the workspace used >= THRESHOLD % of its limit.

    Ranked longest first, each with the agents that drove it.

    \b
    Example:
      devloop workspace analytics bottlenecks --threshold 80 --min-duration 30s
    """
    from devloop.analytics import bottlenecks as run
    from devloop.errors import UsageError
    from devloop.units import parse_duration

    try:
        shortest = parse_duration(min_duration)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-duration") from exc
    folder = resolve_workspace_dir(workspace_dir)
    resources = ("cpu", "memory") if resource == "all" else (resource,)
    with _store_warnings():
        report = run(
            folder,
            _range(start, end, period),
            projects,
            agents,
            threshold=threshold,
            min_duration=shortest,
            resources=resources,
        )

    def text() -> str:
        head = _range_line(report) + f"Threshold: {threshold:g}% of the limit in force\n"
        if report.intervals.is_empty():
            return head + "No bottleneck.\n" + _notes(report.notes)
        frame = report.intervals.with_columns()
        rows = []
        for row in frame.iter_rows(named=True):
            unit = _pct if row["resource"] == "cpu" else _mb
            rows.append(
                [
                    row["rank"],
                    row["scope"],
                    row["project"] or "(workspace)",
                    row["resource"],
                    _cell(row["start"]),
                    _cell(row["end"]),
                    f"{row['duration_seconds']:g}s",
                    unit(row["limit"]),
                    unit(row["peak"]),
                    _pct(row["peak_percent_of_limit"]),
                    _cell(row["drivers"]),
                ]
            )
        from devloop.cli.render import table

        return (
            head
            + table(
                [
                    "rank",
                    "scope",
                    "project",
                    "resource",
                    "start",
                    "end",
                    "duration",
                    "limit",
                    "peak",
                    "peak/limit",
                    "drivers",
                ],
                rows,
                right=(0, 6, 7, 8, 9),
            )
            + _notes(report.notes)
        )

    _render(report, fmt, output, report.intervals, text)


@analytics.command("efficiency")
@report_options
def efficiency(
    workspace_dir: Path | None,
    fmt: str,
    output: Path,
    projects: tuple[str, ...],
    agents: tuple[str, ...],
    start: str | None,
    end: str | None,
    period: str | None,
) -> None:
    """Allocated vs used per project: utilisation, idle allocation, time over limit, pauses.

    An --output ending in .json is written as JSON unless --format says otherwise.

    \b
    Example:
      devloop workspace analytics efficiency --workspace-dir .devloop-workspace \\
          --output efficiency-report.json
    """
    from devloop.analytics import efficiency as run

    if str(output).endswith(".json") and fmt == "table":
        fmt = "json"
    folder = resolve_workspace_dir(workspace_dir)
    with _store_warnings():
        report = run(folder, _range(start, end, period), projects, agents)

    def text() -> str:
        frame = report.projects
        # The report's own column order, split by resource (efficiency.EFFICIENCY_COLUMNS).
        cpu = frame.select(
            "scope", "project", *[c for c in frame.columns if c.startswith("cpu_")], "pauses"
        )
        memory = frame.select(
            "scope", "project", *[c for c in frame.columns if c.startswith("memory_")]
        )
        pct = {c: _pct for c in cpu.columns if c.endswith("percent")}
        mem = {c: _mb for c in memory.columns if c.endswith("bytes")}
        mem["memory_utilisation_percent"] = _pct
        return (
            _range_line(report)
            + _table(cpu, pct, title="CPU (% of the machine)")
            + "\n"
            + _table(memory, mem, title="Memory")
            + _notes(report.notes)
        )

    _render(report, fmt, output, report.projects, text)


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
) -> None:
    """Agent runs that started in the range: duration, exit, CPU, memory, waits.

    One row per run devloop launched (`devloop run`, `watch`, stress-test), exact from the
    kernel; and, for agents attributed by rule, runs estimated from the ticks (trigger
    "rule": a span of ticks with a process of the agent). --format csv (or json) exports
    them: `{"runs": [...]}`, or with --summary `{"summary": [...]}`.

    \b
    Example:
      devloop workspace analytics runs --period 24h --failed
      devloop workspace analytics runs --agent tests --slowest 10 --no-estimated
      devloop workspace analytics runs --summary --start "yesterday 09:00"
      devloop workspace analytics runs --format csv --period 7d -o runs.csv
    """
    from devloop.analytics import records, run_summary, runs
    from devloop.cli.render import to_json

    time_range = _range(start, end, period)
    folder = resolve_workspace_dir(workspace_dir)
    run = run_summary if summary else runs
    with _store_warnings():
        frame = run(
            folder,
            time_range,
            project=projects or None,
            agent=agents or None,
            trigger=trigger,
            failed=True if failed else None,
            slowest=slowest,
            estimated=not no_estimated,
        )
    if fmt == "json":
        emit(to_json({"summary" if summary else "runs": records(frame)}), output)
    elif fmt == "csv":
        emit(_csv(frame), output)
    elif frame.is_empty():
        emit("No runs started in the range.\n", output)
    elif summary:
        names = {
            "duration_p50_seconds": "duration_p50",
            "duration_p95_seconds": "duration_p95",
            "cpu_mean_seconds": "cpu_mean",
            "cpu_p95_seconds": "cpu_p95",
            "max_rss_bytes": "max_rss",
        }
        formats = {name: _seconds for name in names.values()} | {"max_rss": _mb}
        emit(_table(frame.rename(names), formats), output)
    else:
        names = {
            "exit_code": "exit",
            "duration_seconds": "duration",
            "queue_wait_seconds": "queued",
            "cpu_seconds": "cpu",
            "max_rss_bytes": "max_rss",
            "peak_rss_bytes": "peak_rss",
        }
        shown = frame.select(
            "started", "project", "agent", "trigger", "status", "exit_code", "signal",
            "duration_seconds", "queue_wait_seconds", "cpu_seconds", "peak_cores",
            "max_rss_bytes", "peak_rss_bytes", "run_id",
        ).rename(names)  # fmt: skip
        formats = {"duration": _seconds, "queued": _seconds, "cpu": _seconds,
                   "max_rss": _mb, "peak_rss": _mb}  # fmt: skip
        text = _table(shown, formats)
        if frame["estimated"].any():
            text += _notes(
                ['runs of trigger "rule" are estimated from the ticks (agents devloop did '
                 "not launch); --no-estimated leaves them out"]
            )  # fmt: skip
        emit(text, output)


def _seconds(value: float | None) -> str:
    """``1.3s`` under a minute, else ``2m``, ``1h 5m`` (see :func:`_age`)."""
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else _age(value)


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
    folder = resolve_workspace_dir(workspace_dir)
    with _store_warnings():
        report = run(
            folder,
            _range(start, end, period),
            projects,
            agents,
            leak_mb_per_hour=leak_threshold,
            min_life=life,
        )

    def text() -> str:
        import polars as pl

        lines = [_range_line(report).rstrip("\n")]
        lines.append("Healthy." if report.healthy else f"{len(report.findings)} problem(s):")
        lines += [f"  - {finding}" for finding in report.findings]
        out = "\n".join(lines) + "\n"
        trend = {
            "start_value": _cell,
            "end_value": _cell,
            "slope_per_hour": _cell,
            "tau": lambda v: f"{v:.2f}",
        }
        columns = [
            "project",
            "agent",
            "pid",
            "first",
            "last",
            "hours",
            "start_value",
            "end_value",
            "slope_per_hour",
            "tau",
            "leak",
        ]
        if memory_analysis:
            memory = (
                report.memory.select(columns)
                .rename(
                    {
                        "start_value": "start_mb",
                        "end_value": "end_mb",
                        "slope_per_hour": "mb_per_hour",
                    }
                )
                .with_columns(pl.col("start_mb", "end_mb") / MIB)
            )
            out += "\n" + _table(memory, {"tau": trend["tau"]}, title="Memory trends")
        if detailed:
            fds = report.fds.select(columns).rename({"slope_per_hour": "fds_per_hour"})
            out += "\n" + _table(fds, {"tau": trend["tau"]}, title="File-handle trends")
            out += "\n" + _table(report.restarts.head(20), title="Short-lived processes per hour")
            out += "\n" + _table(report.stopped, title="Stopped processes")
            out += (
                f"\nCollector: newest tick {_cell(report.newest_tick) or 'none'}"
                f" ({'fresh' if report.collector_fresh else 'stale'})\n"
                f"Store: {report.spool_segments} spool segment(s), {report.spool_bytes} bytes\n"
            )
        return out

    frame = report.memory if memory_analysis else report.fds if detailed else report.memory
    _render(report, fmt, output, frame, text)


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
    """Run a SQL STATEMENT over the views samples, processes, system, events, limits.

    --start/--end/--period and --project/--agent narrow every view first.

    \b
    Example:
      devloop workspace sql "SELECT project, max(rss_bytes) FROM samples GROUP BY project"
    """
    from devloop.analytics import records, run_sql
    from devloop.cli.render import to_json

    folder = resolve_workspace_dir(workspace_dir)
    with _store_warnings():
        frame = run_sql(folder, statement, _range(start, end, period), projects, agents)
    if fmt == "json":
        emit(to_json(records(frame)), output)
    elif fmt == "csv":
        emit(_csv(frame), output)
    else:
        emit(_table(frame, {}), output)


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

    folder = resolve_workspace_dir(workspace_dir)
    with _store_warnings():
        report = run(folder, metric, _range(start, end, period), projects, agents)
    show = _pct if metric == "cpu" else _mb if metric == "memory" else _cell
    formats = {name: show for name in ("avg", "min", "p50", "p95", "max")}
    _render(
        report,
        fmt,
        output,
        report.agents,
        lambda: _range_line(report) + _table(report.agents.drop("metric", "unit"), formats),
    )
