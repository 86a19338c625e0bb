"""``bottlenecks``: when a project or the workspace ran at or above a share of its limit.

An interval is a run of consecutive ticks at which the usage was ``>= threshold`` percent of the
limit in force at that tick (see :mod:`devloop.analytics._db`), for CPU or memory. Intervals are
ranked longest first (then by how far over they went), and each names the agents that drove it:
their share of the scope's usage summed over the interval's ticks.

How it is computed: the project series with the limits in force are held as dense arrays (one
row per selected project, one column per collector tick of a host), the workspace row is their
sum, and the runs over the threshold are found on those arrays. An interval's drivers are summed
hour by hour from the ``agent_series`` rollup (each agent's per-tick sums of the hour in time
order, so an interval's part of the hour is one slice per agent), from the ``agent_hour`` sums
for the hours an interval covers whole, and from raw rows for hours without rollups. That holds
when every per-tick sum lies at a collector tick (the collector's own stores); otherwise the
drivers are matched tick by tick in DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import THREADS, Selection, Store, open_store, records
from devloop.analytics._series import HOUR_US, limits_relation, tick_sums_sql
from devloop.analytics.timerange import TimeRange
from devloop.errors import StoreError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl
    import pyarrow as pa

    Ints = npt.NDArray[np.int64]
    Floats = npt.NDArray[np.float64]

RESOURCES = ("cpu", "memory")

#: Columns of :attr:`Bottlenecks.intervals`, in order.
BOTTLENECK_COLUMNS = (
    "rank",
    "scope",
    "project",
    "resource",
    "start",
    "end",
    "ticks",
    "duration_seconds",
    "limit",
    "peak",
    "peak_percent_of_limit",
    "avg_percent_of_limit",
    "drivers",
)

#: How many agents each interval names.
TOP_DRIVERS = 3


@dataclass(frozen=True)
class Bottlenecks:
    """The bottlenecks report.

    ``intervals`` columns:

    * ``rank`` (1 = longest), ``scope`` ("workspace" or "project"), ``project`` (null for the
      workspace), ``resource`` ("cpu" or "memory")
    * ``start``, ``end``: the first and last tick at or above the threshold; ``ticks``;
      ``duration_seconds`` = end - start + one tick interval
    * ``limit``: the limit in force at the start (CPU % of the machine, or bytes); ``peak``: the
      highest usage in the interval, same unit; ``peak_percent_of_limit``,
      ``avg_percent_of_limit``
    * ``drivers``: up to three ``{"project", "agent", "share_percent"}``, the agents with the
      largest share of the scope's usage over the interval
    """

    selection: Selection
    threshold: float
    min_duration: float
    intervals: pl.DataFrame
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"range", "threshold_percent", "min_duration_seconds", "intervals", "notes"}``."""
        return {
            "range": self.selection.to_json(),
            "threshold_percent": self.threshold,
            "min_duration_seconds": self.min_duration,
            "intervals": records(self.intervals),
            "notes": list(self.notes),
        }


def bottlenecks(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    threshold: float = 80.0,
    min_duration: float = 0.0,
    resources: tuple[str, ...] = RESOURCES,
) -> Bottlenecks:
    """Intervals at or above ``threshold`` % of the limit lasting at least ``min_duration`` s."""
    import polars as pl

    if not threshold > 0:
        raise UsageError(f"the threshold must be above 0, not {threshold:g}")
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown or not resources:
        raise UsageError(f"unknown resource {', '.join(unknown)!r} (use cpu or memory)")
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    grid = _grid(store, selection)
    notes = (grid.note,) if grid.note else ()
    intervals = (
        _spans(grid, resources, threshold, selection.interval)
        .filter(pl.col("duration_seconds") >= min_duration)
        .sort(
            ["duration_seconds", "peak_percent_of_limit", "start", "scope", "project", "host"],
            descending=[True, True, False, True, False, False],
            nulls_last=False,
            maintain_order=True,
        )
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )
    drivers = _drivers(store, selection, grid, intervals)
    intervals = intervals.join(drivers, on="rank", how="left").sort("rank")
    intervals = intervals.with_columns(
        pl.col("drivers").fill_null(pl.lit([], dtype=_drivers_type()))
    )
    return Bottlenecks(
        selection, threshold, min_duration, intervals.select(BOTTLENECK_COLUMNS), notes
    )


# --- the project series with limits, as arrays ----------------------------------------------


