"""efficiency on Spark: the per-tick series against the limits in force, aggregated per project
and for the workspace by Spark; the derived columns, pauses and notes by the DuckDB engine's
own code (:func:`devloop.analytics.efficiency._report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.spark.dataset import Dataset, _frames, _select, _where
from devloop.analytics.timerange import TimeRange

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics.efficiency import Efficiency
    from devloop.analytics.query import Selection

#: A use within a millionth of the limit is at the limit (efficiency._TOLERANCE).
_TOLERANCE = "1.000001D"


def efficiency_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    projects: Sequence[str] = (),
    agents: Sequence[str] = (),
    *,
    hosts: Sequence[str] = (),
) -> Efficiency:
    """:func:`devloop.analytics.efficiency` on Spark over the dataset at ``root``: the same
    report, rows and JSON. ``hosts``: globs of the hosts whose rows count."""
    import polars as pl

    from devloop.analytics.efficiency import _report

    data = Dataset(spark, root, hosts)
    selection = _select(data, time_range, projects, agents)
    series = _frames(data, selection).series
    limits, note = limits_frame(data, root)
    found = data.sql(
        f"""
        WITH l AS (
            SELECT host, project, ts AS since,
                   lead(ts) OVER (PARTITION BY host, project ORDER BY ts) AS until,
                   cpu_limit, memory_limit
            FROM {{limits}}
        ),
        s AS (
            SELECT s.host, s.ts, s.project, s.cpu_percent AS cpu_used,
                   CAST(s.rss_bytes AS DOUBLE) AS memory_used, l.cpu_limit, l.memory_limit
            FROM {{series}} s LEFT JOIN l
              ON l.host = s.host AND l.project = s.project AND s.ts >= l.since
             AND (l.until IS NULL OR s.ts < l.until)
        ),
        w AS (
            SELECT host, ts, sum(cpu_used) AS cpu_used, sum(memory_used) AS memory_used,
                   CASE WHEN count(cpu_limit) = count(*) THEN sum(cpu_limit) END AS cpu_limit,
                   CASE WHEN count(memory_limit) = count(*) THEN sum(memory_limit) END
                       AS memory_limit
            FROM s GROUP BY host, ts
        )
        SELECT project, count(*) AS ticks, {_aggregates(selection.interval)} FROM s
        GROUP BY project
        UNION ALL
        SELECT CAST(NULL AS STRING) AS project, count(*) AS ticks,
               {_aggregates(selection.interval)}
        FROM w
        """,
        series=series,
        limits=limits,
    ).collect()
    schema = {"project": pl.String, "ticks": pl.Int64} | {
        name: pl.Float64 for name in found[0].asDict() if name not in ("project", "ticks")
    }
    frame = pl.DataFrame([tuple(row) for row in found], schema=schema, orient="row")
    per_project = frame.filter(pl.col("project").is_not_null())
    workspace_row = frame.filter(pl.col("project").is_null()).drop("project")
    return _report(selection, per_project, workspace_row, _pauses(data, selection), note)


def _aggregates(interval: float) -> str:
    """efficiency._aggregates in Spark SQL (``percentile``: DuckDB's ``quantile_cont``)."""
    aggs: list[str] = []
    for name, unit in (("cpu", "percent"), ("memory", "bytes")):
        used, limit = f"{name}_used", f"{name}_limit"
        aggs += [
            f"avg({limit}) AS {name}_allocated_{unit}",
            f"avg({used}) AS {name}_used_avg_{unit}",
            f"percentile({used}, 0.95) AS {name}_used_p95_{unit}",
            f"CAST(max({used}) AS DOUBLE) AS {name}_used_peak_{unit}",
            f"CAST(count_if({used} > {limit} * {_TOLERANCE}) AS DOUBLE) * "
            f"CAST({interval!r} AS DOUBLE) AS {name}_over_limit_seconds",
        ]
    return ", ".join(aggs)


def limits_frame(data: Dataset, root: Path | str) -> tuple[Any, str | None]:
    """The project limits over time (``host, project, ts, cpu_limit, memory_limit``, doubles)
    and a note when they are not the dataset's own: ``_series.limits_relation`` on Spark (the
    store's ``limits`` rows of agent ``""``; without any, the limits of the workspace.json of
    a local workspace folder, in force since forever)."""
    limits = data.sql(
        "SELECT host, project, ts, CAST(cpu_limit_percent AS DOUBLE) AS cpu_limit, "
        "CAST(CAST(memory_limit_bytes AS BIGINT) AS DOUBLE) AS memory_limit "
        "FROM {l} WHERE agent = ''",
        l=data.table("limits"),
    )
    if limits.limit(1).count():
        return limits, None
    from devloop.config import load_workspace
    from devloop.config.allocation import allocate
    from devloop.errors import DevloopError

    schema = "project STRING, cpu_limit DOUBLE, memory_limit DOUBLE"
    folder = Path(str(root))
    try:
        if "://" in str(root) or not folder.is_dir():
            raise DevloopError(f"no workspace folder at {root}")
        allocation = allocate(load_workspace(folder))
    except DevloopError as exc:
        empty = data.spark.createDataFrame([], f"host STRING, ts TIMESTAMP, {schema}")
        return empty, f"the store holds no limits and workspace.json cannot be read ({exc})"
    values = [
        (p.name, float(p.cpu), float(int(p.memory_bytes))) for p in allocation.projects.values()
    ]
    found = data.sql(
        "SELECT h.host, v.project, TIMESTAMP'1970-01-01 00:00:00' AS ts, v.cpu_limit, "
        "v.memory_limit FROM (SELECT DISTINCT host FROM {s}) h CROSS JOIN {v} v",
        s=data.table("system"),
        v=data.spark.createDataFrame(values, schema),
    )
    return found, "the store holds no limits: using the limits of the current workspace.json"


def _pauses(data: Dataset, selection: Selection) -> pl.DataFrame:
    """``pause`` events per project in the range (efficiency._pauses)."""
    import polars as pl

    found = data.sql(
        "SELECT project, count(*) AS pauses FROM {e} "
        f"WHERE action = 'pause' AND {_where(selection)} GROUP BY project",
        e=data.table("events"),
    ).collect()
    return pl.DataFrame(
        [tuple(row) for row in found],
        schema={"project": pl.String, "pauses": pl.Int64},
        orient="row",
    )
