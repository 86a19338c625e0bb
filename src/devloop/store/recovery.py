"""Turning closed spool segments into Parquet, exactly once, whenever the last run died.

Conversion of segment ``<id>`` writes, per table and UTC hour it holds, the file
``<table>/date=D/hour=H/s-<id>.parquet`` (temp, fsync, rename, fsync dir), then deletes the
segment. Why a SIGKILL at any moment yields no duplicate and no lost row:

1. During an append: the record in flight is torn; reading stops before it (CRC / length), the
   earlier records are intact because the file is append-only. Only that append is lost.
2. During conversion, before a rename: the temp file is invisible (dot name) and is simply
   rewritten next time; the segment still exists, so nothing is lost.
3. Between renames, or after the last rename but before the segment is deleted: the segment is
   converted again. Its bytes have not changed, so the same files come out under the same
   names; a file already present is skipped, so each row exists once.
4. A file already present may since have been compacted (renamed into ``c-*`` and deleted):
   its name is then in that compacted file's ``devloop.sources``, and it is skipped too.
5. After the segment is deleted: nothing left to do.

Recovery runs under the writer lock (a live collector's segments are not leftovers).

pyarrow is imported by :func:`convert_segment` when it runs, not with this module: the collector
imports the reports and :func:`segment_paths` from here, and converts in a child process
(convert.py) so that it never loads pyarrow itself.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from devloop.errors import SpoolCorruptError, StoreError
from devloop.store.layout import SEGMENT_SUFFIX, StoreWarning, partition_dir, spool_dir
from devloop.store.lock import writer_lock
from devloop.store.runs import RUN_SEGMENT_PREFIX, forget_journal
from devloop.store.spool import read_segment


@dataclass(frozen=True)
class SegmentReport:
    """What converting one segment did."""

    segment: Path
    rows: dict[str, int]  # rows per table found in the segment
    files_written: tuple[Path, ...]  # fewer than the partitions when a crash had written some
    torn_bytes: int
    quarantined: bool = False  # set aside as ``<id>.seg.bad``: it could not be decoded


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery found in the spool."""

    segments: tuple[SegmentReport, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        """Rows recovered over all tables."""
        return sum(sum(report.rows.values()) for report in self.segments)

    @property
    def torn_bytes(self) -> int:
        """Bytes dropped as torn last records."""
        return sum(report.torn_bytes for report in self.segments)


def segment_paths(root: Path) -> list[Path]:
    """The spool segments waiting for conversion, oldest first."""
    try:
        names = os.listdir(spool_dir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {spool_dir(root)}: {exc}") from exc
    return [spool_dir(root) / name for name in sorted(names) if name.endswith(SEGMENT_SUFFIX)]


def _contained(directory: Path, table: str) -> set[str]:
    """Names that a compacted file in ``directory`` already holds."""
    from devloop.store.files import read_facts

    names: set[str] = set()
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return names
    except OSError as exc:
        raise StoreError(f"cannot list {directory}: {exc}") from exc
    for name in entries:
        if name.startswith("c-") and name.endswith(".parquet"):
            facts = read_facts(directory / name, table)
            if not isinstance(facts, str):
                names |= facts.sources
    return names


def convert_segment(root: Path, segment: Path) -> SegmentReport:
    """Write a closed segment's rows as Parquet and delete it; safe to repeat after a crash.

    A segment whose records pass their CRC but do not decode is renamed ``*.seg.bad`` and
    reported with a StoreWarning, so one bad file never stops the collector from starting.
    """
    import pyarrow as pa

    from devloop.store.files import conform, split_by_hour, unlink_files, write_atomic
    from devloop.store.schema import TABLES

    segment_id = segment.name.removesuffix(SEGMENT_SUFFIX)
    try:
        contents = read_segment(segment)
    except SpoolCorruptError as exc:
        bad = segment.with_name(segment.name + ".bad")
        try:
            os.replace(segment, bad)
        except OSError as rename_exc:
            raise StoreError(f"cannot set aside {segment}: {rename_exc}") from rename_exc
        warnings.warn(f"set aside spool segment {bad}: {exc}", StoreWarning, stacklevel=2)
        return SegmentReport(segment, {}, (), 0, quarantined=True)
    written: list[Path] = []
    rows: dict[str, int] = {}
    for table, batches in contents.batches.items():
        data = conform(table, pa.Table.from_batches(batches, schema=TABLES[table]))
        rows[table] = data.num_rows
        for partition, part in split_by_hour(data):
            directory = partition_dir(root, table, partition)
            final = directory / f"s-{segment_id}.parquet"
            # Order matters: a compaction renames c-* before deleting s-*, so if final is gone
            # here, the compacted file that swallowed it is already visible below.
            if final.exists() or final.name in _contained(directory, table):
                continue
            write_atomic(table, part, final)
            written.append(final)
    unlink_files([segment])
    if segment_id.startswith(RUN_SEGMENT_PREFIX):  # the run is stored: its journal is done
        forget_journal(root, segment_id.removeprefix(RUN_SEGMENT_PREFIX))
    return SegmentReport(segment, rows, tuple(written), contents.torn_bytes)


def recover_locked(root: Path) -> RecoveryReport:
    """Convert every leftover segment; the caller holds the writer lock."""
    return RecoveryReport(tuple(convert_segment(root, path) for path in segment_paths(root)))


def recover(root: Path | str) -> RecoveryReport:
    """Convert the spool segments a dead writer left behind into Parquet, exactly once.

    Raises StoreLockedError while a writer is alive (its segments are not leftovers).
    """
    root = Path(root)
    with writer_lock(root):
        return recover_locked(root)
