"""The objective: the slowdown users feel, from the replay of their recorded runs.

A run's slowdown is its replayed duration over its recorded one (:mod:`.replay`). For one
project or agent, :func:`smallest_cpu` finds the smallest CPU limit (on the 0.1 % grid) whose
decayed p95 run slowdown is at most the target, by bisection over the limit: each candidate is a
replay of that entity's runs alone under a configuration where only that limit binds
(:func:`alone`). :func:`slowdowns` summarises replayed runs the way the backtest reports them.

Pure functions of recorded demand and a configuration: no store, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from devloop.tune.params import CPU_BIN

if TYPE_CHECKING:
    from devloop.config.models import Workspace
    from devloop.tune.replay import ReplayedRun, RunDemand

#: Memory no scope reaches: where only the CPU limit should bind.
UNBOUNDED_MEMORY = 1 << 50
#: A slowdown this close above the target meets it: CPU is stored as float32 cores (3.2 reads
#: back as 3.2000000477), and the work arithmetic adds its own float error.
SLOWDOWN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SlowdownStats:
    """Replayed runs summarised: how many, their p50 / p95 / max slowdown (linear between the
    closest ranks; a run that did not finish counts as infinitely slow), runs slowed more than
    twice, runs that failed on memory, runs that never finished (timed out or refused in the
    queue, or still running at the replay's horizon)."""

    runs: int
    p50: float
    p95: float
    max: float
    slowed_2x: int
    failed_memory: int
    not_finished: int = 0

    def to_json(self) -> dict[str, Any]:
        def finite(value: float) -> float | None:
            return None if math.isinf(value) else round(value, 4)

        return {
            "runs": self.runs,
            "p50": finite(self.p50),
            "p95": finite(self.p95),
            "max": finite(self.max),
            "slowed_2x": self.slowed_2x,
            "failed_memory": self.failed_memory,
            "not_finished": self.not_finished,
        }


def slowdowns(runs: Sequence[ReplayedRun]) -> SlowdownStats | None:
    """The summary of ``runs`` (None when there are none)."""
    from devloop.tune.replay import _quantile

    if not runs:
        return None
    ordered = sorted(run.slowdown for run in runs)
    return SlowdownStats(
        len(ordered),
        _quantile(ordered, 0.5),
        _quantile(ordered, 0.95),
        ordered[-1],
        sum(1 for s in ordered if s > 2.0),
        sum(1 for run in runs if run.failed_memory),
        sum(1 for s in ordered if math.isinf(s)),
    )


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The smallest value whose cumulative weight (values sorted) reaches ``q`` of the total."""
    pairs = sorted(zip(values, weights, strict=True))
    total = math.fsum(w for _, w in pairs)
    reached = 0.0
    for value, weight in pairs:
        reached += weight
        if reached >= q * total * (1 - 1e-12):
            return value
    return pairs[-1][0]


def decay_weights(runs: Sequence[RunDemand], reference: float, half_life: float) -> list[float]:
    """Each run's weight ``0.5 ** (age / half_life)``, age from its trigger to ``reference``."""
    return [0.5 ** (max(reference - run.queued_at, 0.0) / half_life) for run in runs]


def alone(
    workspace: Workspace, project: str, agent: str, cpu: float | None, memory: int | None
) -> Workspace:
    """``workspace`` reduced to one project where only one limit binds: ``project``'s own
    (``agent`` "") or the agent's, ``cpu`` percent of the machine (None: 100) and ``memory``
    bytes (None: unbounded). The pool is the whole machine; the enforcement (action,
    ``resumeThreshold``, check interval) is the workspace's; no queue bound, no profiles."""
    from devloop.config.models import (
        Agent,
        AgentLimits,
        AgentsConfig,
        Limit,
        ResourceSharing,
    )
    from devloop.config.models import Workspace as WorkspaceModel

    config = workspace.config
    limits = replace(
        config.global_.resource_limits, max_cpu=100.0, max_memory_bytes=UNBOUNDED_MEMORY
    )
    own = Limit(
        100.0 if agent or cpu is None else cpu,
        UNBOUNDED_MEMORY if agent or memory is None else memory,
    )
    reduced = replace(
        config,
        projects=tuple(p for p in config.projects if p.name == project),
        global_=replace(config.global_, max_concurrent_agents=None, resource_limits=limits),
        resource_sharing=ResourceSharing(strategy="custom", per_project_limits={project: own}),
        resource_profiles={},
    )
    base = workspace.agents.get(project) or AgentsConfig(file=None)
    agents: dict[str, Agent] = {}
    if agent:
        agents[agent] = Agent(agent, limits=AgentLimits(max_cpu=cpu, max_memory_bytes=memory))
    mine = replace(base, agents=agents, resource_limits=Limit(), max_concurrent_agents=None)
    return WorkspaceModel(dir=workspace.dir, config=reduced, agents={project: mine})


def peak_demand(runs: Sequence[RunDemand], interval: float) -> tuple[float, int]:
    """The most cores and memory ``runs`` wanted at one tick, at their recorded times.

    Runs whose ticks overlap no other's are taken on their own (their peaks), the others per
    overlapping set, summed tick by tick in the order of ``runs`` (the same float sums as over
    all of them at once)."""
    if len(runs) == 1:
        return _own_peaks(runs[0])
    spans = sorted((math.floor(run.queued_at / interval), i) for i, run in enumerate(runs))
    sets: list[list[int]] = []
    end = -1
    for first, i in spans:
        if not sets or first >= end:
            sets.append([])
        sets[-1].append(i)
        end = max(end, first + len(runs[i].cores))
    top_cores, top_memory = 0.0, 0
    for members in sets:
        if len(members) == 1:
            cores, memory = _own_peaks(runs[members[0]])
        else:
            cores, memory = _summed_peaks([runs[j] for j in sorted(members)], interval)
        top_cores, top_memory = max(top_cores, cores), max(top_memory, memory)
    return top_cores, top_memory


def _own_peaks(run: RunDemand) -> tuple[float, int]:
    """One run's most cores and memory at one tick."""
    return (
        max((0.0 + float(c) for c in run.cores), default=0.0),
        max((0 + int(m) for m in run.rss_bytes), default=0),
    )


def _summed_peaks(runs: Sequence[RunDemand], interval: float) -> tuple[float, int]:
    """The most cores and memory ``runs`` wanted together at one tick."""
    cores: dict[int, float] = {}
    memory: dict[int, int] = {}
    for run in runs:
        first = math.floor(run.queued_at / interval)
        for i, (c, m) in enumerate(zip(run.cores, run.rss_bytes, strict=True)):
            cores[first + i] = cores.get(first + i, 0.0) + float(c)
            memory[first + i] = memory.get(first + i, 0) + int(m)
    return max(cores.values(), default=0.0), max(memory.values(), default=0)


@dataclass(frozen=True)
class Search:
    """What :func:`smallest_cpu` found: the limit (percent of the machine), the decayed p95
    slowdown there, and how many replays it took."""

    cpu: float
    p95: float
    replays: int


def smallest_cpu(
    runs: Sequence[RunDemand],
    workspace: Workspace,
    project: str,
    agent: str,
    *,
    cores: int,
    interval: float,
    max_slowdown: float,
    weights: Sequence[float],
    floor: float = 0.0,
    cache: dict[Any, tuple[float, ...]] | None = None,
    host_cores: Mapping[str, int] | None = None,
) -> Search:
    """The smallest CPU limit, a multiple of 0.1 % from ``floor`` up, under which the
    ``weights``-weighted p95 of the runs' replayed slowdowns is at most ``max_slowdown`` for
    every agent: the p95 is taken over each agent's runs apart, and the worst agent's decides.
    A project's limit serves all its agents: pooled, 95 light lint runs would let the 5 test
    runs that need the limit be slowed at will.

    Bisection over the limit, assuming a higher limit never slows a run more. Runs are taken
    in groups that overlapped in the recording; a group that wanted at most the candidate at
    every tick runs free (slowdown 1), so the top of the search is the weighted p95 of the
    groups' peaks and a candidate replays only the groups above it, each on its own (a group
    slowed into the next one is not seen together with it), the highest first, stopping as soon
    as more than 5 % of one agent's weight is too slow. Lower candidates bind more and cost more
    to replay, so the search gallops down from the top before it bisects.

    ``cache``: the slowdowns of group replays already done, shared by searches over the same
    workspace, cores and interval (the walk-forward's folds replay most of the same groups at
    the same candidates). A replay depends only on its runs, in order, and its configuration,
    so a group is keyed on its runs' ids, the entity, the candidate and the target; a hit is
    still counted in :attr:`Search.replays`.
    """
    from devloop.tune.replay import replay

    machines = host_cores or {}

    def scale_of(members: list[RunDemand]) -> float:
        """Percent of its host's machine per core (a group is on one host)."""
        return 100.0 / machines.get(members[0].host, cores)

    groups = _groups(runs, interval)
    top_units = max(
        (math.ceil(min(100.0, peak * scale_of(m)) / CPU_BIN - 1e-9) for peak, m in groups),
        default=0,
    )
    low_units = max(math.ceil(floor / CPU_BIN - 1e-9), 0)
    index = {id(run): i for i, run in enumerate(runs)}
    count = 0

    weight_of = {id(run): w for run, w in zip(runs, weights, strict=True)}
    # the agents' runs apart: positions in ``runs`` and each agent's total weight
    agents: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        agents.setdefault(run.agent, []).append(i)
    total_of = {name: math.fsum(weights[i] for i in found) for name, found in agents.items()}
    by_peak = sorted(groups, key=lambda g: -g[0] * scale_of(g[1]))

    bound = max_slowdown + SLOWDOWN_TOLERANCE

    def worst_p95(found: Sequence[float]) -> float:
        """The largest of the agents' weighted p95 slowdowns."""
        return max(
            weighted_quantile([found[i] for i in mine], [weights[i] for i in mine], 0.95)
            for mine in agents.values()
        )

    def p95_at(units: int, *, exact: bool = False) -> float:
        """The worst agent's weighted p95 slowdown at ``units``, or infinity as soon as more
        than 5 % of one agent's weight is known to be slower than the target (its p95 cannot
        meet it then).

        A group's replay stops once every run left in it is known to miss the target: how much
        slower it would be does not matter, unless the p95 is one of them (``exact``: replayed
        to the end, not counted again)."""
        nonlocal count
        limit = units * CPU_BIN
        config = None
        found = [1.0] * len(runs)
        slow = dict.fromkeys(agents, 0.0)
        cut = False
        for peak, members in by_peak:
            if peak * scale_of(members) <= limit * (1 + 1e-12):
                break
            if not exact:
                count += 1
            key = (project, agent, units, exact, bound, tuple(run.run_id for run in members))
            replayed = None if cache is None else cache.get(key)
            if replayed is None:
                if config is None:
                    config = alone(workspace, project, agent, limit, None)
                result = replay(
                    members, config, cores=cores, interval=interval,
                    slower_than=None if exact else bound, host_cores=host_cores,
                )  # fmt: skip
                # a slowdown, then whether the run was cut short (unfinished), per member
                replayed = tuple(
                    value
                    for run in result.runs
                    for value in (run.slowdown, float(run.outcome == "unfinished"))
                )
                if cache is not None:
                    cache[key] = replayed
            for j, run in enumerate(members):
                slowdown = replayed[2 * j]
                found[index[id(run)]] = slowdown
                if slowdown > bound:
                    slow[run.agent] += weight_of[id(run)]
                    cut |= replayed[2 * j + 1] == 1.0
                    if slow[run.agent] > 0.05 * total_of[run.agent] * (1 + 1e-12):
                        return math.inf
        p95 = worst_p95(found)
        if p95 > bound and cut:
            return p95_at(units, exact=True)
        return p95

    # Every run of a group that wanted at most the limit runs free: per agent, the weighted
    # p95 of its groups' peaks (per run) meets any target >= 1 without a replay.
    ordered = _per_run(groups, runs, scale_of)
    high = max(low_units, min(top_units, int(worst_p95(ordered))))
    if high <= low_units:
        return Search(round(low_units * CPU_BIN, 1), p95_at(low_units), count)
    best_p95 = p95_at(high) if high < top_units else 1.0
    low = low_units - 1  # not known to fail: checked when the bisection gets there
    # Lower candidates bind more often and cost more to replay: gallop down from the top first.
    for share in (0.9, 0.7, 0.4):
        units = math.floor(high * share)
        if units <= low:
            break
        found = p95_at(units)
        if found <= max_slowdown + SLOWDOWN_TOLERANCE:
            high, best_p95 = units, found
        else:
            low = units
            break
    while high - low > 1:
        middle = (low + high) // 2
        found = p95_at(middle)
        if found <= max_slowdown + SLOWDOWN_TOLERANCE:
            high, best_p95 = middle, found
        else:
            low = middle
    return Search(round(high * CPU_BIN, 1), best_p95, count)


def _per_run(
    groups: list[tuple[float, list[RunDemand]]],
    runs: Sequence[RunDemand],
    scale_of: Callable[[list[RunDemand]], float],
) -> list[float]:
    """Per run (in the order of ``runs``), the peak of its group in 0.1 % units of its
    host's machine."""
    found: dict[int, float] = {}
    for peak, members in groups:
        units = math.ceil(min(100.0, peak * scale_of(members)) / CPU_BIN - 1e-9)
        for run in members:
            found[id(run)] = units
    return [found[id(run)] for run in runs]


def _groups(runs: Sequence[RunDemand], interval: float) -> list[tuple[float, list[RunDemand]]]:
    """Runs that overlapped in the recording (by tick) on one host, grouped, with the most
    cores they wanted at one tick (runs of different hosts never share a machine)."""
    spans = sorted((r.host, math.floor(r.queued_at / interval), i) for i, r in enumerate(runs))
    groups: list[tuple[float, list[RunDemand]]] = []
    members: list[RunDemand] = []
    end = -1
    for host, first, i in spans:
        run = runs[i]
        if members and (first >= end or host != members[0].host):
            groups.append((peak_demand(members, interval)[0], members))
            members = []
        if not members:
            end = -1
        members.append(run)
        end = max(end, first + len(run.cores))
    if members:
        groups.append((peak_demand(members, interval)[0], members))
    return groups


__all__ = [
    "Search",
    "SlowdownStats",
    "alone",
    "decay_weights",
    "peak_demand",
    "slowdowns",
    "smallest_cpu",
    "weighted_quantile",
]
