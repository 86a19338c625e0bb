"""Replay: recorded runs under a candidate configuration, through the runtime's own policy.

:func:`replay` takes recorded demand (one :class:`RunDemand` per run: when it was triggered and
what it used at each collector tick of its life) and a :class:`~devloop.config.models.Workspace`
(pool, strategy, per-project and per-agent limits, profiles, enforcement action and
``resumeThreshold``, ``maxConcurrentAgents``, the overflow queue, priorities), and returns every
run's replayed start and end (:class:`ReplayedRun`). It decides nothing itself: each tick it
builds a :class:`~devloop.core.policy.Usage`, asks :class:`~devloop.core.limits.LimitsInForce`
for the limits in force (profiles, the ``dynamic`` rebalance) and
:meth:`Policy.check <devloop.core.policy.Policy.check>` what to do, as the
:class:`~devloop.core.resource_manager.ResourceManager` does, and admits runs with
:meth:`Policy.can_run <devloop.core.policy.Policy.can_run>` in the order of the runner's
overflow queue. What the replay predicts is what the runtime would do.

The model, in discrete time (one step = the recorded tick interval = one check):

* A run's demand is its recorded series on its own clock: sample ``i`` is ``cores[i] x
  interval`` CPU-seconds of work done in the ``i``-th interval from its start, the last sample
  in the part ``last`` of an interval where the run ended (:func:`demand_from_rows` lays the
  collector's ticks out so). Unconstrained, a run does one sample per step, so its replayed
  duration equals its recorded one (``(len(cores) - 1 + last) x interval``).
* Held at ``c`` cores (throttle) a sample wanting ``w > c`` cores goes at ``c / w`` of real time:
  work-conserving, the run stretches, its CPU is unchanged. Paused, a run does not progress and
  shows 0 cores and its memory. A sample wanting 0 cores passes in real time.
* The check at a tick sees what the collector would measure there: each run's average cores over
  the step just ended (after throttling or pausing) and its memory at the end of its last sample.
  So a run starting between ticks runs free until the next tick, as it does live.
* A run starts at its trigger when admitted then (with the usage of the last tick), else at the
  tick its queue entry is admitted. Runs of one agent never overlap (``devloop watch`` runs an
  agent once at a time): a run triggered while its agent's previous run still waits or runs
  enters the queue at the first tick after that one ends.
* Memory: a run whose recorded peak RSS alone exceeds the smallest memory limit it is under when
  it starts (its agent's own, its project's, the pool) ``failed_memory``: no pause can make it fit
  (a pause keeps memory). It is replayed until its memory crosses that limit and counted failed
  there, freeing its slot (live, it would stay paused until someone killed it).
* The shortcuts change how often the runtime's code is asked, never what it decides: time with
  nothing in flight is skipped; stretches where every run runs free or stays paused, no scope
  comes near a limit and no paused run can resume (its minimum pause not over, or a scope it
  belongs to at its resume bar) are taken in bulk (lists for the first 40 ticks, numpy past
  them); a check is skipped where nobody is paused or throttled and every scope is under its
  limits; a stall (every run in flight paused, nothing can change until a trigger, a queue
  timeout or a profile switch) is jumped over;
  ``LimitsInForce.update`` is asked only where it can change something, its history given
  every tick all the same. One shortcut stands in for the checks themselves: a run alone in
  flight that is paused for CPU, resumed for one tick and paused again takes those cycles at
  once, its two checks per cycle read from the scopes' limits in the policy's order and their
  decisions set on the policy (``_cycles`` says which cases; the rest go to the checks). The
  tests replay the same demand checking every tick (``check_every_tick``) and require the same
  result, on hand-made and random seeded cases.

docs/replay.md describes the model and its assumptions for users.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.config.models import Workspace
from devloop.core.limits import LimitsInForce
from devloop.core.policy import (
    PAUSE_SLACK,
    AgentUsage,
    Hold,
    Paused,
    Policy,
    Release,
    Rules,
    Usage,
)
from devloop.errors import UsageError

if TYPE_CHECKING:
    from devloop.analytics import Store
    from devloop.config.allocation import Allocation

__all__ = [
    "OUTCOMES",
    "Demand",
    "Replay",
    "ReplayedRun",
    "RunDemand",
    "SlowdownSummary",
    "demand_from_rows",
    "demand_from_store",
    "own_clock",
    "replay",
    "summarize",
]

#: How a replayed run ended: ``done``; ``failed-memory`` (see :attr:`ReplayedRun.failed_memory`);
#: ``refused`` (it could not start and could not queue: overflow off, or the queue full);
#: ``timed-out`` (it waited ``maxWaitTime`` in the queue); ``unfinished`` (still queued, paused
#: or running at the horizon).
OUTCOMES = ("done", "failed-memory", "refused", "timed-out", "unfinished")

_EPS = 1e-12  # of a step: a remainder this small is done
_MARGIN = 1e-9  # relative: a scope this close to its limit is left to the policy to judge
_SHORTEST = 1e-3  # the shortest last sample, as a part of an interval
_MAX_COAST = 1 << 14  # ticks taken in bulk at once (the arrays of one coast)
_FIRST_WINDOW = 40  # ticks a coast looks at first (then 8 times as many, and so on)


@dataclass(frozen=True)
class RunDemand:
    """One recorded run: what was asked (``queued_at``, epoch seconds) and what it used.

    ``cores[i]`` is the CPU-seconds the run used in the ``i``-th interval from its start,
    divided by the interval (1.0 = one core throughout), and ``rss_bytes[i]`` its memory then;
    ``last`` (0 < last <= 1) the part of the last interval the run lasted: its duration is
    ``(len(cores) - 1 + last)`` intervals, the last sample's work done in ``last`` of one.
    ``host``: the machine it ran on (runs of different hosts never share a pool)."""

    run_id: str
    project: str
    agent: str
    queued_at: float
    cores: Sequence[float]
    rss_bytes: Sequence[int]
    host: str = ""
    last: float = 1.0


@dataclass(frozen=True)
class Demand:
    """Recorded demand as :func:`demand_from_store` reads it: the runs, the collector's tick
    interval (seconds) and the machine's core count (the largest in the store's ``system``
    rows; None when it has none), and each host's (``host_cores``)."""

    runs: tuple[RunDemand, ...]
    interval: float
    cores: int | None
    host_cores: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayedRun:
    """One run as the replay ran it (times in epoch seconds, durations in seconds).

    ``start`` is None when the run never started (refused, timed out, or still queued at the
    horizon); ``end`` is None when it did not end before the horizon. ``replayed_duration`` is
    ``end - start`` (to the horizon when unfinished, 0 when never started) and ``slowdown`` is
    ``replayed_duration / recorded_duration`` for a run that was ``done``, infinite for any other
    outcome (it never did its work). ``paused_s`` and ``throttled_s`` are the time it spent
    paused, and held by a throttle; ``waited_s`` the time it waited in the overflow queue (not
    counted in its duration, as the ``runs`` table counts it apart). ``outcome`` is one of
    :data:`OUTCOMES`."""

    run_id: str
    project: str
    agent: str
    queued_at: float
    start: float | None
    end: float | None
    recorded_duration: float
    replayed_duration: float
    slowdown: float
    paused_s: float
    throttled_s: float
    waited_s: float
    failed_memory: bool
    outcome: str


@dataclass(frozen=True)
class Replay:
    """What :func:`replay` returns: every run (in the order of the demand), the step, and the
    ticks with something in flight (``steps``) and of those, the ticks where the runs in flight
    wanted more than the pool in force (CPU or memory, at their recorded rates, paused and
    throttled runs included)."""

    runs: tuple[ReplayedRun, ...]
    interval: float
    cores: int
    steps: int
    over_pool_ticks: int


@dataclass(frozen=True)
class SlowdownSummary:
    """The runs of one project (``agent`` None) or one agent, summarised.

    ``p50``, ``p95`` and ``max`` are run slowdowns (linear between the closest ranks; a run that
    was not ``done`` counts as infinitely slow); ``slowed_2x`` counts runs slowed more than
    twice, ``failed_memory`` runs that failed on memory, ``not_run`` runs refused, timed out or
    unfinished; ``wait_p95`` is the p95 of the seconds runs waited in the queue."""

    project: str
    agent: str | None
    runs: int
    p50: float
    p95: float
    max: float
    slowed_2x: int
    failed_memory: int
    not_run: int
    wait_p95: float


# --- the replay ------------------------------------------------------------------------------


