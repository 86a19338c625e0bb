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
from devloop.analytics._series import project_series_with_limits, tick_sums_sql
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
    # Every scope has one row per tick of its host, so a row's place in its series is the
    # tick's place among its host's ticks: numbered once here instead of sorting every series.
    tick_numbers = (
        both.select("host", "ts")
        .unique()
        .sort("host", "ts")
        .with_columns(pl.int_range(pl.len()).over("host").alias("tick_no"))
    )
    found: list[pl.DataFrame] = []
    flagged: list[pl.DataFrame] = []
    for resource in resources:
        spans, ticks = _islands(both, tick_numbers, resource, threshold, selection.interval)
        found.append(spans)
        flagged.append(ticks)
    intervals = pl.concat(found).filter(pl.col("duration_seconds") >= min_duration)
    intervals = intervals.sort(
        ["duration_seconds", "peak_percent_of_limit", "start", "scope", "project"],
        descending=[True, True, False, True, False],
        nulls_last=False,
    ).with_row_index("rank", offset=1)
    intervals = intervals.with_columns(pl.col("rank").cast(pl.Int64))
    keys = ["scope", "project", "host", "resource", "island"]
    ticks = pl.concat(flagged).join(
        intervals.select(*keys, "rank"), on=keys, how="inner", nulls_equal=True
    )
    drivers = _drivers(store, selection, ticks)
    intervals = intervals.join(drivers, on="rank", how="left").sort("rank")
    intervals = intervals.with_columns(
        pl.col("drivers").fill_null(pl.lit([], dtype=drivers.schema["drivers"]))
    )
    return Bottlenecks(
        selection, threshold, min_duration, intervals.select(BOTTLENECK_COLUMNS), notes
    )


def _islands(
    both: pl.DataFrame,
    tick_numbers: pl.DataFrame,
    resource: str,
    threshold: float,
    interval: float,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The intervals of ``resource`` and their ticks (scope, project, host, resource, island,
    ts)."""
    import polars as pl

    used, limit = pl.col(f"{resource}_used"), pl.col(f"{resource}_limit")
    keys = ["scope", "project", "host"]
    frame = (
        both.select(*keys, "ts", used.alias("used"), limit.alias("limit"))
        .with_columns((100.0 * pl.col("used") / pl.col("limit")).alias("pct"))
        # CPU is stored as float32 cores: within a millionth of the threshold is at it.
        .filter(pl.col("limit") > 0, pl.col("pct") >= threshold * (1 - 1e-6))
        .join(tick_numbers, on=["host", "ts"], how="inner")
    )
    # Sorting on two integers is far cheaper than on the string keys and the timestamp.
    groups = frame.select(keys).unique().with_row_index("group")
    frame = (
        frame.join(groups, on=keys, how="left", nulls_equal=True)
        .sort("group", "tick_no")
        .with_columns(
            (pl.col("tick_no") - pl.int_range(pl.len()).over("group")).alias("island"),
            pl.lit(resource).alias("resource"),
        )
    )
    ticks = frame.select(*keys, "resource", "island", "ts")
    spans = (
        frame.group_by(*keys, "island")
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
            "host",
            "island",
        )
    )
    return spans, ticks


def _drivers(store: Store, selection: Selection, ticks: pl.DataFrame) -> pl.DataFrame:
    """Per interval (by rank), the agents with the largest share of its usage.

    ``ticks`` holds every tick of every interval (rank, scope, project, host, resource, ts):
    samples are matched to them by equality, project intervals on (host, ts, project) and
    workspace ones on (host, ts).
    """
    import polars as pl

    schema = pl.List(
        pl.Struct({"project": pl.String, "agent": pl.String, "share_percent": pl.Float64})
    )
    if ticks.is_empty():
        return pl.DataFrame(
            {"rank": [], "drivers": []}, schema={"rank": pl.Int64, "drivers": schema}
        )
    table = ticks.select("rank", "scope", "project", "host", "resource", "ts")
    store.connection.register("devloop_ticks", table.to_arrow())
    try:
        sums, params = tick_sums_sql(store, selection, by_agent=True)
        value = "CASE WHEN f.resource = 'cpu' THEN s.cpu ELSE s.rss END"
        sql = f"""
            WITH s AS (
                SELECT host, ts, project, agent, cpu, rss FROM {sums} WHERE ts >= ? AND ts <= ?
            )
            SELECT f.rank, s.project, s.agent, sum({value}) AS used
            FROM s JOIN devloop_ticks f ON s.host = f.host AND s.ts = f.ts
            WHERE f.scope = 'workspace' OR f.project = s.project
            GROUP BY f.rank, s.project, s.agent
        """
        first, last = ticks["ts"].min(), ticks["ts"].max()
        used = store.frame(sql, [*params, first, last])
    finally:
        store.connection.unregister("devloop_ticks")
    return (
        used.with_columns(
            (100.0 * pl.col("used") / pl.col("used").sum().over("rank")).alias("share_percent")
        )
        .sort(["rank", "share_percent", "project", "agent"], descending=[False, True, False, False])
        .group_by("rank", maintain_order=True)
        .agg(pl.struct("project", "agent", "share_percent").head(TOP_DRIVERS).alias("drivers"))
        .with_columns(pl.col("drivers").cast(schema), pl.col("rank").cast(pl.Int64))
    )
