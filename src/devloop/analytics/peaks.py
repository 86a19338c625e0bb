"""``peak-usage``: peak and p95 CPU, peak memory (with when), peak file handles and threads.

Per project and agent, and for the workspace as a whole. The workspace peak is the coincident
peak, the highest per-tick sum over all selected projects, never a sum of the projects' peaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.analytics.query import (
    Selection,
    Store,
    agent_counts_sql,
    agent_hours_sql,
    arg_max_ts,
    open_store,
    project_hours_sql,
    project_series_sql,
    quantiles_from_counts_sql,
    series_aligned,
    tick_sums_sql,
    top_at,
    workspace_sums_sql,
)
from devloop.analytics.timerange import TimeRange
from devloop.store.db import Rows, cast_columns, fetch

if TYPE_CHECKING:
    import polars as pl

    from devloop.store.columns import Kind

#: Columns of :attr:`PeakUsage.peaks`, in order, with their kinds.
PEAK_KINDS: Final[dict[str, Kind]] = {
    "scope": "str",
    "project": "str",
    "agent": "str",
    "ticks": "i64",
    "cpu_peak_percent": "f64",
    "cpu_peak_at": "ts",
    "cpu_p95_percent": "f64",
    "cpu_avg_percent": "f64",
    "memory_peak_bytes": "i64",
    "memory_peak_at": "ts",
    "fds_peak": "i64",
    "threads_peak": "i64",
}
#: Columns of :attr:`PeakUsage.peaks`, in order.
PEAK_COLUMNS = tuple(PEAK_KINDS)


@dataclass(frozen=True)
class PeakUsage:
    """The peak-usage report.

    ``peaks`` has one row for the workspace, then per project one row for the project followed
    by one per agent. Columns:

    * ``scope``: "workspace", "project" or "agent"; ``project``, ``agent``: names (null above)
    * ``ticks``: ticks the figures cover (every tick for projects and the workspace, the ticks
      at which it had a process for an agent)
    * ``cpu_peak_percent``, ``cpu_peak_at``: highest CPU % of the machine and its (first) tick
    * ``cpu_p95_percent``, ``cpu_avg_percent``: 95th percentile (linear) and mean over the ticks
    * ``memory_peak_bytes``, ``memory_peak_at``: highest resident memory and its (first) tick
    * ``fds_peak``, ``threads_peak``: highest open file handles and threads

    ``result`` holds the same rows as DuckDB returned them (what the CLI renders); ``peaks``
    is made of them when first asked for.
    """

    selection: Selection
    result: Rows = field(repr=False)

    @cached_property
    def peaks(self) -> pl.DataFrame:
        """The rows as a polars DataFrame (columns :data:`PEAK_COLUMNS`)."""
        return self.result.frame()

    def to_json(self) -> dict[str, Any]:
        """``{"range": {...}, "peaks": [{column: value}, ...]}`` (datetimes ISO 8601 UTC)."""
        return {"range": self.selection.to_json(), "peaks": self.result.records()}


def peak_usage(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> PeakUsage:
    """Peaks over ``time_range`` for the projects and agents matching the globs."""
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    series, series_params = _series_peaks_rollups(store, selection) or _series_peaks(
        store, selection
    )
    agent_rows, agent_params = _agent_peaks(store, selection)
    # The workspace first, then per project its row followed by its agents'.
    sql = f"""
        SELECT {cast_columns(PEAK_KINDS)} FROM (
            SELECT {", ".join(PEAK_COLUMNS)} FROM {series}
            UNION ALL
            SELECT {", ".join(PEAK_COLUMNS)} FROM {agent_rows}
        )
        ORDER BY scope <> 'workspace', project NULLS FIRST, agent IS NOT NULL,
                 agent NULLS FIRST
    """
    rows = fetch(store.db, sql, [*series_params, *agent_params], PEAK_KINDS)
    return PeakUsage(selection, rows)


def _series_peaks_rollups(store: Store, selection: Selection) -> tuple[str, list[Any]] | None:
    """A relation of the workspace row and the project rows (columns :data:`PEAK_COLUMNS`)
    from the ``project_hour`` and ``workspace`` rollups (peaks, means, counts) and the
    per-tick project sums (p95), when every selected project has a sum at every collector
    tick and nothing else (the series needs no idle ticks filled in), and its parameters;
    None otherwise, or when the selection names projects or agents."""
    hours = project_hours_sql(store, selection)
    whole = workspace_sums_sql(store, selection)
    if hours is None or whole is None:
        return None
    hours_sql, hour_params = hours
    whole_sql, whole_params = whole
    if not series_aligned(store, selection):
        return None
    cores = store.cores_sql()
    sums, sum_params = tick_sums_sql(store, selection, by_agent=False)
    sql = f"""(
        WITH w AS (
            SELECT w.ts, 100.0 * w.cpu / c.cores AS cpu_percent,
                   CAST(w.rss AS BIGINT) AS rss_bytes, w.fds, w.threads
            FROM {whole_sql} w JOIN {cores} c ON c.host = w.host
        ),
        h AS (SELECT h.*, c.cores FROM {hours_sql} h JOIN {cores} c ON c.host = h.host),
        stats AS ({_hour_stats("project")}),
        p95 AS (
            SELECT s.project, quantile_cont(100.0 * s.cpu / c.cores, 0.95) AS cpu_p95_percent
            FROM {sums} s JOIN {cores} c ON c.host = s.host GROUP BY s.project
        )
        SELECT 'workspace' AS scope, NULL::VARCHAR AS project, NULL::VARCHAR AS agent,
               count(*) AS ticks, max(cpu_percent) AS cpu_peak_percent,
               {arg_max_ts("cpu_percent")} FILTER (WHERE cpu_percent IS NOT NULL)
                   AS cpu_peak_at,
               quantile_cont(cpu_percent, 0.95) AS cpu_p95_percent,
               avg(cpu_percent) AS cpu_avg_percent, max(rss_bytes) AS memory_peak_bytes,
               {arg_max_ts("rss_bytes")} FILTER (WHERE rss_bytes IS NOT NULL)
                   AS memory_peak_at,
               max(fds) AS fds_peak, max(threads) AS threads_peak
        FROM w
        UNION ALL
        SELECT 'project' AS scope, s.project, NULL::VARCHAR AS agent, s.ticks,
               s.cpu_peak_percent, s.cpu_peak_at, p.cpu_p95_percent, s.cpu_avg_percent,
               s.memory_peak_bytes, s.memory_peak_at, s.fds_peak, s.threads_peak
        FROM stats s LEFT JOIN p95 p ON p.project = s.project
    )"""
    return sql, [*whole_params, *hour_params, *sum_params]


def _series_peaks(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """A relation of the workspace row and the project rows (columns :data:`PEAK_COLUMNS`)
    over the whole project series (every selected project at every collector tick, 0 where
    nothing of it ran: ``project_series_sql``), and its parameters."""
    series, params = project_series_sql(store, selection)
    aggs = f"""
        count(*) AS ticks, max(cpu_percent) AS cpu_peak_percent,
        {arg_max_ts("cpu_percent")} AS cpu_peak_at,
        quantile_cont(cpu_percent, 0.95) AS cpu_p95_percent,
        avg(cpu_percent) AS cpu_avg_percent, max(rss_bytes) AS memory_peak_bytes,
        {arg_max_ts("rss_bytes")} AS memory_peak_at, max(fds) AS fds_peak,
        max(threads) AS threads_peak
    """
    sql = f"""(
        WITH s AS MATERIALIZED ({series}),
        w AS (
            SELECT host, ts, sum(cpu_percent) AS cpu_percent,
                   CAST(sum(rss_bytes) AS BIGINT) AS rss_bytes,
                   CAST(sum(fds) AS BIGINT) AS fds, CAST(sum(threads) AS BIGINT) AS threads
            FROM s GROUP BY host, ts
        )
        SELECT 'project' AS scope, project, NULL::VARCHAR AS agent, {aggs}
        FROM s GROUP BY project
        UNION ALL
        SELECT 'workspace' AS scope, NULL::VARCHAR AS project, NULL::VARCHAR AS agent, {aggs}
        FROM w
    )"""
    return sql, params


def _hour_stats(keys: str) -> str:
    """Ticks, peaks (with when) and mean CPU per ``keys``, combined from the per-hour rollups
    of :func:`agent_hours_sql` / :func:`project_hours_sql` joined with ``cores`` as ``h``
    (exact: sums of sums, maxima of maxima, the earliest tick among equal maxima)."""
    return f"""
        SELECT {keys}, CAST(sum(ticks) AS BIGINT) AS ticks,
               max(100.0 * cpu_max / cores) AS cpu_peak_percent,
               {top_at("cpu_top", "cores")} AS cpu_peak_at,
               sum(100.0 * cpu_sum / cores) / sum(cpu_n) AS cpu_avg_percent,
               CAST(max(rss_max) AS BIGINT) AS memory_peak_bytes,
               {top_at("rss_top")} AS memory_peak_at,
               max(fds_max) AS fds_peak, max(threads_max) AS threads_peak
        FROM h GROUP BY {keys}
    """


def _agent_peaks(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """A relation of the agent rows (columns :data:`PEAK_COLUMNS`) and its parameters.

    Peaks, ticks and means combine the per-hour rollups (exact: max of maxima, sum of sums,
    the earliest tick among equal maxima); the p95 comes from the per-hour counts of each CPU
    value (also exact)."""
    hours, hour_params = agent_hours_sql(store, selection)
    counts, params = agent_counts_sql(store, selection, "cpu")
    sql = f"""(
        WITH h AS (
            SELECT h.*, c.cores FROM {hours} h JOIN {store.cores_sql()} c ON c.host = h.host
        ),
        stats AS ({_hour_stats("project, agent")}),
        counts AS (
            SELECT a.project, a.agent, 100.0 * a.cpu / c.cores AS v, a.n
            FROM {counts} a JOIN {store.cores_sql()} c ON c.host = a.host
        ),
        p95 AS {quantiles_from_counts_sql("counts", "project, agent", [0.95])}
        SELECT 'agent' AS scope, s.project, s.agent, s.ticks, s.cpu_peak_percent,
               s.cpu_peak_at, p.q0 AS cpu_p95_percent, s.cpu_avg_percent,
               s.memory_peak_bytes, s.memory_peak_at, s.fds_peak, s.threads_peak
        FROM stats s LEFT JOIN p95 p ON p.project = s.project AND p.agent = s.agent
    )"""
    return sql, [*hour_params, *params]
