"""The runs over the threshold: per scope (the workspace, each project), host and resource,
every run of consecutive ticks at or above a share of the limit in force, found on the
:class:`~devloop.analytics.bottlenecks.grid.Grid` arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from devloop.analytics.bottlenecks.arrays import Floats, Ints
    from devloop.analytics.bottlenecks.grid import Grid


def runs_over(
    grid: Grid, resources: tuple[str, ...], threshold: float, interval: float
) -> pl.DataFrame:
    """Every run of ticks over ``threshold`` % of the limit, per scope, host and resource, with
    the figures of :class:`~devloop.analytics.bottlenecks.Bottlenecks` and ``host``, ``first``
    and ``last`` (the run's columns in its host's arrays)."""
    import polars as pl

    parts: list[pl.DataFrame] = []
    for host in grid.hosts:
        count = len(host.ticks)
        if not count:
            continue
        for resource in resources:
            used_rows, limit_rows = (
                (host.cpu, host.cpu_limit)
                if resource == "cpu"
                else (host.memory, host.memory_limit)
            )
            # Row by row (the workspace first: the sum of the projects, its limit the sum of
            # theirs, NaN when a project has none), so a long range's arrays are held once.
            for row in range(len(grid.projects) + 1):
                if row == 0:
                    used, limit = used_rows.sum(axis=0), limit_rows.sum(axis=0)
                else:
                    used, limit = used_rows[row - 1], limit_rows[row - 1]
                part = _row_runs(used, limit, host.ticks, threshold, interval)
                if part is not None:
                    scope = "workspace" if row == 0 else "project"
                    project = None if row == 0 else grid.projects[row - 1]
                    parts.append(
                        part.select(
                            pl.lit(scope).alias("scope"),
                            pl.lit(project, dtype=pl.String).alias("project"),
                            pl.lit(host.name).alias("host"),
                            pl.lit(resource).alias("resource"),
                            pl.all(),
                        )
                    )
    if not parts:
        return pl.DataFrame(schema=_span_schema())
    return pl.concat(parts)


def _row_runs(
    used: Floats, limit: Floats, ticks: Ints, threshold: float, interval: float
) -> pl.DataFrame | None:
    """The runs of consecutive ticks of one row at or above ``threshold`` % of ``limit``."""
    import numpy as np
    import polars as pl

    with np.errstate(divide="ignore", invalid="ignore"):
        percent = 100.0 * used / limit
        # CPU is stored as float32 cores: within a millionth of the threshold is at it.
        over = (limit > 0) & (percent >= threshold * (1 - 1e-6))
    # A run starts at a tick over the threshold whose tick before is not, and stops at the
    # first tick after it that is not.
    edges = np.diff(over.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    first = np.flatnonzero(edges == 1)
    if not len(first):
        return None
    stop = np.flatnonzero(edges == -1)
    bounds = np.empty(2 * len(first), dtype=np.int64)
    bounds[0::2] = first
    bounds[1::2] = stop
    if bounds[-1] == len(used):  # reduceat takes the last run to the end
        bounds = bounds[:-1]
    ticks_over = stop - first
    start, end = ticks[first], ticks[stop - 1]
    return pl.DataFrame(
        {
            "start": pl.Series(start).cast(pl.Datetime("us", "UTC")),
            "end": pl.Series(end).cast(pl.Datetime("us", "UTC")),
            "ticks": ticks_over.astype(np.int64),
            "duration_seconds": (end - start) / 1e6 + interval,
            "limit": limit[first],
            "peak": _per_run(np.maximum, used, bounds),
            "peak_percent_of_limit": _per_run(np.maximum, percent, bounds),
            "avg_percent_of_limit": _per_run(np.add, percent, bounds) / ticks_over,
            "first": first.astype(np.int64),
            "last": (stop - 1).astype(np.int64),
        }
    )


def _per_run(ufunc: np.ufunc, values: Floats, bounds: Ints) -> Floats:
    """``ufunc`` reduced over each run of a row: ``bounds`` holds each run's first and stop
    tick, the last stop left out when it is the end."""
    import numpy as np

    with np.errstate(all="ignore"):  # the cells between the runs: not used
        result: Floats = ufunc.reduceat(values, bounds)[0::2]
    return result


def _span_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "scope": pl.String,
        "project": pl.String,
        "host": pl.String,
        "resource": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "ticks": pl.Int64,
        "duration_seconds": pl.Float64,
        "limit": pl.Float64,
        "peak": pl.Float64,
        "peak_percent_of_limit": pl.Float64,
        "avg_percent_of_limit": pl.Float64,
        "first": pl.Int64,
        "last": pl.Int64,
    }
