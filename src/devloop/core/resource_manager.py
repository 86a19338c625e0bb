"""The resource manager: usage against limits, and the enforcement that keeps agents inside them.

The guide's API::

    from devloop.core.resource_manager import ResourceManager

    manager = ResourceManager(workspace)            # a Workspace, or a workspace folder
    manager.get_workspace_usage()   # {"cpu_percent", "memory_mb", "cpu_limit", "memory_limit_mb"}
    manager.get_project_usage("auth-service")
    manager.can_run_agent("linter")
    manager.wait_for_resources("linter", timeout=60)
    manager.resume_paused_agents()

Usage comes from the collector's latest tick: a :class:`~devloop.runner.record.Recorder` feeds
every tick it records to :meth:`ResourceManager.observe` and runs :meth:`ResourceManager.check`;
a manager used on its own samples with a collector of its own when asked for usage.

How a check decides (every tick of the recorder, which ticks every ``checkInterval`` or faster):

1. The limits in force: the profile for the moment (``--profile``/``DEVLOOP_RESOURCE_PROFILE``
   or the time windows) and the strategy; under ``dynamic`` the guide's rebalancing rule is
   applied to the recent usage. Each change is an event and new rows of the ``limits`` table.
2. Resume: a paused agent is continued when it has been paused at least ``min_pause`` seconds and
   the usage of every scope it belongs to (its own limits, its project's, the workspace's) is
   under ``resumeThreshold`` x the limit, for CPU and memory. At most one agent per project is
   resumed per check, highest priority first, so a crowd of paused agents does not come back all
   at once and overshoot again.
3. Overshoots, narrowest scope first: an agent over its own limits (from agents.json), a project
   over its share, the workspace over the pool. Usage here counts running agents only: a paused
   agent's CPU is zero, and its memory is contained (it cannot grow), so pausing one more agent
   each check while memory stays high, which would end with everything paused, cannot happen.
   With ``pause``, agents are stopped until the scope's usage is back under its limit: lowest
   priority project first (the highest ``priority`` number), then the largest consumer of the
   metric that is over. With ``warn``, an event when a scope first goes over and nothing else
   until it has dropped under ``resumeThreshold`` x the limit. With ``throttle``, an agent over a
   CPU limit is held at its limit by duty-cycling (:mod:`devloop.core.throttle`); memory
   overshoots, and the workspace scope, are paused as with ``pause``.
4. ``maxFileHandles`` and ``maxThreads`` are warned about, never enforced by a signal.

Every action is one JSON line in ``<workspace-dir>/resource-enforcement.log`` and one row of the
store's ``events`` table (through ``on_event``). The live state is written each check to
``<workspace-dir>/enforcement-state.json`` for the dashboard and the Prometheus exporter.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.config.models import Workspace, WorkspaceConfig
from devloop.core import admit, signals
from devloop.core.admit import STATE_NAME
from devloop.core.allocation import Allocation, ProjectAllocation, UsagePoint, allocate, rebalance
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.errors import UsageError

if TYPE_CHECKING:
    from devloop.collector.model import Tick
    from devloop.core.throttle import Throttler

logger = logging.getLogger(__name__)

MB = 1 << 20
LOG_NAME = "resource-enforcement.log"
JOURNAL_NAME = ".paused-processes.json"
STATE_VERSION = 1

AgentKey = tuple[str, str]
EventSink = Callable[[dict[str, Any]], None]
LimitsSink = Callable[[Allocation, str], None]


@dataclass
class AgentUsage:
    """What one agent's processes use now (summed over them)."""

    project: str
    agent: str
    cores: float = 0.0
    memory_bytes: int = 0
    fds: int = 0
    threads: int = 0
    processes: list[tuple[int, int, int | None]] = field(
        default_factory=list
    )  # pid, start_us, ppid

    @property
    def key(self) -> AgentKey:
        return (self.project, self.agent)


@dataclass
class Usage:
    """One observation of the workspace: per agent, and the machine's size."""

    ts: float
    cores: int
    agents: dict[AgentKey, AgentUsage]

    @classmethod
    def from_tick(cls, tick: Tick, projects: set[str]) -> Usage:
        """The usage of ``projects`` in ``tick`` (processes tagged for the projects of other
        workspaces, and the ``(other)`` processes of ``--all``, are under none of our limits)."""
        agents: dict[AgentKey, AgentUsage] = {}
        for row in tick.samples:
            project, agent, pid, start_us, ppid = row[2], row[3], row[4], row[5], row[6]
            if project not in projects:
                continue
            usage = agents.get((project, agent))
            if usage is None:
                usage = agents[(project, agent)] = AgentUsage(project, agent)
            usage.cores += row[8] or 0.0
            usage.memory_bytes += row[10] or 0
            usage.fds += row[11] or 0
            usage.threads += row[12] or 0
            usage.processes.append((pid, start_us, ppid))
        return cls(tick.ts_us / 1e6, int(tick.system[2]) or 1, agents)


