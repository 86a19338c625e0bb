"""Whether the tick a scrape exports is live: the pure decision behind ``devloop_up``.

A tick is live when it is at most ``stale_after`` seconds old and the collector that wrote it
still runs. The bound is ``--stale-after`` when given, else :data:`STALE_INTERVALS` collector
intervals with a floor of :data:`STALE_FLOOR` seconds (a tick may be a moment late under load).
Whether the collector runs is known when the store's writer lock file exists (it names the
holder's pid, cleared on release); a store no collector ever wrote (a simulation, a copy)
has none, and then the age alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: A tick older than this many collector intervals is stale.
STALE_INTERVALS: Final = 3
#: ... and never before this many seconds.
STALE_FLOOR: Final = 10.0


@dataclass(frozen=True)
class Liveness:
    """What one scrape knows about its source.

    ``up``: the tick is live (see the module doc). ``age``: seconds from the tick to the scrape
    (None while there is no tick; 0 for a tick from the future, a clock stepped back).
    ``stale_after``: the bound it was held to. ``collector``: True when the store's collector
    runs, False when it is gone, None when the store cannot say.
    """

    up: bool
    age: float | None
    stale_after: float
    collector: bool | None


def stale_bound(interval: float | None, stale_after: float | None = None) -> float:
    """``stale_after`` when given, else STALE_INTERVALS x ``interval`` (seconds between the
    collector's ticks; None when unknown), at least STALE_FLOOR."""
    if stale_after is not None:
        return stale_after
    return max(STALE_INTERVALS * (interval or 0.0), STALE_FLOOR)


def judge(at: float | None, *, now: float, stale_after: float, collector: bool | None) -> Liveness:
    """The liveness at ``now`` of a tick taken at ``at`` (unix seconds; None: no tick)."""
    age = None if at is None else max(now - at, 0.0)
    up = age is not None and age <= stale_after and collector is not False
    return Liveness(up=up, age=age, stale_after=stale_after, collector=collector)
