"""Sharing the pool among projects: the five strategies of the guide, as pure functions.

Every function here takes plain values and returns new ones; nothing reads the clock, the
environment or the machine except :func:`select_profile`, whose inputs can all be given.

CPU is percent of the whole machine; memory is bytes. Memory shares are whole bytes split by the
largest-remainder method, so the shares of a pool always add up to the pool exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from typing import Any, NamedTuple

from devloop.config.models import (
    Adaptation,
    Agent,
    Limit,
    Project,
    Workspace,
    WorkspaceConfig,
)
from devloop.errors import UsageError


@dataclass(frozen=True)
class Pool:
    """What the projects share: CPU percent of the machine and memory bytes."""

    cpu: float
    memory_bytes: int


@dataclass(frozen=True)
class Share:
    """One project's effective limits."""

    cpu: float
    memory_bytes: int

    @property
    def granted(self) -> bool:
        """False when the project got nothing of one resource: its agents will queue."""
        return self.cpu > 0 and self.memory_bytes > 0


@dataclass(frozen=True)
class ProjectAllocation:
    """A project's share, its priority and, where something shaped it, why."""

    name: str
    cpu: float
    memory_bytes: int
    priority: int
    note: str | None = None

    @property
    def granted(self) -> bool:
        return self.cpu > 0 and self.memory_bytes > 0


@dataclass(frozen=True)
class AgentAllocation:
    """An agent's effective limits: its own, bounded by its project's (``source`` says which)."""

    project: str
    agent: str
    cpu: float
    memory_bytes: int
    max_file_handles: int | None = None
    max_threads: int | None = None
    source: str = "project"  # "agent" where agents.json set a limit of its own
    #: Where each limit in force comes from: "agent" where the agent's own limit is the one
    #: that binds, "project" where there is none or the project's share is lower.
    cpu_source: str = "project"
    memory_source: str = "project"


@dataclass(frozen=True)
class Allocation:
    """The effective limits of a workspace at one moment."""

    strategy: str
    profile: str | None
    pool: Pool
    projects: dict[str, ProjectAllocation]
    agents: dict[str, AgentAllocation] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``devloop workspace limits --format json``."""
        agents: dict[str, Any] = {}
        for key, agent in self.agents.items():
            entry: dict[str, Any] = {
                "maxCpu": _round(agent.cpu),
                "maxMemory_bytes": agent.memory_bytes,
            }
            if agent.max_file_handles is not None:
                entry["maxFileHandles"] = agent.max_file_handles
            if agent.max_threads is not None:
                entry["maxThreads"] = agent.max_threads
            entry["source"] = agent.source
            agents[key] = entry
        return {
            "strategy": self.strategy,
            "profile": self.profile,
            "pool": {"maxCpu": _round(self.pool.cpu), "maxMemory_bytes": self.pool.memory_bytes},
            "projects": {
                name: {
                    "maxCpu": _round(p.cpu),
                    "maxMemory_bytes": p.memory_bytes,
                    "priority": p.priority,
                    **({"note": p.note} if p.note else {}),
                }
                for name, p in self.projects.items()
            },
            "agents": agents,
            "notes": list(self.notes),
        }


def _round(value: float) -> float:
    return round(value, 6) + 0.0


# --- splitting helpers ---------------------------------------------------------------------


def split_bytes(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` bytes split in proportion to ``weights``, summing to ``total`` exactly.

    Largest remainder: floor every share, then give the leftover bytes one each to the
    largest fractional parts (earlier entries first on ties).
    """
    weight_sum = math.fsum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0 for _ in weights]
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    leftover = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:leftover]:
        shares[i] += 1
    return shares


def split_cpu(total: float, weights: Sequence[float]) -> list[float]:
    """``total`` percent split in proportion to ``weights``."""
    weight_sum = math.fsum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0.0 for _ in weights]
    return [total * w / weight_sum for w in weights]


# --- strategies ----------------------------------------------------------------------------


