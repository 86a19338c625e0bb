"""The watchdog: a process devloop stopped is continued when the devloop that stopped it dies.

Real enforcers (``workspace collect --enforce``, ``devloop run``) stop real tagged burners and
are killed with SIGKILL; the burners must leave state T within the documented bound without any
other devloop command, and the watchdog must exit once it has continued them. The burners are
tagged with project names unique to this test run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devloop.config.load import load_workspace
from devloop.core import signals, watchdog
from devloop.core.resource_manager import ResourceManager
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.runner.record import Recorder
from tests.helpers.procs import BURN, helpers, proc_state, wait_until

pytestmark = pytest.mark.realtime

RUN = uuid.uuid4().hex[:8]
BUSY = f"wd-busy-{RUN}"
CALM = f"wd-calm-{RUN}"
BOUND = 20.0  # the documented bound is 10 s; a loaded 2-core machine gets twice that


def enforcing_workspace(write_workspace):
    data = {
        "workspace_name": "watchdog",
        "projects": [{"name": BUSY, "path": "busy"}, {"name": CALM, "path": "calm"}],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB", "checkInterval": 1,
                                      "enforcementAction": "pause", "resumeThreshold": 0.8}},
        "resource_sharing": {
            "strategy": "custom",
            "perProjectLimits": {BUSY: {"maxCpu": 5, "maxMemory": "1GB"},
                                 CALM: {"maxCpu": 20, "maxMemory": "1GB"}},
        },
    }  # fmt: skip
    return load_workspace(write_workspace(data))


def log_entries(folder: Path, action: str) -> list[dict]:
    path = folder / "resource-enforcement.log"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["action"] == action]


def journaled(folder: Path) -> list[int]:
    try:
        data = json.loads((folder / ".paused-processes.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [e["pid"] for e in data["entries"]]


def watchdog_pid(folder: Path) -> int | None:
    try:
        text = (folder / watchdog.WATCHDOG_LOCK).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def watchdogs(folder: Path) -> list[int]:
    """The live watchdogs of the workspace folder (by their command line)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"devloop.core.watchdog" in argv and str(folder).encode() in b" ".join(argv):
            if not gone(int(name)):
                found.append(int(name))
    return found


def gone(pid: int) -> bool:
    """Exited (a zombie its new parent has not reaped yet counts)."""
    try:
        return proc_state(pid) in ("Z", "X")
    except FileNotFoundError:
        return True


def left_stopped(pid: int) -> float:
    """Seconds until ``pid`` is no longer stopped; fails after BOUND."""
    t0 = time.monotonic()
    wait_until(lambda: gone(pid) or proc_state(pid) != "T", timeout=BOUND, step=0.005)
    return time.monotonic() - t0


def devloop(*args: str, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "devloop", *args],
                            stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip


@pytest.mark.slow
def test_a_killed_enforcer_s_paused_agent_is_continued_by_the_watchdog(write_workspace):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        burner = start("busy", tags=(BUSY, "burner"))
        calm = start("sleep", tags=(CALM, "watcher"))
        collector = devloop("workspace", "collect", "--enforce", "--workspace-dir", str(folder),
                            "--interval", "1")  # fmt: skip
        try:  # paused (for at least 5 s, the minimum pause)
            wait_until(lambda: proc_state(burner.pid) == "T" and journaled(folder) != [])
        finally:
            collector.kill()
            collector.wait()
        took = left_stopped(burner.pid)
        print(f"continued {took * 1000:.0f} ms after the enforcer's SIGKILL")
        # continued by the watchdog, not by another devloop: none was started
        wait_until(lambda: log_entries(folder, "recover") != [])  # written just after
        [recovered] = log_entries(folder, "recover")
        assert recovered["pids"] == [burner.pid] and recovered["project"] == BUSY
        assert "continued by the watchdog" in recovered["message"]
        assert not (folder / ".paused-processes.json").exists()
        # its job done, the watchdog exits; it never touched the other project's agent
        wait_until(lambda: watchdogs(folder) == [])
        assert watchdog_pid(folder) is None
        assert proc_state(calm.pid) != "T"


@pytest.mark.slow
def test_the_command_of_a_killed_devloop_run_is_continued_by_the_watchdog(write_workspace):
    """The issue's recipe: ``kill -9`` of the ``devloop run`` that paused its own command."""
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    run = devloop("run", "--workspace-dir", str(folder), "-p", BUSY, "-a", "burner",
                  "--", sys.executable, str(BURN), "busy", "120")  # fmt: skip
    agent: ProcessRef | None = None
    try:
        wait_until(lambda: journaled(folder) != [] and proc_state(journaled(folder)[0]) == "T",
                   timeout=60)  # fmt: skip
        agent = signals.ref(journaled(folder)[0])
        assert agent is not None
        run.kill()
        run.wait()
        left_stopped(agent.pid)
        wait_until(lambda: log_entries(folder, "recover") != [])
        assert log_entries(folder, "recover")[0]["pids"] == [agent.pid]
        wait_until(lambda: watchdogs(folder) == [])
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if agent is not None and signals.same(agent):  # orphaned now: nobody else ends it
            os.kill(agent.pid, signal.SIGKILL)
            wait_until(lambda: gone(agent.pid))


