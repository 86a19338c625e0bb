"""Per-hour rollups of ``samples``: what the reports read instead of a closed hour's rows.

The rollups are part of the store. When compaction writes a closed hour's sorted ``samples``
file it writes that hour's rollups in the same pass (:class:`HourWriter`), and retention drops
them with their hour (:func:`drop_hour`). Each kind is a Parquet file per hour whose schema and
version are declared in :mod:`devloop.store.columns` (``ROLLUP_COLUMNS``, ``ROLLUP_VERSIONS``),
built by the query :data:`BUILD_SQL` gives for it and checked against that schema when written:

* ``project``: host, ts, project, cpu (sum of cpu_cores), rss (sum of rss_bytes), fds, threads,
  processes (rows summed), one row per tick and project with a process;
* ``agent``: the same per tick, project and agent;
* ``lives``: host, project, agent, pid, start_time, first, last (ts), rows: one row per process
  life seen in the hour;
* ``agent_hour``: the ``agent`` rows of the hour aggregated per host, project and agent (first,
  last, ticks; per value cpu, rss, fds, threads: sum, count, min, max, and ``top``, the largest
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
  hours, see :func:`~devloop.store.db.consolidated`).

::

    <root>/_rollups/<kind>/date=YYYY-MM-DD/hour=H/<key>.parquet    one closed hour
    <root>/_rollups/<kind>/date=YYYY-MM-DD/day-<key>.parquet       a past day, in one file

``key`` is a hash of every kind's version and the names and sizes of the hour's live
``samples`` files, so a late file, a compaction, a deletion or a new version changes it: the
entry no longer matches, and the hour is read raw until the next compaction rebuilds it and
removes the stale file. The footer names the kind, its version and the source files
(``devloop.rollup``, ``devloop.schema_version``, ``devloop.rollup_sources``). Files are
written to a temp name, fsynced and renamed, so a reader sees a whole file or none.

Only the writers of whole hours write rollups, holding the maintenance lock: compaction (the
collector's hourly child, ``devloop workspace compact``), and :func:`write_rollups` for hours
written whole without compaction (``simulate``) or compacted by an older devloop. Reports only
read them (:func:`~devloop.store.db.hours`, :func:`~devloop.store.db.resolve`), and read an
hour's rows where its rollups are missing, stale or unreadable, so looking at the store never
writes into it and deleting ``_rollups`` changes no result, only the time of the reports until
the next compaction. (The
``_cache`` folder of older devloops is ignored, and removed by the next compaction.)

The current hour (still being written) is never rolled up, nor is an hour that still has rows
in the spool (a running collector's newest ticks, a segment that spans the turn of the hour, a
segment left by a killed collector): its rows are its files' plus the spool's
(:class:`~devloop.store.db.SpoolHour`), read raw, so the newest tick counts.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devloop.errors import StoreError
from devloop.store.columns import (
    ROLLUP_KEY,
    ROLLUP_SOURCES_KEY,
    ROLLUP_VERSIONS,
    SCHEMA_VERSION_KEY,
)
from devloop.store.db import (
    DAY_PREFIX,
    KINDS,
    ROLLUPS_DIR,
    Hour,
    consolidated,
    day_key,
    hours,
    resolve,
    source_key,
    whole_parquet,
)
from devloop.store.layout import Partition, fsync_dir

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from devloop.store.layout import FileFacts

#: Where devloop kept its rollups and file facts before they were part of the store.
LEGACY_CACHE_DIR: Final = "_cache"

#: ``thinned`` holds the samples at ts with ``(epoch_us(ts) // THINNED_TICK_US) %
#: THINNED_EVERY = 0``.
THINNED_TICK_US: Final = 1_000_000
THINNED_EVERY: Final = 36


#: ``progress(done, total)`` while :func:`write_rollups` builds hours.
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
            f"max({v}) AS {v}_max, max(CASE WHEN {v} IS NOT NULL "
            f"THEN {{{{'v': {v}, 'n': -epoch_us(ts)}}}} END) AS {v}_top"
            for v in ("cpu", "rss", "fds", "threads")
        )
        + f" FROM {{source}} GROUP BY {keys}"
    )


#: Per kind, the query building it from ``{source}``: an hour's ``samples`` rows, or for the
#: kinds of ``_BUILT_FROM`` the hour's entry of another kind. Reports run the same queries over
#: the rows of the hours without rollups, so both ways give the same numbers.
BUILD_SQL: Final = {
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

#: Kinds of value counts: their whole-day files (see :func:`~devloop.store.db.consolidated`)
#: sum ``n`` per these columns instead of repeating each hour's rows (the same multiset of values).
_COUNTED: Final = {
    "agent_cpu": ("host", "project", "agent", "cpu"),
    "agent_rss": ("host", "project", "agent", "rss"),
}


def conform(kind: str, table: pa.Table) -> pa.Table:
    """``table`` (a rollup of ``kind`` as DuckDB built it) in the declared schema of ``kind``
    (``columns.ROLLUP_COLUMNS``), with its footer metadata. StoreError when it has other
    columns, a value that does not fit its type or a null where none is allowed: the build
    query and the declaration disagree, which is a bug to hear about, not a slow report."""
    import pyarrow as pa

    from devloop.store.schema import ROLLUPS

    schema = ROLLUPS[kind]
    if table.column_names != schema.names:
        raise StoreError(f"rollup {kind}: columns {table.column_names}, declared {schema.names}")
    columns = []
    for field, column in zip(schema, table.columns, strict=True):
        try:
            column = column.cast(field.type) if column.type != field.type else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreError(f"rollup {kind}.{field.name}: {exc}") from exc
        if not field.nullable and column.null_count:
            raise StoreError(f"rollup {kind}.{field.name}: {column.null_count} null values")
        columns.append(column)
    metadata = {ROLLUP_KEY: kind.encode(), SCHEMA_VERSION_KEY: str(ROLLUP_VERSIONS[kind]).encode()}
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(metadata))


def build(connection: duckdb.DuckDBPyConnection, root: Path, hour: Hour) -> bool:
    """Write every missing entry of the closed ``hour`` and remove its stale ones; False when
    they cannot be written (a read-only store, a full disk): the reports then read the hour
    raw."""
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
                sql = BUILD_SQL[kind].format(source=f"read_parquet([{entry}])")
            else:
                sql = BUILD_SQL[kind].format(source=source)
            table = conform(kind, connection.sql(sql).to_arrow_table())
            metadata = {**table.schema.metadata, ROLLUP_SOURCES_KEY: sources}
            write_entry(table.replace_schema_metadata(metadata), final)
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except (OSError, duckdb.Error, pa.ArrowException):
        return False
    return True


def write_entry(table: pa.Table, final: Path) -> None:
    """Write the Arrow ``table`` to the rollup file ``final`` atomically (temp, fsync, rename)
    and remove the other, stale files of its folder."""
    import pyarrow.parquet as pq

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as sink:
            pq.write_table(
                table, sink, compression="zstd", compression_level=3, write_page_checksum=True
            )
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


def write_days(paths: Sequence[Path], today: str | None = None) -> list[Path]:
    """:func:`~devloop.store.db.consolidated`, writing each whole past day's file that is
    missing (the writers of whole hours: :meth:`HourWriter.finish`, fleet shipping)."""
    return consolidated(paths, today, make=_write_day)


def _write_day(group: Sequence[Path], day: Path) -> bool:
    return _whole_day(day.parent, group) and _concatenate(group, day)


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

    kind = day.parent.parent.name
    tmp = day.with_name(f".{day.name}.{os.getpid()}.tmp")
    counted = _COUNTED.get(kind)
    if counted is not None:
        try:
            table = pa.concat_tables([pq.read_table(path) for path in group])
            summed = table.group_by(list(counted)).aggregate([("n", "sum")])
            summed = summed.rename_columns([*counted, "n"]).select(table.column_names)
            write_entry(conform(kind, summed), day)
        except (OSError, pa.ArrowException):
            return False
        return True
    # The day's footer names its kind and version; the sources are its hours' entries.
    metadata = {ROLLUP_KEY: kind.encode(), SCHEMA_VERSION_KEY: str(ROLLUP_VERSIONS[kind]).encode()}
    try:
        first = pq.read_table(group[0]).replace_schema_metadata(metadata)
        with pq.ParquetWriter(
            tmp, first.schema, compression="zstd", compression_level=3, write_page_checksum=True
        ) as writer:
            writer.write_table(first)
            for path in group[1:]:  # one entry in memory at a time
                table = pq.read_table(path).replace_schema_metadata(metadata)
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
    """Delete rollup files whose hour no longer has the sources they were built from (data
    compacted, dropped by retention, another version); return how many were removed."""
    current = {hour.partition: hour.key for hour in hours(root)}
    removed = 0
    base = root / ROLLUPS_DIR
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
            if not day or path.name != f"{DAY_PREFIX}{day_key(day)}.parquet":
                path.unlink(missing_ok=True)
                removed += 1
        # A killed writer's temporary day files (hourly ones are caught above: their stem is
        # no key); the caller holds the maintenance lock, so no writer is using them.
        for path in kind_dir.glob("date=*/.*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def drop_hour(root: Path, partition: Partition) -> None:
    """Delete the rollups of ``partition`` (retention dropped the hour) and the whole-day
    files of its day (no longer whole). The caller holds the maintenance lock."""
    base = root / ROLLUPS_DIR
    try:
        kind_dirs = [entry.path for entry in os.scandir(base) if entry.is_dir()]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot list {base}: {exc}") from exc
    for kind_dir in map(Path, kind_dirs):
        date_dir = kind_dir / f"date={partition.date}"
        try:
            shutil.rmtree(date_dir / f"hour={partition.hour}", ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot drop the rollups of {partition}: {exc}") from exc
        try:
            for day in date_dir.glob(f"{DAY_PREFIX}*.parquet"):
                day.unlink(missing_ok=True)
            if date_dir.is_dir() and not any(date_dir.iterdir()):
                date_dir.rmdir()
        except OSError as exc:
            raise StoreError(f"cannot drop the rollups of {partition}: {exc}") from exc


@contextmanager
def _quiet() -> Iterator[None]:
    """No StoreWarning for a skipped file: the writer's caller warns once for each."""
    from devloop.store.layout import StoreWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        yield


