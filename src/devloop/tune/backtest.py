"""Walk-forward backtest: fit on blocks 1..k, replay block k+1, for k = 1..n-1.

Blocks are UTC-hour-aligned days from the start of the history (hours when it spans under two
days). For each replayed block, the limits fitted on the blocks before it (the suggested side)
and the limits that were in force (the current side, from the store's ``limits``) are compared
with what was used, tick by tick:

* would pause: ticks where CPU was over the CPU limit or rss over the memory limit;
* slack: allocated minus used, as a share of the allocation (``100 x (sum(limit) - sum(used))
  / sum(limit)`` over the ticks), and as the average amount;
* changes per day: how often the limits changed (the store's limit changes; for the suggested
  side, folds whose fitted limits differ from the previous fold's).

Only folds where the entity had a fit count, for both sides, so both cover the same ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from devloop.tune.history import Key
from devloop.tune.params import CPU_BIN, MEMORY_BIN

if TYPE_CHECKING:
    from devloop.tune.history import History


@dataclass
class Side:
    """One side of the backtest (current or suggested limits) over the replayed ticks."""

    ticks: float = 0.0
    would_pause: float = 0.0
    cpu_over: float = 0.0
    memory_over: float = 0.0
    cpu_used: float = 0.0
    cpu_allocated: float = 0.0
    memory_used: float = 0.0
    memory_allocated: float = 0.0
    changes: int = 0
    days: float = 0.0

    def add(self, other: Side) -> None:
        for name in (
            "ticks",
            "would_pause",
            "cpu_over",
            "memory_over",
            "cpu_used",
            "cpu_allocated",
            "memory_used",
            "memory_allocated",
            "changes",
            "days",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        def share(part: float, whole: float) -> float | None:
            return round(100.0 * part / whole, 4) if whole > 0 else None

        ticks = self.ticks
        return {
            "ticks": int(ticks),
            "would_pause_ticks": int(self.would_pause),
            "would_pause_percent": share(self.would_pause, ticks),
            "cpu_over_percent": share(self.cpu_over, ticks),
            "memory_over_percent": share(self.memory_over, ticks),
            "cpu_slack_percent": share(self.cpu_allocated - self.cpu_used, self.cpu_allocated),
            "cpu_slack_avg_percent": round((self.cpu_allocated - self.cpu_used) / ticks, 4)
            if ticks
            else None,
            "memory_slack_percent": share(
                self.memory_allocated - self.memory_used, self.memory_allocated
            ),
            "memory_slack_avg_bytes": round((self.memory_allocated - self.memory_used) / ticks)
            if ticks
            else None,
            "changes_per_day": round(self.changes / self.days, 4) if self.days else None,
        }


@dataclass
class Fold:
    """One replayed block: the limits fitted before it and how they fared."""

    start_hour: int
    hours: int
    cpu: float
    memory_bytes: int
    side: Side = field(default_factory=Side)


@dataclass
class EntityBacktest:
    """The backtest of one project or agent."""

    current: Side
    suggested: Side
    folds: list[Fold]


def blocks(history: History) -> tuple[int, int]:
    """(hours per block, number of blocks): days from two days of history, else hours."""
    unit = 24 if history.n_hours >= 48 else 1
    return unit, max(1, math.ceil(history.n_hours / unit))


def replay(history: History, folds: dict[Key, list[Fold]]) -> None:
    """Fill each fold's suggested side from the ticks of its block: over-limit counts from the
    joint CPU/memory bins (exact, the fitted limits being on the bins' grid), use from the
    hourly sums."""
    for key, entity_folds in folds.items():
        entity = history.entities[key]
        stats = entity.stats
        for fold in entity_folds:
            hours = slice(fold.start_hour, fold.start_hour + fold.hours)
            inside = (entity.joint_hour >= fold.start_hour) & (
                entity.joint_hour < fold.start_hour + fold.hours
            )
            cpu_over = entity.joint_cpu[inside] > round(fold.cpu / CPU_BIN)
            memory_over = entity.joint_memory[inside] > fold.memory_bytes // MEMORY_BIN
            counts = entity.joint_count[inside]
            side = fold.side
            side.ticks = float(stats["ticks"][hours].sum())
            side.cpu_over = float(counts[cpu_over].sum())
            side.memory_over = float(counts[memory_over].sum())
            side.would_pause = float(counts[cpu_over | memory_over].sum())
            side.cpu_used = float(stats["cpu_sum"][hours].sum())
            side.memory_used = float(stats["rss_sum"][hours].sum())
            side.cpu_allocated = fold.cpu * side.ticks
            side.memory_allocated = fold.memory_bytes * side.ticks


def current_side(history: History, key: Key, entity_folds: list[Fold]) -> Side:
    """What the limits in force did over the same blocks (from the hourly figures)."""
    stats = history.entities[key].stats
    side = Side()
    for fold in entity_folds:
        hours = slice(fold.start_hour, fold.start_hour + fold.hours)
        side.ticks += float(stats["ticks"][hours].sum())
        side.would_pause += float(stats["any_over"][hours].sum())
        side.cpu_over += float(stats["cpu_over"][hours].sum())
        side.memory_over += float(stats["mem_over"][hours].sum())
        side.cpu_used += float(stats["cpu_sum"][hours].sum())
        side.memory_used += float(stats["rss_sum"][hours].sum())
        side.cpu_allocated += float(stats["cpu_limit_sum"][hours].sum())
        side.memory_allocated += float(stats["mem_limit_sum"][hours].sum())
        side.days += fold.hours / 24
        begin = history.hour_start(fold.start_hour)
        end = begin + timedelta(hours=fold.hours)
        side.changes += sum(1 for ts in history.entities[key].limit_changes if begin <= ts < end)
    return side


def suggested_side(entity_folds: list[Fold]) -> Side:
    """The folds' suggested sides summed, with changes between consecutive folds."""
    side = Side()
    previous: tuple[float, int] | None = None
    for fold in entity_folds:
        side.add(fold.side)
        side.days += fold.hours / 24
        limits = (round(fold.cpu, 1), fold.memory_bytes // (1024 * 1024))
        if previous is not None and limits != previous:
            side.changes += 1
        previous = limits
    return side


__all__ = ["EntityBacktest", "Fold", "Side", "blocks", "current_side", "replay", "suggested_side"]
