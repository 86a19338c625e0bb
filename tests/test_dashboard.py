"""The live dashboard: snapshots, the screen as a pure function, viewing that never writes,
recording that enforces, and the real command in a pty."""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from rich.console import Console

from devloop.config import load_workspace
from devloop.config.models import Workspace
from devloop.dashboard.app import ANOTHER, NOT_RECORDING, RECORDING, run_dashboard, who_records
from devloop.dashboard.data import DashboardData, Event, History, Run, bucket, load
from devloop.dashboard.screen import bar, build_screen, layout, resample, sparkline
from devloop.dashboard.snapshot import (
    STATE_FILE,
    Limit,
    Limits,
    ProcessSample,
    build_snapshot,
    parse_state,
    read_state,
)
from devloop.simulate import simulate
from devloop.store import write_table
from devloop.store.columns import RUNS
from devloop.store.db import connect
from devloop.store.lock import writer_lock
from tests.helpers.procs import helpers, proc_state, wait_until

pytestmark = pytest.mark.realtime

DEADLINE = 60.0  # generous: a loaded 2-core machine may take long to start Python and DuckDB
GIB = 1024**3
RUN = uuid.uuid4().hex[:8]
#: Projects of the recording tests: unique, so that no other suite's tagged process is enforced.
BUSY = f"busy-{RUN}"
CALM = f"calm-{RUN}"


def state_fixture(pid: int | None = None, ts: float | None = None) -> dict:
    """An enforcement-state.json as the enforcement contract describes it: proj-1/linter paused
    (twice so far), proj-2/test-runner queued."""
    return {
        "version": 1,
        "ts": time.time() if ts is None else ts,
        "pid": os.getpid() if pid is None else pid,
        "interval": 1.0,
        "strategy": "weighted",
        "profile": "dev",
        "enforcement": "pause",
        "workspace": {"cpu_percent": 12.5, "memory_bytes": 300 * 1024**2,
                      "cpu_limit": 60.0, "memory_limit_bytes": 2 * GIB},
        "projects": {
            "proj-1": {"cpu_percent": 10.0, "memory_bytes": 200 * 1024**2, "cpu_limit": 30.0,
                       "memory_limit_bytes": GIB, "priority": 1},
            "proj-2": {"cpu_percent": 2.5, "memory_bytes": 100 * 1024**2, "cpu_limit": 20.0,
                       "memory_limit_bytes": 512 * 1024**2, "priority": 2},
            "proj-3": {"cpu_percent": 0.0, "memory_bytes": 0, "cpu_limit": 10.0,
                       "memory_limit_bytes": 512 * 1024**2, "priority": 2},
        },
        "agents": {
            "proj-1/linter": {"project": "proj-1", "agent": "linter", "state": "paused",
                              "pids": [4242], "cpu_percent": 10.0, "memory_bytes": 200 * 1024**2,
                              "fds": 12, "threads": 3, "cpu_limit": 5.0,
                              "memory_limit_bytes": 128 * 1024**2, "pauses": 2, "resumes": 1},
            "proj-2/test-runner": {"project": "proj-2", "agent": "test-runner",
                                   "state": "queued", "pids": [], "cpu_percent": 0.0,
                                   "memory_bytes": 0, "fds": 0, "threads": 0, "cpu_limit": None,
                                   "memory_limit_bytes": None, "pauses": 0, "resumes": 0},
        },
        "queue": [{"project": "proj-2", "agent": "test-runner", "since": time.time() - 5}],
        "pauses_total": 2,
    }  # fmt: skip


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """A 20-minute simulated workspace at 5 s ticks: 3 projects x 2 agents."""
    folder = tmp_path_factory.mktemp("dash") / ".devloop-workspace"
    simulate(folder, hours=1 / 3, projects=3, agents_per_project=2, interval=5, seed=1)
    return folder


# --- snapshots -------------------------------------------------------------------------------


