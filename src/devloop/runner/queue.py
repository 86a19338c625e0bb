"""The overflow queue: agents that cannot start yet wait for a slot and for resources.

An agent starts at once when fewer than ``global.maxConcurrentAgents`` agents run and
``can_run(project, agent)`` says its resources are free. Otherwise, with
``global.resourceLimits.overflow`` enabled and queueing, it waits, up to ``maxQueueSize``
waiters; waiters are admitted in priority order (lower number first), then arrival order, and a
waiter that cannot run yet does not hold back one behind it that can. A waiter fails after
``maxWaitTime`` seconds (:class:`QueueTimeout`); a full queue, or overflow turned off, rejects at
once (:class:`QueueFull`). Each step is an event: ``queue``, ``dequeue``, ``queue-timeout``,
``queue-full``.

Events are reported outside the queue's lock, a waiter's own by its thread. Admission is checked
again on every :meth:`AdmissionQueue.release`, every :meth:`AdmissionQueue.poke` and at least
every :data:`RECHECK` seconds while anyone waits.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from devloop.config.models import Overflow
from devloop.errors import QueueFull, QueueTimeout

RECHECK = 0.5  # seconds: the longest a waiter goes without its admission being checked


@dataclass(frozen=True)
class Ticket:
    """An admitted agent; give it back with :meth:`AdmissionQueue.release` when it exits."""

    id: int
    project: str
    agent: str
    waited: float  # seconds spent in the queue (0.0 when admitted at once)


@dataclass(frozen=True)
class Waiter:
    """An agent waiting in the queue since ``since`` (unix seconds)."""

    project: str
    agent: str
    since: float


@dataclass
class _Entry:
    seq: int
    project: str
    agent: str
    priority: int
    since: float  # unix seconds
    entered: float  # the queue's clock
    queued: bool = False  # it could not start at once and waits
    ticket: Ticket | None = None


class AdmissionQueue:
    """Who may start now, and who waits for whom. Thread-safe; :meth:`acquire` blocks.

    ``can_run(project, agent)``: are the agent's resources free now; ``priority_of(project)``:
    the project's priority, lower first; ``on_event(action, project=, agent=, message=)``.
    """

    def __init__(
        self,
        *,
        max_concurrent: int | None,
        overflow: Overflow,
        can_run: Callable[[str, str], bool],
        priority_of: Callable[[str], int],
        on_event: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.overflow = overflow
        self._can_run = can_run
        self._priority_of = priority_of
        self._on_event = on_event
        self._clock = clock
        self._cond = threading.Condition()
        self._seq = itertools.count(1)
        self._waiters: list[_Entry] = []  # kept in admission order
        self._running: dict[int, Ticket] = {}
        self._last_check = float("-inf")

    @property
    def running(self) -> int:
        """How many admitted agents have not been released."""
        with self._cond:
            return len(self._running)

    def waiting(self) -> list[Waiter]:
        """The agents waiting now, in admission order."""
        with self._cond:
            return [Waiter(e.project, e.agent, e.since) for e in self._waiters]

    def acquire(self, project: str, agent: str) -> Ticket:
        """Admit ``project/agent`` now, or wait in the queue until it can start.

        Raises :class:`QueueFull` when it can neither start nor wait, :class:`QueueTimeout`
        after ``overflow.max_wait_time`` seconds of waiting.
        """
        with self._cond:
            entry = _Entry(
                next(self._seq), project, agent, self._priority_of(project), time.time(),
                self._clock(),
            )  # fmt: skip
            self._enqueue(entry)
            try:
                self._admit()
            except BaseException:  # can_run failed: this agent neither starts nor waits
                self._abandon(entry)
                raise
            if entry.ticket is not None:
                return entry.ticket
            why = self._why_not()
            refusal = self._refusal(entry, why)
            if refusal is not None:
                self._waiters.remove(entry)
        if refusal is not None:
            self._emit("queue-full", entry, refusal)
            raise QueueFull(refusal)
        # the waiter itself reports its queue and dequeue, so they are written in that order
        try:
            self._emit("queue", entry, f"waiting: {why}")
            with self._cond:
                ticket = self._wait(entry)
        except QueueTimeout as exc:
            self._emit("queue-timeout", entry, str(exc))
            raise
        except BaseException:
            with self._cond:
                self._abandon(entry)
            raise
        self._emit("dequeue", entry, f"started after waiting {ticket.waited:.1f}s")
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The agent has exited: its slot goes to the next waiter that can run."""
        with self._cond:
            if self._running.pop(ticket.id, None) is not None:
                self._admit()

    def poke(self) -> None:
        """Check the waiters now (resources may have been freed)."""
        with self._cond:
            self._admit()

    # --- with the lock held -----------------------------------------------------------------

    def _enqueue(self, entry: _Entry) -> None:
        at = len(self._waiters)
        while at > 0 and self._waiters[at - 1].priority > entry.priority:
            at -= 1
        self._waiters.insert(at, entry)

    def _full(self) -> bool:
        return self.max_concurrent is not None and len(self._running) >= self.max_concurrent

    def _admit(self) -> None:
        """Admit, in order, every waiter that can run while slots are left."""
        self._last_check = self._clock()
        admitted = False
        for entry in list(self._waiters):
            if self._full():
                break
            if not self._can_run(entry.project, entry.agent):
                continue
            self._waiters.remove(entry)
            waited = max(0.0, self._clock() - entry.entered) if entry.queued else 0.0
            entry.ticket = Ticket(entry.seq, entry.project, entry.agent, waited)
            self._running[entry.seq] = entry.ticket
            admitted = True
        if admitted:
            self._cond.notify_all()

    def _why_not(self) -> str:
        if self._full():
            return f"maxConcurrentAgents ({self.max_concurrent}) agents are running"
        return "its resources are not free"

    def _refusal(self, entry: _Entry, why: str) -> str | None:
        """Why ``entry`` may not wait, or None: it is queued."""
        name = f"{entry.project}/{entry.agent}"
        if not self.overflow.enabled or not self.overflow.queueing:
            setting = "enabled" if not self.overflow.enabled else "queueing"
            return (
                f"cannot start {name}: {why} and overflow is disabled "
                f"(global.resourceLimits.overflow.{setting} is false)"
            )
        if len(self._waiters) > self.overflow.max_queue_size:
            return (
                f"cannot start {name}: {why} and the overflow queue is full "
                f"({self.overflow.max_queue_size} waiting, maxQueueSize)"
            )
        entry.queued = True
        return None

    def _wait(self, entry: _Entry) -> Ticket:
        deadline = entry.entered + self.overflow.max_wait_time
        while entry.ticket is None:
            now = self._clock()
            if now >= deadline:
                self._abandon(entry)
                raise QueueTimeout(
                    f"{entry.project}/{entry.agent} waited {now - entry.entered:.1f}s in the "
                    f"overflow queue (maxWaitTime {self.overflow.max_wait_time:g}s)"
                )
            self._cond.wait(min(RECHECK, deadline - now))
            if entry.ticket is None and self._clock() - self._last_check >= RECHECK:
                self._admit()
        return entry.ticket

    def _abandon(self, entry: _Entry) -> None:
        """``entry`` gives up: it leaves the queue, or gives back the slot it got meanwhile."""
        if entry.ticket is None:
            if entry in self._waiters:
                self._waiters.remove(entry)
        elif self._running.pop(entry.ticket.id, None) is not None:
            self._admit()

    # --- without the lock: the callback may take its own locks ------------------------------

    def _emit(self, action: str, entry: _Entry, message: str) -> None:
        if self._on_event is not None:
            self._on_event(action, project=entry.project, agent=entry.agent, message=message)
