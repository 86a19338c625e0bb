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
    import numpy as np
    import polars as pl

    parts: list[pl.DataFrame] = []
    scopes = np.array([None, *grid.projects], dtype=object)
    for host in grid.hosts:
        count = len(host.ticks)
        if not count:
            continue
        for resource in resources:
            used, limit = (
                (host.cpu, host.cpu_limit)
                if resource == "cpu"
                else (host.memory, host.memory_limit)
            )
            # Row 0 is the workspace: the sum of the projects, its limit the sum of theirs
            # (NaN, no limit, when a project has none).
            used = np.vstack([used.sum(axis=0), used])
            limit = np.vstack([limit.sum(axis=0), limit])
            with np.errstate(divide="ignore", invalid="ignore"):
                percent = 100.0 * used / limit
                # CPU is stored as float32 cores: within a millionth of the threshold is at it.
                over = (limit > 0) & (percent >= threshold * (1 - 1e-6))
            # A run starts at a tick over the threshold whose tick before (in the same row)
            # is not, and ends at one whose tick after is not.
            flat = over.ravel()
            before = np.zeros_like(flat)
            before[1:] = flat[:-1]
            before[::count] = False
            after = np.zeros_like(flat)
            after[:-1] = flat[1:]
            after[count - 1 :: count] = False
            firsts = np.flatnonzero(flat & ~before)
            if not len(firsts):
                continue
            lasts = np.flatnonzero(flat & ~after)
            rows = firsts // count
            first, stop = firsts - rows * count, lasts + 1 - rows * count
            bounds = np.empty(2 * len(rows), dtype=np.int64)
            bounds[0::2] = firsts
            bounds[1::2] = lasts + 1
            if bounds[-1] == flat.size:  # reduceat takes the last run to the end
                bounds = bounds[:-1]

            ticks = stop - first
            start, end = host.ticks[first], host.ticks[stop - 1]
            parts.append(
                pl.DataFrame(
                    {
                        "scope": np.where(rows == 0, "workspace", "project"),
                        "project": pl.Series(scopes[rows].tolist(), dtype=pl.String),
                        "host": host.name,
                        "resource": resource,
                        "start": pl.Series(start).cast(pl.Datetime("us", "UTC")),
                        "end": pl.Series(end).cast(pl.Datetime("us", "UTC")),
                        "ticks": ticks.astype(np.int64),
                        "duration_seconds": (end - start) / 1e6 + interval,
                        "limit": limit.ravel()[firsts],
                        "peak": _per_run(np.maximum, used, bounds),
                        "peak_percent_of_limit": _per_run(np.maximum, percent, bounds),
                        "avg_percent_of_limit": _per_run(np.add, percent, bounds) / ticks,
                        "first": first.astype(np.int64),
                        "last": (stop - 1).astype(np.int64),
                    }
                )
            )
    if not parts:
        return pl.DataFrame(schema=_span_schema())
    return pl.concat(parts)


def _per_run(ufunc: np.ufunc, values: Floats, bounds: Ints) -> Floats:
    """``ufunc`` reduced over each run: ``bounds`` holds each run's first and stop cell
    (flat), the last stop left out when it is the end."""
    import numpy as np

    with np.errstate(all="ignore"):  # the cells between the runs: not used
        result: Floats = ufunc.reduceat(values.ravel(), bounds)[0::2]
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