LIMITS = Limits(
    projects={"api": Limit(30.0, GIB, 1), "web": Limit(20.0, 512 * 1024**2, 2)},
    agents={"api/linter": Limit(5.0, 128 * 1024**2)},
    strategy="weighted",
)


def test_snapshot_sums_a_tick_per_agent_project_and_workspace():
    samples = [
        ProcessSample("api", "linter", 0.5, 100 * 1024**2, 10, 2, "running"),
        ProcessSample("api", "linter", 0.25, 50 * 1024**2, 5, 1, "sleeping"),
        ProcessSample("web", "tests", 1.0, 200 * 1024**2, 20, 4, "stopped"),
    ]
    snap = build_snapshot(samples, at=100.0, cores=4, limits=LIMITS, projects=["api", "web", "db"])
    assert [p.name for p in snap.projects] == ["api", "db", "web"]
    api = snap.project("api").usage
    assert (api.cpu_cores, api.cpu_percent, api.memory_bytes, api.fds, api.threads) == (
        0.75, 18.75, 150 * 1024**2, 15, 3)  # fmt: skip
    assert (api.cpu_limit, api.memory_limit_bytes, api.processes) == (30.0, GIB, 2)
    assert snap.project("db").usage.cpu_limit is None  # not in the limits: no limit shown
    linter = snap.agent("api/linter")
    assert (linter.state, linter.usage.cpu_limit, linter.usage.cpu_of_limit) == (
        "running", 5.0, 18.75 / 5.0)  # fmt: skip
    # every process of web/tests is stopped: paused, and bounded by its project (no own limit)
    tests = snap.agent("web/tests")
    assert (tests.state, tests.usage.cpu_limit) == ("paused", None)
    assert snap.workspace.cpu_percent == 43.75
    assert snap.workspace.cpu_limit is None  # db has no limit: the sum is unknown
    assert (snap.enforcement, snap.limits_source, snap.strategy) == (None, "workspace.json",
                                                                     "weighted")  # fmt: skip


def test_the_state_file_gives_states_counts_queue_and_limits():
    data = state_fixture()
    data["projects"] = {"api": {"cpu_limit": 40.0, "memory_limit_bytes": GIB, "priority": 0}}
    data["agents"] = {
        "api/linter": {
            "state": "throttled",
            "pids": [1],
            "cpu_limit": 4.0,
            "memory_limit_bytes": None,
            "pauses": 3,
            "resumes": 2,
        }
    }
    data["queue"] = [{"project": "web", "agent": "build", "since": 50.0}]
    samples = [ProcessSample("api", "linter", 0.5, 1024, 1, 1, "running")]
    snap = build_snapshot(samples, at=100.0, cores=2, limits=LIMITS, state=parse_state(data),
                          projects=["api", "web"])  # fmt: skip
    linter = snap.agent("api/linter")
    assert (linter.state, linter.pauses, linter.resumes) == ("throttled", 3, 2)
    assert (linter.usage.cpu_limit, linter.usage.memory_limit_bytes) == (4.0, None)
    api = snap.project("api")
    assert (api.usage.cpu_limit, api.priority, api.pauses) == (40.0, 0, 3)
    assert snap.project("web").usage.cpu_limit == 20.0  # the store's, where the file says nothing
    assert (snap.workspace.cpu_limit, snap.workspace.memory_limit_bytes) == (60.0, 2 * GIB)
    assert [(q.project, q.agent, q.since) for q in snap.queue] == [("web", "build", 50.0)]
    assert (snap.pauses_total, snap.enforcement, snap.profile) == (2, "pause", "dev")


