"""``devloop watch``: real watch processes running real agents on real file changes.

Every project name is unique to this test run: tagged processes of another test suite running on
the same machine must never be seen (let alone signalled) by ours, nor theirs by us. Markers are
written by the agents themselves (their own start and end times), outside the watched folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.collector.attribution import OTHER_PROJECT
from devloop.config.load import load_workspace
from devloop.config.models import Agent
from devloop.runner.record import Recorder
from devloop.runner.watch import (
    CREATED,
    DELETED,
    LOG_KEEP,
    MODIFIED,
    Debouncer,
    WatchedAgent,
    file_events,
    matches_glob,
    stale_logs,
    watch_targets,
)
from devloop.store.db import connect
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.realtime

RUN = uuid.uuid4().hex[:8]
DEADLINE = 60.0  # a loaded 2-core machine can be slow to start Python processes
REPO = Path(__file__).resolve().parent.parent
RUN_LINE = re.compile(r"(\S+/\S+): exit (\d+)(?: \(signal \d+\))? after \d+\.\ds\Z")

AGENT = """\
import os, signal, sys, time

marker, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
options = sys.argv[4:]
if "--ignore-term" in options:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def note(what):
    with open(marker, "a") as out:
        out.write(f"{name} {what} {time.time():.6f} {os.getpid()}\\n")


first = not os.path.exists(marker) or not any(
    line.split()[0] == name for line in open(marker)
)
note("start")
for option in options:
    if option.startswith("--rewrite=") and first:  # a formatter rewriting files, on its first run
        for i in range(3):
            with open(option.split("=", 1)[1], "a") as out:
                out.write(f"# rewritten {i}\\n")
            time.sleep(0.4)
time.sleep(seconds)
note("end")
"""


class Setup:
    """A workspace in tmp_path: one project (folder ``proj``), agents running AGENT."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.root = tmp_path
        self.project = f"watch-{name}-{RUN}"
        self.folder = tmp_path / ".devloop-workspace"
        self.proj = tmp_path / "proj"
        self.marker = tmp_path / "markers" / "runs.txt"
        self.script = tmp_path / "bin" / "agent.py"
        for folder in (self.folder, self.proj / "src", self.proj / "docs", self.marker.parent,
                       self.script.parent):  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
        self.script.write_text(AGENT)

    def command(self, name: str, seconds: float, *options: str) -> list[str]:
        return [sys.executable, str(self.script), str(self.marker), name, str(seconds), *options]

    def write(self, agents: dict[str, Any], **global_: Any) -> None:
        limits = {"checkInterval": 1, **global_.pop("resourceLimits", {})}
        data = {
            "workspace_name": "watch",
            "projects": [{"name": self.project, "path": "proj"}],
            "global": {"resourceLimits": limits, **global_},
            "resource_profiles": {"dev": {"cpuLimit": 70, "memoryLimit": "3GB"}},
        }
        (self.folder / "workspace.json").write_text(json.dumps(data, indent=2))
        agents_file = self.proj / ".devloop" / "agents.json"
        agents_file.parent.mkdir(exist_ok=True)
        agents_file.write_text(json.dumps({"agents": agents}, indent=2))

    def runs(self) -> list[tuple[str, str, float, int]]:
        """(agent, start|end, unix time, pid) as the agents wrote them."""
        if not self.marker.exists():
            return []
        out = []
        for line in self.marker.read_text().splitlines():
            name, what, ts, pid = line.split()
            out.append((name, what, float(ts), int(pid)))
        return out

    def of(self, name: str, what: str) -> list[tuple[str, str, float, int]]:
        return [r for r in self.runs() if r[0] == name and r[1] == what]

    def events(self) -> list[tuple[str, str]]:
        db = connect(self.folder / "metrics")
        return db.execute(
            "SELECT action, agent FROM events WHERE project = ? ORDER BY ts", [self.project]
        ).fetchall()