@dataclass(frozen=True)
class _Host:
    """One host's series: per selected project (rows) and collector tick (columns)."""

    name: str
    ticks: Ints  # epoch microseconds, ascending
    cpu: Floats  # CPU % of the machine, 0 where the project had no process
    memory: Floats  # bytes
    cpu_limit: Floats  # the limits in force, NaN before the project's first limit
    memory_limit: Floats


@dataclass(frozen=True)
class _Grid:
    projects: tuple[str, ...]
    hosts: tuple[_Host, ...]
    #: Whether every per-tick sum of a selected project lies at a collector tick of its host:
    #: then an interval's ticks are all the sums between its start and end.
    at_ticks: bool
    note: str | None


def _arrow(store: Store, sql: str, params: Sequence[Any] = (), batch: int = 1 << 17) -> pa.Table:
    import duckdb

    try:
        return store.connection.sql(sql, params=list(params)).to_arrow_table(batch)
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {exc}") from exc


def _grid(store: Store, selection: Selection) -> _Grid:
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
    ticks = _arrow(
        store,
        f"SELECT * FROM (SELECT {host_at} AS h, epoch_us(ts) AS t FROM system WHERE {where}) "
        "WHERE h >= 0",
        [*host_params, *params],
    )
    names = list(selection.projects)
    sums_sql, sums_params = tick_sums_sql(store, selection, by_agent=False)
    sums = _arrow(
        store,
        f"SELECT * FROM (SELECT {host_at.replace('host', 's.host')} AS h, "
        "coalesce(list_position(?::VARCHAR[], s.project), 0) - 1 AS p, "
        "epoch_us(s.ts) AS t, coalesce(s.cpu, 0) AS cpu, coalesce(s.rss, 0) AS rss "
        f"FROM {sums_sql} s) WHERE h >= 0 AND p >= 0",
        [*host_params, names, *sums_params],
        batch=1 << 22,
    )
    limits_sql, limit_params, note = limits_relation(store)
    limits = _arrow(
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
    limit_ts = _ints(limits["t"])
    limit_cpu = _floats(limits["cpu"], np.nan)
    limit_memory = _floats(limits["memory"], np.nan)

    tick_host, tick_ts = _ints(ticks["h"]), _ints(ticks["t"])
    sum_host, sum_project, sum_ts = (_ints(sums[c]) for c in ("h", "p", "t"))
    sum_cpu, sum_rss = _floats(sums["cpu"]), _floats(sums["rss"])
    at_ticks = True
    grids: list[_Host] = []
    for number, host in enumerate(hosts):
        mine, project, ts, cpu_used, rss_used = tick_ts, sum_project, sum_ts, sum_cpu, sum_rss
        if len(hosts) > 1:
            mine = tick_ts[tick_host == number]
            rows = sum_host == number
            project, ts, cpu_used, rss_used = (a[rows] for a in (project, ts, cpu_used, rss_used))
        mine = _distinct(mine)
        count = len(mine)
        at = _positions(mine, ts)
        hit = mine[at] == ts
        if not hit.all():  # sums between ticks: not part of the series
            at_ticks = False
            project, at, cpu_used, rss_used = (a[hit] for a in (project, at, cpu_used, rss_used))
        cpu = np.zeros((len(names), count))
        memory = np.zeros((len(names), count))
        cell = project * count + at
        # the same arithmetic as the SQL: 100.0 * cpu / cores
        cpu.ravel()[cell] = 100.0 * cpu_used / float(cores[host])
        memory.ravel()[cell] = rss_used
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
        grids.append(_Host(host, mine, cpu, memory, cpu_limit, memory_limit))
    return _Grid(tuple(names), tuple(grids), at_ticks, note)


def _ints(column: pa.ChunkedArray | pa.Array) -> Ints:
    """An integer (or timestamp) column without nulls as int64."""
    import numpy as np
    import pyarrow as pa

    values: Ints = _numbers(column, pa.int64(), np.int64, 0)
    return values


def _numbers(column: pa.ChunkedArray | pa.Array, kind: pa.DataType, dtype: Any, null: Any) -> Any:
    """``column`` cast to ``kind`` as a numpy array of ``dtype``, ``null`` for nulls. From the
    buffers: pyarrow's ``to_numpy`` imports pandas, which costs a third of a second."""
    import numpy as np
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if not len(chunk):
            continue
        chunk = chunk.cast(kind)
        if chunk.null_count:
            chunk = chunk.fill_null(pa.scalar(null, kind))
        data = np.frombuffer(chunk.buffers()[1], dtype=dtype)
        parts.append(data[chunk.offset : chunk.offset + len(chunk)])
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


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


# --- the intervals -------------------------------------------------------------------------


def _spans(
    grid: _Grid, resources: tuple[str, ...], threshold: float, interval: float
) -> pl.DataFrame:
    """Every run of ticks over ``threshold`` % of the limit, per scope, host and resource, with
    the figures of :class:`Bottlenecks` and ``host``, ``first`` and ``last`` (the run's
    columns in its host's arrays)."""
    import numpy as np
    import polars as pl

    parts: list[pl.DataFrame] = []
    scopes = np.array([None, *grid.projects], dtype=object)
    for host in grid.hosts:
        count = len(host.ticks)
        if not count:
            continue
        for resource in resources:
            used, limit = (
                (host.cpu, host.cpu_limit)
                if resource == "cpu"
                else (host.memory, host.memory_limit)
            )
            # Row 0 is the workspace: the sum of the projects, its limit the sum of theirs
            # (NaN, no limit, when a project has none).
            used = np.vstack([used.sum(axis=0), used])
            limit = np.vstack([limit.sum(axis=0), limit])
            with np.errstate(divide="ignore", invalid="ignore"):
                percent = 100.0 * used / limit
                # CPU is stored as float32 cores: within a millionth of the threshold is at it.
                over = (limit > 0) & (percent >= threshold * (1 - 1e-6))
            # A run starts at a tick over the threshold whose tick before (in the same row)
            # is not, and ends at one whose tick after is not.
            flat = over.ravel()
            before = np.zeros_like(flat)
            before[1:] = flat[:-1]
            before[::count] = False
            after = np.zeros_like(flat)
            after[:-1] = flat[1:]
            after[count - 1 :: count] = False
            firsts = np.flatnonzero(flat & ~before)
            if not len(firsts):
                continue
            lasts = np.flatnonzero(flat & ~after)
            rows = firsts // count
            first, stop = firsts - rows * count, lasts + 1 - rows * count
            bounds = np.empty(2 * len(rows), dtype=np.int64)
            bounds[0::2] = firsts
            bounds[1::2] = lasts + 1
            if bounds[-1] == flat.size:  # reduceat takes the last run to the end
                bounds = bounds[:-1]

            ticks = stop - first
            start, end = host.ticks[first], host.ticks[stop - 1]
            parts.append(
                pl.DataFrame(
                    {
                        "scope": np.where(rows == 0, "workspace", "project"),
                        "project": pl.Series(scopes[rows].tolist(), dtype=pl.String),
                        "host": host.name,
                        "resource": resource,
                        "start": pl.Series(start).cast(pl.Datetime("us", "UTC")),
                        "end": pl.Series(end).cast(pl.Datetime("us", "UTC")),
                        "ticks": ticks.astype(np.int64),
                        "duration_seconds": (end - start) / 1e6 + interval,
                        "limit": limit.ravel()[firsts],
                        "peak": _per_run(np.maximum, used, bounds),
                        "peak_percent_of_limit": _per_run(np.maximum, percent, bounds),
                        "avg_percent_of_limit": _per_run(np.add, percent, bounds) / ticks,
                        "first": first.astype(np.int64),
                        "last": (stop - 1).astype(np.int64),
                    }
                )
            )
    if not parts:
        return pl.DataFrame(schema=_span_schema())
    return pl.concat(parts)


def _per_run(ufunc: np.ufunc, values: Floats, bounds: Ints) -> Floats:
    """``ufunc`` reduced over each run: ``bounds`` holds each run's first and stop cell
    (flat), the last stop left out when it is the end."""
    import numpy as np

    with np.errstate(all="ignore"):  # the cells between the runs: not used
        result: Floats = ufunc.reduceat(values.ravel(), bounds)[0::2]
    return result


def _span_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "scope": pl.String,
        "project": pl.String,
        "host": pl.String,
        "resource": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "ticks": pl.Int64,
        "duration_seconds": pl.Float64,
        "limit": pl.Float64,
        "peak": pl.Float64,
        "peak_percent_of_limit": pl.Float64,
        "avg_percent_of_limit": pl.Float64,
        "first": pl.Int64,
        "last": pl.Int64,
    }


