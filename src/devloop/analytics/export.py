"""``workspace metrics --interval 1m``: the history as one row per interval and project (or
agent), for spreadsheets (CSV) and scripts (JSON).

A project's figures come from its per-tick series (every tick, 0 where nothing ran); an agent's
from the ticks at which it had a process. ``interval_start`` is aligned on the epoch (a 1m
interval starts on the minute), UTC.

This export is of the per-tick series. Agent runs are another shape (one row per run, not per
interval) and are exported by their own report, :func:`devloop.analytics.runs`:
``devloop workspace analytics runs --format csv`` (or ``json``), with the same range options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, open_store, records
from devloop.analytics._series import project_series_sql, series_aligned, tick_sums_sql
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

#: Columns of :attr:`MetricsExport.rows`, in order (``agent`` only when detailed).
EXPORT_COLUMNS = (
    "interval_start",
    "project",
    "agent",
    "ticks",
    "cpu_avg_percent",
    "cpu_max_percent",
    "memory_max_bytes",
    "fds_max",
    "threads_max",
)


@dataclass(frozen=True)
class MetricsExport:
    """The export: ``rows`` with the columns of :data:`EXPORT_COLUMNS` (no ``agent`` unless
    ``detailed``), sorted by interval_start then project (and agent).

    * ``interval_start``: UTC start of the interval; ``ticks``: ticks in it (with a process,
      for agents)
    * ``cpu_avg_percent``, ``cpu_max_percent``: mean and highest per-tick CPU % of the machine
    * ``memory_max_bytes``, ``fds_max``, ``threads_max``: highest per-tick sums
    """

    selection: Selection
    interval_seconds: float
    detailed: bool
    rows: pl.DataFrame

    def to_json(self) -> dict[str, Any]:
        """``{"range", "interval_seconds", "rows": [...]}``."""
        return {
            "range": self.selection.to_json(),
            "interval_seconds": self.interval_seconds,
            "rows": records(self.rows),
        }


def export_metrics(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    interval: float = 60.0,
    detailed: bool = False,
) -> MetricsExport:
    """One row per ``interval`` seconds and project (agent when ``detailed``)."""
    import polars as pl

    if not interval >= 1e-6:
        raise UsageError(f"the interval must be positive, not {interval:g}s")
    bucket_us = max(1, round(interval * 1e6))
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    if detailed:
        sums, params = tick_sums_sql(store, selection, by_agent=True)
        frame = store.frame(
            f"""
            SELECT s.project, s.agent,
                   make_timestamptz((epoch_us(s.ts) // {bucket_us}) * {bucket_us})
                       AS interval_start,
                   count(*) AS ticks,
                   avg(100.0 * s.cpu / c.cores) AS cpu_avg_percent,
                   max(100.0 * s.cpu / c.cores) AS cpu_max_percent,
                   max(s.rss) AS memory_max_bytes, max(s.fds) AS fds_max,
                   max(s.threads) AS threads_max
            FROM (
                SELECT host, ts, project, agent, cpu, CAST(rss AS BIGINT) AS rss, fds, threads
                FROM {sums}
            ) s JOIN {store.cores_sql()} c ON c.host = s.host
            GROUP BY s.project, s.agent, interval_start
            """,
            params,
        )
        rows = frame.select(EXPORT_COLUMNS).sort("interval_start", "project", "agent")
    else:
        rows = _project_rows(store, selection, bucket_us)
    rows = rows.with_columns(
        pl.col("ticks", "memory_max_bytes", "fds_max", "threads_max").cast(pl.Int64)
    )
    return MetricsExport(selection, bucket_us / 1e6, detailed, rows)


def _project_rows(store: Store, selection: Selection, bucket_us: int) -> pl.DataFrame:
    """The per-project rows over the whole project series: the per-tick sums when they are
    the whole series (a sum at every tick for every project, read from the rollups), else the
    series with its idle ticks (``project_series_sql``)."""
    import polars as pl

    if series_aligned(store, selection):  # known whole: no idle tick to fill in
        sums, params = tick_sums_sql(store, selection, by_agent=False)
        series = (
            "SELECT s.ts, s.project, 100.0 * s.cpu / c.cores AS cpu_percent, "
            "CAST(s.rss AS BIGINT) AS rss_bytes, s.fds, s.threads "
            f"FROM {sums} s JOIN {store.cores_sql()} c ON c.host = s.host"
        )
    else:
        series, params = project_series_sql(store, selection)
    frame = store.frame(
        f"""
        SELECT make_timestamptz(bucket * {bucket_us}) AS interval_start, * EXCLUDE (bucket)
        FROM (
            SELECT epoch_us(ts) // {bucket_us} AS bucket, project, count(*) AS ticks,
                   avg(cpu_percent) AS cpu_avg_percent, max(cpu_percent) AS cpu_max_percent,
                   max(rss_bytes) AS memory_max_bytes, max(fds) AS fds_max,
                   max(threads) AS threads_max
            FROM ({series}) GROUP BY bucket, project
        )
        """,
        params,
    )
    return (
        frame.with_columns(pl.col("interval_start").dt.convert_time_zone("UTC"))
        .sort("interval_start", "project")
        .select([c for c in EXPORT_COLUMNS if c != "agent"])
    )