def equal(pool: Pool, names: Sequence[str]) -> dict[str, Share]:
    """The pool divided evenly among the projects."""
    return weighted(pool, {name: 1.0 for name in names})


def weighted(pool: Pool, weights: Mapping[str, float]) -> dict[str, Share]:
    """The pool divided in proportion to ``weights`` (project name → weight > 0)."""
    names = list(weights)
    values = [weights[n] for n in names]
    cpus = split_cpu(pool.cpu, values)
    memories = split_bytes(pool.memory_bytes, values)
    return {n: Share(c, m) for n, c, m in zip(names, cpus, memories, strict=True)}


def _grant_tiers(capacity: float, tiers: list[list[tuple[str, float]]]) -> dict[str, float]:
    """One resource handed out tier by tier; see :func:`priority`."""
    granted: dict[str, float] = {}
    left = capacity
    for tier in tiers:
        wanted = math.fsum(r for _, r in tier)
        if wanted <= left:
            for name, request in tier:
                granted[name] = request
            left -= wanted
        else:
            for (name, _), part in zip(tier, split_cpu(max(left, 0.0), [r for _, r in tier]),
                                       strict=True):  # fmt: skip
                granted[name] = part
            left = 0.0
    if left > 1e-12 and tiers:
        lowest = tiers[-1]
        extra = split_cpu(left, [r for _, r in lowest] if any(r for _, r in lowest)
                          else [1.0] * len(lowest))  # fmt: skip
        for (name, _), part in zip(lowest, extra, strict=True):
            granted[name] += part
    return granted


def priority(
    pool: Pool,
    projects: Sequence[tuple[str, int]],
    requests: Mapping[str, Limit] | None = None,
) -> dict[str, Share]:
    """Tiers by ascending priority number (0 = critical) take the pool in turn.

    Each project requests its ``requests`` entry, else an equal share of the pool (per
    resource). A tier gets all it requests while capacity lasts; when capacity runs short the
    rest is split in proportion to the tier's requests and later tiers get nothing. What is left
    after the last tier goes to the lowest tier (in proportion to its requests).
    """
    requests = requests or {}
    count = len(projects)
    if count == 0:
        return {}
    by_tier: dict[int, list[str]] = {}
    for name, prio in projects:
        by_tier.setdefault(prio, []).append(name)
    tier_names = [by_tier[p] for p in sorted(by_tier)]
    equal_cpu = pool.cpu / count
    equal_mem = pool.memory_bytes / count

    def cpu_request(name: str) -> float:
        asked = requests.get(name, Limit()).cpu
        return equal_cpu if asked is None else asked

    def mem_request(name: str) -> float:
        asked = requests.get(name, Limit()).memory_bytes
        return equal_mem if asked is None else float(asked)

    cpus = _grant_tiers(pool.cpu, [[(n, cpu_request(n)) for n in t] for t in tier_names])
    mems = _grant_tiers(
        float(pool.memory_bytes), [[(n, mem_request(n)) for n in t] for t in tier_names]
    )
    # Whole bytes that add up exactly: floor each grant, leftover bytes to largest remainders.
    names = [n for t in tier_names for n in t]
    total_mem = min(pool.memory_bytes, round(math.fsum(mems.values())))
    mem_bytes = split_bytes(total_mem, [mems[n] for n in names])
    return {n: Share(cpus[n], b) for n, b in zip(names, mem_bytes, strict=True)}