def replay(
    demand: Iterable[RunDemand],
    workspace: Workspace,
    *,
    cores: int,
    interval: float = 1.0,
    profile: str | None = None,
    min_pause: float | None = None,
    horizon: float | None = None,
    check_every_tick: bool = False,
    slower_than: float | None = None,
    host_cores: Mapping[str, int] | None = None,
) -> Replay:
    """Replay ``demand`` under ``workspace``'s configuration on a machine of ``cores`` cores.

    Runs of different hosts (a fleet's store) are replayed each on its own machine, under the
    same configuration (every machine enforces its own copy of the limits), of
    ``host_cores[host]`` cores (default ``cores``); ``steps`` and ``over_pool_ticks`` add up.

    ``interval``: the step, seconds (the recorded tick interval; the policy checks every step).
    ``profile``: a named profile in force throughout (as ``--profile``; default: the time-of-day
    profiles, read in local time as the runtime reads them). ``min_pause``: the shortest pause
    (default as the runtime's: ``max(3 x checkInterval, 5 s)``). ``horizon``: the replay stops
    there (epoch seconds), leaving what is still queued or in flight ``unfinished``; default: the
    last trigger plus a day plus ten times every recorded duration (only runs that would never
    end, paused for good, get there: time where nothing can change is skipped).
    ``check_every_tick``: no shortcut, the policy and the limits asked at every tick with a run
    in flight (slow: the reference the shortcuts are tested against; the result is the same).
    ``slower_than``: for a search that only asks which runs miss a slowdown target: the replay
    stops as soon as no run is left to start and every run in flight has already taken more
    than ``slower_than`` x its recorded duration (and a tick); those are ``unfinished``.

    Raises UsageError for a run of a project the configuration does not enable, a run without
    samples, series of unequal lengths, or a bad argument.
    """
    runs = list(demand)
    if cores < 1:
        raise UsageError(f"the machine needs at least one core, not {cores}")
    if not interval > 0:
        raise UsageError(f"the interval must be positive, not {interval}")
    enabled = {p.name for p in workspace.config.enabled_projects}
    for run in runs:
        if run.project not in enabled:
            raise UsageError(
                f"run {run.run_id}: project {run.project!r} is not an enabled project of the "
                "configuration"
            )
        if not run.cores or len(run.cores) != len(run.rss_bytes):
            raise UsageError(
                f"run {run.run_id}: cores and rss_bytes must be as long as each other and not "
                f"empty ({len(run.cores)} and {len(run.rss_bytes)} samples)"
            )
    hosts = {run.host for run in runs}
    if len(hosts) > 1:
        replayed: dict[int, ReplayedRun] = {}
        steps = over = 0
        for host in sorted(hosts):
            mine = [i for i, run in enumerate(runs) if run.host == host]
            machine = (host_cores or {}).get(host, cores)
            part = replay([runs[i] for i in mine], workspace, cores=machine, interval=interval,
                          profile=profile, min_pause=min_pause, horizon=horizon,
                          check_every_tick=check_every_tick, slower_than=slower_than)  # fmt: skip
            replayed.update(zip(mine, part.runs, strict=True))
            steps += part.steps
            over += part.over_pool_ticks
        return Replay(tuple(replayed[i] for i in range(len(runs))), interval, cores, steps, over)
    if host_cores and hosts:
        cores = host_cores.get(next(iter(hosts)), cores)
    engine = _Replayer(runs, workspace, cores, interval, profile, min_pause, horizon)
    engine.shortcuts = not check_every_tick
    engine.slower_than = slower_than
    return engine.run()


