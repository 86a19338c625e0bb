"""The analytics API on a tiny hand-built store with exact expected numbers.

The store (``build_store``): host h1 with 4 cores, 10 ticks at 1 s from 2026-01-05 10:00:00 UTC,
two projects with two agents each, limits 30% / 1GB per project:

    tick            0   1   2   3   4   5   6   7   8   9      (CPU % of the machine)
    api/linter     10  10  10  10  10  10  10  10  10  10      0.4 cores, 100MB
    api/tests       0   0  50  50  50   0   0   0   0   0      2.0 cores, 200MB when busy, else 50MB
    web/linter      5   5   5   5   5   5   5   5   5   5      0.2 cores, 64MB
    web/tests       0   0   0   0   0   0   0  25  25   0      1.0 core, 64MB (only ticks 5-9)
    api            10  10  60  60  60  10  10  10  10  10
    web             5   5   5   5   5   5   5  30  30   5
    workspace      15  15  65  65  65  15  15  40  40  15
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from devloop.analytics import (
    audit_query,
    bottlenecks,
    compare_summaries,
    efficiency,
    export_metrics,
    health,
    parse_range,
    peak_usage,
    run_sql,
    summarise,
    theil_sen,
    workspace_metrics,
)
from devloop.analytics.timerange import TimeRange
from devloop.errors import NoSamplesError, UsageError
from devloop.store import StoreWarning, write_table

T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
MB = 1024**2
GB = 1024**3
TICKS = 10


def at(tick: int | float) -> datetime:
    return T0 + timedelta(seconds=tick)


def _series() -> list[dict]:
    rows = []
    for tick in range(TICKS):
        busy = 2 <= tick <= 4
        web_busy = tick in (7, 8)
        procs = [
            ("api", "linter", 101, 0.4, 100 * MB, 10, 2),
            ("api", "tests", 102, 2.0 if busy else 0.0, (200 if busy else 50) * MB, 20, 4),
            ("web", "linter", 201, 0.2, 64 * MB, 10 + tick, 2),
        ]
        if tick >= 5:
            procs.append(("web", "tests", 202, 1.0 if web_busy else 0.0, 64 * MB, 30, 8))
        for project, agent, pid, cpu, rss, fds, threads in procs:
            rows.append(
                {
                    "ts": at(tick),
                    "host": "h1",
                    "project": project,
                    "agent": agent,
                    "pid": pid,
                    "start_time": at(-100 if pid != 202 else 4.5),
                    "cpu_cores": cpu,
                    "rss_bytes": rss,
                    "fds": fds,
                    "threads": threads,
                    "state": "running" if cpu > 0.5 else "sleeping",
                }
            )
    return rows


def build_store(folder: Path, *, limits: bool = True, workspace: bool = True) -> Path:
    """The module doc's store in ``folder`` (a .devloop-workspace folder); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    if workspace:
        (folder / "workspace.json").write_text(
            json.dumps(
                {
                    "workspace_name": "tiny",
                    "projects": [{"name": "api", "path": "api"}, {"name": "web", "path": "web"}],
                    "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
                }
            )
        )
    root = folder / "metrics"
    write_table(root, "samples", pa.Table.from_pylist(_series()))
    write_table(
        root,
        "system",
        pa.Table.from_pylist(
            [
                {
                    "ts": at(t),
                    "host": "h1",
                    "cores": 4,
                    "cpu_busy_cores": 1.0,
                    "mem_total_bytes": 16 * GB,
                    "mem_used_bytes": 4 * GB + t * MB,
                }
                for t in range(TICKS)
            ]
        ),
    )
    processes = {(r["project"], r["agent"], r["pid"]): r for r in _series()}
    write_table(
        root,
        "processes",
        pa.Table.from_pylist(
            [
                {
                    "ts": r["ts"],
                    "host": "h1",
                    "pid": r["pid"],
                    "start_time": r["start_time"],
                    "project": project,
                    "agent": agent,
                    "name": agent,
                    "cmdline": agent,
                }
                for (project, agent, _), r in processes.items()
            ]
        ),
    )
    if limits:
        write_table(
            root,
            "limits",
            pa.Table.from_pylist(
                [
                    {
                        "ts": at(-60),
                        "host": "h1",
                        "project": p,
                        "agent": "",
                        "cpu_limit_percent": 30.0,
                        "memory_limit_bytes": GB,
                        "priority": 2,
                        "strategy": "equal",
                        "reason": "start",
                    }
                    for p in ("api", "web")
                ]
            ),
        )
    write_table(
        root,
        "events",
        pa.Table.from_pylist(
            [
                {
                    "ts": at(3),
                    "host": "h1",
                    "action": "pause",
                    "scope": "project",
                    "project": "api",
                    "metric": "cpu",
                    "value": 60.0,
                    "limit": 30.0,
                    "message": "paused api",
                },
            ]
        ),
    )
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return build_store(tmp_path / ".devloop-workspace")