def custom(
    pool: Pool, names: Sequence[str], limits: Mapping[str, Limit], *, overcommit_cpu: bool = False
) -> dict[str, Share]:
    """``limits`` as given; projects without an entry (or a dimension) share the rest equally.

    The config loader already refused totals over the base pool; a smaller pool (a profile)
    scales the given limits down in proportion. With ``overcommit_cpu`` the CPU limits may total
    more than the pool: each is only capped at it (the pool is enforced on the projects' sum),
    and projects without a CPU entry share what the given ones leave, if anything.
    """
    shares: dict[str, list[float]] = {n: [0.0, 0.0] for n in names}
    for dim, capacity in ((0, float(pool.cpu)), (1, float(pool.memory_bytes))):
        given = {
            n: (limits[n].cpu if dim == 0 else limits[n].memory_bytes) for n in names if n in limits
        }
        fixed = {n: float(v) for n, v in given.items() if v is not None}
        total = math.fsum(fixed.values())
        if dim == 0 and overcommit_cpu:
            for n, v in fixed.items():
                shares[n][dim] = min(v, capacity)
            remaining = max(capacity - total, 0.0)
        else:
            scale = capacity / total if total > capacity > 0 else (0.0 if capacity <= 0 else 1.0)
            for n, v in fixed.items():
                shares[n][dim] = v * scale
            remaining = max(capacity - total * scale, 0.0)
        rest = [n for n in names if n not in fixed]
        for n, part in zip(rest, split_cpu(remaining, [1.0] * len(rest)), strict=True):
            shares[n][dim] = part
    return {n: Share(cpu, math.floor(mem + 1e-6)) for n, (cpu, mem) in shares.items()}


# --- dynamic -------------------------------------------------------------------------------


class UsagePoint(NamedTuple):
    """A project's usage at one moment (seconds since any fixed origin). A named tuple: the
    ``dynamic`` history takes one per project per check."""

    t: float
    cpu: float
    memory_bytes: int


@dataclass(frozen=True)
class Change:
    """One move made by :func:`rebalance`."""

    project: str
    resource: str  # "cpu" or "memory"
    before: float
    after: float
    reason: str


def rebalance(
    allocations: Mapping[str, ProjectAllocation],
    usage: Mapping[str, Sequence[UsagePoint]],
    adaptation: Adaptation,
    *,
    base: Mapping[str, ProjectAllocation] | None = None,
    pool: Pool | None = None,
) -> tuple[dict[str, ProjectAllocation], list[Change]]:
    """The guide's adaptive rule, applied once.

    A project whose usage stayed above ``usage_threshold`` × its allocation for the last
    ``adjustment_frequency`` seconds (every point of a history at least that long) asks for
    ``reallocation_factor`` × its allocation more. It is served first from capacity the pool
    still has free, then from projects that used under 50 % of their allocation over the same
    window, lowest priority first (highest number), then most idle. A donor never drops below half
    its starting share (``base``), nor below twice its peak use in the window (so it stays under
    50 % and does not flip straight into hunger). Hungry projects are served in priority order.
    Totals never exceed ``pool`` (default: the sum of ``allocations``).
    """
    current = dict(allocations)
    base = base or allocations
    if not adaptation.enabled:
        return current, []
    pool = pool or Pool(
        cpu=math.fsum(a.cpu for a in allocations.values()),
        memory_bytes=sum(a.memory_bytes for a in allocations.values()),
    )
    window = adaptation.adjustment_frequency
    changes: list[Change] = []
    for resource in ("cpu", "memory"):
        recent = {name: _window(usage.get(name, ()), window) for name in current}

        def used(point: UsagePoint, res: str = resource) -> float:
            return point.cpu if res == "cpu" else float(point.memory_bytes)

        def amount(alloc: ProjectAllocation, res: str = resource) -> float:
            return alloc.cpu if res == "cpu" else float(alloc.memory_bytes)

        hungry = [
            name
            for name, points in recent.items()
            if points is not None
            and amount(current[name]) > 0
            and all(used(p) > adaptation.usage_threshold * amount(current[name]) for p in points)
        ]
        hungry.sort(key=lambda n: (current[n].priority, n))
        for name in hungry:
            need = adaptation.reallocation_factor * amount(current[name])
            if resource == "memory":
                need = float(math.floor(need))  # whole bytes move, so the pool stays exact
            total_now = math.fsum(amount(a) for a in current.values())
            capacity = pool.cpu if resource == "cpu" else float(pool.memory_bytes)
            got = min(need, max(capacity - total_now, 0.0))
            if resource == "memory":
                got = float(math.floor(got))
            donors = []
            for other, points in recent.items():
                if other == name or other in hungry or points is None:
                    continue
                peak = max(used(p) for p in points)
                have = amount(current[other])
                if have <= 0 or peak >= 0.5 * have:
                    continue
                floor = max(0.5 * amount(base.get(other, current[other])), 2.0 * peak)
                spare = have - floor if resource == "cpu" else float(math.floor(have - floor))
                if spare > 0:
                    donors.append((other, spare, peak / have))
            donors.sort(key=lambda d: (-current[d[0]].priority, d[2], d[0]))
            for other, spare, _ in donors:
                if got >= need:
                    break
                take = min(spare, need - got)
                before = amount(current[other])
                current[other] = _with(current[other], resource, before - take)
                changes.append(Change(other, resource, before, before - take, f"gave to {name}"))
                got += take
            if got > 0:
                before = amount(current[name])
                current[name] = _with(current[name], resource, before + got)
                changes.append(
                    Change(
                        name,
                        resource,
                        before,
                        before + got,
                        f"above {adaptation.usage_threshold:.0%} for {window:g}s",
                    )
                )
    return current, changes


