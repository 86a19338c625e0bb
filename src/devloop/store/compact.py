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
whole-day rollup files, and the files' facts and digests (:mod:`devloop.store.facts`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from devloop.errors import StoreError
from devloop.store.files import (
    COMPACT_ZSTD_LEVEL,
    FileFacts,
    conform,
    read_rows,
    scan_partition,
    unlink_files,
    warn_invalid,
    write_atomic,
)
from devloop.store.layout import Partition, iter_partitions, new_id, temp_files
from devloop.store.lock import maintenance_lock
from devloop.store.rollups import HourWriter
from devloop.store.schema import TABLES

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


def compact(root: Path | str, now: datetime | None = None) -> CompactReport:
    """Compact every closed hour (before the hour of ``now``, default: the current time) and
    write the rollups of its closed hours of ``samples``.

    Raises StoreLockedError when another compaction or retention is running on ``root``.
    """
    root = Path(root)
    current = Partition.of_datetime(now or datetime.now(UTC))
    totals = {"partitions": 0, "files_in": 0, "rows": 0, "bytes_in": 0, "bytes_out": 0}
    repaired = temps_removed = 0
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
                        stats = _compact_partition(table, directory, live)
                        for name, value in stats.items():
                            totals[name] += value
                        live = scan_partition(directory, table).live
                    if table == "samples":
                        rollups.write(partition, live)  # the hour's rollups, in the same pass
            rollups.finish()
        finally:
            rollups.close()
    return CompactReport(
        **totals, repaired=repaired, temps_removed=temps_removed, rolled_up=rollups.built
    )


def _compact_partition(table: str, directory: Path, live: Sequence[FileFacts]) -> dict[str, int]:
    """Replace the ``live`` files of one partition by one sorted file; what it did."""
    parts = [read_rows(fact.path, table) for fact in live]
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
