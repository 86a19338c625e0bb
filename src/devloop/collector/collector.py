"""The sampling loop's one step: scan processes, attribute them, account their CPU.

Per tick the collector lists the pids (one directory listing on Linux), re-reads only the
processes it records (those attributed to an agent) in full, and gives every other known
process a cheap liveness check (one ``pread`` of its kept-open stat file) that also notices an
exec, after which the process is judged again (``sh -c`` becoming ``pytest``). New pids are
identified once and attributed once per identity ``(pid, start_us)``.

CPU accounting
--------------
``cpu_cores`` of a row is the CPU the process used since the previous tick, divided by the
wall time in between, computed from the kernel's cumulative CPU-time counters (never from a
blocking ``cpu_percent(interval)``):

* own CPU: the delta of ``utime + stime`` (``cpu_seconds`` holds the cumulative value);
* a process that appeared since the previous tick spent its whole CPU time inside the
  interval, so its first row counts all of it: a short-lived agent is not lost;
* a process already running when it is first seen (collector start) gets ``None`` on its
  first row: the interval its CPU was spent in is unknown;
* CPU of children that exit between two ticks is not lost either (the approach of netdata's
  apps.plugin): when the parent reaps a child the kernel adds the child's whole CPU time,
  including the child's own reaped descendants, to the parent's ``cutime + cstime``, and the
  collector credits that delta to the parent's row. A child the collector had sampled itself
  was already counted up to its last sample, so when it vanishes its cumulative
  ``own + children`` at that sample becomes a *debt* of the parent, subtracted from the
  parent's children delta: only the unseen remainder (the child's CPU after our last look) is
  credited. The reap may land after the parent was read (late, on a loaded machine), so unpaid
  debt carries over for at least two ticks and five seconds, then lapses (a parent that ignores
  SIGCHLD never gets the child's times added, and an old debt must not eat later children's
  CPU). A vanished process hands its own unpaid debt on with its counted CPU, and vanished
  processes are dropped children first, so a grandchild is not counted twice either.

So the sum of ``cpu_cores`` over an agent's rows is the agent's CPU, children included, while
``cpu_seconds`` stays the process's own cumulative time.

Runs
----
A process started by devloop carries ``DEVLOOP_RUN_ID`` (inherited like the tags). Per run the
collector keeps what its ticks saw (:class:`RunTicks`: CPU counted, ticks, the peak per-tick sum
of cores and of RSS). The run's root is reaped by its launcher, which devloop does not record,
so the CPU the root tree used after its last tick reaches no row; the launcher's exact total
(``wait4``) minus what the ticks counted is that tail, and the recorder stores it as one more
row (:meth:`Collector.tail_row`), so an agent's rows add up to its runs however short they are.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from devloop.collector.attribution import Attribution, Attributor
from devloop.collector.model import (
    Identity,
    ProcessRow,
    Reading,
    Rule,
    SampleRow,
    Source,
    SystemReading,
    SystemRow,
    Tick,
)
from devloop.errors import CollectorError, UsageError

#: An unpaid child-CPU debt survives at least this many ticks and this many seconds.
DEBT_TICKS = 2
DEBT_SECONDS = 5.0
_EPSILON = 1e-6  # CPU times are multiples of 1/CLK_TCK; floats need a little slack
_TASK_COMM_LEN = 15  # the kernel truncates process names to 15 bytes
#: What the ticks saw of a run is forgotten this long after its last process was seen, if its
#: launcher never reported it (a run of another workspace, say).
RUN_FORGET_SECONDS = 3600.0
_KTHREADD = 2
_LINUX = sys.platform.startswith("linux")


@dataclass
class RunTicks:
    """What the collector's ticks saw of one run (``DEVLOOP_RUN_ID``)."""

    project: str
    agent: str
    cpu_seconds: float = 0.0  # CPU counted into the run's rows
    ticks: int = 0  # ticks with at least one process of the run
    peak_cores: float = 0.0  # the largest per-tick sum of cpu_cores
    peak_rss_bytes: int = 0  # the largest per-tick sum of rss_bytes
    last_ts_us: int = 0
    whole: bool = True  # seen from its first process on (not already running at our start)
    processes: set[tuple[int, int]] = field(default_factory=set)
    last_mono: float = 0.0