# --- the drivers -----------------------------------------------------------------------------


def _drivers_type() -> pl.List:
    import polars as pl

    return pl.List(
        pl.Struct({"project": pl.String, "agent": pl.String, "share_percent": pl.Float64})
    )


@dataclass(frozen=True)
class _Used:
    """Usage summed per interval (its row in the intervals) and agent (``names[agent]``, a
    (project, agent) pair), one row per pair with at least one per-tick sum."""

    interval: Ints
    agent: Ints
    used: Floats
    names: list[tuple[str, str]]


def _drivers(
    store: Store, selection: Selection, grid: _Grid, intervals: pl.DataFrame
) -> pl.DataFrame:
    """Per interval (``rank``), ``drivers``: the agents with the largest share of its usage,
    each agent's per-tick sums over the interval's ticks (for the workspace, the agents of
    every selected project)."""
    import numpy as np
    import polars as pl

    empty = pl.DataFrame(
        {"rank": [], "drivers": []}, schema={"rank": pl.Int64, "drivers": _drivers_type()}
    )
    if intervals.is_empty():
        return empty
    if grid.at_ticks:
        found = _used_by_range(store, selection, grid, intervals)
    else:
        found = _used_by_tick(store, selection, grid, intervals)
    interval, agent, used = found.interval, found.agent, found.used
    if not len(interval):
        return empty
    names = sorted(found.names)
    by_name = np.empty(len(names), dtype=np.int64)
    by_name[sorted(range(len(names)), key=found.names.__getitem__)] = np.arange(len(names))
    agent = by_name[agent]  # now the place in ``names``
    totals = np.bincount(interval, weights=used, minlength=intervals.height)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = 100.0 * used / totals[interval]
    # Per interval, the largest share first, then by project and agent.
    code = interval * len(names) + agent
    if not bool((code[1:] > code[:-1]).all()):
        order = np.argsort(code)
        interval, agent, share = interval[order], agent[order], share[order]
    top = _top(interval, share, TOP_DRIVERS)
    interval, agent, share = interval[top], agent[top], share[top]
    return (
        pl.DataFrame(
            {
                "rank": intervals["rank"].to_numpy()[interval],
                "project": pl.Series([project for project, _ in names]).gather(agent),
                "agent": pl.Series([name for _, name in names]).gather(agent),
                "share_percent": share,
            },
            schema={
                "rank": pl.Int64,
                "project": pl.String,
                "agent": pl.String,
                "share_percent": pl.Float64,
            },
        )
        .group_by("rank", maintain_order=True)
        .agg(pl.struct("project", "agent", "share_percent").alias("drivers"))
        .with_columns(pl.col("drivers").cast(_drivers_type()))
    )


