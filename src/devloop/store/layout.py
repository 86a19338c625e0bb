"""Where things live in a store root, what their footers say, and the file-system primitives
that make writes durable.

::

    <root>/.lock                                  writer lock (holds the collector's pid)
    <root>/.maintenance.lock                      compaction / retention lock
    <root>/_spool/<segment-id>.seg                append-only spool segments (see spool.py)
    <root>/<table>/date=YYYY-MM-DD/hour=H/<kind>-<id>.parquet

Hours are UTC and not zero-padded (DuckDB reads ``hour=7`` as an integer, ``hour=07`` as text).
A data file's name tells where it came from, which recovery and compaction rely on:

* ``s-<segment-id>.parquet``: converted from spool segment ``<segment-id>``; the name is fixed by
  the segment, so converting the same segment twice finds the file already there.
* ``w-<id>.parquet``: written by :func:`devloop.store.writer.write_table` (bulk / synthetic rows).
* ``c-<id>.parquet``: a compacted file; its footer lists the names it replaces (files.py).

Files whose name starts with ``.`` are temporary or being dropped; every reader ignores them
(pyarrow.dataset and Spark skip ``.`` and ``_`` prefixes too).

**What a file's footer says** (:class:`FileFacts`, :func:`read_facts`). Every file carries
``devloop.table`` and ``devloop.schema_version`` in its footer; a file without them (or not
Parquet at all) is *foreign* and is skipped by every reader with a :class:`StoreWarning`. A
compacted file also carries ``devloop.sources``: the names of the files it replaces
(transitively), so a crash between "compacted file renamed" and "inputs deleted" never yields
duplicate rows: a file named in a sibling's sources is *redundant*, readers ignore it and the
next compaction or recovery deletes it (:func:`scan_partition`). Footers are read with
``pyarrow.parquet.read_metadata`` and cached by (path, size, mtime), so listing a large store
twice costs one ``stat`` per file (connecting reads the new files' footers with DuckDB instead,
all at once, see :mod:`devloop.store.db`).

**What the store knows about its own files** is kept in one file, ``<root>/_facts.json``: per
live data file, keyed by its path, size and modification time, its footer facts (so a new
process connects with one ``stat`` per unchanged file instead of reading every footer, about
1 ms a file) and, for the small tables ``processes``, ``limits`` and ``system``, its *digest*:
the few values every report asks of them (:mod:`devloop.store.db`). Only the writers of whole
hours write it (compaction and :func:`~devloop.store.rollups.write_rollups`, under the
maintenance lock, through :func:`save_facts`); connecting and reporting only read it
(:func:`load_facts`), so looking at the store never writes into it. It is derived data: a
missing, stale or unreadable file only costs reading the footers and scanning the small tables
it lacks; an entry whose file changed since is ignored.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from devloop.errors import StoreError
from devloop.store.columns import SCHEMA_VERSION_KEY, TABLE_COLUMNS, TABLE_KEY

SPOOL_DIR: Final = "_spool"
SEGMENT_SUFFIX: Final = ".seg"
LOCK_FILE: Final = ".lock"
MAINTENANCE_LOCK_FILE: Final = ".maintenance.lock"
HOUR_US: Final = 3_600_000_000

_DATE_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE = re.compile(r"^hour=(\d{1,2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreWarning(UserWarning):
    """A store file was skipped (corrupt, foreign, or of another table) or a segment set aside."""


@dataclass(frozen=True, order=True)
class Partition:
    """One UTC hour of one table: the directory ``date=YYYY-MM-DD/hour=H``."""

    date: str
    hour: int

    @classmethod
    def of_hour_index(cls, hour_index: int) -> Partition:
        """The partition of hour number ``hour_index`` since the epoch."""
        start = _EPOCH + timedelta(hours=hour_index)
        return cls(start.strftime("%Y-%m-%d"), start.hour)

    @classmethod
    def of_datetime(cls, moment: datetime) -> Partition:
        """The partition holding ``moment`` (an aware datetime)."""
        if moment.tzinfo is None:
            raise StoreError(f"{moment} has no time zone (use an aware datetime, e.g. UTC)")
        utc = moment.astimezone(UTC)
        return cls(utc.strftime("%Y-%m-%d"), utc.hour)

    @property
    def start(self) -> datetime:
        """The first instant of the hour (UTC)."""
        # fromisoformat: the same instant as strptime's "%Y-%m-%d" for the folders' dates,
        # ~30x cheaper (every report asks it of every hour it reads)
        return datetime.fromisoformat(self.date).replace(tzinfo=UTC) + timedelta(hours=self.hour)

    @property
    def end(self) -> datetime:
        """The first instant after the hour."""
        return self.start + timedelta(hours=1)

    @property
    def relative_dir(self) -> str:
        """``date=YYYY-MM-DD/hour=H``."""
        return f"date={self.date}/hour={self.hour}"

    def __str__(self) -> str:
        return f"{self.date} hour={self.hour}"


def check_table(table: str) -> None:
    """Raise StoreError unless ``table`` is one of the store's tables."""
    if table not in TABLE_COLUMNS:
        raise StoreError(f"unknown table {table!r} (tables: {', '.join(TABLE_COLUMNS)})")