@dataclass(eq=False)
class _Run:
    """A run's replay state (one per demand entry)."""

    index: int
    demand: RunDemand
    cores: list[float]
    rss: list[int]
    peak: int
    key: tuple[str, str]
    priority: int
    available: float  # when it may enter the queue (its trigger, or its agent's run before)
    i: int = 0  # the sample being worked on
    f: float = 0.0  # how much of it is done
    used: float = 0.0  # average cores over the last step
    hold: float | None = None  # cores it is throttled at
    paused: bool = False
    entered: float | None = None  # when it entered the queue
    left: float | None = None  # when it left the queue without starting
    start: float | None = None
    end: float | None = None
    fail_at: int | None = None  # memory it fails at (bytes), when its peak is over that
    paused_s: float = 0.0
    throttled_s: float = 0.0
    outcome: str = "unfinished"
    usage: AgentUsage = field(init=False)
    last: float = field(init=False)  # the part of a step its last sample takes, unconstrained
    _arrays: tuple[Any, Any] | None = field(default=None, init=False)
    _padded: list[float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        project, agent = self.key
        self.last = self.demand.last
        self.usage = AgentUsage(project, agent, 0.0, 0, 0, 0, [(self.index + 1, 0, None)])

    def arrays(self) -> tuple[Any, Any]:
        """The series as numpy arrays (the cores with a 0 after the last tick)."""
        if self._arrays is None:
            import numpy as np

            self._arrays = (
                np.array([*self.cores, 0.0]),
                np.array(self.rss, dtype=np.int64),
            )
        return self._arrays

    def padded(self) -> list[float]:
        """The cores with a 0 after the last tick, as a list."""
        if self._padded is None:
            self._padded = [*self.cores, 0.0]
        return self._padded

    def memory(self) -> int:
        """Its memory as a tick sees it: at the end of the last sample it finished."""
        if self.f == 0.0 and self.i > 0:
            return self.rss[self.i - 1]
        return self.rss[min(self.i, len(self.rss) - 1)]


class _Replayer:
    """One replay: the loop over the ticks and the state it keeps."""

    def __init__(
        self,
        demand: list[RunDemand],
        workspace: Workspace,
        cores: int,
        interval: float,
        profile: str | None,
        min_pause: float | None,
        horizon: float | None,
    ) -> None:
        config = workspace.config
        limits = config.global_.resource_limits
        self.cores = cores
        self.dt = interval
        self.scale = 100.0 / cores  # cores -> percent of the machine
        self.most = config.global_.max_concurrent_agents
        self.overflow = limits.overflow
        self.min_pause = min_pause if min_pause is not None else max(3 * limits.check_interval, 5.0)
        self.limits = LimitsInForce(workspace, profile)
        self.policy = Policy(self.limits.allocation, Rules.of(workspace, min_pause=self.min_pause))
        self.dynamic = config.resource_sharing.strategy == "dynamic"
        self.timed = self.limits.timed
        self.adaptation = config.resource_sharing.adaptation
        # the ticks a dynamic history holds (two windows)
        self.warmup = math.ceil(2 * self.adaptation.adjustment_frequency / interval) + 1
        # ticks the dynamic history has not been given yet: (step, agents' cores and memory)
        self.missed: deque[tuple[int, list[tuple[str, float, int]]]] = deque(maxlen=self.warmup)
        priorities = {p.name: p.priority for p in config.projects}
        self.runs = [
            _Run(index, d, [float(c) for c in d.cores], [int(m) for m in d.rss_bytes],
                 max(int(m) for m in d.rss_bytes), (d.project, d.agent),
                 priorities.get(d.project, 1 << 30), d.queued_at)
            for index, d in enumerate(demand)
        ]  # fmt: skip
        self.pending = sorted(self.runs, key=lambda r: (r.demand.queued_at, r.index))
        self.next_pending = 0
        self.horizon = (
            horizon
            if horizon is not None
            else max((r.demand.queued_at for r in self.runs), default=0.0)
            + 86_400.0
            + 10 * sum(len(r.cores) for r in self.runs) * interval
        )
        self.active: dict[tuple[str, str], _Run] = {}  # admitted, not ended: slots taken
        self.waiters: list[_Run] = []  # in admission order
        self.busy: set[tuple[str, str]] = set()  # agents with a run waiting or in flight
        self.later: dict[tuple[str, str], deque[_Run]] = {}  # triggered while their agent busy
        self.ready: list[_Run] = []  # may enter the queue now (their agent is free again)
        self.minute: int | None = None
        self.updated = -1  # the last step the limits were updated at
        self.own: tuple[Allocation, dict[tuple[str, str], tuple[float, int] | None]] | None = None
        self.steps = 0
        self.over_pool = 0
        self.still = 0  # ticks in a row where nothing moved (a dynamic history must settle)
        self.failing = 0  # runs in flight that will fail on memory
        self.shortcuts = True  # False: every tick checked (the reference)
        self.slower_than: float | None = None  # stop when every run left is known that slow

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> Replay:
        dt = self.dt
        k = math.floor(self.pending[0].demand.queued_at / dt) if self.pending else 0
        self._idle_until(k)
        while True:
            if not (self.active or self.waiters or self.ready):
                if self.next_pending >= len(self.pending):
                    break
                k_next = math.floor(self.pending[self.next_pending].demand.queued_at / dt)
                if k_next > k:
                    self._idle_until(k_next)
                    k = k_next
            t = k * dt
            if t >= self.horizon or (self.slower_than is not None and self._all_slow(t)):
                break
            k = self._step(k, t)
        return self._result()

    def _all_slow(self, t: float) -> bool:
        """Whether no run is left to start and every run in flight at ``t`` has taken over
        ``slower_than`` x its recorded duration (and a tick, so no rounding makes it less)."""
        if self.next_pending < len(self.pending) or self.waiters or self.ready:
            return False
        if any(self.later.values()):
            return False
        assert self.slower_than is not None
        dt = self.dt
        bound = self.slower_than
        for run in self.active.values():
            assert run.start is not None
            if t - run.start < bound * len(run.cores) * dt + dt:
                return False
        return True

    def _idle_until(self, k: int) -> None:
        """Bring the limits to step ``k`` across a stretch where nothing ran: the runtime checks
        an empty usage every tick (a dynamic history holds zeros; a profile switch at a minute
        resets a rebalance)."""
        if not self.dynamic:
            return  # the step itself brings a profile switch
        dt = self.dt
        first = max(self.updated + 1, k - self.warmup)
        if self.timed and self.minute is not None:
            boundary = math.ceil((self.minute + 1) * 60 / dt)
            while boundary < first:
                self._update(boundary, Usage(boundary * dt, self.cores, {}))
                boundary = math.ceil((math.floor(boundary * dt / 60) + 1) * 60 / dt)
        for j in range(first, k):
            self._update(j, Usage(j * dt, self.cores, {}))

    def _update(self, k: int, usage: Usage) -> bool:
        """The limits at step ``k``, as the manager refreshes them before a check. True when
        they changed.

        ``LimitsInForce.update`` is not asked where it provably changes nothing: at the first
        step without time windows or ``dynamic`` (the allocation it starts with stays); between
        minutes when only a time-of-day profile could change the limits (profile windows are
        whole minutes); under ``dynamic``, at a tick where no project uses over
        ``usageThreshold`` x its share (no rebalance can start there). Such ticks are kept and
        given to it, in order, before the next question, so its history is the runtime's."""
        t = k * self.dt
        minute = math.floor(t / 60)
        # the first update changes nothing unless a time window or ``dynamic`` can
        first = self.updated < 0 and (self.timed or self.dynamic or not self.shortcuts)
        due = first or (self.timed and minute != self.minute)
        self.updated = k
        if not due and (not self.dynamic or not self._may_rebalance(usage)):
            if self.dynamic:
                self.missed.append((k, [(a.project, a.cores, a.memory_bytes)
                                        for a in usage.agents.values()]))  # fmt: skip
            return False
        for j, rows in self.missed:  # no project over its threshold: history only
            self.limits.observe_rows(j * self.dt, self.cores, rows)
        self.missed.clear()
        changed = bool(self.limits.update(t, usage).actions)
        self.policy.allocation = self.limits.allocation
        self.minute = minute
        return changed

    def _may_rebalance(self, usage: Usage) -> bool:
        """Whether a project uses over ``usageThreshold`` x its share (or near it) now: the
        dynamic rule moves nothing unless one did over its whole window, this tick included."""
        if not self.shortcuts:
            return True
        adaptation = self.adaptation
        if not adaptation.enabled:
            return False
        shares = self.limits.allocation.projects
        sums: dict[str, list[float]] = {}
        for agent in usage.agents.values():
            found = sums.setdefault(agent.project, [0.0, 0.0])
            found[0] += agent.cores
            found[1] += agent.memory_bytes
        bar = adaptation.usage_threshold * (1 - _MARGIN)
        for name, (cores, memory) in sums.items():
            share = shares.get(name)
            if share is None:
                continue
            if share.cpu > 0 and cores * self.scale > bar * share.cpu:
                return True
            if share.memory_bytes > 0 and memory > bar * share.memory_bytes:
                return True
        return False

    def _step(self, k: int, t: float) -> int:
        """One tick at ``t``: observe, limits, check, admit, progress. Returns the next step."""
        dt = self.dt
        policy = self.policy
        self.steps += 1
        if self.failing:
            for run in list(self.active.values()):
                if run.fail_at is not None and run.memory() > run.fail_at:
                    self._finish(run, t, "failed-memory")
        usage = self._usage(t)
        changed = self._update(k, usage)
        decisions = []
        if not self._quiet():
            decisions = policy.check(usage, t)
            for decision in decisions:
                if isinstance(decision, Hold | Release):
                    held = self.active.get((decision.project, decision.agent))
                    if held is not None:
                        held.hold = decision.cores if isinstance(decision, Hold) else None
            for run in self.active.values():
                run.paused = run.key in policy.paused
        arrivals = self._arrivals(t + dt) if self.ready or self._due(t + dt) else []
        admitted = self._queue(usage, t, arrivals) if arrivals or self.waiters else False
        wanted, memory = 0.0, 0
        for run in list(self.active.values()):
            wanted += run.cores[min(run.i, len(run.cores) - 1)]
            memory += run.memory()
            self._progress(run, t)
        pool = policy.allocation.pool
        if wanted * self.scale > pool.cpu or memory > pool.memory_bytes:
            self.over_pool += 1
        if decisions or arrivals or admitted or changed:
            self.still = 0
            return self._coast(k)
        target = self._stalled(k, t, usage)
        return self._coast(k) if target == k + 1 else target

    def _due(self, before: float) -> bool:
        """Whether a trigger comes before ``before``."""
        return (
            self.next_pending < len(self.pending)
            and self.pending[self.next_pending].demand.queued_at < before
        )

    def _usage(self, t: float) -> Usage:
        agents = {}
        for key, run in self.active.items():
            found = run.usage
            found.cores = run.used
            found.memory_bytes = run.memory()
            agents[key] = found
        return Usage(t, self.cores, agents)

    def _own_limits(self, key: tuple[str, str]) -> tuple[float, int] | None:
        allocation = self.policy.allocation
        if self.own is None or self.own[0] is not allocation:
            self.own = (allocation, {})
        cache = self.own[1]
        if key not in cache:
            cache[key] = self.policy.agent_limits(*key)
        return cache[key]

    def _quiet(self) -> bool:
        """True when the check could change nothing a run feels: nobody paused or throttled and
        every scope under its limits (what it would still do, re-arm warnings, no run sees),
        and no agent exempt from memory pauses gone (the check forgets the exemption: its next
        run is paused again). Anything near a limit is left to the policy."""
        if not self.shortcuts:
            return False
        policy = self.policy
        if policy.paused or policy.throttled or not policy.memory_exempt <= self.active.keys():
            return False
        allocation = policy.allocation
        scale = self.scale
        total_cpu, total_memory = 0.0, 0
        projects: dict[str, list[float]] = {}
        for key, run in self.active.items():
            cpu, memory = run.used * scale, run.usage.memory_bytes
            own = self._own_limits(key)
            if own is not None and (cpu > own[0] * (1 - _MARGIN) or memory > own[1]):
                return False
            sums = projects.setdefault(key[0], [0.0, 0.0])
            sums[0] += cpu
            sums[1] += memory
            total_cpu += cpu
            total_memory += memory
        for name, (project_cpu, project_memory) in projects.items():
            share = allocation.projects[name]
            if project_cpu > share.cpu * (1 - _MARGIN) or project_memory > share.memory_bytes:
                return False
        pool = allocation.pool
        return total_cpu <= pool.cpu * (1 - _MARGIN) and total_memory <= pool.memory_bytes

    # --- the queue (the runner's AdmissionQueue, step by step) -----------------------------

    def _arrivals(self, before: float) -> list[tuple[float, _Run]]:
        """Runs that ask to start before ``before``: those whose agent came free, then new
        triggers; a trigger for a busy agent waits for it."""
        arrivals = [(max(r.available, before - self.dt), r) for r in self.ready]
        self.ready = []
        while self.next_pending < len(self.pending):
            run = self.pending[self.next_pending]
            if run.demand.queued_at >= before:
                break
            self.next_pending += 1
            if run.key in self.busy:
                self.later.setdefault(run.key, deque()).append(run)
            else:
                self.busy.add(run.key)
                arrivals.append((max(run.demand.queued_at, before - self.dt), run))
        arrivals.sort(key=lambda a: (a[0], a[1].index))
        return arrivals

    def _queue(self, usage: Usage, t: float, arrivals: list[tuple[float, _Run]]) -> bool:
        """Time out, recheck, then take the arrivals one by one (acquire). True when any run
        started or left the queue."""
        changed = False
        for run in list(self.waiters):
            assert run.entered is not None
            if t - run.entered >= self.overflow.max_wait_time:
                self.waiters.remove(run)
                self._finish(run, t, "timed-out")
                changed = True
        changed |= self._admit(usage, t)
        for at, run in arrivals:
            run.entered = at
            place = len(self.waiters)
            while place > 0 and self.waiters[place - 1].priority > run.priority:
                place -= 1
            self.waiters.insert(place, run)
            self._admit(usage, at)
            if run.start is not None:
                continue
            overflow = self.overflow
            queueing = overflow.enabled and overflow.queueing
            if not queueing or len(self.waiters) > overflow.max_queue_size:
                self.waiters.remove(run)
                self._finish(run, at, "refused")
        return changed or bool(arrivals)

    def _admit(self, usage: Usage, at: float) -> bool:
        admitted = False
        for run in list(self.waiters):
            if self.most is not None and len(self.active) >= self.most:
                break
            if not self.policy.can_run(usage, run.key[1], [run.key[0]]):
                continue
            self.waiters.remove(run)
            self._start(run, at)
            admitted = True
        return admitted

    def _start(self, run: _Run, at: float) -> None:
        run.start = at
        self.active[run.key] = run
        policy = self.policy
        allocation = policy.allocation
        bound = min(allocation.pool.memory_bytes, allocation.projects[run.key[0]].memory_bytes)
        own = policy.agent_limits(*run.key)
        if own is not None:
            bound = min(bound, own[1])
        if run.peak > bound:
            run.fail_at = bound
            self.failing += 1

    def _finish(self, run: _Run, at: float, outcome: str) -> None:
        run.outcome = outcome
        if run.start is not None:
            run.end = at
            self.active.pop(run.key, None)
            if run.fail_at is not None:
                self.failing -= 1
        else:
            run.left = at
        queued = self.later.get(run.key)
        if queued:
            successor = queued.popleft()
            successor.available = max(successor.available, at)
            self.ready.append(successor)
        else:
            self.busy.discard(run.key)

    # --- progress ------------------------------------------------------------------------

    def _progress(self, run: _Run, t: float) -> None:
        """Work ``run`` through the step from ``t`` (from its start, when that is later)."""
        dt = self.dt
        budget = 1.0
        assert run.start is not None
        if run.start > t:
            budget = (t + dt - run.start) / dt
        if run.paused:
            run.paused_s += budget * dt
            run.used = 0.0
            return
        hold, cores, n = run.hold, run.cores, len(run.cores)
        i, f = run.i, run.f
        if hold is None and f == 0.0 and budget == 1.0 and (i + 1 < n or run.last == 1.0):
            run.used = cores[i]
            run.i = i + 1
            if run.i >= n:
                self._finish(run, t + dt, "done")
            return
        cpu, left = 0.0, budget
        while left > _EPS and i < n:
            w = cores[i]
            if i + 1 < n or run.last == 1.0:
                rate = 1.0 if hold is None or w <= hold else hold / w
            else:  # the last sample: its work in part of a step, faster
                span = run.last
                rate = (1.0 if hold is None or w <= hold * span else hold * span / w) / span
            if rate <= 0.0:
                break
            need = (1.0 - f) / rate
            if need <= left + _EPS:
                cpu += (1.0 - f) * w
                left -= need
                i, f = i + 1, 0.0
            else:
                part = left * rate
                cpu += part * w
                f += part
                left = 0.0
        left = 0.0 if left < _EPS else left
        if hold is not None:
            run.throttled_s += (budget - left if i >= n else budget) * dt
        run.i, run.f, run.used = i, f, cpu
        if i >= n:
            self._finish(run, t + (1.0 - left) * dt, "done")

    def _stalled(self, k: int, t: float, usage: Usage) -> int:
        """The next step worth taking. After a tick where no run in flight could progress
        (paused at least the minimum pause, or held at 0 cores) and each showed 0 cores already,
        the limits stayed, the check decided nothing and nobody entered or left the queue, the
        next ticks are this one again until a trigger, a queue timeout or a profile switch
        (under ``dynamic``, once its history holds nothing but this tick: then a rebalance that
        did not happen will not)."""
        if not self.shortcuts:
            return k + 1
        if not self.active or len(self.active) < len(usage.agents):  # one ended this tick
            return k + 1
        policy = self.policy
        for run in self.active.values():
            if run.usage.cores != 0.0:
                return k + 1
            if run.paused:
                paused = policy.paused.get(run.key)
                if paused is None or t - paused.since < self.min_pause - PAUSE_SLACK:
                    return k + 1
            elif run.hold is None or run.hold > 0 or run.cores[run.i] <= 0:
                return k + 1
        self.still += 1
        if self.dynamic and self.still < self.warmup:
            return k + 1
        dt = self.dt
        events = [self.horizon]
        if self.next_pending < len(self.pending):
            events.append(self.pending[self.next_pending].demand.queued_at)
        events += [
            (run.entered if run.entered is not None else t) + self.overflow.max_wait_time
            for run in self.waiters
        ]
        if self.timed:
            events.append((math.floor(t / 60) + 1) * 60.0)
        target = max(k + 1, math.floor(min(events) / dt))
        skipped = target - (k + 1)
        if skipped <= 0:
            return k + 1
        for run in self.active.values():
            if run.paused:
                run.paused_s += skipped * dt
            else:
                run.throttled_s += skipped * dt
        if self._over_pool_now():
            self.over_pool += skipped
        self.steps += skipped
        if self.dynamic:  # the history the runtime would hold: this tick, again and again
            for j in range(max(k + 1, target - self.warmup), target):
                self._update(j, Usage(j * dt, self.cores, usage.agents))
        self.updated = target - 1
        return target

    def _coast(self, k: int) -> int:
        """The next step worth taking after step ``k`` when no run in flight is throttled and
        nobody is queued: every run runs free or stays paused until the ticks where the check
        could decide something. The ticks until a run ends, a trigger or a profile switch are
        computed at once, and taken in bulk up to the first one where a scope would go over a
        limit (or a run over its memory), or where a paused run could resume (its minimum pause
        over and every scope it belongs to under its resume bar, or its own memory over one),
        where the check must judge again (under ``dynamic``, also up to where a project would
        use over ``usageThreshold`` x its share). A paused run shows 0 cores and keeps its
        memory, as the step does."""
        if not self.shortcuts:
            return k + 1
        policy = self.policy
        if policy.throttled or self.waiters or self.ready:
            return k + 1
        runs = list(self.active.values())
        if not runs or any(run.hold is not None for run in runs):
            return k + 1
        if any(run.paused != (run.key in policy.paused) for run in runs) or any(
            key not in self.active for key in policy.paused
        ):
            return k + 1
        if len(runs) == 1 and runs[0].paused:
            ahead = self._cycles(k, runs[0])
            if ahead > k:
                return self._coast(ahead)
        dt = self.dt
        # up to a run's end; a last sample shorter than a step is left to the steps
        m = min(
            (len(run.cores) - run.i - (0 if run.last == 1.0 else 2) for run in runs
             if not run.paused),
            default=_MAX_COAST,
        )  # fmt: skip
        m = min(m, _MAX_COAST)
        if self.next_pending < len(self.pending):
            m = min(m, math.floor(self.pending[self.next_pending].demand.queued_at / dt) - k - 1)
        if self.timed and self.minute is not None:
            m = min(m, math.ceil((self.minute + 1) * 60 / dt) - k - 1)
        m = min(m, math.ceil(self.horizon / dt) - k - 1)
        # a paused run whose own memory is over a resume bar resumes as its minimum pause ends
        expiries = {}
        for run in runs:
            if run.paused:
                paused = policy.paused[run.key]
                expiry = self._pause_over(k, paused.since)
                if self._hopeless(run, paused.metric):
                    m = min(m, expiry - k - 1)
                else:
                    expiries[run.key] = expiry
        if m < 2 or self._over_next(runs):
            return k + 1
        # Most coasts are short (a pause's minimum, a run's end): a small window first.
        if all(run.paused for run in runs):
            taken, seen, over = self._still(k, m, runs, expiries)
        else:
            window = min(m, _FIRST_WINDOW)
            while True:
                if window <= _FIRST_WINDOW:
                    taken, seen, over = self._window_small(k, window, runs, expiries)
                else:
                    taken, seen, over = self._window(k, window, runs, expiries)
                if taken < window or window == m:
                    break
                window = min(m, window * 8)
        if taken < 1:
            return k + 1
        self.over_pool += over
        self.steps += taken
        if self.dynamic:  # ticks the history must still be given, as _update keeps them
            for step in range(max(0, taken - self.warmup), taken):
                self.missed.append((k + 1 + step, [
                    (run.key[0], float(used[step]), int(rss[step]))
                    for run, _, _, _, used, rss in seen
                ]))  # fmt: skip
        self.updated = k + taken
        end = (k + taken) * dt  # the start of the last tick taken
        for run, cores, i, f, _, _ in seen:
            if run.paused:
                run.paused_s = _added(run.paused_s, dt, taken)
                continue
            run.i = i + taken
            run.used = float((1.0 - f) * cores[i + taken - 1] + f * cores[i + taken])
            if run.i >= len(run.cores):
                self._finish(run, end + (1.0 - f) * dt, "done")
        return k + taken + 1

    def _cycles(self, k: int, run: _Run) -> int:
        """Pause cycles of a run alone in flight, taken at once after step ``k``: the run,
        paused for CPU, waits out the minimum pause (nothing else can happen: no trigger, no
        other run), is resumed at the check where it is over (its memory under every limit:
        it shows 0 cores), works one tick, and the next check pauses it again for CPU because
        that tick's cores put a scope over its CPU limit. Returns the step whose state it
        leaves (``k`` when no whole cycle is certain): the run paused again there, as the
        step would leave it.

        Each cycle does what the checks of every tick would (the runtime's policy, read for
        this case): ``_resume`` resumes the run when ``now - since`` reaches the minimum pause
        and every scope is under ``resumeThreshold`` x its CPU limit (the run's 0 cores) and
        under its memory limit; that check then finds every scope at 0 cores and under its
        memory; the next one goes through the scopes narrowest first (the agent's own limits,
        the projects, the workspace; CPU then memory in each) and pauses the run at the first
        over its limit, the only running agent, which brings that scope and every later one
        to 0. A cycle whose first scope over is for memory, or with no scope over, or where
        the run ends, is left to the steps. Nothing warned, held, exempt or failing, the
        ``pause`` action everywhere, no limit under 0, and neither ``dynamic`` nor time
        windows (the limits stay). The tests compare with checking every tick."""
        policy = self.policy
        project, agent = run.key
        paused = policy.paused[run.key]
        rules = policy.rules
        if (
            self.dynamic
            or self.timed
            or run.fail_at is not None
            or run.used != 0.0
            or run.hold is not None
            or paused.metric != "cpu"
            or policy.warned
            or policy.memory_exempt
            or "/" in project
            or rules.action != "pause"
            or rules.action_for(project) != "pause"
        ):
            return k
        allocation = policy.allocation
        pool = allocation.pool
        if pool.cpu < 0 or pool.memory_bytes < 0:
            return k
        if any(s.cpu < 0 or s.memory_bytes < 0 for s in allocation.projects.values()):
            return k
        if any(a.cpu < 0 or a.memory_bytes < 0 for a in allocation.agents.values()):
            return k
        scopes = policy.scopes_of(project, agent)
        threshold = rules.threshold_for(project)
        if any(not cpu_limit * threshold > 0 for _, _, cpu_limit, _ in scopes):
            return k  # a CPU bar of 0: the run is never resumed
        # the scopes the check goes through, in its order (other projects show nothing)
        order = [(scope, cpu_limit, float(memory_limit))
                 for scope, _, cpu_limit, memory_limit in scopes]  # fmt: skip
        smallest_memory = min(memory_limit for _, _, _, memory_limit in scopes)
        dt = self.dt
        cores, n = run.cores, len(run.cores)
        machine = self.cores
        scale = self.scale
        pending = self.pending
        assert run.start is not None
        bound = math.inf
        if self.slower_than is not None:
            bound = self.slower_than * n * dt + dt
        counts = policy.counts.setdefault(run.key, [0, 0])
        since, last = paused.since, k
        while True:
            expiry = self._pause_over(last, since)
            again = expiry + 1  # the check that pauses it again
            t = again * dt
            if t >= self.horizon or t - run.start >= bound:
                break
            # triggers up to that step: its agent's next runs wait for it (as _arrivals
            # keeps them); another agent's is left to the steps
            due = self.next_pending
            while due < len(pending) and pending[due].demand.queued_at < t + dt:
                if pending[due].key != run.key:
                    break
                due += 1
            if due < len(pending) and pending[due].demand.queued_at < t + dt:
                break
            i, f = run.i, run.f
            if i + 2 >= n:
                break  # the tick it works may end it: left to the steps
            memory = run.memory()  # as the paused run shows it
            if memory >= smallest_memory * 1.0:
                break  # not resumed (or resumed over a memory limit): left to the steps
            wanted = cores[i]
            # the tick it works, as the step works it
            run.paused = False
            self._progress(run, expiry * dt)
            run.paused = True
            cpu = run.used / machine * 100
            shown = run.memory()
            over = None
            for scope, cpu_limit, memory_limit in order:
                if cpu > cpu_limit:
                    over = scope
                    break
                if float(shown) > memory_limit:
                    break
            if over is None:
                run.i, run.f, run.used = i, f, 0.0
                break
            # ticks last+1 .. expiry: paused but for the tick at expiry (resumed before it
            # works), each seeing the run's cores and its paused memory; then the tick it is
            # paused again at, seeing its next sample and the memory it worked to
            if wanted * scale > pool.cpu or memory > pool.memory_bytes:
                self.over_pool += expiry - last
            if cores[run.i] * scale > pool.cpu or shown > pool.memory_bytes:
                self.over_pool += 1
            run.paused_s = _added(run.paused_s, dt, expiry - last)
            run.used = 0.0
            self.steps += again - last
            counts[1] += 1
            counts[0] += 1
            since = t
            paused = Paused(project, agent, over, "cpu", since)
            last = again
            while self.next_pending < due:
                self.later.setdefault(run.key, deque()).append(pending[self.next_pending])
                self.next_pending += 1
        if last == k:
            return k
        policy.paused[run.key] = paused
        self.updated = last
        self.still = 0
        return last

    def _over_next(self, runs: list[_Run]) -> bool:
        """Whether the next tick already shows a scope near or over a limit, or a run over the
        memory it fails at (the coast would stop there: no arrays for it)."""
        allocation = self.policy.allocation
        scale = self.scale
        total_cpu, running = 0.0, 0
        projects: dict[str, list[float]] = {}
        for run in runs:
            memory = run.memory()
            sums = projects.setdefault(run.key[0], [0.0, 0, 0])
            sums[1] += memory
            if run.paused:
                continue
            cpu = run.used * scale
            own = self._own_limits(run.key)
            if own is not None and (cpu > own[0] * (1 - _MARGIN) or memory > own[1]):
                return True
            if run.fail_at is not None and memory > run.fail_at:
                return True
            sums[0] += cpu
            sums[2] += memory
            total_cpu += cpu
            running += memory
        dynamic = self.dynamic and self.adaptation.enabled
        hungry = self.adaptation.usage_threshold * (1 - _MARGIN)
        for name, (project_cpu, held, running_memory) in projects.items():
            share = allocation.projects[name]
            if project_cpu > share.cpu * (1 - _MARGIN) or running_memory > share.memory_bytes:
                return True
            if dynamic and (
                (share.cpu > 0 and project_cpu > hungry * share.cpu)
                or (share.memory_bytes > 0 and held > hungry * share.memory_bytes)
            ):
                return True
        pool = allocation.pool
        return total_cpu > pool.cpu * (1 - _MARGIN) or running > pool.memory_bytes

    def _window(
        self, k: int, m: int, runs: list[_Run], expiries: dict[tuple[str, str], int]
    ) -> tuple[int, list[tuple[_Run, Any, int, float, Any, Any]], int]:
        """Ticks ``k + 1 .. k + m`` of a coast: how many of them from the first the check can
        be skipped at, what each run shows at them (run, its cores, ``i``, ``f``, cores and
        memory per tick), and at how many of those the runs want more than the pool."""
        import numpy as np

        policy = self.policy
        allocation = policy.allocation
        scale = self.scale
        total_cpu = np.zeros(m)
        total_memory = np.zeros(m, dtype=np.int64)
        running_memory = np.zeros(m, dtype=np.int64)
        wanted = np.zeros(m)
        projects: dict[str, list[Any]] = {}
        bad = np.zeros(m, dtype=bool)
        seen = []
        for run in runs:
            cores, rss = run.arrays()
            i, f = run.i, run.f
            sums = projects.setdefault(
                run.key[0],
                [np.zeros(m), np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)],
            )
            if run.paused:  # no progress: 0 cores, its memory kept
                used = np.zeros(m)
                memory = np.full(m, run.memory(), dtype=np.int64)
                wanted += cores[min(i, len(run.cores) - 1)]
                sums[1] += memory
                total_memory += memory
                seen.append((run, cores, i, f, used, memory))
                continue
            used = np.empty(m)  # what each of ticks k+1 .. k+m sees of the run's last step
            used[0] = run.used
            used[1:] = (1.0 - f) * cores[i : i + m - 1] + f * cores[i + 1 : i + m]
            memory = rss[i : i + m] if f > 0 else rss[max(i - 1, 0) : i + m - 1]
            if f == 0 and i == 0:
                memory = np.concatenate([rss[:1], rss[: m - 1]])
            cpu = used * scale
            own = self._own_limits(run.key)
            if own is not None:
                bad |= (cpu > own[0] * (1 - _MARGIN)) | (memory > own[1])
            if run.fail_at is not None:
                bad |= memory > run.fail_at
            sums[0] += cpu
            sums[1] += memory
            sums[2] += memory
            total_cpu += cpu
            total_memory += memory
            running_memory += memory
            wanted += cores[i : i + m]
            seen.append((run, cores, i, f, used, memory))
        hungry = self.adaptation.usage_threshold * (1 - _MARGIN)
        for name, (cpu, memory, running) in projects.items():
            share = allocation.projects[name]
            bad |= (cpu > share.cpu * (1 - _MARGIN)) | (running > share.memory_bytes)
            if self.dynamic and self.adaptation.enabled:
                if share.cpu > 0:
                    bad |= cpu > hungry * share.cpu
                if share.memory_bytes > 0:
                    bad |= memory > hungry * share.memory_bytes
        pool = allocation.pool
        bad |= (total_cpu > pool.cpu * (1 - _MARGIN)) | (running_memory > pool.memory_bytes)
        taken = int(bad.argmax()) if bad.any() else m
        blocked_in: dict[tuple[str, str], Any] = {}

        def free_from(paused: Paused, first: int, taken: int) -> int | None:
            group = (paused.project, paused.metric)
            blocked = blocked_in.get(group)
            if blocked is None:
                blocked = blocked_in[group] = self._blocked(
                    paused, projects, total_cpu, total_memory, m
                )
            free = ~blocked[first:taken]
            return first + int(free.argmax()) if free.any() else None

        taken = self._first_resume(k, taken, expiries, free_from)
        over = (wanted[:taken] * scale > pool.cpu) | (total_memory[:taken] > pool.memory_bytes)
        return taken, seen, int(over.sum())

    def _window_small(
        self, k: int, m: int, runs: list[_Run], expiries: dict[tuple[str, str], int]
    ) -> tuple[int, list[tuple[_Run, Any, int, float, Any, Any]], int]:
        """:meth:`_window` for a short window, in plain Python (numpy's set-up costs more than
        a few ticks): the same sums in the same order, so the same floats, and the same
        answer; the limits are compared only up to the first tick where the check must
        judge."""
        policy = self.policy
        allocation = policy.allocation
        scale = self.scale
        total_cpu = [0.0] * m
        total_memory = [0] * m
        running_memory = [0] * m
        wanted = [0.0] * m
        projects: dict[str, list[Any]] = {}
        bad = m  # the first tick where the check must judge
        seen: list[tuple[_Run, Any, int, float, Any, Any]] = []
        for run in runs:
            cores, rss = run.padded(), run.rss
            i, f = run.i, run.f
            sums = projects.get(run.key[0])
            if sums is None:
                sums = projects[run.key[0]] = [[0.0] * m, [0] * m, [0] * m]
            held = sums[1]
            if run.paused:  # no progress: 0 cores, its memory kept
                kept = run.memory()
                asked = cores[min(i, len(run.cores) - 1)]
                for j in range(m):
                    wanted[j] += asked
                    held[j] += kept
                    total_memory[j] += kept
                seen.append((run, cores, i, f, _Repeat(0.0), _Repeat(kept)))
                continue
            g = 1.0 - f
            used = [run.used, *[g * cores[i + j - 1] + f * cores[i + j] for j in range(1, m)]]
            if f > 0:
                memory = rss[i : i + m]
            elif i == 0:
                memory = [rss[0], *rss[: m - 1]]
            else:
                memory = rss[i - 1 : i + m - 1]
            cpu = [u * scale for u in used]
            own = self._own_limits(run.key)
            if own is not None:
                bad = _first_over(cpu, own[0] * (1 - _MARGIN), bad)
                bad = _first_over(memory, own[1], bad)
            if run.fail_at is not None:
                bad = _first_over(memory, run.fail_at, bad)
            project_cpu, running = sums[0], sums[2]
            for j in range(m):
                c, b = cpu[j], memory[j]
                project_cpu[j] += c
                held[j] += b
                running[j] += b
                total_cpu[j] += c
                total_memory[j] += b
                running_memory[j] += b
                wanted[j] += cores[i + j]
            seen.append((run, cores, i, f, used, memory))
        hungry = self.adaptation.usage_threshold * (1 - _MARGIN)
        dynamic = self.dynamic and self.adaptation.enabled
        for name, (cpu, memory, running) in projects.items():
            share = allocation.projects[name]
            bars = [(cpu, share.cpu * (1 - _MARGIN)), (running, share.memory_bytes)]
            if dynamic:
                if share.cpu > 0:
                    bars.append((cpu, hungry * share.cpu))
                if share.memory_bytes > 0:
                    bars.append((memory, hungry * share.memory_bytes))
            for series, bar in bars:
                bad = _first_over(series, bar, bad)
        pool = allocation.pool
        bad = _first_over(total_cpu, pool.cpu * (1 - _MARGIN), bad)
        bad = _first_over(running_memory, pool.memory_bytes, bad)
        blocked_in: dict[tuple[str, str], list[bool]] = {}

        def free_from(paused: Paused, first: int, taken: int) -> int | None:
            group = (paused.project, paused.metric)
            blocked = blocked_in.get(group)
            if blocked is None:
                blocked = blocked_in[group] = self._blocked_small(
                    paused, projects, total_cpu, total_memory, m
                )
            return next((j for j in range(first, taken) if not blocked[j]), None)

        taken = self._first_resume(k, bad, expiries, free_from)
        over = sum(
            1
            for j in range(taken)
            if wanted[j] * scale > pool.cpu or total_memory[j] > pool.memory_bytes
        )
        return taken, seen, over

    def _blocked_small(
        self,
        paused: Paused,
        projects: dict[str, list[Any]],
        cpu: list[float],
        memory: list[int],
        m: int,
    ) -> list[bool]:
        """:meth:`_blocked` on lists."""
        blocked = [False] * m
        for scope_cpu, scope_memory, cpu_bar, memory_bar in self._bars(
            paused, projects, cpu, memory
        ):
            top = cpu_bar * (1 + _MARGIN)
            for j in range(m):
                over = scope_cpu[j] > top if cpu_bar > 0 else scope_cpu[j] >= cpu_bar
                if over or scope_memory[j] >= memory_bar:
                    blocked[j] = True
        return blocked

    def _still(
        self, k: int, m: int, runs: list[_Run], expiries: dict[tuple[str, str], int]
    ) -> tuple[int, list[tuple[_Run, Any, int, float, Any, Any]], int]:
        """:meth:`_window` where every run in flight is paused: each tick shows what the next
        one does (0 cores, the runs' memory) until a minimum pause is over."""
        policy = self.policy
        allocation = policy.allocation
        held: dict[str, int] = {}
        total, wanted = 0, 0.0
        seen = []
        for run in runs:
            memory = run.memory()
            held[run.key[0]] = held.get(run.key[0], 0) + memory
            total += memory
            wanted += run.cores[min(run.i, len(run.cores) - 1)]
            seen.append((run, run.cores, run.i, run.f, _Repeat(0.0), _Repeat(memory)))
        hungry = self.adaptation.usage_threshold * (1 - _MARGIN)
        dynamic = self.dynamic and self.adaptation.enabled
        for name, memory in held.items():
            share = allocation.projects[name]
            if 0.0 > share.cpu * (1 - _MARGIN) or 0 > share.memory_bytes:
                return 0, seen, 0
            if dynamic and share.memory_bytes > 0 and memory > hungry * share.memory_bytes:
                return 0, seen, 0
        pool = allocation.pool
        if 0.0 > pool.cpu * (1 - _MARGIN) or 0 > pool.memory_bytes:
            return 0, seen, 0

        def free_from(paused: Paused, first: int, taken: int) -> int | None:
            # nothing changes while all are paused: free at its expiry, or never
            threshold = policy.rules.threshold_for(paused.project)
            blocked = False
            for scope, _, cpu_limit, memory_limit in policy.scopes_of(paused.project,
                                                                       paused.agent):  # fmt: skip
                if scope == "agent":
                    continue
                cpu_bar = cpu_limit * (threshold if paused.metric == "cpu" else 1.0)
                memory_bar = memory_limit * (threshold if paused.metric == "memory" else 1.0)
                memory = held[paused.project] if scope == "project" else total
                blocked |= (0.0 > cpu_bar * (1 + _MARGIN)) if cpu_bar > 0 else (0.0 >= cpu_bar)
                blocked |= memory >= memory_bar
            return None if blocked else first

        taken = self._first_resume(k, m, expiries, free_from)
        over = wanted * self.scale > pool.cpu or total > pool.memory_bytes
        return taken, seen, taken if over else 0

    def _first_resume(
        self,
        k: int,
        taken: int,
        expiries: dict[tuple[str, str], int],
        free_from: Callable[[Paused, int, int], int | None],
    ) -> int:
        """The first tick of a coast (``k + 1`` is 0) before ``taken`` at which a paused run's
        minimum pause is over and nothing blocks its resume, else ``taken``: the paused runs
        in the order their minimum pauses end; ``free_from(paused, first, taken)`` is the
        first tick from ``first`` (its expiry) before ``taken`` at which nothing blocks it,
        None when none is."""
        for key, expiry in sorted(expiries.items(), key=lambda e: e[1]):
            first = expiry - k - 1
            if first >= taken:
                break
            paused = self.policy.paused[key]
            if self._blocked_by_itself(paused):
                continue
            found = free_from(paused, first, taken)
            if found is not None:
                taken = found
        return taken

    def _pause_over(self, k: int, since: float) -> int:
        """The first step after ``k`` where a pause from ``since`` has lasted the minimum pause
        (as the check compares it: ``now - since < min_pause - PAUSE_SLACK``)."""
        dt = self.dt
        least = self.min_pause - PAUSE_SLACK
        step = max(k + 1, math.floor((since + least) / dt))
        while step > k + 1 and (step - 1) * dt - since >= least:
            step -= 1
        while step * dt - since < least:
            step += 1
        return step

    def _hopeless(self, run: _Run, metric: str) -> bool:
        """Whether a paused run's own memory is over ``resumeThreshold`` x a memory limit it is
        under (the policy resumes it as soon as the minimum pause is over)."""
        if metric != "memory":
            return False
        policy = self.policy
        threshold = policy.rules.threshold_for(run.key[0])
        memory = run.memory()
        return any(memory >= limit * threshold for _, _, _, limit in policy.scopes_of(*run.key))

    def _blocked_by_itself(self, paused: Paused) -> bool:
        """Whether a paused agent's own limit keeps it from resuming (its own CPU is zero while
        stopped: its memory at or over the bar, or a CPU bar of zero)."""
        policy = self.policy
        threshold = policy.rules.threshold_for(paused.project)
        for scope, _, cpu_limit, memory_limit in policy.scopes_of(paused.project, paused.agent):
            if scope == "agent":
                cpu_bar = cpu_limit * (threshold if paused.metric == "cpu" else 1.0)
                memory_bar = memory_limit * (threshold if paused.metric == "memory" else 1.0)
                found = self.active[(paused.project, paused.agent)].memory()
                return 0.0 >= cpu_bar or found >= memory_bar
        return False

    def _blocked(
        self, paused: Paused, projects: dict[str, list[Any]], cpu: Any, memory: Any, m: int
    ) -> Any:
        """Per tick of a coast, whether a paused agent's project or the workspace certainly
        keeps it from resuming: at or over its resume bar (CPU only when clearly over: the
        check's sums differ from these in the last bits). The same for every agent of the
        project paused for the same metric."""
        import numpy as np

        blocked = np.zeros(m, dtype=bool)
        for scope_cpu, scope_memory, cpu_bar, memory_bar in self._bars(
            paused, projects, cpu, memory
        ):
            if cpu_bar > 0:
                blocked |= scope_cpu > cpu_bar * (1 + _MARGIN)
            else:
                blocked |= scope_cpu >= cpu_bar
            blocked |= scope_memory >= memory_bar
        return blocked

    def _bars(
        self, paused: Paused, projects: dict[str, list[Any]], cpu: Any, memory: Any
    ) -> Iterator[tuple[Any, Any, float, float]]:
        """For each scope over a paused agent but its own (its project, the workspace): that
        scope's CPU and memory series and the bars under which the agent may resume."""
        policy = self.policy
        threshold = policy.rules.threshold_for(paused.project)
        for scope, name, cpu_limit, memory_limit in policy.scopes_of(paused.project, paused.agent):
            if scope == "agent":
                continue
            cpu_bar = cpu_limit * (threshold if paused.metric == "cpu" else 1.0)
            memory_bar = memory_limit * (threshold if paused.metric == "memory" else 1.0)
            if scope == "project":
                assert name is not None
                yield projects[name][0], projects[name][1], cpu_bar, memory_bar
            else:
                yield cpu, memory, cpu_bar, memory_bar

    def _over_pool_now(self) -> bool:
        pool = self.policy.allocation.pool
        wanted = sum(r.cores[min(r.i, len(r.cores) - 1)] for r in self.active.values())
        memory = sum(r.memory() for r in self.active.values())
        return wanted * self.scale > pool.cpu or memory > pool.memory_bytes

    # --- the result ------------------------------------------------------------------------

    def _result(self) -> Replay:
        dt = self.dt
        replayed = []
        for run in self.runs:
            recorded = (len(run.cores) - 1 + run.last) * dt
            if run.start is not None and run.end is not None:
                duration = run.end - run.start
            elif run.start is not None:
                duration = self.horizon - run.start
            else:
                duration = 0.0
            slowdown = duration / recorded if run.outcome == "done" else math.inf
            waited = 0.0
            if run.entered is not None:
                until = next(x for x in (run.start, run.left, self.horizon) if x is not None)
                waited = until - run.entered
            replayed.append(
                ReplayedRun(
                    run.demand.run_id,
                    run.demand.project,
                    run.demand.agent,
                    run.demand.queued_at,
                    run.start,
                    run.end,
                    recorded,
                    duration,
                    slowdown,
                    run.paused_s,
                    run.throttled_s,
                    waited,
                    run.fail_at is not None,
                    run.outcome,
                )
            )
        return Replay(tuple(replayed), dt, self.cores, self.steps, self.over_pool)


