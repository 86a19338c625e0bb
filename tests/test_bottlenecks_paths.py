"""``bottlenecks`` reads a store several ways: the project series as dense arrays, an interval's
drivers as slices of the ``agent_series`` rollup (or from the ticks alone when an agent has a sum
at every tick), as ``agent_hour`` sums for the hours it covers whole, from raw rows for hours
without rollups, and tick by tick when some sums lie between collector ticks. Every way gives
the same report as the raw rows, and the drivers match a plain polars recomputation."""

from __future__ import annotations

import importlib
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from devloop.analytics import Store, bottlenecks
from devloop.analytics.timerange import TimeRange
from devloop.simulate import simulate
from devloop.store import live_files, write_rollups, write_table
from devloop.store.db import ROLLUPS_DIR, hours
from devloop.store.files import conform, read_rows, unlink_files, write_atomic
from devloop.store.layout import iter_partitions, scan_partition
from tests.helpers.stores import copy_without_cache, top_drivers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / ".devloop-workspace"
    simulate(out, hours=6, projects=3, agents_per_project=3, processes_per_agent=2, seed=5)
    return out


@pytest.fixture
def store(simulated: Path, tmp_path: Path) -> Path:
    return copy_without_cache(simulated, tmp_path)


def _cut(ws: Path) -> TimeRange:
    """A range cutting its first and last hours in the middle."""
    first = min(p.start for p, _ in iter_partitions(ws / "metrics", "samples"))
    return TimeRange(
        start=first + timedelta(minutes=41, seconds=7),
        end=first + timedelta(hours=4, minutes=12, seconds=30),
    )


#: threshold 80: short intervals; 50: short CPU, long memory ones; 20: memory over the whole
#: range (every hour covered whole).
CASES: dict[str, tuple[bool, dict[str, Any]]] = {
    "80": (False, {"threshold": 80}),
    "50": (False, {"threshold": 50}),
    "20": (False, {"threshold": 20}),
    "50 cut": (True, {"threshold": 50}),
    "20 cut": (True, {"threshold": 20}),
    "50 one project": (False, {"threshold": 50, "projects": ["proj-2"]}),
    "30 some agents": (True, {"threshold": 30, "agents": ["linter", "test-runner"]}),
}


