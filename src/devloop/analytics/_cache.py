"""Per-hour rollups of ``samples``: an exact, disposable cache the reports read instead of raw rows.

For every closed UTC hour of ``samples`` (before the current hour), three Parquet files hold the
hour's rows summed per tick, built once from the hour's live files:

* ``project``: host, ts, project, cpu (sum of cpu_cores), rss (sum of rss_bytes), fds, threads,
  processes (rows summed), one row per tick and project with a process;
* ``agent``: the same per tick, project and agent;
* ``lives``: host, project, agent, pid, start_time, first, last (ts), rows: one row per process
  life seen in the hour;
* ``agent_hour``: the ``agent`` rows of the hour aggregated per host, project and agent (first,
  last, ticks;
  per value cpu, rss, fds, threads: sum, count, min, max, and ``top``, the largest
  ``{v: value, n: -epoch_us(ts)}``, whose ``n`` is the first tick at the maximum), built from the
  hour's ``agent`` entry. Reports combine these for the hours wholly inside their range;
* ``edges``: host, project, agent, pid, start_time, ts, rss_bytes, fds: the samples at each
  process life's first and last tick in the hour (``health`` reads a life's ends from them);
* ``thinned``: host, project, agent, pid, start_time, ts, rss_bytes, fds: the samples at the
  ticks whose epoch second is a multiple of :data:`THINNED_EVERY` (one tick in 36 at 1 s), the
  points ``health`` fits its trends on (it reads them when its thinning grid is a multiple of
  this one, as with its defaults at ticks of 1 s or less);
* ``project_hour``: ``agent_hour`` per host and project, built from the ``project`` entry;
* ``workspace``: host, ts, cpu, rss, fds, threads, projects: the ``project`` entry summed per
  tick over all projects (the workspace series when every project is selected);
* ``agent_cpu``: host, project, agent, cpu, n: how many ticks of the hour each agent's CPU sum
  had each value (exact percentiles without reading every tick: the collector's CPU readings
  repeat, so this is ~100 times smaller than the ``agent`` entry);
* ``agent_series``: host, project, agent, ts, cpu, rss: the ``agent`` entry's rows in the order
  (host, project, agent, ts), so each agent's ticks in a span of time are one run of rows
  (``bottlenecks`` sums an interval's part of the hour as one slice per agent);
* ``agent_rss``: host, project, agent, rss, n: as ``agent_cpu``, for memory (3 times smaller
  than the ``agent`` entry per hour, 25 times per day: a day's file sums the counts of its
  hours, see :func:`consolidated`).

::

    <root>/_cache/<kind>/date=YYYY-MM-DD/hour=H/<key>.parquet

``key`` is a hash of the cache format and the names and sizes of the hour's live ``samples``
files, so a late file, a compaction or a deletion changes it: the entry no longer matches, and
the hour is read raw until the next :func:`warm_cache` rebuilds it and removes the stale file.
The footer names the source files (``devloop.cache.sources``). Files are written to a temp
name, fsynced and renamed, so a reader sees a whole file or none. The current hour (still being
written) is never cached: reports read its raw rows, and those of any hour whose entry is
missing or unreadable.

Only the writers of whole hours build entries (:func:`warm_cache`: ``devloop workspace
compact`` and ``simulate``); reports only read them, and read raw rows for an hour without
them, so looking at the store never writes into it. The cache is derived data: deleting
``_cache`` changes no result, only the time of the reports until the next compaction.

An hour that still has rows in the spool (a running collector's newest ticks, a segment that
spans the turn of the hour, a segment left by a killed collector) is never cached either: its
rows are its files' plus the spool's (:class:`SpoolHour`), read raw, so the newest tick counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import duckdb

    from devloop.store.files import FileFacts
    from devloop.store.layout import Partition

CACHE_DIR: Final = "_cache"
#: Built in this order (``agent_hour`` is read from the ``agent`` entry).
KINDS: Final = (
    "project",
    "agent",
    "lives",
    "agent_hour",
    "edges",
    "thinned",
    "project_hour",
    "workspace",
    "agent_cpu",
    "agent_series",
    "agent_rss",
)

#: ``thinned`` holds the samples at ts with ``(epoch_us(ts) // THINNED_TICK_US) %
#: THINNED_EVERY = 0``.
THINNED_TICK_US: Final = 1_000_000
THINNED_EVERY: Final = 36

#: Bumped whenever what a cache file holds changes, so old files stop matching.
FORMAT: Final = "1"
SOURCES_KEY: Final = b"devloop.cache.sources"
KIND_KEY: Final = b"devloop.cache.kind"

#: ``progress(done, total)`` while entries are being built.
Progress = Callable[[int, int], None]

_VALUES = (
    "sum(cpu_cores) AS cpu, sum(CAST(rss_bytes AS DOUBLE)) AS rss, "
    "CAST(sum(fds) AS BIGINT) AS fds, CAST(sum(threads) AS BIGINT) AS threads, "
    "count(*) AS processes"
)


def _hourly(keys: str) -> str:
    """The ``agent_hour`` / ``project_hour`` aggregation of per-tick sums per ``keys``."""
    return (
        f"SELECT {keys}, min(ts) AS first, max(ts) AS last, count(*) AS ticks, "
        + ", ".join(
            f"sum({v}) AS {v}_sum, count({v}) AS {v}_n, min({v}) AS {v}_min, "
            f"max({v}) AS {v}_max, max({{{{'v': {v}, 'n': -epoch_us(ts)}}}}) AS {v}_top"
            for v in ("cpu", "rss", "fds", "threads")
        )
        + f" FROM {{source}} GROUP BY {keys}"
    )


_BUILD_SQL = {
    "project": f"SELECT host, ts, project, {_VALUES} FROM {{source}} GROUP BY host, ts, project",
    "agent": (
        f"SELECT host, ts, project, agent, {_VALUES} FROM {{source}} "
        "GROUP BY host, ts, project, agent"
    ),
    "lives": (
        "SELECT host, project, agent, pid, start_time, min(ts) AS first, max(ts) AS last, "
        "count(*) AS rows FROM {source} GROUP BY host, project, agent, pid, start_time"
    ),
    "agent_hour": _hourly("host, project, agent"),
    "project_hour": _hourly("host, project"),
    "workspace": (
        "SELECT host, ts, sum(cpu) AS cpu, sum(rss) AS rss, CAST(sum(fds) AS BIGINT) AS fds, "
        "CAST(sum(threads) AS BIGINT) AS threads, count(*) AS projects "
        "FROM {source} GROUP BY host, ts"
    ),
    "agent_cpu": (
        "SELECT host, project, agent, cpu, count(*) AS n FROM {source} WHERE cpu IS NOT NULL "
        "GROUP BY host, project, agent, cpu"
    ),
    "agent_rss": (
        "SELECT host, project, agent, rss, count(*) AS n FROM {source} WHERE rss IS NOT NULL "
        "GROUP BY host, project, agent, rss"
    ),
    "edges": (
        "SELECT s.host, s.project, s.agent, s.pid, s.start_time, s.ts, s.rss_bytes, s.fds "
        "FROM {source} s JOIN (SELECT host, pid, start_time, min(ts) AS first, max(ts) AS last "
        "FROM {source} GROUP BY host, pid, start_time) l ON s.host = l.host AND s.pid = l.pid "
        "AND s.start_time = l.start_time AND (s.ts = l.first OR s.ts = l.last)"
    ),
    "agent_series": (
        "SELECT host, project, agent, ts, cpu, rss FROM {source} ORDER BY host, project, agent, ts"
    ),
    "thinned": (
        "SELECT host, project, agent, pid, start_time, ts, rss_bytes, fds FROM {source} "
        f"WHERE (epoch_us(ts) // {THINNED_TICK_US}) % {THINNED_EVERY} = 0"
    ),
}

#: Kinds built from another kind's entry of the same hour instead of the raw files.
_BUILT_FROM: Final = {
    "agent_hour": "agent",
    "project_hour": "project",
    "workspace": "project",
    "agent_cpu": "agent",
    "agent_series": "agent",
    "agent_rss": "agent",
}

#: Kinds of value counts: their whole-day files (see :func:`consolidated`) sum ``n`` per
#: these columns instead of repeating each hour's rows (the same multiset of values).
_COUNTED: Final = {
    "agent_cpu": ("host", "project", "agent", "cpu"),
    "agent_rss": ("host", "project", "agent", "rss"),
}


@dataclass(frozen=True)
class SpoolHour:
    """The ``samples`` rows of one hour still in the spool, not yet in a Parquet file: the
    views' spool tail (``_spool_samples``, see :mod:`devloop.store.query`) of that hour."""

    partition: Partition


