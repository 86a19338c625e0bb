"""``peak-usage``: peak and p95 CPU, peak memory (with when), peak file handles and threads.

Per project and agent, and for the workspace as a whole. The workspace peak is the coincident
peak, the highest per-tick sum over all selected projects, never a sum of the projects' peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, open_store, records
from devloop.analytics._series import (
    agent_counts_sql,
    agent_hours_sql,
    arg_max_ts,
    project_hours_sql,
    project_series_sql,
    quantiles_from_counts_sql,
    series_aligned,
    tick_sums_sql,
    top_at,
    workspace_sums_sql,
)
from devloop.analytics.timerange import TimeRange

if TYPE_CHECKING:
    import polars as pl

#: Columns of :attr:`PeakUsage.peaks`, in order.
PEAK_COLUMNS = (
    "scope",
    "project",
    "agent",
    "ticks",
    "cpu_peak_percent",
    "cpu_peak_at",
    "cpu_p95_percent",
    "cpu_avg_percent",
    "memory_peak_bytes",
    "memory_peak_at",
    "fds_peak",
    "threads_peak",
)


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
    """

    selection: Selection
    peaks: pl.DataFrame

    def to_json(self) -> dict[str, Any]:
        """``{"range": {...}, "peaks": [{column: value}, ...]}`` (datetimes ISO 8601 UTC)."""
        return {"range": self.selection.to_json(), "peaks": records(self.peaks)}