#: Up to how many cells :func:`_top` sorts as a table of groups by place.
_TOP_TABLE_CELLS = 1 << 24


def _top(group: Ints, share: Floats, count: int) -> Ints:
    """The rows of the ``count`` largest shares of each group, the first row first among
    equal shares, in that order (``group`` ascending)."""
    import numpy as np

    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    place = np.arange(len(group)) - np.repeat(starts, sizes)
    widest = int(sizes.max())
    if len(starts) * widest <= _TOP_TABLE_CELLS:  # groups by place: a stable sort per group
        table = np.full((len(starts), widest), np.inf)
        table[np.repeat(np.arange(len(starts)), sizes), place] = -share
        best = np.argsort(table, axis=1, kind="stable")[:, :count]
        rows = (starts[:, None] + best)[best < sizes[:, None]]
    else:  # stable sorts, each keeping the order of the one before among equals
        order = np.argsort(-share, kind="stable")
        order = order[np.argsort(group[order], kind="stable")]
        rows = order[place < count]
    result: Ints = rows
    return result


@dataclass(frozen=True)
class _IntervalArrays:
    """The intervals as arrays: start and end (epoch µs), whether CPU (else memory), and the
    scope (``targets[target]``: (host, project), project None for the workspace); the
    selected names and each host's collector ticks."""

    start: Ints
    end: Ints
    cpu: npt.NDArray[np.bool_]
    target: Ints
    targets: dict[tuple[str, str | None], int]
    projects: frozenset[str]
    agents: frozenset[str] | None  # None: every agent
    ticks: dict[str, Ints]

    @classmethod
    def of(cls, intervals: pl.DataFrame, selection: Selection, grid: _Grid) -> _IntervalArrays:
        import numpy as np

        targets: dict[tuple[str, str | None], int] = {}
        target = [
            targets.setdefault((host, project), len(targets))
            for host, project in zip(intervals["host"], intervals["project"], strict=True)
        ]
        return cls(
            _ints(intervals["start"].dt.epoch("us").to_arrow()),
            _ints(intervals["end"].dt.epoch("us").to_arrow()),
            (intervals["resource"] == "cpu").to_numpy(),
            np.asarray(target, dtype=np.int64),
            targets,
            frozenset(selection.projects),
            frozenset(selection.agents) if selection.agent_filter else None,
            {host.name: host.ticks for host in grid.hosts},
        )

    def hour_ticks(self, host: str, begin: int) -> Ints:
        """The collector ticks of ``host`` in the hour starting at ``begin``."""
        import numpy as np

        ticks = self.ticks.get(host, np.zeros(0, dtype=np.int64))
        return ticks[np.searchsorted(ticks, begin) : np.searchsorted(ticks, begin + HOUR_US)]

    def pairs(self, rows: Ints, segments: Sequence[tuple[str, str, str]]) -> tuple[Ints, Ints]:
        """Every (interval, segment) with the interval among ``rows`` and the segment, a
        (host, project, agent) of the hour, selected and in the interval's scope."""
        import numpy as np

        members: list[list[int]] = [[] for _ in self.targets]
        for number, (host, project, agent) in enumerate(segments):
            if project not in self.projects or (
                self.agents is not None and agent not in self.agents
            ):
                continue
            for key in ((host, project), (host, None)):
                found = self.targets.get(key)
                if found is not None:
                    members[found].append(number)
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        flat = np.array([n for m in members for n in m], dtype=np.int64)
        offsets = np.cumsum(sizes) - sizes
        counts = sizes[self.target[rows]]
        total = int(counts.sum())
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        segment = flat[np.repeat(offsets[self.target[rows]], counts) + within]
        return np.repeat(rows, counts), segment