#: Where an hour's raw rows are: its live Parquet files and its rows still in the spool.
Raw = Path | SpoolHour


@dataclass(frozen=True)
class Hour:
    """One hour of ``samples``: its live files (and spool rows) and, when closed, where its
    entries live."""

    partition: Partition
    files: tuple[Raw, ...]
    key: str
    closed: bool

    def entry(self, root: Path, kind: str) -> Path:
        """The cache file of ``kind`` for this hour's current sources."""
        # One string, one Path: a week's resolve makes thousands of these.
        rel = self.partition.relative_dir
        return Path(f"{root}/{CACHE_DIR}/{kind}/{rel}/{self.key}.parquet")


@dataclass(frozen=True)
class Sources:
    """Where the rows of a range come from: per kind, cache files; and raw files of the hours
    without an entry (the current hour, an hour with rows in the spool, or an entry that
    could not be built), with the spool's rows of those hours."""

    cached: dict[str, tuple[Path, ...]]
    partitions: tuple[Partition, ...]  # the hour of each cached file, in the same order
    raw: tuple[Raw, ...]
    files: dict[Partition, tuple[Raw, ...]]  # every hour's live samples files and spool rows


def hour_dir(root: Path, kind: str, partition: Partition) -> Path:
    """``<root>/_cache/<kind>/date=YYYY-MM-DD/hour=H``."""
    return root / CACHE_DIR / kind / partition.relative_dir


