"""``efficiency``: per project, what was allocated against what was used.

Allocation is the limit in force at each tick (averaged over the range); use is the project's
per-tick series. Utilisation = average use / average allocation; idle allocation = average
allocation - average use; time over limit = ticks above the limit x the tick interval; pauses =
``pause`` events of the project (or of its agents). The workspace row sums the projects per tick.
A note points to ``devloop workspace autotune`` where allocation is far from use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import (
    HOUR_US,
    Selection,
    Store,
    limits_relation,
    open_store,
    project_series_sql,
    project_sums_sql,
    records,
    workspace_sums_sql,
)
from devloop.analytics.timerange import TimeRange

if TYPE_CHECKING:
    import polars as pl

#: Below this utilisation (percent) of the average allocation, or with p95 above it, the
#: report suggests autotune.
LOW_UTILISATION = 50.0

#: CPU is stored as float32 cores: a use within a millionth of the limit is at the limit.
_TOLERANCE = 1 + 1e-6

#: Columns of :attr:`Efficiency.projects`, in order.
EFFICIENCY_COLUMNS = (
    "scope",
    "project",
    "ticks",
    "cpu_allocated_percent",
    "cpu_used_avg_percent",
    "cpu_used_p95_percent",
    "cpu_used_peak_percent",
    "cpu_utilisation_percent",
    "cpu_idle_allocation_percent",
    "cpu_over_limit_seconds",
    "memory_allocated_bytes",
    "memory_used_avg_bytes",
    "memory_used_p95_bytes",
    "memory_used_peak_bytes",
    "memory_utilisation_percent",
    "memory_idle_allocation_bytes",
    "memory_over_limit_seconds",
    "pauses",
)


@dataclass(frozen=True)
class Efficiency:
    """The efficiency report.

    ``projects`` has one row per project and a last row for the workspace (``scope``
    "workspace", ``project`` null). Columns, for ``cpu`` in CPU % of the machine and for
    ``memory`` in bytes:

    * ``ticks``; ``*_allocated_*``: the average limit in force; ``*_used_avg_*``,
      ``*_used_p95_*``, ``*_used_peak_*``: the per-tick use
    * ``*_utilisation_percent``: 100 x average use / average allocation (null without a limit)
    * ``*_idle_allocation_*``: average allocation - average use
    * ``*_over_limit_seconds``: ticks above the limit x the tick interval
    * ``pauses``: ``pause`` events of the project or its agents in the range
    """

    selection: Selection
    projects: pl.DataFrame
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"range", "projects": [...], "workspace": {...}, "notes"}``."""
        rows = records(self.projects)
        return {
            "range": self.selection.to_json(),
            "projects": [row for row in rows if row["scope"] == "project"],
            "workspace": next(row for row in rows if row["scope"] == "workspace"),
            "notes": list(self.notes),
        }