def spool_dir(root: Path) -> Path:
    """The folder of spool segments."""
    return root / SPOOL_DIR


def partition_dir(root: Path, table: str, partition: Partition) -> Path:
    """``<root>/<table>/date=YYYY-MM-DD/hour=H``."""
    return root / table / f"date={partition.date}" / f"hour={partition.hour}"


def iter_partitions(root: Path, table: str) -> list[tuple[Partition, Path]]:
    """The partitions of ``table`` that exist on disk, oldest first."""
    found: list[tuple[Partition, Path]] = []
    try:
        date_entries = list(os.scandir(root / table))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {root / table}: {exc}") from exc
    for date_entry in date_entries:
        date_match = _DATE_RE.match(date_entry.name)
        if date_match is None or not date_entry.is_dir():
            continue
        try:
            hour_entries = list(os.scandir(date_entry.path))
        except OSError as exc:
            raise StoreError(f"cannot list {date_entry.path}: {exc}") from exc
        for hour_entry in hour_entries:
            hour_match = _HOUR_RE.match(hour_entry.name)
            if hour_match is None or not hour_entry.is_dir() or int(hour_match[1]) > 23:
                continue
            found.append((Partition(date_match[1], int(hour_match[1])), Path(hour_entry.path)))
    found.sort()
    return found


def data_files(directory: Path) -> list[Path]:
    """The visible ``*.parquet`` files of one partition directory, by name."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {directory}: {exc}") from exc
    return [
        directory / name for name in sorted(names) if name.endswith(".parquet") and name[0] != "."
    ]


def temp_files(directory: Path) -> list[Path]:
    """The leftover temporary files (``.<name>.tmp``) of one partition directory."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {directory}: {exc}") from exc
    return [directory / name for name in sorted(names) if name[0] == "." and name.endswith(".tmp")]


