"""Compaction: each closed hour of each table becomes one sorted, zstd-compressed file.

Steps per partition, each safe to die after:

1. Delete *redundant* files (named in a compacted sibling's ``devloop.sources``): a previous
   compaction died after its rename, before deleting its inputs.
2. Read the live files, sort by the table's series then time, write ``c-<id>.parquet`` with
   ``devloop.sources`` = every name it replaces (transitively): temp, fsync, rename, fsync dir.
   Death before the rename leaves only an invisible temp file (removed by the next run).
3. Delete the inputs. Death before this leaves inputs that readers already ignore (step 1 of the
   next run deletes them), because the compacted file lists them.

A partition already holding a single compacted file is left alone, so compaction is idempotent.
Files arriving late in a compacted hour (a spool segment that spanned the hour) are merged by the
next run. Compaction never touches the current hour.

In the same pass, each closed hour of ``samples`` gets its rollups (:mod:`devloop.store.rollups`),
built from the hour's sorted file right after it is written (or from the hour as it is, when it
was compacted before but lacks them), except an hour with rows still in the spool. Then the
whole-day rollup files, and the files' facts and digests (:mod:`devloop.store.layout`).

Compaction is where the store's files are verified: every page of every input is checked
against the CRC written with it (``write_page_checksum``), and a file that fails is
*quarantined*, renamed ``<name>.corrupt`` (no reader lists it), with a StoreWarning naming it and
an ``events`` row (action ``quarantine``), instead of being merged into good data. DuckDB does
not verify Parquet page checksums, so reports trust a file until compaction has checked it
(closed hours are compacted hourly by the collector, or by ``devloop workspace compact``).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from devloop.errors import CorruptFileError, StoreError
from devloop.store.files import (
    COMPACT_ZSTD_LEVEL,
    conform,
    read_rows,
    unlink_files,
    write_atomic,
    write_table,
)
from devloop.store.layout import (
    FileFacts,
    Partition,
    StoreWarning,
    fsync_dir,
    iter_partitions,
    new_id,
    scan_partition,
    temp_files,
    warn_invalid,
)
from devloop.store.lock import maintenance_lock
from devloop.store.rollups import HourWriter
from devloop.store.schema import TABLES

#: The suffix a file failing verification is renamed with (readers list ``*.parquet`` only).
CORRUPT_SUFFIX = ".corrupt"

#: A temp file of another writer (s-/w-) this old belongs to a dead process.
_STALE_TEMP_SECONDS = 3600.0


@dataclass(frozen=True)
class CompactReport:
    """What one compaction run did."""

    partitions: int  # partitions rewritten into one file
    files_in: int  # files replaced
    rows: int  # rows in the rewritten partitions
    bytes_in: int
    bytes_out: int
    repaired: int  # redundant files deleted (left by a crash between rename and delete)
    temps_removed: int  # stale temporary files deleted
    rolled_up: int = 0  # closed hours of samples whose rollups were written
    quarantined: tuple[Path, ...] = ()  # files that failed verification, as renamed


def compact(root: Path | str, now: datetime | None = None) -> CompactReport:
    """Compact every closed hour (before the hour of ``now``, default: the current time) and
    write the rollups of its closed hours of ``samples``.

    Raises StoreLockedError when another compaction or retention is running on ``root``.
    """
    root = Path(root)
    current = Partition.of_datetime(now or datetime.now(UTC))
    totals = {"partitions": 0, "files_in": 0, "rows": 0, "bytes_in": 0, "bytes_out": 0}
    repaired = temps_removed = 0
    quarantined: list[Path] = []
    with maintenance_lock(root):
        rollups = HourWriter(root, now)
        try:
            for table in TABLES:
                for partition, directory in iter_partitions(root, table):
                    if partition >= current:
                        continue
                    temps_removed += _remove_stale_temps(directory)
                    scan = scan_partition(directory, table)
                    warn_invalid(scan.invalid)
                    repaired += unlink_files(fact.path for fact in scan.redundant)
                    live = scan.live
                    if live and not (len(live) == 1 and live[0].path.name.startswith("c-")):
                        stats = _compact_partition(table, directory, live, quarantined)
                        for name, value in stats.items():
                            totals[name] += value
                        live = scan_partition(directory, table).live
                    if table == "samples":
                        rollups.write(partition, live)  # the hour's rollups, in the same pass
            rollups.finish()
        finally:
            rollups.close()
        if quarantined:
            _record_quarantine(root, quarantined)
    return CompactReport(
        **totals, repaired=repaired, temps_removed=temps_removed, rolled_up=rollups.built,
        quarantined=tuple(quarantined),
    )  # fmt: skip


def _compact_partition(
    table: str, directory: Path, live: Sequence[FileFacts], quarantined: list[Path]
) -> dict[str, int]:
    """Replace the ``live`` files of one partition by one sorted file; what it did. A file
    failing verification is quarantined (its path as renamed added to ``quarantined``)."""
    parts: list[pa.Table] = []
    good: list[FileFacts] = []
    for fact in live:
        try:
            parts.append(read_rows(fact.path, table))
        except CorruptFileError as exc:
            quarantined.append(_quarantine(fact.path, exc))
            continue
        good.append(fact)
    live = good
    if not live:
        return {}
    try:
        merged = pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowException as exc:
        raise StoreError(f"cannot merge the files of {directory}: {exc}") from exc
    data = conform(table, merged)
    expected = sum(fact.rows for fact in live)
    if data.num_rows != expected:
        raise StoreError(f"{directory}: read {data.num_rows} rows, footers say {expected}")
    sources: set[str] = set()
    for fact in live:
        sources |= fact.sources | {fact.path.name}
    final = directory / f"c-{new_id()}.parquet"
    size = write_atomic(table, data, final, sources=sources, zstd_level=COMPACT_ZSTD_LEVEL)
    unlink_files(fact.path for fact in live)
    return {
        "partitions": 1,
        "files_in": len(live),
        "rows": data.num_rows,
        "bytes_in": sum(fact.bytes for fact in live),
        "bytes_out": size,
    }


def _quarantine(path: Path, exc: CorruptFileError) -> Path:
    """Rename a file that failed verification out of every reader's sight; warn, naming it."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, target)
        fsync_dir(path.parent)
    except OSError as rename_exc:
        raise StoreError(f"cannot quarantine {path}: {rename_exc}") from rename_exc
    warnings.warn(
        f"quarantined {path} as {target.name}: {exc.__cause__ or exc}", StoreWarning, stacklevel=4
    )
    return target


def _record_quarantine(root: Path, quarantined: Sequence[Path]) -> None:
    """One ``events`` row per quarantined file (in the current hour: not compacted yet)."""
    moment = datetime.now(UTC)
    row = {
        "ts": pa.array([moment] * len(quarantined), pa.timestamp("us", tz="UTC")),
        "host": [socket.gethostname()] * len(quarantined),
        "action": ["quarantine"] * len(quarantined),
        "scope": ["workspace"] * len(quarantined),
        "message": [
            f"{path.relative_to(root)} failed its page checksums: moved aside, not compacted"
            for path in quarantined
        ],
    }
    write_table(root, "events", pa.table(row))


def _remove_stale_temps(directory: Path) -> int:
    """Temps of dead compactions (we hold the lock) and old temps of dead writers."""
    stale = []
    for path in temp_files(directory):
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {exc}") from exc
        if path.name.startswith(".c-") or age > _STALE_TEMP_SECONDS:
            stale.append(path)
    return unlink_files(stale)
