"""The enforcement policy: usage and limits in, actions out.

:class:`Policy` decides; it never signals, sleeps, reads a clock or a file. Given the usage of
one check (:class:`Usage`: per agent its cores, memory and processes) and the limits in force
(an :class:`~devloop.config.allocation.Allocation` and the :class:`Rules`: enforcement action
and ``resumeThreshold`` per project, the minimum pause), :meth:`Policy.check` returns what to do
at ``now``: :class:`Action` rows (``pause``, ``resume``, ``warn``; each also a log line and an
``events`` row), :class:`Hold` (throttle an agent at so many cores) and :class:`Release` (stop
throttling it). It keeps its own state between checks: who is paused since when and why, who is
throttled, which scopes were warned about, how often each agent was paused and resumed.

The :class:`~devloop.core.resource_manager.ResourceManager` is the shell that carries the
decisions out on real processes; a replay drives the same object on recorded usage. The rules,
in the order of a check, are those of ``docs/enforcement.md``:

1. Forget the gone: a paused agent whose processes all exited is dropped (a ``resume``); a
   throttled agent with no processes left is released.
2. Resume a paused agent when it has been paused ``min_pause`` seconds and every scope it belongs
   to is under ``resumeThreshold`` x the limit for the metric it was paused for (under the limit
   for the other); one agent per project per check, highest priority first, longest paused next.
3. Overshoots, narrowest scope first (agents with limits of their own, projects, the workspace),
   CPU then memory, counting running agents only. ``pause``: lowest-priority project first, then
   the largest consumer, only as many as needed. ``warn``: once, re-armed when the scope's usage
   drops under ``resumeThreshold`` x the limit (also when the agent has no processes left).
   ``throttle``: an agent over a CPU limit is held at it (a project's limit is shared evenly
   among its running agents); memory and the workspace scope are paused.
4. File handles and threads over an agent's caps are warned about, once until they fall back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devloop.config.allocation import Allocation

if TYPE_CHECKING:
    from devloop.collector.model import Tick
    from devloop.config.models import Workspace

MB = 1 << 20
#: In admission, a throttled agent counts this much under what it uses: a scope at its CPU
#: limit only because the throttle holds it there admits a run (see :meth:`Policy.can_run`).
HELD_AT_CAP = 1e-6
#: A pause this much (seconds) short of the minimum counts as over: the checks' times are the
#: ticks' stamps, and one stamped a fraction of a millisecond early (or float noise in the
#: difference) must not keep a pause a whole tick longer.
PAUSE_SLACK = 1e-3

AgentKey = tuple[str, str]
Scope = tuple[str, str | None, float, int]  # scope, name, cpu limit, memory limit
Pausable = Callable[["AgentUsage"], bool]


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


@dataclass(frozen=True)
class Action:
    """One thing a check decided (also an event row and a log line)."""

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


@dataclass(frozen=True)
class Hold:
    """Throttle mode: hold the agent's processes at ``cores`` (duty-cycling them)."""

    project: str
    agent: str
    cores: float


@dataclass(frozen=True)
class Release:
    """Stop throttling the agent (continue its processes)."""

    project: str
    agent: str


Decision = Action | Hold | Release


@dataclass
class Paused:
    """An agent the policy holds paused: for which limit, since when (the check's clock)."""

    project: str
    agent: str
    scope: str
    metric: str
    since: float


@dataclass(frozen=True)
class Rules:
    """What the policy enforces besides the allocation.

    ``action`` and ``resume_threshold`` are the workspace's; ``actions`` and ``thresholds``
    override them per project (a project's agents.json). ``min_pause`` is the shortest pause, in
    seconds of the clock ``now`` is given in."""

    action: str = "pause"
    resume_threshold: float = 0.8
    min_pause: float = 5.0
    actions: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, workspace: Workspace, *, min_pause: float) -> Rules:
        """The rules of a loaded workspace (its agents.json files included)."""
        limits = workspace.config.global_.resource_limits
        actions, thresholds = {}, {}
        for project, own in workspace.agents.items():
            if own.enforcement_action is not None:
                actions[project] = own.enforcement_action
            if own.resume_threshold is not None:
                thresholds[project] = own.resume_threshold
        return cls(limits.enforcement_action, limits.resume_threshold, min_pause,
                   actions, thresholds)  # fmt: skip

    def action_for(self, project: str | None) -> str:
        """The enforcement action in force for a project."""
        return self.actions.get(project, self.action) if project else self.action

    def threshold_for(self, project: str | None) -> float:
        """The resume threshold in force for a project (a fraction of the limit)."""
        return (
            self.thresholds.get(project, self.resume_threshold)
            if project
            else (self.resume_threshold)
        )


