"""Cross-check: peak-usage and bottlenecks recomputed independently with plain polars over the
Parquet files of two simulated days give the same answers (the planted CPU anomaly is on
day two; both days are whole, so their rollups are read from day files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from devloop.analytics import bottlenecks, peak_usage
from devloop.simulate import simulate
from devloop.store import live_files
from tests.helpers.stores import top_drivers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / ".devloop-workspace"
    simulate(out, days=2, projects=3, agents_per_project=2, interval=5, seed=7)  # 6 processes
    return out


def _scan(root: Path, table: str) -> pl.LazyFrame:
    return pl.scan_parquet([str(p) for p in live_files(root, table)])


def _stats(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    def first_at(column: str) -> pl.Expr:
        return pl.col("ts").filter(pl.col(column) == pl.col(column).max()).min()

    aggs = [
        pl.len().cast(pl.Int64).alias("ticks"),
        pl.col("cpu").max().alias("cpu_peak_percent"),
        first_at("cpu").alias("cpu_peak_at"),
        pl.col("cpu").quantile(0.95, interpolation="linear").alias("cpu_p95_percent"),
        pl.col("cpu").mean().alias("cpu_avg_percent"),
        pl.col("rss").max().cast(pl.Int64).alias("memory_peak_bytes"),
        first_at("rss").alias("memory_peak_at"),
        pl.col("fds").max().cast(pl.Int64).alias("fds_peak"),
        pl.col("threads").max().cast(pl.Int64).alias("threads_peak"),
    ]
    return frame.group_by(keys).agg(aggs) if keys else frame.select(aggs)


def _independent(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per-tick project series with limits, workspace series, and peak rows, plain polars."""
    system = _scan(root, "system").select("host", "ts", "cores").collect()
    cores = system.sort("ts").group_by("host").agg(pl.col("cores").last())
    samples = (
        _scan(root, "samples")
        .select("host", "ts", "project", "agent", "cpu_cores", "rss_bytes", "fds", "threads")
        .collect()
        .join(cores, on="host")
    )
    sums = [
        (100.0 * pl.col("cpu_cores").cast(pl.Float64).sum() / pl.col("cores").first()).alias("cpu"),
        pl.col("rss_bytes").sum().alias("rss"),
        pl.col("fds").sum().alias("fds"),
        pl.col("threads").sum().alias("threads"),
    ]
    agents = samples.group_by("host", "ts", "project", "agent").agg(sums)
    used = samples.group_by("host", "ts", "project").agg(sums)
    projects = samples.select("project").unique()
    ticks = system.select("host", "ts").unique()
    series = (
        ticks.join(projects, how="cross")
        .join(used, on=["host", "ts", "project"], how="left")
        .with_columns(pl.col("cpu", "rss", "fds", "threads").fill_null(0))
    )
    whole = series.group_by("host", "ts").agg(pl.col("cpu", "rss", "fds", "threads").sum())
    peaks = pl.concat(
        [
            _stats(whole, []).with_columns(
                scope=pl.lit("workspace"),
                project=pl.lit(None, pl.String),
                agent=pl.lit(None, pl.String),
            ),
            _stats(series, ["project"]).with_columns(
                scope=pl.lit("project"), agent=pl.lit(None, pl.String)
            ),
            _stats(agents, ["project", "agent"]).with_columns(scope=pl.lit("agent")),
        ],
        how="diagonal",
    )
    limits = (
        _scan(root, "limits")
        .filter(pl.col("agent") == "")
        .select("host", "project", "ts", "cpu_limit_percent")
        .collect()
        .sort("ts")
    )
    series = series.sort("ts").join_asof(
        limits, on="ts", by=["host", "project"], strategy="backward"
    )
    return series, whole, peaks


def _islands(frame: pl.DataFrame, key: list[str], threshold: float) -> set[tuple]:
    out = set()
    for part in frame.sort("ts").partition_by(key):
        over = (100.0 * part["cpu"] / part["limit"] >= threshold * (1 - 1e-6)).to_list()
        ts = part["ts"].to_list()
        name = part[key[0]][0] if key else None
        start = None
        for i, flag in enumerate([*over, False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                out.add((name, ts[start], ts[i - 1], i - start))
                start = None
    return out


def test_peak_usage_matches_plain_polars(simulated: Path) -> None:
    report = peak_usage(simulated)
    _, _, expected = _independent(simulated / "metrics")
    keys = ["scope", "project", "agent"]
    got = report.peaks.sort(keys, nulls_last=False)
    want = expected.select(got.columns).sort(keys, nulls_last=False)
    assert_frame_equal(got, want, check_dtypes=False, abs_tol=1e-6, rel_tol=1e-9)
    whole = got.filter(pl.col("scope") == "workspace").row(0, named=True)
    project_peaks = got.filter(pl.col("scope") == "project")["cpu_peak_percent"].sum()
    assert whole["cpu_peak_percent"] < project_peaks  # coincident, not summed


def test_bottlenecks_match_plain_polars(simulated: Path) -> None:
    report = bottlenecks(simulated, threshold=80, resources=("cpu",))
    series, _, _ = _independent(simulated / "metrics")
    projects = series.rename({"cpu_limit_percent": "limit"})
    whole = series.group_by("host", "ts").agg(
        pl.col("cpu").sum(), pl.col("cpu_limit_percent").sum().alias("limit")
    )
    want = _islands(projects, ["project"], 80) | _islands(
        whole.with_columns(w=pl.lit(None, pl.String)), ["w"], 80
    )
    got = {
        (r["project"], r["start"], r["end"], r["ticks"])
        for r in report.intervals.iter_rows(named=True)
    }
    assert got == want
    # The planted anomaly: proj-2 over its CPU limit on day two, 14:00-15:00 UTC.
    longest = report.intervals.row(0, named=True)
    assert longest["project"] == "proj-2"
    assert longest["start"].hour == 14 and longest["start"].day == 6


def test_bottleneck_drivers_match_plain_polars(simulated: Path) -> None:
    """Each interval's drivers: the agents' summed use over the interval's ticks, from raw
    samples. The memory intervals span whole hours (read from the per-hour rollups), the CPU
    ones are short (matched tick by tick)."""
    agents = (
        _scan(simulated / "metrics", "samples")
        .group_by("host", "ts", "project", "agent")
        .agg(
            pl.col("cpu_cores").cast(pl.Float64).sum().alias("cpu"),
            pl.col("rss_bytes").cast(pl.Float64).sum().alias("memory"),
        )
        .collect()
    )
    # At 1% almost every tick is flagged: intervals of many whole hours; at 80%, short ones.
    long = bottlenecks(simulated, threshold=1).intervals
    short = bottlenecks(simulated, threshold=80).intervals
    assert (long["duration_seconds"] >= 2 * 3600).sum() >= 2
    assert short["duration_seconds"].max() < 3600
    checked = pl.concat(
        [
            frame.filter(pl.col("resource") == resource).head(20)
            for frame in (long, short)
            for resource in ("cpu", "memory")
        ]
    )
    assert checked.height >= 20
    for row in checked.iter_rows(named=True):
        project = row["project"] if row["scope"] == "project" else None
        want = top_drivers(agents, row["start"], row["end"], row["resource"], project)
        got = row["drivers"]
        assert [(d["project"], d["agent"]) for d in got] == list(
            zip(want["project"], want["agent"], strict=True)
        ), row["rank"]
        assert [d["share_percent"] for d in got] == pytest.approx(want["share"].to_list(), abs=1e-6)
