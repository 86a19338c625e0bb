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

The watch acts once the projects have been quiet for ``debounce`` seconds: a burst of changes
closer together than that is one round of runs, however long it lasts (a stream that never
pauses is acted on after :data:`MAX_DEBOUNCE_WAIT` seconds all the same).

One run at a time per agent: changes during a run schedule one more run after it (however many
changes there were), changes while the agent waits in the queue are seen by the run to come. A
formatter that rewrites files therefore runs once more and settles, it does not loop.

Every run is a run of the store (:mod:`devloop.runner.launch`, trigger ``watch``): a ``runs`` row
with its exact CPU, exit status and log. The agent's output (stdout and stderr) goes to
``<workspace>/logs/<project>/<agent>/<run_id>.log``, not to the console. When a run's log is
created, the agent's older logs beyond the newest :data:`LOG_KEEP` (20), and those older than
:data:`LOG_MAX_AGE` (7 days), are deleted.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.config.models import Agent, Workspace
from devloop.errors import (
    DevloopError,
    EnforcementError,
    SpawnError,
    StoreLockedError,
    UsageError,
)
from devloop.runner import launch
from devloop.runner.record import Recorder, RecordStatus
from devloop.store.runs import new_run_id

if TYPE_CHECKING:
    from devloop.core.resource_manager import ResourceManager
    from devloop.runner.queue import AdmissionQueue, Ticket

#: File events as agents.json names them.
CREATED, MODIFIED, DELETED = "file:created", "file:modified", "file:deleted"
FILE_EVENTS = frozenset({CREATED, MODIFIED, DELETED})

#: Folders never watched, wherever they are (on top of watchfiles' own list: .git,
#: __pycache__, node_modules, .venv, .mypy_cache, .pytest_cache, ...).
IGNORED_DIRS = (".devloop", ".devloop-workspace", ".ruff_cache", ".nox", ".eggs", ".cache")
#: Folders whose name starts so are ignored too: pytest builds its .pytest_cache in a
#: ``pytest-cache-files-*`` folder renamed into place, which would run every agent once more.
IGNORED_PREFIXES = ("pytest-cache-files-",)

DEFAULT_DEBOUNCE = 0.5  # seconds without a change before the changes are acted on
#: Seconds a stream of changes that never pauses for ``debounce`` is held before it is acted on.
MAX_DEBOUNCE_WAIT = 60.0
GRACE = 5.0  # seconds between SIGTERM and SIGKILL for agents still running at the end

#: Logs kept per agent (the newest), and the age (seconds) past which a log is deleted; both
#: applied when a new log is created.
LOG_KEEP = 20
LOG_MAX_AGE = 7 * 24 * 3600.0
LOGS_DIR = "logs"  # in the workspace's folder

# watchfiles: ms between looks at the changes, and the most it groups before handing them over
# (the grouping that matters, the debounce, is done here: watchfiles caps its own).
_STEP_MS = 50
_GROUP_MS = 200

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
    run_id: str | None = None  # its row in the store's runs table
    log_path: Path | None = None  # the agent's output
    signal: int | None = None  # the signal that ended it, if one did

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


class Debouncer:
    """Changes held until ``quiet`` seconds pass without a new one, or ``cap`` seconds after the
    first (a stream that never pauses). Time (``now``, monotonic seconds) is passed in."""

    def __init__(self, quiet: float, cap: float = MAX_DEBOUNCE_WAIT) -> None:
        self.quiet = quiet
        self.cap = cap
        self._held: list[Change] = []
        self._first = self._last = 0.0

    def add(self, changes: list[Change], now: float) -> None:
        """Hold ``changes`` (seen at ``now``); an empty list changes nothing."""
        if not changes:
            return
        if not self._held:
            self._first = now
        self._held.extend(changes)
        self._last = now

    def due(self, now: float) -> list[Change]:
        """The changes to act on now (and no longer held), or [] while it is not yet time."""
        if not self._held:
            return []
        if now - self._last < self.quiet and now - self._first < self.cap:
            return []
        held, self._held = self._held, []
        return held


def log_path(workspace_dir: Path, project: str, agent: str, run_id: str) -> Path:
    """Where the output of run ``run_id`` of ``project``/``agent`` goes."""
    return workspace_dir / LOGS_DIR / _safe(project) / _safe(agent) / f"{run_id}.log"


def _safe(name: str) -> str:
    """A project or agent name as one folder name (never a way out of the logs folder)."""
    cleaned = name.replace("/", "_").replace("\\", "_")
    return "_" + cleaned if cleaned in ("", ".", "..") else cleaned


