"""bottlenecks on Spark: the project series with the limits in force and each interval's usage
per agent computed by Spark; the runs over the threshold, their ranking and drivers by the
DuckDB engine's own code (``bottlenecks._report``, ``runs_over``, ``drivers_of``), which needs
the series as arrays: it is collected (one value per selected project and collector tick, as
the DuckDB engine holds it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.spark.dataset import Dataset, _Frames, _frames, _select, _where
from devloop.analytics.spark.efficiency import limits_frame
from devloop.analytics.timerange import TimeRange

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics.bottlenecks import Bottlenecks
    from devloop.analytics.bottlenecks.grid import Grid
    from devloop.analytics.bottlenecks.usage import Used
    from devloop.analytics.query import Selection


def bottlenecks_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    projects: Sequence[str] = (),
    agents: Sequence[str] = (),
    *,
    threshold: float = 80.0,
    min_duration: float = 0.0,
    limit: int | None = None,
    resources: tuple[str, ...] = ("cpu", "memory"),
    hosts: Sequence[str] = (),
) -> Bottlenecks:
    """:func:`devloop.analytics.bottlenecks` on Spark over the dataset at ``root``: the same
    report, rows and JSON. ``hosts``: globs of the hosts whose rows count."""
    from devloop.analytics.bottlenecks import _check, _report

    _check(threshold, limit, resources)
    data = Dataset(spark, root, hosts)
    selection = _select(data, time_range, projects, agents)
    frames = _frames(data, selection)
    grid = _grid(data, root, selection, frames)
    return _report(
        selection,
        grid,
        lambda intervals: _drivers(data, selection, frames, grid, intervals),
        threshold=threshold,
        min_duration=min_duration,
        limit=limit,
        resources=resources,
    )


def _grid(data: Dataset, root: Path | str, selection: Selection, frames: _Frames) -> Grid:
    """``bottlenecks.grid.project_grid`` from Spark: every selected project at every collector
    tick of each host with a core count (CPU % of the host's cores and bytes, 0 where the
    project had no process or no CPU reading), with the newest limits at or before the tick
    (NaN before the first)."""
    import numpy as np

    from devloop.analytics.bottlenecks.arrays import floats, ints
    from devloop.analytics.bottlenecks.grid import Grid, Host

    limits, note = limits_frame(data, root)
    names = list(selection.projects)
    found = data.sql(
        f"""
        WITH ticks AS (
            SELECT DISTINCT host, ts FROM {{system}} WHERE {_where(selection, names=False)}
        ),
        used AS (
            SELECT host, ts, project, sum(cpu) AS cpu, sum(rss) AS rss
            FROM {{agent_sums}} GROUP BY host, ts, project
        ),
        l AS (
            SELECT host, project, ts AS since,
                   lead(ts) OVER (PARTITION BY host, project ORDER BY ts) AS until,
                   cpu_limit, memory_limit
            FROM {{limits}}
        )
        SELECT t.host, unix_micros(t.ts) AS t, n.project,
               coalesce(100.0D * u.cpu / c.cores, 0.0D) AS cpu, coalesce(u.rss, 0.0D) AS rss,
               l.cpu_limit, l.memory_limit
        FROM ticks t CROSS JOIN {{names}} n
        JOIN {{cores}} c ON c.host = t.host AND c.cores > 0
        LEFT JOIN used u ON u.host = t.host AND u.ts = t.ts AND u.project = n.project
        LEFT JOIN l ON l.host = t.host AND l.project = n.project AND t.ts >= l.since
             AND (l.until IS NULL OR t.ts < l.until)
        ORDER BY t.host, n.project, t
        """,
        system=data.table("system"),
        agent_sums=frames.agent_sums,
        cores=frames.cores,
        names=data.spark.createDataFrame([(name,) for name in names], "project STRING"),
        limits=limits,
    ).toArrow()
    place = {name: row for row, name in enumerate(names)}
    host_names = found["host"].to_pylist()
    projects = np.asarray([place[name] for name in found["project"].to_pylist()], dtype=np.int64)
    ts = ints(found["t"])
    values = {
        "cpu": floats(found["cpu"]),
        "rss": floats(found["rss"]),
        "cpu_limit": floats(found["cpu_limit"], np.nan),
        "memory_limit": floats(found["memory_limit"], np.nan),
    }
    grids: list[Host] = []
    start = 0
    while start < len(host_names):  # rows by host, then project, then tick
        host = host_names[start]
        stop = start
        while stop < len(host_names) and host_names[stop] == host:
            stop += 1
        ticks = np.unique(ts[start:stop])
        cell = projects[start:stop] * len(ticks) + np.searchsorted(ticks, ts[start:stop])
        arrays = {}
        for name, column in values.items():
            array = np.zeros((len(names), len(ticks)))
            array.ravel()[cell] = column[start:stop]
            arrays[name] = array
        grids.append(
            Host(
                host,
                ticks,
                arrays["cpu"],
                arrays["rss"],
                arrays["cpu_limit"],
                arrays["memory_limit"],
            )  # fmt: skip
        )
        start = stop
    return Grid(tuple(names), tuple(grids), True, note)


def _drivers(
    data: Dataset, selection: Selection, frames: _Frames, grid: Grid, intervals: pl.DataFrame
) -> pl.DataFrame:
    """``bottlenecks.drivers.ranked_drivers`` with each agent's usage over each interval summed
    by Spark: the interval's ticks (a workspace interval's once per selected project) joined
    with the agents' per-tick sums."""
    from devloop.analytics.bottlenecks.drivers import drivers_of

    if intervals.is_empty():
        return drivers_of(None, intervals)
    # Not a broadcast of the intervals' ticks, which Spark sizes as a small local relation: a
    # few million of them (3.6M samples rows, 6 hosts) did not fit a 1 GB driver's broadcast.
    used = data.sql(
        """
        SELECT /*+ MERGE(i) */ i.row, s.project, s.agent,
               sum(CASE WHEN i.cpu THEN s.cpu ELSE s.rss END) AS used
        FROM {ticks} i JOIN {agent_sums} s
          ON s.host = i.host AND unix_micros(s.ts) = i.t AND s.project = i.project
        GROUP BY i.row, s.project, s.agent
        """,
        ticks=_interval_ticks(data, selection, grid, intervals),
        agent_sums=frames.agent_sums,
    ).toArrow()
    return drivers_of(_used(used), intervals)


