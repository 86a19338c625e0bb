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
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devloop.config.models import Workspace

if TYPE_CHECKING:
    from devloop.core.allocation import Allocation
    from devloop.core.resource_manager import ResourceManager
    from devloop.store.convert import ChildJob

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordStatus:
    """Counters shown on the live status line and returned at the end."""

    ticks: int
    processes: int  # processes in the last tick
    rows: int  # samples rows written
    spool_bytes: int  # bytes appended to the spool
    elapsed: float
    source: str


def rules_for(workspace: Workspace) -> list[Any]:
    """Project rules from every enabled agent that has a command: cwd under the project's
    folder and the agent's command in the command line."""
    from devloop.collector import Rule

    rules = []
    for project in workspace.config.enabled_projects:
        agents = workspace.agents.get(project.name)
        if agents is None:
            continue
        folder = workspace.config.project_dir(project)
        for agent in agents.enabled_agents:
            if agent.command:
                rules.append(Rule(project.name, folder, agent.name, " ".join(agent.command)))
    return rules


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
    ) -> None:
        """Take the store's lock (StoreLockedError if a collector already records it).

        ``retention`` (seconds) and ``max_bytes`` drop the oldest hours after each hourly
        compaction, as ``devloop workspace compact --retention/--max-size`` does.

        With ``enforce``, a :class:`~devloop.core.resource_manager.ResourceManager` checks every
        tick against the limits in force (``profile`` as ``--profile``) and acts as the
        workspace's ``enforcementAction`` says; its events and limit changes go to the store.
        The holder of the store's lock is the workspace's one enforcer, so it first continues
        anything a killed predecessor left stopped.
        """
        from devloop.collector import OTHER_PROJECT, Collector
        from devloop.store.writer import StoreWriter

        self.workspace = workspace
        self._write_lock = threading.Lock()
        self._closed = False
        self.interval = interval or workspace.config.global_.resource_limits.check_interval
        # Before the store is opened: a bad profile must leave nothing behind.
        self.manager: ResourceManager | None = None
        if enforce:
            from devloop.core.resource_manager import ResourceManager

            self.manager = ResourceManager(
                workspace, profile=profile, on_event=self._event_row,
                on_limits=self._write_limits_of, min_pause=min_pause,
            )  # fmt: skip
        self.writer = StoreWriter(
            workspace.metrics_dir, segment_seconds=segment_seconds, convert_in_child=True
        )
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
        self.retention = retention
        self.max_bytes = max_bytes
        self._compacted_hour = int(time.time() // 3600)
        self._compactor: ChildJob | None = None
        self._rows = 0
        self._bytes = 0
        self._processes = 0
        self._started = time.monotonic()
        self._write_limits("start")
        self.event("start", message=f"collector started, interval {self.interval:g}s")
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
        from devloop.core.allocation import allocate

        self._write_limits_of(allocate(self.workspace), reason)

    def _write_limits_of(self, allocation: Allocation, reason: str) -> None:
        ts = time.time_ns() // 1000
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
    ) -> None:
        """Append one row to the store's ``events`` table."""
        row = (time.time_ns() // 1000, self.writer.host, action, scope, project, agent, None,
               None, None, None, message)  # fmt: skip
        self._append("events", [row])

    def _event_row(self, event: dict[str, Any]) -> None:
        """An enforcement event (the manager's log-line shape) as an ``events`` row."""
        row = (int(event["ts"] * 1_000_000), self.writer.host, event["action"], event["scope"],
               event["project"], event["agent"], event["pids"] or None, event["metric"],
               event["value"], event["limit"], event["message"])  # fmt: skip
        self._append("events", [row])

    def tick(self, now: float | None = None) -> None:
        """Sample once (rows stamped ``now``, default the current time) and make it durable."""
        tick = self.collector.tick(now)
        ours = self._projects
        samples = [row for row in tick.samples if row[2] in ours]
        self._append("samples", samples)
        self._append("processes", [row for row in tick.new_processes if row[4] in ours])
        self._append("system", [tick.system])
        if self.manager is not None:
            self.manager.observe(tick)
            self.manager.check()
        with self._write_lock:
            if not self._closed:
                self.writer.flush()
        self._ticks += 1
        self._rows += len(samples)
        self._processes = len(samples)

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
        caught up.
        """
        stop = stop or threading.Event()
        every = self.interval
        wall0, mono0 = time.time(), time.monotonic()
        slot = math.ceil(wall0 / every)
        end = mono0 + duration if duration is not None else math.inf
        while not stop.is_set():
            due = mono0 + (slot * every - wall0)
            if due > end:
                break
            if stop.wait(max(due - time.monotonic(), 0.0)):
                break
            self.tick(now=slot * every)
            self._maybe_compact()
            if on_tick is not None:
                on_tick(self.status())
            if until is not None and until():
                break
            slot += 1
            behind = math.floor((time.monotonic() - mono0 + wall0) / every)
            slot = max(slot, behind + 1)
        return self.status()

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