def test_peak_usage_exact(store: Path) -> None:
    report = peak_usage(store)
    rows = {(r["scope"], r["project"], r["agent"]): r for r in report.peaks.iter_rows(named=True)}
    assert list(rows) == [
        ("workspace", None, None),
        ("project", "api", None),
        ("agent", "api", "linter"),
        ("agent", "api", "tests"),
        ("project", "web", None),
        ("agent", "web", "linter"),
        ("agent", "web", "tests"),
    ]
    whole = rows[("workspace", None, None)]
    # The coincident peak (65 at tick 2), not the sum of the project peaks (60 + 30).
    assert whole["cpu_peak_percent"] == pytest.approx(65.0)
    assert whole["cpu_peak_at"] == at(2)
    assert whole["cpu_p95_percent"] == pytest.approx(65.0)
    assert whole["cpu_avg_percent"] == pytest.approx(35.0)
    assert whole["memory_peak_bytes"] == (100 + 200 + 64) * MB
    assert whole["memory_peak_at"] == at(2)
    assert whole["ticks"] == 10
    api = rows[("project", "api", None)]
    assert (api["cpu_peak_percent"], api["cpu_peak_at"]) == (pytest.approx(60.0), at(2))
    assert api["cpu_avg_percent"] == pytest.approx(25.0)
    assert (api["memory_peak_bytes"], api["memory_peak_at"]) == (300 * MB, at(2))
    assert (api["fds_peak"], api["threads_peak"]) == (30, 6)
    web = rows[("project", "web", None)]
    assert (web["cpu_peak_percent"], web["cpu_peak_at"]) == (pytest.approx(30.0), at(7))
    # web's series is 5 x 8 and 30 x 2: p95 at position 8.55 of the sorted ten is 30.
    assert web["cpu_p95_percent"] == pytest.approx(30.0)
    assert web["fds_peak"] == 19 + 30
    tests = rows[("agent", "web", "tests")]
    assert tests["ticks"] == 5  # an agent's figures cover the ticks at which it had a process
    assert tests["cpu_avg_percent"] == pytest.approx(10.0)
    assert tests["cpu_p95_percent"] == pytest.approx(25.0)


def test_peak_usage_filters_and_range(store: Path) -> None:
    report = peak_usage(store, parse_range(start="2026-01-05T10:00:05Z"), projects=["w*"])
    assert report.peaks["project"].to_list() == [None, "web", "web", "web"]
    assert report.peaks["ticks"].to_list() == [5, 5, 5, 5]
    assert report.selection.start == at(5)
    report = peak_usage(store, agents=["tests"])
    whole = report.peaks.row(0, named=True)
    assert whole["cpu_peak_percent"] == pytest.approx(50.0)  # only the tests agents
    assert report.peaks["agent"].to_list() == [None, None, "tests", None, "tests"]


