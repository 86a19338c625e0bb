"""``efficiency`` computed in DuckDB (limits looked up per span, the workspace from its rollup)
gives what the polars path gives from the dense series with ``join_asof``: with limits that
change inside an hour, ranges that cut hours, several hosts, filters, and a cache cold, warm
or deleted. Where the per-tick sums are not the whole series, the polars path answers."""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from devloop.analytics import Store, efficiency
from devloop.analytics.query import Selection
from devloop.analytics.timerange import TimeRange
from devloop.simulate import simulate
from devloop.store import write_rollups, write_table
from devloop.store.db import ROLLUPS_DIR
from tests.helpers import reference
from tests.helpers.stores import copy_without_cache
from tests.test_analytics_reports import GB, MB, _series, at, build_store

#: The module (``devloop.analytics.efficiency`` is also the name of the function).
EFF = importlib.import_module("devloop.analytics.efficiency")
START = datetime(2026, 1, 5, tzinfo=UTC)


def _limit(ts: datetime, host: str, project: str, cpu: float | None, memory: int) -> dict[str, Any]:
    return {
        "ts": ts,
        "host": host,
        "project": project,
        "agent": "",
        "cpu_limit_percent": cpu,
        "memory_limit_bytes": memory,
        "priority": 1,
        "strategy": "weighted",
        "reason": "autotune",
    }


@pytest.fixture(scope="module")
def changing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three simulated hours whose project limits change inside hours, off and on ticks."""
    out = tmp_path_factory.mktemp("eff") / ".devloop-workspace"
    simulate(out, hours=3, projects=3, agents_per_project=2, seed=5)
    rows = [
        _limit(START + timedelta(minutes=47, seconds=13.5), "sim-host", "proj-1", 5.0, 200 * MB),
        _limit(START + timedelta(hours=1, minutes=20), "sim-host", "proj-2", None, 300 * MB),
        _limit(START + timedelta(hours=2, minutes=10, seconds=7), "sim-host", "proj-2", 12.5, GB),
        _limit(START + timedelta(hours=2, microseconds=-1), "sim-host", "proj-3", 7.5, 100 * MB),
    ]
    write_table(out / "metrics", "limits", pa.Table.from_pylist(rows))
    return out


@pytest.fixture
def changing_copy(changing: Path, tmp_path: Path) -> Path:
    return copy_without_cache(changing, tmp_path)


@pytest.fixture
def store_of() -> Iterator[Callable[[Path], Store]]:
    """Opens stores, closed after the test."""
    opened: list[Store] = []

    def open_(path: Path, now: datetime | None = None) -> Store:
        opened.append(Store(path, now=now))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def _same(in_sql: Any, in_polars: Any) -> None:
    assert in_sql[2] == in_polars[2]
    for got, want in zip(in_sql[:2], in_polars[:2], strict=True):
        assert got.height == want.height > 0
        got = got.select(want.columns).sort(want.columns[0])
        want = want.sort(want.columns[0])
        assert_frame_equal(got, want, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-6)


def _agree(store: Store, selection: Selection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The DuckDB statistics (the sums' path and the whole series' path), checked against the
    same figures derived by hand in polars."""
    in_sql = EFF._stats_sql(store, selection)
    assert in_sql is not None
    in_polars = reference.efficiency_stats(store, selection)
    _same(in_sql, in_polars)
    _same(EFF._stats_series(store, selection), in_polars)
    return in_sql[0], in_sql[1]


CUT = TimeRange(
    start=START + timedelta(minutes=13, seconds=7, milliseconds=250),
    end=START + timedelta(hours=2, minutes=41, seconds=30),
)


@pytest.mark.parametrize(
    ("time_range", "projects", "agents"),
    [
        (None, (), ()),
        (CUT, (), ()),
        (TimeRange(start=START + timedelta(hours=1), end=START + timedelta(hours=2)), (), ()),
        (None, ("proj-1", "proj-2"), ()),
        (CUT, ("proj-[23]",), ()),
        (CUT, (), ("linter",)),
    ],
)
def test_limits_changing_inside_hours(
    changing: Path, store_of: Any, time_range: TimeRange | None, projects: Any, agents: Any
) -> None:
    store = store_of(changing)
    selection = store.select(time_range, projects, agents)
    per_project, _ = _agree(store, selection)
    # The changes are looked up per tick, not per hour, and are seen.
    assert EFF._Limits.read(store, selection, *_limits(store), "sim-host").projects().ranged
    allocated = dict(per_project.select("project", "cpu_allocated_percent").iter_rows())
    initial = {"proj-1": 30.0, "proj-2": 20.0, "proj-3": 10.0}
    if time_range is None or time_range is CUT:
        for project, value in allocated.items():
            assert value is not None and value != pytest.approx(initial[project])
    else:  # 01:00-02:00: proj-3's change at 01:59:59.999999 is in force at no tick
        assert allocated["proj-1"] == 5.0 and allocated["proj-3"] == 10.0


