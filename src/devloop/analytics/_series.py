"""The per-tick series the reports are built from (definitions in :mod:`devloop.analytics._db`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store

if TYPE_CHECKING:
    import polars as pl

#: The project series' columns, in order (see :func:`project_series`).
PROJECT_SERIES_COLUMNS = (
    "host",
    "ts",
    "project",
    "cpu_percent",
    "rss_bytes",
    "fds",
    "threads",
    "processes",
)


#: Tie-break for arg_max: the earliest tick among equal peaks, so "when" is deterministic.
def arg_max_ts(value: str, ts: str = "ts") -> str:
    """``arg_max(ts, value)`` that picks the earliest tick among equal maxima."""
    return f"arg_max({ts}, {{'v': {value}, 'n': -epoch_us({ts})}})"


def ticks_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """``(host, ts)`` of every collector tick in the range."""
    where, params = store.where(selection, names=False)
    return f"SELECT DISTINCT host, ts FROM system WHERE {where}", params


def project_series_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """SQL for :func:`project_series` (no ORDER BY), and its parameters."""
    ticks, tick_params = ticks_sql(store, selection)
    where, params = store.where(selection)
    sql = f"""
        WITH ticks AS ({ticks}),
        names AS (SELECT unnest(?::VARCHAR[]) AS project),
        used AS (
            SELECT host, ts, project, sum(cpu_cores) AS cpu, sum(CAST(rss_bytes AS DOUBLE)) AS rss,
                   sum(fds) AS fds, sum(threads) AS threads, count(*) AS processes
            FROM samples WHERE {where} GROUP BY host, ts, project
        ),
        cores AS {store.cores_sql()}
        SELECT t.host, t.ts, n.project,
               coalesce(100.0 * u.cpu / c.cores, 0.0) AS cpu_percent,
               CAST(coalesce(u.rss, 0) AS BIGINT) AS rss_bytes,
               CAST(coalesce(u.fds, 0) AS BIGINT) AS fds,
               CAST(coalesce(u.threads, 0) AS BIGINT) AS threads,
               coalesce(u.processes, 0) AS processes
        FROM ticks t CROSS JOIN names n
        JOIN cores c ON c.host = t.host
        LEFT JOIN used u ON u.host = t.host AND u.ts = t.ts AND u.project = n.project
    """
    return sql, [*tick_params, list(selection.projects), *params]


def project_series(store: Store, selection: Selection) -> pl.DataFrame:
    """Every selected project at every tick, 0 where nothing of it ran.

    Columns: host, ts (UTC), project, cpu_percent (of the machine), rss_bytes, fds, threads
    (sums over the project's processes), processes (how many were sampled). Sorted by
    project, host, ts.
    """
    sql, params = project_series_sql(store, selection)
    return store.frame(f"{sql} ORDER BY n.project, t.host, t.ts", params)


def workspace_series(series: pl.DataFrame) -> pl.DataFrame:
    """The sum of ``project_series`` over projects per tick: host, ts, cpu_percent,
    rss_bytes, fds, threads, processes; sorted by host, ts."""
    import polars as pl

    return (
        series.group_by("host", "ts")
        .agg(pl.col("cpu_percent", "rss_bytes", "fds", "threads", "processes").sum())
        .sort("host", "ts")
    )


def limits_relation(store: Store) -> tuple[str, list[Any], str | None]:
    """A relation ``(host, project, ts, cpu_limit_percent, memory_limit_bytes)`` of project
    limits over time, its parameters, and a note when it is not the store's own.

    It is the store's ``limits`` rows (agent ``""``). When the store has none (a store written
    before limits were recorded), the limits of the current workspace.json, in force since
    forever, stand in and the note says so.
    """
    ((count,),) = store.rows("SELECT count(*) FROM limits WHERE agent = ''")
    if count:
        sql = (
            "(SELECT host, project, ts, cpu_limit_percent, memory_limit_bytes "
            "FROM limits WHERE agent = '')"
        )
        return sql, [], None
    from devloop.config import load_workspace
    from devloop.core.allocation import allocate
    from devloop.errors import DevloopError

    try:
        allocation = allocate(load_workspace(store.workspace_dir))
    except DevloopError as exc:
        empty = (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            "CAST(NULL AS TIMESTAMPTZ) AS ts, CAST(NULL AS DOUBLE) AS cpu_limit_percent, "
            "CAST(NULL AS BIGINT) AS memory_limit_bytes WHERE false)"
        )
        return empty, [], f"the store holds no limits and workspace.json cannot be read ({exc})"
    names = [p.name for p in allocation.projects.values()]
    cpus = [float(p.cpu) for p in allocation.projects.values()]
    memories = [int(p.memory_bytes) for p in allocation.projects.values()]
    sql = (
        "(SELECT h.host, v.project, TIMESTAMPTZ '1970-01-01 00:00:00+00' AS ts, "
        "v.cpu_limit_percent, v.memory_limit_bytes FROM (SELECT DISTINCT host FROM system) h "
        "CROSS JOIN (SELECT unnest(?::VARCHAR[]) AS project, unnest(?::DOUBLE[]) AS "
        "cpu_limit_percent, unnest(?::BIGINT[]) AS memory_limit_bytes) v)"
    )
    note = "the store holds no limits: using the limits of the current workspace.json"
    return sql, [names, cpus, memories], note


def project_series_with_limits(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, str | None]:
    """:func:`project_series` plus ``cpu_limit_percent`` and ``memory_limit_bytes``: the
    project's limits in force at each tick (null before its first limit), and a note when the
    limits come from workspace.json (see :func:`limits_relation`)."""
    series, params = project_series_sql(store, selection)
    limits, limit_params, note = limits_relation(store)
    sql = f"""
        SELECT s.*, l.cpu_limit_percent, l.memory_limit_bytes
        FROM ({series}) s ASOF LEFT JOIN {limits} l
        ON s.host = l.host AND s.project = l.project AND s.ts >= l.ts
        ORDER BY s.project, s.host, s.ts
    """
    return store.frame(sql, [*params, *limit_params]), note
