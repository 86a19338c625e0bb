"""Recording a workspace: the collector's ticks into the store, at a fixed rate.

:class:`Recorder` owns one :class:`~devloop.collector.Collector` and the store's single
:class:`~devloop.store.StoreWriter`. Each tick's rows are appended to the spool and flushed
before the next tick starts, so a SIGKILL loses at most the tick in flight.

A recorder runs for months, so it stays small: it never imports pyarrow, DuckDB, polars or
numpy. Spool segments become Parquet, and closed hours are compacted, in short-lived child
processes (``devloop.store.convert``) that the tick loop starts and reaps without waiting.
Segments are five minutes long: a conversion child costs ~0.4 s of CPU (mostly importing
pyarrow), 0.15 % of a core at that rate; readers still see the latest ticks, because the store's
views read the spool tail too.

A full disk does not stop the recorder: the writer holds the ticks the spool refuses in memory,
up to :data:`BACKLOG_SECONDS` of ticks (or ``BACKLOG_BYTES``, see ``devloop.store.writer``),
dropping the oldest beyond that, and retries them, in order, before each new tick. The recorder
says so once on stderr, naming the store and the step that failed, and when the spool takes
everything again it writes a ``disk-full`` event with how long it lasted and how many ticks were
held and dropped.

The wall clock may step (NTP, a suspended VM, someone setting the date); rates never see it
(``cpu_cores`` is a kernel counter's delta over the monotonic clock), and timestamps never go
back within a recording: a step of a second or more between two ticks is written as a
``clock-step`` event; after a step forward the ticks follow the clock (leaving a gap); after a
step back each tick is stamped one interval after the one before until the clock passes the
last stamp again, and every row the recorder writes meanwhile (events, limits) is stamped no
earlier than the last tick. So no hour of the store is written after a later one.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devloop.config.models import Workspace

if TYPE_CHECKING:
    from devloop.config.allocation import Allocation
    from devloop.core.resource_manager import ResourceManager
    from devloop.store.convert import ChildJob
    from devloop.store.runs import PendingRun

logger = logging.getLogger(__name__)

#: How much time of ticks the recorder holds in memory while the disk is full.
BACKLOG_SECONDS = 600.0

#: How far the wall clock must move against the monotonic clock between two ticks to count as a
#: step (NTP steps above 0.128 s; smaller ones only shift the tick grid a little).
CLOCK_STEP_SECONDS = 1.0


@dataclass(frozen=True)
class RecordStatus:
    """Counters shown on the live status line and returned at the end."""

    ticks: int
    processes: int  # processes in the last tick
    rows: int  # samples rows written
    spool_bytes: int  # bytes appended to the spool
    elapsed: float
    source: str


def _start_us(start_ticks: int | None) -> int | None:
    """A start in clock ticks after boot as µs since the epoch, by the boot time every start
    time of this process uses (so it matches the collector's identities)."""
    if start_ticks is None or not sys.platform.startswith("linux"):
        return None
    from devloop.collector.procfs import start_us_of

    return start_us_of(start_ticks)


class Recorder:
    """Samples a workspace's agents into its store until told to stop."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        interval: float | None = None,
        all_processes: bool = False,
        source: str = "auto",
        segment_seconds: float = 300.0,
        retention: float | None = None,
        max_bytes: int | None = None,
        enforce: bool = False,
        profile: str | None = None,
        min_pause: float | None = None,
        ship_to: str | None = None,
        ship_endpoint_url: str | None = None,
    ) -> None:
        """Take the store's lock (StoreLockedError if a collector already records it).

        ``retention`` (seconds) and ``max_bytes`` drop the oldest hours after each hourly
        compaction, as ``devloop workspace compact --retention/--max-size`` does. ``ship_to``
        (a URI, with ``ship_endpoint_url``) ships the compacted hours there after each hourly
        compaction, in the same child, as ``devloop workspace ship`` does.

        With ``enforce``, a :class:`~devloop.core.resource_manager.ResourceManager` checks every
        tick against the limits in force (``profile`` as ``--profile``) and acts as the
        workspace's ``enforcementAction`` says; its events and limit changes go to the store.
        The holder of the store's lock is the workspace's one enforcer, so it first continues
        anything a killed predecessor left stopped.
        """
        from devloop.collector import OTHER_PROJECT, Collector, rules_for
        from devloop.store.writer import StoreWriter

        self.workspace = workspace
        self._write_lock = threading.Lock()
        self._closed = False
        self.interval = interval or workspace.config.global_.resource_limits.check_interval
        # Before the store is opened: a bad profile must leave nothing behind.
        # Without ``enforce`` the manager only observes: it never signals, but it follows the
        # limits in force and writes the live state (usage and admission verdicts) that the
        # dashboard, the exporter and ``devloop run`` read.
        from devloop.core.resource_manager import ResourceManager

        self.manager: ResourceManager | None = ResourceManager(
            workspace, profile=profile, on_event=self._event_row,
            on_limits=self._write_limits_of, min_pause=min_pause, enforce=enforce,
        )  # fmt: skip
        self.enforcing = enforce
        self.writer = StoreWriter(
            workspace.metrics_dir, segment_seconds=segment_seconds, convert_in_child=True,
            backlog_ticks=max(1, math.ceil(BACKLOG_SECONDS / self.interval)),
        )  # fmt: skip
        self._warned_full = False
        try:
            self.collector = Collector(
                rules_for(workspace), all_processes=all_processes, source=source,
                host=self.writer.host,
            )  # fmt: skip
        except BaseException:
            self.writer.close()
            raise
        # A process tagged for a project of another workspace is not ours to record.
        self._projects = {p.name for p in workspace.config.projects}
        if all_processes:
            self._projects.add(OTHER_PROJECT)
        self._ticks = 0
        #: The stamp of the last tick (µs since the epoch): no row is stamped before it.
        self._last_ts_us: int | None = None
        self.retention = retention
        self.max_bytes = max_bytes
        self.ship_to = ship_to
        self.ship_endpoint_url = ship_endpoint_url
        self._compacted_hour = int(time.time() // 3600)
        self._compactor: ChildJob | None = None
        self._rows = 0
        self._bytes = 0
        self._processes = 0
        self._started = time.monotonic()
        self._started_us = self.collector.started_us
        self._held: dict[str, list[float]] = {}  # run id -> [paused, throttled] seconds
        self._write_limits("start")
        self.event("start", message=f"collector started, interval {self.interval:g}s")
        self._check_disk()
        if self.manager is not None:
            self.manager.recover()

    # --- writing -------------------------------------------------------------------------

    def _append(self, table: str, rows: list[Any]) -> None:
        if rows:
            with self._write_lock:  # events may come from other threads (admission, watch)
                if self._closed:
                    logger.debug("recorder closed: %d %s row(s) not written", len(rows), table)
                    return
                self.writer.append(table, rows)

    def _write_limits(self, reason: str) -> None:
        if self.manager is not None:
            self._write_limits_of(self.manager.allocation, reason)
            return
        from devloop.config.allocation import allocate

        self._write_limits_of(allocate(self.workspace), reason)

    def _now_us(self) -> int:
        """The time to stamp a row with: now, but never before the last tick (the wall clock
        may have stepped back)."""
        now = time.time_ns() // 1000
        return now if self._last_ts_us is None else max(now, self._last_ts_us)

    def _write_limits_of(self, allocation: Allocation, reason: str) -> None:
        ts = self._now_us()
        host = self.writer.host
        rows: list[tuple[Any, ...]] = [
            (ts, host, p.name, "", p.cpu, p.memory_bytes, p.priority, allocation.strategy,
             allocation.profile, reason)
            for p in allocation.projects.values()
        ]  # fmt: skip
        rows += [
            (ts, host, a.project, a.agent, a.cpu, a.memory_bytes,
             allocation.projects[a.project].priority, allocation.strategy, allocation.profile,
             reason)
            for a in allocation.agents.values()
        ]  # fmt: skip
        self._append("limits", rows)

    def event(
        self,
        action: str,
        *,
        scope: str = "workspace",
        project: str | None = None,
        agent: str | None = None,
        message: str = "",
        ts_us: int | None = None,
    ) -> None:
        """Append one row to the store's ``events`` table, stamped ``ts_us`` (default: now,
        never before the last tick)."""
        ts = ts_us if ts_us is not None else self._now_us()
        row = (ts, self.writer.host, action, scope, project, agent, None, None, None, None,
               message)  # fmt: skip
        self._append("events", [row])

    def _event_row(self, event: dict[str, Any]) -> None:
        """An enforcement event (the manager's log-line shape) as an ``events`` row."""
        ts = int(event["ts"] * 1_000_000)
        if self._last_ts_us is not None:
            ts = max(ts, self._last_ts_us)
        row = (ts, self.writer.host, event["action"], event["scope"],
               event["project"], event["agent"], event["pids"] or None, event["metric"],
               event["value"], event["limit"], event["message"])  # fmt: skip
        self._append("events", [row])

    def tick(self, now: float | None = None) -> None:
        """Sample once (rows stamped ``now``, default the current time) and make it durable.

        A stamp at or before the last tick's (the wall clock stepped back) becomes the last
        one plus the interval: timestamps never go back within a recording."""
        ts_us = self._now_us() if now is None else round(now * 1_000_000)
        if self._last_ts_us is not None and ts_us <= self._last_ts_us:
            ts_us = self._last_ts_us + max(1, round(self.interval * 1_000_000))
        tick = self.collector.tick(ts_us / 1_000_000)  # exact: µs stamps are below 2**53
        self._last_ts_us = tick.ts_us
        ours = self._projects
        samples = [row for row in tick.samples if row[2] in ours]
        self._append("samples", samples)
        self._append("processes", [row for row in tick.new_processes if row[4] in ours])
        self._append("system", [tick.system])
        if self.manager is not None:
            self.manager.observe(tick)
            # the tick's time: a pause's minimum is whole ticks, not the check's jitter
            self.manager.check(tick.ts_us / 1_000_000)
            self._count_held(tick.ts_us)
        with self._write_lock:
            if not self._closed:
                self.writer.flush()
        self._check_disk()
        self.record_runs(tick.ts_us)
        self._ticks += 1
        self._rows += len(samples)
        self._processes = len(samples)

    def _check_disk(self) -> None:
        """Warn once when the disk fills up; record each outage once the spool takes it all."""
        with self._write_lock:
            full = self.writer.disk_full
            ended = self.writer.pop_outages()
        if full is not None and not self._warned_full:
            self._warned_full = True
            sys.stderr.write(
                f"devloop: disk full, recording into {self.workspace.metrics_dir} continues in "
                f"memory (at most {BACKLOG_SECONDS / 60:g} minutes of ticks) until space "
                f"returns: {full.error}\n"
            )
        for outage in ended:
            self._warned_full = full is not None
            self.event("disk-full", message=(
                f"spool append failed for {outage.seconds or 0.0:.1f}s (disk full): "
                f"{outage.held_ticks} tick(s) held in memory, {outage.dropped_ticks} dropped "
                f"({outage.dropped_rows} rows, the oldest); {outage.error}"
            ))  # fmt: skip

    # --- runs ----------------------------------------------------------------------------

    def _count_held(self, ts_us: int) -> None:
        """Add this tick's interval to the paused or throttled time of each run it saw held."""
        manager = self.manager
        assert manager is not None
        interval = self.collector.last_interval
        for run_id, run in self.collector.active_runs(ts_us).items():
            state = manager.held(run.project, run.agent)
            if state is not None:
                held = self._held.setdefault(run_id, [0.0, 0.0])
                held[state == "throttled"] += interval

    def record_runs(self, ts_us: int | None = None) -> int:
        """Store every run its launcher has finished (or died in) since the last look: one
        ``runs`` row each, and the row of its CPU that no tick saw. Returns how many.

        Called after every tick; ``ts_us`` stamps the tail rows (default: now).
        """
        from devloop.errors import DiskFullError
        from devloop.store import runs as journal

        if self.writer.disk_full is not None:
            return 0  # runs stay in their journals until the spool can take them
        found, unreadable = journal.pending(self.workspace.metrics_dir)
        now_us = time.time_ns() // 1000
        for path in unreadable:  # a launcher killed before it wrote its start
            try:
                if now_us - os.stat(path).st_mtime_ns // 1000 > 60_000_000:
                    os.unlink(path)
            except OSError:
                pass
        stamp = ts_us if ts_us is not None else now_us
        done = 0
        for run in found:
            records = self._run_records(run, stamp)
            with self._write_lock:
                if self._closed:
                    break
                try:
                    self.writer.publish(journal.segment_id(run.start.run_id), records)
                except DiskFullError:
                    break  # the run stays in its journal: the next tick tries again
            journal.forget(run)
            done += 1
        return done

    def _run_records(self, run: PendingRun, ts_us: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
        start, end = run.start, run.end
        start_us = _start_us(end.start_ticks) if end is not None else None
        host = self.writer.host
        ticks = self.collector.finish_run(start.run_id)
        paused, throttled = self._held.pop(start.run_id, (0.0, 0.0))
        records: list[tuple[str, list[tuple[Any, ...]]]] = []
        counted = ticks.cpu_seconds if ticks is not None else 0.0
        if end is not None:
            exact = end.cpu_user_seconds + end.cpu_system_seconds
            whole = ticks.whole if ticks is not None else start.started_us >= self._started_us
            if whole and exact - counted > 0.0005 and start_us is not None:
                name = os.path.basename(start.command[0]) if start.command else None
                row = self.collector.tail_row(ts_us, start.project, start.agent, end.pid,
                                              start_us, start.launcher_pid, name,
                                              exact - counted)  # fmt: skip
                records.append(("samples", [row]))
                if ticks is None or (end.pid, start_us) not in ticks.processes:
                    records.append(("processes", [(
                        ts_us, host, end.pid, start_us, start.project, start.agent,
                        start.launcher_pid, name, " ".join(start.command), start.cwd, None,
                        start.run_id,
                    )]))  # fmt: skip
            ended_us = end.ended_us
        else:
            last = ticks.last_ts_us if ticks is not None else 0
            ended_us = max(last, start.started_us)
        runs_row = (
            start.started_us, host, start.run_id, start.project, start.agent, start.trigger,
            "complete" if end is not None else "incomplete",
            " ".join(start.command), start.cwd,
            end.pid if end is not None else None,
            start_us, start.queued_us, start.started_us, ended_us,
            end.exit_code if end is not None else None,
            end.signal if end is not None else None,
            (start.started_us - start.queued_us) / 1e6, paused, throttled,
            end.cpu_user_seconds if end is not None else None,
            end.cpu_system_seconds if end is not None else None,
            end.max_rss_bytes if end is not None else None,
            counted if ticks is not None else None,
            ticks.ticks if ticks is not None else 0,
            ticks.peak_cores if ticks is not None else None,
            ticks.peak_rss_bytes if ticks is not None else None,
            start.log_path,
        )  # fmt: skip
        records.insert(0, ("runs", [runs_row]))
        return records

    # --- running -------------------------------------------------------------------------

    def status(self) -> RecordStatus:
        return RecordStatus(
            ticks=self._ticks,
            processes=self._processes,
            rows=self._rows,
            spool_bytes=self.writer.bytes_written,
            elapsed=time.monotonic() - self._started,
            source=self.collector.source_name,
        )

    def run(
        self,
        *,
        duration: float | None = None,
        stop: threading.Event | None = None,
        until: Callable[[], bool] | None = None,
        on_tick: Callable[[RecordStatus], None] | None = None,
    ) -> RecordStatus:
        """Tick every ``interval`` seconds until ``duration`` has passed, ``stop`` is set or
        ``until()`` is true.

        Ticks fall on a wall-clock grid (multiples of the interval) and rows carry the scheduled
        time, not the moment the tick ran: timestamps on a grid delta-encode to almost nothing in
        Parquet, and every series of a workspace lines up tick for tick. ``cpu_cores`` is still
        measured over the real interval. Slots missed on a loaded machine are skipped, not
        caught up. The ticks are scheduled on the monotonic clock; a step of the wall clock
        moves the grid with it (see the module doc for what the stamps do).
        """
        stop = stop or threading.Event()
        every = self.interval
        wall0, mono0 = time.time(), time.monotonic()
        slot = math.ceil(wall0 / every)
        if self._ticks == 0:
            self.collector.start_interval_at(mono0 + ((slot - 1) * every - wall0))
        end = mono0 + duration if duration is not None else math.inf
        while not stop.is_set():
            due = mono0 + (slot * every - wall0)
            if due > end:
                break
            if stop.wait(max(due - time.monotonic(), 0.0)):
                break
            mono, wall = time.monotonic(), time.time()
            step = wall - (wall0 + (mono - mono0))
            if abs(step) >= CLOCK_STEP_SECONDS:
                wall0 += step  # the grid follows the clock: this slot is the one just come
                slot = math.floor(wall / every)
            self.tick(now=slot * every)
            if abs(step) >= CLOCK_STEP_SECONDS:
                self._clock_step(step)
            self._maybe_compact()
            if on_tick is not None:
                on_tick(self.status())
            if until is not None and until():
                break
            slot += 1
            behind = math.floor((time.monotonic() - mono0 + wall0) / every)
            slot = max(slot, behind + 1)
        return self.status()

    def _clock_step(self, step: float) -> None:
        """Record a step of the wall clock, stamped as the tick just taken."""
        if step > 0:
            what = f"forward {step:.3f}s: the ticks follow it"
        else:
            what = (
                f"back {-step:.3f}s: each tick is stamped {self.interval:g}s after the one "
                "before until the clock passes the last stamp again"
            )
        logger.warning("the wall clock stepped %s", what)
        self.event("clock-step", message=f"the wall clock stepped {what}", ts_us=self._last_ts_us)

    def _maybe_compact(self) -> None:
        """Compact closed hours once an hour, in a child process the next ticks reap."""
        if self._compactor is not None and self._compactor.poll():
            self._reap_compactor()
        hour = int(time.time() // 3600)
        if hour == self._compacted_hour or self._compactor is not None:
            return
        self._compacted_hour = hour
        if self._ticks <= 1:
            return  # the first tick of a run: leave earlier hours to their own compaction pass
        from devloop.store.convert import ChildJob

        limits = []
        if self.retention is not None:
            limits.append(f"max-age={self.retention}")
        if self.max_bytes is not None:
            limits.append(f"max-bytes={self.max_bytes}")
        if self.ship_to is not None:
            limits.append(f"ship-to={self.ship_to}")
        if self.ship_endpoint_url is not None:
            limits.append(f"ship-endpoint-url={self.ship_endpoint_url}")
        # compaction with the closed hours' rollups, then retention (reports only read them)
        self._compactor = ChildJob("compact", self.workspace.metrics_dir, limits)

    def _reap_compactor(self) -> None:
        compactor, self._compactor = self._compactor, None
        if compactor is None:
            return
        failure = compactor.failure
        if failure is not None:  # a busy maintenance lock, a full disk: try next hour
            logger.warning("compaction skipped: %s", failure)
        for message in compactor.warning_messages():
            logger.warning("compaction: %s", message)

    def close(self) -> None:
        """Write the stop event, convert the open segment to Parquet, release the lock."""
        try:
            if self.manager is not None:
                self.manager.close()  # no agent stays stopped
            if self._compactor is not None:
                self._compactor.wait()
                self._reap_compactor()
            self.event("stop", message=f"collector stopped after {self._ticks} ticks")
        finally:
            try:
                with self._write_lock:
                    self._closed = True  # a late event from another thread is dropped
                    self.writer.close()
            finally:
                self.collector.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def record_baseline(
    workspace_dir: Path | str, *, duration: float, interval: float | None = None
) -> dict[str, Any]:
    """Record every process of the machine for ``duration`` seconds into the workspace's store
    (as ``devloop workspace collect --all`` does), then summarise that stretch (the summary of
    :func:`devloop.analytics.summarise`).

    Run it with no agents running: the summary is what the machine uses without them.
    Raises StoreLockedError when a collector already records the workspace.
    """
    from devloop.analytics import TimeRange, summarise
    from devloop.config import load_workspace
    from devloop.errors import UsageError

    if not duration > 0:
        raise UsageError(f"the duration must be above 0, not {duration:g}s")
    workspace = load_workspace(workspace_dir)
    started = datetime.now(UTC)
    with Recorder(workspace, interval=interval, all_processes=True) as recorder:
        recorder.run(duration=duration)
    ended = datetime.now(UTC) + timedelta(microseconds=1)
    return summarise(workspace_dir, TimeRange(start=started, end=ended))
