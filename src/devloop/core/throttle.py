"""Holding a process tree at a CPU limit by duty-cycling SIGSTOP and SIGCONT, as cpulimit does.

Every ``period`` seconds the one background thread continues each throttled tree, lets it run
for ``rate * period`` seconds and stops it for the rest. The run fraction ``rate`` follows
cpulimit's controller: ``rate *= target / usage`` with ``usage`` the tree's CPU in cores,
smoothed over about half a second, ``rate`` kept in [0.01, 1]. Its fixed point is the usage that
equals the target, whatever the tree's width (one busy process or four) and the machine's load.

A tree's CPU time is the sum over its live processes of ``utime + stime + cutime + cstime``
(``/proc/PID/stat`` fields 14-17): when a process of the tree exits and its parent reaps it, its
own time leaves the sum and the same time arrives in the parent's ``cutime``, so children that
come and go between two samples are counted, once.

Safety is :mod:`devloop.core.signals`': every signal goes through its :func:`~signals.send`, which
checks (pid, start time), owner and the project's tag; each process is written to the
:class:`~signals.PauseJournal` before its first SIGSTOP; :meth:`Throttler.release`,
:meth:`Throttler.close`, interpreter exit and any exception in the thread continue everything
the throttler stopped.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from devloop.core import signals
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.errors import EnforcementError

MIN_RATE = 0.01
SMOOTHING = 0.5  # seconds: time constant of the usage estimate
WINDOW = 1.0  # seconds: the span measured() reports
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks(process: ProcessRef) -> int | None:
    """utime + stime + cutime + cstime of ``process``; None if its pid now holds another."""
    try:
        with open(f"/proc/{process.pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if int(fields[19]) != process.start:
        return None
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def live_tree(roots: Iterable[ProcessRef]) -> list[ProcessRef]:
    """:func:`signals.tree` of the roots that are still the processes they were: the children
    of a pid that was reused belong to somebody else."""
    return signals.tree(r for r in roots if signals.process_start(r.pid) == r.start)


@dataclass
class _Group:
    project: str
    agent: str
    roots: tuple[ProcessRef, ...]
    target: float
    started: frozenset[ProcessRef]
    rate: float
    usage: float | None = None
    last: tuple[float, int] | None = None  # (monotonic time, tree CPU ticks) of the last sample
    consumed: float = 0.0  # CPU seconds since the hold began
    history: deque[tuple[float, float]] = field(default_factory=deque)
    journaled: set[ProcessRef] = field(default_factory=set)
    stopped: dict[ProcessRef, None] = field(default_factory=dict)  # in stopping order
    foreign: set[ProcessRef] = field(default_factory=set)  # verify() said no: never signalled


class Throttler:
    """Duty-cycle throttling of process trees, one background thread for all of them.

    ``cores`` is the machine's core count (for percentages in events); ``journal`` records every
    process before its first SIGSTOP; ``on_event(action, project=, agent=, pids=, value=,
    limit=, message=)`` is called with ``"throttle"`` and ``"unthrottle"``, value and limit in
    percent of the machine.
    """

    def __init__(
        self,
        *,
        cores: int,
        period: float = 0.1,
        journal: PauseJournal | None = None,
        on_event: Callable[..., None] | None = None,
    ) -> None:
        if cores < 1 or period <= 0:
            raise ValueError("cores must be >= 1 and period > 0")
        self.cores = cores
        self.period = period
        self._journal = journal
        self._on_event = on_event
        self._groups: dict[str, _Group] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None

    # --- the caller's side -----------------------------------------------------------------

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the thread (everything it held was continued), or None."""
        return self._error

    def hold(
        self,
        key: str,
        *,
        project: str,
        agent: str,
        roots: Sequence[ProcessRef],
        target_cores: float,
        started: Iterable[ProcessRef] = (),
    ) -> None:
        """Throttle the trees under ``roots`` to ``target_cores``, or update the roots and target
        of the group ``key`` already held. Signals reach only processes tagged for ``project``
        or listed in ``started``."""
        if target_cores < 0:
            raise ValueError("target_cores must be >= 0")
        with self._cond:
            if self._error is not None:
                raise EnforcementError(f"the throttler has stopped: {self._error}") from (
                    self._error
                )
            if self._closing:
                raise EnforcementError("the throttler is closed")
            group = self._groups.get(key)
            roots, ours = tuple(roots), frozenset(started)
            changed = group is None or group.target != target_cores or group.roots != roots
            if group is None:
                group = _Group(project, agent, roots, target_cores, ours, min(1.0, target_cores))
                self._groups[key] = group
            else:
                if group.roots != roots:
                    group.last = None  # another set of processes: a new baseline
                if group.project != project or group.started != ours:
                    self._continue(group)  # while verify() still knows them as ours
                group.project, group.agent, group.roots = project, agent, roots
                group.target, group.started = target_cores, ours
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="devloop-throttle", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)
            self._cond.notify_all()
            measured = self._measured(group)
        if changed:
            self._emit("throttle", group, live_tree(roots), measured, "throttling")

    def release(self, key: str) -> None:
        """Continue the group's trees and forget the group (nothing if ``key`` is not held)."""
        with self._cond:
            group = self._groups.pop(key, None)
            if group is None:
                return
            self._cond.notify_all()
            self._continue(group)
            measured = self._measured(group)
            try:
                self._forget(group, group.journaled)
            except OSError:
                pass  # a stale entry is harmless: recovery only continues a process
        self._emit("unthrottle", group, live_tree(group.roots), measured, "released")

    def measured(self, key: str) -> float | None:
        """The group's CPU in cores over about the last second (None before two samples)."""
        with self._cond:
            group = self._groups.get(key)
            return None if group is None else self._measured(group)

    def holding(self, key: str) -> tuple[tuple[ProcessRef, ...], float] | None:
        """The roots and the target (cores) of the group ``key``; None if it is not held."""
        with self._cond:
            group = self._groups.get(key)
            return None if group is None else (group.roots, group.target)

    def keys(self) -> list[str]:
        """The keys of the groups held now."""
        with self._cond:
            return list(self._groups)

    def close(self) -> None:
        """Release every group (SIGCONT) and end the thread. Safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for key in self.keys():
            self.release(key)
        atexit.unregister(self.close)

    def __enter__(self) -> Throttler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers shared by both sides (called with the lock held) ---------------------------

    def _measured(self, group: _Group) -> float | None:
        if len(group.history) < 2:
            return None
        (t0, c0), (t1, c1) = group.history[0], group.history[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def _continue(self, group: _Group) -> None:
        if group.stopped:
            signals.continue_all(list(group.stopped))
            group.stopped.clear()

    def _forget(self, group: _Group, processes: Iterable[ProcessRef]) -> None:
        processes = list(processes)
        group.journaled.difference_update(processes)
        if self._journal is not None:
            self._journal.remove(processes)

    def _emit(
        self,
        action: str,
        group: _Group,
        tree: list[ProcessRef],
        measured: float | None,
        message: str,
    ) -> None:
        if self._on_event is None:
            return
        limit = group.target / self.cores * 100
        self._on_event(
            action,
            project=group.project,
            agent=group.agent,
            pids=[p.pid for p in tree],
            value=None if measured is None else measured / self.cores * 100,
            limit=limit,
            message=f"{message} at {group.target:.2f} cores ({limit:.1f}% of the machine)",
        )

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # everything is continued below, then reported
            self._error = exc
        finally:
            with self._cond:
                for group in self._groups.values():
                    try:
                        self._continue(group)
                    except Exception:  # the other groups must be continued whatever happens
                        continue

    def _loop(self) -> None:
        start = time.monotonic()
        with self._cond:
            while not self._closing:
                if not self._groups:
                    self._cond.wait()  # idle until a hold() or close()
                    start = time.monotonic()
                    continue
                now = time.monotonic()
                for group in self._groups.values():
                    self._continue(group)
                    self._sample(group, now)
                # stop each group when its share of the period is used, earliest first
                plan = sorted(
                    (start + group.rate * self.period, key)
                    for key, group in self._groups.items()
                    if group.rate < 1.0
                )
                for at, key in plan:
                    if not self._wait_until(at):
                        return
                    held = self._groups.get(key)
                    if held is not None:
                        self._stop(held)
                if not self._wait_until(start + self.period):
                    return
                start += self.period
                if time.monotonic() - start > self.period:
                    start = time.monotonic()  # fell behind (a loaded machine): no catching up

    def _wait_until(self, at: float) -> bool:
        """Sleep (releasing the lock) until ``at``; False when closing."""
        while not self._closing:
            left = at - time.monotonic()
            if left <= 0:
                return True
            self._cond.wait(left)
        return False

    def _sample(self, group: _Group, now: float) -> None:
        tree = live_tree(group.roots)
        ticks = sum(t for t in map(_cpu_ticks, tree) if t is not None)
        group.foreign.intersection_update(tree)
        gone = group.journaled.difference(tree)
        if gone:
            self._forget(group, gone)
        if group.last is not None:
            elapsed = now - group.last[0]
            # a process that left the tree without being reaped by it takes its time along
            used = max(0, ticks - group.last[1]) / _TICK
            if elapsed > 0:
                group.consumed += used
                sample = used / elapsed
                alpha = 1.0 - math.exp(-elapsed / SMOOTHING)
                group.usage = (
                    sample if group.usage is None else group.usage + alpha * (sample - group.usage)
                )
                if group.usage <= 1e-6:
                    group.rate = 1.0
                else:
                    group.rate = min(1.0, max(MIN_RATE, group.rate * group.target / group.usage))
        group.last = (now, ticks)
        group.history.append((now, group.consumed))
        while len(group.history) > 2 and now - group.history[1][0] >= WINDOW:
            group.history.popleft()

    def _stop(self, group: _Group) -> None:
        """SIGSTOP the group's tree: the processes already journaled first (a stopped parent
        forks no more), then the new ones once journaled; again for children forked meanwhile.
        A process :func:`signals.verify` refuses is remembered and never journaled."""
        tried: set[ProcessRef] = set(group.stopped)
        for _ in range(5):
            todo = [p for p in live_tree(group.roots) if p not in tried and p not in group.foreign]
            if not todo:
                return
            tried.update(todo)
            known = [p for p in todo if p in group.journaled]
            self._send_stop(group, known)
            new = []
            for process in todo:
                if process in group.journaled:
                    continue
                if signals.verify(process, project=group.project, started=group.started):
                    new.append(process)
                else:
                    group.foreign.add(process)
            if new:
                if self._journal is not None:
                    self._journal.add(group.project, group.agent, new)
                group.journaled.update(new)
                self._send_stop(group, new)

    def _send_stop(self, group: _Group, processes: list[ProcessRef]) -> None:
        if processes:
            done = signals.send(
                processes, signal.SIGSTOP, project=group.project, started=group.started
            )
            group.stopped.update(dict.fromkeys(done))