def _reports(ws: Path, *, use_cache: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with Store(ws) as store:
        store.use_cache = use_cache
        for name, (cut, options) in CASES.items():
            found[name] = bottlenecks(store, _cut(ws) if cut else None, **options).to_json()
    return found


def _intervals(report: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = report["intervals"]
    return found


def test_every_way_of_reading_gives_the_raw_rows_report(store: Path) -> None:
    raw = _reports(store, use_cache=False)
    series = store / "metrics" / ROLLUPS_DIR / "agent_series"
    assert not list(series.rglob("*.parquet"))
    cold = _reports(store, use_cache=True)  # no rollups: raw rows, and a report never writes
    assert not list(series.rglob("*.parquet"))
    write_rollups(store / "metrics")  # what compaction does
    entries = list(series.rglob("hour=*/*.parquet"))  # the hourly entries, not the day's file
    assert len(entries) == len([h for h in hours(store / "metrics") if h.closed]) > 0
    warm = _reports(store, use_cache=True)
    shutil.rmtree(series)
    write_rollups(store / "metrics")
    rebuilt = _reports(store, use_cache=True)
    assert cold == raw
    assert warm == raw
    assert rebuilt == raw
    # The cases cover what they are meant to: short and hour-long intervals, all with drivers.
    durations = [i["duration_seconds"] for r in raw.values() for i in _intervals(r)]
    assert min(durations) < 60 and max(durations) >= 4 * 3600
    assert all(i["drivers"] for r in raw.values() for i in _intervals(r))
    assert {d["agent"] for i in _intervals(raw["30 some agents"]) for d in i["drivers"]} == {
        "linter",
        "test-runner",
    }


def _agent_sums(ws: Path) -> pl.DataFrame:
    """Per host, tick, project and agent: CPU cores and RSS bytes, from the raw samples."""
    return (
        pl.scan_parquet([str(p) for p in live_files(ws / "metrics", "samples")])
        .group_by("host", "ts", "project", "agent")
        .agg(
            pl.col("cpu_cores").cast(pl.Float64).sum().alias("cpu"),
            pl.col("rss_bytes").cast(pl.Float64).sum().alias("memory"),
        )
        .collect()
    )


def _check_drivers(report: dict[str, Any], agents: pl.DataFrame) -> int:
    """The drivers of the 20 longest and 20 shortest intervals recomputed from the per-tick
    sums; returns how many were checked."""
    checked = 0
    found = _intervals(report)
    for row in found[:20] + found[20:][-20:]:
        start = pl.lit(row["start"]).str.to_datetime(time_zone="UTC")
        end = pl.lit(row["end"]).str.to_datetime(time_zone="UTC")
        project = row["project"] if row["scope"] == "project" else None
        want = top_drivers(agents, start, end, row["resource"], project)
        got = row["drivers"]
        assert [(d["project"], d["agent"]) for d in got] == want.select("project", "agent").rows()
        assert [d["share_percent"] for d in got] == pytest.approx(want["share"].to_list(), abs=1e-5)
        checked += 1
    return checked


def _drop_some_ticks(ws: Path, hour_numbers: list[int]) -> None:
    """Rewrite the samples of those hours without the test runners' rows at three ticks in
    eight, so their runs of rows skip ticks."""
    partitions = iter_partitions(ws / "metrics", "samples")
    for number in hour_numbers:
        _, directory = partitions[number]
        (old,) = scan_partition(directory, "samples").live
        rows = read_rows(old.path, "samples")
        second = pc.second(rows["ts"])
        gone = pc.and_(
            pc.equal(rows["agent"], "test-runner"), pc.less(pc.bit_wise_and(second, 7), 3)
        )
        kept = rows.filter(pc.invert(gone))
        assert kept.num_rows < rows.num_rows
        write_atomic("samples", conform("samples", kept), directory / "w-gaps.parquet")
        unlink_files([old.path])


def test_agents_missing_at_some_ticks(store: Path) -> None:
    _drop_some_ticks(store, [1, 2, 3])
    raw = _reports(store, use_cache=False)
    assert _reports(store, use_cache=True) == raw
    agents = _agent_sums(store)
    assert sum(_check_drivers(raw[name], agents) for name in ("80", "50", "20")) > 50


def test_sums_between_collector_ticks_are_left_out(store: Path) -> None:
    """Samples half a tick after the collector's ticks are in no tick's sums: the report is
    that of the store without them (read tick by tick instead of as slices)."""
    before = _reports(store, use_cache=True)
    late = read_rows(live_files(store / "metrics", "samples")[2], "samples")
    late = late.filter(pc.equal(late["agent"], "linter")).slice(0, 300)
    shifted = pc.add(late["ts"], pa.scalar(500_000, pa.duration("us")))
    write_table(
        store / "metrics",
        "samples",
        late.set_column(late.schema.get_field_index("ts"), "ts", shifted),
    )
    assert _reports(store, use_cache=True) == before
    assert _reports(store, use_cache=False) == before


def _copy_to_host(ws: Path, host: str, cpu_scale: float) -> None:
    """A second host: every row of the first again, under ``host``, its CPU scaled."""
    root = ws / "metrics"
    for table in ("samples", "system", "processes", "limits"):
        for path in live_files(root, table):
            rows = read_rows(path, table)
            rows = rows.set_column(
                rows.schema.get_field_index("host"),
                "host",
                pa.array([host] * rows.num_rows, pa.string()),
            )
            if table == "samples":
                index = rows.schema.get_field_index("cpu_cores")
                scaled = pc.multiply(rows["cpu_cores"], pa.scalar(cpu_scale, pa.float32()))
                rows = rows.set_column(index, "cpu_cores", scaled)
            write_table(root, table, rows)


def test_two_hosts(store: Path) -> None:
    one = _reports(store, use_cache=True)
    _copy_to_host(store, "h2", 1.5)
    raw = _reports(store, use_cache=False)
    assert _reports(store, use_cache=True) == raw

    def unranked(report: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "rank"} for i in _intervals(report)]

    for name in ("80", "50 cut"):
        both, alone = unranked(raw[name]), unranked(one[name])
        assert len(both) > len(alone) > 0
        # The first host's intervals, drivers included, are those it had alone.
        assert all(interval in both for interval in alone)


@pytest.mark.parametrize("table_cells", [1 << 24, 0])
def test_top_shares_per_interval(monkeypatch: pytest.MonkeyPatch, table_cells: int) -> None:
    """The top of each group by share, ties in row order, as a table of groups or by sorts."""
    module = importlib.import_module("devloop.analytics.bottlenecks.drivers")
    monkeypatch.setattr(module, "_TOP_TABLE_CELLS", table_cells)
    group = np.array([0, 0, 0, 0, 2, 5, 5, 5, 5, 5])
    share = np.array([10.0, 40.0, 10.0, 40.0, 100.0, 5.0, 30.0, 30.0, 30.0, 5.0])
    assert module._top(group, share, 3).tolist() == [1, 3, 0, 4, 6, 7, 8]
