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

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.analytics.query import (
    Selection,
    Store,
    open_store,
    project_series_sql,
    series_aligned,
    tick_sums_sql,
)
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError
from devloop.store.db import Query, Rows

if TYPE_CHECKING:
    import polars as pl

    from devloop.store.columns import Kind

#: Columns of :attr:`MetricsExport.rows`, in order, with their kinds (``agent`` only when
#: detailed).
EXPORT_KINDS: Final[dict[str, Kind]] = {
    "interval_start": "ts",
    "project": "str",
    "agent": "str",
    "ticks": "i64",
    "cpu_avg_percent": "f64",
    "cpu_max_percent": "f64",
    "memory_max_bytes": "i64",
    "fds_max": "i64",
    "threads_max": "i64",
}
#: Columns of :attr:`MetricsExport.rows`, in order (``agent`` only when detailed).
EXPORT_COLUMNS = tuple(EXPORT_KINDS)


@dataclass(frozen=True)
class MetricsExport:
    """The export: ``rows`` with the columns of :data:`EXPORT_COLUMNS` (no ``agent`` unless
    ``detailed``), sorted by interval_start then project (and agent).

    * ``interval_start``: UTC start of the interval; ``ticks``: ticks in it (with a process,
      for agents)
    * ``cpu_avg_percent``, ``cpu_max_percent``: mean and highest per-tick CPU % of the machine
    * ``memory_max_bytes``, ``fds_max``, ``threads_max``: highest per-tick sums

    ``source`` is the rows as DuckDB returned them, or the query that returns them: then
    ``result`` runs it when first asked for, and the CLI has DuckDB write them as JSON or CSV
    text instead (:meth:`text`). ``rows`` is made of ``result`` when first asked for.
    """

    selection: Selection
    interval_seconds: float
    detailed: bool
    source: Rows | Query = field(repr=False)

    @cached_property
    def result(self) -> Rows:
        """The rows as DuckDB returned them (what the CLI renders)."""
        source = self.source
        return source if isinstance(source, Rows) else source.fetch()

    @cached_property
    def rows(self) -> pl.DataFrame:
        """The rows as a polars DataFrame."""
        return self.result.frame()

    def to_json(self, *, rows: bool = True) -> dict[str, Any]:
        """``{"range", "interval_seconds", "rows": [...]}`` (no ``rows`` unless ``rows``)."""
        data = {"range": self.selection.to_json(), "interval_seconds": self.interval_seconds}
        if rows:
            data["rows"] = self.result.records()
        return data

    def text(
        self, fmt: str, decimals: Mapping[str, int] | None = None, depth: int = 0
    ) -> str | None:
        """The rows written by DuckDB: ``fmt`` ``"json"`` as :meth:`Query.json` (the list at
        ``depth``, floats rounded to ``decimals``), ``"csv"`` as :meth:`Query.csv`; None when
        the rows are already fetched or only Python can write them."""
        source = self.source
        if isinstance(source, Rows) or "result" in self.__dict__:
            return None
        return source.json(decimals or {}, depth) if fmt == "json" else source.csv()


def export_metrics(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    interval: float = 60.0,
    detailed: bool = False,
) -> MetricsExport:
    """One row per ``interval`` seconds and project (agent when ``detailed``).

    The rows are fetched when first asked for (``result``, ``rows``, ``to_json()``), or at
    once from a :class:`Store` passed in (which its owner may close)."""
    if not interval >= 1e-6:
        raise UsageError(f"the interval must be positive, not {interval:g}s")
    bucket_us = max(1, round(interval * 1e6))
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    if detailed:
        sums, params = tick_sums_sql(store, selection, by_agent=True)
        sql = f"""
            SELECT make_timestamptz((epoch_us(s.ts) // {bucket_us}) * {bucket_us})
                       AS interval_start,
                   s.project, s.agent, count(*) AS ticks,
                   avg(100.0 * s.cpu / c.cores) AS cpu_avg_percent,
                   max(100.0 * s.cpu / c.cores) AS cpu_max_percent,
                   max(s.rss) AS memory_max_bytes, max(s.fds) AS fds_max,
                   max(s.threads) AS threads_max
            FROM (
                SELECT host, ts, project, agent, cpu, CAST(rss AS BIGINT) AS rss, fds, threads
                FROM {sums}
            ) s JOIN {store.cores_sql()} c ON c.host = s.host
            GROUP BY s.project, s.agent, interval_start
        """
        kinds = EXPORT_KINDS
        order = "interval_start, project, agent"
    else:
        sql, params = _project_rows(store, selection, bucket_us)
        kinds = {name: kind for name, kind in EXPORT_KINDS.items() if name != "agent"}
        order = "interval_start, project"
    query = Query(store.db, sql, tuple(params), kinds, order)
    source = query.fetch() if store is workspace_dir else query
    return MetricsExport(selection, bucket_us / 1e6, detailed, source)


def _project_rows(store: Store, selection: Selection, bucket_us: int) -> tuple[str, list[Any]]:
    """The per-project rows over the whole project series, and their parameters: from the
    per-tick sums when they are the whole series (a sum at every tick for every project, read
    from the rollups), else from the series with its idle ticks (``project_series_sql``)."""
    if series_aligned(store, selection):  # known whole: no idle tick to fill in
        sums, params = tick_sums_sql(store, selection, by_agent=False)
        series = (
            "SELECT s.ts, s.project, 100.0 * s.cpu / c.cores AS cpu_percent, "
            "CAST(s.rss AS BIGINT) AS rss_bytes, s.fds, s.threads "
            f"FROM {sums} s JOIN {store.cores_sql()} c ON c.host = s.host"
        )
    else:
        series, params = project_series_sql(store, selection)
    sql = f"""
        SELECT make_timestamptz(bucket * {bucket_us}) AS interval_start, * EXCLUDE (bucket)
        FROM (
            SELECT epoch_us(ts) // {bucket_us} AS bucket, project, count(*) AS ticks,
                   avg(cpu_percent) AS cpu_avg_percent, max(cpu_percent) AS cpu_max_percent,
                   max(rss_bytes) AS memory_max_bytes, max(fds) AS fds_max,
                   max(threads) AS threads_max
            FROM ({series}) GROUP BY bucket, project
        )
    """
    return sql, params
