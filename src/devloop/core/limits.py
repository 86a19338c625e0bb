"""The limits in force at each check: the profile of the moment and, under ``dynamic``, the
guide's rebalancing of the projects' shares on their recent usage.

:class:`LimitsInForce` is pure like the policy: the time (``now``, seconds since the epoch: the
profile's time windows are read in local time) and the usage are given; it returns the
``limit-change`` actions and the new allocation, and the caller records them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

from devloop.config.allocation import Allocation, UsagePoint, allocate, rebalance, select_profile
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

    def observe(self, now: float, usage: Usage) -> None:
        """Add ``usage`` at ``now`` to the history the ``dynamic`` rule judges, as
        :meth:`update` does first; alone, for a caller that knows no project is over
        ``usageThreshold`` x its share at ``now`` (the rule can move nothing there)."""
        base = self.base
        if base.strategy != "dynamic":
            return
        keep = 2 * self.workspace.config.resource_sharing.adaptation.adjustment_frequency
        cores: dict[str, float] = dict.fromkeys(base.projects, 0.0)
        memory: dict[str, int] = dict.fromkeys(base.projects, 0)
        for agent in usage.agents.values():
            if agent.project in cores:
                cores[agent.project] += agent.cores
                memory[agent.project] += agent.memory_bytes
        for name in base.projects:
            history = self._history.setdefault(name, deque())
            history.append(UsagePoint(now, cores[name] / usage.cores * 100, memory[name]))
            while history and history[0].t < now - keep:
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
        projects, changes = rebalance(
            self.allocation.projects, self._history, adaptation,
            base=self.base.projects, pool=base.pool,
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
            allocations.append((self.allocation, "rebalance"))
        return LimitChange(actions, allocations)
