"""``audit query``: per-agent statistics of one metric over a range.

Each agent's series is the sum over its processes at each tick at which it had one; the
statistics are over those ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, open_store, records
from devloop.analytics._series import arg_max_ts, lives_sql, tick_sums_sql
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

#: metric name -> (SQL of the per-tick sum, unit)
METRICS = {
    "cpu": ("cpu", "percent"),
    "memory": ("rss", "bytes"),
    "fds": ("CAST(fds AS DOUBLE)", "count"),
    "threads": ("CAST(threads AS DOUBLE)", "count"),
}

#: Columns of :attr:`Audit.agents`, in order.
AUDIT_COLUMNS = (
    "project",
    "agent",
    "metric",
    "unit",
    "ticks",
    "processes",
    "avg",
    "min",
    "p50",
    "p95",
    "max",
    "max_at",
)


@dataclass(frozen=True)
class Audit:
    """The audit: ``agents`` has one row per agent (:data:`AUDIT_COLUMNS`): project, agent,
    metric, unit ("percent" of the machine for cpu, "bytes" for memory, "count"), ticks with a
    process, processes (distinct lives), avg, min, p50, p95 (linear), max and max_at (the first
    tick at the max)."""

    selection: Selection
    metric: str
    agents: pl.DataFrame

    def to_json(self) -> dict[str, Any]:
        """``{"range", "metric", "agents": [...]}``."""
        return {
            "range": self.selection.to_json(),
            "metric": self.metric,
            "agents": records(self.agents),
        }


def audit_query(
    workspace_dir: Path | str | Store,
    metric: str,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> Audit:
    """Statistics of ``metric`` (cpu, memory, fds, threads) per agent over ``time_range``."""
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r} (use {', '.join(METRICS)})")
    import polars as pl

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    value, unit = METRICS[metric]
    sums, params = tick_sums_sql(store, selection, by_agent=True)
    lives_rel, lives_params = lives_sql(store, selection)
    scale = "100.0 * a.v / c.cores" if metric == "cpu" else "a.v"
    frame = store.frame(
        f"""
        WITH a AS (SELECT host, ts, project, agent, {value} AS v FROM {sums}),
        p AS (SELECT a.*, {scale} AS x FROM a JOIN {store.cores_sql()} c ON c.host = a.host),
        lives AS (
            SELECT project, agent, count(*) AS processes FROM {lives_rel}
            GROUP BY project, agent
        )
        SELECT p.project, p.agent, count(*) AS ticks, any_value(l.processes) AS processes,
               avg(x) AS avg, min(x) AS min, quantile_cont(x, 0.5) AS p50,
               quantile_cont(x, 0.95) AS p95, max(x) AS max, {arg_max_ts("x")} AS max_at
        FROM p JOIN lives l ON l.project = p.project AND l.agent = p.agent
        GROUP BY p.project, p.agent
        """,
        [*params, *lives_params],
    )
    frame = (
        frame.with_columns(
            pl.lit(metric).alias("metric"),
            pl.lit(unit).alias("unit"),
            pl.col("ticks", "processes").cast(pl.Int64),
        )
        .select(AUDIT_COLUMNS)
        .sort("project", "agent")
    )
    return Audit(selection, metric, frame)
