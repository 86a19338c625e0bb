"""``bottlenecks``: when a project or the workspace ran at or above a share of its limit.

An interval is a run of consecutive ticks at which the usage was ``>= threshold`` percent of the
limit in force at that tick (see :mod:`devloop.analytics._db`), for CPU or memory. Intervals are
ranked longest first (then by how far over they went), and each names the agents that drove it:
their share of the scope's usage summed over the interval's ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, open_store, records
from devloop.analytics._series import (
    HOUR_US,
    project_series_with_limits,
    tick_sums_sql,
    whole_hours,
)
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

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

#: How many agents each interval names.
TOP_DRIVERS = 3


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
    """

    selection: Selection
    threshold: float
    min_duration: float
    intervals: pl.DataFrame
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"range", "threshold_percent", "min_duration_seconds", "intervals", "notes"}``."""
        return {
            "range": self.selection.to_json(),
            "threshold_percent": self.threshold,
            "min_duration_seconds": self.min_duration,
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
    resources: tuple[str, ...] = RESOURCES,
) -> Bottlenecks:
    """Intervals at or above ``threshold`` % of the limit lasting at least ``min_duration`` s."""
    import polars as pl

    if not threshold > 0:
        raise UsageError(f"the threshold must be above 0, not {threshold:g}")
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown or not resources:
        raise UsageError(f"unknown resource {', '.join(unknown)!r} (use cpu or memory)")
    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    series, note = project_series_with_limits(store, selection, ordered=False)
    notes = (note,) if note else ()
    per_project = series.select(
        pl.lit("project").alias("scope"),
        "project",
        "host",
        "ts",
        pl.col("cpu_percent").alias("cpu_used"),
        pl.col("cpu_limit_percent").alias("cpu_limit"),
        pl.col("rss_bytes").cast(pl.Float64).alias("memory_used"),
        pl.col("memory_limit_bytes").cast(pl.Float64).alias("memory_limit"),
    )
    # The workspace limit is the sum of its projects' limits; a project with none leaves it null.
    whole = (
        per_project.group_by("host", "ts")
        .agg(
            pl.col("cpu_used").sum(),
            pl.col("memory_used").sum(),
            pl.when(pl.col("cpu_limit").null_count() == 0).then(pl.col("cpu_limit").sum()),
            pl.when(pl.col("memory_limit").null_count() == 0).then(pl.col("memory_limit").sum()),
        )
        .select(
            pl.lit("workspace").alias("scope"),
            pl.lit(None, dtype=pl.String).alias("project"),
            "host",
            "ts",
            "cpu_used",
            "cpu_limit",
            "memory_used",
            "memory_limit",
        )
    )
    both = pl.concat([whole, per_project])
    # Every scope has one row per tick of its host, so once each scope's rows are in time
    # order, consecutive ticks are consecutive rows. Sorting on two integers is far cheaper
    # than on the string keys.
    keys = ["scope", "project", "host"]
    groups = both.select(keys).unique().with_row_index("group")
    both = (
        both.join(groups, on=keys, how="left", nulls_equal=True)
        .drop(keys)  # the names come back from ``groups``: less to sort and hold
        .sort("group", "ts")
    )
    found: list[pl.DataFrame] = []
    flagged: list[pl.DataFrame] = []
    for resource in resources:
        spans, ticks = _islands(both, resource, threshold, selection.interval)
        found.append(spans.join(groups, on="group", how="left").drop("group"))
        flagged.append(ticks)
    intervals = pl.concat(found).filter(pl.col("duration_seconds") >= min_duration)
    intervals = intervals.sort(
        ["duration_seconds", "peak_percent_of_limit", "start", "scope", "project"],
        descending=[True, True, False, True, False],
        nulls_last=False,
    ).with_row_index("rank", offset=1)
    intervals = intervals.with_columns(pl.col("rank").cast(pl.Int64))
    # Island numbers are unique within a resource: a tick's interval is found by its number.
    ticks = pl.concat(
        [
            found_ticks.join(
                intervals.filter(pl.col("resource") == resource).select(
                    "island", "rank", "scope", "project", "host", "resource"
                ),
                on="island",
                how="inner",
            )
            for resource, found_ticks in zip(resources, flagged, strict=True)
        ]
    )
    drivers = _drivers(store, selection, intervals, ticks)
    intervals = intervals.join(drivers, on="rank", how="left").sort("rank")
    intervals = intervals.with_columns(
        pl.col("drivers").fill_null(pl.lit([], dtype=drivers.schema["drivers"]))
    )
    return Bottlenecks(
        selection, threshold, min_duration, intervals.select(BOTTLENECK_COLUMNS), notes
    )


def _islands(
    both: pl.DataFrame,
    resource: str,
    threshold: float,
    interval: float,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The intervals of ``resource`` (by ``group``, the scope's number) and their ticks
    (island, ts); island numbers are unique within the resource. ``both`` holds every scope's
    rows in time order."""
    import polars as pl

    used, limit = pl.col(f"{resource}_used"), pl.col(f"{resource}_limit")
    pct = 100.0 * used / limit
    # CPU is stored as float32 cores: within a millionth of the threshold is at it.
    over = ((limit > 0) & (pct >= threshold * (1 - 1e-6))).fill_null(False)
    same_run = over.shift(1, fill_value=False) & (pl.col("group") == pl.col("group").shift(1))
    frame = (
        both.select(
            "group",
            "ts",
            used.alias("used"),
            limit.alias("limit"),
            pct.alias("pct"),
            over.alias("over"),
            (over & ~same_run.fill_null(False)).cum_sum().alias("island"),
        )
        .filter(pl.col("over"))
        .with_columns(pl.lit(resource).alias("resource"))
    )
    ticks = frame.select("island", "ts")
    spans = (
        frame.group_by("group", "island")
        .agg(
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            pl.len().cast(pl.Int64).alias("ticks"),
            pl.col("limit").first().alias("limit"),
            pl.col("used").max().alias("peak"),
            pl.col("pct").max().alias("peak_percent_of_limit"),
            pl.col("pct").mean().alias("avg_percent_of_limit"),
        )
        .with_columns(
            pl.lit(resource).alias("resource"),
            ((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6 + interval).alias(
                "duration_seconds"
            ),
        )
        .select(
            "group",
            "resource",
            "start",
            "end",
            "ticks",
            "duration_seconds",
            "limit",
            "peak",
            "peak_percent_of_limit",
            "avg_percent_of_limit",
            "island",
        )
    )
    return spans, ticks


def _drivers(
    store: Store, selection: Selection, intervals: pl.DataFrame, ticks: pl.DataFrame
) -> pl.DataFrame:
    """Per interval (by rank), the agents with the largest share of its usage.

    ``intervals`` (rank, scope, project, host, resource, start, end) and ``ticks``, every tick
    of every interval (rank, scope, project, host, resource, ts). An interval's usage per
    agent is the sum of its per-tick sums over the interval's ticks: over the hours wholly
    inside the interval (and cached) from the per-hour sums, over its other ticks by matching
    them by equality, project intervals on (host, ts, project) and workspace ones on (host,
    ts) for every selected project. The per-hour sums are used only when every per-tick sum of
    the range is at a collector tick (then an hour's sum is the sum over its ticks).
    """
    import polars as pl

    schema = pl.List(
        pl.Struct({"project": pl.String, "agent": pl.String, "share_percent": pl.Float64})
    )
    if ticks.is_empty():
        return pl.DataFrame(
            {"rank": [], "drivers": []}, schema={"rank": pl.Int64, "drivers": schema}
        )
    projects = pl.DataFrame({"name": list(selection.projects)}, schema={"name": pl.String})

    def per_project(frame: pl.DataFrame) -> pl.DataFrame:
        # A workspace row stands for every selected project: one row per project.
        mine = frame.filter(pl.col("scope") == "project")
        whole = (
            frame.filter(pl.col("scope") == "workspace")
            .drop("project")
            .join(projects, how="cross")
            .rename({"name": "project"})
        )
        return pl.concat([mine, whole.select(mine.columns)])

    hourly_sql, hourly_params, cached = whole_hours(store, selection)
    if not store.aligned.get(selection, False):
        cached = []
    spans = intervals.select(
        "rank",
        "scope",
        "project",
        "host",
        "resource",
        # Hours [first_hour, end_hour) lie wholly inside the interval.
        (-((-pl.col("start").dt.epoch("us")) // HOUR_US)).alias("first_hour"),
        (pl.col("end").dt.epoch("us") // HOUR_US).alias("end_hour"),
    )
    cached_hours = pl.DataFrame({"hour": cached}, schema={"hour": pl.Int64})
    hours = (
        spans.filter(pl.col("end_hour") > pl.col("first_hour"))
        .with_columns(pl.int_ranges("first_hour", "end_hour").alias("hour"))
        .explode("hour")
        .with_columns(pl.col("hour").cast(pl.Int64))
        .join(cached_hours, on="hour", how="semi")
        .select("rank", "scope", "project", "host", "resource", "hour")
    )
    rest = ticks.select("rank", "scope", "project", "host", "resource", "ts")
    if not hours.is_empty():
        rest = rest.with_columns((pl.col("ts").dt.epoch("us") // HOUR_US).alias("hour")).join(
            hours.select("rank", "hour"), on=["rank", "hour"], how="anti"
        )
    rest = per_project(rest.select("rank", "scope", "project", "host", "resource", "ts"))
    hours = per_project(hours)
    parts: list[str] = []
    params: list[Any] = []
    value = "CASE WHEN f.resource = 'cpu' THEN s.cpu ELSE s.rss END"
    store.connection.register("devloop_ticks", rest.drop("scope").to_arrow())
    store.connection.register("devloop_hours", hours.drop("scope").to_arrow())
    try:
        if not rest.is_empty():
            sums, sum_params = tick_sums_sql(store, selection, by_agent=True)
            parts.append(
                f"""
                SELECT f.rank, s.project, s.agent, sum({value}) AS used
                FROM (SELECT host, ts, project, agent, cpu, rss FROM {sums}
                      WHERE ts >= ? AND ts <= ?) s
                JOIN devloop_ticks f ON s.host = f.host AND s.ts = f.ts AND s.project = f.project
                GROUP BY f.rank, s.project, s.agent
                """
            )
            params += [*sum_params, rest["ts"].min(), rest["ts"].max()]
        if not hours.is_empty():
            parts.append(
                f"""
                SELECT f.rank, s.project, s.agent, sum({value}) AS used
                FROM {hourly_sql} s JOIN devloop_hours f
                  ON s.host = f.host AND s.hour = f.hour AND s.project = f.project
                GROUP BY f.rank, s.project, s.agent
                """
            )
            params += hourly_params
        used = store.frame(
            f"SELECT rank, project, agent, sum(used) AS used FROM ({' UNION ALL '.join(parts)}) "
            "GROUP BY rank, project, agent",
            params,
        )
    finally:
        store.connection.unregister("devloop_ticks")
        store.connection.unregister("devloop_hours")
    return (
        used.with_columns(
            (100.0 * pl.col("used") / pl.col("used").sum().over("rank")).alias("share_percent")
        )
        .sort(["rank", "share_percent", "project", "agent"], descending=[False, True, False, False])
        .group_by("rank", maintain_order=True)
        .agg(pl.struct("project", "agent", "share_percent").head(TOP_DRIVERS).alias("drivers"))
        .with_columns(pl.col("drivers").cast(schema), pl.col("rank").cast(pl.Int64))
    )
