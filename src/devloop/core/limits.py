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

from devloop.config.allocation import Allocation, UsagePoint, allocate, rebalance
from devloop.config.models import Workspace
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

    def update(self, now: float, usage: Usage | None) -> LimitChange:
        """The limits at ``now``: a profile switch, then (``dynamic``) a rebalance on the usage
        of the last ``adjustmentFrequency`` seconds, whose window starts afresh after a move."""
        actions: list[Action] = []
        allocations: list[tuple[Allocation, str]] = []
        base = allocate(self.workspace, profile=self.profile, at=datetime.fromtimestamp(now).time())
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
        for name in base.projects:
            history = self._history.setdefault(name, deque())
            agents = [a for a in usage.agents.values() if a.project == name]
            cpu = sum(a.cores for a in agents) / usage.cores * 100
            history.append(UsagePoint(now, cpu, sum(a.memory_bytes for a in agents)))
            while history and history[0].t < now - 2 * adaptation.adjustment_frequency:
                history.popleft()
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
