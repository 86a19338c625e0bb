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

A full disk (ENOSPC, or EDQUOT) does not stop the writer. A record the spool cannot take is
held in memory, with every record after it (so the store stays in order), and each flush first
retries the held records, oldest first; when they are all written the outage ends. The backlog
is bounded by ``backlog_ticks`` ticks (flushes) and ``backlog_bytes`` encoded bytes, by default
:data:`BACKLOG_TICKS` and :data:`BACKLOG_BYTES`; beyond either the oldest ticks are dropped and
counted. :attr:`StoreWriter.disk_full` is the outage in progress and
:meth:`StoreWriter.pop_outages` the ones that ended, for the caller to warn and to record.
A conversion that fails for want of space leaves its segments in the spool for the next
roll-over or start, as any failed conversion does; one that fails at start (its child killed,
the disk full) does not stop the start.

This module imports nothing heavy. Not thread-safe: one thread appends. Bulk writes straight to
Parquet are :func:`devloop.store.files.write_table`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import DiskFullError, StoreError
from devloop.store.layout import (
    SEGMENT_SUFFIX,
    StoreWarning,
    check_table,
    fsync_dir,
    new_id,
    segment_paths,
    spool_dir,
)
from devloop.store.lock import writer_lock
from devloop.store.recovery import (
    RecoveryReport,
    SegmentReport,
    convert_segment,
    recover_locked,
)
from devloop.store.spool import SegmentWriter, encode_record

if TYPE_CHECKING:
    from devloop.store.convert import ChildJob

logger = logging.getLogger("devloop.store")

#: Ticks held in memory at most while the disk is full: ten minutes at one tick a second (the
#: Recorder sizes it from its interval to ten minutes of ticks).
BACKLOG_TICKS: Final = 600
#: Encoded bytes held in memory at most while the disk is full (a tick of 200 processes is
#: about 20 kB, so the tick bound is normally the one reached first).
BACKLOG_BYTES: Final = 16 * 1024 * 1024

#: How a conversion child reports a full disk (the text of the OSError it met).
_FULL_TEXTS: Final = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))


@dataclass(frozen=True)
class DiskFull:
    """One stretch of time during which the spool could not be written (disk or quota full)."""

    error: str  # the first failure: the step (spool append, create or sync) and the segment
    started: float  # on the writer's clock
    ended: float | None  # None while it lasts
    held_ticks: int  # the most ticks held in memory at once
    dropped_ticks: int  # the oldest ticks dropped beyond the bound: lost
    dropped_rows: int

    @property
    def seconds(self) -> float | None:
        """How long it lasted (None while it lasts)."""
        return None if self.ended is None else self.ended - self.started