class HourWriter:
    """Writes the rollups of closed hours one at a time, for a writer of whole hours that
    holds the maintenance lock (compaction, :func:`write_rollups`); then :meth:`finish` once,
    and :meth:`close`.

    An hour with rows still in the spool (seen when the writer is made) is never rolled up:
    its files do not hold all of its rows.
    """

    def __init__(self, root: Path, now: datetime | None = None) -> None:
        from devloop.store.db import connect_listed

        self.root = root
        self.now = now
        self.built = 0  # hours whose rollups were written
        with _quiet():
            self.connection, listing = connect_listed(root)
        self.spooled = self._spooled_hours(listing.spooled)

    def _spooled_hours(self, tables: Collection[str]) -> frozenset[Partition]:
        import duckdb

        if "samples" not in tables:
            return frozenset()
        try:
            found = self.connection.sql(
                "SELECT DISTINCT epoch_us(ts) // 3600000000 FROM _spool_samples"
            ).fetchall()
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot read the spool of {self.root}: {exc}") from exc
        return frozenset(Partition.of_hour_index(int(hour)) for (hour,) in found)

    def write(self, partition: Partition, live: Sequence[FileFacts]) -> bool:
        """Write the rollups of the closed hour ``partition``, whose live ``samples`` files
        are ``live``, unless it has rows in the spool or whole rollups already (or they cannot
        be written); True when written."""
        if partition in self.spooled or not live:
            return False
        hour = Hour(partition, tuple(fact.path for fact in live), source_key(live), True)
        if all(whole_parquet(hour.entry(self.root, kind)) for kind in KINDS):
            return False
        if not build(self.connection, self.root, hour):
            return False
        self.built += 1
        return True

    def finish(self) -> None:
        """After the hours: the whole-day files of past days (see
        :func:`~devloop.store.db.consolidated`), stale rollups removed, the files' facts and
        the small tables' digests saved (:mod:`devloop.store.layout`), the ``_cache`` folder of
        an older devloop removed."""
        from devloop.store.db import create_views, save_digests

        with _quiet():
            listing = create_views(self.connection, self.root)  # the files as they are now
        chosen = hours(
            self.root, now=self.now, spooled=self.spooled, listed=listing.files["samples"]
        )
        sources = resolve(self.root, [hour for hour in chosen if hour.closed])
        today = (self.now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")
        for kind in KINDS:
            write_days(sources.cached[kind], today=today)
        prune(self.root)
        save_digests(self.connection, self.root, listing)
        shutil.rmtree(self.root / LEGACY_CACHE_DIR, ignore_errors=True)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.connection.close()


def write_rollups(
    root: Path | str, now: datetime | None = None, progress: Progress | None = None
) -> int:
    """Write the missing rollups of every closed hour (before the hour of ``now``) of the store
    at ``root`` without compacting it, as compaction would; return how many hours were rolled
    up. For the writers of whole hours that do not compact them (``simulate``), and for hours
    compacted by an older devloop. Raises StoreLockedError when a compaction or retention is
    running on ``root``."""
    from devloop.store.layout import iter_partitions, scan_partition, warn_invalid
    from devloop.store.lock import maintenance_lock

    root = Path(root)
    current = Partition.of_datetime(now or datetime.now(UTC))
    with maintenance_lock(root):
        writer = HourWriter(root, now)
        try:
            closed = [
                (partition, directory)
                for partition, directory in iter_partitions(root, "samples")
                if partition < current
            ]
            for done, (partition, directory) in enumerate(closed, start=1):
                scan = scan_partition(directory, "samples")
                warn_invalid(scan.invalid)
                writer.write(partition, scan.live)
                if progress is not None:
                    progress(done, len(closed))
            writer.finish()
        finally:
            writer.close()
    return writer.built
