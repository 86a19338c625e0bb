"""Where things live in a store root, and the file-system primitives that make writes durable.

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
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from devloop.errors import StoreError
from devloop.store.columns import TABLE_COLUMNS

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
