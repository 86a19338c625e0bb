"""Walk-forward backtest in run terms: fit on blocks 1..k, replay the runs of block k+1.

Blocks are UTC-hour-aligned days from the start of the history (hours when it spans under two
days). For each replayed block, the runs triggered in it are replayed (:mod:`.replay`) under the
limit fitted on the blocks before it (the suggested side) and under the limit in force now (the
current side), each entity's runs alone under its own limit (:func:`~.objective.alone`). Both
sides cover the same runs: only folds where the entity had a fit count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devloop.tune.objective import SLOWDOWN_TOLERANCE, SlowdownStats, slowdowns

if TYPE_CHECKING:
    from devloop.tune.history import History
    from devloop.tune.replay import ReplayedRun


@dataclass
class Side:
    """One side of the backtest (current or suggested limits): the replayed runs, and the CPU
    and memory reserved (the limits, averaged over the replayed hours)."""

    runs: list[ReplayedRun] = field(default_factory=list)
    cpu_hours: float = 0.0
    memory_hours: float = 0.0
    hours: float = 0.0

    def add(
        self, runs: list[ReplayedRun], cpu: float | None, memory: int | None, hours: float
    ) -> None:
        self.runs.extend(runs)
        self.hours += hours
        self.cpu_hours += (cpu if cpu is not None else math.nan) * hours
        self.memory_hours += (memory if memory is not None else math.nan) * hours

    @property
    def stats(self) -> SlowdownStats | None:
        return slowdowns(self.runs)

    def to_json(self) -> dict[str, Any]:
        stats = self.stats
        found: dict[str, Any] = (
            stats.to_json()
            if stats is not None
            else {"runs": 0, "p50": None, "p95": None, "max": None, "slowed_2x": 0,
                  "failed_memory": 0, "not_finished": 0}
        )  # fmt: skip
        cpu = self.cpu_hours / self.hours if self.hours else None
        memory = self.memory_hours / self.hours if self.hours else None
        found["reserved_cpu_percent"] = None if cpu is None or math.isnan(cpu) else round(cpu, 2)
        found["reserved_memory_bytes"] = (
            None if memory is None or math.isnan(memory) else round(memory)
        )
        return found


@dataclass
class Fold:
    """One replayed block: the limits fitted before it and the runs triggered in it."""

    start_hour: int
    hours: int
    cpu: float
    memory_bytes: int
    runs: int


@dataclass
class EntityBacktest:
    """The backtest of one project or agent; ``reason`` says why it has no folds."""

    current: Side
    suggested: Side
    folds: list[Fold]
    reason: str | None = None

    def worse(self, max_slowdown: float) -> str | None:
        """Why the suggested side does worse than the current one, None when it does not:
        more runs failing on memory, or a p95 slowdown over both the current one and the
        target (a suggestion within the target is not worse for being slower than a limit
        that never binds)."""
        now, then = self.current.stats, self.suggested.stats
        if now is None or then is None:
            return None
        if then.failed_memory > now.failed_memory:
            return (
                f"{then.failed_memory} runs would fail on memory under the suggestion against "
                f"{now.failed_memory} under the current limit"
            )
        if then.p95 > max(now.p95, max_slowdown) + SLOWDOWN_TOLERANCE:
            return (
                f"its backtested p95 slowdown would be {_x(then.p95)} against {_x(now.p95)} "
                "under the current limit"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current.to_json(),
            "suggested": self.suggested.to_json(),
            "folds": [
                {
                    "start_hour": f.start_hour,
                    "hours": f.hours,
                    "cpu_percent": f.cpu,
                    "memory_bytes": f.memory_bytes,
                    "runs": f.runs,
                }
                for f in self.folds
            ],  # fmt: skip
            "reason": self.reason,
        }


def _x(value: float) -> str:
    return "never finishing" if math.isinf(value) else f"{value:.2f}x"


def blocks(history: History) -> tuple[int, int]:
    """(hours per block, number of blocks): days from two days of history, else hours."""
    unit = 24 if history.n_hours >= 48 else 1
    return unit, max(1, math.ceil(history.n_hours / unit))


__all__ = ["EntityBacktest", "Fold", "Side", "blocks"]