def efficiency(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> Efficiency:
    """Allocation against use per project and for the workspace over ``time_range``."""
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    per_project, workspace_row, note = _stats_sql(store, selection) or _stats_series(
        store, selection
    )
    return _report(selection, per_project, workspace_row, _pauses(store, selection), note)


def _report(
    selection: Selection,
    per_project: pl.DataFrame,
    workspace_row: pl.DataFrame,
    pauses: pl.DataFrame,
    note: str | None,
) -> Efficiency:
    """The report from the statistics (``project`` and ``ticks``, then :func:`_aggregates`'
    columns; the workspace's one row without ``project``), the ``pause`` events per project
    (``project``, ``pauses``) and the note on the limits: the part every engine shares."""
    import polars as pl

    per_project, workspace_row = (
        _derived(frame).with_columns(pl.col("ticks").cast(pl.Int64))
        for frame in (per_project, workspace_row)
    )
    per_project = per_project.with_columns(pl.lit("project").alias("scope"))
    workspace_row = workspace_row.with_columns(
        pl.lit("workspace").alias("scope"), pl.lit(None, dtype=pl.String).alias("project")
    )
    table = (
        pl.concat([per_project.sort("project"), workspace_row], how="diagonal")
        .join(pauses, on="project", how="left", nulls_equal=True)
        .with_columns(pl.col("pauses").fill_null(0))
    )
    total = int(pauses["pauses"].sum()) if not pauses.is_empty() else 0
    table = table.with_columns(
        pl.when(pl.col("scope") == "workspace")
        .then(total)
        .otherwise(pl.col("pauses"))
        .cast(pl.Int64)
        .alias("pauses")
    )
    table = table.with_columns(
        pl.col(
            "memory_allocated_bytes",
            "memory_used_avg_bytes",
            "memory_used_p95_bytes",
            "memory_idle_allocation_bytes",
        ).cast(pl.Float64),
        pl.col("memory_used_peak_bytes").cast(pl.Int64),
    ).select(EFFICIENCY_COLUMNS)
    notes = [note] if note else []
    notes += _autotune_notes(table)
    return Efficiency(selection, table, tuple(notes))


def _stats_series(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    """Per-project and workspace statistics (before the derived columns) over the whole
    project series (``project_series_sql``: every project at every tick, 0 where idle) with
    the limits in force at each tick (an ASOF join with ``limits_relation``)."""
    series, params = project_series_sql(store, selection)
    limits, limit_params, note = limits_relation(store)
    aggregates = _aggregates(selection.interval)
    frame = store.frame(
        f"""
        WITH s AS MATERIALIZED (
            SELECT s.host, s.ts, s.project, s.cpu_percent AS cpu_used,
                   CAST(s.rss_bytes AS DOUBLE) AS memory_used,
                   CAST(l.cpu_limit_percent AS DOUBLE) AS cpu_limit,
                   CAST(CAST(l.memory_limit_bytes AS BIGINT) AS DOUBLE) AS memory_limit
            FROM ({series}) s ASOF LEFT JOIN {limits} l
              ON l.host = s.host AND l.project = s.project AND s.ts >= l.ts
        ),
        w AS (
            SELECT host, ts, sum(cpu_used) AS cpu_used, sum(memory_used) AS memory_used,
                   CASE WHEN count(cpu_limit) = count(*) THEN sum(cpu_limit) END AS cpu_limit,
                   CASE WHEN count(memory_limit) = count(*) THEN sum(memory_limit) END
                       AS memory_limit
            FROM s GROUP BY host, ts
        )
        SELECT project, count(*) AS ticks, {aggregates} FROM s GROUP BY project
        UNION ALL
        SELECT NULL AS project, count(*) AS ticks, {aggregates} FROM w
        """,
        [*params, *limit_params],
    )
    import polars as pl

    per_project = frame.filter(pl.col("project").is_not_null())
    return per_project, frame.filter(pl.col("project").is_null()).drop("project"), note


def _derived(grouped: pl.DataFrame) -> pl.DataFrame:
    """Utilisation and idle allocation from the averages."""
    import polars as pl

    derived = []
    for name, unit in (("cpu", "percent"), ("memory", "bytes")):
        allocated = pl.col(f"{name}_allocated_{unit}")
        average = pl.col(f"{name}_used_avg_{unit}")
        derived += [
            pl.when(allocated > 0)
            .then(100.0 * average / allocated)
            .alias(f"{name}_utilisation_percent"),
            (allocated - average).alias(f"{name}_idle_allocation_{unit}"),
        ]
    return grouped.with_columns(derived)


def _stats_sql(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, pl.DataFrame, str | None] | None:
    """Per-project and workspace statistics (before the derived columns) in DuckDB from the
    per-tick sums, when those are the whole project series (see ``project_series``); None
    otherwise (then :func:`_stats_series` reads the whole series).

    The limits in force at each tick come from a hash join with a small table of the spans
    over which they are constant (:class:`_Limits`), not from an ASOF join; the workspace
    series is read from the ``workspace`` rollups when every project is selected."""
    limits, limit_params, note = limits_relation(store)
    names = list(selection.projects)
    cores = store.cores_sql()
    hosts = store.rows(f"SELECT host, cores FROM {cores}")
    # One host: every tick of an aligned series is that host's (checked below), so its core
    # count is a constant and rows find their limits by project alone.
    single = hosts[0][0] if len(hosts) == 1 and hosts[0][1] is not None else None
    segments = _Limits.read(store, selection, limits, limit_params, single)
    per_project_limits = segments.projects()
    workspace_limits = segments.workspace(names)
    interval = selection.interval

    def per_core(alias: str) -> tuple[str, str, str]:
        """The core count of ``alias``'s host, the join that finds it, whether it is missing."""
        if single is not None:
            return f"CAST({int(hosts[0][1])} AS SMALLINT)", "", "false"
        return "c.cores", f"LEFT JOIN {cores} c ON c.host = {alias}.host", "c.cores IS NULL"

    sums, params = project_sums_sql(store, selection)
    count, join, coreless = per_core("s")
    per_project = store.frame(
        f"""
        SELECT s.project, count(*) AS ticks, {_aggregates(interval)},
               count(*) FILTER (WHERE s.coreless) AS coreless
        FROM (
            SELECT s.host, s.ts, s.project, 100.0 * s.cpu / {count} AS cpu_used,
                   CAST(CAST(s.rss AS BIGINT) AS DOUBLE) AS memory_used, {coreless} AS coreless
            FROM {sums} s {join}
        ) s
        LEFT JOIN {per_project_limits.sql} l ON {per_project_limits.condition("s", "l")}
        GROUP BY s.project
        """,
        [*params, *per_project_limits.params],
    )
    rows = int(per_project["ticks"].sum())
    if (
        per_project.height != len(names)
        or not set(per_project["project"].to_list()) <= set(names)
        or int(per_project["coreless"].sum())
    ):
        return None

    rollup = workspace_sums_sql(store, selection)
    if rollup is not None:  # every project: the per-tick sums over all of them, rolled up
        ticks, tick_params = rollup
        count, join, _ = per_core("w")
        series = (
            f"(SELECT w.host, w.ts, w.projects, coalesce(100.0 * w.cpu / {count}, 0.0) "
            f"AS cpu_used, coalesce(w.rss, 0.0) AS memory_used FROM {ticks} w {join})"
        )
    else:
        count, join, _ = per_core("s")
        series = (
            "(SELECT s.host, s.ts, count(*) AS projects, "
            f"coalesce(sum(100.0 * s.cpu / {count}), 0.0) AS cpu_used, "
            "coalesce(sum(CAST(CAST(s.rss AS BIGINT) AS DOUBLE)), 0.0) AS memory_used "
            f"FROM {sums} s {join} GROUP BY s.host, s.ts)"
        )
        tick_params = params
    # With the collector's ticks alongside: the series must hold exactly those ticks. A tick
    # with several system rows repeats its row of the series, which the count of rows shows.
    where, where_params = store.where(selection, names=False)
    workspace = store.frame(
        f"""
        SELECT count(w.ts) AS ticks, {_aggregates(interval)},
               CAST(sum(w.projects) AS BIGINT) AS sums,
               count(*) FILTER (WHERE w.ts IS NULL) AS missing,
               count(*) FILTER (WHERE t.ts IS NULL) AS stray
        FROM (
            SELECT w.*, l.cpu_limit, l.memory_limit FROM {series} w
            LEFT JOIN {workspace_limits.sql} l ON {workspace_limits.condition("w", "l")}
        ) w
        FULL JOIN (SELECT host, ts FROM system WHERE {where}) t
            ON w.host = t.host AND w.ts = t.ts
        """,
        [*tick_params, *workspace_limits.params, *where_params],
    )
    facts = workspace.row(0, named=True)
    if (
        facts["missing"]
        or facts["stray"]
        or facts["sums"] != rows
        or rows != facts["ticks"] * len(names)
    ):
        return None
    return per_project.drop("coreless"), workspace.drop("sums", "missing", "stray"), note


def _aggregates(interval: float) -> str:
    """The statistics of ``cpu_used``/``memory_used`` against ``cpu_limit``/``memory_limit``."""
    aggs: list[str] = []
    for name, unit in (("cpu", "percent"), ("memory", "bytes")):
        used, limit = f"{name}_used", f"{name}_limit"
        aggs += [
            f"avg({limit}) AS {name}_allocated_{unit}",
            f"avg({used}) AS {name}_used_avg_{unit}",
            f"quantile_cont({used}, 0.95) AS {name}_used_p95_{unit}",
            f"max({used}) AS {name}_used_peak_{unit}",
            f"CAST(count(*) FILTER (WHERE {used} > {limit} * {_TOLERANCE!r}) * {interval!r} "
            f"AS DOUBLE) AS {name}_over_limit_seconds",
        ]
    return ", ".join(aggs)


@dataclass(frozen=True)
class _Span:
    """Limits in force from ``since`` to ``until`` (epoch microseconds, within the range);
    None where the limit row has no value."""

    since: int
    until: int
    cpu: float | None
    memory: float | None


@dataclass(frozen=True)
class _Lookup:
    """A relation of limits (``cpu_limit``, ``memory_limit``) and how a row of the series
    finds its own: equal keys, and when ``ranged`` the hour of its tick and the span holding
    it (each span is listed once per hour it overlaps, so a row meets one or two)."""

    sql: str
    params: list[Any]
    keys: tuple[str, ...]
    ranged: bool

    def condition(self, row: str, table: str) -> str:
        parts = [f"{table}.{key} = {row}.{key}" for key in self.keys]
        if self.ranged:
            tick = f"epoch_us({row}.ts)"
            parts += [
                f"{table}.hour = {tick} // {HOUR_US}",
                f"{tick} >= {table}.since",
                f"{tick} < {table}.until",
            ]
        return " AND ".join(parts) if parts else "true"


class _Limits:
    """The limits in force over a range, per host and project, as spans (the newest ``limits``
    row at or before a tick is in force at it, as the ASOF join of ``project_series_with_limits``
    finds it). Limits change rarely: usually one span covers the whole range."""

    def __init__(
        self, spans: dict[tuple[str, str], list[_Span]], start: int, end: int, host: str | None
    ) -> None:
        self.spans = spans
        self.start = start
        self.end = end
        #: The only host (then rows are looked up by project alone), else None.
        self.host = host

    @classmethod
    def read(
        cls,
        store: Store,
        selection: Selection,
        limits: str,
        limit_params: list[Any],
        host: str | None,
    ) -> _Limits:
        """The limits of the selected projects over ``selection``'s range (of ``host`` alone
        when given)."""
        start, end = _epoch_us(selection.start), _epoch_us(selection.end)
        found = store.rows(
            "SELECT host, project, epoch_us(ts) AS us, CAST(cpu_limit_percent AS DOUBLE), "
            "CAST(CAST(memory_limit_bytes AS BIGINT) AS DOUBLE) "
            f"FROM {limits} l WHERE ts IS NOT NULL AND host IS NOT NULL "
            "AND list_contains(?::VARCHAR[], project) ORDER BY host, project, us",
            [*limit_params, list(selection.projects)],
        )
        rows: dict[tuple[str, str], list[tuple[int, float | None, float | None]]] = {}
        for row_host, project, us, cpu, memory in found:
            if host is None or row_host == host:
                rows.setdefault((row_host, project), []).append((us, cpu, memory))
        spans: dict[tuple[str, str], list[_Span]] = {}
        for key, changes in rows.items():
            for i, (since, cpu, memory) in enumerate(changes):
                until = changes[i + 1][0] if i + 1 < len(changes) else end
                since, until = max(since, start), min(until, end)
                if since < until:
                    spans.setdefault(key, []).append(_Span(since, until, cpu, memory))
        return cls(spans, start, end, host)

    def projects(self) -> _Lookup:
        """The limits of each project."""
        keys = ("project",) if self.host is not None else ("host", "project")
        entries = [
            ((host, project), span)
            for (host, project), spans in sorted(self.spans.items())
            for span in spans
        ]
        return self._lookup(entries, keys)

    def workspace(self, names: list[str]) -> _Lookup:
        """The workspace limit of each host: the sum of the limits of ``names`` in force (null
        while one of them has none)."""
        entries: list[tuple[tuple[str, ...], _Span]] = []
        for host in sorted({host for host, _ in self.spans}):
            per_name = [self.spans.get((host, name), []) for name in names]
            starts = sorted({span.since for spans in per_name for span in spans})
            at = [0] * len(per_name)  # per name, its first span not over before ``since``
            for i, since in enumerate(starts):
                until = starts[i + 1] if i + 1 < len(starts) else self.end
                cpu: float | None = 0.0
                memory: float | None = 0.0
                for n, spans in enumerate(per_name):
                    while at[n] < len(spans) and spans[at[n]].until <= since:
                        at[n] += 1
                    held = spans[at[n]] if at[n] < len(spans) else None
                    if held is None or held.since > since:
                        cpu = memory = None
                        break
                    cpu = None if cpu is None or held.cpu is None else cpu + held.cpu
                    memory = None if memory is None or held.memory is None else memory + held.memory
                entries.append(((host,), _Span(since, until, cpu, memory)))
        return self._lookup(entries, () if self.host is not None else ("host",))

    def _lookup(
        self, entries: Sequence[tuple[tuple[str, ...], _Span]], keys: tuple[str, ...]
    ) -> _Lookup:
        # Constant over the range for every key: no need to look at the tick.
        seen: set[tuple[str, ...]] = set()
        ranged = False
        for key, span in entries:
            if key in seen or span.since != self.start or span.until != self.end:
                ranged = True
            seen.add(key)
        key_names = ("host", "project")[: len(entries[0][0])] if entries else ()
        columns: list[tuple[str, str, list[Any]]] = [
            (name, "VARCHAR", [key[i] for key, _ in entries]) for i, name in enumerate(key_names)
        ]
        columns += [
            ("cpu_limit", "DOUBLE", [span.cpu for _, span in entries]),
            ("memory_limit", "DOUBLE", [span.memory for _, span in entries]),
        ]
        if ranged:
            columns += [
                ("since", "BIGINT", [span.since for _, span in entries]),
                ("until", "BIGINT", [span.until for _, span in entries]),
            ]
        select = ", ".join(f"unnest(?::{kind}[]) AS {name}" for name, kind, _ in columns)
        if not entries:
            select = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind, _ in columns)
            return _Lookup(f"(SELECT {select} WHERE false)", [], (), False)
        sql = f"(SELECT {select})"
        if ranged:
            sql = (
                f"(SELECT *, unnest(generate_series(since // {HOUR_US}, (until - 1) // {HOUR_US})) "
                f"AS hour FROM {sql})"
            )
        return _Lookup(sql, [values for _, _, values in columns], keys, ranged)


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _pauses(store: Store, selection: Selection) -> pl.DataFrame:
    where, params = store.where(selection)
    return store.frame(
        f"SELECT project, CAST(count(*) AS BIGINT) AS pauses FROM events "
        f"WHERE action = 'pause' AND {where} GROUP BY project",
        params,
    )


def _autotune_notes(table: pl.DataFrame) -> list[str]:
    notes: list[str] = []
    for row in table.iter_rows(named=True):
        if row["scope"] != "project":
            continue
        for name, unit, shown in (("cpu", "percent", "CPU"), ("memory", "bytes", "memory")):
            allocated = row[f"{name}_allocated_{unit}"]
            utilisation = row[f"{name}_utilisation_percent"]
            p95 = row[f"{name}_used_p95_{unit}"]
            if allocated is None or utilisation is None:
                continue
            if p95 > allocated * _TOLERANCE:
                notes.append(
                    f"{row['project']}: {shown} p95 is above its allocation "
                    f"({p95 / allocated * 100:.0f}% of it); run `devloop workspace autotune` "
                    "for better limits"
                )
            elif utilisation < LOW_UTILISATION:
                notes.append(
                    f"{row['project']}: uses {utilisation:.0f}% of its {shown} allocation on "
                    "average; run `devloop workspace autotune` for better limits"
                )
    return notes
