"""Enforcement with real processes: pause, resume, warn, recovery after SIGKILL, pid reuse.

Every burner is tagged with a project name unique to this test run: tagged processes of another
test suite running on the same machine must never be seen (let alone signalled) by ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from devloop.config.load import load_workspace
from devloop.core import signals
from devloop.core.resource_manager import ResourceManager
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.errors import UsageError
from devloop.runner.record import Recorder
from tests.helpers.procs import helpers, proc_state, wait_until

pytestmark = pytest.mark.realtime

RUN = uuid.uuid4().hex[:8]
BUSY = f"busy-{RUN}"  # the project whose burner goes over its limit
CALM = f"calm-{RUN}"


def enforcing_workspace(write_workspace, action="pause", busy_cpu=10, **limits):
    data = {
        "workspace_name": "enforce",
        "projects": [
            {"name": BUSY, "path": "busy", "priority": 2},
            {"name": CALM, "path": "calm", "priority": 1},
        ],
        "global": {
            "resourceLimits": {
                "maxCpu": 60, "maxMemory": "2GB", "checkInterval": 1,
                "enforcementAction": action, "resumeThreshold": 0.8, **limits,
            }
        },
        "resource_sharing": {
            "strategy": "custom",
            "perProjectLimits": {
                BUSY: {"maxCpu": busy_cpu, "maxMemory": "1GB"},
                CALM: {"maxCpu": 20, "maxMemory": "1GB"},
            },
        },
    }  # fmt: skip
    return load_workspace(write_workspace(data))


def log_entries(folder: Path) -> list[dict]:
    path = folder / "resource-enforcement.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def enforcement_state(folder: Path) -> dict:
    return json.loads((folder / "enforcement-state.json").read_text())


def burner_pauses(folder: Path) -> int:
    agent = enforcement_state(folder).get("agents", {}).get(f"{BUSY}/burner", {})
    return int(agent.get("pauses", 0))


def actions(folder: Path, action: str) -> list[dict]:
    return [e for e in log_entries(folder) if e["action"] == action]


def enforcing_collector(folder: Path, stderr: int) -> subprocess.Popen[bytes]:
    """A real ``devloop workspace collect --enforce`` on the workspace, ticking every second."""
    return subprocess.Popen(
        [sys.executable, "-m", "devloop", "workspace", "collect", "--enforce",
         "--workspace-dir", str(folder), "--interval", "1"],
        stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip


class Running:
    """A Recorder with enforcement ticking in a thread until the block ends."""

    def __init__(self, workspace, **options):
        self.recorder = Recorder(workspace, interval=1.0, enforce=True, **options)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.recorder.run, kwargs={"stop": self.stop})

    def __enter__(self):
        self.thread.start()
        return self.recorder

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
        self.recorder.close()


@pytest.mark.slow
def test_a_burner_over_its_project_limit_is_paused_then_resumed(write_workspace):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        calm = start("sleep", tags=(CALM, "watcher"))
        with Running(workspace, min_pause=2.0) as recorder:
            burner = start("busy", tags=(BUSY, "burner"))
            wait_until(lambda: proc_state(burner.pid) == "T")
            # the log line of a pause is written after its SIGSTOP: wait for it too
            wait_until(lambda: actions(folder, "pause"))
            pause = actions(folder, "pause")[0]
            assert pause["scope"] == "project" and pause["project"] == BUSY
            assert pause["agent"] == "burner" and pause["metric"] == "cpu"
            assert burner.pid in pause["pids"]
            assert pause["value"] > 10 and pause["limit"] == 10
            # stopped, it uses no CPU: after the minimum pause it is continued
            wait_until(lambda: actions(folder, "resume"))
            resume = actions(folder, "resume")[0]
            assert resume["project"] == BUSY and burner.pid in resume["pids"]
            # still a burner: it goes over again and is paused again
            wait_until(lambda: len(actions(folder, "pause")) >= 2)
            assert proc_state(calm.pid) != "T"  # the other project's agent is never touched
            # the state file is written after the log line of the same check: wait for it too
            wait_until(lambda: burner_pauses(folder) >= 2)
            state = enforcement_state(folder)
            assert state["projects"][BUSY]["cpu_limit"] == 10
            assert recorder.manager is not None
        # closing devloop continues every paused process
        wait_until(lambda: proc_state(burner.pid) != "T")
    assert not (folder / "enforcement-state.json").exists()
    assert not (folder / ".paused-processes.json").exists()

    from devloop.store.db import connect

    db = connect(folder / "metrics")
    rows = db.execute(
        'SELECT action, scope, project, agent, pids, metric, value, "limit", epoch_us(ts) '
        "FROM events WHERE action IN ('pause', 'resume') ORDER BY ts"
    ).fetchall()
    assert [r[0] for r in rows[:3]] == ["pause", "resume", "pause"]
    assert all(r[2] == BUSY and r[3] == "burner" and burner.pid in r[4] for r in rows)
    # the checks run at their ticks' times (whole seconds here), so a pause lasts whole ticks
    # from the tick it began at: 2 (a slot skipped on a loaded machine: more). Checked at the
    # wall time after sampling, it lasted 2 or 3 ticks by the sampling's jitter.
    paused_us, resumed_us = rows[0][-1], rows[1][-1]
    assert paused_us % 1_000_000 == 0 and resumed_us % 1_000_000 == 0
    assert resumed_us - paused_us >= 2_000_000
    # the pause came within checkInterval + 1 s of the first tick that saw the burner over
    first_over = db.execute(
        "SELECT min(ts) FROM (SELECT ts, sum(cpu_cores) AS cores FROM samples "
        f"WHERE project = '{BUSY}' GROUP BY ts) WHERE cores / (SELECT max(cores) FROM system) "
        "* 100 > 10"
    ).fetchone()[0]
    first_pause = db.execute("SELECT min(ts) FROM events WHERE action = 'pause'").fetchone()[0]
    assert 0 <= (first_pause - first_over).total_seconds() <= 1.0 + 1.0


@pytest.mark.slow
def test_warn_mode_logs_the_overshoot_and_never_signals(write_workspace):
    workspace = enforcing_workspace(write_workspace, action="warn")
    folder = workspace.dir
    with helpers() as start, Running(workspace, min_pause=1.0):
        burner = start("busy", tags=(BUSY, "burner"))
        wait_until(lambda: actions(folder, "warn"))
        states = set()
        for _ in range(60):  # ~3 s: several more checks see it over
            states.add(proc_state(burner.pid))
            threading.Event().wait(0.05)
        assert "T" not in states
        warn = actions(folder, "warn")[0]
        assert warn["scope"] == "project" and warn["project"] == BUSY and warn["metric"] == "cpu"
        assert "over its 10% limit" in warn["message"]
        # only warnings, and not one per check: a new one only after it fell under 0.8 x 10 %
        # (which a loaded machine can make a burner do)
        assert {e["action"] for e in log_entries(folder)} == {"warn"}
        assert len(actions(folder, "warn")) < 5


@pytest.mark.slow
def test_a_sigkilled_devloop_leaves_a_paused_agent_that_the_next_start_resumes(
    write_workspace, tmp_path
):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        burner = start("busy", tags=(BUSY, "burner"))
        collector = enforcing_collector(folder, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: proc_state(burner.pid) == "T")
            wait_until(lambda: (folder / ".paused-processes.json").exists())
            # The watchdog would continue the agent the moment its enforcer dies (see
            # test_watchdog.py): stop it first, to test the next start's own recovery.
            watchdog = folder / ".watchdog.lock"
            wait_until(lambda: watchdog.exists() and watchdog.read_text().strip() != "")
            os.kill(int(watchdog.read_text()), signal.SIGKILL)
        finally:
            collector.kill()
            collector.wait()
        journal = json.loads((folder / ".paused-processes.json").read_text())
        assert [e["pid"] for e in journal["entries"]] == [burner.pid]
        assert proc_state(burner.pid) == "T"  # nobody continued it
        # the next devloop to take the store continues it before anything else
        recorder = Recorder(workspace, interval=1.0, enforce=True)
        try:
            wait_until(lambda: proc_state(burner.pid) != "T")
            recovered = actions(folder, "recover")
            assert recovered and recovered[0]["pids"] == [burner.pid]
            assert not (folder / ".paused-processes.json").exists()
        finally:
            recorder.close()


def test_a_reused_pid_is_never_signalled(tmp_path):
    with helpers() as start:
        victim = start("sleep", tags=("someone", "else"))
        real = signals.ref(victim.pid)
        assert real is not None
        reused = ProcessRef(victim.pid, real.start + 1)  # same pid, another process
        assert signals.send([reused], signal.SIGSTOP, project="someone") == []
        assert signals.stop_tree([reused], project="someone") == []
        assert proc_state(victim.pid) != "T"
        # nor a process of the right identity that is not tagged for the project
        assert signals.stop_tree([real], project="another") == []
        assert proc_state(victim.pid) != "T"
        # a journal naming the pid with another start time does not continue it either
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: proc_state(victim.pid) == "T")
            journal = PauseJournal(tmp_path / "journal.json")
            journal.add("someone", "else", [reused])
            assert PauseJournal(tmp_path / "journal.json").recover() == []
            assert proc_state(victim.pid) == "T"
            # the right identity is continued
            journal = PauseJournal(tmp_path / "journal.json")
            journal.add("someone", "else", [real])
            recovered = PauseJournal(tmp_path / "journal.json").recover()
            assert [e.pid for e in recovered] == [victim.pid]
            wait_until(lambda: proc_state(victim.pid) != "T")
        finally:
            os.kill(victim.pid, signal.SIGCONT)


def test_a_pause_stops_the_whole_tree_and_resume_continues_it(tmp_path):
    child_code = "import time\nwhile True: time.sleep(0.05)"
    parent_code = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
        "print('ready', c.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "c.kill()\n"
    )
    with helpers() as start:
        parent = start(argv=[sys.executable, "-c", parent_code], tags=("tree", "agent"),
                       ready=False)  # fmt: skip
        ready = parent.readline()
        child_pid = int(ready[1])
        root = signals.ref(parent.pid)
        assert root is not None
        stopped = signals.stop_tree([root], project="tree")
        assert {p.pid for p in stopped} == {parent.pid, child_pid}
        wait_until(lambda: proc_state(parent.pid) == "T" and proc_state(child_pid) == "T")
        try:
            continued = signals.continue_all(stopped)
            assert {p.pid for p in continued} == {parent.pid, child_pid}
            wait_until(lambda: proc_state(parent.pid) != "T" and proc_state(child_pid) != "T")
        finally:  # the helpers kill the parent, which would leave its child running
            os.kill(child_pid, signal.SIGKILL)


def test_usage_shapes_follow_the_guide(write_workspace):
    data = {
        "workspace_name": "guide",
        "projects": [{"name": n, "path": n} for n in (f"a-{RUN}", f"b-{RUN}", f"c-{RUN}")],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
        "resource_sharing": {
            "strategy": "weighted",
            "weights": {f"a-{RUN}": 2, f"b-{RUN}": 2, f"c-{RUN}": 1},
        },
    }
    workspace = load_workspace(write_workspace(data))
    with helpers() as start:
        start("sleep", tags=(f"a-{RUN}", "linter"))
        manager = ResourceManager(workspace.dir)  # a folder works as well as a Workspace
        try:
            usage = manager.get_workspace_usage()
            assert set(usage) == {"cpu_percent", "memory_mb", "cpu_limit", "memory_limit_mb"}
            assert usage["cpu_limit"] == 60 and usage["memory_limit_mb"] == 2048.0
            assert 0 <= usage["cpu_percent"] < 60 and usage["memory_mb"] > 1  # the sleeper
            a = manager.get_project_usage(f"a-{RUN}")
            assert a["cpu_limit"] == 24 and a["memory_limit_mb"] == pytest.approx(819.2, abs=0.05)
            assert a["memory_mb"] == usage["memory_mb"]
            c = manager.get_project_usage(f"c-{RUN}")
            assert c == {"cpu_percent": 0.0, "memory_mb": 0.0, "cpu_limit": 12,
                         "memory_limit_mb": pytest.approx(409.6, abs=0.05)}  # fmt: skip
            agent = manager.get_agent_usage(f"a-{RUN}", "linter")
            assert agent["state"] == "running" and len(agent["pids"]) == 1
            assert manager.can_run_agent("linter", f"a-{RUN}")
            assert manager.can_run_agent(f"c-{RUN}/linter")
            assert manager.wait_for_resources("linter", f"a-{RUN}", timeout=0)
            assert manager.resume_paused_agents() == []
            with pytest.raises(UsageError, match="unknown project 'nope'"):
                manager.get_project_usage("nope")
        finally:
            manager.close()


def test_can_run_agent_says_no_while_the_project_is_over(write_workspace):
    workspace = enforcing_workspace(write_workspace, action="warn", busy_cpu=5)
    with helpers() as start:
        start("busy", tags=(BUSY, "burner"))
        manager = ResourceManager(workspace, enforce=False)
        try:
            wait_until(lambda: manager.get_project_usage(BUSY)["cpu_percent"] > 5)
            assert not manager.can_run_agent("linter", BUSY)
            assert manager.can_run_agent("linter", CALM)
            assert not manager.wait_for_resources("linter", BUSY, timeout=0.5, poll=0.2)
        finally:
            manager.close()


def admission_workspace(write_workspace, **overflow):
    data = {
        "workspace_name": "admit",
        "projects": [{"name": BUSY, "path": "busy"}, {"name": CALM, "path": "calm"}],
        "global": {
            "maxConcurrentAgents": 1,
            "resourceLimits": {"maxCpu": 60, "maxMemory": "2GB", "checkInterval": 1,
                               "overflow": overflow},
        },
    }  # fmt: skip
    return load_workspace(write_workspace(data))


def test_run_is_refused_when_the_slots_are_taken_and_overflow_is_off(write_workspace):
    from devloop.errors import EnforcementError
    from devloop.runner.run import run_agent

    workspace = admission_workspace(write_workspace, enabled=False)
    with helpers() as start:
        start("sleep", tags=(CALM, "watcher"))  # the one slot of maxConcurrentAgents
        with pytest.raises(EnforcementError, match=r"1 agents already run .*enable"):
            run_agent(workspace, BUSY, "linter", [sys.executable, "-c", "pass"], record=False)
    refused = actions(workspace.dir, "queue-full")
    assert (
        refused
        and refused[0]["project"] == BUSY
        and "overflow queueing is disabled" in (refused[0]["message"])
    )


@pytest.mark.slow
def test_run_waits_in_the_queue_and_gives_up_after_max_wait_time(write_workspace):
    from devloop.errors import EnforcementError
    from devloop.runner.run import run_agent

    workspace = admission_workspace(write_workspace, enabled=True, maxWaitTime=1)
    with helpers() as start:
        start("sleep", tags=(CALM, "watcher"))
        with pytest.raises(EnforcementError, match=r"waited 1s \(overflow.maxWaitTime\)"):
            run_agent(workspace, BUSY, "linter", [sys.executable, "-c", "pass"], record=False)
    assert [e["action"] for e in log_entries(workspace.dir)] == ["queue", "queue-timeout"]


@pytest.mark.slow
def test_a_queued_run_starts_when_the_slot_frees(write_workspace, tmp_path):
    from devloop.runner.run import run_agent

    workspace = admission_workspace(write_workspace, enabled=True, maxWaitTime=120)
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('yes')"
    result: list[int] = []
    with helpers() as start:
        watcher = start("sleep", tags=(CALM, "watcher"))
        runner = threading.Thread(
            target=lambda: result.append(
                run_agent(workspace, BUSY, "linter", [sys.executable, "-c", code])
            )
        )
        runner.start()
        wait_until(lambda: actions(workspace.dir, "queue"))
        assert not marker.exists()  # still waiting for the slot
        watcher.stop()
        runner.join(120)
    assert result == [0] and marker.read_text() == "yes"
    assert [e["action"] for e in log_entries(workspace.dir)][:2] == ["queue", "dequeue"]
    from devloop.store.db import connect

    db = connect(workspace.dir / "metrics")
    events = [r[0] for r in db.execute("SELECT action FROM events ORDER BY ts").fetchall()]
    assert events.index("queue") < events.index("dequeue") < events.index("agent-start")


@pytest.mark.slow
def test_dynamic_rebalancing_moves_cpu_to_the_busy_project_live(write_workspace):
    data = {
        "workspace_name": "dynamic",
        "projects": [{"name": BUSY, "path": "busy"}, {"name": CALM, "path": "calm"}],
        "global": {"resourceLimits": {"maxCpu": 20, "maxMemory": "2GB", "checkInterval": 1,
                                      "enforcementAction": "warn"}},
        "resource_sharing": {
            "strategy": "dynamic",
            "adaptation": {"enabled": True, "adjustmentFrequency": 2, "usageThreshold": 0.8,
                           "reallocationFactor": 0.2},
        },
    }  # fmt: skip
    workspace = load_workspace(write_workspace(data))
    with helpers() as start:
        start("sleep", tags=(CALM, "watcher"))
        with Running(workspace) as recorder:
            # it needs only 0.16 cores (80 % of its 10 % of 2 cores), even on a loaded machine
            start("busy", tags=(BUSY, "burner"))
            wait_until(lambda: actions(workspace.dir, "limit-change"), timeout=60)
            assert recorder.manager is not None
            live = recorder.manager.allocation.projects
            assert live[BUSY].cpu >= 12.0 - 1e-9  # 12 after the first move, more after others
            assert live[BUSY].cpu + live[CALM].cpu == pytest.approx(20.0)
    change = actions(workspace.dir, "limit-change")[0]
    assert change["project"] in (BUSY, CALM) and change["metric"] == "cpu"
    from devloop.store.db import connect

    db = connect(workspace.dir / "metrics")
    rows = db.execute(
        "SELECT project, cpu_limit_percent FROM limits WHERE reason = 'rebalance' AND agent = '' "
        "ORDER BY ts, project"
    ).fetchall()
    first = dict(rows[:2])
    assert first == {BUSY: pytest.approx(12.0), CALM: pytest.approx(8.0)}
    start_rows = dict(
        db.execute(
            "SELECT project, cpu_limit_percent FROM limits WHERE reason = 'start'"
        ).fetchall()
    )
    assert start_rows == {BUSY: 10.0, CALM: 10.0}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_devloop_resumes_every_paused_agent(write_workspace, sig):
    workspace = enforcing_workspace(write_workspace)
    folder = workspace.dir
    with helpers() as start:
        burner = start("busy", tags=(BUSY, "burner"))
        collector = enforcing_collector(folder, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: proc_state(burner.pid) == "T")
            collector.send_signal(sig)
            _, err = collector.communicate(timeout=60)
            assert collector.returncode == 0, err
        finally:
            if collector.poll() is None:
                collector.kill()
            collector.communicate()
        wait_until(lambda: proc_state(burner.pid) != "T")
        resumed = actions(folder, "resume")
        assert resumed and "devloop is stopping" in resumed[-1]["message"]
        assert not (folder / ".paused-processes.json").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to start a process as another user")
def test_a_process_of_another_user_is_never_signalled():
    env = {**os.environ, "DEVLOOP_PROJECT": "theirs", "DEVLOOP_AGENT": "x"}
    other = subprocess.Popen(["sleep", "60"], env=env, user=65534, group=65534, cwd="/")
    try:
        wait_until(lambda: signals.ref(other.pid) is not None)
        process = signals.ref(other.pid)
        assert process is not None
        assert not signals.verify(process, project="theirs")
        assert not signals.verify(process, project="theirs", started=[process])
        assert signals.stop_tree([process], project="theirs", started=[process]) == []
        assert proc_state(other.pid) != "T"
    finally:
        other.kill()
        other.wait()


def _start_us(pid: int) -> int:
    from devloop.collector.procfs import boot_us

    process = signals.ref(pid)
    assert process is not None
    return boot_us() + process.start * 1_000_000 // os.sysconf("SC_CLK_TCK")


def _tick(usage: dict[tuple[str, str], tuple[int, float, int]], cores: int = 2):
    """A tick claiming ``usage[(project, agent)] = (pid, cores used, rss bytes)``: the
    decisions of a check depend on the tick only, the signals on the real processes."""
    from devloop.collector.model import Tick

    ts = 1_000_000
    samples = [
        (ts, "h", project, agent, pid, _start_us(pid), 1, "x", used, 1.0, rss, 3, 1, None, None,
         "sleeping")
        for (project, agent), (pid, used, rss) in usage.items()
    ]  # fmt: skip
    return Tick(ts, samples, [], (ts, "h", cores, 0.0, 1, 1, 1))


def test_the_largest_consumer_of_the_project_is_paused_first_and_only_as_needed(write_workspace):
    workspace = enforcing_workspace(write_workspace, busy_cpu=30)
    with helpers() as start:
        a, b, c = (start("sleep", tags=(BUSY, name)) for name in ("a", "b", "c"))
        manager = ResourceManager(workspace, min_pause=3600)
        try:
            # 2 cores: 0.2 cores = 10 %. The project is at 45 % of its 30 %.
            manager.observe(_tick({(BUSY, "a"): (a.pid, 0.2, 1 << 20),
                                   (BUSY, "b"): (b.pid, 0.4, 1 << 20),
                                   (BUSY, "c"): (c.pid, 0.3, 1 << 20)}))  # fmt: skip
            done = manager.check()
            # pausing b (20 %) brings it to 25 %: nothing else is touched
            assert [(x.action, x.agent) for x in done] == [("pause", "b")]
            wait_until(lambda: proc_state(b.pid) == "T")
            assert proc_state(a.pid) != "T" and proc_state(c.pid) != "T"
            assert manager.paused_agents() == [(BUSY, "b")]
            assert manager.get_agent_usage(BUSY, "b")["state"] == "paused"
            assert not manager.can_run_agent("b", BUSY)
            # resume_paused_agents(force=True) continues it whatever the usage
            assert manager.resume_paused_agents(force=True) == [(BUSY, "b")]
            wait_until(lambda: proc_state(b.pid) != "T")
        finally:
            manager.close()


def test_memory_over_the_limit_pauses_once_not_everything(write_workspace):
    workspace = enforcing_workspace(write_workspace)  # busy project: 1GB
    gib = 1 << 30
    with helpers() as start:
        a, b = (start("sleep", tags=(BUSY, name)) for name in ("a", "b"))
        manager = ResourceManager(workspace, min_pause=0)
        try:
            # b alone (0.75GB) is under 0.8 x 1GB: a pause can end (test_policy.py has the
            # agent whose own memory is over it, which is resumed rather than kept stopped)
            tick = _tick(
                {(BUSY, "a"): (a.pid, 0.0, gib // 2), (BUSY, "b"): (b.pid, 0.0, 3 * gib // 4)}
            )
            manager.observe(tick)
            done = manager.check()
            assert [(x.action, x.agent, x.metric) for x in done] == [("pause", "b", "memory")]
            assert done[0].value == 1.25 * gib and done[0].limit == gib
            # still 1.25GB allocated, but b is stopped and cannot grow: a is left running, and
            # b stays paused (1.25GB is not under 0.8 x 1GB)
            for _ in range(3):
                manager.observe(tick)
                assert manager.check() == []
            assert proc_state(a.pid) != "T"
            # a's memory goes: the project is under 0.8 x 1GB again, b is resumed
            manager.observe(
                _tick({(BUSY, "a"): (a.pid, 0.0, 0), (BUSY, "b"): (b.pid, 0.0, gib // 2)})
            )
            assert [(x.action, x.agent) for x in manager.check()] == [("resume", "b")]
            wait_until(lambda: proc_state(b.pid) != "T")
        finally:
            manager.close()


@pytest.mark.slow
def test_throttle_holds_a_burner_near_its_project_limit(write_workspace):
    from tests.helpers.procs import proc_cpu_seconds

    workspace = enforcing_workspace(write_workspace, action="throttle", busy_cpu=20)
    folder = workspace.dir
    with helpers() as start:
        with Running(workspace):
            burner = start("busy", tags=(BUSY, "burner"))
            wait_until(lambda: actions(folder, "throttle"))
            throttle = actions(folder, "throttle")[0]
            assert throttle["project"] == BUSY and throttle["agent"] == "burner"
            assert burner.pid in throttle["pids"]
            threading.Event().wait(2.0)  # let the controller settle
            cpu0, t0 = proc_cpu_seconds(burner.pid), time.monotonic()
            threading.Event().wait(4.0)
            used = (proc_cpu_seconds(burner.pid) - cpu0) / (time.monotonic() - t0)
            # 20 % of 2 cores = 0.4 cores; unthrottled it would use 1 core
            assert 0.2 < used < 0.65, used
            assert not actions(folder, "pause")
        wait_until(lambda: proc_state(burner.pid) != "T")
        assert actions(folder, "unthrottle")


def test_a_cpu_pause_ends_while_memory_sits_between_the_threshold_and_the_limit(write_workspace):
    workspace = enforcing_workspace(write_workspace)  # busy: 10 % CPU, 1GB, threshold 0.8
    gib = 1 << 30
    with helpers() as start:
        holder, burner = (start("sleep", tags=(BUSY, name)) for name in ("holder", "burner"))
        manager = ResourceManager(workspace, min_pause=0)
        try:
            # 0.9GB held (allowed: under 1GB, over 0.8 x 1GB) and a burner over the CPU limit
            over = {(BUSY, "holder"): (holder.pid, 0.0, gib * 9 // 10),
                    (BUSY, "burner"): (burner.pid, 1.0, 1 << 20)}  # fmt: skip
            manager.observe(_tick(over))
            assert [(x.action, x.agent, x.metric) for x in manager.check()] == [
                ("pause", "burner", "cpu")
            ]
            stopped = {**over, (BUSY, "burner"): (burner.pid, 0.0, 1 << 20)}
            manager.observe(_tick(stopped))
            assert [(x.action, x.agent) for x in manager.check()] == [("resume", "burner")]
        finally:
            manager.close()


def test_an_unknown_profile_is_refused_before_the_store_is_opened(write_workspace):
    from devloop.errors import UsageError

    workspace = enforcing_workspace(write_workspace)
    with pytest.raises(UsageError, match="unknown resource profile 'nope'"):
        Recorder(workspace, enforce=True, profile="nope")
    assert not (workspace.dir / "metrics").exists()
    Recorder(workspace, enforce=True).close()  # nothing was left locked


def test_a_run_begun_as_the_agents_held_run_ended_is_held_too(write_workspace):
    # issue 14 (bench/replay_vs_real.py): a run started as its agent's held run ended (the agent
    # never without processes at a check) ran at full speed, 3 CPU-s in 4-8 s under a
    # 0.05-0.1-core cap: the policy sees the agent held all along and decides no new hold, and
    # the throttler held the trees of the old run only
    from tests.helpers.procs import proc_cpu_seconds

    workspace = enforcing_workspace(write_workspace, action="throttle", busy_cpu=20)
    with helpers() as start:
        first = start("busy", tags=(BUSY, "burner"))
        manager = ResourceManager(workspace, min_pause=0)
        try:
            manager.observe(_tick({(BUSY, "burner"): (first.pid, 1.0, 1 << 20)}))
            manager.check()  # 50 % of the machine over the project's 20 %: held at 0.4 cores
            assert manager.policy.throttled == {(BUSY, "burner")}
            first.proc.kill()  # the run ends (SIGKILL reaches a stopped process too)
            first.proc.wait()
            second = start("busy", tags=(BUSY, "burner"))  # the agent's next run
            manager.observe(_tick({(BUSY, "burner"): (second.pid, 1.0, 1 << 20)}))
            manager.check()
            wait_until(lambda: proc_state(second.pid) == "T")  # the duty cycle reaches it
            cpu0, t0 = proc_cpu_seconds(second.pid), time.monotonic()
            threading.Event().wait(3.0)
            used = (proc_cpu_seconds(second.pid) - cpu0) / (time.monotonic() - t0)
            assert used < 0.65, used  # held at 0.4 cores; free it would take a whole core
        finally:
            manager.close()
        wait_until(lambda: proc_state(second.pid) != "T")
