"""How each report command renders its record: a table and notes (the text), JSON (the record's
``to_json()``, numbers rounded to their units) or CSV (its main DataFrame).

One ``render_*`` function per report, called by its command in :mod:`devloop.cli.analytics` with
the record and the options that shape the text; each returns what the command writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.cli.render import UNIT_DECIMALS, _unit, table, to_csv, to_json

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics import (
        Audit,
        Bottlenecks,
        Efficiency,
        Health,
        MetricsExport,
        PeakUsage,
        WorkspaceMetrics,
    )
    from devloop.store.db import Rows

MIB = 1024**2


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
    """Whole MB, or under 1 MB in KB or B (``0MB`` said nothing about a small process)."""
    if value is None:
        return ""
    if abs(value) < MIB:
        from devloop.units import format_size

        return format_size(value)
    return f"{value / MIB:.0f}MB"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}%"


def _csv(frame: pl.DataFrame) -> str:
    from devloop.analytics import iso

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


def _csv_rows(rows: Rows) -> str:
    """:func:`_csv` of :meth:`Rows.frame`, from the rows themselves (no polars)."""
    from devloop.analytics import iso

    def cell(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso(value)
        if isinstance(value, float):
            return round(value, 6) + 0.0
        return value

    return to_csv(rows.columns, [[cell(v) for v in row] for row in rows.rows])


def _table_rows(
    rows: Rows, formats: Mapping[str, Callable[[Any], str]], title: str | None = None
) -> str:
    """:func:`_table` of :meth:`Rows.frame`, from the rows themselves (no polars)."""
    cells = [
        [formats.get(name, _cell)(value) for name, value in zip(rows.columns, row, strict=True)]
        for row in rows.rows
    ]
    return table(rows.columns, cells, title=title, right=rows.numeric)


def _render_rows(report: Any, fmt: str, rows: Rows, text: Callable[[], str]) -> str:
    """:func:`_render` of a record whose main rows are ``rows`` (DuckDB's, not a DataFrame)."""
    if fmt == "json":
        return to_json(report.to_json(), rounded=True)
    if fmt == "csv":
        return _csv_rows(rows)
    return text()


def _table(
    frame: pl.DataFrame,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    title: str | None = None,
) -> str:
    formats = formats or {}
    rows = [
        [formats.get(name, _cell)(value) for name, value in zip(frame.columns, row, strict=True)]
        for row in frame.iter_rows()
    ]
    numeric = [i for i, dtype in enumerate(frame.dtypes) if dtype.is_numeric()]
    return table(frame.columns, rows, title=title, right=numeric)


def _render(report: Any, fmt: str, frame: pl.DataFrame, text: Callable[[], str]) -> str:
    """The record as JSON (its ``to_json()``), CSV (``frame``) or the ``text`` of its table."""
    if fmt == "json":
        return to_json(report.to_json(), rounded=True)
    if fmt == "csv":
        return _csv(frame)
    return text()


def _range_line(report: Any) -> str:
    return f"Range: {report.selection.label}\n"


def _notes(notes: tuple[str, ...] | list[str]) -> str:
    return "".join(f"Note: {note}\n" for note in notes)


# --- one function per report -------------------------------------------------------------------


def render_export(exported: MetricsExport, fmt: str) -> str:
    """``workspace metrics --interval``: one row per interval and project (or agent).

    JSON and CSV are written by DuckDB where it can (:meth:`MetricsExport.text`: the same
    text; 40,000 rows a week at 1m took longer to write in Python than to query)."""
    if fmt == "csv":
        text = exported.text("csv")
        if text is not None:
            return text
    elif fmt == "json":
        from devloop.analytics.export import EXPORT_COLUMNS

        decimals = {name: UNIT_DECIMALS[unit] for name in EXPORT_COLUMNS if (unit := _unit(name))}
        rows = exported.text("json", decimals, depth=1)
        if rows is not None:
            # The record without its rows, as to_json writes it, then the rows, as the
            # record's last key.
            head = to_json(exported.to_json(rows=False), rounded=True)
            return head.removesuffix("\n}\n") + ',\n  "rows": ' + rows + "\n}\n"
    return _render_rows(
        exported,
        fmt,
        exported.result,
        lambda: (
            _range_line(exported)
            + _table_rows(
                exported.result,
                {"cpu_avg_percent": _pct, "cpu_max_percent": _pct, "memory_max_bytes": _mb},
            )
        ),
    )


def render_metrics(view: WorkspaceMetrics, fmt: str) -> str:
    """``workspace metrics``: the newest tick, per project (and agent, and configured limits)."""
    frame = view.agents if view.agents is not None else view.projects
    return _render(view, fmt, frame, lambda: _metrics_text(view))


def _metrics_text(view: WorkspaceMetrics) -> str:
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
        f"Memory:     {_mb(view.memory_bytes)}" + limit(memory_limit, _mb(memory_limit)),
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
        mem = _mb(row["memory_bytes"])
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
    if view.profiles is not None and not view.profiles.is_empty():
        text += "\n" + _table(
            view.profiles,
            {
                "profile": lambda name: name or "(base pool)",
                "cpu_limit_percent": _pct,
                "memory_limit_bytes": _mb,
            },
            title="Profiles in force",
        )
        text += (
            "(the limits the collector recorded over the range; `workspace limits --at TIME` "
            "shows workspace.json's for a time of day)\n"
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


def render_compare(frame: pl.DataFrame, baseline_file: Path, active_file: Path, fmt: str) -> str:
    """``metrics compare``: baseline, active and difference per scope, metric and statistic."""
    if fmt == "json":
        return to_json(
            {
                "baseline": str(baseline_file),
                "active": str(active_file),
                "rows": frame.to_dicts(),
            },
            rounded=True,
        )
    if fmt == "csv":
        return _csv(frame)

    def value(metric: str) -> Callable[[Any], str]:
        return _pct if "cpu" in metric else (_mb if "bytes" in metric else _cell)

    rows = [
        [scope, metric, stat, value(metric)(b), value(metric)(a), value(metric)(d)]
        for scope, metric, stat, b, a, d in frame.iter_rows()
    ]
    return table(list(frame.columns), rows, right=(3, 4, 5))


def render_peak_usage(report: PeakUsage, fmt: str) -> str:
    """``analytics peak-usage``: one row per project, agent and the workspace."""
    formats = {
        "cpu_peak_percent": _pct,
        "cpu_p95_percent": _pct,
        "cpu_avg_percent": _pct,
        "memory_peak_bytes": _mb,
    }
    return _render_rows(
        report,
        fmt,
        report.result,
        lambda: _range_line(report) + _table_rows(report.result, formats),
    )


def render_bottlenecks(report: Bottlenecks, fmt: str, threshold: float, min_duration: str) -> str:
    """``analytics bottlenecks``: the intervals, what was left out (``min_duration`` as the user
    gave it) and the notes."""
    return _render(
        report, fmt, report.intervals, lambda: _bottlenecks_text(report, threshold, min_duration)
    )


def _bottlenecks_text(report: Bottlenecks, threshold: float, min_duration: str) -> str:
    head = _range_line(report) + f"Threshold: {threshold:g}% of the limit in force\n"
    shown = _left_out(report, min_duration)
    if report.intervals.is_empty():
        return head + "No bottleneck.\n" + shown + _notes(report.notes)
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
        + shown
        + _notes(report.notes)
    )


def _left_out(report: Bottlenecks, min_duration: str) -> str:
    """``20 of 219 intervals; --all shows every one``, naming what --min-duration and
    --limit left out (nothing when every interval is shown)."""
    if not (report.shorter or report.beyond_limit):
        return ""
    parts = [f"{report.intervals.height} of {report.found} intervals"]
    if report.shorter:
        parts.append(f"{report.shorter} shorter than {min_duration} left out")
    if report.beyond_limit:
        parts.append(
            f"--all shows the other {report.beyond_limit}"
            if report.shorter
            else "--all shows every one"
        )
    return "; ".join(parts) + "\n"


def render_efficiency(report: Efficiency, fmt: str) -> str:
    """``analytics efficiency``: a CPU table and a memory table per project."""
    return _render(report, fmt, report.projects, lambda: _efficiency_text(report))


def _efficiency_text(report: Efficiency) -> str:
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
        + _notes([*report.notes, *_efficiency_explained(frame)])
    )