def _window(points: Sequence[UsagePoint], seconds: float) -> list[UsagePoint] | None:
    """The points of the last ``seconds``, or None when the history is shorter than that."""
    if not points:
        return None
    end = points[-1].t
    if end - points[0].t < seconds:
        return None
    return [p for p in points if p.t >= end - seconds]


def _with(alloc: ProjectAllocation, resource: str, value: float) -> ProjectAllocation:
    if resource == "cpu":
        return replace(alloc, cpu=value)
    return replace(alloc, memory_bytes=math.floor(value + 1e-6))


# --- profiles and the whole workspace ------------------------------------------------------


def select_profile(
    config: WorkspaceConfig,
    *,
    profile: str | None = None,
    at: time | None = None,
) -> tuple[str | None, Pool]:
    """The profile in force and its pool.

    ``profile`` (from ``--profile`` or ``DEVLOOP_RESOURCE_PROFILE``) names an entry of
    ``resource_profiles`` or ``resource_sharing.profiles``; otherwise the first
    ``resource_sharing.profiles`` entry whose ``times`` hold ``at`` (local time, default now);
    otherwise the base pool. A profile's missing values fall back to the base pool's.
    """
    base = config.pool
    assert base.cpu is not None and base.memory_bytes is not None
    chosen = None
    if profile is not None:
        chosen = config.resource_profiles.get(profile) or config.resource_sharing.profiles.get(
            profile
        )
        if chosen is None:
            known = sorted({*config.resource_profiles, *config.resource_sharing.profiles})
            listed = ", ".join(known) if known else "none defined"
            raise UsageError(f"unknown resource profile {profile!r} (known: {listed})")
    else:
        moment = at if at is not None else datetime.now().time()
        for candidate in config.resource_sharing.profiles.values():
            if any(window.contains(moment) for window in candidate.times):
                chosen = candidate
                break
    if chosen is None:
        return None, Pool(base.cpu, base.memory_bytes)
    return chosen.name, Pool(
        chosen.cpu_limit if chosen.cpu_limit is not None else base.cpu,
        chosen.memory_limit_bytes if chosen.memory_limit_bytes is not None else base.memory_bytes,
    )