@dataclass(frozen=True)
class _Part:
    """One hour's share of :class:`_Used`: per (interval, segment) pair with ticks."""

    interval: Ints
    segment: Ints
    used: Floats
    segments: list[tuple[str, str, str]]


def _used_by_range(
    store: Store, selection: Selection, grid: _Grid, intervals: pl.DataFrame
) -> _Used:
    """:class:`_Used` when every per-tick sum lies at a collector tick: an interval's usage in
    an hour is the sum of each agent's per-tick sums between its start and end."""
    import numpy as np

    spans = _IntervalArrays.of(intervals, selection, grid)
    sources = store.sources(selection)
    entries = dict(
        zip(
            sources.partitions,
            zip(sources.cached["agent_series"], sources.cached["agent_hour"], strict=True),
            strict=True,
        )
    )
    # Per hour with intervals: its start, its intervals, its entries, whether the range
    # holds it whole.
    jobs: list[tuple[int, Ints, tuple[Path, Path] | None, bool]] = []
    for partition in sorted(sources.files):
        begin = int(partition.start.timestamp()) * 1_000_000
        rows = np.flatnonzero((spans.start < begin + HOUR_US) & (spans.end >= begin))
        inside = selection.start <= partition.start and partition.end <= selection.end
        if len(rows):
            jobs.append((begin, rows, entries.get(partition), inside))

    tables = _hour_tables(store, [found[1] for _, _, found, _ in jobs if found is not None])

    def cached(job: tuple[int, Ints, tuple[Path, Path] | None, bool]) -> _Part | None:
        begin, rows, found, inside = job
        if found is None:
            return None
        series, hourly = found
        try:
            return _cached_part(series, tables.get(hourly, hourly), begin, rows, spans, inside)
        except (OSError, ValueError):  # an unreadable entry (pyarrow errors are ValueErrors)
            return None

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        parts = list(pool.map(cached, jobs))
    for number, (begin, rows, _, _) in enumerate(jobs):
        if parts[number] is None:  # no entries, or unreadable ones: the hour's raw rows
            parts[number] = _raw_part(store, selection, begin, rows, spans)
    return _combine([part for part in parts if part is not None])


_HOUR_COLUMNS = ("host", "project", "agent", "ticks", "cpu_sum", "rss_sum")


def _hour_tables(store: Store, paths: list[Path]) -> dict[Path, pa.Table]:
    """The ``agent_hour`` entries at ``paths`` (the columns :func:`_cached_part` reads), in one
    query; none when one cannot be read (then each is read on its own)."""
    if not paths:
        return {}
    listing = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    try:
        table = _arrow(
            store,
            f"SELECT filename, {', '.join(_HOUR_COLUMNS)} FROM read_parquet([{listing}], "
            "filename = true, hive_partitioning = false) ORDER BY filename",
        )
    except StoreError:
        return {}
    by_name = {str(path): path for path in paths}
    files = table["filename"].to_pylist()
    found: dict[Path, pa.Table] = {}
    first = 0
    for row in range(1, len(files) + 1):
        if row == len(files) or files[row] != files[first]:
            found[by_name[files[first]]] = table.slice(first, row - first)
            first = row
    return found


