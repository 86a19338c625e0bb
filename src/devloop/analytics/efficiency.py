"""``efficiency``: per project, what was allocated against what was used.

Allocation is the limit in force at each tick (averaged over the range); use is the project's
per-tick series. Utilisation = average use / average allocation; idle allocation = average
allocation - average use; time over limit = ticks above the limit x the tick interval; pauses =
``pause`` events of the project (or of its agents). The workspace row sums the projects per tick.
A note points to ``devloop workspace autotune`` where allocation is far from use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, open_store, records
from devloop.analytics._series import (
    limits_relation,
    project_series_with_limits,
    tick_sums_sql,
    ticks_sql,
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
    import polars as pl

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    in_sql = _stats_sql(store, selection)
    if in_sql is not None:
        per_project, workspace_row, note = in_sql
    else:
        per_project, workspace_row, note = _stats_polars(store, selection)
    per_project, workspace_row = (
        _derived(frame).with_columns(pl.col("ticks").cast(pl.Int64))
        for frame in (per_project, workspace_row)
    )
    per_project = per_project.with_columns(pl.lit("project").alias("scope"))
    workspace_row = workspace_row.with_columns(
        pl.lit("workspace").alias("scope"), pl.lit(None, dtype=pl.String).alias("project")
    )
    pauses = _pauses(store, selection)
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


def _stats_polars(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    """Per-project and workspace statistics (before the derived columns) in polars."""
    import polars as pl

    series, note = project_series_with_limits(store, selection, ordered=False)
    series = series.with_columns(
        pl.col("rss_bytes").cast(pl.Float64), pl.col("memory_limit_bytes").cast(pl.Float64)
    )
    whole = series.group_by("host", "ts").agg(
        pl.col("cpu_percent", "rss_bytes").sum(),
        pl.when(pl.col("cpu_limit_percent").null_count() == 0).then(
            pl.col("cpu_limit_percent").sum()
        ),
        pl.when(pl.col("memory_limit_bytes").null_count() == 0).then(
            pl.col("memory_limit_bytes").sum()
        ),
    )
    interval = selection.interval

    def stats(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("ticks")]
        for name, used, limit in (
            ("cpu", "cpu_percent", "cpu_limit_percent"),
            ("memory", "rss_bytes", "memory_limit_bytes"),
        ):
            unit = "percent" if name == "cpu" else "bytes"
            aggs += [
                pl.col(limit).mean().alias(f"{name}_allocated_{unit}"),
                pl.col(used).mean().alias(f"{name}_used_avg_{unit}"),
                pl.col(used)
                .quantile(0.95, interpolation="linear")
                .alias(f"{name}_used_p95_{unit}"),
                pl.col(used).max().alias(f"{name}_used_peak_{unit}"),
                ((pl.col(used) > pl.col(limit) * _TOLERANCE).sum() * interval)
                .cast(pl.Float64)
                .alias(f"{name}_over_limit_seconds"),
            ]
        grouped = frame.group_by(keys).agg(aggs) if keys else frame.select(aggs)
        return grouped

    return stats(series, ["project"]), stats(whole, []), note


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
    otherwise."""
    import polars as pl

    ticks, tick_params = ticks_sql(store, selection)
    sums, params = tick_sums_sql(store, selection, by_agent=False)
    limits, limit_params, note = limits_relation(store)
    names = list(selection.projects)
    interval = selection.interval
    aggs = ["count(*) AS ticks"]
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
    columns = ", ".join(aggs)
    frame = store.frame(
        f"""
        WITH s AS (
            SELECT s.host, s.ts, s.project, 100.0 * s.cpu / c.cores AS cpu_used,
                   CAST(CAST(s.rss AS BIGINT) AS DOUBLE) AS memory_used,
                   (t.ts IS NOT NULL AND c.cores IS NOT NULL
                    AND list_contains(?::VARCHAR[], s.project)) AS at_tick
            FROM {sums} s LEFT JOIN {store.cores_sql()} c ON c.host = s.host
            LEFT JOIN ({ticks}) t ON s.host = t.host AND s.ts = t.ts
        ),
        l AS (
            SELECT host, project, ts, CAST(cpu_limit_percent AS DOUBLE) AS cpu_limit,
                   CAST(CAST(memory_limit_bytes AS BIGINT) AS DOUBLE) AS memory_limit
            FROM {limits} l
        ),
        j AS MATERIALIZED (
            SELECT s.*, l.cpu_limit, l.memory_limit
            FROM s ASOF LEFT JOIN l
              ON s.host = l.host AND s.project = l.project AND s.ts >= l.ts
        ),
        w AS (
            SELECT host, ts, coalesce(sum(cpu_used), 0.0) AS cpu_used,
                   coalesce(sum(memory_used), 0.0) AS memory_used,
                   CASE WHEN count(cpu_limit) = count(*) THEN sum(cpu_limit) END AS cpu_limit,
                   CASE WHEN count(memory_limit) = count(*) THEN sum(memory_limit) END
                       AS memory_limit
            FROM j GROUP BY host, ts
        )
        SELECT 'project' AS scope, project, {columns}, bool_and(at_tick) AS at_tick
        FROM j GROUP BY project
        UNION ALL
        SELECT 'workspace' AS scope, NULL AS project, {columns}, true AS at_tick FROM w
        """,
        [names, *params, *tick_params, *limit_params],
    )
    ((total,),) = store.rows(f"SELECT count(*) FROM ({ticks})", tick_params)
    projects = frame.filter(pl.col("scope") == "project")
    if projects["ticks"].sum() != total * len(names) or not projects["at_tick"].all():
        return None
    frame = frame.drop("scope", "at_tick")
    return projects.drop("scope", "at_tick"), frame.filter(pl.col("project").is_null()), note


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