def stale_logs(
    logs: Iterable[tuple[str, float]], now: float, keep: int = LOG_KEEP,
    max_age: float = LOG_MAX_AGE,
) -> list[str]:  # fmt: skip
    """The logs to delete among ``logs`` (file name, modification time) of one agent: those
    older than ``max_age`` seconds, and of the others all but the newest ``keep`` (by name: run
    ids sort in the order the runs started)."""
    logs = list(logs)
    old = [name for name, mtime in logs if now - mtime > max_age]
    fresh = sorted((name for name, mtime in logs if now - mtime <= max_age), reverse=True)
    return old + fresh[keep:]


def _prune_logs(folder: Path, now: float) -> None:
    """Delete the stale logs in ``folder``; housekeeping, so a failure is no reason to stop."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".log") and entry.is_file(follow_symlinks=False):
                    found.append((entry.name, entry.stat(follow_symlinks=False).st_mtime))
    except OSError:
        return
    for name in stale_logs(found, now):
        try:
            (folder / name).unlink()
        except OSError:
            pass


def open_log(path: Path, now: float) -> int:
    """Create the log ``path`` (and its folder) for writing, then delete the agent's stale logs
    (:func:`stale_logs`: the new one counts among the newest); returns its descriptor
    (close-on-exec: the caller hands it to the agent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    _prune_logs(path.parent, now)
    return fd


def log_lines(path: Path, last: int | None = None) -> list[str]:
    """A run's output as lines (the last ``last`` of them); [] when its log is gone."""
    from collections import deque

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = deque(f, maxlen=last) if last is not None else list(f)
    except FileNotFoundError:
        return []
    return [line.rstrip("\r\n") for line in lines]


@dataclass
class _Slot:
    """One agent's runs: at most one at a time, and at most one more scheduled."""

    agent: WatchedAgent
    state: str = "idle"  # idle | waiting (in the queue) | running
    again: bool = False
    changes: int = 0
    asked_us: int | None = None  # when the run to come was asked for (µs since the epoch)
    #: The run's root while it is not reaped (it is reaped, and this cleared, under the lock).
    launched: launch.Launched | None = None
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
        wanted = watchfiles.DefaultFilter(
            ignore_dirs=(*watchfiles.DefaultFilter.ignore_dirs, *IGNORED_DIRS),
            ignore_paths=(str(self.workspace.dir.resolve()),),
        )
        roots = sorted({str(p.root) for p in self.projects})
        held = Debouncer(self.debounce)
        # Filtered here, not by watchfiles: a batch of ignored changes (a cache an agent writes)
        # must still hand control back, or it would delay the changes held meanwhile.
        idle_ms = min(max(int(self.debounce * 250), _STEP_MS), 500)  # a look when nothing moves
        try:
            for batch in watchfiles.watch(
                *roots, watch_filter=None, step=_STEP_MS, debounce=_GROUP_MS,
                stop_event=self.halt, rust_timeout=idle_ms, yield_on_timeout=True,
                raise_interrupt=False,
            ):  # fmt: skip
                self.ready.set()
                now = time.monotonic()
                found = [(kinds.get(kind, MODIFIED), Path(p)) for kind, p in batch
                         if wanted(kind, p) and not _temporary(p)]  # fmt: skip
                held.add(found, now)
                due = held.due(now)
                if due:
                    self.changed(due)
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
            if slot.asked_us is None:  # the first change the run to come answers
                slot.asked_us = time.time_ns() // 1000
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
                slot.asked_us = None
            self._report(RunResult(agent.project, agent.agent, None, 0.0, reason=str(exc)))
            return
        try:
            self._run_admitted(slot, ticket)
        finally:
            self.queue.release(ticket)

    def _run_admitted(self, slot: _Slot, ticket: Ticket) -> None:
        agent = slot.agent
        reason = ""
        launched: launch.Launched | None = None
        with self._lock:  # stop() sees every run started: none starts once it has begun
            if self._stopping:
                return
            changes, slot.changes = slot.changes, 0
            asked_us, slot.asked_us = slot.asked_us, None
            run_id = new_run_id()
            log = log_path(self.workspace.dir.resolve(), agent.project, agent.agent, run_id)
            try:
                launched = self._launch(agent, run_id, log, asked_us)
            except SpawnError as exc:
                reason = f"cannot start {exc.strerror or exc}"
            except OSError as exc:
                reason = f"cannot write its log {log}: {exc.strerror or exc}"
            else:
                slot.state = "running"
                slot.launched = launched
                self.manager.started(launched.pid)
        if launched is None:
            self._report(RunResult(agent.project, agent.agent, None, 0.0, reason=reason))
            return
        started = time.monotonic()
        waited = f" after {ticket.waited:.1f}s in the queue" if ticket.waited else ""
        message = f"pid {launched.pid}: {' '.join(agent.command)} ({changes} changed path(s))"
        self.recorder.event(
            "agent-start", scope="agent", project=agent.project, agent=agent.agent,
            message=message + waited,
        )  # fmt: skip
        _wait_exit(launched.pid)
        with self._lock:  # reaped only where stop() cannot be signalling it
            code = launched.reap()
            slot.launched = None
        seconds = time.monotonic() - started
        self.recorder.event(
            "agent-exit", scope="agent", project=agent.project, agent=agent.agent,
            message=f"pid {launched.pid} exited with {code} after {seconds:.1f}s",
        )  # fmt: skip
        end = launched.end
        self._report(RunResult(
            agent.project, agent.agent, code, seconds, launched.pid, changes=changes,
            run_id=run_id, log_path=log, signal=end.signal if end is not None else None,
        ))  # fmt: skip

    def _launch(
        self, agent: WatchedAgent, run_id: str, log: Path, queued_us: int | None
    ) -> launch.Launched:
        """Start one run of ``agent``, its output to ``log``, in a process group of its own
        (stopped as one at the end). Raises SpawnError, or OSError when the log cannot be made."""
        out = open_log(log, time.time())
        try:
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return launch.start(
                    self.workspace.metrics_dir, agent.project, agent.agent, agent.command,
                    trigger="watch", cwd=agent.folder, queued_us=queued_us, log_path=log,
                    stdin=null, stdout=out, new_session=True, run_id=run_id,
                )  # fmt: skip
            finally:
                os.close(null)
        except OSError:
            log.unlink(missing_ok=True)  # no run, no log
            raise
        finally:
            os.close(out)

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
        """Stop watching, then end the agents still running: SIGTERM (and SIGCONT, for a
        paused one), and SIGKILL after :attr:`grace` seconds. Returns when they are reaped.

        A run's root is signalled only under the lock and while :attr:`_Slot.launched` is
        set, that is before its thread reaps it: its pid (the group's id) is still ours."""
        self.halt.set()
        with self._lock:
            self._stopping = True
            # threads still waiting in the queue are left alone: they will not start anything
            running = [s for s in self._slots.values() if s.state == "running"]
            threads = [s.thread for s in running if s.thread is not None]
            for slot in running:
                if slot.launched is not None:
                    slot.launched.signal_group(signal.SIGTERM)
                    slot.launched.signal_group(signal.SIGCONT)  # a paused agent must see it
        deadline = time.monotonic() + self.grace
        while self._still_running(running) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            for slot in running:
                if slot.launched is not None and not slot.launched.poll():
                    slot.launched.signal_group(signal.SIGKILL)
        for thread in threads:  # they reap their run and write its agent-exit event and line
            thread.join(10.0)
        self._watcher.join(10.0)

    def _still_running(self, slots: list[_Slot]) -> bool:
        with self._lock:
            return any(s.launched is not None and not s.launched.poll() for s in slots)


def _temporary(path: str) -> bool:
    """Whether ``path`` is in (or is) a folder of :data:`IGNORED_PREFIXES`."""
    return any(part.startswith(IGNORED_PREFIXES) for part in path.split(os.sep))


def _wait_exit(pid: int) -> None:
    """Wait until child ``pid`` has exited, without reaping it."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
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
    all_processes: bool = False,
    stop: threading.Event | None = None,
    grace: float = GRACE,
    on_ready: Callable[[list[WatchedProject], Recorder], None] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
) -> WatchSummary:
    """Watch the projects under ``path`` and run their agents on changes until ``stop`` is set
    or ``duration`` seconds have passed; record and enforce the workspace meanwhile.

    ``interval``: seconds between ticks (default ``checkInterval``). ``metrics_output``: where
    the metrics summary of the watch is written when it stops. ``all_processes``: record every
    process of the machine, the rest as ``(other)`` (as ``metrics --baseline`` does, so that
    ``metrics compare`` against a baseline compares like with like); by default only the
    workspace's agents are recorded. Every run lands in the store's ``runs`` table, the last
    ones included: they are recorded after the runs have ended, before the store is closed.
    Raises StoreLockedError when another collector holds the store: the watch must be the
    workspace's enforcer.
    """
    projects = watch_targets(workspace, path)
    stop = stop or threading.Event()
    started = datetime.now(UTC)
    try:
        recorder = Recorder(
            workspace, interval=interval, enforce=True, profile=profile,
            all_processes=all_processes,
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
            try:
                recorder.record_runs()  # the runs that ended since the last tick
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
