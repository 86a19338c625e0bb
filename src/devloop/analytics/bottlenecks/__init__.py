"""``bottlenecks``: when a project or the workspace ran at or above a share of its limit.

An interval is a run of consecutive ticks at which the usage was ``>= threshold`` percent of the
limit in force at that tick (see :mod:`devloop.analytics.query`), for CPU or memory. Intervals are
ranked longest first (then by how far over they went), and each names the agents that drove it:
their share of the scope's usage summed over the interval's ticks.

The pipeline, one module a stage:

    grid.py      the project series with the limits in force as dense arrays (one row per
                 selected project, one column per collector tick of a host)
    runs.py      the runs over the threshold on those arrays (the workspace row is their sum)
    usage.py     each agent's usage over each interval, from the rollups, the raw rows or
                 tick by tick (why three ways: its docstring)
    drivers.py   the agents with the largest share of each interval's usage
    arrays.py    query results as numpy arrays
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.bottlenecks.drivers import TOP_DRIVERS, drivers_type, ranked_drivers
from devloop.analytics.bottlenecks.grid import Grid, project_grid
from devloop.analytics.bottlenecks.runs import runs_over
from devloop.analytics.query import Selection, Store, open_store, records
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["BOTTLENECK_COLUMNS", "RESOURCES", "TOP_DRIVERS", "Bottlenecks", "bottlenecks"]

RESOURCES = ("cpu", "memory")

#: Columns of :attr:`Bottlenecks.intervals`, in order.
BOTTLENECK_COLUMNS = (
    "rank",
    "scope",
    "project",
    "resource",
    "start",
    "end",
    "ticks",
    "duration_seconds",
    "limit",
    "peak",
    "peak_percent_of_limit",
    "avg_percent_of_limit",
    "drivers",
)


@dataclass(frozen=True)
class Bottlenecks:
    """The bottlenecks report.

    ``intervals`` columns:

    * ``rank`` (1 = longest), ``scope`` ("workspace" or "project"), ``project`` (null for the
      workspace), ``resource`` ("cpu" or "memory")
    * ``start``, ``end``: the first and last tick at or above the threshold; ``ticks``;
      ``duration_seconds`` = end - start + one tick interval
    * ``limit``: the limit in force at the start (CPU % of the machine, or bytes); ``peak``: the
      highest usage in the interval, same unit; ``peak_percent_of_limit``,
      ``avg_percent_of_limit``
    * ``drivers``: up to three ``{"project", "agent", "share_percent"}``, the agents with the
      largest share of the scope's usage over the interval

    ``found`` counts every interval over the threshold, ``lasting`` those lasting at least
    ``min_duration`` seconds; ``intervals`` holds the ``limit`` longest of these (every one when
    ``limit`` is None).
    """

    selection: Selection
    threshold: float
    min_duration: float
    intervals: pl.DataFrame
    found: int
    lasting: int
    limit: int | None
    notes: tuple[str, ...] = ()

    @property
    def shorter(self) -> int:
        """How many intervals were left out for lasting less than ``min_duration``."""
        return self.found - self.lasting

    @property
    def beyond_limit(self) -> int:
        """How many intervals lasting long enough were left out by ``limit``."""
        return self.lasting - self.intervals.height

    def to_json(self) -> dict[str, Any]:
        """``{"range", "threshold_percent", "min_duration_seconds", "intervals_found",
        "intervals", "notes"}``."""
        return {
            "range": self.selection.to_json(),
            "threshold_percent": self.threshold,
            "min_duration_seconds": self.min_duration,
            "intervals_found": self.found,
            "intervals": records(self.intervals),
            "notes": list(self.notes),
        }


def bottlenecks(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    threshold: float = 80.0,
    min_duration: float = 0.0,
    limit: int | None = None,
    resources: tuple[str, ...] = RESOURCES,
) -> Bottlenecks:
    """Intervals at or above ``threshold`` % of the limit lasting at least ``min_duration``
    seconds: the ``limit`` longest, or every one when ``limit`` is None (the default; the
    command shows 20). Raises UsageError for a threshold not above 0, a limit below 1 or an
    unknown resource."""
    _check(threshold, limit, resources)
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    grid = project_grid(store, selection)
    return _report(
        selection,
        grid,
        lambda intervals: ranked_drivers(store, selection, grid, intervals),
        threshold=threshold,
        min_duration=min_duration,
        limit=limit,
        resources=resources,
    )


def _check(threshold: float, limit: int | None, resources: tuple[str, ...]) -> None:
    """UsageError for a threshold not above 0, a limit below 1 or an unknown resource."""
    if not threshold > 0:
        raise UsageError(f"the threshold must be above 0, not {threshold:g}")
    if limit is not None and limit < 1:
        raise UsageError(f"the limit must be at least 1, not {limit}")
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown or not resources:
        raise UsageError(f"unknown resource {', '.join(unknown)!r} (use cpu or memory)")


def _report(
    selection: Selection,
    grid: Grid,
    drivers: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    threshold: float,
    min_duration: float,
    limit: int | None,
    resources: tuple[str, ...],
) -> Bottlenecks:
    """The report from the series ``grid``: its runs over the threshold, ranked, with the
    ``drivers`` of the intervals kept (``rank``, ``drivers``, as :func:`ranked_drivers` gives
    them): the part every engine shares."""
    import polars as pl

    notes = (grid.note,) if grid.note else ()
    spans = runs_over(grid, resources, threshold, selection.interval)
    intervals = (
        spans.filter(pl.col("duration_seconds") >= min_duration)
        .sort(
            ["duration_seconds", "peak_percent_of_limit", "start", "scope", "project", "host"],
            descending=[True, True, False, True, False, False],
            nulls_last=False,
            maintain_order=True,
        )
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )
    lasting = intervals.height
    if limit is not None:
        intervals = intervals.head(limit)
    found = drivers(intervals)
    intervals = intervals.join(found, on="rank", how="left").sort("rank")
    intervals = intervals.with_columns(
        pl.col("drivers").fill_null(pl.lit([], dtype=drivers_type()))
    )
    return Bottlenecks(
        selection,
        threshold,
        min_duration,
        intervals.select(BOTTLENECK_COLUMNS),
        found=spans.height,
        lasting=lasting,
        limit=limit,
        notes=notes,
    )