def test_a_left_over_state_file_is_ignored_with_a_note(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / STATE_FILE).write_text(json.dumps(state_fixture(pid=int(dead.stdout))))
    state, note = read_state(tmp_path)
    assert state is None and note == (
        f"ignored {tmp_path / STATE_FILE}: its writer (pid {int(dead.stdout)}) is gone"
    )
    (tmp_path / STATE_FILE).write_text(json.dumps(state_fixture(ts=1000.0)))
    state, note = read_state(tmp_path, now=1000.0 + 301)
    assert state is None and note is not None and note.endswith("written 301s ago")
    state, note = read_state(tmp_path, now=1000.0 + 299)
    assert state is not None and note is None and state.agents["proj-1/linter"].pauses == 2
    (tmp_path / STATE_FILE).write_text('{"version": 2}')
    assert read_state(tmp_path)[0] is None
    assert read_state(tmp_path / "nowhere") == (None, None)


# --- drawing pieces --------------------------------------------------------------------------


def test_bars_sparklines_and_buckets():
    assert bar(0.5, 10).plain == "█████░░░░░"
    assert bar(1.7, 4).plain == "████"
    assert bar(None, 3).plain == "···"
    assert sparkline([0.0, 15.0, 30.0, None, 60.0], 30.0).plain == "▁▅█ █"
    assert sparkline([1.0, 2.0], None).plain == "▅█"
    history = bucket([(10.0, 1.0, 5.0), (20.0, 3.0, 7.0), (40.0, 8.0, 1.0), (41.0, 9.0, 2.0)],
                     start=0.0, end=40.0, points=4)  # fmt: skip
    assert history.cpu_percent == (1.0, 3.0, None, 8.0)  # 41 is after the end
    assert history.memory_bytes == (5.0, 7.0, None, 1.0)
    assert resample([1.0, 3.0, None, 8.0], 2, peak=False) == [2.0, 8.0]
    assert resample([1.0, 3.0, None, 8.0], 2, peak=True) == [3.0, 8.0]
    assert resample([1.0, 2.0], 4, peak=False) == [1.0, 1.0, 2.0, 2.0]


def _render(data: DashboardData, width: int, metrics=("cpu", "memory", "agents")) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    console.print(build_screen(data, width=width, metrics=metrics))
    return console.export_text()


