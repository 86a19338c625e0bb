"""Retention: drop whole oldest hours when the store is too old or too big.

An hour is dropped in every table at once (samples without their system rows would skew
reports), and its rollups with it (:func:`devloop.store.rollups.drop_hour`). Each partition
folder is first renamed to a dot name (atomic: readers see all of the hour or none of it), then
deleted; a crash in between leaves a dot folder that the next run deletes (and rollups of an
hour without files, which no reader uses and the next compaction removes). The current hour is
never dropped. Every drop is logged and recorded as an ``events`` row with action ``drop``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from devloop.errors import StoreError
from devloop.store.files import write_table
from devloop.store.layout import (
    Partition,
    data_files,
    fsync_dir,
    iter_partitions,
    new_id,
    read_facts,
)
from devloop.store.lock import maintenance_lock
from devloop.store.rollups import drop_hour
from devloop.store.schema import TABLES

logger = logging.getLogger("devloop.store")

_DROPPING_PREFIX = ".drop-"


@dataclass(frozen=True)
class DroppedPartition:
    """One hour dropped from every table that had it."""

    partition: Partition
    tables: tuple[str, ...]
    files: int
    bytes: int
    rows: int


@dataclass(frozen=True)
class DropReport:
    """What a retention run dropped (nothing: ``dropped`` is empty)."""

    dropped: tuple[DroppedPartition, ...]
    reason: str  # "" when nothing was dropped
    bytes_before: int
    bytes_after: int

    @property
    def rows(self) -> int:
        """Rows dropped over all tables."""
        return sum(item.rows for item in self.dropped)

    @property
    def bytes(self) -> int:
        """Bytes freed."""
        return sum(item.bytes for item in self.dropped)


def retention(
    root: Path | str,
    max_age_seconds: float | None = None,
    max_bytes: int | None = None,
    *,
    now: datetime | None = None,
    host: str | None = None,
) -> DropReport:
    """Drop hours that ended more than ``max_age_seconds`` before ``now``, then the oldest hours
    until the store's Parquet files total at most ``max_bytes``.

    The spool and the current hour are never dropped, so a store can stay above ``max_bytes``.
    ``host`` goes into the ``drop`` event (default: this machine's name).
    """
    if max_age_seconds is not None and max_age_seconds < 0:
        raise StoreError(f"max_age_seconds must not be negative, not {max_age_seconds}")
    if max_bytes is not None and max_bytes < 0:
        raise StoreError(f"max_bytes must not be negative, not {max_bytes}")
    root = Path(root)
    moment = now or datetime.now(UTC)
    current = Partition.of_datetime(moment)
    with maintenance_lock(root):
        _remove_dropping_leftovers(root)
        sizes = _partition_sizes(root)
        bytes_before = sum(size for size, _, _ in sizes.values())
        doomed: list[Partition] = []
        reasons: list[str] = []
        if max_age_seconds is not None:
            cutoff = moment - timedelta(seconds=max_age_seconds)
            aged = [p for p in sizes if p.end <= cutoff and p < current]
            if aged:
                doomed.extend(aged)
                reasons.append(f"older than {max_age_seconds:g}s")
        if max_bytes is not None:
            remaining = bytes_before - sum(sizes[p][0] for p in doomed)
            by_size = []
            for partition in sorted(sizes):
                if remaining <= max_bytes or partition >= current:
                    break
                if partition not in doomed:
                    by_size.append(partition)
                    remaining -= sizes[partition][0]
            if by_size:
                doomed.extend(by_size)
                reasons.append(f"store above {max_bytes} bytes")
        dropped = tuple(_drop(root, partition, sizes[partition]) for partition in sorted(doomed))
    reason = " and ".join(reasons)
    report = DropReport(dropped, reason, bytes_before, bytes_before - sum(d.bytes for d in dropped))
    if dropped:
        message = _describe(report)
        logger.warning("retention: %s", message)
        _record_event(root, moment, host or socket.gethostname(), message)
    return report


def _partition_sizes(root: Path) -> dict[Partition, tuple[int, int, int]]:
    """(bytes, files, rows) per hour over all tables."""
    sizes: dict[Partition, tuple[int, int, int]] = {}
    for table in TABLES:
        for partition, directory in iter_partitions(root, table):
            size, files, rows = sizes.get(partition, (0, 0, 0))
            for path in data_files(directory):
                facts = read_facts(path, table)
                try:
                    size += path.stat().st_size
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot stat {path}: {exc}") from exc
                files += 1
                rows += 0 if isinstance(facts, str) else facts.rows
            sizes[partition] = (size, files, rows)
    return sizes


def _drop(root: Path, partition: Partition, size: tuple[int, int, int]) -> DroppedPartition:
    tables = []
    for table in TABLES:
        directory = root / table / f"date={partition.date}" / f"hour={partition.hour}"
        if not directory.exists():
            continue
        hidden = root / table / f"{_DROPPING_PREFIX}{partition.date}-{partition.hour}-{new_id()}"
        try:
            os.rename(directory, hidden)
            fsync_dir(root / table)
            shutil.rmtree(hidden)
            date_dir = directory.parent
            if not any(date_dir.iterdir()):
                date_dir.rmdir()
        except OSError as exc:
            raise StoreError(f"cannot drop {directory}: {exc}") from exc
        tables.append(table)
    drop_hour(root, partition)
    return DroppedPartition(partition, tuple(tables), size[1], size[0], size[2])


def _remove_dropping_leftovers(root: Path) -> None:
    for table in TABLES:
        try:
            entries = list(os.scandir(root / table))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot list {root / table}: {exc}") from exc
        for entry in entries:
            if entry.name.startswith(_DROPPING_PREFIX):
                try:
                    shutil.rmtree(entry.path)
                except OSError as exc:
                    raise StoreError(f"cannot delete {entry.path}: {exc}") from exc


def _describe(report: DropReport) -> str:
    hours = [item.partition for item in report.dropped]
    span = str(hours[0]) if len(hours) == 1 else f"{hours[0]} to {hours[-1]}"
    return (
        f"dropped {len(hours)} hour{'s' if len(hours) > 1 else ''} ({span}): {report.rows} rows,"
        f" {report.bytes} bytes; {report.reason}"
    )


def _record_event(root: Path, moment: datetime, host: str, message: str) -> None:
    row = {
        "ts": pa.array([moment], pa.timestamp("us", tz="UTC")),
        "host": [host],
        "action": ["drop"],
        "scope": ["workspace"],
        "message": [message],
    }
    write_table(root, "events", pa.table(row))