def _efficiency_explained(frame: pl.DataFrame) -> list[str]:
    """What a table reader would stop at: a negative idle allocation, a p95 under the mean."""
    notes = []
    scopes = [name or "workspace" for name in frame["project"].to_list()]
    for resource, unit in (("cpu", "percent"), ("memory", "bytes")):
        idle = frame[f"{resource}_idle_allocation_{unit}"].to_list()
        over = [scope for scope, v in zip(scopes, idle, strict=True) if v is not None and v < 0]
        if over:
            notes.append(
                f"{resource}_idle_allocation is negative for {', '.join(over)}: on average it "
                "used more than it was allocated"
            )
        avg = frame[f"{resource}_used_avg_{unit}"].to_list()
        p95 = frame[f"{resource}_used_p95_{unit}"].to_list()
        bursty = [
            scope
            for scope, a, p in zip(scopes, avg, p95, strict=True)
            if a is not None and p is not None and p < a
        ]
        if bursty:
            notes.append(
                f"{resource} p95 is below the average for {', '.join(bursty)}: mostly idle, "
                "with short bursts that lift the average above 95% of the ticks"
            )
    return notes


def render_runs(frame: pl.DataFrame, fmt: str, *, summary: bool) -> str:
    """``analytics runs``: one row per run, or with ``summary`` per project and agent."""
    from devloop.analytics import records

    if fmt == "json":
        return to_json({"summary" if summary else "runs": records(frame)}, rounded=True)
    if fmt == "csv":
        return _csv(frame)
    if frame.is_empty():
        return "No runs started in the range.\n"
    if summary:
        names = {
            "duration_p50_seconds": "duration_p50",
            "duration_p95_seconds": "duration_p95",
            "cpu_mean_seconds": "cpu_mean",
            "cpu_p95_seconds": "cpu_p95",
            "max_rss_bytes": "max_rss",
        }
        formats = {name: _seconds for name in names.values()} | {"max_rss": _mb}
        return _table(frame.rename(names), formats)
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
    return text


