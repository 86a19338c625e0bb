"""``audit query``: per-agent statistics of one metric over a range.

Each agent's series is the sum over its processes at each tick at which it had one; the
statistics are over those ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import (
    Selection,
    Store,
    agent_counts_sql,
    agent_hours_sql,
    lives_sql,
    open_store,
    quantiles_from_counts_sql,
    records,
    tick_sums_sql,
    top_at,
)
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
    column = {"cpu": "cpu", "memory": "rss", "fds": "fds", "threads": "threads"}[metric]
    # avg, min, max and max_at combine the per-hour rollups (exact). So do the percentiles of
    # CPU and memory, from the per-hour (per-day) counts of each value; those of fds and
    # threads read every tick.
    hours, hour_params = agent_hours_sql(store, selection)
    lives_rel, lives_params = lives_sql(store, selection)
    if metric in ("cpu", "memory"):
        counts, params = agent_counts_sql(store, selection, column)
        values = (
            f"(SELECT a.project, a.agent, 100.0 * a.cpu / c.cores AS v, a.n FROM {counts} a "
            f"JOIN {store.cores_sql()} c ON c.host = a.host)"
            if metric == "cpu"
            else f"(SELECT project, agent, rss AS v, n FROM {counts})"
        )
        quantiles = quantiles_from_counts_sql(values, "project, agent", [0.5, 0.95])
        q = f"(SELECT project, agent, [q0, q1] AS qs FROM {quantiles})"
    else:
        sums, params = tick_sums_sql(store, selection, by_agent=True)
        q = f"""(
            SELECT project, agent, quantile_cont({value}, [0.5, 0.95]) AS qs FROM {sums}
            GROUP BY project, agent
        )"""

    def x(v: str) -> str:
        return f"100.0 * {v} / cores" if metric == "cpu" else f"CAST({v} AS DOUBLE)"

    frame = store.frame(
        f"""
        WITH h AS (SELECT h.*, c.cores FROM {hours} h JOIN {store.cores_sql()} c
                   ON c.host = h.host),
        stats AS (
            SELECT project, agent, sum(ticks) AS ticks,
                   sum({x(f"{column}_sum")}) / sum({column}_n) AS avg,
                   min({x(f"{column}_min")}) AS min, max({x(f"{column}_max")}) AS max,
                   {top_at(f"{column}_top", "cores" if metric == "cpu" else "")} AS max_at
            FROM h GROUP BY project, agent
        ),
        q AS {q},
        lives AS (
            SELECT project, agent, count(*) AS processes FROM {lives_rel}
            GROUP BY project, agent
        )
        SELECT s.project, s.agent, s.ticks, l.processes, s.avg, s.min, q.qs[1] AS p50,
               q.qs[2] AS p95, s.max, s.max_at
        FROM stats s LEFT JOIN q ON q.project = s.project AND q.agent = s.agent
        JOIN lives l ON l.project = s.project AND l.agent = s.agent
        """,
        [*hour_params, *params, *lives_params],
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