@dataclass
class Paused:
    """An agent devloop holds stopped."""

    project: str
    agent: str
    scope: str
    metric: str
    since: float  # monotonic
    since_wall: float
    processes: list[ProcessRef]
    cores_before: float


@dataclass(frozen=True)
class Action:
    """One thing a check did (also an event row and a log line)."""

    action: str
    scope: str | None
    project: str | None
    agent: str | None
    pids: tuple[int, ...] = ()
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    message: str = ""

    def to_json(self, ts: float) -> dict[str, Any]:
        return {
            "ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
            "action": self.action,
            "scope": self.scope,
            "project": self.project,
            "agent": self.agent,
            "pids": list(self.pids),
            "metric": self.metric,
            "value": self.value,
            "limit": self.limit,
            "message": self.message,
        }


def _workspace(source: Workspace | WorkspaceConfig | str | os.PathLike[str]) -> Workspace:
    if isinstance(source, Workspace):
        return source
    if isinstance(source, WorkspaceConfig):
        return Workspace(dir=source.file.parent, config=source, agents={})
    from devloop.config.load import load_workspace

    return load_workspace(Path(source))


class ResourceManager:
    """Usage against limits for one workspace, and the enforcement of those limits."""

    def __init__(
        self,
        workspace_config: Workspace | WorkspaceConfig | str | os.PathLike[str],
        *,
        profile: str | None = None,
        on_event: EventSink | None = None,
        on_limits: LimitsSink | None = None,
        min_pause: float | None = None,
        enforce: bool = True,
        source: str = "auto",
    ) -> None:
        """``workspace_config``: a loaded :class:`Workspace` (config and agents), a
        ``WorkspaceConfig``, or the path of a workspace folder.

        ``enforce=False`` observes and answers questions but never signals (nor warns).
        ``min_pause`` is the shortest pause, against flapping (default ``max(3 x
        checkInterval, 5 s)``). Events go to the log file and to ``on_event``; limit changes
        to ``on_limits``.
        """
        self.workspace = _workspace(workspace_config)
        config = self.workspace.config
        limits = config.global_.resource_limits
        self.profile = profile or os.environ.get("DEVLOOP_RESOURCE_PROFILE") or None
        self.interval = limits.check_interval
        self.min_pause = min_pause if min_pause is not None else max(3 * self.interval, 5.0)
        self.enforce = enforce
        self.on_event = on_event
        self.on_limits = on_limits
        self._source = source
        self._lock = threading.RLock()
        self._usage: Usage | None = None
        self._observed_at = -math.inf
        self._fed = False
        self._own_collector: Any = None
        self._started: set[ProcessRef] = set()
        self._paused: dict[AgentKey, Paused] = {}
        self._warned: set[tuple[str, str, str]] = set()  # (scope, name, metric)
        self._unsignallable: dict[AgentKey, frozenset[int]] = {}
        self._counts: dict[AgentKey, list[int]] = {}  # pauses, resumes
        self._queue: Callable[[], list[dict[str, Any]]] = list
        self._throttler: Throttler | None = None
        self._history: dict[str, deque[UsagePoint]] = {}
        self._projects = {p.name for p in config.projects}
        self._base: Allocation = allocate(self.workspace, profile=self.profile)
        self.allocation: Allocation = self._base
        folder = self.workspace.dir
        self.log_path = folder / LOG_NAME
        self.state_path = folder / STATE_NAME
        self.journal = PauseJournal(folder / JOURNAL_NAME)

    # --- limits ----------------------------------------------------------------------------

    def action_for(self, project: str | None) -> str:
        """The enforcement action in force for a project (its agents.json may override)."""
        own = self.workspace.agents.get(project) if project else None
        if own is not None and own.enforcement_action is not None:
            return own.enforcement_action
        return self.workspace.config.global_.resource_limits.enforcement_action

    def resume_threshold(self, project: str | None) -> float:
        own = self.workspace.agents.get(project) if project else None
        if own is not None and own.resume_threshold is not None:
            return own.resume_threshold
        return self.workspace.config.global_.resource_limits.resume_threshold

    def _priority(self, project: str) -> int:
        alloc = self.allocation.projects.get(project)
        return alloc.priority if alloc is not None else 1 << 30

    def _agent_limits(self, project: str, agent: str) -> tuple[float, int] | None:
        """An agent's own limits (bounded by its project's), None when it has none."""
        own = self.allocation.agents.get(f"{project}/{agent}")
        if own is None or own.source != "agent":
            return None
        share = self.allocation.projects.get(project)
        if share is None:
            return own.cpu, own.memory_bytes
        return min(own.cpu, share.cpu), min(own.memory_bytes, share.memory_bytes)

    def _refresh_limits(self, now: float) -> list[Action]:
        actions: list[Action] = []
        base = allocate(self.workspace, profile=self.profile, at=datetime.fromtimestamp(now).time())
        if base.profile != self._base.profile or base.pool != self._base.pool:
            actions.append(
                Action(
                    "limit-change",
                    "workspace",
                    None,
                    None,
                    message=f"profile {self._base.profile or 'base'} -> "
                    f"{base.profile or 'base'}: pool {base.pool.cpu:g}% / "
                    f"{base.pool.memory_bytes / MB:.1f}MB",
                )  # fmt: skip
            )
            self._base = self.allocation = base
            if self.on_limits is not None:
                self.on_limits(base, "profile")
        if base.strategy != "dynamic" or self._usage is None:
            return actions
        adaptation = self.workspace.config.resource_sharing.adaptation
        for name in base.projects:
            history = self._history.setdefault(name, deque())
            agents = [a for a in self._usage.agents.values() if a.project == name]
            cpu = sum(a.cores for a in agents) / self._usage.cores * 100
            history.append(UsagePoint(now, cpu, sum(a.memory_bytes for a in agents)))
            while history and history[0].t < now - 2 * adaptation.adjustment_frequency:
                history.popleft()
        projects, changes = rebalance(
            self.allocation.projects, self._history, adaptation,
            base=self._base.projects, pool=base.pool,
        )  # fmt: skip
        if changes:
            self.allocation = Allocation(
                base.strategy, base.profile, base.pool, projects, base.agents, base.notes
            )
            for change in changes:
                actions.append(
                    Action(
                        "limit-change",
                        "project",
                        change.project,
                        None,
                        metric=change.resource,
                        value=change.after,
                        limit=change.before,
                        message=change.reason,
                    )  # fmt: skip
                )
            for history in self._history.values():
                history.clear()  # a new window starts with the new limits
            if self.on_limits is not None:
                self.on_limits(self.allocation, "rebalance")
        return actions

    # --- usage -----------------------------------------------------------------------------

    def observe(self, tick: Tick) -> None:
        """Take the collector's latest tick as the current usage (from then on the manager
        is fed: it never samples on its own again)."""
        with self._lock:
            self._fed = True
            self._take(tick)

    def _take(self, tick: Tick) -> None:
        self._usage = Usage.from_tick(tick, self._projects)
        self._observed_at = time.monotonic()

    def refresh(self) -> Usage:
        """The current usage: the latest tick a recorder fed, or else a sample taken now with a
        collector of our own (at most once per check interval)."""
        with self._lock:
            fresh = time.monotonic() - self._observed_at < self.interval
            if self._usage is not None and (self._fed or fresh):
                return self._usage
            from devloop.collector import Collector
            from devloop.runner.record import rules_for

            if self._own_collector is None:
                self._own_collector = Collector(rules_for(self.workspace), source=self._source)
                self._own_collector.tick()  # CPU rates need two readings
                time.sleep(0.25)
            self._take(self._own_collector.tick())
            assert self._usage is not None
            return self._usage

    def _totals(
        self, usage: Usage, project: str | None = None, *, running_only: bool = False
    ) -> tuple[float, int]:
        cores, memory = 0.0, 0
        for key, agent in usage.agents.items():
            if project is not None and agent.project != project:
                continue
            if running_only and key in self._paused:
                continue
            cores += agent.cores
            memory += agent.memory_bytes
        return cores / usage.cores * 100, memory

    def _shape(
        self, cpu: float, memory: int, cpu_limit: float, memory_limit: int
    ) -> dict[str, Any]:
        return {
            "cpu_percent": round(cpu, 1),
            "memory_mb": round(memory / MB, 1),
            "cpu_limit": round(cpu_limit, 2),
            "memory_limit_mb": round(memory_limit / MB, 1),
        }

    def get_workspace_usage(self) -> dict[str, Any]:
        """The workspace's CPU (% of the machine) and memory (MB) against the pool in force."""
        usage = self.refresh()
        cpu, memory = self._totals(usage)
        pool = self.allocation.pool
        return self._shape(cpu, memory, pool.cpu, pool.memory_bytes)

    def get_project_usage(self, name: str) -> dict[str, Any]:
        """One project's usage against its share (same keys as the workspace's)."""
        share = self._project(name)
        cpu, memory = self._totals(self.refresh(), name)
        return self._shape(cpu, memory, share.cpu, share.memory_bytes)

    def get_agent_usage(self, project: str, agent: str) -> dict[str, Any]:
        """One agent's usage against its own limits (its project's when it has none), with
        ``fds``, ``threads``, ``pids`` and ``state`` (running, paused, throttled or idle)."""
        share = self._project(project)
        usage = self.refresh()
        found = usage.agents.get((project, agent), AgentUsage(project, agent))
        limits = self._agent_limits(project, agent) or (share.cpu, share.memory_bytes)
        shape = self._shape(found.cores / usage.cores * 100, found.memory_bytes, *limits)
        shape.update(
            fds=found.fds,
            threads=found.threads,
            pids=[p[0] for p in found.processes],
            state=self._state_of((project, agent), found),
        )
        return shape

    def _project(self, name: str) -> ProjectAllocation:
        share = self.allocation.projects.get(name)
        if share is None:
            known = ", ".join(sorted(self.allocation.projects)) or "none"
            raise UsageError(f"unknown project {name!r} (enabled projects: {known})")
        return share

    def held(self, project: str, agent: str) -> str | None:
        """``"paused"`` or ``"throttled"`` when the enforcer holds the agent so; else None."""
        with self._lock:
            state = self._state_of((project, agent), None)
        return state if state in ("paused", "throttled") else None

    def _state_of(self, key: AgentKey, usage: AgentUsage | None) -> str:
        if key in self._paused:
            return "paused"
        if self._throttler is not None and "/".join(key) in self._throttler.keys():
            return "throttled"
        return "running" if usage is not None and usage.processes else "idle"

    # --- admission ---------------------------------------------------------------------------

    def running_agents(self) -> int:
        """How many agents have processes now (paused ones count: they hold their slot)."""
        usage = self.refresh()
        return sum(1 for a in usage.agents.values() if a.processes)

    def _resolve_agent(self, agent: str, project: str | None) -> list[str]:
        if project is None and "/" in agent:
            project, agent = agent.split("/", 1)
        if project is not None:
            self._project(project)
            return [project]
        return [name for name, agents in self.workspace.agents.items() if agent in agents.agents]

    def can_run_agent(self, agent: str, project: str | None = None) -> bool:
        """May ``agent`` (of ``project``, or ``"project/agent"``) start now?

        Yes when the workspace and the agent's project are under their CPU and memory limits,
        the project was granted something, and the agent is neither paused nor over limits of
        its own. An agent name found in several projects must be under all of them.
        """
        usage = self.refresh()
        cpu, memory = self._totals(usage)
        pool = self.allocation.pool
        if cpu >= pool.cpu or memory >= pool.memory_bytes:
            return False
        name = agent.split("/", 1)[1] if project is None and "/" in agent else agent
        for project_name in self._resolve_agent(agent, project):
            share = self._project(project_name)
            if not share.granted or (project_name, name) in self._paused:
                return False
            p_cpu, p_memory = self._totals(usage, project_name)
            if p_cpu >= share.cpu or p_memory >= share.memory_bytes:
                return False
            own = self._agent_limits(project_name, name)
            found = usage.agents.get((project_name, name))
            if own is not None and found is not None:
                if found.cores / usage.cores * 100 >= own[0] or found.memory_bytes >= own[1]:
                    return False
        return True

    def wait_for_resources(
        self,
        agent: str,
        project: str | None = None,
        *,
        timeout: float | None = None,
        poll: float | None = None,
    ) -> bool:
        """Block until :meth:`can_run_agent` is true (True) or ``timeout`` seconds pass
        (False). Usage is re-read every ``poll`` seconds (default: the check interval)."""
        deadline = time.monotonic() + timeout if timeout is not None else math.inf
        every = poll if poll is not None else self.interval
        while True:
            if self.can_run_agent(agent, project):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(every, left))

    # --- processes devloop may signal ------------------------------------------------------

    def started(self, pid: int) -> None:
        """Mark a process this devloop started (it may be signalled even without a tag)."""
        process = signals.ref(pid)
        if process is not None:
            self._started.add(process)

    def _refs(self, usage: AgentUsage) -> list[ProcessRef]:
        refs = []
        for pid, start_us, _ppid in usage.processes:
            process = signals.ref_at(pid, start_us)
            if process is not None:
                refs.append(process)
        return refs

    # --- the check ---------------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[Action]:
        """Compare the latest usage with the limits and act. Returns what was done."""
        queue = self._queue()  # outside our lock: the queue's own lock calls can_run_agent
        with self._lock:
            now = time.time() if now is None else now
            actions = self._refresh_limits(now)
            usage = self._usage
            if self._throttler is not None and self._throttler.error is not None:
                error, self._throttler = self._throttler.error, None  # it continued everything
                message = f"throttling stopped: {error}; restarting it"
                actions.append(Action("warn", "workspace", None, None, message=message))
            if usage is not None and self.enforce:
                actions += self._forget_gone(usage)
                actions += self._keep_paused(usage)
                actions += self._resume(usage)
                actions += self._enforce(usage)
                actions += self._warn_handles(usage)
            for action in actions:
                self._record(action, now)
            if self.enforce:  # the live state is the enforcer's; an observer only admits
                self._write_state(now, queue)
            self._write_admission(now)
            return actions

    def _forget_gone(self, usage: Usage) -> list[Action]:
        actions = []
        for key, paused in list(self._paused.items()):
            alive = [p for p in paused.processes if signals.process_start(p.pid) == p.start]
            gone = [p for p in paused.processes if p not in alive]
            if gone:
                self.journal.remove(gone)
            paused.processes = alive
            if not alive:
                del self._paused[key]
                actions.append(Action("resume", paused.scope, key[0], key[1],
                                      message="its processes exited while paused"))  # fmt: skip
        if self._throttler is not None:
            for name in self._throttler.keys():
                project, agent = name.split("/", 1)
                if (project, agent) not in usage.agents:
                    self._throttler.release(name)
        return actions

    def _keep_paused(self, usage: Usage) -> list[Action]:
        """Stop processes a paused agent started since (forked before the stop, or run anew)."""
        for key, paused in self._paused.items():
            found = usage.agents.get(key)
            if found is None:
                continue
            new = [p for p in self._refs(found) if p not in paused.processes]
            if new:
                self._stop(paused, new)
        return []

    def _stop(self, paused: Paused, roots: list[ProcessRef]) -> list[ProcessRef]:
        members = signals.tree(roots)
        self.journal.add(paused.project, paused.agent, members)
        stopped = signals.stop_tree(roots, project=paused.project, started=self._started)
        self.journal.add(paused.project, paused.agent, stopped)
        self.journal.remove(p for p in members if p not in stopped)
        paused.processes.extend(p for p in stopped if p not in paused.processes)
        return stopped

    def _scopes_of(self, project: str, agent: str) -> list[tuple[str, str | None, float, int]]:
        """(scope, name, cpu limit, memory limit) of every limit an agent is under."""
        scopes: list[tuple[str, str | None, float, int]] = []
        own = self._agent_limits(project, agent)
        if own is not None:
            scopes.append(("agent", f"{project}/{agent}", own[0], own[1]))
        share = self.allocation.projects.get(project)
        if share is not None:
            scopes.append(("project", project, share.cpu, share.memory_bytes))
        pool = self.allocation.pool
        scopes.append(("workspace", None, pool.cpu, pool.memory_bytes))
        return scopes

    def _scope_usage(
        self, usage: Usage, scope: str, name: str | None, *, running_only: bool
    ) -> tuple[float, int]:
        if scope == "agent":
            assert name is not None
            project, agent = name.split("/", 1)
            if running_only and (project, agent) in self._paused:
                return 0.0, 0
            found = usage.agents.get((project, agent))
            if found is None:
                return 0.0, 0
            return found.cores / usage.cores * 100, found.memory_bytes
        return self._totals(usage, name if scope == "project" else None, running_only=running_only)

    def _resume(self, usage: Usage) -> list[Action]:
        actions: list[Action] = []
        now = time.monotonic()
        resumed_projects: set[str] = set()
        order = sorted(self._paused.values(), key=lambda p: (self._priority(p.project), p.since))
        for paused in order:
            if now - paused.since < self.min_pause or paused.project in resumed_projects:
                continue
            if not self._fits(paused, usage):
                continue
            actions.append(self._continue(paused, "usage fell under the resume threshold"))
            resumed_projects.add(paused.project)
        return actions

    def _fits(self, paused: Paused, usage: Usage) -> bool:
        """May a paused agent come back? Every scope it belongs to must be under
        ``resumeThreshold`` x its limit for the metric it was paused for, and under the limit
        itself for the other metric (a project holding 90 % of its memory, which is allowed,
        must not keep a CPU pause going for ever)."""
        threshold = self.resume_threshold(paused.project)
        for scope, name, cpu_limit, memory_limit in self._scopes_of(paused.project, paused.agent):
            cpu, memory = self._scope_usage(usage, scope, name, running_only=False)
            if scope == "agent":  # a stopped agent's own CPU is zero: judge its memory only
                cpu = 0.0
            cpu_bar = cpu_limit * (threshold if paused.metric == "cpu" else 1.0)
            memory_bar = memory_limit * (threshold if paused.metric == "memory" else 1.0)
            if cpu >= cpu_bar or memory >= memory_bar:
                return False
        return True

    def _continue(self, paused: Paused, why: str) -> Action:
        key = (paused.project, paused.agent)
        continued = signals.continue_all(paused.processes)
        self.journal.remove(paused.processes)
        self._paused.pop(key, None)
        self._counts.setdefault(key, [0, 0])[1] += 1
        waited = time.monotonic() - paused.since
        return Action(
            "resume", paused.scope, paused.project, paused.agent,
            tuple(p.pid for p in continued), paused.metric,
            message=f"{why}; paused {waited:.1f}s",
        )  # fmt: skip

    def _enforce(self, usage: Usage) -> list[Action]:
        actions: list[Action] = []
        # narrowest scope first: agents with limits of their own, projects, the workspace
        scopes: list[tuple[str, str | None, float, int]] = []
        for (project, agent), _found in usage.agents.items():
            own = self._agent_limits(project, agent)
            if own is not None:
                scopes.append(("agent", f"{project}/{agent}", own[0], own[1]))
        for project_name, share in self.allocation.projects.items():
            scopes.append(("project", project_name, share.cpu, share.memory_bytes))
        pool = self.allocation.pool
        scopes.append(("workspace", None, pool.cpu, pool.memory_bytes))
        for scope, name, cpu_limit, memory_limit in scopes:
            for metric, limit in (("cpu", cpu_limit), ("memory", float(memory_limit))):
                actions += self._enforce_scope(usage, scope, name, metric, limit)
        return actions

    def _members(self, usage: Usage, scope: str, name: str | None) -> list[AgentUsage]:
        if scope == "agent":
            assert name is not None
            found = usage.agents.get(tuple(name.split("/", 1)))  # type: ignore[arg-type]
            return [found] if found is not None else []
        return [
            a for a in usage.agents.values()
            if scope == "workspace" or a.project == name
        ]  # fmt: skip

    def _enforce_scope(
        self, usage: Usage, scope: str, name: str | None, metric: str, limit: float
    ) -> list[Action]:
        cpu, memory = self._scope_usage(usage, scope, name, running_only=True)
        value = cpu if metric == "cpu" else float(memory)
        project = name.split("/", 1)[0] if scope != "workspace" and name else None
        agent = name.split("/", 1)[1] if scope == "agent" and name else None
        warned = (scope, name or "", metric)
        action = self.action_for(project)
        if value <= limit:
            total_cpu, total_memory = self._scope_usage(usage, scope, name, running_only=False)
            total = total_cpu if metric == "cpu" else float(total_memory)
            if total < self.resume_threshold(project) * limit:
                self._warned.discard(warned)
            return []
        if action == "warn" or (limit <= 0 and scope != "agent"):
            if warned in self._warned:
                return []
            self._warned.add(warned)
            return [Action("warn", scope, project, agent, (), metric, round(value, 3), limit,
                           self._over_message(scope, name, metric, value, limit))]  # fmt: skip
        if action == "throttle" and metric == "cpu" and scope != "workspace":
            return self._throttle(usage, scope, name, limit)
        return self._pause_until_under(usage, scope, name, metric, value, limit)

    @staticmethod
    def _over_message(scope: str, name: str | None, metric: str, value: float, limit: float) -> str:
        what = name or "workspace"
        if metric == "cpu":
            return f"{scope} {what} CPU {value:.1f}% over its {limit:g}% limit"
        return f"{scope} {what} memory {value / MB:.1f}MB over its {limit / MB:.1f}MB limit"

    def _pause_until_under(
        self, usage: Usage, scope: str, name: str | None, metric: str, value: float, limit: float
    ) -> list[Action]:
        def amount(a: AgentUsage) -> float:
            return a.cores / usage.cores * 100 if metric == "cpu" else float(a.memory_bytes)

        candidates = [
            a for a in self._members(usage, scope, name)
            if a.key not in self._paused and a.processes and amount(a) > 0
        ]  # fmt: skip
        # lowest priority first (the highest number), then the largest consumer
        candidates.sort(key=lambda a: (-self._priority(a.project), -amount(a)))
        actions: list[Action] = []
        projected = value
        for victim in candidates:
            if projected <= limit:
                break
            pids = frozenset(p[0] for p in victim.processes)
            if self._unsignallable.get(victim.key) == pids:
                continue  # found to hold nothing devloop may signal, and unchanged since
            roots = self._refs(victim)
            if self._throttler is not None and "/".join(victim.key) in self._throttler.keys():
                self._throttler.release("/".join(victim.key))  # else it would SIGCONT it
            paused = Paused(victim.project, victim.agent, scope, metric, time.monotonic(),
                            time.time(), [], victim.cores / usage.cores * 100)  # fmt: skip
            stopped = self._stop(paused, roots)
            if not stopped:
                self._unsignallable[victim.key] = pids
                continue  # nothing of it that devloop may signal: try the next one
            self._paused[victim.key] = paused
            self._counts.setdefault(victim.key, [0, 0])[0] += 1
            projected -= amount(victim)
            actions.append(
                Action(
                    "pause",
                    scope,
                    victim.project,
                    victim.agent,
                    tuple(p.pid for p in stopped),
                    metric,
                    round(value, 3),
                    limit,
                    self._over_message(scope, name, metric, value, limit),
                )  # fmt: skip
            )
        if projected > limit:
            warned = (scope, name or "", metric)
            if warned not in self._warned:
                self._warned.add(warned)
                project = name.split("/", 1)[0] if scope != "workspace" and name else None
                actions.append(
                    Action(
                        "warn",
                        scope,
                        project,
                        None,
                        (),
                        metric,
                        round(value, 3),
                        limit,
                        self._over_message(scope, name, metric, value, limit)
                        + "; nothing left that devloop may pause",
                    )  # fmt: skip
                )
        return actions

    def _throttle(self, usage: Usage, scope: str, name: str | None, limit: float) -> list[Action]:
        from devloop.core.throttle import Throttler

        if self._throttler is None:
            self._throttler = Throttler(
                cores=usage.cores, journal=self.journal, on_event=self._throttle_event
            )
        members = [a for a in self._members(usage, scope, name)
                   if a.key not in self._paused and a.processes]  # fmt: skip
        if not members:
            return []
        share = limit / len(members)  # a project's agents share its limit evenly
        for member in members:
            target = share
            own = self._agent_limits(member.project, member.agent)
            if own is not None:
                target = min(target, own[0]) if scope == "project" else own[0]
            self._throttler.hold(
                f"{member.project}/{member.agent}", project=member.project, agent=member.agent,
                roots=self._refs(member), target_cores=target / 100 * usage.cores,
                started=self._started,
            )  # fmt: skip
        return []

    def _throttle_event(self, action: str, **fields: Any) -> None:
        self._record(
            Action(action, "agent", fields.get("project"), fields.get("agent"),
                   tuple(fields.get("pids") or ()), "cpu", fields.get("value"),
                   fields.get("limit"), str(fields.get("message", ""))),
            time.time(),
        )  # fmt: skip

    def _warn_handles(self, usage: Usage) -> list[Action]:
        actions = []
        for key, found in usage.agents.items():
            limits = self.allocation.agents.get("/".join(key))
            if limits is None:
                continue
            for metric, have, cap in (("fds", found.fds, limits.max_file_handles),
                                      ("threads", found.threads, limits.max_threads)):  # fmt: skip
                warned = ("agent", "/".join(key), metric)
                if cap is None:
                    continue
                if have <= cap:
                    self._warned.discard(warned)
                    continue
                if warned not in self._warned:
                    self._warned.add(warned)
                    actions.append(Action("warn", "agent", key[0], key[1], (), metric, have, cap,
                                          f"{metric} {have} over its limit of {cap}"))  # fmt: skip
        return actions

    # --- resuming on demand and on exit --------------------------------------------------

    def paused_agents(self) -> list[AgentKey]:
        return list(self._paused)

    def resume_paused_agents(self, *, force: bool = False) -> list[AgentKey]:
        """Resume the paused agents that fit again (all of them with ``force``); returns them.

        Without ``force`` this is the check's own resume rule, run now (the minimum pause time
        is not waited for)."""
        with self._lock:
            now = time.time()
            resumed: list[AgentKey] = []
            for key, paused in list(self._paused.items()):
                if not force:
                    usage = self._usage
                    if usage is None:
                        continue
                    if not self._fits(paused, usage):
                        continue
                self._record(self._continue(paused, "resumed on request"), now)
                resumed.append(key)
            return resumed

    def recover(self) -> list[signals.JournalEntry]:
        """Continue what a previous devloop, killed with SIGKILL, left stopped."""
        with self._lock:
            entries = self.journal.recover()
            now = time.time()
            by_agent: dict[AgentKey, list[int]] = {}
            for entry in entries:
                by_agent.setdefault((entry.project, entry.agent), []).append(entry.pid)
            for (project, agent), pids in by_agent.items():
                self._record(Action("recover", "agent", project, agent, tuple(pids),
                                    message="left stopped by a devloop that was killed; "
                                            "continued"), now)  # fmt: skip
            return entries

    def close(self) -> None:
        """Continue every process devloop holds stopped or throttled; remove the state file (an
        enforcer's) and the admission file (a recorder's)."""
        with self._lock:
            try:
                if self._throttler is not None:
                    self._throttler.close()
                    self._throttler = None
                now = time.time()
                for paused in list(self._paused.values()):
                    self._record(self._continue(paused, "devloop is stopping"), now)
            finally:
                if self.enforce:
                    self.state_path.unlink(missing_ok=True)
                if self._fed:
                    (self.workspace.dir / admit.ADMISSION_NAME).unlink(missing_ok=True)
                if self._own_collector is not None:
                    self._own_collector.close()
                    self._own_collector = None

    def __enter__(self) -> ResourceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the record of what was done --------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        scope: str | None = None,
        project: str | None = None,
        agent: str | None = None,
        pids: Iterable[int] = (),
        metric: str | None = None,
        value: float | None = None,
        limit: float | None = None,
        message: str = "",
    ) -> None:
        """Log an action of someone else's (the runner's queue) as the manager logs its own:
        a line of the enforcement log and an ``events`` row."""
        with self._lock:
            self._record(
                Action(action, scope, project, agent, tuple(pids), metric, value, limit, message),
                time.time(),
            )

    def _record(self, action: Action, ts: float) -> None:
        entry = action.to_json(ts)
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.log_path, exc)
        logger.info("%s %s", action.action, action.message)
        if self.on_event is not None:
            self.on_event({**entry, "ts": ts})

    def set_queue_source(self, waiting: Callable[[], list[dict[str, Any]]]) -> None:
        """Where the state file reads the overflow queue from (the runner's queue)."""
        self._queue = waiting

    def state(
        self, now: float | None = None, queue: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The live state (the documented shape of ``enforcement-state.json``)."""
        if queue is None:
            queue = self._queue()  # outside our lock, as in check()
        with self._lock:
            now = time.time() if now is None else now
            usage = self._usage or Usage(now, os.cpu_count() or 1, {})
            pool = self.allocation.pool
            cpu, memory = self._totals(usage)
            projects = {}
            for name, share in self.allocation.projects.items():
                p_cpu, p_memory = self._totals(usage, name)
                projects[name] = {
                    "cpu_percent": round(p_cpu, 3), "memory_bytes": p_memory,
                    "cpu_limit": share.cpu, "memory_limit_bytes": share.memory_bytes,
                    "priority": share.priority,
                }  # fmt: skip
            keys: set[AgentKey] = set(usage.agents) | set(self._paused) | set(self._counts)
            for project, agents in self.workspace.agents.items():
                keys.update((project, a.name) for a in agents.enabled_agents)
            queued = {(q["project"], q["agent"]) for q in queue}
            agents_state = {}
            for key in sorted(keys):
                found = usage.agents.get(key)
                own = self._agent_limits(*key)
                counts = self._counts.get(key, [0, 0])
                state = self._state_of(key, found)
                if state == "idle" and key in queued:
                    state = "queued"
                agents_state["/".join(key)] = {
                    "project": key[0], "agent": key[1], "state": state,
                    "pids": [p[0] for p in found.processes] if found else [],
                    "cpu_percent": round(found.cores / usage.cores * 100, 3) if found else 0.0,
                    "memory_bytes": found.memory_bytes if found else 0,
                    "fds": found.fds if found else 0,
                    "threads": found.threads if found else 0,
                    "cpu_limit": own[0] if own else None,
                    "memory_limit_bytes": own[1] if own else None,
                    "pauses": counts[0], "resumes": counts[1],
                }  # fmt: skip
            return {
                "version": STATE_VERSION,
                "ts": now,
                "pid": os.getpid(),
                "interval": self.interval,
                "strategy": self.allocation.strategy,
                "profile": self.allocation.profile,
                "enforcement": self.workspace.config.global_.resource_limits.enforcement_action,
                "workspace": {
                    "cpu_percent": round(cpu, 3),
                    "memory_bytes": memory,
                    "cpu_limit": pool.cpu,
                    "memory_limit_bytes": pool.memory_bytes,
                },  # fmt: skip
                "projects": projects,
                "agents": agents_state,
                "queue": queue,
                "pauses_total": sum(c[0] for c in self._counts.values()),
            }

    def _write_admission(self, now: float) -> None:
        """What :meth:`can_run_agent` says now for every agent (``"project/*"``: an agent not in
        agents.json), so a launcher decides from one small file (:mod:`devloop.core.admit`)."""
        with self._lock:
            usage = self._usage
            if usage is None or not self._fed:
                return  # only a recorder's manager knows the usage without sampling itself
            verdicts = {}
            for project, share in self.allocation.projects.items():
                own = self.workspace.agents.get(project)
                names = [a.name for a in own.enabled_agents] if own is not None else []
                for name in (*names, "*"):
                    verdicts[f"{project}/{name}"] = share.granted and self.can_run_agent(
                        name, project
                    )
            running = sum(1 for a in usage.agents.values() if a.processes)
        try:
            admit.write(self.workspace.dir, now, self.interval, running,
                        self.workspace.config.global_.max_concurrent_agents, verdicts)  # fmt: skip
        except OSError as exc:
            logger.warning("cannot write the admission file in %s: %s", self.workspace.dir, exc)

    def _write_state(self, now: float, queue: list[dict[str, Any]]) -> None:
        """Replace the state file (temp file and rename, no fsync: it is live, not history)."""
        temp = self.state_path.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(self.state(now, queue), separators=(",", ":")) + "\n")
            os.replace(temp, self.state_path)
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.state_path, exc)