def test_bottlenecks_exact(store: Path) -> None:
    report = bottlenecks(store, threshold=80)
    got = [
        (
            r["rank"],
            r["scope"],
            r["project"],
            r["resource"],
            r["start"],
            r["end"],
            r["ticks"],
            r["duration_seconds"],
            r["limit"],
        )
        for r in report.intervals.iter_rows(named=True)
    ]
    assert got == [
        (1, "project", "api", "cpu", at(2), at(4), 3, 3.0, 30.0),
        (2, "workspace", None, "cpu", at(2), at(4), 3, 3.0, 60.0),
        (3, "project", "web", "cpu", at(7), at(8), 2, 2.0, 30.0),
    ]
    first, second, third = report.intervals.iter_rows(named=True)
    assert first["peak_percent_of_limit"] == pytest.approx(200.0)
    assert second["peak"] == pytest.approx(65.0)
    assert [(d["agent"], round(d["share_percent"], 3)) for d in first["drivers"]] == [
        ("tests", 83.333),
        ("linter", 16.667),
    ]
    assert [
        (d["project"], d["agent"], round(d["share_percent"], 3)) for d in second["drivers"]
    ] == [("api", "tests", 76.923), ("api", "linter", 15.385), ("web", "linter", 7.692)]
    assert third["avg_percent_of_limit"] == pytest.approx(100.0)
    shorter = bottlenecks(store, threshold=80, min_duration=3)
    assert shorter.intervals["rank"].to_list() == [1, 2]
    memory = bottlenecks(store, threshold=25, resources=("memory",))
    assert memory.intervals.select("project", "ticks").rows() == [("api", 3)]  # 300MB >= 256MB
    with pytest.raises(UsageError, match="unknown resource 'disk'"):
        bottlenecks(store, resources=("disk",))


def test_limits_fall_back_to_workspace_json(tmp_path: Path) -> None:
    store = build_store(tmp_path / ".devloop-workspace", limits=False)
    report = bottlenecks(store, threshold=80, resources=("cpu",))
    assert report.notes == (
        "the store holds no limits: using the limits of the current workspace.json",
    )
    assert report.intervals["limit"].to_list() == [30.0, 60.0, 30.0]


def test_efficiency_exact(store: Path) -> None:
    report = efficiency(store)
    api, web, whole = report.projects.iter_rows(named=True)
    assert api["project"] == "api" and whole["scope"] == "workspace"
    assert api["cpu_allocated_percent"] == 30.0
    assert api["cpu_used_avg_percent"] == pytest.approx(25.0)
    assert api["cpu_utilisation_percent"] == pytest.approx(25.0 / 30.0 * 100)
    assert api["cpu_idle_allocation_percent"] == pytest.approx(5.0)
    assert api["cpu_over_limit_seconds"] == 3.0
    assert api["memory_used_avg_bytes"] == pytest.approx((7 * 150 + 3 * 300) * MB / 10)
    assert api["memory_used_peak_bytes"] == 300 * MB
    assert api["pauses"] == 1 and web["pauses"] == 0 and whole["pauses"] == 1
    assert web["cpu_used_avg_percent"] == pytest.approx(10.0)
    assert web["cpu_over_limit_seconds"] == 0.0  # 30% is not above a 30% limit
    assert whole["cpu_allocated_percent"] == 60.0
    assert whole["cpu_used_avg_percent"] == pytest.approx(35.0)
    assert whole["cpu_used_p95_percent"] == pytest.approx(65.0)
    assert whole["cpu_over_limit_seconds"] == 3.0
    assert whole["memory_allocated_bytes"] == 2 * GB
    data = report.to_json()
    assert [p["project"] for p in data["projects"]] == ["api", "web"]
    assert data["workspace"]["cpu_used_avg_percent"] == 35.0
    assert any("web: uses 33% of its CPU allocation" in n for n in report.notes)
    assert any("autotune" in n for n in report.notes)