def over_message(scope: str, name: str | None, metric: str, value: float, limit: float) -> str:
    """The message of a scope over a limit (CPU in %, memory in bytes)."""
    what = name or "workspace"
    if metric == "cpu":
        return f"{scope} {what} CPU {value:.1f}% over its {limit:g}% limit"
    return f"{scope} {what} memory {value / MB:.1f}MB over its {limit / MB:.1f}MB limit"


def _always(agent: AgentUsage) -> bool:
    return True


def _warned_about(warned: set[tuple[str, str, str]], scope: str, name: str) -> bool:
    """Whether a warning about the scope's CPU or memory is out (to re-arm)."""
    return (scope, name, "cpu") in warned or (scope, name, "memory") in warned


class Policy:
    """The enforcement's decisions and the state they need, as plain data."""

    def __init__(self, allocation: Allocation, rules: Rules) -> None:
        self.allocation = allocation
        self.rules = rules
        self.paused: dict[AgentKey, Paused] = {}
        self.throttled: set[AgentKey] = set()
        #: Per throttled agent, the cap (CPU % of the machine) each scope that holds it gave;
        #: the agent is held at the smallest.
        self.hold_targets: dict[AgentKey, dict[tuple[str, str | None], float]] = {}
        #: Agents resumed because their own memory alone is over a limit (pausing cannot bring
        #: them under): not paused for memory again until their processes are gone.
        self.memory_exempt: set[AgentKey] = set()
        self.warned: set[tuple[str, str, str]] = set()  # (scope, name, metric)
        self.counts: dict[AgentKey, list[int]] = {}  # pauses, resumes
        # the agents' own limits under one allocation (it is replaced, never changed in place)
        self._own: tuple[Allocation | None, dict[AgentKey, tuple[float, int] | None]] = (None, {})
        # per allocation: its agents with limits of their own (key, the agent's key, limits,
        # whether the key names the agent plainly as project/agent)
        self._agent_scopes: tuple[
            Allocation | None, list[tuple[str, AgentKey, tuple[float, int], bool]], bool
        ] = (None, [], True)
        # per allocation: the scopes each agent is under (scopes_of)
        self._scopes: tuple[Allocation | None, dict[AgentKey, list[Scope]]] = (None, {})
        # per allocation: each agent's name and caps on file handles and threads (None: none)
        self._caps: tuple[
            Allocation | None, dict[AgentKey, tuple[str, int | None, int | None] | None]
        ] = (None, {})
        # ``project/agent`` scope names split, as _enforce_scope splits them
        self._names: dict[str, list[str]] = {}
        # during a check: the sums per project (and None: the workspace) of its usage, as
        # totals() gives them, running only and capped, or all; forgotten when a decision
        # changes who is paused or held
        self._checking = False
        self._sums: dict[bool, dict[str | None, tuple[float, int]]] = {}

    # --- questions -------------------------------------------------------------------------

    def priority(self, project: str) -> int:
        alloc = self.allocation.projects.get(project)
        return alloc.priority if alloc is not None else 1 << 30

    def agent_limits(self, project: str, agent: str) -> tuple[float, int] | None:
        """An agent's own limits (bounded by its project's), None when it has none."""
        allocation = self.allocation
        cache = self._own
        if cache[0] is not allocation:
            cache = self._own = (allocation, {})
        key = (project, agent)
        if key not in cache[1]:
            cache[1][key] = self._agent_limits(project, agent)
        return cache[1][key]

    def _agent_limits(self, project: str, agent: str) -> tuple[float, int] | None:
        own = self.allocation.agents.get(f"{project}/{agent}")
        if own is None or own.source != "agent":
            return None
        share = self.allocation.projects.get(project)
        if share is None:
            return own.cpu, own.memory_bytes
        return min(own.cpu, share.cpu), min(own.memory_bytes, share.memory_bytes)

    def totals(
        self,
        usage: Usage,
        project: str | None = None,
        *,
        running_only: bool = False,
        capped: bool = False,
    ) -> tuple[float, int]:
        """CPU (% of the machine) and memory of the workspace, or of one project.
        ``running_only``: paused agents left out; ``capped``: held agents counted at most at
        their cap."""
        cores, memory = 0.0, 0
        for key, agent in usage.agents.items():
            if project is not None and agent.project != project:
                continue
            if running_only and key in self.paused:
                continue
            cores += self._held(agent, usage) if capped else agent.cores
            memory += agent.memory_bytes
        return cores / usage.cores * 100, memory

    def state_of(self, key: AgentKey, usage: AgentUsage | None) -> str:
        """``paused``, ``throttled``, ``running`` (it has processes) or ``idle``."""
        if key in self.paused:
            return "paused"
        if key in self.throttled:
            return "throttled"
        return "running" if usage is not None and usage.processes else "idle"

    def can_run(self, usage: Usage, agent: str, projects: Collection[str]) -> bool:
        """May ``agent`` start now in each of ``projects`` (known project names)?

        Yes when the workspace and each project are under their CPU and memory limits, the
        project was granted something, and the agent is neither paused nor over limits of its
        own. A scope held at its CPU limit by the throttle admits a run (the throttle is
        work-conserving: the newcomer is held with the others): throttled agents count a hair
        under their cap, or what they use when that is less, so a scope *at* its limit through
        holds alone is under it, whatever the duty cycle's jitter (a held burner measures 0.29
        to 0.38 cores a tick under a 0.35-core cap). Counted as measured, a held project refused
        a later run at every tick its holds measured over the limit: live, runs waited 1-2 s
        where the replay admitted them at once, and ran in another company (docs/replay.md)."""
        if self.throttled:
            usage = Usage(
                usage.ts,
                usage.cores,
                {
                    key: replace(found, cores=self._held(found, usage) * (1 - HELD_AT_CAP))
                    if key in self.throttled
                    else found
                    for key, found in usage.agents.items()
                },
            )
        cpu, memory = self.totals(usage)
        pool = self.allocation.pool
        if cpu >= pool.cpu or memory >= pool.memory_bytes:
            return False
        for project in projects:
            share = self.allocation.projects[project]
            if not share.granted or (project, agent) in self.paused:
                return False
            p_cpu, p_memory = self.totals(usage, project)
            if p_cpu >= share.cpu or p_memory >= share.memory_bytes:
                return False
            own = self.agent_limits(project, agent)
            found = usage.agents.get((project, agent))
            if own is not None and found is not None:
                if found.cores / usage.cores * 100 >= own[0] or found.memory_bytes >= own[1]:
                    return False
        return True

    # --- the check ---------------------------------------------------------------------------

    def check(
        self,
        usage: Usage,
        now: float,
        *,
        gone: Collection[AgentKey] | None = None,
        pausable: Pausable = _always,
    ) -> list[Decision]:
        """What to do about ``usage`` at ``now`` (seconds; any clock, the same every check).

        ``gone``: the paused agents whose processes all exited (default: those with no
        processes in ``usage``). ``pausable(agent)``: may any of the agent's processes be
        stopped (default: all may); an agent that may not is passed over for the next one.
        """
        if gone is None:
            gone = [key for key in self.paused if key not in usage.agents]
        decisions: list[Decision] = []
        self._checking = True
        self._sums.clear()
        try:
            decisions += self._forget_gone(usage, gone)
            decisions += self._resume(usage, now)
            decisions += self._enforce(usage, now, pausable)
            decisions += self._warn_handles(usage)
        finally:
            self._checking = False
            self._sums.clear()
        return decisions

    def resume_now(
        self, usage: Usage | None, now: float, why: str, *, force: bool = False
    ) -> list[Action]:
        """Resume the paused agents that fit now (every one with ``force``), the minimum pause
        not waited for."""
        actions = []
        for paused in list(self.paused.values()):
            if not force and (usage is None or not self._fits(paused, usage)):
                continue
            actions.append(self._continue(paused, now, why))
        return actions

    def release_all(self) -> list[Release]:
        """Stop throttling everyone."""
        released = [Release(*key) for key in sorted(self.throttled)]
        self.throttled.clear()
        self.hold_targets.clear()
        return released

    def cancel_pause(self, key: AgentKey) -> None:
        """A pause decided could not be carried out (its processes went meanwhile)."""
        if self.paused.pop(key, None) is not None:
            self.counts[key][0] -= 1

    def _forget_gone(self, usage: Usage, gone: Collection[AgentKey]) -> list[Decision]:
        decisions: list[Decision] = []
        self._changed()
        for key, paused in list(self.paused.items()):
            if key in gone:
                del self.paused[key]
                decisions.append(Action("resume", paused.scope, key[0], key[1],
                                        message="its processes exited while paused"))  # fmt: skip
        for key in sorted(self.throttled):
            if key not in usage.agents:
                self.throttled.discard(key)
                self.hold_targets.pop(key, None)
                decisions.append(Release(*key))
        self.memory_exempt &= set(usage.agents)
        return decisions

    def scopes_of(self, project: str, agent: str) -> list[Scope]:
        """Every limit an agent is under (the same list while the allocation stays: not to be
        changed)."""
        cache = self._scopes
        if cache[0] is not self.allocation:
            cache = self._scopes = (self.allocation, {})
        found = cache[1].get((project, agent))
        if found is None:
            found = cache[1][(project, agent)] = self._scopes_of(project, agent)
        return found

    def _scopes_of(self, project: str, agent: str) -> list[Scope]:
        scopes: list[Scope] = []
        own = self.agent_limits(project, agent)
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
        """The scope's CPU (% of the machine) and memory. ``running_only``: as enforcement
        sees it, paused agents left out and held ones counted at most at their cap (a hold
        given this check by a narrower scope already brings them there: a broader scope must
        not pause them for what the hold removes)."""
        if scope == "agent":
            assert name is not None
            project, agent = self._split(name)
            if running_only and (project, agent) in self.paused:
                return 0.0, 0
            found = usage.agents.get((project, agent))
            if found is None:
                return 0.0, 0
            cores = self._held(found, usage) if running_only else found.cores
            return cores / usage.cores * 100, found.memory_bytes
        if self._checking:
            sums = self._sums.get(running_only)
            if sums is None:
                sums = self._sums[running_only] = self._all_totals(usage, running_only)
            return sums.get(name if scope == "project" else None, (0.0, 0))
        return self.totals(
            usage,
            name if scope == "project" else None,
            running_only=running_only,
            capped=running_only,
        )

    def _all_totals(self, usage: Usage, running_only: bool) -> dict[str | None, tuple[float, int]]:
        """What :meth:`totals` gives for each project with agents in ``usage`` and (None) the
        workspace, in one pass (the same sums, added in the same order)."""
        sums: dict[str, list[Any]] = {}
        cores, memory = 0.0, 0
        for key, agent in usage.agents.items():
            if running_only and key in self.paused:
                continue
            used = self._held(agent, usage) if running_only else agent.cores
            found = sums.get(agent.project)
            if found is None:
                found = sums[agent.project] = [0.0, 0]
            found[0] += used
            found[1] += agent.memory_bytes
            cores += used
            memory += agent.memory_bytes
        result: dict[str | None, tuple[float, int]] = {
            project: (found[0] / usage.cores * 100, found[1]) for project, found in sums.items()
        }
        result[None] = (cores / usage.cores * 100, memory)
        return result

    def _split(self, name: str) -> list[str]:
        """``name.split("/", 1)``, remembered (scope names recur every check)."""
        found = self._names.get(name)
        if found is None:
            found = self._names[name] = name.split("/", 1)
        return found

    def _changed(self) -> None:
        """Who is paused or held changed: the running sums are to be taken again."""
        self._sums.pop(True, None)

    def _held(self, agent: AgentUsage, usage: Usage) -> float:
        """The agent's cores, at most the cap it is held at."""
        targets = self.hold_targets.get(agent.key)
        if not targets:
            return agent.cores
        return min(agent.cores, min(targets.values()) / 100 * usage.cores)

    def _resume(self, usage: Usage, now: float) -> list[Action]:
        actions: list[Action] = []
        min_pause = self.rules.min_pause - PAUSE_SLACK
        if all(now - p.since < min_pause for p in self.paused.values()):
            return actions  # nobody's minimum pause is over
        resumed_projects: set[str] = set()
        order = sorted(self.paused.values(), key=lambda p: (self.priority(p.project), p.since))
        for paused in order:
            if now - paused.since < min_pause or paused.project in resumed_projects:
                continue
            hopeless = self._own_memory_over(paused, usage)
            if hopeless is not None:
                # stopped, it keeps its memory: no pause can bring it under, only a hang
                self.memory_exempt.add((paused.project, paused.agent))
                actions.append(self._continue(paused, now, hopeless))
                resumed_projects.add(paused.project)
                continue
            if not self._fits(paused, usage):
                continue
            actions.append(self._continue(paused, now, "usage fell under the resume threshold"))
            resumed_projects.add(paused.project)
        return actions

    def _own_memory_over(self, paused: Paused, usage: Usage) -> str | None:
        """Why a memory pause cannot end, when the paused agent's own memory alone is at or
        over ``resumeThreshold`` x a limit it is under (it would never resume); else None."""
        if paused.metric != "memory":
            return None
        found = usage.agents.get((paused.project, paused.agent))
        if found is None:
            return None
        threshold = self.rules.threshold_for(paused.project)
        for scope, name, _, memory_limit in self.scopes_of(paused.project, paused.agent):
            if found.memory_bytes >= memory_limit * threshold:
                where = "the workspace" if scope == "workspace" else f"{scope} {name}"
                return (
                    f"its own memory ({found.memory_bytes / 2**20:.0f}MB) is over "
                    f"{threshold:g} x the memory limit of {where}: a pause cannot bring it "
                    "under, so it runs on, not paused for memory again this run"
                )
        return None

    def _fits(self, paused: Paused, usage: Usage) -> bool:
        """May a paused agent come back? Every scope it belongs to must be under
        ``resumeThreshold`` x its limit for the metric it was paused for, and under the limit
        itself for the other metric (a project holding 90 % of its memory, which is allowed,
        must not keep a CPU pause going for ever)."""
        threshold = self.rules.threshold_for(paused.project)
        for scope, name, cpu_limit, memory_limit in self.scopes_of(paused.project, paused.agent):
            cpu, memory = self._scope_usage(usage, scope, name, running_only=False)
            if scope == "agent":  # a stopped agent's own CPU is zero: judge its memory only
                cpu = 0.0
            cpu_bar = cpu_limit * (threshold if paused.metric == "cpu" else 1.0)
            memory_bar = memory_limit * (threshold if paused.metric == "memory" else 1.0)
            if cpu >= cpu_bar or memory >= memory_bar:
                return False
        return True

    def _continue(self, paused: Paused, now: float, why: str) -> Action:
        key = (paused.project, paused.agent)
        self.paused.pop(key, None)
        self._changed()
        self.counts.setdefault(key, [0, 0])[1] += 1
        return Action(
            "resume", paused.scope, paused.project, paused.agent, (), paused.metric,
            message=f"{why}; paused {now - paused.since:.1f}s",
        )  # fmt: skip

    def _enforce(self, usage: Usage, now: float, pausable: Pausable) -> list[Decision]:
        decisions: list[Decision] = []
        warned, rules = self.warned, self.rules
        throttles = rules.action == "throttle" or "throttle" in rules.actions.values()
        # narrowest scope first: agents with limits of their own, projects, the workspace. A
        # scope under both its limits with no warning to re-arm and no hold to raise is passed
        # over here: _enforce_scope would decide nothing for it (its first test, inlined)
        for (project, agent), found in usage.agents.items():
            own = self.agent_limits(project, agent)
            if own is None:
                continue
            if "/" not in project and (not throttles or rules.action_for(project) != "throttle"):
                if (project, agent) in self.paused:
                    cpu, memory = 0.0, 0
                else:
                    cpu, memory = self._held(found, usage) / usage.cores * 100, found.memory_bytes
                if (
                    cpu <= own[0]
                    and float(memory) <= float(own[1])
                    and (not warned or not _warned_about(warned, "agent", f"{project}/{agent}"))
                ):
                    continue
            name = f"{project}/{agent}"
            for metric, limit in (("cpu", own[0]), ("memory", float(own[1]))):
                decisions += self._enforce_scope(usage, now, "agent", name, metric, limit, pausable)
        # an agent with no processes now is under its limits: its warning re-arms for a later
        # run (a limit of 0 or more and no warning given: nothing to do for it)
        absent, all_plain = self._absent_scopes()
        for key, found_key, own, plain in absent if warned or not all_plain else ():
            if found_key in usage.agents:
                continue
            for metric, limit in (("cpu", own[0]), ("memory", float(own[1]))):
                if plain and limit >= 0 and ("agent", key, metric) not in warned:
                    continue
                decisions += self._enforce_scope(usage, now, "agent", key, metric, limit, pausable)
        for project_name, share in self.allocation.projects.items():
            cpu, memory = self._running_sums(usage).get(project_name, (0.0, 0))
            if (
                cpu <= share.cpu
                and float(memory) <= float(share.memory_bytes)
                and (not throttles or rules.action_for(project_name) != "throttle")
                and (not warned or not _warned_about(warned, "project", project_name))
            ):
                continue
            for metric, limit in (("cpu", share.cpu), ("memory", float(share.memory_bytes))):
                decisions += self._enforce_scope(
                    usage, now, "project", project_name, metric, limit, pausable
                )
        pool = self.allocation.pool
        cpu, memory = self._running_sums(usage)[None]
        if (
            cpu <= pool.cpu
            and float(memory) <= float(pool.memory_bytes)
            and (not warned or not _warned_about(warned, "workspace", ""))
        ):
            return decisions
        for metric, limit in (("cpu", pool.cpu), ("memory", float(pool.memory_bytes))):
            decisions += self._enforce_scope(usage, now, "workspace", None, metric, limit, pausable)
        return decisions

    def _running_sums(self, usage: Usage) -> dict[str | None, tuple[float, int]]:
        """During a check: each project's (and None: the workspace's) running usage, held
        agents at their caps, as ``_scope_usage(..., running_only=True)`` gives it."""
        sums = self._sums.get(True)
        if sums is None:
            sums = self._sums[True] = self._all_totals(usage, True)
        return sums

    def _absent_scopes(self) -> tuple[list[tuple[str, AgentKey, tuple[float, int], bool]], bool]:
        """The allocation's agents with limits of their own, in its order, and whether each
        is named plainly and has limits of 0 or more (with no warning out, then, an absent
        one has nothing to do)."""
        allocation = self.allocation
        if self._agent_scopes[0] is not allocation:
            scopes = []
            for key, alloc in allocation.agents.items():
                own = self.agent_limits(alloc.project, alloc.agent)
                if own is not None:
                    found = (alloc.project, alloc.agent)
                    scopes.append((key, found, own, key.split("/", 1) == list(found)))
            plain = all(p and own[0] >= 0 and own[1] >= 0 for _, _, own, p in scopes)
            self._agent_scopes = (allocation, scopes, plain)
        return self._agent_scopes[1], self._agent_scopes[2]

    def _members(self, usage: Usage, scope: str, name: str | None) -> list[AgentUsage]:
        if scope == "agent":
            assert name is not None
            project, agent = name.split("/", 1)
            found = usage.agents.get((project, agent))
            return [found] if found is not None else []
        return [
            a for a in usage.agents.values()
            if scope == "workspace" or a.project == name
        ]  # fmt: skip

    def _enforce_scope(
        self,
        usage: Usage,
        now: float,
        scope: str,
        name: str | None,
        metric: str,
        limit: float,
        pausable: Pausable,
    ) -> list[Decision]:
        cpu, memory = self._scope_usage(usage, scope, name, running_only=True)
        value = cpu if metric == "cpu" else float(memory)
        warned = (scope, name or "", metric)
        if value <= limit and (not self.warned or warned not in self.warned):
            if metric != "cpu" or scope == "workspace":
                return []  # under it, no warning to re-arm, no hold to raise
        parts = self._split(name) if scope != "workspace" and name else None
        project = parts[0] if parts is not None else None
        agent = parts[1] if parts is not None and scope == "agent" else None
        action = self.rules.action_for(project)
        if value <= limit:
            if warned in self.warned:  # only a warning given re-arms: no sum for the others
                total_cpu, total_memory = self._scope_usage(usage, scope, name, running_only=False)
                total = total_cpu if metric == "cpu" else float(total_memory)
                if total < self.rules.threshold_for(project) * limit:
                    self.warned.discard(warned)
            if action == "throttle" and metric == "cpu" and scope != "workspace":
                return list(self._raise_holds(usage, scope, name, limit))
            return []
        if action == "warn" or (limit <= 0 and scope != "agent"):
            if warned in self.warned:
                return []
            self.warned.add(warned)
            return [Action("warn", scope, project, agent, (), metric, round(value, 3), limit,
                           over_message(scope, name, metric, value, limit))]  # fmt: skip
        if action == "throttle" and metric == "cpu" and scope != "workspace":
            return list(self._throttle(usage, scope, name, limit))
        return self._pause_until_under(usage, now, scope, name, metric, value, limit, pausable)

    def _throttle(self, usage: Usage, scope: str, name: str | None, limit: float) -> list[Hold]:
        self._changed()
        members = self._holdable(usage, scope, name)
        if not members:
            return []
        holds = []
        for member, target in self._hold_targets(members, scope, limit):
            self.throttled.add(member.key)
            self.hold_targets.setdefault(member.key, {})[(scope, name)] = target
            holds.append(Hold(member.project, member.agent, target / 100 * usage.cores))
        return holds

    def _holdable(self, usage: Usage, scope: str, name: str | None) -> list[AgentUsage]:
        """The scope's agents a hold applies to: running, with processes."""
        return [a for a in self._members(usage, scope, name)
                if a.key not in self.paused and a.processes]  # fmt: skip

    def _hold_targets(
        self, members: list[AgentUsage], scope: str, limit: float
    ) -> list[tuple[AgentUsage, float]]:
        """Each member's cap (CPU % of the machine) under ``limit``: a project's agents share
        it evenly, none above its own limit; an agent's own scope is its own limit."""
        share = limit / len(members)
        targets = []
        for member in members:
            target = share
            own = self.agent_limits(member.project, member.agent)
            if own is not None:
                target = min(target, own[0]) if scope == "project" else own[0]
            targets.append((member, target))
        return targets

    def _raise_holds(self, usage: Usage, scope: str, name: str | None, limit: float) -> list[Hold]:
        """Holds this scope gave that its limit now allows higher (the limit rose: a profile,
        the ``dynamic`` strategy; or fewer agents share it): raised, as far as the agents'
        other holds allow. A cap is never lowered here: a scope over its limit does that."""
        self._changed()
        members = self._holdable(usage, scope, name)
        holds = []
        for member, target in self._hold_targets(members, scope, limit) if members else []:
            targets = self.hold_targets.get(member.key)
            if targets is None or (scope, name) not in targets:
                continue
            if target <= targets[(scope, name)]:
                continue
            before = min(targets.values())
            targets[(scope, name)] = target
            after = min(targets.values())
            if after > before:
                holds.append(Hold(member.project, member.agent, after / 100 * usage.cores))
        return holds

    def _pause_until_under(
        self,
        usage: Usage,
        now: float,
        scope: str,
        name: str | None,
        metric: str,
        value: float,
        limit: float,
        pausable: Pausable,
    ) -> list[Decision]:
        def amount(a: AgentUsage) -> float:
            return a.cores / usage.cores * 100 if metric == "cpu" else float(a.memory_bytes)

        self._changed()

        members = self._members(usage, scope, name)
        if metric == "memory":
            exempt = sum(a.memory_bytes for a in members if a.key in self.memory_exempt)
            if exempt >= limit:
                return []  # the exempt agents alone are over: pausing others cannot help
        candidates = [
            a for a in members
            if a.key not in self.paused and a.processes and amount(a) > 0
            and not (metric == "memory" and a.key in self.memory_exempt)
        ]  # fmt: skip
        # lowest priority first (the highest number), then the largest consumer
        candidates.sort(key=lambda a: (-self.priority(a.project), -amount(a)))
        decisions: list[Decision] = []
        projected = value
        for victim in candidates:
            if projected <= limit:
                break
            if not pausable(victim):
                continue  # nothing of it that devloop may signal: try the next one
            if victim.key in self.throttled:
                self.throttled.discard(victim.key)
                self.hold_targets.pop(victim.key, None)
                decisions.append(Release(*victim.key))
            self.paused[victim.key] = Paused(victim.project, victim.agent, scope, metric, now)
            self.counts.setdefault(victim.key, [0, 0])[0] += 1
            projected -= amount(victim)
            decisions.append(
                Action(
                    "pause",
                    scope,
                    victim.project,
                    victim.agent,
                    tuple(p[0] for p in victim.processes),
                    metric,
                    round(value, 3),
                    limit,
                    over_message(scope, name, metric, value, limit),
                )  # fmt: skip
            )
        if projected > limit:
            warned = (scope, name or "", metric)
            if warned not in self.warned:
                self.warned.add(warned)
                project = name.split("/", 1)[0] if scope != "workspace" and name else None
                decisions.append(
                    Action(
                        "warn",
                        scope,
                        project,
                        None,
                        (),
                        metric,
                        round(value, 3),
                        limit,
                        over_message(scope, name, metric, value, limit)
                        + "; nothing left that devloop may pause",
                    )  # fmt: skip
                )
        return decisions

    def _warn_handles(self, usage: Usage) -> list[Action]:
        allocation = self.allocation
        if self._caps[0] is not allocation:
            self._caps = (allocation, {})
        caps = self._caps[1]
        actions = []
        for key, found in usage.agents.items():
            if key not in caps:
                caps[key] = self._caps_of(key)
            entry = caps[key]
            if entry is None:
                continue
            name, max_fds, max_threads = entry
            for metric, have, cap in (("fds", found.fds, max_fds),
                                      ("threads", found.threads, max_threads)):  # fmt: skip
                warned = ("agent", name, metric)
                if cap is None:
                    continue
                if have <= cap:
                    self.warned.discard(warned)
                    continue
                if warned not in self.warned:
                    self.warned.add(warned)
                    actions.append(Action("warn", "agent", key[0], key[1], (), metric, have, cap,
                                          f"{metric} {have} over its limit of {cap}"))  # fmt: skip
        # an agent with no processes holds no handles: its warnings re-arm for a later run
        if any(w[0] == "agent" and w[2] in ("fds", "threads") for w in self.warned):
            self.warned -= {
                w for w in self.warned
                if w[0] == "agent" and w[2] in ("fds", "threads")
                and tuple(w[1].split("/", 1)) not in usage.agents
            }  # fmt: skip
        return actions

    def _caps_of(self, key: AgentKey) -> tuple[str, int | None, int | None] | None:
        """The agent's name and its caps on file handles and threads; None without either."""
        name = "/".join(key)
        limits = self.allocation.agents.get(name)
        if limits is None or (limits.max_file_handles is None and limits.max_threads is None):
            return None
        return name, limits.max_file_handles, limits.max_threads
