"""A time-of-day profile learned from the recorded daily pattern (issue 14).

The recorded runs say, hour of the day by hour of the day (local time, as the runtime reads
profile windows), how much of the pool the projects' runs could have used at most under the
suggested limits: at each tick, each project's runs' cores up to its limit, summed (under
limits scaled into a smaller pool, as ``custom`` and ``dynamic`` scale them, what keeps every
project's scaled limit over its own use). An hour of the day is *quiet* when that peak stayed
under half the suggested pool on every recorded day. A profile ``quiet`` for those hours
(``resource_sharing.profiles.quiet``, its ``times`` the quiet hours as windows) with the pool
cut to their peak (at least ``min_cpu`` per project) reserves less for the agents there.

It is a candidate only: autotune replays every recorded run under it with all the others and
suggests it when no project's runs fare worse (``suggest.py``). It is learned when every hour of
the day was recorded on at least :data:`MIN_DAYS` days, and not at all for a workspace with
time-of-day profiles of its own. The evaluation is in-sample: a run at a quiet hour the history
never saw one in is held to the quiet pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devloop.tune.history import History
    from devloop.tune.replay import RunDemand

NAME = "quiet"
#: Every hour of the day recorded on at least this many days before a pattern is learned.
MIN_DAYS = 2
#: An hour is quiet when its peak stays at most this share of the suggested pool.
QUIET_SHARE = 0.5
#: Fewer quiet hours than this are not worth a profile.
MIN_QUIET_HOURS = 3


@dataclass
class LearnedProfile:
    """The profile learned, and whether the replay says to suggest it (``why`` says why not,
    or why there is no candidate when ``hours`` is empty)."""

    cpu: float = 0.0  # the profile's pool, percent of the machine
    hours: tuple[int, ...] = ()  # the quiet hours of the day (local time)
    peaks: tuple[float, ...] = ()  # per hour of the day: the pool its runs could use, percent
    days: tuple[int, ...] = ()  # per hour of the day: the days recorded
    suggested: bool = False
    why: str = ""
    compared: dict[str, Any] = field(default_factory=dict)
    reserved_cpu: float | None = None  # the pool averaged over the day, with the profile
    #: per day after the first two: the profile learned before it, its runs with and without
    walk_forward: list[dict[str, Any]] = field(default_factory=list)

    @property
    def times(self) -> list[str]:
        return windows(self.hours)

    def to_json(self) -> dict[str, Any]:
        if not self.hours:
            return {"name": NAME, "suggested": False, "why": self.why}
        return {
            "name": NAME,
            "times": self.times,
            "cpu_percent": self.cpu,
            "quiet_hours": list(self.hours),
            "peak_percent_by_hour": [round(p, 2) for p in self.peaks],
            "days_by_hour": list(self.days),
            "reserved_cpu_percent": self.reserved_cpu,
            "suggested": self.suggested,
            "why": self.why,
            "compared": self.compared,
            "walk_forward": self.walk_forward,
        }


def windows(hours: Sequence[int]) -> list[str]:
    """The hours of the day as ``HH:MM-HH:MM`` windows, consecutive hours merged (across
    midnight too)."""
    chosen = set(hours)
    if len(chosen) == 24:
        return ["00:00-00:00"]
    out = []
    for hour in sorted(chosen):
        if (hour - 1) % 24 in chosen:
            continue  # inside a window that starts earlier
        end = hour
        while (end + 1) % 24 in chosen:
            end = (end + 1) % 24
        out.append(f"{hour:02d}:00-{(end + 1) % 24:02d}:00")
    return out


@dataclass(frozen=True)
class Pattern:
    """The runs' daily pattern, minute by minute of the history: ``local_hour`` the hour of the
    day of each minute (local time), ``peaks`` the largest pool any tick of it could use
    (percent), ``recorded`` whether each hour of the history holds collector ticks."""

    local_hour: Any
    peaks: Any
    recorded: tuple[bool, ...]


def daily_pattern(
    runs: Sequence[RunDemand],
    history: History,
    *,
    interval: float,
    cores: int,
    host_cores: Mapping[str, int],
    limits: Mapping[str, float],
    scaled: bool,
) -> Pattern:
    """The pattern :func:`learn` reads, computed once for the whole history. ``limits``: each
    project's CPU limit (percent of the machine) under the suggested pool; ``scaled``: whether
    a smaller pool scales the limits in proportion (``custom``, ``dynamic``), not only caps
    them (``overcommitCpu``)."""
    import numpy as np

    origin = history.origin.timestamp()
    minutes = history.n_hours * 60
    local_hour = np.array(
        [datetime.fromtimestamp(origin + 60 * m + 30).hour for m in range(minutes)], dtype=np.int64
    )
    peaks = _minute_peaks(runs, origin, minutes, interval=interval, cores=cores,
                          host_cores=host_cores, limits=limits, scaled=scaled)  # fmt: skip
    recorded = tuple(bool(history.system_ticks[hour] > 0) for hour in range(history.n_hours))
    return Pattern(local_hour, peaks, recorded)


def learn(
    pattern: Pattern, *, pool_cpu: float, floor: float, until: int | None = None
) -> LearnedProfile:
    """The quiet profile the daily pattern suggests under the pool ``pool_cpu`` (see the
    module doc); ``floor``: the least pool; ``until``: from the history's first ``until``
    hours only (the walk-forward's)."""
    import numpy as np

    seen = len(pattern.recorded) if until is None else min(until, len(pattern.recorded))
    days = [0] * 24
    for hour in range(seen):
        if pattern.recorded[hour]:
            days[int(pattern.local_hour[hour * 60 + 30])] += 1
    found = LearnedProfile(days=tuple(days))
    if min(days) < MIN_DAYS:
        found.why = (
            f"too little history to learn a daily pattern (every hour of the day recorded on "
            f"{MIN_DAYS} days; the least recorded has {min(days)})"
        )
        return found
    peaks = np.zeros(24)
    np.maximum.at(peaks, pattern.local_hour[: seen * 60], pattern.peaks[: seen * 60])
    found.peaks = tuple(float(p) for p in peaks)
    quiet = tuple(h for h in range(24) if peaks[h] <= QUIET_SHARE * pool_cpu + 1e-9)
    if len(quiet) < MIN_QUIET_HOURS or len(quiet) == 24:
        found.why = (
            f"no daily pattern: {len(quiet)} hours of the day whose runs use at most "
            f"{QUIET_SHARE:.0%} of the pool"
        )
        return found
    found.hours = quiet
    found.cpu = float(max(math.ceil(max(peaks[h] for h in quiet) - 1e-9), math.ceil(floor)))
    found.reserved_cpu = round((found.cpu * len(quiet) + pool_cpu * (24 - len(quiet))) / 24, 2)
    return found


def _minute_peaks(
    runs: Sequence[RunDemand],
    origin: float,
    minutes: int,
    *,
    interval: float,
    cores: int,
    host_cores: Mapping[str, int],
    limits: Mapping[str, float],
    scaled: bool,
) -> Any:
    """Per minute of the history, the largest pool the runs of any of its ticks could use
    (percent): each project's use up to its limit, summed per host; under ``scaled``, also
    what keeps each project's scaled limit over its use."""
    import numpy as np

    peaks = np.zeros(minutes)
    projects = sorted(limits)
    kept = [run for run in runs if run.project in limits and len(run.cores)]
    if not kept or not minutes:
        return peaks
    index = {name: i for i, name in enumerate(projects)}
    host_index = {host: i for i, host in enumerate(sorted({run.host for run in kept}))}
    ticks = np.concatenate(
        [round((run.queued_at - origin) / interval) + np.arange(len(run.cores)) for run in kept]
    )
    percent = np.concatenate(
        [np.asarray(run.cores, dtype=np.float64) * 100 / host_cores.get(run.host, cores)
         for run in kept]
    )  # fmt: skip
    sizes = [len(run.cores) for run in kept]
    project = np.repeat([index[run.project] for run in kept], sizes)
    host = np.repeat([host_index[run.host] for run in kept], sizes)
    inside = (ticks >= 0) & (ticks * interval < minutes * 60)
    ticks, percent, project, host = ticks[inside], percent[inside], project[inside], host[inside]
    if not len(ticks):
        return peaks
    # each project's use at each tick of each host, up to its limit
    span = int(ticks.max()) + 1
    keys, where = np.unique((host * len(projects) + project) * span + ticks, return_inverse=True)
    limit = np.array([limits[name] for name in projects])[(keys // span) % len(projects)]
    use = np.minimum(np.bincount(where, weights=percent), limit)
    tick = keys % span
    minute = np.minimum((tick * interval // 60).astype(np.int64), minutes - 1)
    # the sum over the projects at each tick of each host
    tick_keys, at = np.unique(keys // span // len(projects) * span + tick, return_inverse=True)
    total = np.bincount(at, weights=use)
    np.maximum.at(peaks, np.minimum((tick_keys % span * interval // 60).astype(np.int64),
                                    minutes - 1), total)  # fmt: skip
    if scaled:
        # under a pool q < the limits' total L a project gets limit x q / L: q >= L x use / limit
        whole = math.fsum(limits.values())
        need = np.where(limit > 0, use * whole / np.maximum(limit, 1e-12), 0.0)
        np.maximum.at(peaks, minute, np.minimum(need, whole))
    return peaks


__all__ = [
    "MIN_DAYS",
    "NAME",
    "QUIET_SHARE",
    "LearnedProfile",
    "Pattern",
    "daily_pattern",
    "learn",
    "windows",
]