def _cached_part(
    series: Path,
    hourly: Path | pa.Table,
    begin: int,
    rows: Ints,
    spans: _IntervalArrays,
    inside: bool,
) -> _Part:
    """The hour's :class:`_Part` from its entries: the intervals that cover the hour take the
    ``agent_hour`` sums (``hourly``: the entry or its rows), the others slices of the
    ``agent_series`` rows. The ``agent_hour`` rows in name order are the runs of
    ``agent_series`` (both hold the hour's ``agent`` rows). ``inside``: the range holds the
    whole hour (so its collector ticks are all the hour's)."""
    import numpy as np
    import pyarrow.parquet as pq

    names = ["host", "project", "agent"]
    if isinstance(hourly, Path):
        table = pq.ParquetFile(hourly).read(columns=list(_HOUR_COLUMNS), use_threads=False)
    else:
        table = hourly
    found = list(zip(*(table[name].to_pylist() for name in names), strict=True))
    if any(None in names for names in found):
        raise ValueError("a null name")
    order = np.asarray(sorted(range(len(found)), key=found.__getitem__), dtype=np.int64)
    segments = [found[number] for number in order.tolist()]
    sizes = _ints(table["ticks"])[order]
    whole = (spans.start[rows] <= begin) & (spans.end[rows] >= begin + HOUR_US - 1)
    interval, segment = spans.pairs(rows[whole], segments)
    cpu = _floats(table["cpu_sum"])[order][segment]
    rss = _floats(table["rss_sum"])[order][segment]
    keep = sizes[segment] > 0
    covered = _Part(
        interval[keep], segment[keep], np.where(spans.cpu[interval], cpu, rss)[keep], segments
    )
    partial = rows[~whole]
    if not len(partial):
        return covered
    # An agent with a sum at every tick of the hour has its rows at the hour's ticks: its
    # slices are found from the ticks, without reading its times.
    hosts = {host for host, _, _ in segments} if inside else set()
    ticks = {host: spans.hour_ticks(host, begin) for host in hosts}
    full = np.array(
        [
            inside and size == len(ticks[host])
            for (host, _, _), size in zip(segments, sizes.tolist(), strict=True)
        ],
        dtype=bool,
    )
    interval, segment = spans.pairs(partial, segments)
    wanted = [] if full[segment].all() else ["ts"]
    wanted += ["cpu"] if spans.cpu[partial].any() else []
    wanted += ["rss"] if not spans.cpu[partial].all() else []
    values = pq.ParquetFile(series).read(columns=wanted, use_threads=False)
    if values.num_rows != int(sizes.sum()):
        raise ValueError("the agent_series entry does not match the agent_hour entry")
    sliced = _slices(
        interval,
        segment,
        segments,
        sizes,
        _epoch_us(values["ts"]) if "ts" in wanted else ticks,
        {name: _floats(values[name]) for name in wanted if name != "ts"},
        begin,
        spans,
    )
    return _Part(
        np.concatenate([covered.interval, sliced.interval]),
        np.concatenate([covered.segment, sliced.segment]),
        np.concatenate([covered.used, sliced.used]),
        segments,
    )