def source_key(facts: Sequence[FileFacts]) -> str:
    """The key of an hour whose live files are ``facts``."""
    text = "\n".join([FORMAT, *sorted(f"{f.path.name}:{f.bytes}" for f in facts)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def hours(
    root: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    spooled: Collection[Partition] = (),
    listed: Sequence[FileFacts] | None = None,
) -> list[Hour]:
    """The hours of ``samples`` overlapping ``[start, end)`` that hold live files or rows in
    the spool (``spooled``: the hours of the spool's rows), oldest first. An hour is closed
    when it is before the hour of ``now`` and has no row in the spool.

    ``listed``: the live ``samples`` files the views were made over (which, with the spool's
    rows read at the same moment, hold every row once), instead of a new scan of the folders:
    a segment converted since is then counted once, from the spool."""
    from devloop.store.files import scan_partition
    from devloop.store.layout import Partition, iter_partitions

    current = Partition.of_datetime(now or datetime.now(UTC))
    spool = set(spooled)

    def wanted(partition: Partition) -> bool:
        return (start is None or partition.end > start) and (end is None or partition.start < end)

    if listed is None:
        by_hour = [
            (partition, scan_partition(directory, "samples").live)
            for partition, directory in iter_partitions(root, "samples")
            if wanted(partition)
        ]
    else:
        grouped: dict[Partition, list[FileFacts]] = {}
        for fact in listed:
            # <root>/samples/date=YYYY-MM-DD/hour=H/<file>
            date, hour = fact.path.parent.parent.name, fact.path.parent.name
            partition = Partition(date.removeprefix("date="), int(hour.removeprefix("hour=")))
            if wanted(partition):
                grouped.setdefault(partition, []).append(fact)
        by_hour = [(partition, tuple(facts)) for partition, facts in grouped.items()]
    found: list[Hour] = []
    for partition, live in by_hour:
        tail: tuple[Raw, ...] = (SpoolHour(partition),) if partition in spool else ()
        spool.discard(partition)
        if live or tail:
            found.append(
                Hour(
                    partition,
                    (*(f.path for f in live), *tail),
                    source_key(live),
                    partition < current and not tail,
                )
            )
    found += [
        Hour(partition, (SpoolHour(partition),), "", False)
        for partition in spool
        if wanted(partition)
    ]
    return sorted(found, key=lambda hour: hour.partition)


def whole_parquet(path: Path) -> bool:
    """Cheap check that ``path`` is a whole Parquet file (it starts and ends with PAR1)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:  # raw reads: no buffered file object (a week's resolve checks thousands)
        size = os.fstat(fd).st_size
        return size >= 12 and os.pread(fd, 4, 0) == b"PAR1" == os.pread(fd, 4, size - 4)
    except OSError:
        return False
    finally:
        os.close(fd)


def resolve(
    connection: duckdb.DuckDBPyConnection,
    root: Path,
    chosen: Sequence[Hour],
    progress: Progress | None = None,
    *,
    build_missing: bool = False,
) -> Sources:
    """The cache files and raw files covering ``chosen``: an hour without whole entries is
    read raw, or, with ``build_missing`` (the writers of whole hours only), built first."""
    entries = {
        hour.partition: {kind: hour.entry(root, kind) for kind in KINDS}
        for hour in chosen
        if hour.closed
    }
    missing = [
        hour
        for hour in chosen
        if hour.closed and not all(whole_parquet(path) for path in entries[hour.partition].values())
    ]
    built: set[Partition] = set()
    for done, hour in enumerate(missing if build_missing else [], start=1):
        if build(connection, root, hour):
            built.add(hour.partition)
        if progress is not None:
            progress(done, len(missing))
    failed = {hour.partition for hour in missing} - built
    cached: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    partitions: list[Partition] = []
    raw: list[tuple[Partition, tuple[Raw, ...]]] = []
    for hour in chosen:
        if hour.closed and hour.partition not in failed:
            partitions.append(hour.partition)
            for kind in KINDS:
                cached[kind].append(entries[hour.partition][kind])
        else:
            raw.append((hour.partition, hour.files))
    return Sources(
        {kind: tuple(paths) for kind, paths in cached.items()},
        tuple(partitions),
        tuple(path for _, files in raw for path in files),
        {hour.partition: hour.files for hour in chosen},
    )


def build(connection: duckdb.DuckDBPyConnection, root: Path, hour: Hour) -> bool:
    """Write every entry of ``hour`` and remove its stale ones; False when it cannot be
    written (a read-only store, a full disk): the reports then read the hour raw."""
    import duckdb
    import pyarrow as pa

    files = [path for path in hour.files if isinstance(path, Path)]  # closed: no spool rows
    listing = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
    source = f"read_parquet([{listing}], union_by_name = true)"
    sources = json.dumps(sorted(path.name for path in files)).encode()
    try:
        for kind in KINDS:
            final = hour.entry(root, kind)
            if whole_parquet(final):
                continue
            origin = _BUILT_FROM.get(kind)
            if origin is not None:
                entry = "'" + str(hour.entry(root, origin)).replace("'", "''") + "'"
                sql = _BUILD_SQL[kind].format(source=f"read_parquet([{entry}])")
            else:
                sql = _BUILD_SQL[kind].format(source=source)
            table = connection.sql(sql).to_arrow_table()
            metadata = {SOURCES_KEY: sources, KIND_KEY: kind.encode()}
            write_entry(table.replace_schema_metadata(metadata), final)
    except (OSError, duckdb.Error, pa.ArrowException):
        return False
    return True


def write_entry(table: Any, final: Path) -> None:
    """Write the Arrow ``table`` to the cache entry ``final`` atomically (temp, fsync, rename)
    and remove the other, stale entries of its folder (the tune cache's entries too)."""
    import pyarrow.parquet as pq

    from devloop.store.layout import fsync_dir

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as sink:
            pq.write_table(table, sink, compression="zstd", compression_level=3)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in final.parent.iterdir():
        if stale != final and stale.name.endswith(".parquet") and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    fsync_dir(final.parent)


#: A day's entries of one kind, concatenated (see :func:`consolidated`).
DAY_PREFIX: Final = "day-"


def _day_key(entries: Sequence[Path]) -> str:
    text = "\n".join(sorted(f"{path.parent.name}/{path.name}" for path in entries))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def consolidated(
    paths: Sequence[Path], today: str | None = None, *, write: bool = False
) -> list[Path]:
    """``paths`` (entries of one kind) with each whole past day's entries replaced by one file.

    Opening a Parquet file costs DuckDB ~0.5 ms, so a week of hourly entries costs ~0.1 s per
    query and kind. When ``paths`` hold every entry of a past UTC day (every ``hour=H`` folder
    of its ``date=D`` folder), they are read from ``<kind>/date=D/day-<key>.parquet`` instead:
    the same rows (the entries concatenated; for value counts the same values with their
    counts summed over the day), ``key`` a hash of the entries' names, so a rebuilt hour makes
    a new one. Reports only use a day file that exists; ``write`` (:func:`warm_cache`) writes
    the missing ones. Anything else is read as it is.
    """
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        groups.setdefault(path.parent.parent, []).append(path)
    out: list[Path] = []
    for date_dir, group in groups.items():
        day = date_dir / f"{DAY_PREFIX}{_day_key(group)}.parquet"
        if len(group) > 1 and date_dir.name.removeprefix("date=") < today:
            if whole_parquet(day) or (
                write and _whole_day(date_dir, group) and _concatenate(group, day)
            ):
                out.append(day)
                continue
        out.extend(group)
    return out


def _whole_day(date_dir: Path, group: Sequence[Path]) -> bool:
    try:
        hour_dirs = {entry.name for entry in os.scandir(date_dir) if entry.is_dir()}
    except OSError:
        return False
    return hour_dirs == {path.parent.name for path in group}


def _concatenate(group: Sequence[Path], day: Path) -> bool:
    """Write ``day`` as the rows of ``group``, one row group per entry; False when it cannot
    (an entry unreadable or of another schema, a read-only store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from devloop.store.layout import fsync_dir

    tmp = day.with_name(f".{day.name}.{os.getpid()}.tmp")
    counted = _COUNTED.get(day.parent.parent.name)
    if counted is not None:
        try:
            table = pa.concat_tables([pq.read_table(path) for path in group])
            summed = table.group_by(list(counted)).aggregate([("n", "sum")])
            summed = summed.rename_columns([*counted, "n"]).select(table.column_names)
            write_entry(summed, day)
        except (OSError, pa.ArrowException):
            return False
        return True
    try:
        first = pq.read_table(group[0]).replace_schema_metadata(None)
        with pq.ParquetWriter(tmp, first.schema, compression="zstd", compression_level=3) as writer:
            writer.write_table(first)
            for path in group[1:]:  # one entry in memory at a time
                table = pq.read_table(path).replace_schema_metadata(None)
                if not table.schema.equals(first.schema):
                    raise pa.ArrowInvalid(f"{path}: another schema")
                writer.write_table(table)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, day)
    except (OSError, pa.ArrowException):
        tmp.unlink(missing_ok=True)
        return False
    for stale in day.parent.glob(f"{DAY_PREFIX}*.parquet"):
        if stale != day:
            stale.unlink(missing_ok=True)
    fsync_dir(day.parent)
    return True


def prune(root: Path) -> int:
    """Delete cache entries whose hour no longer has the sources they were built from (data
    compacted, dropped by retention); return how many were removed."""
    from devloop.store.layout import Partition

    current = {hour.partition: hour.key for hour in hours(root)}
    removed = 0
    base = root / CACHE_DIR
    for kind_dir in base.iterdir() if base.is_dir() else []:
        for path in kind_dir.glob("date=*/hour=*/*"):
            date = path.parent.parent.name.removeprefix("date=")
            hour_text = path.parent.name.removeprefix("hour=")
            try:
                partition = Partition(date, int(hour_text))
            except ValueError:
                continue
            if current.get(partition) != path.stem or kind_dir.name not in KINDS:
                path.unlink(missing_ok=True)
                removed += 1
        for path in kind_dir.glob(f"date=*/{DAY_PREFIX}*.parquet"):
            date = path.parent.name.removeprefix("date=")
            day = [
                path.parent / f"hour={p.hour}" / f"{key}.parquet"
                for p, key in current.items()
                if p.date == date
            ]
            if not day or path.name != f"{DAY_PREFIX}{_day_key(day)}.parquet":
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def warm_cache(
    root: Path | str, progress: Progress | None = None, now: datetime | None = None
) -> int:
    """Build every missing entry of the closed hours of the store at ``root`` (``metrics``),
    the whole-day files of past days (see :func:`consolidated`) and the small tables' digests
    (:mod:`._digest`), and remove stale ones; return how many hours were built. Run by the
    writers of whole hours (compaction, ``simulate``), never by a report; results of the
    reports never depend on it."""
    from devloop.analytics._digest import digests
    from devloop.store.layout import Partition
    from devloop.store.query import connect_listed

    root = Path(root)
    connection, listing = connect_listed(root)
    try:
        # An hour with rows still in the spool is not whole in its files: never rolled up.
        spooled = (
            {
                Partition.of_hour_index(int(hour))
                for (hour,) in connection.sql(
                    "SELECT DISTINCT epoch_us(ts) // 3600000000 FROM _spool_samples"
                ).fetchall()
            }
            if "samples" in listing.spooled
            else set()
        )
        chosen = hours(root, now=now, spooled=spooled)
        missing = [
            hour
            for hour in chosen
            if hour.closed and not all(whole_parquet(hour.entry(root, kind)) for kind in KINDS)
        ]
        sources = resolve(connection, root, chosen, progress, build_missing=True)
        digests(connection, root, listing, save=True)
    finally:
        connection.close()
    today = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")
    for kind in KINDS:
        consolidated(sources.cached[kind], today=today, write=True)
    prune(root)
    return len(missing)