def peak_usage(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> PeakUsage:
    """Peaks over ``time_range`` for the projects and agents matching the globs."""
    import polars as pl

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    agent_rows = _agent_peaks(store, selection).with_columns(pl.lit("agent").alias("scope"))
    rolled_up = _series_peaks_rollups(store, selection)
    workspace_row, project_rows = rolled_up or _series_peaks(store, selection)
    frames = [
        frame.select(PEAK_COLUMNS).cast(_PEAK_TYPES())
        for frame in (workspace_row, project_rows, agent_rows)
    ]
    body = pl.concat(frames[1:]).sort(
        pl.col("project"), pl.col("agent").is_not_null(), pl.col("agent")
    )
    return PeakUsage(selection, pl.concat([frames[0], body]))


def _series_peaks_rollups(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The workspace row and the project rows from the ``project_hour`` and ``workspace``
    rollups (peaks, means, counts) and the per-tick project sums (p95), when every selected
    project has a sum at every collector tick and nothing else (the series needs no idle
    ticks filled in); None otherwise, or when the selection names projects or agents."""
    import polars as pl

    hours = project_hours_sql(store, selection)
    whole = workspace_sums_sql(store, selection)
    if hours is None or whole is None:
        return None
    hours_sql, hour_params = hours
    whole_sql, whole_params = whole
    if not series_aligned(store, selection):
        return None
    cores = store.cores_sql()
    workspace = store.frame(
        f"""
        WITH w AS (
            SELECT w.ts, 100.0 * w.cpu / c.cores AS cpu_percent,
                   CAST(w.rss AS BIGINT) AS rss_bytes, w.fds, w.threads
            FROM {whole_sql} w JOIN {cores} c ON c.host = w.host
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
        """,
        whole_params,
    )
    sums, sum_params = tick_sums_sql(store, selection, by_agent=False)
    projects = store.frame(
        f"""
        WITH h AS (SELECT h.*, c.cores FROM {hours_sql} h JOIN {cores} c ON c.host = h.host),
        stats AS ({_hour_stats("project")}),
        p95 AS (
            SELECT s.project, quantile_cont(100.0 * s.cpu / c.cores, 0.95) AS cpu_p95_percent
            FROM {sums} s JOIN {cores} c ON c.host = s.host GROUP BY s.project
        )
        SELECT 'project' AS scope, s.project, NULL::VARCHAR AS agent, s.ticks,
               s.cpu_peak_percent, s.cpu_peak_at, p.cpu_p95_percent, s.cpu_avg_percent,
               s.memory_peak_bytes, s.memory_peak_at, s.fds_peak, s.threads_peak
        FROM stats s LEFT JOIN p95 p ON p.project = s.project
        """,
        [*hour_params, *sum_params],
    )
    utc = pl.col("cpu_peak_at", "memory_peak_at").dt.convert_time_zone("UTC")
    return workspace.with_columns(utc), projects.with_columns(utc)


def _series_peaks(store: Store, selection: Selection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The workspace row and the project rows over the whole project series (every selected
    project at every collector tick, 0 where nothing of it ran: ``project_series_sql``)."""
    import polars as pl

    series, params = project_series_sql(store, selection)
    aggs = f"""
        count(*) AS ticks, max(cpu_percent) AS cpu_peak_percent,
        {arg_max_ts("cpu_percent")} AS cpu_peak_at,
        quantile_cont(cpu_percent, 0.95) AS cpu_p95_percent,
        avg(cpu_percent) AS cpu_avg_percent, max(rss_bytes) AS memory_peak_bytes,
        {arg_max_ts("rss_bytes")} AS memory_peak_at, max(fds) AS fds_peak,
        max(threads) AS threads_peak
    """
    frame = store.frame(
        f"""
        WITH s AS MATERIALIZED ({series}),
        w AS (
            SELECT host, ts, sum(cpu_percent) AS cpu_percent,
                   CAST(sum(rss_bytes) AS BIGINT) AS rss_bytes,
                   CAST(sum(fds) AS BIGINT) AS fds, CAST(sum(threads) AS BIGINT) AS threads
            FROM s GROUP BY host, ts
        )
        SELECT 'project' AS scope, project, {aggs} FROM s GROUP BY project
        UNION ALL
        SELECT 'workspace' AS scope, NULL AS project, {aggs} FROM w
        """,
        params,
    ).with_columns(
        pl.col("cpu_peak_at", "memory_peak_at").dt.convert_time_zone("UTC"),
        pl.lit(None, dtype=pl.String).alias("agent"),
    )
    return frame.filter(pl.col("scope") == "workspace"), frame.filter(pl.col("scope") == "project")


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


def _PEAK_TYPES() -> Any:  # noqa: N802 - a constant that needs polars imported
    import polars as pl

    return {
        "scope": pl.String,
        "project": pl.String,
        "agent": pl.String,
        "ticks": pl.Int64,
        "cpu_peak_percent": pl.Float64,
        "cpu_peak_at": pl.Datetime("us", "UTC"),
        "cpu_p95_percent": pl.Float64,
        "cpu_avg_percent": pl.Float64,
        "memory_peak_bytes": pl.Int64,
        "memory_peak_at": pl.Datetime("us", "UTC"),
        "fds_peak": pl.Int64,
        "threads_peak": pl.Int64,
    }


def _agent_peaks(store: Store, selection: Selection) -> pl.DataFrame:
    # Peaks, ticks and means combine the per-hour rollups (exact: max of maxima, sum of sums,
    # the earliest tick among equal maxima); the p95 comes from the per-hour counts of each
    # CPU value (also exact).
    hours, hour_params = agent_hours_sql(store, selection)
    counts, params = agent_counts_sql(store, selection, "cpu")
    sql = f"""
        WITH h AS (
            SELECT h.*, c.cores FROM {hours} h JOIN {store.cores_sql()} c ON c.host = h.host
        ),
        stats AS ({_hour_stats("project, agent")}),
        counts AS (
            SELECT a.project, a.agent, 100.0 * a.cpu / c.cores AS v, a.n
            FROM {counts} a JOIN {store.cores_sql()} c ON c.host = a.host
        ),
        p95 AS {quantiles_from_counts_sql("counts", "project, agent", [0.95])}
        SELECT s.project, s.agent, s.ticks, s.cpu_peak_percent, s.cpu_peak_at,
               p.q0 AS cpu_p95_percent, s.cpu_avg_percent, s.memory_peak_bytes,
               s.memory_peak_at, s.fds_peak, s.threads_peak
        FROM stats s LEFT JOIN p95 p ON p.project = s.project AND p.agent = s.agent
    """
    return store.frame(sql, [*hour_params, *params])
