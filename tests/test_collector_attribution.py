"""Which agent a process belongs to: environment tags, inheritance, rules, identity."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devloop.collector import (
    OTHER_PROJECT,
    Attribution,
    Attributor,
    Collector,
    Identity,
    Reading,
    Rule,
    Source,
    SystemReading,
    Tick,
    command_matches,
)
from devloop.collector.attribution import is_under
from devloop.collector.model import TAG_RUN, Check
from tests.helpers.procs import BURN, Helper, helpers

pytestmark = pytest.mark.realtime

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def spawn() -> Iterator[Callable[..., Helper]]:
    with helpers() as start:
        yield start


def owners(tick: Tick) -> dict[int, tuple[str, str]]:
    return {row[4]: (row[2], row[3]) for row in tick.samples}


# -- real processes ------------------------------------------------------------------------


@linux_only
@pytest.mark.parametrize("source", ["procfs", "psutil"])
def test_tagged_process_and_its_children(spawn: Callable[..., Helper], source: str) -> None:
    parent = spawn("spawner", tags=("shop", "tests"))
    untagged = spawn("sleep")
    with Collector(source=source) as collector:
        parent.send("sleeper")  # a child with an empty environment
        words = parent.readline()
        child = int(words[1])
        tick = collector.tick()
    found = owners(tick)
    assert found[parent.pid] == ("shop", "tests")
    assert found[child] == ("shop", "tests")  # inherited: its own environment has no tags
    assert untagged.pid not in found
    assert {r[2] for r in tick.new_processes} >= {parent.pid, child}


@linux_only
def test_rule_matches_cwd_and_command(spawn: Callable[..., Helper], tmp_path: Path) -> None:
    project = tmp_path / "web"
    (project / "src").mkdir(parents=True)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    # run as "python -m fakeagent" so only the module name can match the rule
    (project / "src" / "fakeagent.py").write_text(BURN.read_text())
    (elsewhere / "fakeagent.py").write_text(BURN.read_text())
    rules = [
        Rule("web", project, "lint", "fakeagent --fix"),
        Rule("web", project, "other-tool", "ruff"),
    ]
    inside = spawn(argv=[sys.executable, "-m", "fakeagent", "sleep"], cwd=project / "src")
    outside = spawn(argv=[sys.executable, "-m", "fakeagent", "sleep"], cwd=elsewhere)
    wrong_command = spawn("sleep", cwd=project)
    with Collector(rules) as collector:
        found = owners(collector.tick())
    assert found[inside.pid] == ("web", "lint")
    assert outside.pid not in found
    assert wrong_command.pid not in found


@linux_only
@pytest.mark.parametrize("source", ["procfs", "psutil"])
def test_exec_into_a_rule_command_is_noticed(
    spawn: Callable[..., Helper], tmp_path: Path, source: str
) -> None:
    (tmp_path / "fakeagent.py").write_text(BURN.read_text())
    script = f"read line; exec {sys.executable} -m fakeagent sleep"
    shell = spawn(argv=["sh", "-c", script], cwd=tmp_path, ready=False)
    with Collector([Rule("web", tmp_path, "lint", "fakeagent")], source=source) as collector:
        assert shell.pid not in owners(collector.tick())  # still the shell
        shell.send("go")
        assert shell.readline()[0] == "ready"
        tick = collector.tick()
    assert owners(tick)[shell.pid] == ("web", "lint")
    assert [r[4:6] for r in tick.new_processes if r[2] == shell.pid] == [("web", "lint")]


@linux_only
@pytest.mark.parametrize("source", ["procfs", "psutil"])
def test_all_processes_records_the_rest(spawn: Callable[..., Helper], source: str) -> None:
    tagged = spawn("sleep", tags=("shop", "tests"))
    untagged = spawn("rename", "lonely sleeper")
    with Collector(all_processes=True, source=source) as collector:
        found = owners(collector.tick())
    assert found[tagged.pid] == ("shop", "tests")
    assert found[untagged.pid] == (OTHER_PROJECT, "lonely sleeper")
    with Collector(source=source) as collector:
        assert untagged.pid not in owners(collector.tick())


# -- a scripted source: pid reuse and unreadable environments -------------------------------


@dataclass
class FakeProc:
    pid: int
    start_us: int
    ppid: int
    name: str
    env: dict[str, str] | None = None  # None: not readable (another user's process)
    argv: list[str] = field(default_factory=list)
    cwd: str | None = "/"
    cpu: float = 0.0


class FakeSource(Source[FakeProc]):
    kind = "fake"

    def __init__(self) -> None:
        self.procs: dict[int, FakeProc] = {}

    def add(self, proc: FakeProc) -> None:
        self.procs[proc.pid] = proc

    def pids(self) -> list[int]:
        return list(self.procs)

    def identify(self, pid: int) -> tuple[FakeProc, Identity] | None:
        proc = self.procs.get(pid)
        return None if proc is None else (proc, Identity(pid, proc.start_us, proc.ppid, proc.name))

    def check(self, handle: FakeProc) -> Check:
        return "same" if self.procs.get(handle.pid) is handle else "gone"

    def sample(self, handle: FakeProc) -> Reading | None:
        if self.procs.get(handle.pid) is not handle:
            return None
        return Reading(handle.ppid, "sleeping", handle.cpu, 0.0, 1, 1, 1, 0, 0, False)

    def environ_tags(self, handle: FakeProc) -> dict[str, str] | None:
        return handle.env

    def cmdline(self, handle: FakeProc) -> list[str] | None:
        return handle.argv

    def cwd(self, handle: FakeProc) -> str | None:
        return handle.cwd

    def username(self, handle: FakeProc) -> str | None:
        return "someone"

    def process_name(self, handle: FakeProc) -> str | None:
        return handle.name

    def release(self, handle: FakeProc) -> None:
        pass

    def system(self) -> SystemReading:
        return SystemReading(0.0, 0.0, 1, 0, 1)

    def cores(self) -> int:
        return 1


TAGGED = {"DEVLOOP_PROJECT": "shop", "DEVLOOP_AGENT": "tests"}


def test_reused_pid_is_judged_afresh() -> None:
    source = FakeSource()
    source.add(FakeProc(500, 1_000, 1, "pytest", env=TAGGED))
    with Collector(source=source) as collector:
        assert owners(collector.tick())[500] == ("shop", "tests")
        # between two ticks pid 500 exits and an unrelated process gets the same pid
        source.add(FakeProc(500, 2_000, 1, "bash", env={}))
        tick = collector.tick()
        assert 500 not in owners(tick)
        # and the other way round: a tagged newcomer on a pid cached as nobody's
        source.add(FakeProc(500, 3_000, 1, "ruff", env=TAGGED))
        tick = collector.tick()
    assert owners(tick)[500] == ("shop", "tests")
    assert [(r[2], r[3]) for r in tick.new_processes] == [(500, 3_000)]


def test_unreadable_environment_falls_back_to_the_parent() -> None:
    source = FakeSource()
    source.add(FakeProc(10, 1_000, 1, "runner", env=TAGGED))
    source.add(FakeProc(11, 1_100, 10, "setuid-helper", env=None))
    source.add(FakeProc(12, 1_200, 1, "stranger", env=None))
    # a pid whose "parent" started after it is not its parent: that pid was reused
    source.add(FakeProc(13, 900, 10, "orphan", env=None))
    with Collector(source=source) as collector:
        found = owners(collector.tick())
    assert found == {10: ("shop", "tests"), 11: ("shop", "tests")}


def test_a_new_parent_is_resolved_before_its_child() -> None:
    source = FakeSource()
    # the child's pid sorts first (pids wrap around), its parent is new in the same tick
    source.add(FakeProc(3, 2_000, 40_000, "child", env={}))
    source.add(FakeProc(40_000, 1_000, 1, "pytest", env={}, argv=["pytest"], cwd="/src/app"))
    with Collector([Rule("app", Path("/src/app"), "tests", "pytest")], source=source) as c:
        found = owners(c.tick())
    assert found == {3: ("app", "tests"), 40_000: ("app", "tests")}


# -- units -----------------------------------------------------------------------------------


class Facts:
    def __init__(self, env: dict[str, str] | None, argv: list[str], cwd: str | None) -> None:
        self.env, self.argv, self.dir = env, argv, cwd
        self.reads = 0

    def environ_tags(self) -> dict[str, str] | None:
        self.reads += 1
        return self.env

    def cmdline(self) -> list[str] | None:
        return self.argv

    def cwd(self) -> str | None:
        return self.dir


def test_attributor_caches_per_identity() -> None:
    attributor = Attributor()
    facts = Facts(TAGGED, [], None)
    first = attributor.attribute((7, 1), "x", None, facts)
    again = attributor.attribute((7, 1), "x", None, Facts({}, [], None))
    assert first == again == Attribution("shop", "tests", "env")
    assert attributor.attribute((7, 2), "x", None, Facts({}, [], None)) is None
    assert facts.reads == 1
    attributor.forget((7, 1))
    assert not attributor.cached((7, 1))


def test_run_ids_are_read_and_inherited_and_kernel_threads_are_never_other() -> None:
    attributor = Attributor(all_processes=True)
    root = attributor.attribute((1, 1), "pytest", None, Facts({**TAGGED, TAG_RUN: "r-1"}, [], None))
    assert root == Attribution("shop", "tests", "env", "r-1")
    child = attributor.attribute((2, 1), "python", root, Facts({}, [], None))
    assert child == Attribution("shop", "tests", "inherited", "r-1")
    assert attributor.attribute((3, 1), "kworker/0:1", None, Facts({}, [], None), True) is None
    assert attributor.attribute((4, 1), "bash", None, Facts({}, [], None)) == Attribution(
        OTHER_PROJECT, "bash", "other"
    )


@linux_only
def test_kernel_threads_are_not_recorded_with_all_processes() -> None:
    with Collector(all_processes=True) as collector:
        tick = collector.tick()
    kernel = [row for row in tick.samples if row[4] == 2 or row[6] == 2]
    assert kernel == []
    assert any(row[2] == OTHER_PROJECT for row in tick.samples)  # the rest still is


def test_environment_wins_over_inheritance_and_other_is_not_inherited() -> None:
    attributor = Attributor(all_processes=True)
    parent = Attribution("a", "lint", "env")
    other = Attribution(OTHER_PROJECT, "bash", "other")
    mine = attributor.attribute((1, 1), "x", parent, Facts(TAGGED, [], None))
    assert mine == Attribution("shop", "tests", "env")
    inherited = attributor.attribute((2, 1), "x", parent, Facts({}, [], None))
    assert inherited == Attribution("a", "lint", "inherited")
    assert attributor.attribute((3, 1), "vim", other, Facts({}, [], None)) == Attribution(
        OTHER_PROJECT, "vim", "other"
    )


def test_deepest_project_path_wins(tmp_path: Path) -> None:
    rules = [Rule("mono", tmp_path, "t", "pytest"), Rule("lib", tmp_path / "lib", "t", "pytest")]
    attributor = Attributor(rules)
    cwd = str((tmp_path / "lib" / "src").resolve())
    found = attributor.attribute((1, 1), "python", None, Facts({}, ["pytest"], cwd))
    assert found == Attribution("lib", "t", "rule")


@pytest.mark.parametrize(
    ("command", "argv", "expected"),
    [
        ("ruff", ["ruff", "check", "."], True),
        ("ruff check --fix", ["/home/u/.venv/bin/ruff", "check"], True),
        ("pytest", ["python3", "-m", "pytest", "-x"], True),
        ("pytest -x", ["/usr/bin/python3.11", "-X", "dev", "/venv/bin/pytest"], True),
        ("pytest", ["python", "-u", "-m", "pytest.__main__"], True),
        ("eslint", ["node", "/app/node_modules/.bin/eslint", "src"], True),
        ("pytest", ["grep", "pytest", "log"], False),
        ("pytest", ["uv", "run", "pytest", "-q"], True),
        ("pytest", ["uv", "run", "python", "-m", "pytest"], True),
        ("eslint", ["npx", "eslint", "."], True),
        ("pytest", ["python", "-c", "import pytest"], False),
        ("pytest", ["python", "script.py", "pytest"], False),
        ("pytest", ["pytest-watch"], False),
        ("", ["pytest"], False),
        ("pytest", [], False),
    ],
)
def test_command_matches(command: str, argv: list[str], expected: bool) -> None:
    assert command_matches(command, argv) is expected


def test_is_under() -> None:
    assert is_under("/a/b", Path("/a/b"))
    assert is_under("/a/b/c", Path("/a/b/"))
    assert not is_under("/a/bc", Path("/a/b"))
    assert is_under("/x", Path("/"))