class Backlog:
    """Records the spool could not take, oldest first, grouped by tick, within a bound.

    Pure bookkeeping, no I/O: the writer holds records here and takes them back in order."""

    def __init__(self, max_ticks: int, max_bytes: int) -> None:
        if max_ticks < 1 or max_bytes < 1:
            raise StoreError(f"backlog bounds must be positive, not {max_ticks}, {max_bytes}")
        self.max_ticks = max_ticks
        self.max_bytes = max_bytes
        self._ticks: deque[deque[tuple[bytes, int]]] = deque()  # closed ticks, oldest first
        self._open: deque[tuple[bytes, int]] = deque()  # records since the last end_tick
        self.bytes = 0
        self.most_ticks = 0
        self.dropped_ticks = 0
        self.dropped_rows = 0

    def __len__(self) -> int:
        """Records held."""
        return sum(len(tick) for tick in self._ticks) + len(self._open)

    @property
    def ticks(self) -> int:
        """Ticks held, the one being appended included."""
        return len(self._ticks) + (1 if self._open else 0)

    def hold(self, record: bytes, rows: int) -> None:
        """Hold one record of the current tick."""
        self._open.append((record, rows))
        self.bytes += len(record)

    def end_tick(self) -> None:
        """Close the current tick, then drop the oldest ticks beyond the bound."""
        if self._open:
            self._ticks.append(self._open)
            self._open = deque()
        while len(self._ticks) > self.max_ticks or (
            self.bytes > self.max_bytes and len(self._ticks) > 1
        ):
            dropped = self._ticks.popleft()
            self.bytes -= sum(len(record) for record, _rows in dropped)
            self.dropped_ticks += 1
            self.dropped_rows += sum(rows for _record, rows in dropped)
        self.most_ticks = max(self.most_ticks, len(self._ticks))

    def first(self) -> tuple[bytes, int] | None:
        """The oldest record held, or None."""
        while self._ticks and not self._ticks[0]:
            self._ticks.popleft()
        if self._ticks:
            return self._ticks[0][0]
        return self._open[0] if self._open else None

    def pop_first(self) -> None:
        """Forget the oldest record (it was written)."""
        tick = self._ticks[0] if self._ticks and self._ticks[0] else self._open
        record, _rows = tick.popleft()
        self.bytes -= len(record)
        if self._ticks and not self._ticks[0]:
            self._ticks.popleft()

    def reset_counts(self) -> None:
        """Start counting a new outage."""
        self.most_ticks = self.dropped_ticks = self.dropped_rows = 0


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
        backlog_ticks: int = BACKLOG_TICKS,
        backlog_bytes: int = BACKLOG_BYTES,
    ) -> None:
        """Take the store's lock and convert segments a previous run left behind.

        ``host`` names this machine (default: its host name) for callers that need it;
        ``clock`` is injectable so tests can roll segments without waiting;
        ``convert_in_child`` keeps pyarrow out of this process (see the module doc);
        ``backlog_ticks`` and ``backlog_bytes`` bound what a full disk holds in memory.
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
        self._backlog = Backlog(backlog_ticks, backlog_bytes)
        self._full: tuple[str, float] | None = None  # the outage in progress: (error, since)
        self._ended: list[DiskFull] = []  # outages over, not yet popped
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
        record = encode_record(table, rows)
        if len(self._backlog):  # the disk is full: behind what is already held, in order
            self._backlog.hold(record, len(rows))
            return
        try:
            self._write(record, len(rows))
        except DiskFullError as exc:
            self._disk_full(exc)
            self._backlog.hold(record, len(rows))

    @property
    def disk_full(self) -> DiskFull | None:
        """The disk-full outage in progress (the spool cannot be written), or None."""
        if self._full is None:
            return None
        return self._outage(ended=None)

    @property
    def held_ticks(self) -> int:
        """Ticks held in memory because the disk is full."""
        return self._backlog.ticks

    def pop_outages(self) -> list[DiskFull]:
        """The disk-full outages that ended since the last call, oldest first."""
        ended, self._ended = self._ended, []
        return ended

    def flush(self) -> None:
        """Make everything appended so far durable (fdatasync); call it once per tick.

        In child mode this is also where a finished conversion child is reaped and the next
        one started."""
        self._check_open()
        self._write_backlog()  # before bounding it: this tick may be the one the disk takes
        self._backlog.end_tick()
        if self._segment is not None:
            try:
                self._segment.sync()
            except DiskFullError as exc:
                self._disk_full(exc)
        if self._full is not None and not len(self._backlog):
            self._ended.append(self._outage(ended=self._clock()))
            self._full = None
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

        A failed child's segments are retried once here; raises StoreError if that fails too,
        unless the disk is full (they stay in the spool for the next roll-over, close() or
        start either way).
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
                self._reap_unless_full(self._start_child(paths))

    def close(self) -> None:
        """Convert the open segment to Parquet and free the lock (idempotent)."""
        if self.closed:
            return
        try:
            self._write_backlog()
            if len(self._backlog):
                logger.warning(
                    "%s: %d tick(s) held in memory are lost: %s",
                    self.root, self._backlog.ticks, self._full[0] if self._full else "disk full",
                )  # fmt: skip
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

    def _write(self, record: bytes, rows: int) -> None:
        """Append one encoded record to the open segment (opening one if needed)."""
        self._maybe_roll()
        if self._segment is None:
            self._segment = SegmentWriter(spool_dir(self.root) / f"{new_id()}{SEGMENT_SUFFIX}")
            self._opened_at = self._clock()
        self._segment.append_record(record, rows)

    def _write_backlog(self) -> None:
        """Append the held records, oldest first, until the disk refuses one."""
        while (held := self._backlog.first()) is not None:
            try:
                self._write(*held)
            except DiskFullError:
                return
            self._backlog.pop_first()

    def _disk_full(self, exc: DiskFullError) -> None:
        if self._full is None:
            self._full = (str(exc), self._clock())
            self._backlog.reset_counts()
            logger.debug("disk full, holding ticks in memory: %s", exc)

    def _outage(self, *, ended: float | None) -> DiskFull:
        assert self._full is not None
        error, started = self._full
        backlog = self._backlog
        return DiskFull(
            error=error,
            started=started,
            ended=ended,
            held_ticks=max(backlog.most_ticks, backlog.ticks),
            dropped_ticks=backlog.dropped_ticks,
            dropped_rows=backlog.dropped_rows,
        )

    def _recover(self) -> RecoveryReport:
        if not self.convert_in_child:
            return recover_locked(self.root)
        leftovers = segment_paths(self.root)
        if not leftovers:
            return RecoveryReport()
        # Neither a full disk nor a conversion child that died (the OOM killer, a kill -9)
        # may keep the collector, and so the enforcer, from starting: the segments stay in the
        # spool (logged) and the next flush starts a child for them again.
        reports = self._reap(self._start_child(leftovers), wait=True, raise_failure=False,
                             record=False)  # fmt: skip
        if reports is None:
            self._waiting = True
        return RecoveryReport(tuple(reports or ()))

    def _reap_unless_full(self, child: ChildJob) -> list[SegmentReport]:
        """Wait for ``child``; raise StoreError if it failed, unless for want of space (then
        its segments stay in the spool, logged, for the next roll-over, close or start)."""
        child.wait()
        failure = child.failure
        full = failure is not None and any(text in failure for text in _FULL_TEXTS)
        if full:
            self._waiting = True
        return self._reap(child, wait=True, raise_failure=not full) or []

    def _close_segment(self) -> SegmentWriter | None:
        segment, self._segment = self._segment, None
        if segment is not None:
            try:
                segment.close()
            except DiskFullError as exc:  # what it holds was written: convert it all the same
                self._disk_full(exc)
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
