"""The rollups by project, of the workspace and of CPU values (``store.rollups``) as the reports
read them: exact percentiles from value counts, and peak-usage's rollup path equal to the series
it replaces."""

from __future__ import annotations

import random
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from devloop.analytics import peak_usage
from devloop.analytics.query import Store, quantiles_from_counts_sql
from devloop.analytics.timerange import TimeRange
from devloop.simulate import simulate
from devloop.store import write_table
from devloop.store.db import dtypes
from devloop.store.layout import iter_partitions
from tests.helpers.reference import series_peaks
from tests.test_analytics_reports import at, build_store

QUANTILES = [0.0, 0.05, 0.5, 0.95, 0.99, 1.0]


def test_quantiles_from_counts_equal_quantile_cont_over_the_values() -> None:
    """Groups of 1, 2 and many values, with heavy ties, as float32-like readings repeat."""
    rng = random.Random(7)
    rows: list[tuple[str, float]] = [("one", 3.5), ("two", 1.0), ("two", 4.0)]
    for group in ("a", "b", "c"):
        levels = [round(rng.uniform(0, 2), 2) for _ in range(40)]
        rows += [(group, rng.choice(levels)) for _ in range(rng.randint(50, 3000))]
    rows += [("zeros", 0.0)] * 9 + [("zeros", 0.25)]
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t (g VARCHAR, v DOUBLE)")
    connection.executemany("INSERT INTO t VALUES (?, ?)", rows)
    counts = "(SELECT g, v, count(*) AS n FROM t GROUP BY g, v)"
    got = connection.sql(
        f"SELECT * FROM {quantiles_from_counts_sql(counts, 'g', QUANTILES)} ORDER BY g"
    ).fetchall()
    want = connection.sql(
        f"SELECT g, quantile_cont(v, {QUANTILES}) FROM t GROUP BY g ORDER BY g"
    ).fetchall()
    assert [row[0] for row in got] == ["a", "b", "c", "one", "two", "zeros"]
    for got_row, (group, values) in zip(got, want, strict=True):
        assert got_row[0] == group
        assert list(got_row[1:]) == values  # bit for bit: same ranks, same interpolation
    # two values: linear between them
    assert got[4][1:] == pytest.approx((1.0, 1.15, 2.5, 3.85, 3.97, 4.0), abs=1e-12)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rollups") / ".devloop-workspace"
    simulate(out, hours=5, projects=2, agents_per_project=2, seed=3)
    return out


def _cut(ws: Path) -> TimeRange:
    first = min(p.start for p, _ in iter_partitions(ws / "metrics", "samples"))
    return TimeRange(
        first + timedelta(minutes=41, seconds=7), first + timedelta(hours=3, seconds=5)
    )


@pytest.mark.parametrize("cut", [False, True])
def test_peak_rollups_equal_the_series_in_polars(simulated: Path, cut: bool) -> None:
    peaks = sys.modules["devloop.analytics.peaks"]
    with Store(simulated) as store:
        selection = store.select(_cut(simulated) if cut else None)
        found = peaks._series_peaks_rollups(store, selection)
        assert found is not None  # every project has a process at every tick
        assert store.sources(selection).cached["workspace"]  # closed hours were rolled up
        rows = store.frame(f"SELECT * FROM {found[0]}", found[1])
        fast = [rows.filter(rows["scope"] == scope) for scope in ("workspace", "project")]
        reference = series_peaks(store, selection)
        types = dtypes(peaks.PEAK_KINDS)
        columns = [c for c in peaks.PEAK_COLUMNS if c not in ("scope", "agent")]
        for got, want in zip(fast, reference, strict=True):
            got = got.select(columns).cast({c: types[c] for c in columns}).sort("project")
            want = want.select(columns).cast({c: types[c] for c in columns}).sort("project")
            assert_frame_equal(got, want, abs_tol=1e-9, rel_tol=1e-12)
        agent_rows, agent_params = peaks._agent_peaks(store, selection)
        agents = store.frame(f"SELECT * FROM {agent_rows}", agent_params)
        sums = store.frame(
            "SELECT project, agent, quantile_cont(100.0 * cpu / 2, 0.95) AS p95 FROM ("
            "SELECT ts, project, agent, sum(cpu_cores) AS cpu FROM samples "
            f"WHERE {store.where(selection)[0]} GROUP BY ALL) GROUP BY ALL",
            store.where(selection)[1],
        )
    joined = agents.join(sums, on=["project", "agent"])
    assert joined.height == 4
    assert (joined["cpu_p95_percent"] - joined["p95"]).abs().max() < 1e-9  # type: ignore[operator]


def test_a_project_idle_at_some_ticks_leaves_the_rollup_path(tmp_path: Path) -> None:
    """A third project sampled at one tick only: its series is mostly idle ticks (0 %), which
    the rollups do not hold, so the report takes the series path and still counts them."""
    ws = build_store(tmp_path / ".devloop-workspace")
    write_table(
        ws / "metrics",
        "samples",
        pa.Table.from_pylist(
            [
                {
                    "ts": at(2),
                    "host": "h1",
                    "project": "batch",
                    "agent": "job",
                    "pid": 999,
                    "start_time": at(2),
                    "cpu_cores": 2.0,
                    "rss_bytes": 1024,
                    "fds": 1,
                    "threads": 1,
                }
            ]
        ),
    )
    write_table(
        ws / "metrics",
        "processes",
        pa.Table.from_pylist(
            [
                {
                    "ts": at(2),
                    "host": "h1",
                    "pid": 999,
                    "start_time": at(2),
                    "project": "batch",
                    "agent": "job",
                    "name": "job",
                    "cmdline": "job",
                }
            ]  # fmt: skip
        ),
    )
    peaks = sys.modules["devloop.analytics.peaks"]
    with Store(ws) as store:
        selection = store.select()
        assert peaks._series_peaks_rollups(store, selection) is None
        report = peak_usage(store)
    batch = report.peaks.filter(
        (report.peaks["scope"] == "project") & (report.peaks["project"] == "batch")
    ).row(0, named=True)
    ticks = batch["ticks"]
    assert ticks > 1  # every tick of the range, not only the one it ran at
    assert batch["cpu_peak_percent"] == 50.0  # 2 cores of 4
    assert batch["cpu_avg_percent"] == pytest.approx(50.0 / ticks)
