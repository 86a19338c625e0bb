"""Writing into the store: the collector's StoreWriter (spool, then Parquet).

StoreWriter is what the collector holds for its whole life::

    with StoreWriter(root, segment_seconds=60) as writer:   # locks, recovers leftovers
        writer.append("samples", rows)    # tuples in columns.SAMPLES order
        writer.append("system", rows)
        writer.flush()                    # once per tick: the tick is now durable
    # close(): the open segment becomes Parquet and the lock is freed

Timestamps (``ts``, ``start_time``) are int microseconds since the epoch, UTC. One segment holds
every table, so a tick costs one ``write`` per table and a single ``fdatasync``. A segment is
closed and converted to Parquet every ``segment_seconds`` (checked on append and flush) and on
close; ``recovery.py`` explains why a SIGKILL at any moment loses at most the tick in flight.

With ``convert_in_child=True`` (the collector) every conversion, recovery at start included, runs
in a short-lived child process (convert.py), so this process never imports pyarrow: a roll-over
starts the child and returns, later flushes reap it, at most one runs at a time, and segments
closed meanwhile go to the next one. ``close()`` waits for the conversions. Otherwise
conversions run in-process, which is simpler for tests and short-lived writers.

This module imports nothing heavy. Not thread-safe: one thread appends. Bulk writes straight to
Parquet are :func:`devloop.store.files.write_table`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devloop.errors import StoreError
from devloop.store.layout import (
    SEGMENT_SUFFIX,
    StoreWarning,
    check_table,
    fsync_dir,
    new_id,
    spool_dir,
)
from devloop.store.lock import writer_lock
from devloop.store.recovery import (
    RecoveryReport,
    SegmentReport,
    convert_segment,
    recover_locked,
    segment_paths,
)
from devloop.store.spool import SegmentWriter

if TYPE_CHECKING:
    from devloop.store.convert import ChildJob

logger = logging.getLogger("devloop.store")


class StoreWriter:
    """The single writer of a store root: appends ticks to the spool and rolls them to Parquet."""

    def __init__(
        self,
        root: Path | str,
        *,
        host: str | None = None,
        segment_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        convert_in_child: bool = False,
    ) -> None:
        """Take the store's lock and convert segments a previous run left behind.

        ``host`` names this machine (default: its host name) for callers that need it;
        ``clock`` is injectable so tests can roll segments without waiting;
        ``convert_in_child`` keeps pyarrow out of this process (see the module doc).
        Raises StoreLockedError if another writer holds ``root``.
        """
        if segment_seconds <= 0:
            raise StoreError(f"segment_seconds must be positive, not {segment_seconds}")
        self.root = Path(root)
        self.host = host or socket.gethostname()
        self.segment_seconds = segment_seconds
        self.convert_in_child = convert_in_child
        self._clock = clock
        self._segment: SegmentWriter | None = None
        self._opened_at = 0.0
        #: The last segments this writer rolled to Parquet, oldest first (bounded: it runs for
        #: months); ``segments_converted`` counts them all.
        self.converted: deque[SegmentReport] = deque(maxlen=64)
        self.segments_converted = 0
        self._rolled_bytes = 0
        self._child: ChildJob | None = None
        self._waiting = False  # closed segments wait for a conversion child
        self._lock = writer_lock(self.root)
        try:
            try:
                spool_dir(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {spool_dir(self.root)}: {exc}") from exc
            self.recovered: RecoveryReport = self._recover()
        except BaseException:
            self._lock.release()
            raise

    @property
    def bytes_written(self) -> int:
        """Spool bytes this writer has appended (for status lines)."""
        return self._rolled_bytes + (self._segment.size if self._segment is not None else 0)

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return not self._lock.held

    def publish(
        self, segment_id: str, records: Sequence[tuple[str, Sequence[Sequence[Any]]]]
    ) -> bool:
        """Write ``records`` ((table, rows) pairs) as the closed segment ``<segment_id>.seg``,
        at most once: False when a segment of that name is already in the spool.

        For rows that must be stored exactly once under a name of their own (a run's row, see
        :mod:`devloop.store.runs`): the segment is written to a temp name, synced, then linked
        to its final name, which fails if it exists. Converting it to Parquet keeps the name
        (``s-<segment_id>.parquet``), so a converted segment published again is skipped there
        too. It is converted with the next roll-over, or at the next start.
        """
        self._check_open()
        for table, _rows in records:
            check_table(table)
        directory = spool_dir(self.root)
        final = directory / f"{segment_id}{SEGMENT_SUFFIX}"
        if final.exists():
            return False
        temp = directory / f".{segment_id}{SEGMENT_SUFFIX}.tmp"
        temp.unlink(missing_ok=True)  # left by a crash: rewrite it
        segment = SegmentWriter(temp)
        try:
            for table, rows in records:
                segment.append(table, rows)
        finally:
            segment.close()
        try:
            os.link(temp, final)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot publish spool segment {final}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)
        try:
            fsync_dir(directory)
        except OSError as exc:
            raise StoreError(f"cannot sync {directory}: {exc}") from exc
        return True

    @property
    def converting(self) -> bool:
        """Whether a conversion child is running (child mode)."""
        return self._child is not None

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
        """Make everything appended so far durable (fdatasync); call it once per tick.

        In child mode this is also where a finished conversion child is reaped and the next
        one started."""
        self._check_open()
        if self._segment is not None:
            self._segment.sync()
        self._maybe_roll()
        if self.convert_in_child:
            self._service_child()

    def roll(self) -> SegmentReport | None:
        """Close the open segment now and convert it to Parquet; None if none was open.

        In child mode the conversion runs in the background and this returns None; its report
        lands in ``converted`` when a later flush (or :meth:`wait_for_conversions`) reaps it.
        """
        self._check_open()
        segment = self._close_segment()
        if segment is None:
            return None
        if self.convert_in_child:
            self._waiting = True
            self._service_child()
            return None
        report = convert_segment(self.root, segment.path)
        self._record(report)
        self._convert_published()
        return report

    def _convert_published(self) -> None:
        """In-process mode: convert the segments :meth:`publish` wrote since the last roll."""
        for path in segment_paths(self.root):
            self._record(convert_segment(self.root, path))

    def wait_for_conversions(self) -> None:
        """Child mode: block until every closed segment is converted (the open one stays open).

        A failed child's segments are retried once here; raises StoreError if that fails too
        (they stay in the spool for the next roll-over, close() or start).
        """
        self._check_open()
        if self._child is not None:
            if self._reap(self._child, wait=True, raise_failure=False) is None:
                self._waiting = True  # what the failed child left is retried right below
        if self._waiting:
            self._waiting = False
            exclude = self._segment.path if self._segment is not None else None
            paths = [path for path in segment_paths(self.root) if path != exclude]
            if paths:
                self._reap(self._start_child(paths), wait=True, raise_failure=True)

    def close(self) -> None:
        """Convert the open segment to Parquet and free the lock (idempotent)."""
        if self.closed:
            return
        try:
            if self.convert_in_child:
                self._close_segment()
                self._waiting = True  # also retries what a failed child left behind
                self.wait_for_conversions()
            else:
                self.roll()
                self._convert_published()
        finally:
            self._lock.release()

    # -- internals --------------------------------------------------------------------------

    def _recover(self) -> RecoveryReport:
        if not self.convert_in_child:
            return recover_locked(self.root)
        leftovers = segment_paths(self.root)
        if not leftovers:
            return RecoveryReport()
        child = self._start_child(leftovers)
        reports = self._reap(child, wait=True, raise_failure=True, record=False)
        return RecoveryReport(tuple(reports or ()))

    def _close_segment(self) -> SegmentWriter | None:
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()
            self._rolled_bytes += segment.size
        return segment

    def _service_child(self) -> None:
        """Reap a finished child; start one for the closed segments if none runs."""
        if self._child is not None:
            if not self._child.poll():
                return
            self._reap(self._child, wait=False, raise_failure=False)
        if self._waiting:
            self._waiting = False
            # Every closed segment: the one just rolled, and any a failed child left behind.
            exclude = self._segment.path if self._segment is not None else None
            paths = [path for path in segment_paths(self.root) if path != exclude]
            if paths:
                try:
                    self._child = self._start_child(paths)
                except StoreError as exc:  # no memory or pids left: keep spooling, retry later
                    logger.warning("%s; the next roll-over tries again", exc)

    def _start_child(self, paths: list[Path]) -> ChildJob:
        from devloop.store.convert import ChildJob

        # The child keeps a copy of the lock: no other writer may convert these segments while
        # it runs, even should this process die first.
        return ChildJob("segments", self.root, paths, keep_fds=[self._lock.fileno()])

    def _reap(
        self, child: ChildJob, *, wait: bool, raise_failure: bool, record: bool = True
    ) -> list[SegmentReport] | None:
        """Collect a child's reports and warnings; None if it failed (and raise_failure is off)."""
        if wait:
            child.wait()
        if child is self._child:
            self._child = None
        reports = child.reports()
        if record:
            for report in reports:
                self._record(report)
        for message in child.warning_messages():
            warnings.warn(message, StoreWarning, stacklevel=3)
        failure = child.failure
        if failure is not None:
            if raise_failure:
                raise StoreError(f"converting the spool of {self.root}: {failure}")
            # The segments stay in the spool; the next roll-over (or close, or start) retries.
            logger.warning("converting the spool of %s: %s", self.root, failure)
            return None
        return reports

    def _record(self, report: SegmentReport) -> None:
        self.converted.append(report)
        self.segments_converted += 1

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