class WatchProcess:
    """``python -m devloop watch`` on a Setup (watching ``path``, default its root), killed at
    the end of the test whatever happens."""

    def __init__(
        self, setup: Setup, *options: str, env: dict[str, str] | None = None,
        debounce: str = "0.2s", path: Path | None = None,
    ) -> None:  # fmt: skip
        self.setup = setup
        self.out = setup.root / "watch.out"
        self.err = setup.root / "watch.err"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
        argv = [sys.executable, "-m", "devloop", "watch", str(path or setup.root),
                "--workspace-dir", str(setup.folder), "--debounce", debounce,
                *options]  # fmt: skip
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, cwd=setup.root, env={**clean, **(env or {})}
            )

    def stderr(self) -> str:
        return self.err.read_text()

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def runs(self) -> list[tuple[str, int]]:
        """(project/agent, exit status) of every run line printed so far."""
        return [(m[1], int(m[2])) for line in self.lines() if (m := RUN_LINE.match(line))]

    def count(self, name: str) -> int:
        """How many runs of ``name`` (project/agent) were printed so far."""
        return sum(run == name for run, _ in self.runs())

    def wait_ready(self) -> None:
        wait_until(lambda: "Watching" in self.stderr() or self.proc.poll() is not None, DEADLINE)
        assert self.proc.poll() is None, self.stderr()

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(DEADLINE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watching():
    started: list[WatchProcess] = []

    def start(setup: Setup, *options: str, **kwargs: Any) -> WatchProcess:
        process = WatchProcess(setup, *options, **kwargs)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.kill()


@pytest.mark.slow
def test_watch_runs_matching_agents_once_more_after_changes_during_a_run(tmp_path, watching):
    s = Setup(tmp_path, "fmt")
    module = s.proj / "src" / "mod.py"
    s.write({
        # rewrites mod.py three times during its first run (1.2 s), as a formatter does, and
        # runs 0.5 s more: every rewrite lands while it runs
        "fmt": {"command": s.command("fmt", 0.5, f"--rewrite={module}"),
                "triggers": ["file:modified", "file:created"],
                "config": {"filePatterns": ["**/*.py"]}},
        "ondel": {"command": s.command("ondel", 0), "triggers": ["file:deleted"]},
        "docs": {"command": s.command("docs", 0), "config": {"filePatterns": ["docs/*.md"]}},
        "off": {"command": s.command("off", 0), "enabled": False},
    })  # fmt: skip
    watch = watching(s, "--metrics-output", str(tmp_path / "active.json"), "--interval", "0.5s")
    module.write_text("x = 1\n")

    wait_until(lambda: sum(f"{s.project}/fmt: exit" in line for line in watch.lines()) >= 2,
               DEADLINE)  # fmt: skip
    # A barrier: deleting a file runs "ondel"; a third fmt run, had the rewrites scheduled one,
    # would have started before (right after the second run ended) and shows below.
    module.unlink()
    wait_until(lambda: any(f"{s.project}/ondel: exit" in line for line in watch.lines()), DEADLINE)
    assert watch.stop(signal.SIGINT) == 0, watch.stderr()

    starts, ends = s.of("fmt", "start"), s.of("fmt", "end")
    assert len(starts) == 2 and len(ends) == 2  # the three rewrites gave exactly one more run
    assert starts[0][2] < ends[0][2] <= starts[1][2] < ends[1][2]  # one run at a time
    assert len(s.of("ondel", "start")) == 1
    assert s.of("docs", "start") == [] and s.of("off", "start") == []
    lines = watch.lines()
    assert sum(line.startswith(f"{s.project}/fmt: exit 0 after ") for line in lines) == 2
    assert sum(line.startswith(f"{s.project}/ondel: exit 0 after ") for line in lines) == 1

    events = s.events()
    assert events.count(("agent-start", "fmt")) == 2 and events.count(("agent-exit", "fmt")) == 2
    assert events.count(("agent-start", "ondel")) == 1
    assert {agent for _, agent in events} == {"fmt", "ondel"}
    # --metrics-output alone records the workspace's agents, not the machine (that is --all)
    projects = connect(s.folder / "metrics").execute("SELECT DISTINCT project FROM samples")
    assert projects.fetchall() == [(s.project,)]

    summary = json.loads((tmp_path / "active.json").read_text())
    assert summary["kind"] == "devloop-metrics-summary" and summary["ticks"] >= 1
    compared = subprocess.run(
        [sys.executable, "-m", "devloop", "workspace", "metrics", "compare",
         str(tmp_path / "active.json"), str(tmp_path / "active.json"), "--format", "json"],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    rows = json.loads(compared.stdout)["rows"]
    system = [r for r in rows if r["scope"] == "system" and r["statistic"] == "avg"]
    assert system and all(r["difference"] == 0.0 for r in system)
    assert not (s.folder / "enforcement-state.json").exists()  # removed on exit


@pytest.mark.slow
def test_max_concurrent_agents_one_runs_agents_one_after_the_other(tmp_path, watching):
    s = Setup(tmp_path, "queue")
    s.write(
        {"one": {"command": s.command("one", 1.5)}, "two": {"command": s.command("two", 1.5)}},
        maxConcurrentAgents=1,
        resourceLimits={"overflow": {"enabled": True, "maxWaitTime": 120}},
    )
    watch = watching(s, "--interval", "0.5s")
    (s.proj / "src" / "a.txt").write_text("change\n")

    # while the first runs, the second waits in the queue, and the state file shows it
    seen: list[dict[str, Any]] = []

    def queued_now() -> bool:
        seen.append(_state(s))
        return bool(seen[-1].get("queue"))

    wait_until(queued_now, DEADLINE)
    queued = seen[-1]["queue"]
    assert len(queued) == 1 and queued[0]["project"] == s.project
    state = seen[-1]["agents"][f"{s.project}/{queued[0]['agent']}"]["state"]
    assert state in ("queued", "running")  # running: it started while the tick was under way
    wait_until(lambda: len(watch.lines()) == 2, DEADLINE)  # a line once an agent has exited
    assert watch.stop(signal.SIGTERM) == 0, watch.stderr()
    runs = s.runs()
    assert [r[1] for r in runs] == ["start", "end", "start", "end"]  # no overlap
    assert runs[0][0] == runs[1][0] != runs[2][0] == runs[3][0]
    assert runs[1][2] <= runs[2][2]
    second = runs[2][0]
    assert queued[0]["agent"] == second
    events = s.events()
    assert ("queue", second) in events and ("dequeue", second) in events
    assert events.index(("dequeue", second)) < events.index(("agent-start", second))


@pytest.mark.slow
def test_stopping_the_watch_ends_running_agents_even_stubborn_ones(tmp_path, watching):
    s = Setup(tmp_path, "stop")
    s.write({
        "sleeper": {"command": s.command("sleeper", 300)},
        "stubborn": {"command": s.command("stubborn", 300, "--ignore-term")},
    })  # fmt: skip
    watch = watching(s, env={"DEVLOOP_RESOURCE_PROFILE": "dev"})
    assert "(profile dev)" in watch.stderr()
    (s.proj / "docs" / "notes.md").write_text("change\n")
    wait_until(lambda: len(s.of("sleeper", "start")) + len(s.of("stubborn", "start")) == 2,
               DEADLINE)  # fmt: skip
    pids = [r[3] for r in s.runs()]
    try:
        assert watch.stop(signal.SIGINT) == 0, watch.stderr()
        wait_until(lambda: not any(_alive(pid) for pid in pids), DEADLINE)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    lines = watch.lines()
    assert f"{s.project}/sleeper: exit 143" in " ".join(lines)  # SIGTERM
    assert f"{s.project}/stubborn: exit 137" in " ".join(lines)  # SIGKILL after the grace
    assert s.of("sleeper", "end") == [] and s.of("stubborn", "end") == []


@pytest.mark.slow
def test_a_burst_of_changes_closer_together_than_the_debounce_is_one_round(tmp_path, watching):
    s = Setup(tmp_path, "burst")
    target, gone = s.proj / "src" / "burst.txt", s.proj / "docs" / "gone.md"
    target.write_text("")
    gone.write_text("")
    s.write({
        "burst": {"command": s.command("burst", 0), "triggers": ["file:modified"],
                  "config": {"filePatterns": ["src/*.txt"]}},
        "ondel": {"command": s.command("ondel", 0), "triggers": ["file:deleted"]},
    })  # fmt: skip
    watch = watching(s, "--all", "--interval", "0.5s", debounce="1s")
    for i in range(10):  # 1.8 s of changes, never 1 s apart
        if i:
            time.sleep(0.2)
        with open(target, "a") as out:
            out.write(f"{i}\n")
    last = time.time()
    wait_until(lambda: watch.count(f"{s.project}/burst") >= 1, DEADLINE)
    # A barrier: a second round of the burst, had there been one, was asked for before the
    # deletion is seen, so it has started (and is printed, if only as killed) by the time
    # "ondel" has run.
    gone.unlink()
    wait_until(lambda: watch.count(f"{s.project}/ondel") == 1, DEADLINE)
    assert watch.stop(signal.SIGINT) == 0, watch.stderr()

    assert watch.runs() == [(f"{s.project}/burst", 0), (f"{s.project}/ondel", 0)]
    starts = s.of("burst", "start")
    assert len(starts) == 1
    assert starts[0][2] >= last + 0.9  # after a second without a change
    # --all: the rest of the machine is recorded too
    db = connect(s.folder / "metrics")
    projects = {p for (p,) in db.execute("SELECT DISTINCT project FROM samples").fetchall()}
    assert OTHER_PROJECT in projects


FAIL = "for i in range(1, 31):\n    print(f'line {i}')\nraise SystemExit(3)"


@pytest.mark.slow
def test_a_failed_run_shows_the_tail_of_its_log_and_a_passing_one_only_its_line(tmp_path, watching):
    s = Setup(tmp_path, "logs")
    s.write({
        "fail": {"command": [sys.executable, "-c", FAIL]},
        "pass": {"command": [sys.executable, "-c", "print('quiet success')"]},
    })  # fmt: skip
    # logs of earlier runs of "pass": 22 recent ones (run ids older than any new one) and one
    # whose name sorts last but that is 8 days old
    logs = s.folder / "logs" / s.project
    (logs / "pass").mkdir(parents=True)
    earlier = [logs / "pass" / f"{i:013x}-00000000.log" for i in range(1, 23)]
    for path in earlier:
        path.write_text("earlier\n")
    stale = logs / "pass" / "fffffffffffff-00000000.log"
    stale.write_text("stale\n")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(stale, (week_ago, week_ago))

    watch = watching(s)
    (s.proj / "src" / "a.txt").write_text("change\n")
    wait_until(lambda: len(watch.runs()) == 2, DEADLINE)
    assert watch.stop(signal.SIGINT) == 0, watch.stderr()

    lines = watch.lines()
    failed = next(i for i, line in enumerate(lines) if line.startswith(f"{s.project}/fail: "))
    assert re.fullmatch(rf"{s.project}/fail: exit 3 after \d+\.\ds", lines[failed])
    assert lines[failed + 1 : failed + 21] == [f"    line {i}" for i in range(11, 31)]
    [passed] = lines[:failed] + lines[failed + 21 :]  # the passing run's output is not shown
    assert re.fullmatch(rf"{s.project}/pass: exit 0 after \d+\.\ds", passed)

    [fail_log] = (logs / "fail").iterdir()
    assert fail_log.read_text() == "".join(f"line {i}\n" for i in range(1, 31))
    kept = sorted((logs / "pass").iterdir())
    assert len(kept) == LOG_KEEP
    assert kept[:-1] == earlier[3:]  # the 3 oldest went, and the one older than a week
    assert kept[-1].read_text() == "quiet success\n"
    db = connect(s.folder / "metrics")
    runs = db.execute(
        "SELECT agent, log_path FROM runs WHERE project = ? ORDER BY agent", [s.project]
    ).fetchall()
    assert runs == [("fail", str(fail_log)), ("pass", str(kept[-1]))]


@pytest.mark.slow
def test_verbose_shows_every_runs_output_under_its_line(tmp_path, watching):
    s = Setup(tmp_path, "verbose")
    s.write({"talk": {"command": [sys.executable, "-c", "print('hello'); print(); print('bye')"]}})
    watch = watching(s, "--verbose")
    (s.proj / "src" / "a.txt").write_text("change\n")
    wait_until(lambda: len(watch.runs()) == 1, DEADLINE)
    assert watch.stop(signal.SIGINT) == 0, watch.stderr()
    lines = watch.lines()
    assert re.fullmatch(rf"{s.project}/talk: exit 0 after \d+\.\ds", lines[0])
    assert lines[1:] == ["    hello", "", "    bye"]


@pytest.mark.slow
def test_acceptance_every_run_of_the_sample_projects_is_a_row_of_runs(tmp_path, watching):
    """Issue 12: devloop watch over sample_data's projects with their real ruff and pytest
    agents; every run it prints is in the store's runs table."""
    venv_bin = Path(sys.executable).parent
    missing = [tool for tool in ("ruff", "pytest") if not (venv_bin / tool).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed next to {sys.executable}")
    sample = tmp_path / "sample_data"
    shutil.copytree(REPO / "sample_data", sample, ignore=shutil.ignore_patterns(
        "metrics", "__pycache__", ".*_cache"))  # fmt: skip
    config_file = sample / ".devloop-workspace" / "workspace.json"
    config = json.loads(config_file.read_text())
    # "devloop" is this repository (path ".."): in the copy, a folder without agents
    config["projects"] = [p for p in config["projects"] if p["name"] != "devloop"]
    del config["resource_sharing"]["weights"]["devloop"]
    config_file.write_text(json.dumps(config))
    projects = sample / "projects"
    for name in ("wordfreq", "unitconv"):  # mypy: slow, and not what this test is about
        agents_file = projects / name / ".devloop" / "agents.json"
        agents = json.loads(agents_file.read_text())
        agents["agents"]["type-checker"]["enabled"] = False
        agents_file.write_text(json.dumps(agents))
    s = Setup(tmp_path, "sample")  # only for its root: the workspace is the sample's
    s.folder = sample / ".devloop-workspace"
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "DEVLOOP_RESOURCE_PROFILE": "ci"}
    watch = watching(s, "--interval", "0.5s", env=env, debounce="0.5s", path=projects)

    with open(projects / "wordfreq" / "src" / "wordfreq" / "__init__.py", "a") as out:
        out.write("\n\nEDITED = True\n")
    (projects / "unitconv" / "src" / "unitconv" / "extra.py").write_text("import os\n")  # F401
    expected = {("wordfreq/linter", 0), ("wordfreq/formatter", 0), ("wordfreq/test-runner", 0),
                ("unitconv/linter", 1), ("unitconv/test-runner", 0)}  # fmt: skip
    wait_until(lambda: expected <= set(watch.runs()), DEADLINE)
    time.sleep(3 * 0.5)  # 3 debounces: a round the runs' own writes set off would have begun
    assert watch.stop(signal.SIGINT) == 0, watch.stderr()

    printed = watch.runs()
    # one round: a file created may count as modified too (the formatter then runs); pytest's
    # first run building its cache must not run the agents again
    assert len(set(printed)) == len(printed)
    assert set(printed) - expected <= {("unitconv/formatter", 0)}
    lines = watch.lines()
    lint = lines.index(next(line for line in lines if line.startswith("unitconv/linter: ")))
    assert "F401" in "\n".join(lines[lint + 1 : lint + 21])  # ruff's report, under its line
    db = connect(s.folder / "metrics")
    rows = db.execute(
        "SELECT project || '/' || agent, exit_code, trigger, status, "
        "cpu_user_seconds + cpu_system_seconds, log_path, queued <= started FROM runs"
    ).fetchall()
    assert sorted((name, code) for name, code, *_ in rows) == sorted(printed)
    for name, _, trigger, status, cpu, log, queued_first in rows:
        assert (trigger, status, queued_first) == ("watch", "complete", True), name
        assert cpu > 0, name
        project, agent = name.split("/")
        log_file = Path(log)
        assert log_file.is_file() and log_file.parent == s.folder / "logs" / project / agent


def _state(s: Setup) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((s.folder / "enforcement-state.json").read_text())
        return state
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def test_watch_refuses_when_another_collector_holds_the_store(tmp_path):
    s = Setup(tmp_path, "locked")
    s.write({"lint": {"command": s.command("lint", 0)}})
    with Recorder(load_workspace(s.folder)):
        result = CliRunner().invoke(cli, ["watch", str(tmp_path), "--workspace-dir", str(s.folder)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: another collector (pid ")
    assert "stop that collector first" in result.output
    assert s.runs() == []


def test_watch_refuses_a_path_with_no_project(tmp_path):
    s = Setup(tmp_path, "none")
    s.write({"lint": {"command": s.command("lint", 0)}})
    elsewhere = tmp_path / "markers"
    result = CliRunner().invoke(cli, ["watch", str(elsewhere), "--workspace-dir", str(s.folder)])
    assert result.exit_code == 1
    assert f"Error: no enabled project is in or around {elsewhere.resolve()}" in result.output
    assert s.project in result.output


def test_watch_targets_a_path_inside_a_project(tmp_path):
    s = Setup(tmp_path, "inside")
    s.write({"lint": {"command": s.command("lint", 0)}, "bare": {"enabled": True}})
    targets = watch_targets(load_workspace(s.folder), s.proj / "src")
    assert [(t.name, t.folder, t.root) for t in targets] == [
        (s.project, s.proj.resolve(), (s.proj / "src").resolve())
    ]
    assert [a.agent for a in targets[0].agents] == ["lint"]  # an agent needs a command
    whole = watch_targets(load_workspace(s.folder), tmp_path)
    assert whole[0].root == s.proj.resolve()


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.py", "a.py", True),
        ("**/*.py", "src/pkg/a.py", True),
        ("**/*.py", "src/a.pyc", False),
        ("*.md", "docs/deep/readme.md", True),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/pkg/a.py", False),
        ("src/**", "src/pkg/a.py", True),
        ("docs/*.md", "src/a.md", False),
        ("test_?.py", "tests/test_1.py", True),
        ("[ab].txt", "c.txt", False),
        ("./src/*.py", "src/a.py", True),
    ],
)
def test_file_patterns(pattern, path, expected):
    assert matches_glob(pattern, path) is expected


def test_triggers_and_patterns_choose_the_changes_an_agent_runs_on(tmp_path):
    assert file_events([]) is None
    assert file_events(["file:modified", "git:commit"]) == frozenset({MODIFIED})
    assert file_events(["file:*"]) == frozenset({CREATED, MODIFIED, DELETED})
    assert file_events(["git:commit"]) == frozenset()
    lint = WatchedAgent.of(
        "p", tmp_path,
        Agent("lint", command=("ruff",), triggers=("file:modified", "file:created"),
              config={"filePatterns": ["**/*.py"]}),
    )  # fmt: skip
    assert lint.wants([(MODIFIED, tmp_path / "src" / "a.py")])
    assert not lint.wants([(DELETED, tmp_path / "src" / "a.py")])
    assert not lint.wants([(MODIFIED, tmp_path / "README.md")])
    assert not lint.wants([(MODIFIED, tmp_path.parent / "a.py")])  # outside the project
    anything = WatchedAgent.of("p", tmp_path, Agent("any", command=("x",)))
    assert anything.wants([(DELETED, tmp_path / "README.md")])
    never = WatchedAgent.of("p", tmp_path, Agent("git", command=("x",), triggers=("git:commit",)))
    assert not never.wants([(MODIFIED, tmp_path / "a.py")])


def test_debounce_waits_for_quiet_however_long_the_burst_up_to_the_cap():
    a, b = (MODIFIED, Path("/p/a.py")), (CREATED, Path("/p/b.py"))
    held = Debouncer(0.5, cap=60.0)
    assert held.due(0.0) == []
    for i in range(10):  # a change every 0.2 s for 1.8 s
        held.add([a], i * 0.2)
        assert held.due(i * 0.2 + 0.49) == []
    held.add([], 1.9)  # nothing seen: not a change
    assert held.due(1.8 + 0.49) == []
    assert held.due(1.8 + 0.51) == [a] * 10
    assert held.due(10.0) == []  # handed over once
    for i in range(700):  # a stream that never pauses: acted on after the cap all the same
        held.add([b], 100.0 + i * 0.1)
        if held.due(100.0 + i * 0.1):
            break
    assert i == 600  # 100.0 + 60.0


def test_stale_logs_keep_the_newest_and_drop_the_week_old():
    now = 1_000_000.0
    day = 24 * 3600.0
    logs = [(f"{i:02d}.log", now - 100 + i) for i in range(25)]  # 24.log is the newest
    assert stale_logs(logs, now) == [f"{i:02d}.log" for i in range(4, -1, -1)]
    old = [("99.log", now - 7 * day - 1), ("98.log", now - 7 * day)]
    assert stale_logs(old + logs[:3], now) == ["99.log"]  # exactly a week old is kept
    assert stale_logs(old + logs, now, keep=24) == ["99.log", "01.log", "00.log"]
    assert stale_logs([], now) == []