def _interval_ticks(
    data: Dataset, selection: Selection, grid: Grid, intervals: pl.DataFrame
) -> Any:
    """A DataFrame ``(row, host, project, cpu, t)``: every collector tick of every interval
    (``row``: its place in ``intervals``; ``t``: epoch µs), a workspace interval's once per
    selected project."""
    import numpy as np
    import pyarrow as pa

    ticks = {host.name: host.ticks for host in grid.hosts}
    first, last = intervals["first"].to_numpy(), intervals["last"].to_numpy()
    counts = last - first + 1
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(np.arange(intervals.height, dtype=np.int64), counts)
    at = np.repeat(first, counts) + within
    host_of = intervals["host"].to_list()
    t = np.empty(len(rows), dtype=np.int64)
    for host in set(host_of):
        mine = np.asarray(host_of, dtype=object)[rows] == host
        t[mine] = ticks[host][at[mine]]
    parts = []
    for name in selection.projects:
        scoped = np.asarray(
            [project in (None, name) for project in intervals["project"].to_list()], dtype=bool
        )[rows]
        parts.append(
            pa.table(
                {
                    "row": pa.array(rows[scoped]),
                    "host": pa.array(np.asarray(host_of, dtype=object)[rows[scoped]].tolist()),
                    "project": pa.array([name] * int(scoped.sum()), pa.string()),
                    "cpu": pa.array((intervals["resource"] == "cpu").to_numpy()[rows[scoped]]),
                    "t": pa.array(t[scoped]),
                }
            )
        )
    return data.spark.createDataFrame(pa.concat_tables(parts))


def _used(table: Any) -> Used:
    """The per-interval sums as :class:`~devloop.analytics.bottlenecks.usage.Used` (a null
    sum, every tick's CPU unread, as 0)."""
    import numpy as np

    from devloop.analytics.bottlenecks.arrays import floats, ints
    from devloop.analytics.bottlenecks.usage import Used

    pairs = list(zip(table["project"].to_pylist(), table["agent"].to_pylist(), strict=True))
    ids: dict[tuple[str, str], int] = {}
    agent = np.array([ids.setdefault(pair, len(ids)) for pair in pairs], dtype=np.int64)
    return Used(ints(table["row"]), agent, floats(table["used"]), list(ids))
