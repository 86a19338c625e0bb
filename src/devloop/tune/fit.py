"""Fitting one entity's limits from its hours: pure functions of :class:`EntityHistory` arrays.

* CPU: the time-decayed percentile of the per-tick CPU (censored ticks raised), each tick
  weighted ``0.5 ** (age / half_life)`` with age taken at its hour's middle, read as the upper
  edge of the histogram bin where the weighted share reaches the percentile; times
  ``1 + cpu_margin``; at least ``min_cpu``.
* Memory: the peak (max rss) of every ``memory_window``, their ``memory_percentile`` (or the
  max), times ``1 + memory_margin``, and never below the highest observed peak; censored memory
  raises it by ``censor_raise``; at least ``min_memory``. A leak never raises a limit: with one,
  the suggestion is at most the current limit.
* Leak: on the hourly minimum rss (the floor the agent returns to), split where it drops by
  more than a fifth (a restart), the Theil-Sen slope and Kendall's tau of each stretch of at
  least six hours; a leak when the median slope is at least ``leak_mb_per_hour`` and the median
  tau at least ``leak_min_tau``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from devloop.tune.history import bin_upper
from devloop.tune.params import TuneParameters
from devloop.units import MIB

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from devloop.tune.history import EntityHistory, History

#: A drop of the hourly floor by more than this share is a restart (a new leak stretch).
RESTART_DROP = 0.2
LEAK_MIN_HOURS = 6


@dataclass(frozen=True)
class Fit:
    """Limits fitted on some hours of one entity; ``cpu``/``memory_bytes`` None when the
    history is too short (``reason`` says why)."""

    cpu: float | None
    memory_bytes: int | None
    ticks: int
    seconds: float
    censored_cpu: bool
    censored_memory: bool
    leak: bool
    reason: str | None = None


@dataclass(frozen=True)
class Leak:
    """A steady growth of an entity's memory floor."""

    mb_per_hour: float
    tau: float
    hours: int


def weights(
    history: History, reference: datetime, hours: npt.NDArray[np.int64], half_life: float
) -> npt.NDArray[np.float64]:
    """The decay weight of each hour (by its middle) seen from ``reference``."""
    import numpy as np

    ref = (reference - history.origin) / timedelta(hours=1)
    age_hours = np.maximum(ref - (hours.astype(np.float64) + 0.5), 0.0)
    result: npt.NDArray[np.float64] = 0.5 ** (age_hours * 3600.0 / half_life)
    return result


def weighted_percentile(
    bins: npt.NDArray[np.int64], counts: npt.NDArray[np.float64], q: float
) -> float | None:
    """The percentile ``q`` (0-100) of binned CPU values, as the bin's upper edge."""
    import numpy as np

    from devloop.analytics.stats import weighted_percentile as percentile

    found = percentile(bins, counts, q)
    return None if found is None else float(bin_upper(np.array([found], dtype=np.int64))[0])


def window_peaks(
    entity: EntityHistory, mask: npt.NDArray[np.bool_], window_hours: int
) -> npt.NDArray[np.float64]:
    """The rss peak of every window of ``window_hours`` (from the history's origin) that has
    ticks among the masked hours."""
    import numpy as np

    ticks = entity.stats["ticks"]
    peaks = np.where(mask & (ticks > 0), entity.stats["rss_max"], np.nan)
    n = len(peaks)
    padded = np.full(math.ceil(n / window_hours) * window_hours, np.nan)
    padded[:n] = peaks
    grouped = padded.reshape(-1, window_hours)
    has = ~np.all(np.isnan(grouped), axis=1)
    if not has.any():
        return np.zeros(0)
    result: npt.NDArray[np.float64] = np.nanmax(grouped[has], axis=1)
    return result


def find_leak(
    entity: EntityHistory, mask: npt.NDArray[np.bool_], params: TuneParameters
) -> Leak | None:
    """A leak in the masked hours, or None (see the module doc)."""
    import numpy as np

    from devloop.analytics.stats import theil_sen

    floor = entity.stats["rss_min"]
    hours = np.nonzero(mask & (entity.stats["ticks"] > 0) & ~np.isnan(floor))[0]
    if len(hours) < LEAK_MIN_HOURS:
        return None
    values = floor[hours]
    stretches: list[tuple[int, int]] = []
    begin = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] < (1 - RESTART_DROP) * values[i - 1]:
            if i - begin >= LEAK_MIN_HOURS:
                stretches.append((begin, i))
            begin = i
    if not stretches:
        return None
    slopes, taus, covered = [], [], 0
    for lo, hi in stretches:
        slope, tau = theil_sen(hours[lo:hi].astype(np.float64), values[lo:hi] / MIB)
        slopes.append(slope)
        taus.append(tau)
        covered += hi - lo
    slope, tau = float(np.median(slopes)), float(np.median(taus))
    if covered * 2 < len(values) or slope < params.leak_mb_per_hour or tau < params.leak_min_tau:
        return None
    return Leak(mb_per_hour=slope, tau=tau, hours=covered)