def test_workspace_metrics_newest_tick(store: Path) -> None:
    view = workspace_metrics(store, detailed=True, compare_config=True, now=at(9 + 1))
    assert view.at == at(9)
    assert view.age_seconds == 1.0 and not view.stale
    assert view.cpu_percent == pytest.approx(15.0)
    assert (view.cpu_limit_percent, view.memory_limit_bytes) == (60.0, 2 * GB)
    assert view.memory_bytes == (100 + 50 + 64 + 64) * MB
    assert view.projects.rows() == [
        ("api", pytest.approx(10.0), 30.0, 150 * MB, GB, 2),
        ("web", pytest.approx(5.0), 30.0, 128 * MB, GB, 2),
    ]
    assert view.agents is not None and view.config is not None
    assert view.agents.select("project", "agent", "fds", "threads", "state").rows() == [
        ("api", "linter", 10, 2, "idle"),
        ("api", "tests", 20, 4, "idle"),
        ("web", "linter", 19, 2, "idle"),
        ("web", "tests", 30, 8, "idle"),
    ]
    assert view.config.select(
        "project", "configured_cpu_percent", "in_force_cpu_percent", "used_avg_cpu_percent"
    ).rows() == [
        ("api", 30.0, 30.0, pytest.approx(25.0)),
        ("web", 30.0, 30.0, pytest.approx(10.0)),
    ]
    data = view.to_json()
    assert data["workspace"] == {
        "cpu_percent": 15.0,
        "memory_mb": 278.0,
        "cpu_limit": 60.0,
        "memory_limit_mb": 2048.0,
        "memory_bytes": 278 * MB,
        "memory_limit_bytes": 2 * GB,
    }
    assert data["at"] == "2026-01-05T10:00:09Z"
    stale = workspace_metrics(store, now=at(3600))
    assert stale.stale and stale.age_seconds == 3591.0


def test_export_exact(store: Path) -> None:
    rows = export_metrics(store, interval=5).rows
    assert rows.columns == [
        "interval_start",
        "project",
        "ticks",
        "cpu_avg_percent",
        "cpu_max_percent",
        "memory_max_bytes",
        "fds_max",
        "threads_max",
    ]
    assert rows.select("interval_start", "project", "ticks").rows() == [
        (at(0), "api", 5),
        (at(0), "web", 5),
        (at(5), "api", 5),
        (at(5), "web", 5),
    ]
    assert rows["cpu_avg_percent"].to_list() == pytest.approx([40.0, 5.0, 10.0, 15.0])
    assert rows["cpu_max_percent"].to_list() == pytest.approx([60.0, 5.0, 10.0, 30.0])
    assert rows["memory_max_bytes"].to_list() == [300 * MB, 64 * MB, 150 * MB, 128 * MB]
    detailed = export_metrics(store, interval=10, detailed=True, agents=["tests"]).rows
    assert detailed.select("project", "agent", "ticks", "cpu_max_percent").rows() == [
        ("api", "tests", 10, pytest.approx(50.0)),
        ("web", "tests", 5, pytest.approx(25.0)),
    ]


def test_audit_exact(store: Path) -> None:
    report = audit_query(store, "memory", agents=["*"], projects=["api"])
    assert report.agents.select(
        "project", "agent", "ticks", "processes", "min", "max", "max_at"
    ).rows() == [
        ("api", "linter", 10, 1, 100.0 * MB, 100.0 * MB, at(0)),
        ("api", "tests", 10, 1, 50.0 * MB, 200.0 * MB, at(2)),
    ]
    cpu = audit_query(store, "cpu", agents=["tests"]).agents
    assert cpu["avg"].to_list() == pytest.approx([15.0, 10.0])
    assert cpu["p50"].to_list() == pytest.approx([0.0, 0.0])
    with pytest.raises(UsageError, match="unknown metric 'disk'"):
        audit_query(store, "disk")