def make_source(kind: str) -> Source[Any]:
    """The source called ``kind``: "procfs", "psutil", or "auto" (procfs on Linux, else psutil)."""
    if kind == "auto":
        on_linux = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
        kind = "procfs" if on_linux else "psutil"
    if kind == "procfs":
        from devloop.collector.procfs import ProcfsSource

        return ProcfsSource()
    if kind == "psutil":
        from devloop.collector.psutil_source import PsutilSource

        return PsutilSource()
    raise UsageError(f"unknown collector source {kind!r} (use auto, procfs or psutil)")


def full_name(name: str, argv: list[str] | None) -> str:
    """The process name, completed from argv[0] when the kernel truncated it (as psutil does)."""
    if len(name) >= _TASK_COMM_LEN and argv:
        base = os.path.basename(argv[0])
        if base.startswith(name):
            return base
    return name


class _Facts:
    """Reads a process's environment, arguments and cwd lazily, each at most once."""

    __slots__ = ("_source", "_handle", "_env", "_argv", "_cwd")

    _UNREAD: Any = object()

    def __init__(self, source: Source[Any], handle: object) -> None:
        self._source = source
        self._handle = handle
        self._env: Any = self._UNREAD
        self._argv: Any = self._UNREAD
        self._cwd: Any = self._UNREAD

    def environ_tags(self) -> dict[str, str] | None:
        if self._env is self._UNREAD:
            self._env = self._source.environ_tags(self._handle)
        result: dict[str, str] | None = self._env
        return result

    def cmdline(self) -> list[str] | None:
        if self._argv is self._UNREAD:
            self._argv = self._source.cmdline(self._handle)
        result: list[str] | None = self._argv
        return result

    def cwd(self) -> str | None:
        if self._cwd is self._UNREAD:
            self._cwd = self._source.cwd(self._handle)
        result: str | None = self._cwd
        return result


class _Entry:
    """A known process: its handle, attribution and the counters of its last sample."""

    __slots__ = (
        "handle",
        "pid",
        "start_us",
        "ppid",
        "name",
        "attribution",
        "resolved",
        "fresh",
        "last_mono",
        "last_own",
        "last_children",
        "debt",
        "debt_ticks",
        "debt_mono",
        "counted",
    )

    def __init__(self, handle: object, identity: Identity, fresh: bool) -> None:
        self.handle = handle
        self.pid = identity.pid
        self.start_us = identity.start_us
        self.ppid = identity.ppid
        self.name = identity.name
        self.attribution: Attribution | None = None
        self.resolved = False
        self.fresh = fresh  # appeared since the previous tick: all its CPU is in the interval
        self.last_mono: float | None = None
        self.last_own = 0.0
        self.last_children = 0.0
        self.debt = 0.0
        self.debt_ticks = 0
        self.debt_mono = 0.0
        self.counted = 0.0  # CPU seconds its last row counted

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_us)