def _seconds(value: float | None) -> str:
    """``1.3s`` under a minute, else ``2m``, ``1h 5m`` (see :func:`_age`)."""
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else _age(value)


def render_health(
    report: Health, fmt: str, *, detailed: bool, memory_analysis: bool, min_life: str = "1h"
) -> str:
    """``workspace health``: the problems found, and the trends and checks asked for
    (``min_life``: the --min-life text, named when no process lived that long)."""
    rows = report.memory_rows if memory_analysis or not detailed else report.fds_rows
    return _render_rows(
        report,
        fmt,
        rows,
        lambda: _health_text(
            report, detailed=detailed, memory_analysis=memory_analysis, min_life=min_life
        ),
    )


#: The columns of the trend tables shown (``start_time`` and ``points`` left out).
_TREND_SHOWN = (
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
)


def _health_text(
    report: Health, *, detailed: bool, memory_analysis: bool, min_life: str = "1h"
) -> str:
    from devloop.store.db import Rows

    lines = [_range_line(report).rstrip("\n")]
    lines.append("Healthy." if report.healthy else f"{len(report.findings)} problem(s):")
    lines += [f"  - {finding}" for finding in report.findings]
    out = "\n".join(lines) + "\n"
    tau = {"tau": lambda v: f"{v:.2f}"}
    if memory_analysis:
        names = {"start_value": "start_mb", "end_value": "end_mb", "slope_per_hour": "mb_per_hour"}
        memory = _columns(report.memory_rows, _TREND_SHOWN, names)
        start, end = memory.columns.index("start_mb"), memory.columns.index("end_mb")
        kinds = tuple("f64" if i in (start, end) else k for i, k in enumerate(memory.kinds))
        values = [
            tuple(v / MIB if i in (start, end) and v is not None else v for i, v in enumerate(row))
            for row in memory.rows
        ]
        memory = Rows(memory.columns, kinds, values)
        out += "\n" + _table_rows(memory, tau, title="Memory trends")
        out += _short_lives(report, min_life)
    if detailed:
        fds = _columns(report.fds_rows, _TREND_SHOWN, {"slope_per_hour": "fds_per_hour"})
        out += "\n" + _table_rows(fds, tau, title="File-handle trends")
        if not memory_analysis:
            out += _short_lives(report, min_life)
        restarts = report.restart_rows
        out += "\n" + _table_rows(
            replace(restarts, rows=restarts.rows[:20]), {}, title="Short-lived processes per hour"
        )
        out += "\n" + _table_rows(report.stopped_rows, {}, title="Stopped processes")
        out += (
            f"\nCollector: newest tick {_cell(report.newest_tick) or 'none'}"
            f" ({'fresh' if report.collector_fresh else 'stale'})\n"
            f"Store: {report.spool_segments} spool segment(s), {report.spool_bytes} bytes\n"
        )
    return out


def _columns(rows: Rows, shown: Sequence[str], names: Mapping[str, str]) -> Rows:
    """``rows`` with only the columns ``shown``, in that order, renamed by ``names``."""
    from devloop.store.db import Rows

    index = [rows.columns.index(name) for name in shown]
    return Rows(
        tuple(names.get(name, name) for name in shown),
        tuple(rows.kinds[i] for i in index),
        [tuple(row[i] for i in index) for row in rows.rows],
    )


def _short_lives(report: Health, min_life: str) -> str:
    """The note under a trend table: how many lives were too short to analyse (``min_life``:
    the --min-life text), or that there was none at all."""
    count = report.short_lives
    if count:
        return _notes(
            [f"{count} process{'es' if count != 1 else ''} lived under --min-life {min_life} "
             f"and {'are' if count != 1 else 'is'} not analysed for leaks; a smaller "
             "--min-life includes them"]
        )  # fmt: skip
    if not report.memory_rows.rows:
        return _notes(["no process in the range"])
    return ""


def render_sql(frame: pl.DataFrame, fmt: str) -> str:
    """``workspace sql``: the statement's rows."""
    from devloop.analytics import records

    if fmt == "json":
        return to_json(records(frame))
    if fmt == "csv":
        return _csv(frame)
    return _table(frame, {})


def render_audit(report: Audit, fmt: str, metric: str) -> str:
    """``audit query``: per-agent statistics of ``metric``."""
    show = _pct if metric == "cpu" else _mb if metric == "memory" else _cell
    formats = {name: show for name in ("avg", "min", "p50", "p95", "max")}
    return _render(
        report,
        fmt,
        report.agents,
        lambda: _range_line(report) + _table(report.agents.drop("metric", "unit"), formats),
    )