def _first_over(series: Sequence[float], bar: float, before: int) -> int:
    """The first tick under ``before`` where ``series`` is over ``bar``, else ``before``."""
    return next((j for j in range(before) if series[j] > bar), before)


class _Repeat:
    """The same value at every tick of a coast."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __getitem__(self, step: int) -> float:
        return self.value


def _added(total: float, dt: float, times: int) -> float:
    """``total`` with ``dt`` added ``times`` times, one at a time as the steps add it (at once
    where that is exact: whole seconds)."""
    if dt.is_integer() and total.is_integer() and total + times * dt < 2**52:
        return total + times * dt
    for _ in range(times):
        total += dt
    return total


# --- the summary -----------------------------------------------------------------------------


def summarize(result: Replay) -> list[SlowdownSummary]:
    """Per project, then per agent of it (sorted by name): the runs' slowdowns summarised."""
    groups: dict[tuple[str, str | None], list[ReplayedRun]] = {}
    for run in result.runs:
        groups.setdefault((run.project, None), []).append(run)
        groups.setdefault((run.project, run.agent), []).append(run)
    summaries = []
    for (project, agent), runs in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or "")):
        slowdowns = sorted(run.slowdown for run in runs)
        summaries.append(
            SlowdownSummary(
                project,
                agent,
                len(runs),
                _quantile(slowdowns, 0.5),
                _quantile(slowdowns, 0.95),
                slowdowns[-1],
                sum(1 for s in slowdowns if s > 2.0),
                sum(1 for run in runs if run.failed_memory),
                sum(1 for run in runs if run.outcome in ("refused", "timed-out", "unfinished")),
                _quantile(sorted(run.waited_s for run in runs), 0.95),
            )
        )
    return summaries


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear between the closest ranks (DuckDB's ``quantile_cont``), infinity kept."""
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    if weight == 0.0 or ordered[low] == ordered[high]:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * weight


# --- demand from the store -------------------------------------------------------------------


def demand_from_store(
    workspace_dir: Path | str | Store,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Demand:
    """The runs of the ``runs`` table that ended and started in ``[start, end)`` (an end not
    given: no bound there) with their per-tick series, summed over the run's processes at each
    tick, made into :class:`Demand` by :func:`demand_from_rows`.

    A run's trigger is its ``queued`` time. Ticks where every process of the run was stopped and
    used nothing (paused by the enforcement while recorded) are left out: they were not demand.
    The interval is the store's (:meth:`Store.select <devloop.analytics.Store.select>` of the
    range), the hosts' core counts their largest in ``system``.
    """
    from contextlib import nullcontext

    from devloop.analytics import Store, TimeRange

    opened = (
        nullcontext(workspace_dir) if isinstance(workspace_dir, Store) else Store(workspace_dir)
    )
    with opened as store:
        interval = store.select(TimeRange(start=start, end=end), require_samples=False).interval
        conditions, params = ["ended IS NOT NULL"], []
        if start is not None:  # a row is written when its run ends: never before its start
            conditions += ["started >= ?", "ts >= ?", "date >= ?"]
            params += [start, start, start.astimezone(UTC).date()]
        if end is not None:
            conditions.append("started < ?")
            params.append(end)
        found = store.rows(
            f"""
            SELECT run_id, project, agent, epoch_us(coalesce(queued, started)) / 1e6,
                   started, ended,
                   (epoch_us(ended) - epoch_us(started)) / 1e6 - coalesce(paused_seconds, 0),
                   cpu_user_seconds + cpu_system_seconds, max_rss_bytes, host
            FROM runs WHERE {" AND ".join(conditions)} ORDER BY 4, 1
            """,
            params,
        )
        series: dict[str, tuple[list[float], list[int], list[int]]] = {}
        if found:
            first = min(row[4] for row in found)
            last = max(row[5] for row in found) + timedelta(seconds=2 * interval)
            # the runs' processes by a semi join: list_contains would scan the whole list of
            # run ids for every process row (seconds at 17,000 runs)
            for run_id, cores, rss, ticks in store.rows(
                """
                WITH p AS (
                    SELECT DISTINCT host, pid, start_time, run_id FROM processes
                    WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
                ),
                t AS (
                    SELECT p.run_id, s.ts, sum(s.cpu_cores) AS cores, sum(s.rss_bytes) AS rss
                    FROM samples s JOIN p
                      ON s.host = p.host AND s.pid = p.pid AND s.start_time = p.start_time
                    WHERE s.ts >= ? AND s.ts <= ? AND s.date >= ? AND s.date <= ?
                    GROUP BY p.run_id, s.ts
                    HAVING NOT (bool_and(coalesce(s.state = 'stopped', false))
                                AND coalesce(sum(s.cpu_cores), 0) = 0)
                )
                SELECT run_id, list(cores ORDER BY ts), list(rss ORDER BY ts),
                       list(epoch_us(ts) ORDER BY ts)
                FROM t GROUP BY run_id
                """,
                [[row[0] for row in found], first, last, first.astimezone(UTC).date(),
                 last.astimezone(UTC).date()],
            ):  # fmt: skip
                series[run_id] = ([float(c or 0.0) for c in cores],
                                  [int(m or 0) for m in rss], [int(t) for t in ticks])  # fmt: skip
        machines = {
            str(host): int(cores)
            for host, cores in store.rows("SELECT host, max(cores) FROM system GROUP BY host")
            if cores is not None
        }
    return demand_from_rows(found, series, machines, interval)


def demand_from_rows(
    found: Sequence[tuple[Any, ...]],
    series: Mapping[str, tuple[Sequence[float], Sequence[int], Sequence[int]]],
    machines: Mapping[str, int],
    interval: float,
) -> Demand:
    """:class:`Demand` from what :func:`demand_from_store` reads (or the Spark engine's
    :func:`~devloop.analytics.spark.run_demand_spark`): ``found``, the runs in trigger order as
    ``(run_id, project, agent, queued_at, started, ended, duration_seconds, cpu_seconds,
    max_rss_bytes, host)``, ``duration_seconds`` less the seconds it was paused; ``series``,
    per run id the ticks that saw it: its cores and memory at each, and the tick's time (epoch
    microseconds); ``machines``, each host's core count; ``interval``, the tick interval
    (seconds). Each run's series is laid out on its own clock (:func:`own_clock`)."""
    machine = max(machines.values(), default=None)
    runs = []
    for run_id, project, agent, queued, started, ended, duration, cpu, max_rss, host in found:
        cores, memory, last = own_clock(
            started.timestamp(), ended.timestamp(), duration, cpu, max_rss,
            series.get(run_id, ((), (), ())), interval,
        )  # fmt: skip
        runs.append(RunDemand(run_id, project, agent, float(queued), cores, memory, host, last))
    return Demand(tuple(runs), interval, machine, dict(machines))


def own_clock(
    started: float,
    ended: float,
    duration: float,
    cpu: float | None,
    max_rss: int | None,
    ticks: tuple[Sequence[float], Sequence[int], Sequence[int]],
    interval: float,
) -> tuple[list[float], list[int], float]:
    """A run's ticks as samples of its own clock: ``(cores, memory, last)`` of a
    :class:`RunDemand`.

    The collector's ticks do not fall where the run starts: the first tick that sees it
    counts the CPU of only the part of an interval since it began, and the CPU after the last
    tick comes in a row stamped after its end (the launcher's count less the ticks', or here
    ``cpu`` less the ticks' when no such row was written). So the run's time from ``started``
    is cut into pieces, each tick's work in the time since the tick before (at most an
    interval: ticks left out while it was paused take no time) and the rest up to ``ended``
    (at most ``duration``, the run's time less its pauses), and those pieces are cut again
    into intervals from the start, the last one the part ``last`` of an interval. Spread
    evenly, short of the ticks: a run seen by no tick did its ``cpu`` evenly over ``duration``.
    A sample's memory is the largest its pieces saw (one none saw: the sample's before it, else
    the first seen, else ``max_rss``).

    A run with ticks away from its time (a process that outlived it, tagged with its id by
    hand) keeps the ticks as they fell, whole intervals, padded to its duration with the CPU
    they did not count."""
    cores, rss, stamps = ticks
    if any(not started - interval <= stamp / 1e6 <= ended + 2 * interval for stamp in stamps):
        return _ticks_as_they_fell(duration, cpu, max_rss, cores, rss, interval)
    pieces: list[tuple[float, float, int | None]] = []  # seconds, CPU-seconds, memory
    previous, axis, counted, after = started, 0.0, 0.0, 0.0
    for used, tick_memory, stamp in zip(cores, rss, stamps, strict=True):
        work = used * interval
        counted += work
        at = stamp / 1e6
        if at > ended:  # the row of the CPU after the last tick, or a process outliving it
            after += work
            continue
        length = min(max(at - previous, 0.0), interval)
        previous = max(previous, at)
        axis += length
        pieces.append((length, work, tick_memory or None))
    rest = max(min(ended - previous, max(duration, 0.0) - axis), 0.0)
    unseen = max((cpu or 0.0) - counted, 0.0)
    if rest > 0.0 or after or unseen or not pieces:
        pieces.append((rest, after + unseen, None))
    total = (axis + rest) / interval
    n = max(1, math.ceil(total - 1e-6))
    last = min(max(total - (n - 1), _SHORTEST), 1.0)
    works = [0.0] * n
    seen: list[int | None] = [None] * n
    x = 0.0  # where the piece starts, intervals from the start
    for length, done, memory in pieces:
        span = length / interval
        first = min(int(x), n - 1)
        if span <= 0.0:
            works[first] += done
            touched = [first]
        else:
            touched = list(range(first, min(max(math.ceil(x + span - 1e-9), first + 1), n)))
            for j in touched:
                overlap = min(x + span, j + 1.0) - max(x, float(j))
                if j == touched[-1]:  # what is left (and what lies past the end)
                    overlap = x + span - max(x, float(j))
                works[j] += done * max(overlap, 0.0) / span
        if memory is not None:
            for j in touched:
                seen[j] = max(seen[j] or 0, memory)
        x += span
    fallback = next((m for m in seen if m is not None), int(max_rss or 0))
    memories = []
    for found_memory in seen:
        fallback = found_memory if found_memory is not None else fallback
        memories.append(fallback)
    return [w / interval for w in works], memories, last


def _ticks_as_they_fell(
    duration: float,
    cpu: float | None,
    max_rss: int | None,
    seen_cores: Sequence[float],
    seen_memory: Sequence[int],
    interval: float,
) -> tuple[list[float], list[int], float]:
    """The ticks as samples, whole intervals, padded at the end to the run's ``duration`` in
    whole intervals (at least one) with the CPU the kernel counted and the ticks did not, and
    their last memory (else ``max_rss``)."""
    cores, memory = list(seen_cores), list(seen_memory)
    wanted = max(1, round(max(duration, 0.0) / interval))
    if len(cores) < wanted:
        missing = wanted - len(cores)
        unseen = max((cpu or 0.0) - sum(cores) * interval, 0.0)
        last_memory = memory[-1] if memory else int(max_rss or 0)
        cores = cores + [unseen / (missing * interval)] * missing
        memory = memory + [last_memory] * missing
    return cores, memory, 1.0
