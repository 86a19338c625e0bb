"""The overflow queue (devloop.runner.queue) with real threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from devloop.config.models import Overflow
from devloop.errors import EnforcementError, QueueFull, QueueTimeout
from devloop.runner.queue import AdmissionQueue, Ticket
from tests.helpers.procs import wait_until

PRIORITY = {"critical": 0, "api": 1, "web": 2, "docs": 3}


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, action: str, **columns: Any) -> None:
        self.append((action, columns))

    def actions(self) -> list[str]:
        return [action for action, _ in self]


class Agent(threading.Thread):
    """One agent asking to start; keeps its ticket or the error it got."""

    def __init__(self, queue: AdmissionQueue, project: str, agent: str) -> None:
        super().__init__(daemon=True)
        self.queue, self.project, self.agent = queue, project, agent
        self.ticket: Ticket | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.ticket = self.queue.acquire(self.project, self.agent)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def _queue(
    events: Events,
    *,
    max_concurrent: int | None = 1,
    can_run: Callable[[str, str], bool] = lambda project, agent: True,
    **overflow: Any,
) -> AdmissionQueue:
    return AdmissionQueue(
        max_concurrent=max_concurrent,
        overflow=Overflow(**{"enabled": True, **overflow}),
        can_run=can_run,
        priority_of=PRIORITY.__getitem__,
        on_event=events,
    )


def _arrive(queue: AdmissionQueue, project: str, agent: str) -> Agent:
    """Start an agent and wait until it waits in the queue (so arrival order is known)."""
    before = len(queue.waiting())
    thread = Agent(queue, project, agent)
    thread.start()
    wait_until(lambda: len(queue.waiting()) == before + 1)
    return thread


def test_agents_start_at_once_while_slots_are_free():
    events = Events()
    queue = _queue(events, max_concurrent=2)
    first, second = queue.acquire("api", "lint"), queue.acquire("web", "lint")
    assert (first.project, first.agent, first.waited) == ("api", "lint", 0.0)
    assert queue.running == 2 and queue.waiting() == []
    queue.release(first)
    queue.release(first)  # twice is harmless
    assert queue.running == 1
    queue.release(second)
    assert queue.running == 0 and events == []


def test_waiters_start_in_priority_order_then_arrival_order():
    events = Events()
    queue = _queue(events, max_concurrent=1)
    holder = queue.acquire("api", "lint")
    arrivals = [("web", "a"), ("docs", "b"), ("api", "c"), ("web", "d"), ("api", "e"),
                ("critical", "f")]  # fmt: skip
    threads = {agent: _arrive(queue, project, agent) for project, agent in arrivals}
    expected = ["f", "c", "e", "a", "d", "b"]
    assert [w.agent for w in queue.waiting()] == expected
    assert all(w.since > 0 for w in queue.waiting())
    order = []
    ticket = holder
    for _ in expected:
        queue.release(ticket)
        wait_until(lambda: sum(t.ticket is not None for t in threads.values()) == len(order) + 1)
        (admitted,) = [t for t in threads.values() if t.ticket is not None and t.agent not in order]
        order.append(admitted.agent)
        assert queue.running == 1  # maxConcurrentAgents holds
        assert admitted.ticket is not None
        ticket = admitted.ticket
    assert order == expected
    assert queue.waiting() == []
    assert events.actions() == ["queue"] * 6 + ["dequeue"] * 6
    assert [c["agent"] for a, c in events if a == "dequeue"] == expected
    assert all("started after waiting" in c["message"] for a, c in events if a == "dequeue")


def test_max_concurrent_agents_is_never_exceeded():
    queue = _queue(Events(), max_concurrent=2)
    tickets = [queue.acquire("api", "a0"), queue.acquire("api", "a1")]
    threads = [_arrive(queue, "web", f"b{i}") for i in range(3)]
    assert queue.running == 2 and len(queue.waiting()) == 3
    for released in range(3):
        queue.release(tickets.pop(0))
        wait_until(lambda n=released + 1: sum(t.ticket is not None for t in threads) == n)
        assert queue.running == 2
        assert len(queue.waiting()) == 2 - released
        ticket = threads[released].ticket  # one priority: arrival order
        assert ticket is not None
        tickets.append(ticket)
    for ticket in tickets:
        queue.release(ticket)
    assert queue.running == 0


def test_a_waiter_fails_after_max_wait_time_with_an_event():
    events = Events()
    queue = _queue(events, max_concurrent=None, can_run=lambda p, a: False, max_wait_time=0.5)
    timeout = r"^api/lint waited [\d.]+s in the overflow queue \(maxWaitTime 0\.5s\)$"
    with pytest.raises(QueueTimeout, match=timeout) as caught:
        queue.acquire("api", "lint")
    assert isinstance(caught.value, EnforcementError)
    assert queue.waiting() == [] and queue.running == 0
    assert events.actions() == ["queue", "queue-timeout"]
    assert events[1][1]["project"] == "api" and events[1][1]["agent"] == "lint"


def test_a_full_queue_rejects_at_once_with_an_event():
    events = Events()
    queue = _queue(events, max_concurrent=1, max_queue_size=2)
    holder = queue.acquire("api", "lint")
    waiting = [_arrive(queue, "web", "a"), _arrive(queue, "web", "b")]
    with pytest.raises(QueueFull, match=r"queue is full \(2 waiting, maxQueueSize\)"):
        queue.acquire("critical", "c")  # even a higher priority does not push anyone out
    assert [w.agent for w in queue.waiting()] == ["a", "b"]
    assert events.actions() == ["queue", "queue", "queue-full"]
    assert events[2][1]["agent"] == "c"
    queue.release(holder)
    wait_until(lambda: waiting[0].ticket is not None)


@pytest.mark.parametrize(
    ("overflow", "setting"),
    [({"enabled": False}, "enabled"), ({"queueing": False}, "queueing")],
)
def test_without_overflow_an_agent_that_cannot_start_is_rejected(overflow, setting):
    events = Events()
    queue = _queue(events, max_concurrent=1, **overflow)
    queue.acquire("api", "lint")
    message = (
        r"cannot start web/lint: maxConcurrentAgents \(1\) agents are running and overflow is "
        rf"disabled \(global.resourceLimits.overflow.{setting} is false\)"
    )
    with pytest.raises(QueueFull, match=message):
        queue.acquire("web", "lint")
    busy = _queue(events, max_concurrent=None, can_run=lambda p, a: False, **overflow)
    with pytest.raises(QueueFull, match="its resources are not free and overflow is disabled"):
        busy.acquire("web", "lint")
    assert events.actions() == ["queue-full", "queue-full"]


def test_a_waiter_starts_when_its_resources_free_up():
    free = {"api": threading.Event(), "web": threading.Event()}
    events = Events()
    queue = _queue(events, max_concurrent=None, can_run=lambda p, a: free[p].is_set())
    api = _arrive(queue, "api", "lint")
    web = _arrive(queue, "web", "lint")
    # the first in line cannot run yet: the one behind it that can is not held back
    free["web"].set()
    queue.poke()
    wait_until(lambda: web.ticket is not None)
    assert api.ticket is None
    # without a poke or a release: the periodic re-check admits it
    free["api"].set()
    wait_until(lambda: api.ticket is not None)
    assert queue.running == 2 and queue.waiting() == []
    assert events.actions() == ["queue", "queue", "dequeue", "dequeue"]
