"""Reference implementations in plain polars, for cross-checking the reports' DuckDB paths.

The reports compute in DuckDB (one path each); these re-derive the same figures from the
project series with polars, the way a user would by hand, so a test can compare the two.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from devloop.analytics.query import (
    Selection,
    Store,
    project_series,
    project_series_with_limits,
    workspace_series,
)

#: efficiency's tolerance over a limit (a tick counts as over above limit x this).
TOLERANCE = 1 + 1e-6


def series_peaks(store: Store, selection: Selection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """peak-usage's workspace row and project rows, from the project series in polars."""
    series = project_series(store, selection, ordered=False)
    whole = workspace_series(series)

    def stats(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        def at(column: str) -> pl.Expr:
            return pl.col("ts").filter(pl.col(column) == pl.col(column).max()).min()

        aggs: list[Any] = [
            pl.len().alias("ticks"),
            pl.col("cpu_percent").max().alias("cpu_peak_percent"),
            at("cpu_percent").alias("cpu_peak_at"),
            pl.col("cpu_percent").quantile(0.95, interpolation="linear").alias("cpu_p95_percent"),
            pl.col("cpu_percent").mean().alias("cpu_avg_percent"),
            pl.col("rss_bytes").max().alias("memory_peak_bytes"),
            at("rss_bytes").alias("memory_peak_at"),
            pl.col("fds").max().alias("fds_peak"),
            pl.col("threads").max().alias("threads_peak"),
        ]
        return frame.group_by(keys).agg(aggs) if keys else frame.select(aggs)

    workspace_row = stats(whole, []).with_columns(
        pl.lit("workspace").alias("scope"),
        pl.lit(None, dtype=pl.String).alias("project"),
        pl.lit(None, dtype=pl.String).alias("agent"),
    )
    project_rows = stats(series, ["project"]).with_columns(
        pl.lit("project").alias("scope"), pl.lit(None, dtype=pl.String).alias("agent")
    )
    return workspace_row, project_rows


def efficiency_stats(
    store: Store, selection: Selection
) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    """efficiency's per-project and workspace statistics (before the derived columns), from
    the project series with the limits in force, in polars."""
    series, note = project_series_with_limits(store, selection, ordered=False)
    series = series.with_columns(
        pl.col("rss_bytes").cast(pl.Float64), pl.col("memory_limit_bytes").cast(pl.Float64)
    )
    whole = series.group_by("host", "ts").agg(
        pl.col("cpu_percent", "rss_bytes").sum(),
        pl.when(pl.col("cpu_limit_percent").null_count() == 0).then(
            pl.col("cpu_limit_percent").sum()
        ),
        pl.when(pl.col("memory_limit_bytes").null_count() == 0).then(
            pl.col("memory_limit_bytes").sum()
        ),
    )
    interval = selection.interval

    def stats(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("ticks")]
        for name, used, limit in (
            ("cpu", "cpu_percent", "cpu_limit_percent"),
            ("memory", "rss_bytes", "memory_limit_bytes"),
        ):
            unit = "percent" if name == "cpu" else "bytes"
            aggs += [
                pl.col(limit).mean().alias(f"{name}_allocated_{unit}"),
                pl.col(used).mean().alias(f"{name}_used_avg_{unit}"),
                pl.col(used)
                .quantile(0.95, interpolation="linear")
                .alias(f"{name}_used_p95_{unit}"),
                pl.col(used).max().alias(f"{name}_used_peak_{unit}"),
                ((pl.col(used) > pl.col(limit) * TOLERANCE).sum() * interval)
                .cast(pl.Float64)
                .alias(f"{name}_over_limit_seconds"),
            ]
        grouped = frame.group_by(keys).agg(aggs) if keys else frame.select(aggs)
        return grouped

    return stats(series, ["project"]), stats(whole, []), note
