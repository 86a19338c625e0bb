"""Each agent's usage over each interval: its per-tick sums added up over the interval's ticks
(for the workspace, the agents of every selected project). Three ways, each kept for a measured
reason (``bench/bottlenecks_paths.py``: the drivers step, best of 3, on simulated stores of 1.4M
and 9.7M samples rows):

* :func:`used_by_range`, hour by hour, when every per-tick sum lies at a collector tick (then an
  interval's ticks are all the sums between its start and end):

  - slices of the rollups (``agent_series``, and ``agent_hour`` for the hours an interval covers
    whole): the fast way, 0.05-0.07 s on a day and 0.15-0.35 s on a week, where tick by tick
    takes 0.10-0.48 s and 0.69-2.07 s;
  - the raw rows of an hour without rollups (the live hour): its cost follows the hour's rows
    (5.4-9.3 s for a week without rollups) where tick by tick follows the intervals' ticks
    (4.0-10.0 s, the longer the intervals the more), and the other hours keep their slices.

* :func:`used_by_tick`, the intervals' ticks matched with the per-tick sums in DuckDB: the only
  way that holds when some sums lie between collector ticks.

Every way gives the same numbers (``tests/test_bottlenecks_paths.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.analytics.bottlenecks.arrays import arrow, epoch_us, floats, ints
from devloop.analytics.query import HOUR_US, THREADS, tick_sums_sql
from devloop.errors import StoreError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl
    import pyarrow as pa

    from devloop.analytics.bottlenecks.arrays import Floats, Ints
    from devloop.analytics.bottlenecks.grid import Grid
    from devloop.analytics.query import Selection, Store


@dataclass(frozen=True)
class Used:
    """Usage summed per interval (its row in the intervals) and agent (``names[agent]``, a
    (project, agent) pair), one row per pair with at least one per-tick sum."""

    interval: Ints
    agent: Ints
    used: Floats
    names: list[tuple[str, str]]


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
    def of(cls, intervals: pl.DataFrame, selection: Selection, grid: Grid) -> _IntervalArrays:
        import numpy as np

        targets: dict[tuple[str, str | None], int] = {}
        target = [
            targets.setdefault((host, project), len(targets))
            for host, project in zip(intervals["host"], intervals["project"], strict=True)
        ]
        return cls(
            ints(intervals["start"].dt.epoch("us").to_arrow()),
            ints(intervals["end"].dt.epoch("us").to_arrow()),
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
    """One hour's share of :class:`Used`: per (interval, segment) pair with ticks."""

    interval: Ints
    segment: Ints
    used: Floats
    segments: list[tuple[str, str, str]]


def used_by_range(store: Store, selection: Selection, grid: Grid, intervals: pl.DataFrame) -> Used:
    """:class:`Used` when every per-tick sum lies at a collector tick: an interval's usage in
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
        inside = store.holds_whole(selection, partition)
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
        table = arrow(
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
    sizes = ints(table["ticks"])[order]
    whole = (spans.start[rows] <= begin) & (spans.end[rows] >= begin + HOUR_US - 1)
    interval, segment = spans.pairs(rows[whole], segments)
    cpu = floats(table["cpu_sum"])[order][segment]
    rss = floats(table["rss_sum"])[order][segment]
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
        epoch_us(values["ts"]) if "ts" in wanted else ticks,
        {name: floats(values[name]) for name in wanted if name != "ts"},
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

    from devloop.analytics.query import range_conditions, relation
    from devloop.store.layout import Partition
    from devloop.store.rollups import BUILD_SQL

    files = store.sources(selection).files[Partition.of_hour_index(begin // HOUR_US)]
    where, params = range_conditions(selection)
    per_tick = BUILD_SQL["agent"].format(source=f"(SELECT * FROM {relation(files)} WHERE {where})")
    table = arrow(
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
    indices = [ints(code.indices) for code in codes]
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
        ints(table["ts"]),
        {"cpu": floats(table["cpu"]), "rss": floats(table["rss"])},
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


def _combine(parts: list[_Part]) -> Used:
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
        return Used(nothing, nothing, np.zeros(0), [])
    names = sorted(ids)
    by_name = np.empty(len(ids), dtype=np.int64)
    by_name[[ids[name] for name in names]] = np.arange(len(names))
    width = max(len(ids), 1)
    code = np.concatenate(intervals) * width + by_name[np.concatenate(agents)]
    unique, inverse = np.unique(code, return_inverse=True)
    weights = np.concatenate(used)
    sums = np.bincount(inverse, weights=weights, minlength=len(unique)).astype(np.float64)
    return Used(unique // width, unique % width, sums, names)


def used_by_tick(store: Store, selection: Selection, grid: Grid, intervals: pl.DataFrame) -> Used:
    """:class:`Used` matching each interval's ticks with the per-tick sums by equality (any
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
    with store.db.registered({"devloop_ticks": ticks.to_arrow()}):
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
    pairs = list(zip(used["project"].to_list(), used["agent"].to_list(), strict=True))
    ids: dict[tuple[str, str], int] = {}
    agent = np.array([ids.setdefault(pair, len(ids)) for pair in pairs], dtype=np.int64)
    return Used(
        used["row"].to_numpy().astype(np.int64),
        agent,
        floats(used["used"].to_arrow()),
        sorted(ids, key=ids.__getitem__),
    )