def _limits(store: Store) -> tuple[str, list[Any]]:
    sql, params, _ = EFF.limits_relation(store)
    return sql, params


def test_constant_limits_need_no_tick(tmp_path: Path, store_of: Any) -> None:
    ws = tmp_path / ".devloop-workspace"
    simulate(ws, hours=2, projects=2, agents_per_project=2, seed=3)
    store = store_of(ws)
    for time_range in (None, CUT):
        selection = store.select(time_range)
        limits = EFF._Limits.read(store, selection, *_limits(store), "sim-host")
        assert not limits.projects().ranged and not limits.workspace(["proj-1", "proj-2"]).ranged
        _agree(store, selection)


def test_the_workspace_rollup_and_the_sums_agree(changing: Path, store_of: Any) -> None:
    """Every project selected: the workspace series comes from the ``workspace`` rollup; named
    (all of them, by a glob): it is summed from the project series. Same answer."""
    store = store_of(changing)
    for time_range in (None, CUT):
        whole = efficiency(store, time_range)
        named = efficiency(store, time_range, projects=["proj-*"])
        assert named.notes == whole.notes
        assert_frame_equal(named.projects, whole.projects, rel_tol=1e-9, abs_tol=1e-6)
        where, params = store.where(store.select(time_range), names=False)
        ((ticks,),) = store.rows(
            f"SELECT count(*) FROM (SELECT DISTINCT host, ts FROM system WHERE {where})", params
        )
        assert whole.projects["ticks"].to_list() == [ticks] * 4


def test_cache_cold_warm_deleted_and_raw_identical(changing_copy: Path) -> None:
    def report(use_cache: bool = True) -> list[Any]:
        with Store(changing_copy) as store:
            store.use_cache = use_cache
            return [json.dumps(efficiency(store, r).to_json(), sort_keys=True) for r in (None, CUT)]

    cold = report()
    assert not (changing_copy / "metrics" / ROLLUPS_DIR / "workspace").exists()  # only reads
    write_rollups(changing_copy / "metrics")  # as compaction does
    assert (changing_copy / "metrics" / ROLLUPS_DIR / "workspace").is_dir()
    assert report() == cold
    shutil.rmtree(changing_copy / "metrics" / ROLLUPS_DIR)
    assert report() == cold
    assert report(use_cache=False) == cold


def _second_host(folder: Path) -> None:
    """Add host h2 (8 cores) to the tiny store: its samples are h1's with twice the CPU; api
    has no limit on h2 before tick 4; api's limit on h1 drops to 15% between ticks 5 and 6."""
    root = folder / "metrics"
    rows = [dict(row, host="h2", cpu_cores=2 * row["cpu_cores"]) for row in _series()]
    write_table(root, "samples", pa.Table.from_pylist(rows))
    system = [
        {"ts": at(t), "host": "h2", "cores": 8, "cpu_busy_cores": 1.0, "mem_total_bytes": 16 * GB}
        for t in range(10)
    ]
    write_table(root, "system", pa.Table.from_pylist(system))
    limits = [
        _limit(at(5.5), "h1", "api", 15.0, GB),
        _limit(at(4), "h2", "api", 30.0, 2 * GB),
        _limit(at(-60), "h2", "web", 20.0, 512 * MB),
    ]
    write_table(root, "limits", pa.Table.from_pylist(limits))


def test_two_hosts_exact(tmp_path: Path, store_of: Any) -> None:
    folder = build_store(tmp_path / ".devloop-workspace")
    _second_host(folder)
    store = store_of(folder)
    selection = store.select()
    per_project, workspace = _agree(store, selection)
    api = per_project.filter(pl.col("project") == "api").row(0, named=True)
    # h1: 30% at ticks 0-5, 15% at 6-9; h2: none at ticks 0-3, 30% at 4-9.
    assert api["ticks"] == 20
    assert api["cpu_allocated_percent"] == pytest.approx((6 * 30 + 4 * 15 + 6 * 30) / 16)
    # api is 60% at ticks 2-4 on both hosts: over 30% on h1 at 2-4, on h2 only at 4.
    assert api["cpu_over_limit_seconds"] == 4.0
    whole = workspace.row(0, named=True)
    # The workspace limit: h1 60% at ticks 0-5, 45% at 6-9; h2 none at 0-3, 50% at 4-9.
    assert whole["ticks"] == 20
    assert whole["cpu_allocated_percent"] == pytest.approx((6 * 60 + 4 * 45 + 6 * 50) / 16)
    report = efficiency(store)
    assert report.projects["ticks"].to_list() == [20, 20, 20]