def test_the_screen_of_a_real_store_fits_every_width(sim, monkeypatch):
    (sim / STATE_FILE).write_text(json.dumps(state_fixture()))
    try:
        workspace = load_workspace(sim)
        connection = connect(sim / "metrics")
        data = load(connection, workspace, now=time.time())
    finally:
        (sim / STATE_FILE).unlink()
    assert [p.name for p in data.snapshot.projects] == ["proj-1", "proj-2", "proj-3"]
    assert set(data.history) == {"proj-1", "proj-2", "proj-3"}
    assert len(data.history["proj-1"].cpu_percent) == 120
    wide = _render(data, 120)
    assert "enforcement pause" in wide and "weighted/dev" in wide
    assert "Workspace" in wide and "/ 60%" in wide and "/ 2GB" in wide
    for line in ("proj-1/linter", "proj-2/test-runner"):
        assert line in wide
    assert re.search(r"proj-1/linter\s+paused", wide)
    assert re.search(r"proj-2/test-runner\s+queued", wide)
    assert "Queue (1): proj-2/test-runner" in wide
    assert re.search(r"proj-1 .*/ 30% .*/ 1GB", wide), wide
    assert "CPU 5m" in wide  # the sparkline column
    for width in (120, 100, 80, 60, 40):
        text = _render(data, width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "proj-1" in text or "proj…" in text
    narrow = _render(data, 80)
    assert "CPU 5m" in narrow and "█" not in narrow.split("Workspace")[1].split("project")[1]
    memory_only = _render(data, 100, metrics=("memory",))
    assert "CPU" not in memory_only and "mem 5m" in memory_only
    assert "proj-1/linter" not in memory_only  # no agents table


def test_layout_gives_bars_and_a_sparkline_when_there_is_room(sim):
    data = load(connect(sim / "metrics"), load_workspace(sim))
    assert layout(data, ("cpu", "memory"), 200) == (20, 60)  # both at their caps
    bars, spark = layout(data, ("cpu", "memory"), 100)
    assert bars >= 4 and spark >= 8
    sizes = [layout(data, ("cpu", "memory"), width) for width in range(30, 201)]
    assert all(bars == 0 for bars, spark in sizes if spark == 0)  # bars go first
    assert any(bars == 0 and spark >= 8 for bars, spark in sizes)
    assert layout(data, ("cpu", "memory"), 30) == (0, 0)
    assert layout(data, ("agents",), 200) == (0, 60)


def test_events_show_the_enforcement_and_not_the_collector(sim):
    data = load(connect(sim / "metrics"), load_workspace(sim), events=50)
    actions = {event.action for event in data.events}
    assert actions == {"warn", "pause", "resume"}  # the simulator's; start/stop left out
    pause = next(e for e in data.events if e.action == "pause")
    text = _render(
        DashboardData(name="x", snapshot=data.snapshot, events=(pause,), history={}), 160
    )
    assert f"pause      {pause.project}" in text
    empty = DashboardData(name="x", snapshot=data.snapshot, history={"proj-1": History((), ())},
                          events=(), now=data.snapshot.at)  # fmt: skip
    assert "none recorded" in _render(empty, 100) and "(0s ago)" in _render(empty, 100)
    assert Event(0.0, "warn", None, None, None, None, None, None, None).action == "warn"


def test_the_last_runs_panel_shows_exit_and_duration(sim, tmp_path):
    t0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)

    def run(run_id, agent, started, ended, status="complete", exit_code=0, signal=None):
        values = {"ts": t0 + timedelta(seconds=started), "host": "h1", "run_id": run_id,
                  "project": "api", "agent": agent, "trigger": "watch", "status": status,
                  "started": t0 + timedelta(seconds=started),
                  "ended": t0 + timedelta(seconds=ended), "exit_code": exit_code,
                  "signal": signal}  # fmt: skip
        return {column.name: values.get(column.name) for column in RUNS}

    rows = [
        run("r1", "linter", 0, 1.25),
        run("r2", "tests", 10, 12.5, exit_code=1),
        run("r3", "build", 20, 95, exit_code=None, signal=9),
        run("r4", "tests", 30, 30.5, status="incomplete", exit_code=None),
    ]
    write_table(tmp_path / "metrics", "runs", pa.Table.from_pylist(rows))
    data = load(connect(tmp_path / "metrics"), load_workspace(sim), runs=3)
    t = t0.timestamp()
    assert data.runs == (
        Run("api", "tests", "incomplete", None, None, t + 30, t + 30.5),
        Run("api", "build", "complete", None, 9, t + 20, t + 95),
        Run("api", "tests", "complete", 1, None, t + 10, t + 12.5),
    )
    assert [(r.duration, r.failed) for r in data.runs] == [(0.5, True), (75.0, True),
                                                          (2.5, True)]  # fmt: skip
    assert not Run("api", "linter", "complete", 0, None, t, t + 1.25).failed
    text = _render(data, 100)
    assert (
        "Last runs\n"
        "  10:00:30 incomplete    0.5s  api/tests\n"
        "  10:00:20 signal 9     1m15s  api/build\n"
        "  10:00:10 exit 1        2.5s  api/tests\n"
        "Latest events"
    ) in text
    # a store without runs shows no panel
    quiet = load(connect(tmp_path / "quiet"), load_workspace(sim))
    assert quiet.runs == () and "Last runs" not in _render(quiet, 100)


# --- viewing never writes; recording records and enforces -----------------------------------


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time, by relative path."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def copy_of(sim: Path, tmp_path: Path) -> Path:
    """A copy of the simulated workspace, free to change."""
    target = tmp_path / "copy" / ".devloop-workspace"
    shutil.copytree(sim, target)
    return target