def fit(
    history: History,
    entity: EntityHistory,
    mask: npt.NDArray[np.bool_],
    reference: datetime,
    params: TuneParameters,
    *,
    current_memory: float | None = None,
    held_seconds: float = 0.0,
    runs: int = 0,
) -> Fit:
    """Suggested limits from the masked hours of ``entity``, decayed from ``reference``;
    ``runs``: how many of its recorded runs were triggered in those hours."""
    import numpy as np

    stats = entity.stats
    ticks = int(stats["ticks"][mask].sum())
    seconds = watched_seconds(history, entity, mask)
    censored_cpu, censored_memory = _censored(entity, mask, params, held_seconds)
    if not enough_history(seconds, ticks, runs, params):
        evidence = f"{runs} runs and {ticks} samples" if runs else f"{ticks} samples"
        needs = f"{params.min_runs} runs or {params.min_samples} samples"
        reason = (
            f"too little history: {evidence} over {seconds / 3600:.2g} h recorded (needs "
            f"{needs}, over {params.min_history / 3600:g} h)"
        )
        return Fit(None, None, ticks, seconds, censored_cpu, censored_memory, False, reason)
    chosen = mask[entity.hist_hour]
    hist_hours = entity.hist_hour[chosen]
    counts = entity.hist_count[chosen] * weights(history, reference, hist_hours, params.half_life)
    level = weighted_percentile(entity.hist_bin[chosen], counts, params.cpu_percentile) or 0.0
    cpu = min(100.0, max(level * (1 + params.cpu_margin), params.min_cpu))

    peaks = window_peaks(entity, mask, int(params.memory_window // 3600))
    observed = float(peaks.max()) if len(peaks) else 0.0
    if params.memory_percentile is None or len(peaks) == 0:
        statistic = observed
    else:
        statistic = float(np.percentile(peaks, params.memory_percentile))
    memory = max(statistic * (1 + params.memory_margin), observed)
    if censored_memory:
        memory *= 1 + params.censor_raise
    memory = math.ceil(max(memory, float(params.min_memory)) / MIB - 1e-9) * MIB
    leak = find_leak(entity, mask, params) is not None
    if leak and current_memory is not None:
        memory = min(memory, math.floor(current_memory / MIB) * MIB)
    return Fit(cpu, memory, ticks, seconds, censored_cpu, censored_memory, leak)


def _censored(
    entity: EntityHistory,
    mask: npt.NDArray[np.bool_],
    params: TuneParameters,
    held_seconds: float = 0.0,
) -> tuple[bool, bool]:
    """Demand hidden by the enforcement: a pause or throttle recorded (events over the entity,
    or seconds its runs were held), or ticks at a limit while one was enforced. Ticks near a
    limit when nothing was ever paused or throttled are not censoring: nothing held them."""
    stats = entity.stats
    ticks = stats["ticks"][mask].sum()
    if ticks <= 0:
        return False, False
    enforced = stats["paused"][mask].sum() > 0 or held_seconds > 0
    if not enforced:
        return False, False
    share = 100.0 / ticks
    memory = stats["cens_mem"][mask].sum() * share >= params.censor_flag_share
    return True, bool(memory)


def watched_seconds(history: History, entity: EntityHistory, mask: npt.NDArray[np.bool_]) -> float:
    """How long the recorder watched over the masked hours: its ticks (the ``system`` rows)
    times the interval. An agent that runs now and then has processes at a few of those
    ticks only; the span in which it could have run is the history. A store without
    ``system`` rows falls back on the entity's own ticks."""
    watched = float(history.system_ticks[mask].sum())
    return max(watched, float(entity.stats["ticks"][mask].sum())) * history.interval


def enough_history(seconds: float, ticks: int, runs: int, params: TuneParameters) -> bool:
    """At least ``min_history`` recorded, and either ``min_runs`` runs or ``min_samples``
    samples of the entity in it (runs are what the replay fits; samples what the percentile
    fallback fits)."""
    if seconds < params.min_history:
        return False
    return ticks >= params.min_samples or (runs > 0 and runs >= params.min_runs)


def confidence(seconds: float, ticks: int, params: TuneParameters, runs: int = 0) -> str:
    """``none`` under the minimum history (:func:`enough_history`), ``low`` under a day,
    ``medium`` under a week, ``high`` from a week of history."""
    if not enough_history(seconds, ticks, runs, params):
        return "none"
    if seconds < 86400:
        return "low"
    if seconds < 7 * 86400:
        return "medium"
    return "high"
