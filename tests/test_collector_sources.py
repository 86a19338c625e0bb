"""The procfs and psutil sources read the same numbers; procfs edge cases."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

from devloop.collector.model import Reading
from devloop.collector.procfs import ProcfsHandle, ProcfsSource
from devloop.collector.psutil_source import PsutilSource
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

TICK = 1 / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def spawn() -> Iterator[Callable[..., Helper]]:
    with helpers() as start:
        yield start


@pytest.fixture
def procfs() -> Iterator[ProcfsSource]:
    source = ProcfsSource()
    yield source
    source.close()


def read(source: ProcfsSource | PsutilSource, pid: int) -> tuple[int, Reading]:
    found = source.identify(pid)
    assert found is not None
    handle, identity = found
    reading = source.sample(handle)  # type: ignore[arg-type]
    source.release(handle)  # type: ignore[arg-type]
    assert reading is not None
    return identity.start_us, reading


def test_sources_agree_on_live_processes(
    spawn: Callable[..., Helper], procfs: ProcfsSource
) -> None:
    portable = PsutilSource()
    sleeper = spawn("sleep")
    holder = spawn("files", "5", "2")
    burner = spawn("busy")
    wait_until(lambda: proc_cpu_seconds(burner.pid) > 0.05)
    wait_asleep(sleeper.pid, holder.pid)
    for pid in (sleeper.pid, holder.pid, burner.pid, os.getpid()):
        start_a, before = read(procfs, pid)
        start_b, middle = read(portable, pid)
        start_c, after = read(procfs, pid)
        assert start_a == start_c
        assert abs(start_a - start_b) <= 10_000  # 10 ms
        # the psutil reading lies between two procfs readings, give or take a clock tick
        assert before.cpu_seconds - TICK <= middle.cpu_seconds <= after.cpu_seconds + TICK
        assert middle.children_seconds == pytest.approx(before.children_seconds, abs=TICK)
        assert middle.rss_bytes == pytest.approx(before.rss_bytes, rel=0.05)
        assert middle.ppid == before.ppid
        if pid != os.getpid():  # the test itself opens files and starts threads while reading
            assert middle.fds == before.fds == after.fds
            assert middle.threads == before.threads == after.threads
            assert (middle.io_read_bytes, middle.io_write_bytes) == (
                before.io_read_bytes,
                before.io_write_bytes,
            )
        if pid in (sleeper.pid, holder.pid):
            assert middle.state == before.state == "sleeping"
    assert procfs.cores() == portable.cores()
    host_a, host_b = procfs.system(), portable.system()
    assert host_a.mem_total_bytes == host_b.mem_total_bytes
    assert host_a.mem_available_bytes == pytest.approx(host_b.mem_available_bytes, rel=0.05)
    assert host_a.cpu_total_seconds == pytest.approx(host_b.cpu_total_seconds, rel=0.01)
    assert host_a.cpu_busy_seconds == pytest.approx(host_b.cpu_busy_seconds, rel=0.01)


def test_comm_with_spaces_and_parentheses(
    spawn: Callable[..., Helper], procfs: ProcfsSource
) -> None:
    odd = spawn("rename", "a) (b c) ")
    wait_asleep(odd.pid)
    found = procfs.identify(odd.pid)
    assert found is not None
    handle, identity = found
    assert identity.name == "a) (b c) "
    assert identity.ppid == os.getpid()
    reading = procfs.sample(handle)
    assert reading is not None
    assert reading.state == "sleeping"
    assert reading.rss_bytes == pytest.approx(vm_rss_bytes(odd.pid), rel=0.05)
    procfs.release(handle)


def test_kept_open_handle_of_a_reaped_process_reads_as_gone(
    spawn: Callable[..., Helper], procfs: ProcfsSource
) -> None:
    helper = spawn("sleep")
    found = procfs.identify(helper.pid)
    assert found is not None
    handle = found[0]
    assert procfs.sample(handle) is not None
    assert procfs.check(handle) == "same"
    helper.stop()
    assert procfs.check(handle) == "gone"
    assert procfs.sample(handle) is None
    procfs.release(handle)
    assert handle.stat_fd == handle.io_fd == -1


def test_over_the_kept_open_budget_files_are_opened_per_read(
    spawn: Callable[..., Helper], procfs: ProcfsSource
) -> None:
    helper = spawn("files", "3", "1")
    kept = ProcfsSource()
    procfs._fd_budget = 0  # as if RLIMIT_NOFILE were exhausted
    _, with_fds = read(kept, helper.pid)
    found = procfs.identify(helper.pid)
    assert found is not None
    handle: ProcfsHandle = found[0]
    assert handle.stat_fd == -1
    reading = procfs.sample(handle)
    assert reading is not None and handle.io_fd == -1
    assert (reading.fds, reading.threads, reading.io_write_bytes) == (
        with_fds.fds,
        with_fds.threads,
        with_fds.io_write_bytes,
    )
    helper.stop()
    assert procfs.check(handle) == "gone"
    kept.close()


def test_exec_is_noticed(spawn: Callable[..., Helper], procfs: ProcfsSource) -> None:
    helper = spawn(argv=["sh", "-c", "read line; exec sleep 30"], ready=False)
    found = procfs.identify(helper.pid)
    assert found is not None
    handle = found[0]
    assert procfs.check(handle) == "same"
    helper.send("go")
    wait_until(lambda: procfs.process_name(handle) == "sleep" or procfs.check(handle) == "exec")
    assert procfs.process_name(handle) == "sleep"
    procfs.release(handle)


def test_environment_tags(spawn: Callable[..., Helper], procfs: ProcfsSource) -> None:
    tagged = spawn("sleep", tags=("p q", "a=b"))
    plain = spawn("sleep")
    for pid, expected in ((tagged.pid, {"DEVLOOP_PROJECT": "p q", "DEVLOOP_AGENT": "a=b"}),
                          (plain.pid, {})):  # fmt: skip
        found = procfs.identify(pid)
        assert found is not None
        assert procfs.environ_tags(found[0]) == expected
        assert PsutilSource().environ_tags(PsutilSource().identify(pid)[0]) == expected  # type: ignore[index]
        procfs.release(found[0])