def recording_workspace(folder: Path, check_interval: float = 0.5) -> Workspace:
    """A fresh workspace whose BUSY project may use 10 % of the machine (pause beyond)."""
    folder.mkdir(parents=True)
    data = {
        "workspace_name": "recording",
        "projects": [{"name": BUSY, "path": "busy"}, {"name": CALM, "path": "calm"}],
        "global": {"resourceLimits": {
            "maxCpu": 60, "maxMemory": "2GB", "checkInterval": check_interval,
            "enforcementAction": "pause", "resumeThreshold": 0.8,
        }},
        "resource_sharing": {"strategy": "custom", "perProjectLimits": {
            BUSY: {"maxCpu": 10, "maxMemory": "1GB"}, CALM: {"maxCpu": 20, "maxMemory": "1GB"},
        }},
    }  # fmt: skip
    (folder / "workspace.json").write_text(json.dumps(data))
    return load_workspace(folder)


Until = Callable[[str], bool]


class Screen(io.StringIO):
    """What rich draws for a terminal; sets ``stop`` (quits the dashboard) once ``until()``."""

    def __init__(self, stop: threading.Event, until: Until) -> None:
        super().__init__()
        self.stop, self.until = stop, until

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.until(ANSI.sub("", self.getvalue())):
            self.stop.set()
        return written


def headless(workspace: Workspace, until: Until, **options: Any) -> str:
    """Run the dashboard in this process, without a terminal, until ``until(screen text)``
    (or DEADLINE); returns the screen's text."""
    stop = threading.Event()
    screen = Screen(stop, until)
    console = Console(file=screen, width=140, height=60, force_terminal=True, color_system=None)
    timer = threading.Timer(DEADLINE, stop.set)
    timer.start()
    try:
        run_dashboard(workspace, refresh=0.1, keys=io.StringIO(), console=console, stop=stop,
                      **options)  # fmt: skip
    finally:
        timer.cancel()
    text = ANSI.sub("", screen.getvalue())
    assert until(text), f"the screen never showed what was awaited:\n{text[-3000:]}"
    return text


def test_viewing_leaves_every_file_of_the_workspace_unchanged(sim, tmp_path):
    folder = copy_of(sim, tmp_path)
    before = tree(folder.parent)
    text = headless(load_workspace(folder),
                    lambda t: f"collector: {NOT_RECORDING}" in t and "proj-3" in t)  # fmt: skip
    assert "DevLoop" in text and "Workspace" in text
    assert tree(folder.parent) == before  # names, sizes and modification times


def test_the_status_line_says_who_records(sim, tmp_path):
    folder = copy_of(sim, tmp_path)
    workspace = load_workspace(folder)
    assert who_records(workspace, None) == NOT_RECORDING  # no lock file: never recorded
    collector = writer_lock(folder / "metrics")  # as a running collector holds it
    try:
        assert who_records(workspace, None) == ANOTHER
        before = tree(folder.parent)
        text = headless(workspace, lambda t: f"collector: {ANOTHER}" in t, record=True)
        assert tree(folder.parent) == before  # asked to record, it leaves that to the collector
        assert RECORDING not in text
    finally:
        collector.release()
    assert who_records(workspace, None) == NOT_RECORDING


def test_recording_records_enforces_and_stops_cleanly(tmp_path):
    folder = tmp_path / ".devloop-workspace"
    workspace = recording_workspace(folder)
    text = headless(workspace, lambda t: "enforcement pause" in t and "tick " in t, record=True)
    # the live state only an enforcer writes was on the screen, with this dashboard as collector
    assert f"collector: {RECORDING}" in text
    db = connect(folder / "metrics")
    assert db.execute("SELECT count(*) FROM system").fetchall()[0][0] >= 1
    actions = [r[0] for r in db.execute("SELECT action FROM events ORDER BY ts").fetchall()]
    assert actions[0] == "start" and actions[-1] == "stop"
    assert not list((folder / "metrics" / "_spool").glob("*.seg"))  # every tick in Parquet
    assert not (folder / STATE_FILE).exists()  # the enforcement ended
    assert who_records(workspace, None) == NOT_RECORDING  # and released the store


