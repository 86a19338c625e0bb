"""``devloop watch``: run the projects' agents when their files change, within the limits.

One watch is the workspace's collector and enforcer at once. The main thread ticks a
:class:`~devloop.runner.record.Recorder` with enforcement (so agents are paused, warned about or
throttled as the limits in force say); a thread watches the projects' folders (watchfiles); each
agent run is a thread of its own that waits for admission in the overflow queue
(:class:`~devloop.runner.queue.AdmissionQueue`), starts the agent's command tagged as its
project's, and waits for it.

Which agents run on a change (``agents.json``):

* ``triggers``: ``file:created``, ``file:modified``, ``file:deleted`` (``file:*`` any of them);
  an agent with no triggers runs on any change, one whose triggers name no file event never runs
  from here;
* ``config.filePatterns`` (globs relative to the project's folder, ``**`` across folders; a
  pattern without ``/`` matches the file name anywhere), when present, must match a changed path.

One run at a time per agent: changes during a run schedule one more run after it (however many
changes there were), changes while the agent waits in the queue are seen by the run to come. A
formatter that rewrites files therefore runs once more and settles, it does not loop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.config.models import Agent, Workspace
from devloop.errors import DevloopError, EnforcementError, StoreLockedError, UsageError
from devloop.runner.record import Recorder, RecordStatus
from devloop.runner.run import agent_environment

if TYPE_CHECKING:
    from devloop.core.resource_manager import ResourceManager
    from devloop.runner.queue import AdmissionQueue, Ticket

#: File events as agents.json names them.
CREATED, MODIFIED, DELETED = "file:created", "file:modified", "file:deleted"
FILE_EVENTS = frozenset({CREATED, MODIFIED, DELETED})

#: Folders never watched, wherever they are (on top of watchfiles' own list: .git,
#: __pycache__, node_modules, .venv, .mypy_cache, .pytest_cache, ...).
IGNORED_DIRS = (".devloop", ".devloop-workspace", ".ruff_cache", ".nox", ".eggs", ".cache")

DEFAULT_DEBOUNCE = 0.5  # seconds without a change before the changes are acted on
GRACE = 5.0  # seconds between SIGTERM and SIGKILL for agents still running at the end

Change = tuple[str, Path]  # (file event, absolute path)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression over ``/``-separated paths (``**`` spans folders)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            inner = pattern[i + 1 : end]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out) + r"\Z")


@cache
def _compiled(pattern: str) -> tuple[bool, re.Pattern[str]]:
    cleaned = pattern.strip().removeprefix("./").lstrip("/")
    return "/" not in cleaned, _glob_regex(cleaned)


def matches_glob(pattern: str, relative: str) -> bool:
    """Whether ``relative`` (a ``/``-separated path under a project) matches ``pattern``.

    ``**/*.py`` matches ``a.py`` and ``src/pkg/a.py``; ``src/*.py`` only files right in src;
    a pattern without ``/`` (``*.md``) is matched against the file name, wherever it is.
    """
    by_name, regex = _compiled(pattern)
    return regex.match(relative.rsplit("/", 1)[-1] if by_name else relative) is not None


def file_events(triggers: Iterable[str]) -> frozenset[str] | None:
    """The file events an agent's ``triggers`` react to; None for any (no triggers at all)."""
    triggers = [t.strip().lower() for t in triggers]
    if not triggers:
        return None
    events: set[str] = set()
    for trigger in triggers:
        if trigger in ("file", "file:*", "file:changed", "file:any"):
            events |= FILE_EVENTS
        elif trigger in FILE_EVENTS:
            events.add(trigger)
    return frozenset(events)


@dataclass(frozen=True)
class WatchedAgent:
    """An agent that ``devloop watch`` runs, and the changes it reacts to."""

    project: str
    agent: str
    folder: Path  # the project's folder: where the command runs, what patterns are relative to
    command: tuple[str, ...]
    events: frozenset[str] | None  # None: any change
    patterns: tuple[str, ...] | None  # None: any path

    @property
    def name(self) -> str:
        return f"{self.project}/{self.agent}"

    @classmethod
    def of(cls, project: str, folder: Path, agent: Agent) -> WatchedAgent:
        patterns = agent.config.get("filePatterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        chosen = None
        if isinstance(patterns, list) and patterns:
            chosen = tuple(str(p) for p in patterns)
        return cls(project, agent.name, folder, agent.command, file_events(agent.triggers), chosen)

    def wants(self, changes: Iterable[Change]) -> bool:
        """Whether any of ``changes`` (in this agent's project) should run it."""
        for event, path in changes:
            if self.events is not None and event not in self.events:
                continue
            if self.patterns is None:
                return True
            try:
                relative = path.relative_to(self.folder).as_posix()
            except ValueError:
                continue
            if any(matches_glob(p, relative) for p in self.patterns):
                return True
        return False


@dataclass(frozen=True)
class WatchedProject:
    """A project ``devloop watch`` covers: its folder, the folder watched, its agents."""

    name: str
    folder: Path
    root: Path  # the folder watched: the project's, or PATH when PATH is inside the project
    priority: int
    agents: tuple[WatchedAgent, ...]


def watch_targets(workspace: Workspace, path: Path) -> list[WatchedProject]:
    """The enabled projects under ``path`` (or holding ``path``) and their runnable agents.

    Raises UsageError when no enabled project is under or around ``path``.
    """
    path = path.resolve()
    config = workspace.config
    targets = []
    for project in config.enabled_projects:
        folder = config.project_dir(project)
        if folder.is_relative_to(path):
            root = folder
        elif path.is_relative_to(folder):
            root = path
        else:
            continue
        own = workspace.agents.get(project.name)
        agents = tuple(
            WatchedAgent.of(project.name, folder, agent)
            for agent in (own.enabled_agents if own is not None else ())
            if agent.command
        )
        targets.append(WatchedProject(project.name, folder, root, project.priority, agents))
    if not targets:
        known = ", ".join(
            f"{p.name} ({config.project_dir(p)})" for p in config.enabled_projects
        )  # fmt: skip
        raise UsageError(f"no enabled project is in or around {path} (projects: {known or 'none'})")
    return targets


@dataclass(frozen=True)
class RunResult:
    """One agent run (or a run that could not start: ``code`` None and ``reason`` why)."""

    project: str
    agent: str
    code: int | None  # exit status; 128 + N when killed by signal N
    seconds: float
    pid: int | None = None
    reason: str = ""
    changes: int = 0  # changed paths that led to the run

    @property
    def name(self) -> str:
        return f"{self.project}/{self.agent}"


@dataclass(frozen=True)
class WatchSummary:
    """What a watch did, returned when it stops."""

    runs: int
    failed: int  # runs that exited non-zero
    dropped: int  # runs refused by the queue, timed out in it, or whose command is missing
    status: RecordStatus
    metrics_output: Path | None
    start: datetime
    end: datetime


@dataclass
class _Slot:
    """One agent's runs: at most one at a time, and at most one more scheduled."""

    agent: WatchedAgent
    state: str = "idle"  # idle | waiting (in the queue) | running
    again: bool = False
    changes: int = 0
    child: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class Watch:
    """The watch itself; :func:`watch_workspace` runs one."""

    def __init__(
        self,
        workspace: Workspace,
        projects: list[WatchedProject],
        recorder: Recorder,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        grace: float = GRACE,
        on_run: Callable[[RunResult], None] | None = None,
    ) -> None:
        from devloop.runner.queue import AdmissionQueue

        self.workspace = workspace
        self.projects = projects
        self.recorder = recorder
        assert recorder.manager is not None
        self.manager: ResourceManager = recorder.manager
        self.debounce = debounce
        self.grace = grace
        self.on_run = on_run
        self.ready = threading.Event()  # the file watcher is set up
        self.halt = threading.Event()  # stop watching
        self.failure: BaseException | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._slots = {a.name: _Slot(a) for p in projects for a in p.agents}
        self._by_folder = sorted(projects, key=lambda p: len(p.folder.parts), reverse=True)
        self.runs = self.failed = self.dropped = 0
        config = workspace.config
        priorities = {p.name: p.priority for p in config.projects}
        manager = self.manager
        self.queue: AdmissionQueue = AdmissionQueue(
            max_concurrent=config.global_.max_concurrent_agents,
            overflow=config.global_.resource_limits.overflow,
            can_run=lambda project, agent: manager.can_run_agent(agent, project),
            priority_of=lambda project: priorities.get(project, 1 << 30),
            on_event=self._queue_event,
        )  # fmt: skip
        manager.set_queue_source(self._queued)
        self._watcher = threading.Thread(target=self._watch, name="devloop-watch", daemon=True)

    # --- watching ------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (in a thread); :attr:`ready` is set once changes are seen."""
        self._watcher.start()

    def _watch(self) -> None:
        try:
            import watchfiles
        except ImportError as exc:
            self.failure = UsageError(
                "devloop watch needs watchfiles: pip install 'devloop-workspace[watch]'"
            )
            self.failure.__cause__ = exc
            self.halt.set()
            return
        kinds = {
            watchfiles.Change.added: CREATED,
            watchfiles.Change.modified: MODIFIED,
            watchfiles.Change.deleted: DELETED,
        }
        ignored = watchfiles.DefaultFilter(
            ignore_dirs=(*watchfiles.DefaultFilter.ignore_dirs, *IGNORED_DIRS),
            ignore_paths=(str(self.workspace.dir.resolve()),),
        )
        roots = sorted({str(p.root) for p in self.projects})
        step = max(int(self.debounce * 1000), 1)
        try:
            for batch in watchfiles.watch(
                *roots, watch_filter=ignored, step=step, debounce=max(4 * step, 1600),
                stop_event=self.halt, rust_timeout=500, yield_on_timeout=True,
                raise_interrupt=False,
            ):  # fmt: skip
                self.ready.set()
                if batch:
                    self.changed([(kinds.get(kind, MODIFIED), Path(p)) for kind, p in batch])
        except (OSError, RuntimeError) as exc:  # a folder gone, the inotify watch limit
            self.failure = UsageError(f"cannot watch {', '.join(roots)}: {exc}")
            self.failure.__cause__ = exc
        finally:
            self.ready.set()
            self.halt.set()

    def _project_of(self, path: Path) -> WatchedProject | None:
        for project in self._by_folder:  # the deepest folder first: nested projects
            if path.is_relative_to(project.root):
                return project
        return None

    def changed(self, changes: list[Change]) -> None:
        """Act on a batch of changes: start (or schedule once more) every agent they concern."""
        by_project: dict[str, list[Change]] = {}
        for change in changes:
            project = self._project_of(change[1])
            if project is not None:
                by_project.setdefault(project.name, []).append(change)
        for project in self.projects:
            found = by_project.get(project.name)
            if not found:
                continue
            for agent in project.agents:
                if agent.wants(found):
                    self._trigger(self._slots[agent.name], len(found))

    def _trigger(self, slot: _Slot, changes: int) -> None:
        with self._lock:
            if self._stopping:
                return
            slot.changes += changes
            if slot.state == "running":
                slot.again = True
                return
            if slot.state == "waiting":
                return  # not started yet: the run to come sees these changes too
            slot.state = "waiting"
            slot.thread = threading.Thread(
                target=self._runs, args=(slot,), name=f"devloop-{slot.agent.name}", daemon=True
            )
            slot.thread.start()

    # --- running agents --------------------------------------------------------------------

    def _runs(self, slot: _Slot) -> None:
        while True:
            try:
                self._run_once(slot)
            except Exception as exc:  # never let one agent's failure end the watch
                self._report(RunResult(slot.agent.project, slot.agent.agent, None, 0.0,
                                       reason=f"failed: {exc}"))  # fmt: skip
            with self._lock:
                slot.child = None
                if slot.again and not self._stopping:
                    slot.again = False
                    slot.state = "waiting"
                    continue
                slot.state = "idle"
                slot.again = False
                return

    def _run_once(self, slot: _Slot) -> None:
        agent = slot.agent
        try:
            ticket = self.queue.acquire(agent.project, agent.agent)
        except EnforcementError as exc:
            with self._lock:
                slot.changes = 0
            self._report(RunResult(agent.project, agent.agent, None, 0.0, reason=str(exc)))
            return
        try:
            self._run_admitted(slot, ticket)
        finally:
            self.queue.release(ticket)

    def _run_admitted(self, slot: _Slot, ticket: Ticket) -> None:
        agent = slot.agent
        reason = ""
        child: subprocess.Popen[bytes] | None = None
        with self._lock:
            if self._stopping:
                return
            changes, slot.changes = slot.changes, 0
            try:
                child = subprocess.Popen(
                    list(agent.command), cwd=agent.folder, stdin=subprocess.DEVNULL,
                    env=agent_environment(agent.project, agent.agent),
                    start_new_session=True,  # its own process group: stopped as one at the end
                )  # fmt: skip
            except OSError as exc:
                reason = f"cannot start {agent.command[0]}: {exc.strerror or exc}"
            else:
                slot.state = "running"
                slot.child = child
                self.manager.started(child.pid)
        if child is None:
            self._report(RunResult(agent.project, agent.agent, None, 0.0, reason=reason))
            return
        started = time.monotonic()
        waited = f" after {ticket.waited:.1f}s in the queue" if ticket.waited else ""
        message = f"pid {child.pid}: {' '.join(agent.command)} ({changes} changed path(s))"
        self.recorder.event(
            "agent-start", scope="agent", project=agent.project, agent=agent.agent,
            message=message + waited,
        )  # fmt: skip
        code = child.wait()
        seconds = time.monotonic() - started
        status = 128 - code if code < 0 else code
        self.recorder.event(
            "agent-exit", scope="agent", project=agent.project, agent=agent.agent,
            message=f"pid {child.pid} exited with {status} after {seconds:.1f}s",
        )  # fmt: skip
        self._report(RunResult(agent.project, agent.agent, status, seconds, child.pid,
                               changes=changes))  # fmt: skip

    def _report(self, result: RunResult) -> None:
        with self._lock:
            if self._stopping and result.code is None:
                return  # refused while stopping: not worth a line
            if result.code is None:
                self.dropped += 1
            else:
                self.runs += 1
                self.failed += result.code != 0
        if self.on_run is not None:
            self.on_run(result)

    def _queue_event(self, action: str, **fields: Any) -> None:
        self.recorder.event(action, scope="agent", **fields)

    def _queued(self) -> list[dict[str, Any]]:
        """The waiters, for the state file (the manager reads them outside its own lock)."""
        return [
            {"project": w.project, "agent": w.agent, "since": w.since} for w in self.queue.waiting()
        ]

    def on_tick(self, status: RecordStatus) -> None:
        """After each tick: usage changed, so the queue's waiters may fit now."""
        self.queue.poke()

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop watching, then end the agents still running: SIGTERM, and SIGKILL after
        :attr:`grace` seconds. Returns when they are gone."""
        self.halt.set()
        with self._lock:
            self._stopping = True
            running = [s for s in self._slots.values() if s.child is not None]
            children = [s.child for s in running if s.child is not None]
            # threads still waiting in the queue are left alone: they will not start anything
            threads = [s.thread for s in running if s.thread is not None]
        for child in children:
            _signal_group(child, signal.SIGTERM)
            _signal_group(child, signal.SIGCONT)  # a paused agent must run to see the SIGTERM
        deadline = time.monotonic() + self.grace
        for child in children:
            try:
                child.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        for thread in threads:  # their agent-exit events and result lines
            thread.join(10.0)
        self._watcher.join(10.0)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process group of an agent devloop started, while it is not yet reaped (so
    its pid, which is the group's id, cannot belong to anyone else)."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


def watch_workspace(
    workspace: Workspace,
    path: Path,
    *,
    profile: str | None = None,
    interval: float | None = None,
    debounce: float = DEFAULT_DEBOUNCE,
    duration: float | None = None,
    metrics_output: Path | None = None,
    stop: threading.Event | None = None,
    grace: float = GRACE,
    on_ready: Callable[[list[WatchedProject], Recorder], None] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
) -> WatchSummary:
    """Watch the projects under ``path`` and run their agents on changes until ``stop`` is set
    or ``duration`` seconds have passed; record and enforce the workspace meanwhile.

    ``interval``: seconds between ticks (default ``checkInterval``). With ``metrics_output``,
    every process of the machine is recorded (as ``metrics --baseline`` does, so that
    ``metrics compare`` compares like with like) and the summary of the watch is written there.
    Raises StoreLockedError when another collector holds the store: the watch must be the
    workspace's enforcer.
    """
    projects = watch_targets(workspace, path)
    stop = stop or threading.Event()
    started = datetime.now(UTC)
    try:
        recorder = Recorder(
            workspace, interval=interval, enforce=True, profile=profile,
            all_processes=metrics_output is not None,
        )  # fmt: skip
    except StoreLockedError as exc:
        raise StoreLockedError(
            f"{exc}. devloop watch records and enforces the workspace itself: stop that "
            "collector first (or keep it and start agents with `devloop run`)"
        ) from exc
    watch: Watch | None = None
    try:
        watch = Watch(workspace, projects, recorder, debounce=debounce, grace=grace,
                      on_run=on_run)  # fmt: skip
        watch.start()
        while not watch.ready.wait(0.1):
            if stop.is_set():
                break
        if watch.failure is None:
            if on_ready is not None:
                on_ready(projects, recorder)
            halted = watch.halt
            recorder.run(duration=duration, stop=stop, until=halted.is_set,
                         on_tick=watch.on_tick)  # fmt: skip
            if watch.failure is None and halted.is_set() and not stop.is_set():
                watch.failure = UsageError("the file watcher stopped unexpectedly")
        if recorder.status().ticks == 0 and metrics_output is not None:
            recorder.tick()  # stopped before the first tick: a summary needs one
    finally:
        try:
            if watch is not None:
                watch.stop()
        finally:
            recorder.close()
    if watch.failure is not None:
        if isinstance(watch.failure, DevloopError):
            raise watch.failure
        raise UsageError(str(watch.failure)) from watch.failure
    ended = datetime.now(UTC)
    if metrics_output is not None:
        write_summary(workspace, started, ended, metrics_output)
    return WatchSummary(watch.runs, watch.failed, watch.dropped, recorder.status(),
                        metrics_output, started, ended)  # fmt: skip


def write_summary(workspace: Workspace, start: datetime, end: datetime, output: Path) -> None:
    """Write the metrics summary of ``[start, end]`` (the shape ``metrics compare`` reads)."""
    import json

    from devloop._atomic import atomic_write_text
    from devloop.analytics import TimeRange, summarise

    summary = summarise(
        workspace.dir, TimeRange(start=start, end=end + timedelta(microseconds=1))
    )  # fmt: skip
    atomic_write_text(output, json.dumps(summary, indent=2) + "\n")