def test_an_idle_tick_or_a_stray_sample_goes_to_polars(tmp_path: Path, store_of: Any) -> None:
    """A collector tick without samples is a tick of 0 for every project; samples at a moment
    without a collector tick are not in the series: the per-tick sums are then not the whole
    series, and the polars path (the dense series) answers."""
    idle = build_store(tmp_path / "idle" / ".devloop-workspace")
    write_table(
        idle / "metrics",
        "system",
        pa.Table.from_pylist([{"ts": at(10), "host": "h1", "cores": 4, "cpu_busy_cores": 0.0}]),
    )
    stray = build_store(tmp_path / "stray" / ".devloop-workspace")
    late = [dict(row, ts=at(9.5)) for row in _series() if row["ts"] == at(9)]
    write_table(stray / "metrics", "samples", pa.Table.from_pylist(late))
    for folder, ticks in ((idle, 11), (stray, 10)):
        store = store_of(folder)
        selection = store.select(TimeRange(start=at(0), end=at(11)))
        assert EFF._stats_sql(store, selection) is None
        _same(EFF._stats_series(store, selection), reference.efficiency_stats(store, selection))
        report = efficiency(store, TimeRange(start=at(0), end=at(11)))
        assert report.projects["ticks"].to_list() == [ticks] * 3
        whole = report.to_json()["workspace"]
        # api + web average 25% + 10% over the 10 busy ticks (the stray sample is not a tick).
        assert whole["cpu_used_avg_percent"] == pytest.approx(350.0 / ticks)


def test_limits_from_workspace_json(tmp_path: Path, store_of: Any) -> None:
    store = store_of(build_store(tmp_path / ".devloop-workspace", limits=False))
    per_project, workspace = _agree(store, store.select())
    assert per_project["cpu_allocated_percent"].to_list() == [30.0, 30.0]
    assert workspace["memory_allocated_bytes"].to_list() == [2 * GB]
    assert EFF._stats_sql(store, store.select())[2] == (
        "the store holds no limits: using the limits of the current workspace.json"
    )


def test_a_limit_first_set_inside_the_range(tmp_path: Path, store_of: Any) -> None:
    """One limit row per project, web's at tick 4: web has no limit before it (and neither has
    the workspace), so only ticks 4-9 are compared with its 4%."""
    folder = build_store(tmp_path / ".devloop-workspace", limits=False)
    limits = [_limit(at(-60), "h1", "api", 30.0, GB), _limit(at(4), "h1", "web", 4.0, GB)]
    write_table(folder / "metrics", "limits", pa.Table.from_pylist(limits))
    store = store_of(folder)
    selection = store.select()
    assert EFF._Limits.read(store, selection, *_limits(store), "h1").projects().ranged
    per_project, workspace = _agree(store, selection)
    web = per_project.filter(pl.col("project") == "web").row(0, named=True)
    assert (web["cpu_allocated_percent"], web["cpu_over_limit_seconds"]) == (4.0, 6.0)
    whole = workspace.row(0, named=True)
    # 34% at ticks 4-9, where the workspace uses 65, 15, 15, 40, 40, 15.
    assert (whole["cpu_allocated_percent"], whole["cpu_over_limit_seconds"]) == (34.0, 3.0)


def test_cached_hours_and_the_open_hour_together(tmp_path: Path, store_of: Any) -> None:
    """The hour being written is read from raw rows, the closed ones from their rollups."""
    ws = tmp_path / ".devloop-workspace"
    now = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)  # a clock of our own: hour 12 is open
    simulate(
        ws, hours=1.5, projects=2, agents_per_project=2, seed=7, start=now - timedelta(hours=1.5)
    )
    shutil.rmtree(ws / "metrics" / ROLLUPS_DIR)  # simulate's rollups, made by the real clock
    write_rollups(ws / "metrics", now=now)  # compaction at 12:30: hour 11 is closed
    store = store_of(ws, now)
    first = store.select()
    assert store.sources(first).raw
    assert store.sources(first).cached["workspace"]
    _agree(store, first)
    cut = TimeRange(start=first.start + timedelta(minutes=7, seconds=3), end=first.end)
    _agree(store, store.select(cut))