# --- the real command in a pseudo-terminal ---------------------------------------------------

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Z]|[=>78])")
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|4[0-8]|9[0-7])(?:;[0-9]+)*m")


class Terminal:
    """A command running in a pseudo-terminal of ``columns`` x ``lines``."""

    def __init__(self, argv: list[str], columns: int, lines: int, env: dict[str, str]) -> None:
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))

        def controlling_terminal() -> None:  # so that Ctrl-C typed there is a SIGINT
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=controlling_terminal,
            env={**env, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm-256color"},
        )  # fmt: skip
        os.close(slave)
        self.raw = b""

    def read_until(self, *needles: str, deadline: float = DEADLINE) -> str:
        """Read output until every needle shows in it (escapes removed); fail at the deadline."""
        end = time.monotonic() + deadline
        while True:
            text = self.text()
            if all(needle in text for needle in needles):
                return text
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not self._ready(0):
                missing = [n for n in needles if n not in text]
                raise AssertionError(f"screen never showed {missing}:\n{text[-3000:]}")
            if self._ready(min(left, 0.5)):
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    continue

    def _ready(self, timeout: float) -> bool:
        return bool(select.select([self.master], [], [], timeout)[0])

    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, deadline: float = DEADLINE) -> int:
        end = time.monotonic() + deadline
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError("the dashboard did not exit")
            if self._ready(0.2):
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def dashboard_argv(folder: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "devloop", "workspace", "dashboard", "--workspace-dir",
            str(folder), "--refresh", "1s", *options]  # fmt: skip