def test_a_live_enforcer_s_paused_agent_is_not_continued_by_the_next_start(write_workspace):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        held = start("sleep", tags=(BUSY, "held"))
        manager = ResourceManager(workspace, min_pause=3600)
        try:
            manager.observe(tick_of(held.pid, BUSY, "held", cores=1.0))  # 50 % over its 5 %
            assert [(a.action, a.agent) for a in manager.check()] == [("pause", "held")]
            wait_until(lambda: proc_state(held.pid) == "T")
            guard = watchdog_pid_soon(folder)
            # a recorder starting now finds the journal of an enforcer that is alive: not its
            # to recover (it would leave the agent running with nobody enforcing its limits)
            Recorder(workspace, interval=1.0, enforce=True).close()
            assert proc_state(held.pid) == "T"
            assert log_entries(folder, "recover") == []
        finally:
            manager.close()
        wait_until(lambda: proc_state(held.pid) != "T")
        wait_until(lambda: gone(guard))  # the enforcer let go: the watchdog found nothing left
    assert log_entries(folder, "recover") == []


def tick_of(pid: int, project: str, agent: str, cores: float):
    """A tick of a 2-core machine in which ``pid`` (alive) uses ``cores``."""
    from devloop.collector.model import Tick
    from devloop.collector.procfs import boot_us

    process = signals.ref(pid)
    assert process is not None
    start_us = boot_us() + process.start * 1_000_000 // os.sysconf("SC_CLK_TCK")
    ts = 1_000_000
    sample = (ts, "h", project, agent, pid, start_us, 1, "x", cores, 1.0, 1 << 20, 3, 1, None,
              None, "sleeping")  # fmt: skip
    return Tick(ts, [sample], [], (ts, "h", 2, 0.0, 1, 1, 1))


def watchdog_pid_soon(folder: Path) -> int:
    wait_until(lambda: watchdog_pid(folder) is not None)
    pid = watchdog_pid(folder)
    assert pid is not None
    return pid


def test_without_enforcer_nor_watchdog_the_next_start_recovers_and_says_so(write_workspace, caplog):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        held = start("sleep", tags=(BUSY, "held"))
        process = signals.ref(held.pid)
        assert process is not None
        # what a killed enforcer whose watchdog was killed too leaves: a journal, no lock held
        PauseJournal(folder / ".paused-processes.json").add(BUSY, "held", [process])
        os.kill(held.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: proc_state(held.pid) == "T")
            with caplog.at_level(logging.WARNING, logger="devloop.core.resource_manager"):
                Recorder(workspace, interval=1.0, enforce=True).close()
            assert proc_state(held.pid) != "T"
            [recovered] = log_entries(folder, "recover")
            assert recovered["pids"] == [held.pid]
            assert f"continued {BUSY}/held (pids {held.pid})" in caplog.text
            assert "enforced only while a devloop enforces" in caplog.text
        finally:
            os.kill(held.pid, signal.SIGCONT)


def test_the_watchdog_continues_only_the_journaled_process_with_its_start_time(tmp_path):
    journal_path = tmp_path / ".paused-processes.json"
    with helpers() as start:
        victim = start("sleep", tags=("someone", "else"))
        other = start("sleep", tags=("someone", "else"))
        real = signals.ref(victim.pid)
        assert real is not None
        reused = ProcessRef(victim.pid, real.start + 1)  # the same pid, another process
        for pid in (victim.pid, other.pid):
            os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: proc_state(victim.pid) == proc_state(other.pid) == "T")
            PauseJournal(journal_path).add("someone", "else", [reused])
            assert run_watch(tmp_path) == []
            assert proc_state(victim.pid) == "T"  # a pid alone is not enough
            PauseJournal(journal_path).add("someone", "else", [real])
            assert [e.process for e in run_watch(tmp_path)] == [real]
            wait_until(lambda: proc_state(victim.pid) != "T")
            assert proc_state(other.pid) == "T"  # stopped, but not by devloop: not listed
            assert not journal_path.exists()
            [line] = log_entries(tmp_path, "recover")
            assert line["pids"] == [victim.pid] and line["project"] == "someone"
        finally:
            for pid in (victim.pid, other.pid):
                os.kill(pid, signal.SIGCONT)


def run_watch(folder: Path) -> list[signals.JournalEntry]:
    """The watchdog's work, in this process (no enforcer holds the lock: it returns at once)."""
    fd = os.open(folder / watchdog.WATCHDOG_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    return watchdog.watch(fd, folder / watchdog.ENFORCER_LOCK,
                          folder / ".paused-processes.json",
                          folder / "resource-enforcement.log")  # fmt: skip


def test_one_watchdog_per_workspace_waiting_while_any_enforcer_holds_the_lock(tmp_path):
    journal = tmp_path / ".paused-processes.json"
    first = watchdog.Guard(journal, tmp_path / "log")
    second = watchdog.Guard(journal, tmp_path / "log")
    try:
        first.arm()
        pid = watchdog_pid_soon(tmp_path)
        second.arm()
        first.arm()  # again: still the one
        assert watchdog_pid(tmp_path) == pid and first._spawned == [pid]
        assert second._spawned == []
        with first.alone() as alone:
            assert not alone  # armed enforcers own the journal
        first.disarm()
        with first.alone() as alone:
            assert not alone  # the second enforcer still holds it: the watchdog waits on
        assert not gone(pid)
    finally:
        first.disarm()
        second.disarm()
    wait_until(lambda: gone(pid))
    first._reap()
    assert first._spawned == []
    with first.alone() as alone:
        assert alone
