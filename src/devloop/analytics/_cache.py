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
  process life's first and last tick in the hour (``health`` reads a life's ends from them).

::

    <root>/_cache/<kind>/date=YYYY-MM-DD/hour=H/<key>.parquet

``key`` is a hash of the cache format and the names and sizes of the hour's live ``samples``
files, so a late file, a compaction or a deletion changes it: the entry no longer matches, is
rebuilt on next use and the stale file is removed. The footer names the source files
(``devloop.cache.sources``). Files are written to a temp name, fsynced and renamed, so a reader
sees a whole file or none. The current hour (still being written) is never cached: reports read
its raw rows, and those of any hour whose entry is missing or unreadable.

The cache is derived data: deleting ``_cache`` changes no result, only the time of the next
report. A store the reports cannot write to is read raw, without a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
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
KINDS: Final = ("project", "agent", "lives", "agent_hour", "edges")

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
    "agent_hour": (
        "SELECT host, project, agent, min(ts) AS first, max(ts) AS last, count(*) AS ticks, "
        + ", ".join(
            f"sum({v}) AS {v}_sum, count({v}) AS {v}_n, min({v}) AS {v}_min, "
            f"max({v}) AS {v}_max, max({{{{'v': {v}, 'n': -epoch_us(ts)}}}}) AS {v}_top"
            for v in ("cpu", "rss", "fds", "threads")
        )
        + " FROM {source} GROUP BY host, project, agent"
    ),
    "edges": (
        "SELECT s.host, s.project, s.agent, s.pid, s.start_time, s.ts, s.rss_bytes, s.fds "
        "FROM {source} s JOIN (SELECT host, pid, start_time, min(ts) AS first, max(ts) AS last "
        "FROM {source} GROUP BY host, pid, start_time) l ON s.host = l.host AND s.pid = l.pid "
        "AND s.start_time = l.start_time AND (s.ts = l.first OR s.ts = l.last)"
    ),
}

#: Kinds built from another kind's entry of the same hour instead of the raw files.
_BUILT_FROM: Final = {"agent_hour": "agent"}


@dataclass(frozen=True)
class Hour:
    """One hour of ``samples``: its live files and, when closed, where its entries live."""

    partition: Partition
    files: tuple[Path, ...]
    key: str
    closed: bool

    def entry(self, root: Path, kind: str) -> Path:
        """The cache file of ``kind`` for this hour's current sources."""
        return hour_dir(root, kind, self.partition) / f"{self.key}.parquet"


@dataclass(frozen=True)
class Sources:
    """Where the rows of a range come from: per kind, cache files; and raw files of the hours
    without an entry (the current hour, or an entry that could not be built)."""

    cached: dict[str, tuple[Path, ...]]
    partitions: tuple[Partition, ...]  # the hour of each cached file, in the same order
    raw: tuple[Path, ...]
    files: dict[Partition, tuple[Path, ...]]  # every hour's live samples files


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
) -> list[Hour]:
    """The hours of ``samples`` overlapping ``[start, end)`` that hold live files."""
    from devloop.store.files import scan_partition
    from devloop.store.layout import Partition, iter_partitions

    current = Partition.of_datetime(now or datetime.now(UTC))
    found: list[Hour] = []
    for partition, directory in iter_partitions(root, "samples"):
        if start is not None and partition.end <= start:
            continue
        if end is not None and partition.start >= end:
            continue
        live = scan_partition(directory, "samples").live
        if live:
            found.append(
                Hour(
                    partition,
                    tuple(f.path for f in live),
                    source_key(live),
                    partition < current,
                )
            )
    return found


def whole_parquet(path: Path) -> bool:
    """Cheap check that ``path`` is a whole Parquet file (it starts and ends with PAR1)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(-4, os.SEEK_END)
            return head == b"PAR1" and handle.read(4) == b"PAR1"
    except OSError:
        return False


def resolve(
    connection: duckdb.DuckDBPyConnection,
    root: Path,
    chosen: Sequence[Hour],
    progress: Progress | None = None,
) -> Sources:
    """The cache files and raw files covering ``chosen``, building missing entries first."""
    missing = [
        hour
        for hour in chosen
        if hour.closed and not all(whole_parquet(hour.entry(root, kind)) for kind in KINDS)
    ]
    built: set[Partition] = set()
    for done, hour in enumerate(missing, start=1):
        if build(connection, root, hour):
            built.add(hour.partition)
        if progress is not None:
            progress(done, len(missing))
    failed = {hour.partition for hour in missing} - built
    cached: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    partitions: list[Partition] = []
    raw: list[tuple[Partition, tuple[Path, ...]]] = []
    for hour in chosen:
        if hour.closed and hour.partition not in failed:
            partitions.append(hour.partition)
            for kind in KINDS:
                cached[kind].append(hour.entry(root, kind))
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

    listing = ", ".join("'" + str(path).replace("'", "''") + "'" for path in hour.files)
    source = f"read_parquet([{listing}], union_by_name = true)"
    sources = json.dumps(sorted(path.name for path in hour.files)).encode()
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
    return removed


def warm_cache(
    root: Path | str, progress: Progress | None = None, now: datetime | None = None
) -> int:
    """Build every missing entry of the closed hours of the store at ``root`` (``metrics``)
    and remove stale ones; return how many hours were built. Safe to run any time; results
    of the reports never depend on it."""
    import duckdb

    root = Path(root)
    chosen = hours(root, now=now)
    missing = [
        hour
        for hour in chosen
        if hour.closed and not all(whole_parquet(hour.entry(root, kind)) for kind in KINDS)
    ]
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        resolve(connection, root, chosen, progress)
    finally:
        connection.close()
    prune(root)
    return len(missing)