def test_health_finds_the_fd_leak(store: Path) -> None:
    report = health(store, min_life=5, fd_per_hour=1000, now=at(10))
    leaks = report.fds.filter(pl.col("leak"))
    # web/linter opens one more file handle every second: 3600 an hour, tau 1.
    assert leaks.select("project", "agent", "pid").rows() == [("web", "linter", 201)]
    assert leaks["slope_per_hour"][0] == pytest.approx(3600.0)
    assert leaks["tau"][0] == pytest.approx(1.0)
    assert report.collector_fresh and report.spool_segments == 0
    assert report.findings == (
        "file-handle leak: web/linter pid 201 opens 3600.0 more per hour over 0.0h (tau 1.00)",
    )
    assert not report.memory["leak"].any()


def test_theil_sen_is_robust() -> None:
    import numpy as np

    x = np.arange(10, dtype=np.float64)
    y = 2 * x + 1
    y[3] = 100.0  # one outlier does not move the median slope
    slope, tau = theil_sen(x, y)
    assert slope == 2.0
    assert tau == pytest.approx(33 / 45)  # 6 of the 45 pairs disagree
    assert theil_sen(np.zeros(3), np.arange(3.0)) == (0.0, 0.0)


def test_sql_narrowed_views(store: Path) -> None:
    frame = run_sql(store, "SELECT count(*) AS n FROM samples")
    assert frame["n"].to_list() == [35]
    frame = run_sql(
        store, "SELECT count(*) AS n FROM samples", parse_range(period="2s"), projects=["api"]
    )
    assert frame["n"].to_list() == [4]
    with pytest.raises(UsageError, match="SQL error: .*nosuch"):
        run_sql(store, "SELECT * FROM nosuch")


def test_summary_and_compare(store: Path) -> None:
    summary = summarise(store)
    assert summary["kind"] == "devloop-metrics-summary" and summary["ticks"] == 10
    assert summary["host"] == {"cores": 4, "memory_total_bytes": 16 * GB}
    assert summary["system"]["cpu_percent"] == {"avg": 25.0, "p95": 25.0, "max": 25.0}
    assert summary["agents"]["cpu_percent"]["max"] == 65.0
    assert summary["projects"]["web"]["cpu_percent"]["avg"] == 10.0
    base = json.loads(json.dumps(summary))
    base["agents"]["cpu_percent"]["max"] = 5.0
    frame = compare_summaries(base, summary)
    row = frame.filter(
        pl.col("scope") == "agents", pl.col("metric") == "cpu_percent", pl.col("statistic") == "max"
    ).row(0)
    assert row == ("agents", "cpu_percent", "max", 5.0, 65.0, 60.0)


def test_bad_input(store: Path, tmp_path: Path) -> None:
    with pytest.raises(NoSamplesError) as info:
        peak_usage(store, parse_range(start="2026-02-01T00:00Z", end="2026-02-02T00:00Z"))
    assert str(info.value) == (
        "no samples between 2026-02-01 00:00:00 UTC and 2026-02-02 00:00:00 UTC; "
        "record some with `devloop workspace collect`"
    )
    with pytest.raises(UsageError) as unknown:
        peak_usage(store, projects=["shop"])
    assert str(unknown.value) == "unknown project 'shop' (known projects: api, web)"
    with pytest.raises(UsageError) as unknown_agent:
        efficiency(store, projects=["web"], agents=["mypy"])
    assert str(unknown_agent.value) == "unknown agent 'mypy' (known agents: linter, tests)"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoSamplesError, match="^no samples between the beginning of the store"):
        bottlenecks(empty)
    with pytest.raises(UsageError, match="give at most two"):
        TimeRange(start=at(0), end=at(1), period=timedelta(1))


def test_a_corrupt_file_is_skipped_with_a_warning(store: Path) -> None:
    bad = store / "metrics" / "samples" / "date=2026-01-05" / "hour=10" / "w-broken.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.warns(StoreWarning, match="w-broken.parquet"):
        report = peak_usage(store)
    assert report.peaks["cpu_peak_percent"][0] == pytest.approx(65.0)


