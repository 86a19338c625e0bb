"""The collector on real processes: CPU accounting, metrics, lifecycle."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devloop.collector import Collector, Tick
from devloop.errors import CollectorError, UsageError
from devloop.store.schema import PROCESSES, SAMPLES, SYSTEM
from tests.helpers.procs import (
    Helper,
    helpers,
    proc_cpu_seconds,
    vm_rss_bytes,
    wait_asleep,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.realtime,
]

SOURCES = ["procfs", "psutil"]
# Unique per test session: another suite running on the same machine tags its processes too.
PROJECT = f"proj-{os.getpid()}"
TAGS = (PROJECT, "burner")


@pytest.fixture
def spawn() -> Iterator[Callable[..., Helper]]:
    with helpers() as start:
        yield start


def rows(tick: Tick, pid: int) -> list[dict[str, Any]]:
    return [dict(zip(SAMPLES.names, row, strict=True)) for row in tick.samples if row[4] == pid]


def row(tick: Tick, pid: int) -> dict[str, Any]:
    found = rows(tick, pid)
    assert len(found) == 1, found
    return found[0]


def tick_for(
    collector: Collector, seconds: float, step: float = 0.2, first: Tick | None = None
) -> list[Tick]:
    """Tick every ``step`` seconds for at least ``seconds`` seconds (after ``first``)."""
    ticks = [first or collector.tick()]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(step)
        ticks.append(collector.tick())
    return ticks


def cpu_used(ticks: list[Tick], pids: set[int]) -> float:
    """CPU seconds the collector attributes to ``pids`` over the ticks after the first."""
    total = 0.0
    for before, after in zip(ticks, ticks[1:], strict=False):
        interval = (after.ts_us - before.ts_us) / 1e6
        for sample in after.samples:
            if sample[4] in pids and sample[8] is not None:
                total += sample[8] * interval
    return total


@pytest.mark.parametrize("source", SOURCES)
def test_busy_loop_reads_about_one_core(spawn: Callable[..., Helper], source: str) -> None:
    burner = spawn("busy", tags=TAGS)

    def bracketed_tick(collector: Collector) -> tuple[float, Tick, float]:
        # the kernel's counter read just before and just after the collector reads it
        return proc_cpu_seconds(burner.pid), collector.tick(), proc_cpu_seconds(burner.pid)

    with Collector(source=source) as collector:
        collector.tick()
        first_low, first, first_high = bracketed_tick(collector)
        ticks = tick_for(collector, 1.2, first=first)
        last_low, last, last_high = bracketed_tick(collector)
        ticks.append(last)
    wall = (ticks[-1].ts_us - ticks[0].ts_us) / 1e6
    counted = cpu_used(ticks, {burner.pid})
    # exact against the kernel's own counter, to a clock tick at each end
    assert last_low - first_high - 0.02 <= counted <= last_high - first_low + 0.02
    # ... and absolute: one busy thread gets a whole core unless the machine is saturated,
    # in which case it still gets a visible share
    cores = counted / wall
    assert 0.1 <= cores <= 1.1
    host = [t.system for t in ticks[1:] if t.system[3] is not None]
    spare = sum(s[2] - s[3] for s in host) / len(host)  # type: ignore[operator]
    if spare > 0.5:
        assert cores >= 0.6, f"{cores:.2f} cores with {spare:.2f} cores to spare"
    samples = [s for t in ticks[1:] for s in rows(t, burner.pid)]
    assert all(s["project"] == PROJECT and s["agent"] == "burner" for s in samples)
    assert last_low <= samples[-1]["cpu_seconds"] <= last_high


@pytest.mark.parametrize("source", SOURCES)
def test_sleeping_process_reads_zero(spawn: Callable[..., Helper], source: str) -> None:
    sleeper = spawn("sleep", tags=TAGS)
    wait_asleep(sleeper.pid)
    with Collector(source=source) as collector:
        ticks = tick_for(collector, 0.8)
    values = [s["cpu_cores"] for t in ticks[1:] for s in rows(t, sleeper.pid)]
    assert len(values) == len(ticks) - 1
    assert max(values) <= 0.06  # one 10 ms clock tick over a 0.2 s interval is 0.05
    assert {s["state"] for t in ticks for s in rows(t, sleeper.pid)} == {"sleeping"}


@pytest.mark.parametrize("source", SOURCES)
def test_preexisting_process_first_row_has_no_rate(
    spawn: Callable[..., Helper], source: str
) -> None:
    sleeper = spawn("sleep", tags=TAGS)
    with Collector(source=source) as collector:
        first = row(collector.tick(), sleeper.pid)
        second = row(collector.tick(), sleeper.pid)
    assert first["cpu_cores"] is None  # its CPU was spent before the collector looked
    assert second["cpu_cores"] is not None


@pytest.mark.parametrize("source", SOURCES)
def test_new_process_counts_all_its_cpu(spawn: Callable[..., Helper], source: str) -> None:
    with Collector(source=source) as collector:
        before = collector.tick()
        burner = spawn("busy", tags=TAGS)
        wait_until(lambda: proc_cpu_seconds(burner.pid) >= 0.3)
        after = collector.tick()
        cpu = proc_cpu_seconds(burner.pid)
    sample = row(after, burner.pid)
    interval = (after.ts_us - before.ts_us) / 1e6
    # it started after the previous tick, so all of its CPU was spent in this interval
    assert sample["cpu_cores"] * interval == pytest.approx(sample["cpu_seconds"], abs=0.01)
    assert 0.3 <= sample["cpu_seconds"] <= cpu


@pytest.mark.parametrize("source", SOURCES)
def test_unseen_child_cpu_goes_to_parent(spawn: Callable[..., Helper], source: str) -> None:
    parent = spawn("spawner", tags=TAGS)
    with Collector(source=source) as collector:
        before = collector.tick()
        parent_before = proc_cpu_seconds(parent.pid)
        parent.send("child 0.4")  # runs, exits and is reaped between two ticks
        assert parent.readline()[0] == "started"
        words = parent.readline()
        after = collector.tick()
        parent_after = proc_cpu_seconds(parent.pid)
    assert words[0] == "done"
    child_cpu = float(words[1])
    assert child_cpu >= 0.4
    interval = (after.ts_us - before.ts_us) / 1e6
    counted = row(after, parent.pid)["cpu_cores"] * interval
    assert counted == pytest.approx(child_cpu + parent_after - parent_before, abs=0.04)
    assert row(after, parent.pid)["agent"] == "burner"


@pytest.mark.parametrize("source", SOURCES)
def test_sampled_child_is_not_counted_twice(spawn: Callable[..., Helper], source: str) -> None:
    parent = spawn("spawner", tags=TAGS)
    with Collector(source=source) as collector:
        ticks = [collector.tick()]
        parent_before = proc_cpu_seconds(parent.pid)
        parent.send("child 0.8")
        child_pid = int(parent.readline()[1])
        while not parent.has_line():  # tick while the child burns, then once after its end
            time.sleep(0.1)
            ticks.append(collector.tick())
        words = parent.readline()
        ticks.append(collector.tick())
        parent_after = proc_cpu_seconds(parent.pid)
    child_cpu = float(words[1])
    seen = [s for t in ticks for s in rows(t, child_pid)]
    assert seen, "the child was never sampled; the machine is too slow for this test"
    assert all(s["agent"] == "burner" for s in seen)
    counted = cpu_used(ticks, {parent.pid, child_pid})
    # the child's tail after its last sample is credited to the parent, the rest is not
    assert counted == pytest.approx(child_cpu + parent_after - parent_before, abs=0.05)


@pytest.mark.parametrize("source", SOURCES)
def test_sampled_grandchild_is_not_counted_twice(spawn: Callable[..., Helper], source: str) -> None:
    parent = spawn("spawner", tags=TAGS)
    with Collector(source=source) as collector:
        ticks = [collector.tick()]
        parent_before = proc_cpu_seconds(parent.pid)
        parent.send("grandchild 0.8")
        child_pid = int(parent.readline()[1])
        while not parent.has_line():  # tick while the grandchild burns, then once after
            time.sleep(0.1)
            ticks.append(collector.tick())
        words = parent.readline()
        ticks.append(collector.tick())
        parent_after = proc_cpu_seconds(parent.pid)
    total = float(words[1])  # the child's and the grandchild's CPU, as the parent reaped it
    parents = {row[4]: row[6] for t in ticks for row in t.samples}
    family = {parent.pid}
    while grown := {pid for pid, ppid in parents.items() if ppid in family} - family:
        family |= grown
    sampled = family
    grandchildren = sampled - {parent.pid, child_pid}
    assert grandchildren, "the grandchild was never sampled; the machine is too slow for this test"
    counted = cpu_used(ticks, sampled)
    # What was sampled counts once: the reaped remainder goes to the parent, minus what the
    # child and the grandchild were already counted for.
    assert counted == pytest.approx(total + parent_after - parent_before, abs=0.06)


@pytest.mark.parametrize("source", SOURCES)
def test_rss_fds_threads(spawn: Callable[..., Helper], source: str) -> None:
    helper = spawn("files", "7", "3", tags=TAGS, ready=False)
    words = helper.readline()
    fds, threads = int(words[1]), int(words[2])
    with Collector(source=source) as collector:
        sample = row(collector.tick(), helper.pid)
        rss = vm_rss_bytes(helper.pid)
    assert fds >= 10 and threads == 4
    assert sample["fds"] == fds
    assert sample["threads"] == threads
    assert sample["rss_bytes"] == pytest.approx(rss, rel=0.05)
    assert sample["io_read_bytes"] is not None and sample["io_write_bytes"] is not None


@pytest.mark.parametrize("source", SOURCES)
def test_rows_follow_the_schema(spawn: Callable[..., Helper], source: str) -> None:
    helper = spawn("sleep", tags=TAGS)
    with Collector(source=source, host="h1") as collector:
        time.sleep(0.05)  # lets the host CPU counters move (they count in 10 ms steps)
        tick = collector.tick()
    assert all(len(r) == len(SAMPLES.names) for r in tick.samples)
    assert all(len(r) == len(PROCESSES.names) for r in tick.new_processes)
    assert len(tick.system) == len(SYSTEM.names)
    process = next(
        dict(zip(PROCESSES.names, r, strict=True)) for r in tick.new_processes if r[2] == helper.pid
    )
    assert process["host"] == "h1"
    assert process["project"] == PROJECT and process["agent"] == "burner"
    assert process["ppid"] == os.getpid()
    assert process["cmdline"].endswith("burn.py sleep")
    assert process["cwd"] == os.getcwd()
    assert process["username"]
    system = dict(zip(SYSTEM.names, tick.system, strict=True))
    assert system["cores"] == os.cpu_count()
    assert 0 <= system["cpu_busy_cores"] <= system["cores"] + 0.01
    assert 0 < system["mem_available_bytes"] <= system["mem_total_bytes"]
    assert system["mem_used_bytes"] == system["mem_total_bytes"] - system["mem_available_bytes"]
    assert abs(tick.ts_us / 1e6 - time.time()) < 60


@pytest.mark.parametrize("source", SOURCES)
def test_exited_process_is_dropped(spawn: Callable[..., Helper], source: str) -> None:
    helper = spawn("sleep", tags=TAGS)
    with Collector(source=source) as collector:
        first = collector.tick()
        assert rows(first, helper.pid)
        assert not [r for r in collector.tick().new_processes if r[2] == helper.pid]
        helper.stop()  # killed and reaped
        assert not rows(collector.tick(), helper.pid)


def test_closing_releases_kept_open_files(spawn: Callable[..., Helper]) -> None:
    before = len(os.listdir("/proc/self/fd"))
    helper = spawn("sleep", tags=TAGS)
    collector = Collector(source="procfs")
    collector.tick()
    assert len(os.listdir("/proc/self/fd")) > before
    helper.stop()
    collector.tick()
    collector.close()
    assert len(os.listdir("/proc/self/fd")) <= before
    with pytest.raises(CollectorError, match="closed"):
        collector.tick()


def test_now_sets_the_timestamp() -> None:
    with Collector() as collector:
        tick = collector.tick(now=1_700_000_000.25)
    assert tick.ts_us == 1_700_000_000_250_000
    assert tick.system[0] == tick.ts_us


def test_unknown_source_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown collector source 'wmi'"):
        Collector(source="wmi")


def test_public_api() -> None:
    import devloop.collector as collector

    assert sorted(collector.__all__) == sorted(
        [
            "OTHER_PROJECT", "Attribution", "Attributor", "Collector", "Identity", "ProcessRow",
            "Reading", "Rule", "SampleRow", "Source", "SystemReading", "SystemRow", "Tick",
            "command_matches", "make_source", "rules_for",
        ]
    )  # fmt: skip
    for name in collector.__all__:
        assert getattr(collector, name) is not None