class Collector:
    """Samples the processes that belong to agents (or every process) once per :meth:`tick`.

    ``rules`` attribute processes by working directory and command; processes whose
    environment carries DEVLOOP_PROJECT and DEVLOOP_AGENT are attributed without a rule, and
    descendants inherit. With ``all_processes`` every other process is recorded too, under
    project "(other)". ``source`` is "auto", "procfs", "psutil" or a
    :class:`~devloop.collector.model.Source`; ``host`` defaults to the host name.

    The collector does not write anything: each :class:`Tick` is handed to the store by the
    caller. Use it as a context manager or call :meth:`close` to release kept-open files.
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        all_processes: bool = False,
        source: str | Source[Any] = "auto",
        host: str | None = None,
    ) -> None:
        self._source: Source[Any] = make_source(source) if isinstance(source, str) else source
        self.host = host if host is not None else socket.gethostname()
        self._attributor = Attributor(rules, all_processes)
        self._all_processes = all_processes
        self._entries: dict[int, _Entry] = {}
        self._closed = False
        # the baseline the first tick's deltas start from
        self._prev_mono = time.monotonic()
        self._started_us = time.time_ns() // 1000
        self._prev_pids = set(self._source.pids())
        self._prev_system: SystemReading | None = self._source.system()
        self._runs: dict[str, RunTicks] = {}
        #: Seconds between the last two ticks (what a row's ``cpu_cores`` was measured over).
        self.last_interval = 0.0

    def start_interval_at(self, mono: float) -> None:
        """Measure the first tick's interval from ``mono`` (monotonic seconds), not from when
        the collector was made: a recorder ticking on a grid passes the slot before its first,
        so the first rows are rates over one whole tick like every later row (their CPU, all
        of it spent after the collector was made, lies in that slot)."""
        if self.last_interval == 0.0:
            self._prev_mono = min(mono, time.monotonic())

    @property
    def source_name(self) -> str:
        """The source: "procfs" or "psutil"."""
        return self._source.kind

    def tick(self, now: float | None = None) -> Tick:
        """Sample once. ``now`` (seconds since the epoch) overrides the timestamp of the rows
        (default: the wall clock); intervals, and so every rate, are always measured on the
        monotonic clock, which a step of the wall clock does not move."""
        if self._closed:
            raise CollectorError("the collector is closed")
        mono = time.monotonic()
        ts_us = round(now * 1_000_000) if now is not None else time.time_ns() // 1000
        source = self._source
        pids = source.pids()
        alive = set(pids)
        fresh = alive - self._prev_pids
        sampled: list[tuple[_Entry, Reading]] = []
        new_rows: list[ProcessRow] = []

        # Children before parents: a vanished child's counted CPU becomes its parent's debt,
        # and the parent (gone too) hands its debt on to the grandparent that reaps it.
        for entry in self._children_first([e for p, e in self._entries.items() if p not in alive]):
            self._drop(entry)
        vanished: list[_Entry] = []  # exited between the listing and their reading
        for pid, entry in list(self._entries.items()):
            if entry.attribution is None:
                check = source.check(entry.handle)
                if check == "same":
                    continue
                if check == "gone":
                    # the pid was reused: the new process started after the last tick
                    self._drop(entry)
                    fresh.add(pid)
                    continue
                self._reattribute(entry, ts_us, new_rows)
                if entry.attribution is None:
                    continue
            reading = source.sample(entry.handle)
            if reading is None:
                vanished.append(entry)  # dropped below, children first, like the gone ones
                fresh.add(pid)
                continue
            if reading.execed:
                self._refresh_name(entry)
                if entry.attribution is not None and entry.attribution.how == "other":
                    self._reattribute(entry, ts_us, new_rows)
            sampled.append((entry, reading))
        for entry in self._children_first(vanished):
            self._drop(entry)

        newcomers: list[_Entry] = []
        for pid in pids:
            if pid in self._entries:
                continue
            found = source.identify(pid)
            if found is None:
                continue  # exited before we could look
            entry = _Entry(found[0], found[1], fresh=pid in fresh)
            self._entries[pid] = entry
            newcomers.append(entry)
        for entry in newcomers:
            self._resolve(entry, ts_us, new_rows, depth=0)
        for entry in newcomers:
            if entry.attribution is None or self._entries.get(entry.pid) is not entry:
                continue
            reading = source.sample(entry.handle)
            if reading is None:
                self._drop(entry)
                continue
            sampled.append((entry, reading))

        samples = [self._row(entry, reading, mono, ts_us) for entry, reading in sampled]
        self._count_runs(sampled, samples, ts_us, mono)
        system = self._system_row(ts_us)
        self.last_interval = mono - self._prev_mono
        self._prev_mono = mono
        self._prev_pids = alive
        return Tick(ts_us, samples, new_rows, system)

    # -- runs --------------------------------------------------------------------------------

    def _count_runs(
        self, sampled: list[tuple[_Entry, Reading]], rows: list[SampleRow], ts_us: int, mono: float
    ) -> None:
        seen: dict[str, tuple[float, int]] = {}
        runs = self._runs
        for (entry, reading), row in zip(sampled, rows, strict=True):
            attribution = entry.attribution
            run_id = attribution.run_id if attribution is not None else None
            if run_id is None or attribution is None:
                continue
            run = runs.get(run_id)
            if run is None:
                run = runs[run_id] = RunTicks(attribution.project, attribution.agent)
            if entry.key not in run.processes:
                run.processes.add(entry.key)
                if not entry.fresh:
                    run.whole = False  # running before we looked: its past CPU is unknown
            run.cpu_seconds += entry.counted
            cores, rss = seen.get(run_id, (0.0, 0))
            seen[run_id] = (cores + (row[8] or 0.0), rss + reading.rss_bytes)
        for run_id, (cores, rss) in seen.items():
            run = runs[run_id]
            run.ticks += 1
            run.peak_cores = max(run.peak_cores, cores)
            run.peak_rss_bytes = max(run.peak_rss_bytes, rss)
            run.last_ts_us = ts_us
            run.last_mono = mono
        if len(runs) > len(seen):
            old = [r for r, run in runs.items() if mono - run.last_mono > RUN_FORGET_SECONDS]
            for run_id in old:
                del runs[run_id]

    def active_runs(self, ts_us: int) -> dict[str, RunTicks]:
        """The runs the tick stamped ``ts_us`` saw."""
        return {run_id: run for run_id, run in self._runs.items() if run.last_ts_us == ts_us}

    def finish_run(self, run_id: str) -> RunTicks | None:
        """Forget ``run_id`` (its launcher reported it) and return what the ticks saw of it."""
        return self._runs.pop(run_id, None)

    @property
    def started_us(self) -> int:
        """When this collector took its baseline (µs since the epoch): a run started later is
        seen whole."""
        return self._started_us

    def tail_row(
        self,
        ts_us: int,
        project: str,
        agent: str,
        pid: int,
        start_us: int,
        ppid: int | None,
        name: str | None,
        cpu_seconds: float,
    ) -> SampleRow:
        """The row of a run's CPU that no tick saw (its root tree's use after the last tick,
        known only to the launcher that reaped it), stamped ``ts_us``: ``cpu_cores`` is
        ``cpu_seconds`` over the last tick's interval, memory and counters are null (the
        process is gone), state ``"exited"``."""
        interval = self.last_interval if self.last_interval > 0 else 1.0
        return (ts_us, self.host, project, agent, pid, start_us, ppid, name,
                cpu_seconds / interval, None, None, None, None, None, None, "exited")  # fmt: skip

    # -- attribution -------------------------------------------------------------------------

    def _resolve(self, entry: _Entry, ts_us: int, new_rows: list[ProcessRow], depth: int) -> None:
        """Attribute a newly seen process, its new parent first (a child inherits from it)."""
        if entry.resolved:
            return
        entry.resolved = True
        parent = self._parent_of(entry)
        if parent is not None and not parent.resolved and depth < 64:
            self._resolve(parent, ts_us, new_rows, depth + 1)
        self._attribute(entry, parent, ts_us, new_rows)

    def _parent_of(self, entry: _Entry) -> _Entry | None:
        parent = self._entries.get(entry.ppid)
        # a parent starts no later than its child; otherwise the pid was reused
        if parent is None or parent is entry or parent.start_us > entry.start_us:
            return None
        return parent

    def _reattribute(self, entry: _Entry, ts_us: int, new_rows: list[ProcessRow]) -> None:
        """Judge a process again after an exec changed what it runs."""
        self._attributor.forget(entry.key)
        self._refresh_name(entry)
        self._attribute(entry, self._parent_of(entry), ts_us, new_rows)

    def _attribute(
        self, entry: _Entry, parent: _Entry | None, ts_us: int, new_rows: list[ProcessRow]
    ) -> None:
        facts = _Facts(self._source, entry.handle)
        if self._all_processes and len(entry.name) >= _TASK_COMM_LEN:
            entry.name = full_name(entry.name, facts.cmdline())  # it names the "(other)" agent
        before = entry.attribution
        parent_attribution = parent.attribution if parent is not None else None
        kernel_thread = _LINUX and _KTHREADD in (entry.pid, entry.ppid)
        entry.attribution = self._attributor.attribute(
            entry.key, entry.name, parent_attribution, facts, kernel_thread
        )
        after = entry.attribution
        if after is None or after == before:
            return
        argv = facts.cmdline()
        entry.name = full_name(entry.name, argv)
        new_rows.append(
            (
                ts_us,
                self.host,
                entry.pid,
                entry.start_us,
                after.project,
                after.agent,
                entry.ppid,
                entry.name,
                " ".join(argv) if argv else None,
                facts.cwd(),
                self._source.username(entry.handle),
                after.run_id,
            )
        )

    def _refresh_name(self, entry: _Entry) -> None:
        name = self._source.process_name(entry.handle)
        if name is not None:
            if len(name) >= _TASK_COMM_LEN:
                name = full_name(name, self._source.cmdline(entry.handle))
            entry.name = name

    @staticmethod
    def _children_first(entries: list[_Entry]) -> list[_Entry]:
        """``entries`` ordered so that every process comes before its parent."""
        by_pid = {e.pid: e for e in entries}

        def depth(entry: _Entry) -> int:
            steps, seen = 0, {entry.pid}
            while entry.ppid in by_pid and entry.ppid not in seen:
                entry = by_pid[entry.ppid]
                seen.add(entry.pid)
                steps += 1
            return steps

        return sorted(entries, key=depth, reverse=True)

    def _drop(self, entry: _Entry) -> None:
        """Forget a process that exited; a sampled one leaves its counted CPU as its parent's
        debt (see the module docstring), together with the debt its own vanished children left
        it: its reaper's children time will hold all of that."""
        if entry.attribution is not None and entry.last_mono is not None:
            parent = self._parent_of(entry)
            if parent is not None and parent.attribution is not None:
                parent.debt += entry.last_own + entry.last_children + entry.debt
                parent.debt_ticks = 0
                parent.debt_mono = time.monotonic()
        self._source.release(entry.handle)
        self._attributor.forget(entry.key)
        if self._entries.get(entry.pid) is entry:
            del self._entries[entry.pid]

    # -- rows --------------------------------------------------------------------------------

    def _row(self, entry: _Entry, reading: Reading, mono: float, ts_us: int) -> SampleRow:
        own, children = reading.cpu_seconds, reading.children_seconds
        cores: float | None = None
        entry.counted = 0.0
        if entry.last_mono is None:
            entry.debt = 0.0  # its children's past is inside its first cumulative reading
            interval = mono - self._prev_mono
            if entry.fresh and interval > 0:
                cores = (own + children) / interval
                entry.counted = own + children
        else:
            interval = mono - entry.last_mono
            credit = max(0.0, children - entry.last_children)
            if entry.debt > 0.0:
                if credit + _EPSILON >= entry.debt:
                    credit = max(0.0, credit - entry.debt)
                    entry.debt = 0.0
                else:
                    entry.debt -= credit
                    credit = 0.0
                    entry.debt_ticks += 1
                    if entry.debt_ticks > DEBT_TICKS and mono - entry.debt_mono > DEBT_SECONDS:
                        entry.debt = 0.0
            counted = max(0.0, own - entry.last_own) + credit
            entry.counted = counted
            if interval > 0:
                cores = counted / interval
        entry.last_mono = mono
        entry.last_own = own
        entry.last_children = children
        entry.ppid = reading.ppid
        attribution = entry.attribution
        assert attribution is not None  # only attributed processes are sampled
        return (
            ts_us,
            self.host,
            attribution.project,
            attribution.agent,
            entry.pid,
            entry.start_us,
            reading.ppid,
            entry.name,
            cores,
            own,
            reading.rss_bytes,
            reading.fds,
            reading.threads,
            reading.io_read_bytes,
            reading.io_write_bytes,
            reading.state,
        )

    def _system_row(self, ts_us: int) -> SystemRow:
        now = self._source.system()
        cores = self._source.cores()
        busy: float | None = None
        prev = self._prev_system
        if prev is not None and now.cpu_total_seconds > prev.cpu_total_seconds:
            # busy share of all CPU time since the last tick, times the cores: immune to the
            # gap between our wall clock and the kernel's accounting
            share = (now.cpu_busy_seconds - prev.cpu_busy_seconds) / (
                now.cpu_total_seconds - prev.cpu_total_seconds
            )
            # clamped: the two sums are floats (psutil's cpu_times add in float), and the
            # kernel's iowait may step back, so an idle machine can read a hair below zero
            busy = cores * min(max(share, 0.0), 1.0)
            self._prev_system = now
        elif prev is None:
            self._prev_system = now
        # else: under one clock tick since the last tick; the next one measures the wider window
        return (
            ts_us,
            self.host,
            cores,
            busy,
            now.mem_total_bytes,
            now.mem_used_bytes,
            now.mem_available_bytes,
        )

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def tracked(self) -> int:
        """How many processes are known (recorded or not)."""
        return len(self._entries)

    def close(self) -> None:
        """Release every kept-open file. The collector cannot tick afterwards."""
        if self._closed:
            return
        self._closed = True
        for entry in self._entries.values():
            self._source.release(entry.handle)
        self._entries.clear()
        self._source.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
