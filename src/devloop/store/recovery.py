"""Turning closed spool segments into Parquet, exactly once, whenever the last run died.

Conversion of segment ``<id>`` writes, per table and UTC hour it holds, the file
``<table>/date=D/hour=H/s-<id>.parquet`` (temp, fsync, rename, fsync dir), then deletes the
segment. Why a SIGKILL at any moment yields no duplicate and no lost row:

1. During an append: the record in flight is torn; reading stops before it (CRC / length), the
   earlier records are intact because the file is append-only. Only that append is lost.
   (Damaged records, bytes changed later, are another matter: see "Damage" below.)
2. During conversion, before a rename: the temp file is invisible (dot name) and is simply
   rewritten next time; the segment still exists, so nothing is lost.
3. Between renames, or after the last rename but before the segment is deleted: the segment is
   converted again. Its bytes have not changed, so the same files come out under the same
   names; a file already present is skipped, so each row exists once.
4. A file already present may since have been compacted (renamed into ``c-*`` and deleted):
   its name is then in that compacted file's ``devloop.sources``, and it is skipped too.
5. After the segment is deleted: nothing left to do.

Recovery runs under the writer lock (a live collector's segments are not leftovers).

Damage: a segment with damaged records (spool.py skips them and resynchronises on the next
valid record) is converted like any other, every intact record included, plus one ``events``
row (action ``spool-corrupt``) saying which bytes and how many records were skipped; a
StoreWarning says the same. The segment is then kept as ``<id>.seg.bad`` instead of deleted.
The event is part of the segment's own output (``s-<id>.parquet`` of ``events``) and is stamped
with the segment's last intact tick, so a conversion repeated after a crash writes the same
files under the same names and the event exists once, like every other row.

pyarrow is imported by :func:`convert_segment` when it runs, not with this module: the collector
imports the reports from here, and converts in a child process (convert.py) so that it never
loads pyarrow itself. The spool's listing (:func:`~devloop.store.layout.segment_paths`) is in
the layout, so the reports reading the spool need none of this.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.errors import SpoolCorruptError, StoreError
from devloop.store.layout import (
    SEGMENT_SUFFIX,
    StoreWarning,
    fsync_dir,
    partition_dir,
    segment_paths,
)
from devloop.store.lock import writer_lock
from devloop.store.runs import RUN_SEGMENT_PREFIX, forget_journal
from devloop.store.spool import SegmentContents, decode_rows, read_segment

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class SegmentReport:
    """What converting one segment did."""

    segment: Path
    rows: dict[str, int]  # rows per table found in the segment
    files_written: tuple[Path, ...]  # fewer than the partitions when a crash had written some
    torn_bytes: int
    #: Set aside as ``<id>.seg.bad``: it could not be decoded (no rows), or it had damaged
    #: records (skipped: ``skipped_records`` records, ``skipped_bytes`` bytes; the rest is in).
    quarantined: bool = False
    skipped_bytes: int = 0
    skipped_records: int = 0


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

    @property
    def skipped_records(self) -> int:
        """Damaged records skipped (the rest of their segments was recovered)."""
        return sum(report.skipped_records for report in self.segments)

    @property
    def skipped_bytes(self) -> int:
        """Bytes of damaged records skipped."""
        return sum(report.skipped_bytes for report in self.segments)


def _contained(directory: Path, table: str) -> set[str]:
    """Names that a compacted file in ``directory`` already holds."""
    from devloop.store.layout import read_facts

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
    One with damaged records is converted without them, with a StoreWarning and a
    ``spool-corrupt`` event, and kept as ``*.seg.bad`` (see the module doc).
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
    rows = {table: contents.rows(table) for table in contents.batches}
    damage = _describe_damage(segment, contents) if contents.damaged else None  # the message
    if damage is not None:
        contents.batches.setdefault("events", []).append(_damage_event(segment, contents, damage))
    for table, batches in contents.batches.items():
        data = conform(table, pa.Table.from_batches(batches, schema=TABLES[table]))
        for partition, part in split_by_hour(data):
            directory = partition_dir(root, table, partition)
            final = directory / f"s-{segment_id}.parquet"
            # Order matters: a compaction renames c-* before deleting s-*, so if final is gone
            # here, the compacted file that swallowed it is already visible below.
            if final.exists() or final.name in _contained(directory, table):
                continue
            write_atomic(table, part, final)
            written.append(final)
    if damage is not None:
        _set_aside(segment)
        warnings.warn(damage, StoreWarning, stacklevel=2)
    else:
        unlink_files([segment])
    if segment_id.startswith(RUN_SEGMENT_PREFIX):  # the run is stored: its journal is done
        forget_journal(root, segment_id.removeprefix(RUN_SEGMENT_PREFIX))
    return SegmentReport(
        segment, rows, tuple(written), contents.torn_bytes,
        quarantined=damage is not None, skipped_bytes=contents.skipped_bytes,
        skipped_records=contents.skipped_records,
    )  # fmt: skip


def _describe_damage(segment: Path, contents: SegmentContents) -> str:
    """The warning and event message for a segment with damaged records."""
    count = contents.skipped_records
    ranges = ", ".join(f"{damage.start}-{damage.end}" for damage in contents.damaged)
    return (
        f"spool segment {segment}: skipped {count} damaged record{'s' if count != 1 else ''}"
        f" (bytes {ranges}: {contents.skipped_bytes} bytes), recovered the"
        f" {contents.records} intact record{'s' if contents.records != 1 else ''};"
        f" the segment is kept as {segment.name}.bad"
    )


def _damage_event(segment: Path, contents: SegmentContents, message: str) -> pa.RecordBatch:
    """The ``spool-corrupt`` events row, the same whenever the segment is converted: stamped
    with the segment's last intact tick (or, with none, the time in its name)."""
    import pyarrow.compute as pc

    batches = [batch for parts in contents.batches.values() for batch in parts if batch.num_rows]
    if batches:
        ts = max(pc.max(batch.column("ts").cast("int64")).as_py() for batch in batches)
        host = batches[-1].column("host")[0].as_py()
    else:
        stamp = segment.name.partition("-")[0]
        ts = int(stamp) // 1000 if stamp.isdigit() else segment.stat().st_mtime_ns // 1000
        host = socket.gethostname()
    row = (ts, host, "spool-corrupt", "workspace", None, None, None, None, None, None, message)
    return decode_rows("events", [row])


def _set_aside(segment: Path) -> None:
    """Rename a converted segment with damaged records to ``*.seg.bad``, kept for a look."""
    try:
        os.replace(segment, segment.with_name(segment.name + ".bad"))
        fsync_dir(segment.parent)
    except OSError as exc:
        raise StoreError(f"cannot set aside {segment}: {exc}") from exc


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