def _raw_part(
    store: Store, selection: Selection, begin: int, rows: Ints, spans: _IntervalArrays
) -> _Part:
    """The hour's :class:`_Part` from its raw samples."""
    import numpy as np
    import pyarrow.compute as pc

    from devloop.analytics._cache import _BUILD_SQL
    from devloop.analytics._series import _conditions, _read
    from devloop.store.layout import Partition

    files = store.sources(selection).files[Partition.of_hour_index(begin // HOUR_US)]
    where, params = _conditions(selection)
    per_tick = _BUILD_SQL["agent"].format(source=f"(SELECT * FROM {_read(files)} WHERE {where})")
    table = _arrow(
        store,
        f"SELECT host, project, agent, epoch_us(ts) AS ts, cpu, rss FROM ({per_tick}) "
        "ORDER BY host, project, agent, ts",
        params,
    )
    if not table.num_rows:
        nothing = np.zeros(0, dtype=np.int64)
        return _Part(nothing, nothing, np.zeros(0), [])
    names = ["host", "project", "agent"]
    table = table.combine_chunks()
    codes = [pc.dictionary_encode(table[name]).chunks[0] for name in names]
    indices = [_ints(code.indices) for code in codes]
    words = [np.asarray(code.dictionary.to_pylist(), dtype=object) for code in codes]
    changed = np.flatnonzero(
        (indices[0][1:] != indices[0][:-1])
        | (indices[1][1:] != indices[1][:-1])
        | (indices[2][1:] != indices[2][:-1])
    )
    firsts = np.r_[0, changed + 1]
    segments = list(
        zip(
            *(word[index[firsts]].tolist() for word, index in zip(words, indices, strict=True)),
            strict=True,
        )
    )
    interval, segment = spans.pairs(rows, segments)
    return _slices(
        interval,
        segment,
        segments,
        np.diff(np.r_[firsts, table.num_rows]),
        _ints(table["ts"]),
        {"cpu": _floats(table["cpu"]), "rss": _floats(table["rss"])},
        begin,
        spans,
    )


def _slices(
    interval: Ints,
    segment: Ints,
    segments: list[tuple[str, str, str]],
    sizes: Ints,
    ts: Ints | dict[str, Ints],
    values: dict[str, Floats],
    begin: int,
    spans: _IntervalArrays,
) -> _Part:
    """The usage of each (interval, segment) pair in the hour starting at ``begin``: each
    agent's rows are a run (``sizes``, in the order of ``segments``) in time order, so an
    interval's usage is one slice of each run. ``ts``: the rows' ticks, or each host's ticks
    in the hour when every paired run has a row at each of them. ``values``: "cpu" and/or
    "rss", as the intervals need."""
    import numpy as np

    if isinstance(ts, dict):
        offsets = np.cumsum(sizes) - sizes
        lo = np.empty(len(interval), dtype=np.int64)
        hi = np.empty(len(interval), dtype=np.int64)
        hosts = np.array([host for host, _, _ in segments], dtype=object)[segment]
        for host in set(hosts.tolist()):
            mine = hosts == host
            ticks = ts[host]
            lo[mine] = np.searchsorted(ticks, spans.start[interval[mine]])
            hi[mine] = np.searchsorted(ticks, spans.end[interval[mine]], side="right")
        lo += offsets[segment]
        hi += offsets[segment]
    else:
        # key = (run, offset in the hour) increases along the rows: one search finds a slice.
        key = (np.repeat(np.arange(len(sizes), dtype=np.int64), sizes) << 32) + (ts - begin)
        if not (bool((key[1:] > key[:-1]).all()) and ts.min(initial=begin) >= begin):
            raise ValueError("rows out of order")
        if ts.max(initial=begin) >= begin + HOUR_US:
            raise ValueError("rows outside the hour")
        base = segment << 32
        first = base + np.clip(spans.start[interval] - begin, 0, HOUR_US - 1)
        last = base + np.clip(spans.end[interval] - begin, -1, HOUR_US - 1)
        order = np.argsort(first, kind="stable")  # sorted needles search faster
        lo = np.empty(len(first), dtype=np.int64)
        hi = np.empty(len(first), dtype=np.int64)
        lo[order] = np.searchsorted(key, first[order])
        hi[order] = np.searchsorted(key, last[order], side="right")
    keep = hi > lo
    interval, segment, lo, hi = interval[keep], segment[keep], lo[keep], hi[keep]
    used = np.empty(len(lo))
    is_cpu = spans.cpu[interval]
    for name, picked in (("cpu", is_cpu), ("rss", ~is_cpu)):
        if picked.any():
            used[picked] = _slice_sums(values[name], lo[picked], hi[picked])
    return _Part(interval, segment, used, segments)


def _slice_sums(values: Floats, lo: Ints, hi: Ints) -> Floats:
    """``values[lo:hi].sum()`` for each pair (``lo < hi``), in one pass."""
    import numpy as np

    order = np.argsort(lo, kind="stable")
    bounds = np.empty(2 * len(lo), dtype=np.int64)
    bounds[0::2] = lo[order]
    bounds[1::2] = hi[order]
    sums = np.add.reduceat(np.append(values, 0.0), bounds)[0::2]
    result = np.empty(len(lo))
    result[order] = sums
    return result


def _floats(column: pa.ChunkedArray | pa.Array, null: float = 0.0) -> Floats:
    """A column of numbers as float64, ``null`` (default 0, a sum of nothing) for nulls."""
    import numpy as np
    import pyarrow as pa

    values: Floats = _numbers(column, pa.float64(), np.float64, null)
    return values


def _epoch_us(column: pa.ChunkedArray | pa.Array) -> Ints:
    """A timestamp column as epoch microseconds."""
    import pyarrow as pa

    return _ints(column.cast(pa.timestamp("us", "UTC")).cast(pa.int64()))


def _combine(parts: list[_Part]) -> _Used:
    """The parts of every hour added up per (interval, agent), in hour order; sorted by
    interval and agent name."""
    import numpy as np

    ids: dict[tuple[str, str], int] = {}
    intervals: list[Ints] = []
    agents: list[Ints] = []
    used: list[Floats] = []
    for part in parts:
        local = np.array(
            [ids.setdefault((project, agent), len(ids)) for _, project, agent in part.segments],
            dtype=np.int64,
        )
        intervals.append(part.interval)
        agents.append(local[part.segment] if len(local) else part.segment)
        used.append(part.used)
    if not intervals:
        nothing = np.zeros(0, dtype=np.int64)
        return _Used(nothing, nothing, np.zeros(0), [])
    names = sorted(ids)
    by_name = np.empty(len(ids), dtype=np.int64)
    by_name[[ids[name] for name in names]] = np.arange(len(names))
    width = max(len(ids), 1)
    code = np.concatenate(intervals) * width + by_name[np.concatenate(agents)]
    unique, inverse = np.unique(code, return_inverse=True)
    weights = np.concatenate(used)
    sums = np.bincount(inverse, weights=weights, minlength=len(unique)).astype(np.float64)
    return _Used(unique // width, unique % width, sums, names)


def _used_by_tick(
    store: Store, selection: Selection, grid: _Grid, intervals: pl.DataFrame
) -> _Used:
    """:class:`_Used` matching each interval's ticks with the per-tick sums by equality (any
    store: also when some sums lie between collector ticks)."""
    import numpy as np
    import polars as pl

    hosts = {host.name: host for host in grid.hosts}
    parts: list[pl.DataFrame] = []
    for (name,), part in intervals.with_row_index("row").group_by("host"):
        first, last = part["first"].to_numpy(), part["last"].to_numpy()
        counts = last - first + 1
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        ticks = hosts[str(name)].ticks[np.repeat(first, counts) + within]
        parts.append(
            pl.DataFrame(
                {
                    "row": np.repeat(part["row"].to_numpy().astype(np.int64), counts),
                    "host": str(name),
                    "project": pl.Series(
                        np.repeat(part["project"].to_numpy(), counts).tolist(), dtype=pl.String
                    ),
                    "cpu": np.repeat((part["resource"] == "cpu").to_numpy(), counts),
                    "ts": pl.Series(ticks).cast(pl.Datetime("us", "UTC")),
                }
            )
        )
    ticks = pl.concat(parts)
    # A workspace tick stands for every selected project: one row per project.
    names = pl.DataFrame({"name": list(selection.projects)}, schema={"name": pl.String})
    ticks = pl.concat(
        [
            ticks.filter(pl.col("project").is_not_null()),
            ticks.filter(pl.col("project").is_null())
            .drop("project")
            .join(names, how="cross")
            .rename({"name": "project"})
            .select(ticks.columns),
        ]
    )
    sums, params = tick_sums_sql(store, selection, by_agent=True)
    store.connection.register("devloop_ticks", ticks.to_arrow())
    try:
        used = store.frame(
            f"""
            SELECT f.row, s.project, s.agent,
                   sum(CASE WHEN f.cpu THEN s.cpu ELSE s.rss END) AS used
            FROM (SELECT host, ts, project, agent, cpu, rss FROM {sums}
                  WHERE ts >= ? AND ts <= ?) s
            JOIN devloop_ticks f ON s.host = f.host AND s.ts = f.ts AND s.project = f.project
            GROUP BY f.row, s.project, s.agent
            """,
            [*params, ticks["ts"].min(), ticks["ts"].max()],
        )
    finally:
        store.connection.unregister("devloop_ticks")
    pairs = list(zip(used["project"].to_list(), used["agent"].to_list(), strict=True))
    ids: dict[tuple[str, str], int] = {}
    agent = np.array([ids.setdefault(pair, len(ids)) for pair in pairs], dtype=np.int64)
    return _Used(
        used["row"].to_numpy().astype(np.int64),
        agent,
        _floats(used["used"].to_arrow()),
        sorted(ids, key=ids.__getitem__),
    )
