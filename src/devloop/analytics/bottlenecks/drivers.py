"""An interval's drivers: the agents with the largest share of the scope's usage over its
ticks, ranked from each agent's usage per interval (:mod:`.usage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devloop.analytics.bottlenecks.usage import Used, used_by_range, used_by_tick

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics.bottlenecks.arrays import Floats, Ints
    from devloop.analytics.bottlenecks.grid import Grid
    from devloop.analytics.query import Selection, Store

#: How many agents each interval names.
TOP_DRIVERS = 3


def drivers_type() -> pl.List:
    import polars as pl

    return pl.List(
        pl.Struct({"project": pl.String, "agent": pl.String, "share_percent": pl.Float64})
    )


def ranked_drivers(
    store: Store, selection: Selection, grid: Grid, intervals: pl.DataFrame
) -> pl.DataFrame:
    """Per interval (``rank``), ``drivers``: the agents with the largest share of its usage,
    each agent's per-tick sums over the interval's ticks (for the workspace, the agents of
    every selected project)."""
    if intervals.is_empty():
        return drivers_of(None, intervals)
    # Which way, and why each is kept: :mod:`devloop.analytics.bottlenecks.usage`.
    if grid.at_ticks:
        found = used_by_range(store, selection, grid, intervals)
    else:
        found = used_by_tick(store, selection, grid, intervals)
    return drivers_of(found, intervals)


def drivers_of(found: Used | None, intervals: pl.DataFrame) -> pl.DataFrame:
    """Per interval (``rank``), ``drivers``: the :data:`TOP_DRIVERS` agents with the largest
    share of the usage ``found`` over it (None: no usage), the largest first, then by project
    and agent."""
    import numpy as np
    import polars as pl

    empty = pl.DataFrame(
        {"rank": [], "drivers": []}, schema={"rank": pl.Int64, "drivers": drivers_type()}
    )
    if found is None:
        return empty
    interval, agent, used = found.interval, found.agent, found.used
    if not len(interval):
        return empty
    names = sorted(found.names)
    by_name = np.empty(len(names), dtype=np.int64)
    by_name[sorted(range(len(names)), key=found.names.__getitem__)] = np.arange(len(names))
    agent = by_name[agent]  # now the place in ``names``
    totals = np.bincount(interval, weights=used, minlength=intervals.height)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = 100.0 * used / totals[interval]
    # Per interval, the largest share first, then by project and agent.
    code = interval * len(names) + agent
    if not bool((code[1:] > code[:-1]).all()):
        order = np.argsort(code)
        interval, agent, share = interval[order], agent[order], share[order]
    top = _top(interval, share, TOP_DRIVERS)
    interval, agent, share = interval[top], agent[top], share[top]
    return (
        pl.DataFrame(
            {
                "rank": intervals["rank"].to_numpy()[interval],
                "project": pl.Series([project for project, _ in names]).gather(agent),
                "agent": pl.Series([name for _, name in names]).gather(agent),
                "share_percent": share,
            },
            schema={
                "rank": pl.Int64,
                "project": pl.String,
                "agent": pl.String,
                "share_percent": pl.Float64,
            },
        )
        .group_by("rank", maintain_order=True)
        .agg(pl.struct("project", "agent", "share_percent").alias("drivers"))
        .with_columns(pl.col("drivers").cast(drivers_type()))
    )


#: Up to how many cells :func:`_top` sorts as a table of groups by place.
_TOP_TABLE_CELLS = 1 << 24


def _top(group: Ints, share: Floats, count: int) -> Ints:
    """The rows of the ``count`` largest shares of each group, the first row first among
    equal shares, in that order (``group`` ascending)."""
    import numpy as np

    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    place = np.arange(len(group)) - np.repeat(starts, sizes)
    widest = int(sizes.max())
    if len(starts) * widest <= _TOP_TABLE_CELLS:  # groups by place: a stable sort per group
        table = np.full((len(starts), widest), np.inf)
        table[np.repeat(np.arange(len(starts)), sizes), place] = -share
        best = np.argsort(table, axis=1, kind="stable")[:, :count]
        rows = (starts[:, None] + best)[best < sizes[:, None]]
    else:  # stable sorts, each keeping the order of the one before among equals
        order = np.argsort(-share, kind="stable")
        order = order[np.argsort(group[order], kind="stable")]
        rows = order[place < count]
    result: Ints = rows
    return result
