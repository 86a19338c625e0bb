"""Duty-cycle throttling (devloop.core.throttle) of real CPU burners, measured from /proc."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from devloop.core import signals
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.core.throttle import Throttler
from devloop.errors import EnforcementError
from tests.helpers.procs import helpers, proc_cpu_seconds, proc_state, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.realtime]


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, action: str, **columns: Any) -> None:
        self.append((action, columns))


def _ref(pid: int) -> ProcessRef:
    process = signals.ref(pid)
    assert process is not None
    return process


def _cores(pids: list[int], free: int, seconds: float = 3.0) -> tuple[float, float]:
    """The CPU the processes use together and the CPU of an unthrottled burner ``free``, in
    cores, read from /proc over the same ``seconds``: on a machine so loaded that a burner gets
    less than the target anyway, the throttler is not to blame."""
    before = sum(map(proc_cpu_seconds, pids)), proc_cpu_seconds(free)
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    after = sum(map(proc_cpu_seconds, pids)), proc_cpu_seconds(free)
    return (after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed


def _states(pids: list[int], seconds: float) -> dict[int, set[str]]:
    """Every state each process was seen in, polled for ``seconds``."""
    seen: dict[int, set[str]] = {pid: set() for pid in pids}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pid in pids:
            seen[pid].add(proc_state(pid))
        time.sleep(0.005)
    return seen


def _watch(pids: list[int], control: int, seconds: float = 2.0) -> dict[int, set[str]]:
    """:func:`_states` over at least ``seconds`` and until ``control`` was seen stopped 20
    times: proof that the throttler was at work meanwhile, however loaded the machine."""
    seen: dict[int, set[str]] = {pid: set() for pid in [*pids, control]}
    stops, was_stopped = 0, False
    start = time.monotonic()
    while time.monotonic() - start < seconds or stops < 20:
        assert time.monotonic() - start < 30, f"{control} was stopped {stops} times in 30 s"
        for pid in seen:
            seen[pid].add(proc_state(pid))
        stopped = proc_state(control) == "T"
        stops += stopped and not was_stopped
        was_stopped = stopped
        time.sleep(0.005)
    return seen


def _settle(throttler: Throttler, key: str) -> None:
    wait_until(lambda: throttler.measured(key) is not None)
    time.sleep(2.0)  # the usage estimate's time constant is 0.5 s


def _journaled(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {entry["pid"] for entry in json.loads(path.read_text())["entries"]}


def test_a_burner_held_at_a_fifth_of_a_core(tmp_path):
    journal = tmp_path / "paused.json"
    events = Events()
    with helpers() as start:
        burner = start("busy", tags=("api", "lint"))
        free = start("busy", tags=("web", "lint"))
        with Throttler(cores=2, journal=PauseJournal(journal), on_event=events) as throttler:
            throttler.hold(
                "api/lint", project="api", agent="lint", roots=[_ref(burner.pid)], target_cores=0.2
            )
            _settle(throttler, "api/lint")
            used, unthrottled = _cores([burner.pid], free.pid)
            assert min(0.10, unthrottled / 2) <= used <= 0.35, (used, unthrottled)
            measured = throttler.measured("api/lint")
            assert measured is not None and 0.0 < measured <= 0.45, measured
            assert _journaled(journal) == {burner.pid}
            assert throttler.keys() == ["api/lint"]

            # the same hold again changes nothing; a new target is a new event
            throttler.hold(
                "api/lint", project="api", agent="lint", roots=[_ref(burner.pid)], target_cores=0.2
            )
            assert [a for a, _ in events] == ["throttle"]
            throttler.hold(
                "api/lint", project="api", agent="lint", roots=[_ref(burner.pid)], target_cores=0.3
            )
            throttler.release("api/lint")
            assert proc_state(burner.pid) != "T"
            assert "T" not in _states([burner.pid], 0.5)[burner.pid]
            assert not journal.exists()
            assert throttler.keys() == []
    assert [a for a, _ in events] == ["throttle", "throttle", "unthrottle"]
    first = events[0][1]
    assert first["project"] == "api" and first["agent"] == "lint"
    assert first["pids"] == [burner.pid]
    assert first["limit"] == pytest.approx(10.0)  # 0.2 cores of 2 = 10 % of the machine
    assert events[1][1]["limit"] == pytest.approx(15.0)
    assert events[2][1]["value"] is not None


def test_children_are_throttled_with_their_parent_and_all_run_after_release(tmp_path):
    journal = tmp_path / "paused.json"
    with helpers() as start:
        family = start("family", "1", tags=("api", "tests"), ready=False)
        words = family.readline()
        pids = [int(words[1]), int(words[2])]
        free = start("busy", tags=("web", "lint"))
        with Throttler(cores=2, journal=PauseJournal(journal)) as throttler:
            throttler.hold(
                "t", project="api", agent="tests", roots=[_ref(pids[0])], target_cores=0.1
            )
            family.send("child")
            words = family.readline()
            assert words[0] == "child"
            pids.append(int(words[1]))
            _settle(throttler, "t")
            used, unthrottled = _cores(pids, free.pid)
            assert min(0.05, unthrottled / 2) <= used <= 0.25, (used, unthrottled)
            for pid in pids:
                wait_until(lambda pid=pid: proc_state(pid) == "T", step=0.002)
            assert _journaled(journal) == set(pids)
            throttler.release("t")
            assert [proc_state(pid) for pid in pids].count("T") == 0
            assert all("T" not in states for states in _states(pids, 0.5).values())
            assert not journal.exists()


def test_an_exception_in_the_thread_continues_everything_and_close_still_works(tmp_path):
    folder = tmp_path / "journal"
    journal = folder / "paused.json"
    with helpers() as start:
        family = start("family", "0", tags=("api", "tests"), ready=False)
        parent = int(family.readline()[1])
        throttler = Throttler(cores=2, journal=PauseJournal(journal))
        try:
            throttler.hold(
                "t", project="api", agent="tests", roots=[_ref(parent)], target_cores=0.1
            )
            wait_until(lambda: _journaled(journal) == {parent})
            # the journal cannot be written any more: the next new child cannot be journaled
            # while its parent, already journaled, is stopped first
            shutil.rmtree(folder)
            folder.write_text("not a folder")
            family.send("child")
            child = int(family.readline()[1])
            wait_until(lambda: throttler.error is not None)
            assert isinstance(throttler.error, OSError)
            assert all("T" not in states for states in _states([parent, child], 1.0).values())
            with pytest.raises(EnforcementError, match="the throttler has stopped"):
                throttler.hold(
                    "u", project="api", agent="x", roots=[_ref(parent)], target_cores=0.1
                )
        finally:
            throttler.close()
        assert throttler.keys() == []
        assert [proc_state(pid) for pid in (parent, child)].count("T") == 0


def test_a_process_not_tagged_for_the_project_is_never_stopped():
    with helpers() as start:
        stranger = start("busy", tags=("web", "lint"))
        family = start("family", "0", tags=("api", "tests"), ready=False)
        parent = int(family.readline()[1])
        family.send("child untagged")
        untagged = int(family.readline()[1])
        with Throttler(cores=2) as throttler:
            throttler.hold(
                "wrong", project="api", agent="lint", roots=[_ref(stranger.pid)], target_cores=0.1
            )
            throttler.hold(
                "t", project="api", agent="tests", roots=[_ref(parent)], target_cores=0.05
            )
            wait_until(lambda: throttler.measured("wrong") is not None)
            seen = _watch([stranger.pid, untagged], control=parent)  # the tagged parent
        assert "T" not in seen[stranger.pid]
        assert "T" not in seen[untagged]


def test_a_reused_pid_is_never_signalled(tmp_path):
    journal = tmp_path / "paused.json"
    with helpers() as start:
        family = start("family", "1", tags=("api", "tests"), ready=False)
        words = family.readline()
        parent, child = int(words[1]), int(words[2])
        control = start("busy", tags=("api", "lint"))
        # the reference of a process that held the pid before: same pid, another start time
        stale = ProcessRef(parent, _ref(parent).start - 1)
        with Throttler(cores=2, journal=PauseJournal(journal)) as throttler:
            throttler.hold("old", project="api", agent="tests", roots=[stale], target_cores=0.1)
            throttler.hold(
                "control", project="api", agent="lint", roots=[_ref(control.pid)],
                target_cores=0.05,
            )  # fmt: skip
            wait_until(lambda: throttler.measured("old") is not None)
            seen = _watch([parent, child], control=control.pid)
            assert _journaled(journal) == {control.pid}
            assert throttler.measured("old") == 0.0
    assert "T" not in seen[parent]
    assert "T" not in seen[child]
