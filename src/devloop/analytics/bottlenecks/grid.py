"""The project series with the limits in force, as dense arrays: per host, one row per selected
project and one column per collector tick (the values of ``_series.project_series_with_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devloop.analytics.bottlenecks.arrays import arrow, floats, ints
from devloop.analytics.query import limits_relation, tick_sums_sql

if TYPE_CHECKING:
    from devloop.analytics.bottlenecks.arrays import Floats, Ints
    from devloop.analytics.query import Selection, Store


@dataclass(frozen=True)
class Host:
    """One host's series: per selected project (rows) and collector tick (columns)."""

    name: str
    ticks: Ints  # epoch microseconds, ascending
    cpu: Floats  # CPU % of the machine, 0 where the project had no process
    memory: Floats  # bytes
    cpu_limit: Floats  # the limits in force, NaN before the project's first limit
    memory_limit: Floats


@dataclass(frozen=True)
class Grid:
    """The selected projects (rows) and each host's series."""

    projects: tuple[str, ...]
    hosts: tuple[Host, ...]
    #: Whether every per-tick sum of a selected project lies at a collector tick of its host:
    #: then an interval's ticks are all the sums between its start and end.
    at_ticks: bool
    note: str | None


def project_grid(store: Store, selection: Selection) -> Grid:
    """The series of ``_series.project_series_with_limits`` (same values: the per-tick sums
    of every selected project at every collector tick, 0 where it had none, CPU as
    ``100 * cores / host cores``, the newest limits at or before each tick), as arrays."""
    import numpy as np

    where, params = store.where(selection, names=False)
    # The hosts with a core count (every host of ``system``; CPU % needs it).
    cores = {host: n for host, n in store.rows(f"SELECT host, cores FROM {store.cores_sql()}")}
    hosts = sorted(host for host, n in cores.items() if host and n)
    # Names as their places in the lists (-1: not selected), found on the files' dictionaries
    # (the host only when there are several).
    host_at = "coalesce(list_position(?::VARCHAR[], host), 0) - 1" if len(hosts) > 1 else "0"
    host_params = [hosts] if len(hosts) > 1 else []
    ticks = arrow(
        store,
        f"SELECT * FROM (SELECT {host_at} AS h, epoch_us(ts) AS t FROM system WHERE {where}) "
        "WHERE h >= 0",
        [*host_params, *params],
    )
    names = list(selection.projects)
    sums_sql, sums_params = tick_sums_sql(store, selection, by_agent=False)
    sums = arrow(
        store,
        f"SELECT * FROM (SELECT {host_at.replace('host', 's.host')} AS h, "
        "coalesce(list_position(?::VARCHAR[], s.project), 0) - 1 AS p, "
        "epoch_us(s.ts) AS t, coalesce(s.cpu, 0) AS cpu, coalesce(s.rss, 0) AS rss "
        f"FROM {sums_sql} s) WHERE h >= 0 AND p >= 0",
        [*host_params, names, *sums_params],
        batch=1 << 22,
    )
    limits_sql, limit_params, note = limits_relation(store)
    limits = arrow(
        store,
        "SELECT host, project, epoch_us(ts) AS t, CAST(cpu_limit_percent AS DOUBLE) AS cpu, "
        "CAST(CAST(memory_limit_bytes AS BIGINT) AS DOUBLE) AS memory "
        f"FROM {limits_sql} l ORDER BY t, host, project",
        limit_params,
    )
    limit_rows: dict[tuple[str, str], list[int]] = {}
    for row, key in enumerate(
        zip(limits["host"].to_pylist(), limits["project"].to_pylist(), strict=True)
    ):
        limit_rows.setdefault(key, []).append(row)
    limit_ts = ints(limits["t"])
    limit_cpu = floats(limits["cpu"], np.nan)
    limit_memory = floats(limits["memory"], np.nan)

    tick_host, tick_ts = ints(ticks["h"]), ints(ticks["t"])
    columns: dict[str, Any] = {c: ints(sums[c]) for c in ("h", "p", "t")}
    columns |= {c: floats(sums[c]) for c in ("cpu", "rss")}
    # The columns are copies (cast, or joined from chunks) unless a column was one chunk of the
    # right type: drop the tables now, and each array once used, so that a 30M-row store's
    # grid is not built while every copy is still held (its peak memory).
    del ticks, sums
    at_ticks = True
    grids: list[Host] = []
    for number, host in enumerate(hosts):
        if len(hosts) > 1:
            mine = tick_ts[tick_host == number]
            rows = columns["h"] == number
            project, ts, cpu_used, rss_used = (columns[c][rows] for c in ("p", "t", "cpu", "rss"))
            del rows
        else:
            mine = tick_ts
            project, ts, cpu_used, rss_used = (columns.pop(c) for c in ("p", "t", "cpu", "rss"))
            columns.clear()
        mine = _distinct(mine)
        count = len(mine)
        at = _positions(mine, ts)
        hit = mine[at] == ts
        del ts
        if not hit.all():  # sums between ticks: not part of the series
            at_ticks = False
            project, at, cpu_used, rss_used = (a[hit] for a in (project, at, cpu_used, rss_used))
        del hit
        cell = project * count + at
        del project, at
        cpu = np.zeros((len(names), count))
        # the same arithmetic as the SQL: 100.0 * cpu / cores
        cpu.ravel()[cell] = 100.0 * cpu_used / float(cores[host])
        del cpu_used
        memory = np.zeros((len(names), count))
        memory.ravel()[cell] = rss_used
        del rss_used, cell
        cpu_limit = np.full((len(names), count), np.nan)
        memory_limit = np.full((len(names), count), np.nan)
        for row, name in enumerate(names):
            found = limit_rows.get((host, name))
            if not found:
                continue
            picked = np.asarray(found)
            newest = np.searchsorted(limit_ts[picked], mine, side="right") - 1
            known = newest >= 0
            cpu_limit[row, known] = limit_cpu[picked][newest[known]]
            memory_limit[row, known] = limit_memory[picked][newest[known]]
        grids.append(Host(host, mine, cpu, memory, cpu_limit, memory_limit))
    return Grid(tuple(names), tuple(grids), at_ticks, note)


def _positions(ticks: Ints, ts: Ints) -> Ints:
    """Where each of ``ts`` is in ``ticks`` (ascending), or near it when it is not there. The
    collector's ticks are evenly spaced: a tick's place is mostly its time over the spacing,
    and only the others are searched for."""
    import numpy as np

    count = len(ticks)
    if count < 2:
        return np.zeros(len(ts), dtype=np.int64)
    step = max(int(np.median(np.diff(ticks[: min(count, 1000)]))), 1)
    at = np.clip((ts - ticks[0]) // step, 0, count - 1)
    missed = np.flatnonzero(ticks[at] != ts)
    if len(missed):
        at[missed] = np.minimum(np.searchsorted(ticks, ts[missed]), count - 1)
    result: Ints = at
    return result


def _distinct(values: Ints) -> Ints:
    """The distinct values, ascending (the store's ticks come nearly sorted: a stable sort
    is fast on them)."""
    import numpy as np

    ordered = np.sort(values, kind="stable")
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]
