"""The workspace right now: one tick's usage, the limits in force and the enforcement's state.

A :class:`Snapshot` is what the live dashboard draws and what the Prometheus exporter exports.
It is built by one pure function, :func:`build_snapshot`, from three inputs:

* the processes of one collector tick (:class:`ProcessSample`: project, agent, cores, rss, file
  handles, threads, process state), and the host's core count;
* the limits in force (:class:`Limits`): the newest ``limits`` rows of the store at or before
  the tick, else :func:`devloop.config.allocation.allocate` of workspace.json;
* the enforcement's live state file, ``<workspace-dir>/enforcement-state.json``
  (:class:`EnforcementState`), when a running collector, ``watch`` or ``run`` writes one: agent
  states (running, paused, throttled, queued, idle), pause counts, the queue and the limits it
  enforces, which then win over the other two sources.

Two :class:`SnapshotSource` implementations feed it: :class:`StoreSnapshots` reads the newest
tick from the store (through DuckDB, spool tail included, so a running collector's last tick is
seen) and :class:`LiveSnapshots` is handed each tick by a running
:class:`~devloop.runner.record.Recorder` and never touches the store (the collector's process
stays small: nothing here imports DuckDB or pyarrow at module level).

Without a state file an agent seen in the tick is "running", or "paused" when every one of its
processes is stopped (SIGSTOP). CPU % is percent of the whole machine, ``100 * cores / host
cores``; memory is bytes.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from devloop.config.models import Workspace
from devloop.core import state as enforcement_state

if TYPE_CHECKING:
    import duckdb

    from devloop.collector.model import Tick

#: The enforcement's live state file, in the workspace folder.
STATE_FILE = enforcement_state.STATE_NAME

#: Agent states the enforcement writes (and the dashboard colours).
AGENT_STATES = ("running", "paused", "throttled", "queued", "idle")

#: A state file older than this many check intervals (and at least STALE_FLOOR seconds) is
#: left over from a writer that died without removing it.
STALE_INTERVALS = enforcement_state.STALE_INTERVALS
STALE_FLOOR = enforcement_state.STALE_FLOOR


class ProcessSample(NamedTuple):
    """One process of a tick, as the snapshot needs it."""

    project: str
    agent: str
    cpu_cores: float
    rss_bytes: int
    fds: int
    threads: int
    state: str | None


@dataclass(frozen=True)
class Limit:
    """A CPU limit (percent of the machine) and a memory limit (bytes); None = none of its own."""

    cpu: float | None
    memory_bytes: int | None
    priority: int | None = None


@dataclass(frozen=True)
class Limits:
    """The limits in force: per project, and per ``project/agent`` for agents with their own."""

    projects: dict[str, Limit]
    agents: dict[str, Limit] = field(default_factory=dict)
    strategy: str | None = None
    profile: str | None = None
    source: str = "workspace.json"  # "store" (limits table) or "workspace.json" (allocate)


@dataclass(frozen=True)
class AgentState:
    """An agent as the state file describes it."""

    project: str
    agent: str
    state: str
    pids: tuple[int, ...]
    cpu_limit: float | None
    memory_limit_bytes: int | None
    pauses: int
    resumes: int


@dataclass(frozen=True)
class QueuedAgent:
    """An agent waiting in the overflow queue since ``since`` (unix seconds)."""

    project: str
    agent: str
    since: float


@dataclass(frozen=True)
class EnforcementState:
    """``enforcement-state.json`` (see the enforcement contract), as read."""

    ts: float
    pid: int
    interval: float
    strategy: str | None
    profile: str | None
    enforcement: str
    limits: Limits
    agents: dict[str, AgentState]
    queue: tuple[QueuedAgent, ...]
    pauses_total: int


@dataclass(frozen=True)
class Usage:
    """What a workspace, project or agent uses at the tick, against its limits."""

    cpu_cores: float = 0.0
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    fds: int = 0
    threads: int = 0
    processes: int = 0
    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None

    @property
    def cpu_of_limit(self) -> float | None:
        """CPU use as a fraction of the limit (1.0 = at the limit); None without a limit."""
        return _fraction(self.cpu_percent, self.cpu_limit)

    @property
    def memory_of_limit(self) -> float | None:
        """Memory use as a fraction of the limit; None without a limit."""
        return _fraction(self.memory_bytes, self.memory_limit_bytes)


@dataclass(frozen=True)
class ProjectStatus:
    """One project at the tick."""

    name: str
    usage: Usage
    priority: int | None
    pauses: int


@dataclass(frozen=True)
class AgentStatus:
    """One agent at the tick: its state, usage, own limits (None: bounded by its project's)."""

    project: str
    agent: str
    state: str
    usage: Usage
    pauses: int
    resumes: int

    @property
    def key(self) -> str:
        return f"{self.project}/{self.agent}"


@dataclass(frozen=True)
class Snapshot:
    """The workspace at tick ``at`` (unix seconds; None while the store holds no tick yet).

    ``enforcement`` is the mode of a running enforcement ("pause", "warn", "throttle") or None
    when no live state file was found; ``state_at`` is when that file was written.
    """

    at: float | None
    cores: int
    workspace: Usage
    projects: tuple[ProjectStatus, ...]
    agents: tuple[AgentStatus, ...]
    queue: tuple[QueuedAgent, ...] = ()
    pauses_total: int = 0
    strategy: str | None = None
    profile: str | None = None
    enforcement: str | None = None
    state_at: float | None = None
    limits_source: str = "workspace.json"
    notes: tuple[str, ...] = ()

    def project(self, name: str) -> ProjectStatus:
        """The project called ``name`` (KeyError if the snapshot has none)."""
        for project in self.projects:
            if project.name == name:
                return project
        raise KeyError(name)

    def agent(self, key: str) -> AgentStatus:
        """The agent ``project/agent`` (KeyError if the snapshot has none)."""
        for agent in self.agents:
            if agent.key == key:
                return agent
        raise KeyError(key)


class SnapshotSource(Protocol):
    """Anything that can say what the workspace looks like now."""

    def snapshot(self) -> Snapshot:
        """The newest snapshot (reads happen here, on every call)."""
        ...


def _fraction(used: float, limit: float | None) -> float | None:
    if limit is None or limit <= 0:
        return None
    return used / limit


# --- the pure builder ------------------------------------------------------------------------


def build_snapshot(
    samples: Iterable[ProcessSample],
    *,
    at: float | None,
    cores: int,
    limits: Limits,
    state: EnforcementState | None = None,
    projects: Sequence[str] = (),
    pauses: Mapping[str, int] | None = None,
    notes: Sequence[str] = (),
) -> Snapshot:
    """Aggregate one tick's processes per agent, project and workspace, against the limits.

    ``projects`` are the workspace's projects (shown even when nothing of theirs ran);
    ``pauses`` counts pause events per ``project/agent`` when no state file gives them.
    The state file's limits and agent states win when ``state`` is given.
    """
    cores = max(cores, 1)
    if state is not None:
        limits = _merge_limits(limits, state.limits)
    per_agent: dict[tuple[str, str], list[ProcessSample]] = {}
    for sample in samples:
        per_agent.setdefault((sample.project, sample.agent), []).append(sample)
    keys = set(per_agent)
    if state is not None:
        keys |= {(a.project, a.agent) for a in state.agents.values()}
    pause_counts = dict(pauses or {})
    agents: list[AgentStatus] = []
    for project, agent in sorted(keys):
        key = f"{project}/{agent}"
        rows = per_agent.get((project, agent), [])
        own = limits.agents.get(key)
        usage = _usage(rows, cores, own.cpu if own else None, own.memory_bytes if own else None)
        known = state.agents.get(key) if state is not None else None
        if known is not None:
            usage = _usage(rows, cores, known.cpu_limit, known.memory_limit_bytes)
            agents.append(AgentStatus(project, agent, known.state, usage, known.pauses,
                                      known.resumes))  # fmt: skip
            continue
        stopped = bool(rows) and all(r.state == "stopped" for r in rows)
        state_name = "paused" if stopped else "running"
        agents.append(AgentStatus(project, agent, state_name, usage, pause_counts.get(key, 0), 0))
    names = sorted(set(projects) | {a.project for a in agents} | set(limits.projects))
    project_rows: list[ProjectStatus] = []
    for name in names:
        rows = [r for (p, _), group in per_agent.items() if p == name for r in group]
        limit = limits.projects.get(name)
        usage = _usage(rows, cores, limit.cpu if limit else None,
                       limit.memory_bytes if limit else None)  # fmt: skip
        project_pauses = sum(a.pauses for a in agents if a.project == name)
        project_rows.append(
            ProjectStatus(name, usage, limit.priority if limit else None, project_pauses)
        )
    all_rows = [r for group in per_agent.values() for r in group]
    # The workspace's limit is the sum of its projects' (unknown if one has none), unless the
    # enforcement says which pool it enforces.
    cpu_limits = [p.usage.cpu_limit for p in project_rows]
    memory_limits = [p.usage.memory_limit_bytes for p in project_rows]
    workspace_cpu = _total(cpu_limits)
    workspace_memory = _total(memory_limits)
    pool = state.limits.projects.get("") if state is not None else None
    if pool is not None:
        workspace_cpu, workspace_memory = pool.cpu, pool.memory_bytes
    memory_pool = int(workspace_memory) if workspace_memory is not None else None
    workspace = _usage(all_rows, cores, workspace_cpu, memory_pool)
    return Snapshot(
        at=at,
        cores=cores,
        workspace=workspace,
        projects=tuple(project_rows),
        agents=tuple(agents),
        queue=state.queue if state is not None else (),
        pauses_total=(state.pauses_total if state is not None else sum(a.pauses for a in agents)),
        strategy=(state.strategy if state is not None else None) or limits.strategy,
        profile=state.profile if state is not None else limits.profile,
        enforcement=state.enforcement if state is not None else None,
        state_at=state.ts if state is not None else None,
        limits_source="enforcement-state.json" if state is not None else limits.source,
        notes=tuple(notes),
    )


def _total(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None)


def _usage(
    rows: Sequence[ProcessSample], cores: int, cpu_limit: float | None, memory_limit: int | None
) -> Usage:
    cpu = math.fsum(r.cpu_cores for r in rows)
    return Usage(
        cpu_cores=cpu,
        cpu_percent=100.0 * cpu / cores,
        memory_bytes=sum(r.rss_bytes for r in rows),
        fds=sum(r.fds for r in rows),
        threads=sum(r.threads for r in rows),
        processes=len(rows),
        cpu_limit=cpu_limit,
        memory_limit_bytes=memory_limit,
    )


def _merge_limits(base: Limits, override: Limits) -> Limits:
    projects = {**base.projects}
    for name, limit in override.projects.items():
        if name:
            old = projects.get(name)
            priority = limit.priority
            if priority is None and old is not None:
                priority = old.priority
            projects[name] = Limit(limit.cpu, limit.memory_bytes, priority)
    return Limits(
        projects=projects,
        agents={**base.agents, **override.agents},
        strategy=override.strategy or base.strategy,
        profile=override.profile,
        source="enforcement-state.json",
    )


# --- the state file --------------------------------------------------------------------------


def read_state(
    workspace_dir: Path | str, *, now: float | None = None
) -> tuple[EnforcementState | None, str | None]:
    """The live state file of ``workspace_dir``, and a note when it was found but not used.

    Returns ``(None, None)`` when there is none; ``(None, note)`` when it is unreadable, or left
    over (its writer is gone, or it is older than ``STALE_INTERVALS`` check intervals): the
    file is read by :func:`devloop.core.state.read`, which owns its format.
    """
    data, note = enforcement_state.read(workspace_dir, now=now)
    if data is None:
        return None, note
    try:
        return parse_state(data), None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        path = Path(workspace_dir) / STATE_FILE
        return None, f"ignored {path}: not an enforcement state ({exc})"


def parse_state(data: Mapping[str, Any]) -> EnforcementState:
    """An :class:`EnforcementState` from the state file's JSON (KeyError/ValueError if not one)."""
    if data.get("version") != enforcement_state.STATE_VERSION:
        raise ValueError(
            f"version {data.get('version')!r}, expected {enforcement_state.STATE_VERSION}"
        )

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    def size(value: Any) -> int | None:
        return None if value is None else int(value)

    workspace = data.get("workspace") or {}
    projects = {
        name: Limit(
            number(p.get("cpu_limit")), size(p.get("memory_limit_bytes")), p.get("priority")
        )  # fmt: skip
        for name, p in (data.get("projects") or {}).items()
    }
    if workspace:
        projects[""] = Limit(number(workspace.get("cpu_limit")),
                             size(workspace.get("memory_limit_bytes")))  # fmt: skip
    agents: dict[str, AgentState] = {}
    agent_limits: dict[str, Limit] = {}
    for key, a in (data.get("agents") or {}).items():
        project, _, agent = key.partition("/")
        agents[key] = AgentState(
            project=str(a.get("project", project)),
            agent=str(a.get("agent", agent)),
            state=str(a.get("state", "running")),
            pids=tuple(int(p) for p in a.get("pids") or ()),
            cpu_limit=number(a.get("cpu_limit")),
            memory_limit_bytes=size(a.get("memory_limit_bytes")),
            pauses=int(a.get("pauses") or 0),
            resumes=int(a.get("resumes") or 0),
        )
        agent_limits[key] = Limit(agents[key].cpu_limit, agents[key].memory_limit_bytes)
    strategy = data.get("strategy")
    profile = data.get("profile")
    return EnforcementState(
        ts=float(data["ts"]),
        pid=int(data["pid"]),
        interval=float(data.get("interval") or 10.0),
        strategy=strategy,
        profile=profile,
        enforcement=str(data.get("enforcement") or "pause"),
        limits=Limits(projects, agent_limits, strategy, profile, "enforcement-state.json"),
        agents=agents,
        queue=tuple(
            QueuedAgent(str(q["project"]), str(q["agent"]), float(q.get("since") or 0.0))
            for q in data.get("queue") or ()
        ),
        pauses_total=int(data.get("pauses_total") or 0),
    )


# --- limits from workspace.json --------------------------------------------------------------


def configured_limits(workspace: Workspace) -> Limits:
    """The limits :func:`~devloop.config.allocation.allocate` gives now (agents: their own only)."""
    from devloop.config.allocation import allocate

    allocation = allocate(workspace)
    return Limits(
        projects={
            name: Limit(p.cpu, p.memory_bytes, p.priority)
            for name, p in allocation.projects.items()
        },
        agents={
            key: Limit(a.cpu, a.memory_bytes)
            for key, a in allocation.agents.items()
            if a.source == "agent"
        },
        strategy=allocation.strategy,
        profile=allocation.profile,
        source="workspace.json",
    )


# --- sources ---------------------------------------------------------------------------------


class StoreSnapshots:
    """Snapshots of the newest tick in a workspace's store (each call re-reads the store)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The newest tick of the store, the limits in force then and the live state file."""
        from devloop.store.db import connect

        with self._lock:
            connection = connect(self.workspace.metrics_dir)
            try:
                return read_snapshot(connection, self.workspace)
            finally:
                connection.close()


def read_snapshot(
    connection: duckdb.DuckDBPyConnection, workspace: Workspace, *, now: float | None = None
) -> Snapshot:
    """The snapshot of the newest tick on ``connection`` (views of :mod:`devloop.store.db`)."""
    from devloop.store.db import mapped

    with mapped(f"cannot read the newest tick of {workspace.metrics_dir}"):
        newest = connection.execute(
            "SELECT epoch_us(max(ts)), max(cores) FROM system "
            "WHERE ts = (SELECT max(ts) FROM system)"
        ).fetchone()
        at_us = newest[0] if newest else None
        if at_us is None:  # samples without system rows: the newest sample's tick
            row = connection.execute("SELECT epoch_us(max(ts)) FROM samples").fetchone()
            at_us = row[0] if row else None
        cores_row = connection.execute("SELECT arg_max(cores, ts) FROM system").fetchone()
        cores = int(cores_row[0]) if cores_row and cores_row[0] else (os.cpu_count() or 1)
        samples: list[ProcessSample] = []
        limit_rows: list[tuple[Any, ...]] = []
        if at_us is not None:
            samples = [
                ProcessSample(*row)
                for row in connection.execute(
                    "SELECT project, agent, coalesce(cpu_cores, 0), coalesce(rss_bytes, 0), "
                    "coalesce(fds, 0), coalesce(threads, 0), state FROM samples "
                    "WHERE ts = make_timestamptz(?)",
                    [at_us],
                ).fetchall()
            ]
            limit_rows = connection.execute(
                "SELECT project, agent, arg_max(cpu_limit_percent, ts), "
                "arg_max(memory_limit_bytes, ts), arg_max(priority, ts), arg_max(strategy, ts), "
                "arg_max(profile, ts), max(ts) FROM limits WHERE ts <= make_timestamptz(?) "
                "GROUP BY project, agent",
                [at_us],
            ).fetchall()
        pauses = {
            f"{project}/{agent}": int(count)
            for project, agent, count in connection.execute(
                "SELECT project, agent, count(*) FROM events WHERE action = 'pause' "
                "AND project IS NOT NULL AND agent IS NOT NULL GROUP BY project, agent"
            ).fetchall()
        }
    limits = _store_limits(limit_rows) if limit_rows else configured_limits(workspace)
    state, note = read_state(workspace.dir, now=now)
    return build_snapshot(
        samples,
        at=at_us / 1e6 if at_us is not None else None,
        cores=cores,
        limits=limits,
        state=state,
        projects=[p.name for p in workspace.config.enabled_projects],
        pauses=pauses,
        notes=[note] if note else [],
    )


def _store_limits(rows: Sequence[tuple[Any, ...]]) -> Limits:
    projects: dict[str, Limit] = {}
    agents: dict[str, Limit] = {}
    newest = max(rows, key=lambda r: r[7])
    for project, agent, cpu, memory, priority, _, _, _ in rows:
        limit = Limit(cpu, memory, priority)
        if agent:
            agents[f"{project}/{agent}"] = limit
        else:
            projects[project] = limit
    return Limits(projects, agents, newest[5], newest[6], "store")


class LiveSnapshots:
    """Snapshots of the ticks a running Recorder hands over with :meth:`feed` (no store reads).

    Usage: ``source = LiveSnapshots(workspace); attach(recorder, source)``; then any thread may
    call :meth:`snapshot`.
    """

    def __init__(self, workspace: Workspace) -> None:
        from devloop.collector import OTHER_PROJECT

        self.workspace = workspace
        self._projects = {p.name for p in workspace.config.projects} | {OTHER_PROJECT}
        self._limits = configured_limits(workspace)
        self._tick: tuple[float | None, int, list[ProcessSample]] = (None, os.cpu_count() or 1, [])

    def feed(self, tick: Tick) -> None:
        """Take a collector tick (rows in the store's column order)."""
        samples = [
            ProcessSample(
                row[2], row[3], row[8] or 0.0, row[10] or 0, row[11] or 0, row[12] or 0, row[15]
            )  # fmt: skip
            for row in tick.samples
            if row[2] in self._projects
        ]
        # One assignment: a scrape in another thread sees the old tick or the new one, whole.
        self._tick = (tick.ts_us / 1e6, int(tick.system[2]), samples)

    def snapshot(self) -> Snapshot:
        at, cores, samples = self._tick
        state, note = read_state(self.workspace.dir)
        return build_snapshot(
            samples,
            at=at,
            cores=cores,
            limits=self._limits,
            state=state,
            projects=[p.name for p in self.workspace.config.enabled_projects],
            notes=[note] if note else [],
        )


class _TickTap:
    """Stands in for a Recorder's collector and hands each tick to a LiveSnapshots too."""

    def __init__(self, collector: Any, source: LiveSnapshots) -> None:
        self._collector = collector
        self._source = source

    def tick(self, now: float | None = None) -> Tick:
        tick: Tick = self._collector.tick(now)
        self._source.feed(tick)
        return tick

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collector, name)


def attach(recorder: Any, source: LiveSnapshots) -> None:
    """Make ``recorder`` (a :class:`~devloop.runner.record.Recorder`) feed ``source``."""
    recorder.collector = _TickTap(recorder.collector, source)
