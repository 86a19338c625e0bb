"""Every parameter of autotune, with its default (docs/autotune.md explains each)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from devloop.errors import UsageError
from devloop.units import MIB

#: CPU percent is binned in steps of this many percentage points (bin k holds (k-1)/10, k/10]):
#: a percentile read as its bin's upper edge is at most 0.1 point high, never low, and a
#: limit on the 0.1 grid splits the bins exactly, so the backtest counts from bins are exact.
CPU_BIN = 0.1
#: Memory is binned per MiB (bin k holds (k-1, k] MiB), exact for limits in whole MiB.
MEMORY_BIN = MIB


@dataclass(frozen=True)
class TuneParameters:
    """How suggestions are made; CPU in percent of the machine, memory in bytes, times in s."""

    cpu_percentile: float = 95.0
    half_life: float = 24 * 3600.0
    cpu_margin: float = 0.15
    memory_window: float = 3600.0
    #: A percentile of the window peaks (0-100), or None for their maximum.
    memory_percentile: float | None = 99.0
    memory_margin: float = 0.15
    min_cpu: float = 1.0
    min_memory: int = 64 * MIB
    min_history: float = 3600.0
    min_samples: int = 100
    #: Fewer recorded runs than this (and fewer than ``min_samples`` samples): no suggestion.
    min_runs: int = 5
    #: A tick is censored when usage is within [censor_at x limit, limit x 1.02], or its
    #: project/agent was paused or throttled; censored ticks count as censor_raise above the
    #: limit in the CPU percentile, and raise the memory suggestion by as much.
    censor_at: float = 0.95
    censor_raise: float = 0.25
    #: Censoring is flagged from this share of ticks (percent), or from any paused tick.
    censor_flag_share: float = 0.5
    leak_mb_per_hour: float = 5.0
    leak_min_tau: float = 0.5
    #: Share of the machine's memory a suggested pool may take.
    machine_memory_share: float = 0.75
    #: The target: the decayed p95 of a project's or agent's replayed run slowdowns.
    max_slowdown: float = 1.10
    #: The largest pool (CPU % of the machine) a patch may set: the machine less a headroom
    #: for the person at the keyboard.
    max_pool: float = 90.0

    def __post_init__(self) -> None:
        checks = [
            ("cpu_percentile", 0 < self.cpu_percentile <= 100, "from 0 (excluded) to 100"),
            ("half_life", self.half_life > 0, "above 0"),
            ("cpu_margin", 0 <= self.cpu_margin <= 10, "from 0 to 10"),
            (
                "memory_window",
                self.memory_window >= 3600 and self.memory_window % 3600 == 0,
                "a whole number of hours",
            ),
            (
                "memory_percentile",
                self.memory_percentile is None or 0 < self.memory_percentile <= 100,
                "from 0 (excluded) to 100, or max",
            ),
            ("memory_margin", 0 <= self.memory_margin <= 10, "from 0 to 10"),
            ("min_cpu", 0 <= self.min_cpu <= 100, "from 0 to 100"),
            ("min_memory", self.min_memory >= 0, "at least 0"),
            ("min_runs", self.min_runs >= 1, "at least 1"),
            ("censor_at", 0 < self.censor_at <= 1, "from 0 (excluded) to 1"),
            ("censor_raise", self.censor_raise >= 0, "at least 0"),
            ("leak_mb_per_hour", self.leak_mb_per_hour > 0, "above 0"),
            ("machine_memory_share", 0 < self.machine_memory_share <= 1, "from 0 to 1"),
            ("max_slowdown", self.max_slowdown >= 1, "at least 1"),
            ("max_pool", 0 < self.max_pool <= 100, "from 0 (excluded) to 100"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise UsageError(f"{name} must be {what}, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        """The parameters as suggestions.json records them."""
        return {**asdict(self), "cpu_bin_percent": CPU_BIN, "memory_bin_bytes": MEMORY_BIN}