@pytest.mark.slow
def test_the_dashboard_in_a_terminal_shows_projects_limits_and_the_paused_agent(sim, tmp_path):
    folder = copy_of(sim, tmp_path)
    (folder / STATE_FILE).write_text(json.dumps(state_fixture()))
    before = tree(folder.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
    env["NO_COLOR"] = "1"
    argv = dashboard_argv(folder, "--metrics", "cpu,memory,agents")
    terminal = Terminal(argv, columns=100, lines=40, env=env)
    try:
        screen = terminal.read_until("collector: none running", "q quits", "/ 30%", "/ 1GB")
        assert "proj-1" in screen and "proj-2" in screen
        assert "enforcement pause" in screen
        assert re.search(r"proj-1/linter\s+paused", screen)
        terminal.send(b"q")
        assert terminal.wait() == 0
    finally:
        terminal.close()
    raw = terminal.raw.decode("utf-8", "replace")
    assert not COLOUR.search(raw), "NO_COLOR is set, yet colours were sent"
    # viewing wrote nothing: no lock, no spool, no new hour, no event
    assert tree(folder.parent) == before


def _last_tick(screen: str) -> str:
    """The newest tick time the screen showed (HH:MM:SS)."""
    found: list[str] = re.findall(r"tick (\d\d:\d\d:\d\d) UTC", screen)
    assert found, screen[-3000:]
    return found[-1]


@pytest.mark.slow
def test_with_record_it_records_enforces_and_stores_its_last_ticks_on_q(tmp_path):
    folder = tmp_path / ".devloop-workspace"
    recording_workspace(folder, check_interval=1.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
    env["NO_COLOR"] = "1"
    with helpers() as start:
        calm = start("sleep", tags=(CALM, "watcher"))
        terminal = Terminal(dashboard_argv(folder, "--record"), columns=120, lines=40, env=env)
        try:
            terminal.read_until(f"collector: {RECORDING}", f"{CALM}/watcher", "q quits")
            # an agent started while the dashboard records is held to its limits
            burner = start("busy", tags=(BUSY, "burner"))
            wait_until(lambda: proc_state(burner.pid) == "T", timeout=DEADLINE)
            screen = terminal.read_until(f"{BUSY}/burner")
            terminal.send(b"q")
            assert terminal.wait() == 0
            screen = terminal.text()
        finally:
            terminal.close()
        # quitting resumed what it paused, and left the other agent alone throughout
        wait_until(lambda: proc_state(burner.pid) != "T")
        assert proc_state(calm.pid) != "T"
    db = connect(folder / "metrics")
    pauses = db.execute("SELECT project, agent FROM events WHERE action = 'pause'").fetchall()
    assert (BUSY, "burner") in pauses
    seen = db.execute("SELECT count(*) FROM samples WHERE pid = ?", [burner.pid]).fetchone()
    assert seen is not None and seen[0] >= 1
    actions = [r[0] for r in db.execute("SELECT action FROM events ORDER BY ts").fetchall()]
    assert actions[0] == "start" and actions[-1] == "stop"
    # its last ticks reached the store: at least up to the newest one on the screen, all in
    # Parquet, and the store is free for the next collector
    newest = db.execute("SELECT strftime(max(ts), '%H:%M:%S') FROM system").fetchone()
    assert newest is not None and newest[0] >= _last_tick(screen)
    assert not list((folder / "metrics" / "_spool").glob("*.seg"))
    assert not (folder / STATE_FILE).exists()
    assert who_records(load_workspace(folder), None) == NOT_RECORDING


@pytest.mark.slow
def test_ctrl_c_quits_cleanly_and_colour_is_on_without_no_color(sim, tmp_path):
    folder = copy_of(sim, tmp_path)
    before = tree(folder.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DEVLOOP_PROJECT")}
    terminal = Terminal(dashboard_argv(folder, "--no-record"), columns=80, lines=30, env=env)
    try:
        screen = terminal.read_until("collector: none running", "q quits", "proj-3")
        assert "Workspace" in screen
        terminal.send(b"\x03")  # Ctrl-C, through the terminal's line discipline
        assert terminal.wait() == 0
    finally:
        terminal.close()
    assert COLOUR.search(terminal.raw.decode("utf-8", "replace"))
    assert tree(folder.parent) == before


def test_bad_options_are_refused_before_anything_runs(sim):
    from click.testing import CliRunner

    from devloop.cli import cli

    base = ["workspace", "dashboard", "--workspace-dir", str(sim)]
    result = CliRunner().invoke(cli, [*base, "--metrics", "cpu,disk"])
    assert result.exit_code == 2
    assert "Invalid value for --metrics: unknown 'disk' (choose from cpu, memory, agents)" in (
        result.stderr
    )
    result = CliRunner().invoke(cli, [*base, "--refresh", "0s"])
    assert result.exit_code == 2
    assert "Invalid value for --refresh: must be above 0, got '0s'" in result.stderr
    result = CliRunner().invoke(cli, [*base, "--profile", "dev"])
    assert result.exit_code == 2
    assert "Error: --profile is the profile to enforce: it needs --record" in result.stderr


def test_ctrl_c_quits_even_inside_code_that_swallows_keyboard_interrupt(sim, monkeypatch):
    """Ctrl-C sets the dashboard's stop and wakes its wait: it quits even when the signal lands
    in code that catches the KeyboardInterrupt (a library's blanket ``except``), as a DuckDB
    query on a loaded machine once did (the dashboard kept drawing, a test hung 60 s)."""
    import devloop.dashboard.app as app

    frames = []
    real = app._frame

    def swallowing(*args: Any) -> Any:
        frames.append(time.monotonic())
        if len(frames) == 1:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            time.sleep(1.0)  # the signal arrives here
        except KeyboardInterrupt:
            pass
        return real(*args)

    monkeypatch.setattr(app, "_frame", swallowing)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under a shell's background job
    stop = threading.Event()
    timer = threading.Timer(DEADLINE, stop.set)  # without the fix: drawn until this deadline
    timer.start()
    try:
        run_dashboard(load_workspace(sim), refresh=0.1, keys=io.StringIO(), stop=stop,
                      console=Console(file=io.StringIO(), width=100))  # fmt: skip
    finally:
        timer.cancel()
    assert len(frames) == 1
    assert signal.getsignal(signal.SIGINT) == before  # given back
