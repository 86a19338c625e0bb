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


def learn(
    runs: Sequence[RunDemand],
    history: History,
    *,
    interval: float,
    cores: int,
    host_cores: Mapping[str, int],
    limits: Mapping[str, float],
    pool_cpu: float,
    scaled: bool,
    floor: float,
    until: int | None = None,
) -> LearnedProfile:
    """The quiet profile the runs' daily pattern suggests (see the module doc). ``limits``: each
    project's CPU limit (percent of the machine) under the suggested pool ``pool_cpu``;
    ``scaled``: whether a smaller pool scales the limits in proportion (``custom``,
    ``dynamic``), not only caps them (``overcommitCpu``); ``floor``: the least pool;
    ``until``: learn from the history's first ``until`` hours only (the walk-forward's)."""
    import numpy as np

    origin = history.origin.timestamp()
    seen = history.n_hours if until is None else min(until, history.n_hours)
    runs = [run for run in runs if run.queued_at < origin + seen * 3600]
    minutes = seen * 60
    local_hour = np.array(
        [datetime.fromtimestamp(origin + 60 * m + 30).hour for m in range(minutes)], dtype=np.int64
    )
    days = [0] * 24
    for hour in range(seen):
        if history.system_ticks[hour] > 0:
            days[int(local_hour[hour * 60 + 30])] += 1
    found = LearnedProfile(days=tuple(days))
    if min(days) < MIN_DAYS:
        found.why = (
            f"too little history to learn a daily pattern (every hour of the day recorded on "
            f"{MIN_DAYS} days; the least recorded has {min(days)})"
        )
        return found
    peaks = _hour_peaks(runs, origin, minutes, local_hour, interval=interval, cores=cores,
                        host_cores=host_cores, limits=limits, scaled=scaled)  # fmt: skip
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


def _hour_peaks(
    runs: Sequence[RunDemand],
    origin: float,
    minutes: int,
    local_hour: Any,
    *,
    interval: float,
    cores: int,
    host_cores: Mapping[str, int],
    limits: Mapping[str, float],
    scaled: bool,
) -> Any:
    """Per hour of the day, the largest pool the runs of any tick could use (percent)."""
    import numpy as np

    peaks = np.zeros(24)
    projects = sorted(limits)
    if not runs or not projects:
        return peaks
    index = {name: i for i, name in enumerate(projects)}
    hosts = sorted({run.host for run in runs})
    host_index = {host: i for i, host in enumerate(hosts)}
    kept = [run for run in runs if run.project in index and len(run.cores)]
    if not kept:
        return peaks
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
    key = (host * len(projects) + project) * span + ticks
    keys, where = np.unique(key, return_inverse=True)
    use = np.bincount(where, weights=percent)
    key_project = (keys // span) % len(projects)
    key_host, key_tick = keys // span // len(projects), keys % span
    limit = np.array([limits[name] for name in projects])[key_project]
    use = np.minimum(use, limit)
    hour = local_hour[np.minimum((key_tick * interval // 60).astype(np.int64), minutes - 1)]
    # the sum over projects at each tick of each host
    tick_key = key_host * span + key_tick
    ticks_of, at = np.unique(tick_key, return_inverse=True)
    total = np.bincount(at, weights=use)
    np.maximum.at(peaks, local_hour[np.minimum((ticks_of % span * interval // 60)
                                               .astype(np.int64), minutes - 1)], total)  # fmt: skip
    if scaled:
        # under a pool q < the limits' total L a project gets limit x q / L: q >= L x use / limit
        whole = math.fsum(limits.values())
        need = np.where(limit > 0, use * whole / np.maximum(limit, 1e-12), 0.0)
        np.maximum.at(peaks, hour, np.minimum(need, whole))
    return peaks


__all__ = ["MIN_DAYS", "NAME", "QUIET_SHARE", "LearnedProfile", "learn", "windows"]
