"""Writing into the store: the collector's StoreWriter (spool, then Parquet) and bulk writes.

StoreWriter is what the collector holds for its whole life::

    with StoreWriter(root, segment_seconds=60) as writer:   # locks, recovers leftovers
        writer.append("samples", rows)    # tuples in schema.SAMPLES column order
        writer.append("system", rows)
        writer.flush()                    # once per tick: the tick is now durable
    # close(): the open segment becomes Parquet and the lock is freed

Timestamps (``ts``, ``start_time``) are int microseconds since the epoch, UTC. One segment holds
every table, so a tick costs one ``write`` per table and a single ``fdatasync``. A segment is
closed and converted to Parquet every ``segment_seconds`` (checked on append and flush) and on
close; ``recovery.py`` explains why a SIGKILL at any moment loses at most the tick in flight.

Not thread-safe: one thread appends.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa

from devloop.errors import StoreError
from devloop.store.files import conform, split_by_hour, write_atomic
from devloop.store.layout import SEGMENT_SUFFIX, check_table, new_id, partition_dir, spool_dir
from devloop.store.lock import writer_lock
from devloop.store.recovery import RecoveryReport, SegmentReport, convert_segment, recover_locked
from devloop.store.spool import SegmentWriter


class StoreWriter:
    """The single writer of a store root: appends ticks to the spool and rolls them to Parquet."""

    def __init__(
        self,
        root: Path | str,
        *,
        host: str | None = None,
        segment_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Take the store's lock and convert segments a previous run left behind.

        ``host`` names this machine (default: its host name) for callers that need it;
        ``clock`` is injectable so tests can roll segments without waiting.
        Raises StoreLockedError if another writer holds ``root``.
        """
        if segment_seconds <= 0:
            raise StoreError(f"segment_seconds must be positive, not {segment_seconds}")
        self.root = Path(root)
        self.host = host or socket.gethostname()
        self.segment_seconds = segment_seconds
        self._clock = clock
        self._lock = writer_lock(self.root)
        try:
            try:
                spool_dir(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {spool_dir(self.root)}: {exc}") from exc
            self.recovered: RecoveryReport = recover_locked(self.root)
        except BaseException:
            self._lock.release()
            raise
        self._segment: SegmentWriter | None = None
        self._opened_at = 0.0
        #: The last segments this writer rolled to Parquet, oldest first (bounded: it runs for
        #: months); ``segments_converted`` counts them all.
        self.converted: deque[SegmentReport] = deque(maxlen=64)
        self.segments_converted = 0
        self._rolled_bytes = 0

    @property
    def bytes_written(self) -> int:
        """Spool bytes this writer has appended (for status lines)."""
        return self._rolled_bytes + (self._segment.size if self._segment is not None else 0)

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return not self._lock.held

    def append(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Append ``rows`` of ``table`` to the spool (in the OS page cache: survives SIGKILL)."""
        if not rows:
            return
        self._check_open()
        check_table(table)
        self._maybe_roll()
        if self._segment is None:
            self._segment = SegmentWriter(spool_dir(self.root) / f"{new_id()}{SEGMENT_SUFFIX}")
            self._opened_at = self._clock()
        self._segment.append(table, rows)

    def flush(self) -> None:
        """Make everything appended so far durable (fdatasync); call it once per tick."""
        self._check_open()
        if self._segment is not None:
            self._segment.sync()
        self._maybe_roll()

    def roll(self) -> SegmentReport | None:
        """Close the open segment now and convert it to Parquet; None if none was open."""
        self._check_open()
        segment, self._segment = self._segment, None
        if segment is None:
            return None
        segment.close()
        self._rolled_bytes += segment.size
        report = convert_segment(self.root, segment.path)
        self.converted.append(report)
        self.segments_converted += 1
        return report

    def close(self) -> None:
        """Convert the open segment to Parquet and free the lock (idempotent)."""
        if self.closed:
            return
        try:
            self.roll()
        finally:
            self._lock.release()

    def _maybe_roll(self) -> None:
        if self._segment is not None and self._clock() - self._opened_at >= self.segment_seconds:
            self.roll()

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the store writer of {self.root} is closed")

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def write_table(root: Path | str, table_name: str, data: pa.Table) -> list[Path]:
    """Write an Arrow table straight to final Parquet files, one per UTC hour it covers.

    For bulk and synthetic rows (the simulator) and for the store's own events. Columns are
    matched by name and cast to the schema (missing nullable columns become null). Each file is
    written atomically as ``w-<id>.parquet``; no lock is needed, a new name never collides.
    Returns the files written.
    """
    check_table(table_name)
    root = Path(root)
    conformed = conform(table_name, data)
    stem = new_id()
    written: list[Path] = []
    for partition, part in split_by_hour(conformed):
        final = partition_dir(root, table_name, partition) / f"w-{stem}.parquet"
        write_atomic(table_name, part, final)
        written.append(final)
    return written