def temp_path(final: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``final``."""
    return final.with_name(f".{final.name}.tmp")


def new_id() -> str:
    """A unique, time-ordered id for segments and files: ``<time_ns>-<pid>``."""
    return f"{time.time_ns():020d}-{os.getpid()}"


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def segment_paths(root: Path) -> list[Path]:
    """The spool segments waiting for conversion, oldest first."""
    try:
        names = os.listdir(spool_dir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {spool_dir(root)}: {exc}") from exc
    return [spool_dir(root) / name for name in sorted(names) if name.endswith(SEGMENT_SUFFIX)]


def spool_backlog(root: Path) -> tuple[int, int]:
    """How many spool segments wait for conversion, and their bytes (the spool alone is
    listed: what ``workspace health`` needs of the store's state)."""
    segments = segment_paths(root)
    try:
        return len(segments), sum(path.stat().st_size for path in segments)
    except OSError as exc:
        raise StoreError(f"cannot stat the spool of {root}: {exc}") from exc


SOURCES_KEY: Final = b"devloop.sources"


@dataclass(frozen=True)
class FileFacts:
    """What a data file's footer says, without reading its rows."""

    path: Path
    table: str
    schema_version: int
    rows: int
    bytes: int
    ts_min_us: int | None
    ts_max_us: int | None
    sources: frozenset[str]


@dataclass(frozen=True)
class PartitionFiles:
    """The files of one partition directory, sorted into what readers use and what they skip."""

    live: tuple[FileFacts, ...]
    redundant: tuple[FileFacts, ...]  # contained in a compacted sibling: delete on repair
    invalid: tuple[tuple[Path, str], ...]  # (path, why) for corrupt or foreign files


_cache_lock = threading.Lock()

_facts_cache: dict[str, tuple[int, int, FileFacts | str]] = {}


def read_facts(path: Path, table_name: str) -> FileFacts | str:
    """The footer facts of ``path``, or why it is not a valid file of ``table_name``."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc}"
    key = str(path)
    with _cache_lock:
        cached = _facts_cache.get(key)
    if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
        result = cached[2]
    else:
        result = _read_facts_uncached(path, stat.st_size)
        with _cache_lock:
            _facts_cache[key] = (stat.st_size, stat.st_mtime_ns, result)
    if isinstance(result, FileFacts) and result.table != table_name:
        return f"holds table {result.table!r}, not {table_name!r}"
    return result


def _read_facts_uncached(path: Path, size: int) -> FileFacts | str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file ({exc})"
    kv = metadata.metadata or {}
    if TABLE_KEY not in kv or SCHEMA_VERSION_KEY not in kv:
        return "not written by devloop (no devloop.table / devloop.schema_version metadata)"
    table = kv[TABLE_KEY].decode(errors="replace")
    try:
        version = int(kv[SCHEMA_VERSION_KEY])
        sources = frozenset(json.loads(kv[SOURCES_KEY])) if SOURCES_KEY in kv else frozenset()
    except ValueError as exc:
        return f"bad devloop metadata ({exc})"
    if table not in TABLE_COLUMNS:
        return f"holds unknown table {table!r}"
    ts_min, ts_max = _ts_range(metadata)
    return FileFacts(path, table, version, metadata.num_rows, size, ts_min, ts_max, sources)


def _ts_range(metadata: Any) -> tuple[int | None, int | None]:
    lows: list[int] = []
    highs: list[int] = []
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        if group.num_rows == 0:
            continue
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            if column.path_in_schema != "ts":
                continue
            stats = column.statistics
            if stats is None or not stats.has_min_max:
                return None, None
            lows.append(int(stats.min_raw))
            highs.append(int(stats.max_raw))
    return (min(lows), max(highs)) if lows else (None, None)


def known_facts(path: Path, size: int, mtime_ns: int) -> bool:
    """Whether this process's cache holds the footer facts of ``path`` at that size and
    mtime."""
    with _cache_lock:
        cached = _facts_cache.get(str(path))
    return cached is not None and cached[0] == size and cached[1] == mtime_ns


def known_versions(paths: Sequence[Path | str]) -> set[int] | None:
    """The schema versions of ``paths`` from the footers this process read; None if unknown."""
    versions = set()
    with _cache_lock:
        for path in paths:
            cached = _facts_cache.get(str(path))
            if cached is None or not isinstance(cached[2], FileFacts):
                return None
            versions.add(cached[2].schema_version)
    return versions


def remember_facts(facts: FileFacts, size: int, mtime_ns: int) -> None:
    """Keep ``facts``, read from the footer of the file of that size and mtime some other way
    (:mod:`devloop.store.db` reads new files' footers with DuckDB, without pyarrow)."""
    with _cache_lock:
        _facts_cache[str(facts.path)] = (size, mtime_ns, facts)


def parse_facts(
    path: Path, size: int, rows: int, kv: dict[bytes, bytes], ts: tuple[int | None, int | None]
) -> FileFacts | None:
    """The facts of a footer with ``rows``, key-values ``kv`` and ``ts`` range, as
    :func:`read_facts` makes them; None when it is not a valid devloop file (then
    :func:`read_facts` says why)."""
    if TABLE_KEY not in kv or SCHEMA_VERSION_KEY not in kv:
        return None
    table = kv[TABLE_KEY].decode(errors="replace")
    try:
        version = int(kv[SCHEMA_VERSION_KEY])
        sources = frozenset(json.loads(kv[SOURCES_KEY])) if SOURCES_KEY in kv else frozenset()
    except ValueError:
        return None
    if table not in TABLE_COLUMNS:
        return None
    return FileFacts(path, table, version, rows, size, ts[0], ts[1], sources)


def scan_partition(
    directory: Path, table_name: str, paths: Sequence[Path] | None = None
) -> PartitionFiles:
    """Sort the files of one partition into live, redundant and invalid (see module doc);
    ``paths``: its files as just listed (:func:`~devloop.store.layout.data_files`)."""
    facts: list[FileFacts] = []
    invalid: list[tuple[Path, str]] = []
    for path in data_files(directory) if paths is None else paths:
        result = read_facts(path, table_name)
        if isinstance(result, str):
            if path.exists():  # deleted meanwhile by a compaction: not an error
                invalid.append((path, result))
        else:
            facts.append(result)
    contained: set[str] = set()
    for fact in facts:
        contained |= fact.sources
    live = tuple(f for f in facts if f.path.name not in contained)
    redundant = tuple(f for f in facts if f.path.name in contained)
    return PartitionFiles(live, redundant, tuple(invalid))


def warn_invalid(invalid: Sequence[tuple[Path, str]]) -> None:
    """Warn once per skipped file, naming it."""
    for path, reason in invalid:
        warnings.warn(f"skipping {path}: {reason}", StoreWarning, stacklevel=3)


FACTS_FILE: Final = Path("_facts.json")
#: Bumped when an entry's fields change; a file of another version is ignored.
FACTS_VERSION: Final = 2

#: A digest: its rows of values (see :mod:`devloop.store.db`).
Digest = list[list[Any]]

#: The entries last read, per file, with the file's size and mtime: connecting and the digests
#: both ask, and the file only changes at compaction.
_read: dict[Path, tuple[tuple[int, int], dict[str, dict[str, Any]]]] = {}


def load_facts(root: Path) -> dict[str, dict[str, Any]]:
    """The entries of ``FACTS_FILE`` (by path; {} when there is none or it is unreadable),
    after seeding the footer cache of :mod:`devloop.store.files` with their facts. The result
    is shared: do not change it."""
    path = root / FACTS_FILE
    try:
        status = path.stat()
    except OSError:
        return {}
    stat = (status.st_size, status.st_mtime_ns)
    known = _read.get(path)
    if known is None or known[0] != stat:
        known = (stat, _parse(path))
        _read[path] = known
    entries = known[1]
    try:
        for key, entry in entries.items():
            if key in _facts_cache:
                continue
            facts = FileFacts(
                Path(key),
                str(entry["table"]),
                int(entry["schema_version"]),
                int(entry["rows"]),
                int(entry["bytes"]),
                entry["ts_min_us"],
                entry["ts_max_us"],
                frozenset(entry["sources"]),
            )
            _facts_cache[key] = (int(entry["size"]), int(entry["mtime_ns"]), facts)
    except (ValueError, KeyError, TypeError, AttributeError):
        _read[path] = (stat, {})
        return {}
    return entries


def _parse(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != FACTS_VERSION:
            return {}
        return {entry["path"]: entry for entry in data["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def digest_of(entry: Mapping[str, Any] | None, stat: tuple[int, int] | None) -> Digest | None:
    """The digest kept in ``entry`` when it describes the file as it is now (``stat``: its
    size and mtime), else None."""
    if entry is None or stat is None or "digest" not in entry:
        return None
    if (entry.get("size"), entry.get("mtime_ns")) != stat:
        return None
    digest: Digest = entry["digest"]
    return digest


def save_facts(root: Path | str, digests: Mapping[str, Digest] | None = None) -> None:
    """Write ``FACTS_FILE`` for the live files of every table now in the store at ``root``:
    their footer facts and digests (``digests``, by path, else the ones kept for an unchanged
    file), when it differs from the one there. A store that cannot be written keeps none.
    Called by the writers of whole hours, under the maintenance lock, never by a reader;
    removes the temps of killed ones."""
    root = Path(root)
    # Temps of writers killed between writing and renaming (each named by its pid): the
    # callers hold the maintenance lock, so none is being written now.
    for stale in root.glob(f".{FACTS_FILE.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    known = load_facts(root)
    given = digests or {}
    facts = [
        fact
        for table in TABLE_COLUMNS
        for _, directory in iter_partitions(root, table)
        for fact in scan_partition(directory, table).live
    ]
    entries: dict[str, Any] = {}
    for fact in facts:
        key = str(fact.path)
        cached = _facts_cache.get(key)
        if cached is None or cached[2] != fact:
            continue
        entry: dict[str, Any] = {
            "path": key,
            "size": cached[0],
            "mtime_ns": cached[1],
            "table": fact.table,
            "schema_version": fact.schema_version,
            "rows": fact.rows,
            "bytes": fact.bytes,
            "ts_min_us": fact.ts_min_us,
            "ts_max_us": fact.ts_max_us,
            "sources": sorted(fact.sources),
        }
        digest = given.get(key)
        if digest is None:
            digest = digest_of(known.get(key), (cached[0], cached[1]))
        if digest is not None:
            entry["digest"] = digest
        entries[key] = entry
    if entries == known:
        return
    target = root / FACTS_FILE
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": FACTS_VERSION, "files": list(entries.values())}))
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