def allocate(
    workspace: Workspace | WorkspaceConfig,
    *,
    profile: str | None = None,
    at: time | None = None,
) -> Allocation:
    """The effective limits per project and agent, for the profile in force at ``at``."""
    if isinstance(workspace, Workspace):
        config, agents_by_project = workspace.config, workspace.agents
    else:
        config, agents_by_project = workspace, {}
    profile_name, pool = select_profile(config, profile=profile, at=at)
    sharing = config.resource_sharing
    projects = config.enabled_projects
    names = [p.name for p in projects]
    notes: list[str] = []
    strategy = sharing.strategy
    if strategy == "equal":
        shares = equal(pool, names)
    elif strategy in ("weighted", "dynamic"):
        shares = weighted(pool, {p.name: _weight(config, p) for p in projects})
    elif strategy == "priority":
        shares = priority(pool, [(p.name, p.priority) for p in projects],
                          sharing.per_project_limits)  # fmt: skip
    else:
        shares = custom(pool, names, sharing.per_project_limits,
                        overcommit_cpu=sharing.overcommit_cpu)  # fmt: skip
        given_cpu = math.fsum(
            sharing.per_project_limits[n].cpu or 0.0 for n in names
            if n in sharing.per_project_limits
        )  # fmt: skip
        if sharing.overcommit_cpu:
            if given_cpu > pool.cpu + 1e-9:
                notes.append(
                    f"custom CPU limits total {given_cpu:g}%, over the {profile_name or 'base'} "
                    f"pool of {pool.cpu:g}% (overcommitCpu): the pool holds their sum"
                )
        elif given_cpu > pool.cpu + 1e-9:
            notes.append(
                f"custom CPU limits total {given_cpu:g}%, over the {profile_name or 'base'} "
                f"pool of {pool.cpu:g}%: scaled down in proportion"
            )
    result: dict[str, ProjectAllocation] = {}
    for project in projects:
        share = shares[project.name]
        cpu, memory, note = share.cpu, share.memory_bytes, None
        if strategy != "custom" and strategy != "priority":
            cap = sharing.per_project_limits.get(project.name)
            cpu, memory, note = _cap(cpu, memory, cap, "perProjectLimits")
        own = agents_by_project.get(project.name)
        if own is not None:
            cpu, memory, own_note = _cap(cpu, memory, own.resource_limits, "agents.json global")
            note = note or own_note
        if cpu <= 0 or memory <= 0:
            note = "granted nothing: its agents will queue until capacity frees up"
            notes.append(f"{project.name}: {note}")
        result[project.name] = ProjectAllocation(project.name, cpu, memory, project.priority, note)
    agent_limits = {
        f"{name}/{agent.name}": _agent_allocation(result[name], agent)
        for name, agents in agents_by_project.items()
        if name in result
        for agent in agents.enabled_agents
    }
    return Allocation(strategy, profile_name, pool, result, agent_limits, tuple(notes))


def _weight(config: WorkspaceConfig, project: Project) -> float:
    if project.name in config.resource_sharing.weights:
        return config.resource_sharing.weights[project.name]
    return project.weight if project.weight is not None else 1.0


def _cap(cpu: float, memory: int, cap: Limit | None, what: str) -> tuple[float, int, str | None]:
    if cap is None:
        return cpu, memory, None
    note = None
    if cap.cpu is not None and cap.cpu < cpu:
        cpu, note = cap.cpu, f"capped by {what}"
    if cap.memory_bytes is not None and cap.memory_bytes < memory:
        memory, note = cap.memory_bytes, f"capped by {what}"
    return cpu, memory, note


def _agent_allocation(project: ProjectAllocation, agent: Agent) -> AgentAllocation:
    limits = agent.limits
    own = limits.max_cpu is not None or limits.max_memory_bytes is not None
    cpu = project.cpu if limits.max_cpu is None else min(limits.max_cpu, project.cpu)
    memory = (
        project.memory_bytes
        if limits.max_memory_bytes is None
        else min(limits.max_memory_bytes, project.memory_bytes)
    )
    return AgentAllocation(
        project=project.name,
        agent=agent.name,
        cpu=cpu,
        memory_bytes=memory,
        max_file_handles=limits.max_file_handles,
        max_threads=limits.max_threads,
        source="agent" if own else "project",
        cpu_source=(
            "agent" if limits.max_cpu is not None and limits.max_cpu <= project.cpu else "project"
        ),
        memory_source=(
            "agent"
            if limits.max_memory_bytes is not None
            and limits.max_memory_bytes <= project.memory_bytes
            else "project"
        ),
    )
