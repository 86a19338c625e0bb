"""The limits in force at each check: the profile of the moment and, under ``dynamic``, the
guide's rebalancing of the projects' shares on their recent usage.

:class:`LimitsInForce` is pure like the policy: the time (``now``, seconds since the epoch: the
profile's time windows are read in local time) and the usage are given; it returns the
``limit-change`` actions and the new allocation, and the caller records them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from devloop.config.allocation import (
    Allocation,
    Pool,
    UsagePoint,
    allocate,
    rebalance,
    select_profile,
)
from devloop.config.models import Adaptation, Workspace
from devloop.core.policy import MB, Action, Usage


@dataclass(frozen=True)
class LimitChange:
    """What one update changed: the actions to record, and each new allocation with why
    (``profile`` or ``rebalance``), for the ``limits`` table."""

    actions: list[Action]
    allocations: list[tuple[Allocation, str]]


class LimitsInForce:
    """The allocation of ``workspace`` under ``profile`` (None: the environment's or the time
    windows'), kept up to date by :meth:`update`."""

    def __init__(self, workspace: Workspace, profile: str | None) -> None:
        self.workspace = workspace
        self.profile = profile
        self.base: Allocation = allocate(workspace, profile=profile)
        self.allocation: Allocation = self.base
        self._history: dict[str, deque[UsagePoint]] = {}
        # the allocation of each profile in force so far (a pure function of the workspace and
        # the profile: asked at every check, built once)
        self._bases: dict[str | None, Allocation] = {self.base.profile: self.base}
        #: whether the time of day can switch the profile (none named, some with windows)
        self.timed = profile is None and workspace.config.resource_sharing.timed
        # after a rebalance that moved nothing: the allocation it judged, and the time before
        # which no rebalance can move anything under it (:meth:`_still_before`)
        self._still: tuple[Allocation, float] | None = None
        # the history the rule judges: two windows
        self._keep = 2 * workspace.config.resource_sharing.adaptation.adjustment_frequency

    def observe(self, now: float, usage: Usage) -> None:
        """Add ``usage`` at ``now`` to the history the ``dynamic`` rule judges, as
        :meth:`update` does first; alone, for a caller that knows no project is over
        ``usageThreshold`` x its share at ``now`` (the rule can move nothing there)."""
        agents = usage.agents.values()
        self.observe_rows(now, usage.cores, [(a.project, a.cores, a.memory_bytes) for a in agents])

    def observe_rows(
        self, now: float, machine_cores: int, rows: Iterable[tuple[str, float, int]]
    ) -> None:
        """:meth:`observe` with the agents' usage as (project, cores, memory) rows, in the
        order of the usage's agents (the sums are added in that order)."""
        base = self.base
        if base.strategy != "dynamic":
            return
        keep = self._keep
        cores: dict[str, float] = dict.fromkeys(base.projects, 0.0)
        memory: dict[str, int] = dict.fromkeys(base.projects, 0)
        for project, used, rss in rows:
            if project in cores:
                cores[project] += used
                memory[project] += rss
        histories = self._history
        for name in base.projects:
            history = histories.get(name)
            if history is None:
                history = histories[name] = deque()
            history.append(UsagePoint(now, cores[name] / machine_cores * 100, memory[name]))
            while history[0].t < now - keep:
                history.popleft()

    def _any_hungry(self, adaptation: Adaptation) -> bool:
        """Whether a project is hungry as :func:`rebalance` judges it: over the threshold x its
        allocation (CPU or memory) at every point of a window as long as the adjustment
        frequency. Without one the rule moves nothing, so it is not asked (it is exact)."""
        threshold, window = adaptation.usage_threshold, adaptation.adjustment_frequency
        for name, share in self.allocation.projects.items():
            history = self._history.get(name)
            if not history or history[-1].t - history[0].t < window:
                continue
            since = history[-1].t - window
            cpu, memory = threshold * share.cpu, threshold * share.memory_bytes
            hungry_cpu, hungry_memory = share.cpu > 0, share.memory_bytes > 0
            for point in reversed(history):
                if point.t < since:
                    break
                hungry_cpu = hungry_cpu and point.cpu > cpu
                hungry_memory = hungry_memory and point.memory_bytes > memory
                if not hungry_cpu and not hungry_memory:
                    break
            if hungry_cpu or hungry_memory:
                return True
        return False

    def _still_before(self, now: float, adaptation: Adaptation, pool: Pool) -> float:
        """After :func:`rebalance` moved nothing at ``now``: the time before which it cannot
        move anything while the allocation stays (``now`` or earlier when that is not sure).

        A move of a resource needs a hungry project (every point of its window over
        ``usageThreshold`` x its share) and either capacity of the pool left free or a donor
        (every point of its window under half its share, and its share over half its
        starting one). So a project is not hungry while its last point at or under the bar is
        in its window, nor before its history is a window long; a donor likewise with its
        last point at or over half its share. Those points are all in the history (it holds
        two windows), so the bound holds whatever usage comes next; the rule is asked again
        there. The comparisons are the rule's own."""
        window, threshold = adaptation.adjustment_frequency, adaptation.usage_threshold
        current, base = self.allocation.projects, self.base.projects
        until = math.inf
        for cpu in (True, False):
            hungry = donor = math.inf
            for name, alloc in current.items():
                have = alloc.cpu if cpu else float(alloc.memory_bytes)
                if have <= 0:
                    continue  # neither hungry nor a donor under this allocation
                history = self._history.get(name)
                if not history:
                    return now
                times = [p.t for p in history]
                used = [p.cpu for p in history] if cpu else [float(p.memory_bytes) for p in history]
                hungry = min(hungry, _last_or_first(times, [u <= threshold * have for u in used]))
                start = base.get(name, alloc)
                most = have - 0.5 * (start.cpu if cpu else float(start.memory_bytes))
                if (most if cpu else math.floor(most)) > 0:
                    donor = min(donor, _last_or_first(times, [u >= 0.5 * have for u in used]))
            total = math.fsum(a.cpu if cpu else float(a.memory_bytes) for a in current.values())
            free = max((pool.cpu if cpu else float(pool.memory_bytes)) - total, 0.0)
            given = hungry if (free if cpu else math.floor(free)) > 0 else max(hungry, donor)
            # a margin under the bound: a time as exact as the rule's comparisons
            until = min(until, given + window - 1e-6)
        return until

    def _base_at(self, now: float) -> Allocation:
        if not self.timed:  # no time window: the profile of the start holds
            return self._bases[self.base.profile]
        at = datetime.fromtimestamp(now).time()
        name = select_profile(self.workspace.config, profile=self.profile, at=at)[0]
        base = self._bases.get(name)
        if base is None:
            base = self._bases[name] = allocate(self.workspace, profile=self.profile, at=at)
        return base

    def update(self, now: float, usage: Usage | None) -> LimitChange:
        """The limits at ``now``: a profile switch, then (``dynamic``) a rebalance on the usage
        of the last ``adjustmentFrequency`` seconds, whose window starts afresh after a move."""
        actions: list[Action] = []
        allocations: list[tuple[Allocation, str]] = []
        base = self._base_at(now)
        if base.profile != self.base.profile or base.pool != self.base.pool:
            actions.append(
                Action(
                    "limit-change",
                    "workspace",
                    None,
                    None,
                    message=f"profile {self.base.profile or 'base'} -> "
                    f"{base.profile or 'base'}: pool {base.pool.cpu:g}% / "
                    f"{base.pool.memory_bytes / MB:.1f}MB",
                )  # fmt: skip
            )
            self.base = self.allocation = base
            allocations.append((base, "profile"))
        if base.strategy != "dynamic" or usage is None:
            return LimitChange(actions, allocations)
        adaptation = self.workspace.config.resource_sharing.adaptation
        self.observe(now, usage)
        if not adaptation.enabled or not self._any_hungry(adaptation):
            return LimitChange(actions, allocations)  # the rule moves nothing (it is exact)
        still = self._still
        if still is not None and still[0] is self.allocation and now < still[1]:
            return LimitChange(actions, allocations)  # nothing can move yet (it is exact)
        projects, changes = rebalance(
            self.allocation.projects, self._history, adaptation,
            base=self.base.projects, pool=base.pool,
        )  # fmt: skip
        if not changes:
            self._still = (self.allocation, self._still_before(now, adaptation, base.pool))
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
            allocations.append((self.allocation, "rebalance"))
        return LimitChange(actions, allocations)


def _last_or_first(times: list[float], marked: list[bool]) -> float:
    """The time of the last marked point (one that bars a project from hunger, or from
    giving), or of the first point when none is (a window must be that long)."""
    for t, flag in zip(reversed(times), reversed(marked), strict=True):
        if flag:
            return t
    return times[0]