def test_duckdb_and_polars_paths_agree(tmp_path: Path) -> None:
    """peak-usage and efficiency compute their project and workspace rows in DuckDB; the same
    figures re-derived from the project series in plain polars agree."""
    import sys

    from polars.testing import assert_frame_equal

    from devloop.analytics.query import Store
    from devloop.store.db import dtypes
    from tests.helpers import reference

    peaks_module = sys.modules["devloop.analytics.peaks"]
    efficiency_module = sys.modules["devloop.analytics.efficiency"]
    with Store(build_store(tmp_path / ".devloop-workspace")) as store:
        selection = store.select()
        # the report's workspace and project rows, as its query computes them
        series, params = peaks_module._series_peaks(store, selection)
        frame = store.frame(f"SELECT * FROM {series}", params)
        in_sql = tuple(frame.filter(frame["scope"] == scope) for scope in ("workspace", "project"))
        in_polars = reference.series_peaks(store, selection)
        types = dtypes(peaks_module.PEAK_KINDS)
        for got, want in zip(in_sql, in_polars, strict=True):
            columns = [c for c in peaks_module.PEAK_COLUMNS if c not in ("scope", "agent")]
            got = got.select(columns).cast({c: types[c] for c in columns}).sort("project")
            want = want.select(columns).cast({c: types[c] for c in columns}).sort("project")
            assert_frame_equal(got, want, abs_tol=1e-9)
        sql_stats = efficiency_module._stats_sql(store, selection)
        assert sql_stats is not None
        polars_stats = reference.efficiency_stats(store, selection)
        for in_sql in (sql_stats, efficiency_module._stats_series(store, selection)):
            assert in_sql[2] == polars_stats[2]
            for got, want in zip(in_sql[:2], polars_stats[:2], strict=True):
                got = got.select(want.columns).sort(want.columns[0])
                want = want.sort(want.columns[0])
                assert_frame_equal(got, want, check_dtypes=False, abs_tol=1e-9)


def test_a_tick_whose_cpu_is_unknown_is_never_the_peak(tmp_path: Path) -> None:
    """A process's first tick has no CPU rate (null): its peak is at a tick with one, read raw
    or from the rollups (a struct with a null value compared as the largest, so the null first
    tick was named the peak's tick)."""
    from devloop.store import write_rollups

    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "workspace_name": "nulls", "projects": [{"name": "api", "path": "api"}],
    }))  # fmt: skip
    root = folder / "metrics"
    write_table(root, "system", pa.Table.from_pylist([
        {"ts": at(t), "host": "h1", "cores": 4, "cpu_busy_cores": 1.0,
         "mem_total_bytes": 16 * GB, "mem_used_bytes": 4 * GB} for t in range(4)
    ]))  # fmt: skip
    write_table(root, "samples", pa.Table.from_pylist([
        {"ts": at(t), "host": "h1", "project": "api", "agent": "tests", "pid": 7,
         "start_time": at(-0.5), "cpu_cores": cpu, "rss_bytes": 10 * MB, "state": "running"}
        for t, cpu in enumerate([None, 0.4, 0.8, 0.2])
    ]))  # fmt: skip
    write_table(root, "processes", pa.Table.from_pylist([
        {"ts": at(0), "host": "h1", "pid": 7, "start_time": at(-0.5), "project": "api",
         "agent": "tests", "name": "pytest", "cmdline": "pytest"}
    ]))  # fmt: skip
    for read in ("raw", "rollups"):
        if read == "rollups":
            assert write_rollups(root) == 1
        rows = {(r["scope"], r["agent"]): r for r in peak_usage(folder).peaks.iter_rows(named=True)}
        for key in (("workspace", None), ("project", None), ("agent", "tests")):
            assert rows[key]["cpu_peak_percent"] == pytest.approx(20.0), (read, key)
            assert rows[key]["cpu_peak_at"] == at(2), (read, key)
