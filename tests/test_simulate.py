"""The simulator: exact row counts, determinism, the schema, the runs, the planted anomalies, the
CLI."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import click
import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from devloop.cli import DevloopGroup
from devloop.cli.simulate import simulate as simulate_command
from devloop.config import load_workspace
from devloop.config.allocation import allocate
from devloop.errors import UsageError
from devloop.simulate import SimulationSummary, simulate
from devloop.store import connect
from devloop.store.files import STORED_AS
from devloop.store.schema import TABLES
from devloop.tune.replay import demand_from_store

# Two busy hours: the over-limit episode falls in the middle quarter, 14:00-14:30.
START = datetime(2026, 1, 5, 13, tzinfo=UTC)
TABLE_NAMES = ("samples", "system", "processes", "events", "limits", "runs")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SimulationSummary:
    """2 hours, 3 projects x 4 agents, 1 s."""
    return simulate(tmp_path_factory.mktemp("sim") / "ws", hours=2, start=START)


def _sql(summary: SimulationSummary) -> duckdb.DuckDBPyConnection:
    """Views over the Parquet files read directly (no devloop code in the reading path)."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    for table in TABLE_NAMES:
        pattern = summary.metrics_dir / table / "**" / "*.parquet"
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', "
            "hive_partitioning = true)"
        )
    return connection


def _one(connection: duckdb.DuckDBPyConnection, sql: str) -> object:
    row = connection.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_row_counts_follow_the_model(small: SimulationSummary) -> None:
    sql = _sql(small)
    ticks, slots = 2 * 3600, 3 * 4
    assert small.ticks == ticks and small.processes_concurrent == slots
    # 1 start + 1 warn + 6 pauses and 6 resumes (20 s every 5 min from 14:01) + 1 stop.
    expected = {"samples": ticks * slots, "system": ticks, "events": 15, "limits": 3 + 3 * 4,
                "runs": 190}  # fmt: skip
    for table, rows in expected.items():
        assert _one(sql, f"SELECT count(*) FROM {table}") == rows, table
    distinct = _one(sql, "SELECT count(DISTINCT (pid, start_time)) FROM samples")
    assert _one(sql, "SELECT count(*) FROM processes") == distinct
    assert dict(small.rows) == {**expected, "processes": distinct}
    # Every slot holds exactly one process at every tick.
    per_tick = sql.execute("SELECT DISTINCT count(*) FROM samples GROUP BY ts").fetchall()
    assert per_tick == [(slots,)]
    assert small.files == sum(
        1 for path in small.metrics_dir.rglob("*.parquet") if "_rollups" not in path.parts
    )


def test_ticks_that_do_not_divide_an_hour(tmp_path: Path) -> None:
    summary = simulate(
        tmp_path / "ws", hours=1, interval=7, projects=2, agents_per_project=5,
        processes_per_agent=2, start=START,
    )  # fmt: skip
    sql = _sql(summary)
    ticks = math.ceil(3600 / 7)
    assert summary.rows["samples"] == ticks * 2 * 5 * 2
    assert _one(sql, "SELECT count(*) FROM samples") == ticks * 20
    last = START.replace(second=(ticks - 1) * 7 % 60, minute=(ticks - 1) * 7 // 60)  # 13:59:58
    assert _one(sql, "SELECT max(ts) FROM system") == last
    agents = sql.execute("SELECT DISTINCT agent FROM samples ORDER BY 1").fetchall()
    assert [a for (a,) in agents] == [
        "agent-5", "formatter", "linter", "test-runner", "type-checker",
    ]  # fmt: skip


def test_files_have_the_store_schema(small: SimulationSummary) -> None:
    assert set(TABLES) == set(TABLE_NAMES)
    for table in TABLE_NAMES:
        schema = TABLES[table]
        # On disk, a few columns have their storage type (files.STORED_AS).
        for name, stored in STORED_AS.items():
            if name in schema.names:
                index = schema.get_field_index(name)
                schema = schema.set(index, schema.field(index).with_type(stored))
        files = sorted((small.metrics_dir / table).rglob("*.parquet"))
        assert files, table
        for file in files:
            assert pq.read_schema(file).remove_metadata().equals(schema), file


def test_the_store_reads_it(small: SimulationSummary) -> None:
    with connect(small.metrics_dir) as connection:
        row = connection.execute("SELECT count(*), min(ts), max(hour) FROM samples").fetchone()
    assert row == (small.rows["samples"], START, 14)


def test_same_seed_same_rows(tmp_path: Path) -> None:
    def rows(name: str, seed: int) -> dict[str, list[tuple[object, ...]]]:
        out = tmp_path / name
        summary = simulate(out, hours=1, interval=5, seed=seed, start=START)
        sql = _sql(summary)
        # cwd names the output folder; everything else must match.
        for table in ("processes", "runs"):
            sql.execute(f"CREATE TABLE {table}_ AS SELECT * REPLACE "
                        f"(replace(cwd, '{out}', '') AS cwd) FROM {table}")  # fmt: skip
        return {
            table: sql.execute(
                f"SELECT * FROM {table + '_' if table in ('processes', 'runs') else table} "
                "ORDER BY ALL"
            ).fetchall()
            for table in TABLE_NAMES
        }

    first = rows("a", 0)
    assert first == rows("b", 0)
    assert first["runs"]
    assert first["samples"] != rows("c", 1)["samples"]


def test_the_workspace_loads_and_limits_match_allocate(small: SimulationSummary) -> None:
    loaded = load_workspace(small.out)
    assert [p.name for p in loaded.config.projects] == ["proj-1", "proj-2", "proj-3"]
    assert [p.priority for p in loaded.config.projects] == [1, 2, 3]
    assert loaded.config.resource_sharing.strategy == "weighted"
    assert list(loaded.agents["proj-2"].agents) == [
        "linter", "formatter", "test-runner", "type-checker",
    ]  # fmt: skip
    assert loaded.agents["proj-3"].agents["type-checker"].limits.max_file_handles == 1024
    assert loaded.config.project_dir(loaded.config.projects[0]).is_relative_to(small.out.resolve())
    allocation = allocate(loaded)
    written = (
        _sql(small)
        .execute("SELECT project, agent, cpu_limit_percent, memory_limit_bytes FROM limits")
        .fetchall()
    )
    expected = {(name, "", p.cpu, p.memory_bytes) for name, p in allocation.projects.items()}
    expected |= {(a.project, a.agent, a.cpu, a.memory_bytes) for a in allocation.agents.values()}
    assert set(written) == expected
    assert allocation.projects["proj-2"].cpu == 20.0  # weights 3:2:1 of the 60% pool


def test_counters_are_consistent(small: SimulationSummary) -> None:
    sql = _sql(small)
    bad = _one(
        sql,
        """
        WITH s AS (
            SELECT *, lag(cpu_seconds) OVER w AS prev_cpu, lag(io_read_bytes) OVER w AS prev_read,
                   lag(io_write_bytes) OVER w AS prev_write
            FROM samples WINDOW w AS (PARTITION BY pid, start_time ORDER BY ts)
        )
        SELECT count(*) FROM s WHERE prev_cpu IS NOT NULL AND (
            abs(cpu_seconds - prev_cpu - cpu_cores * 1.0) > 1e-4
            OR io_read_bytes < prev_read OR io_write_bytes < prev_write)
        """,
    )
    assert bad == 0
    assert _one(sql, "SELECT count(*) FROM samples WHERE start_time >= ts") == 0
    assert _one(sql, "SELECT count(*) FROM (SELECT pid FROM processes GROUP BY pid "
                     "HAVING count(*) > 1)") == 0  # fmt: skip
    states = {s for (s,) in sql.execute("SELECT DISTINCT state FROM samples").fetchall()}
    assert states == {"sleeping", "running", "stopped"}


def test_one_runs_row_per_run_as_its_ticks_saw_it(small: SimulationSummary) -> None:
    sql = _sql(small)
    # The ticks of a run are its agent's ticks between its start and end (one process per
    # agent here), and nothing else: busy CPU, then the next run or idle.
    mismatched = sql.execute(
        """
        WITH seen AS (
            SELECT r.run_id, count(s.ts) AS ticks, sum(s.cpu_cores) AS cpu,
                   max(s.cpu_cores) AS peak, max(s.rss_bytes) AS rss,
                   count(s.ts) FILTER (WHERE s.state = 'stopped') AS stopped
            FROM runs r LEFT JOIN samples s ON s.project = r.project AND s.agent = r.agent
              AND s.ts > r.started AND s.ts < r.ended
            GROUP BY r.run_id
        )
        SELECT r.run_id FROM runs r JOIN seen USING (run_id)
        WHERE r.ticks != seen.ticks OR r.paused_seconds != seen.stopped
           OR round(r.cpu_user_seconds + r.cpu_system_seconds, 2)
              != round(coalesce(seen.cpu, r.cpu_user_seconds + r.cpu_system_seconds), 2)
           OR r.peak_cores IS DISTINCT FROM seen.peak
           OR r.peak_rss_bytes IS DISTINCT FROM seen.rss
           OR r.max_rss_bytes != coalesce(seen.rss, r.max_rss_bytes)
        """
    ).fetchall()
    assert mismatched == []
    per_agent = sql.execute(
        """SELECT agent, count(*), sum(ticks), round(sum(epoch(ended) - epoch(started))),
                  count(DISTINCT run_id), sum(paused_seconds)
           FROM runs GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert per_agent == [
        ("formatter", 44, 133, 136.0, 44, 0.0),
        ("linter", 68, 597, 598.0, 68, 7.0),
        ("test-runner", 31, 1281, 1283.0, 31, 0.0),
        ("type-checker", 47, 893, 894.0, 47, 0.0),
    ]
    row = sql.execute(
        """SELECT count(*) FILTER (WHERE trigger != 'watch' OR status != 'complete'
                                   OR exit_code != 0 OR queued != started),
                  count(*) FILTER (WHERE ts != ended OR ended <= started
                                   OR ended > TIMESTAMPTZ '2026-01-05 15:00Z')
           FROM runs"""
    ).fetchone()
    assert row == (0, 0)
    # A run's root is its slot's process when it starts: the one it started (a linter), the
    # daemon that handles it in place (the type-checker).
    roots = sql.execute(
        """SELECT r.agent, bool_and(p.start_time = r.started) FROM runs r
           JOIN processes p ON p.pid = r.pid AND p.start_time = r.start_time
           GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert roots == [("formatter", True), ("linter", True), ("test-runner", True),
                     ("type-checker", False)]  # fmt: skip


def test_the_replay_reads_the_simulated_runs(small: SimulationSummary) -> None:
    demand = demand_from_store(small.out)
    sql = _sql(small)
    rows = sql.execute(
        """SELECT run_id, project, agent, epoch(ended) - epoch(started) - paused_seconds,
                  cpu_user_seconds + cpu_system_seconds FROM runs ORDER BY started, run_id"""
    ).fetchall()
    assert (demand.interval, demand.cores) == (1.0, 2)
    assert [(r.run_id, r.project, r.agent) for r in demand.runs] == [row[:3] for row in rows]
    for run, (_, _, _, seconds, cpu) in zip(demand.runs, rows, strict=True):
        # on its own clock: as long as it lasted, the last interval in part
        assert len(run.cores) - 1 + run.last == pytest.approx(max(seconds, 0.001))
        assert sum(run.cores) == pytest.approx(cpu)


def _rise(sql: duckdb.DuckDBPyConnection, column: str, project: str, agent: str) -> float:
    """Median of the last quarter hour minus the first (1.75 h apart): robust to runs."""
    value = _one(
        sql,
        f"""SELECT median({column}) FILTER (WHERE ts >= TIMESTAMPTZ '2026-01-05 14:45Z')
                 - median({column}) FILTER (WHERE ts < TIMESTAMPTZ '2026-01-05 13:15Z')
            FROM samples WHERE project = '{project}' AND agent = '{agent}'""",
    )
    assert isinstance(value, float | int)
    return float(value)


def test_planted_memory_leak(small: SimulationSummary) -> None:
    leak = next(a for a in small.anomalies if a.kind == "memory-leak")
    assert (leak.project, leak.agent, leak.magnitude) == ("proj-1", "type-checker", 12 * 2**20)
    sql = _sql(small)
    assert _rise(sql, "rss_bytes", "proj-1", "type-checker") / 2**20 == pytest.approx(21, abs=3)
    assert abs(_rise(sql, "rss_bytes", "proj-2", "type-checker")) / 2**20 < 3


def test_planted_file_handle_growth(small: SimulationSummary) -> None:
    growth = next(a for a in small.anomalies if a.kind == "fd-growth")
    assert (growth.project, growth.agent) == ("proj-3", "type-checker")
    sql = _sql(small)
    assert _rise(sql, "fds", "proj-3", "type-checker") == pytest.approx(25 * 1.75, abs=3)
    assert abs(_rise(sql, "fds", "proj-1", "type-checker")) <= 2


def test_planted_cpu_over_limit(small: SimulationSummary) -> None:
    over = next(a for a in small.anomalies if a.kind == "cpu-over-limit")
    assert (over.project, over.agent, over.magnitude) == ("proj-2", "", 1.3)
    assert (over.start, over.end) == (START.replace(hour=14), START.replace(hour=14, minute=30))
    sql = _sql(small)
    limit_cores = 0.20 * 2
    ratio = _one(
        sql,
        """SELECT sum(cpu_cores) / 1800 FROM samples WHERE project = 'proj-2'
           AND ts >= TIMESTAMPTZ '2026-01-05 14:00Z' AND ts < TIMESTAMPTZ '2026-01-05 14:30Z'""",
    )
    assert isinstance(ratio, float)
    # 1.3x while running, paused 6 x 20 s of the 1800 s.
    assert ratio / limit_cores == pytest.approx(1.3 * (1 - 120 / 1800), abs=0.03)
    hourly = sql.execute(
        """SELECT project, date_trunc('hour', ts) AS h, sum(cpu_cores) / 3600 AS cores
           FROM samples GROUP BY ALL"""
    ).fetchall()
    limits = {"proj-1": 0.6, "proj-2": 0.4, "proj-3": 0.2}
    assert all(cores < limits[p] for p, _, cores in hourly if p != "proj-2")
    assert _one(sql, "SELECT count(*) FROM samples WHERE state = 'stopped'") == 6 * 20 * 4
    events = sql.execute(
        "SELECT action, ts, pids FROM events WHERE action IN ('pause', 'resume') ORDER BY ts"
    ).fetchall()
    assert [a for a, _, _ in events] == ["pause", "resume"] * 6
    first_pause = events[0][1]
    assert first_pause == START.replace(hour=14, minute=1)
    alive = sql.execute(
        "SELECT pid FROM samples WHERE project = 'proj-2' AND ts = $1 ORDER BY pid",
        [first_pause],
    ).fetchall()
    assert sorted(events[0][2]) == [pid for (pid,) in alive]


def test_daily_cycle_and_processes_coming_and_going(tmp_path: Path) -> None:
    summary = simulate(tmp_path / "ws", days=1, interval=60)
    sql = _sql(summary)
    busy, night = sql.execute(
        """SELECT avg(cpu_busy_cores) FILTER (WHERE hour(ts) BETWEEN 9 AND 17),
                  avg(cpu_busy_cores) FILTER (WHERE hour(ts) < 6) FROM system"""
    ).fetchone() or (0, 0)
    assert busy > 3 * night
    starts = dict(
        sql.execute(
            "SELECT agent, count(*) FROM processes WHERE hour(ts) BETWEEN 9 AND 17 GROUP BY 1"
        ).fetchall()
    )
    assert starts["linter"] > 100 and starts["test-runner"] > 20
    assert "type-checker" not in starts  # a daemon: restarted at 03:00, not by runs


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []
    summary = simulate(tmp_path / "ws", hours=1.5, interval=10, start=START,
                       progress=lambda *args: calls.append(args))  # fmt: skip
    assert [done for done, _, _ in calls] == [360, 540]
    assert calls[-1] == (540, 540, summary.total_rows)


def test_refuses_to_write_over_data(small: SimulationSummary, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="workspace.json already exists"):
        simulate(small.out, hours=1)
    metrics = tmp_path / "ws" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"metrics is not empty: .*--overwrite"):
        simulate(tmp_path / "ws", hours=1)
    summary = simulate(tmp_path / "ws", hours=1, interval=60, overwrite=True)
    assert not (metrics / "keep.txt").exists()
    assert summary.rows["system"] == 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": 0}, "hours must be positive"),
        ({"days": -1}, "days must be positive"),
        ({"interval": 0}, "interval must be between"),
        ({"projects": 0}, "projects must be at least 1"),
        ({"cores": 0}, "cores must be between"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        simulate(tmp_path / "ws", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "ws").exists()


@click.group(cls=DevloopGroup)
def _group() -> None:
    """Stands in for ``devloop workspace`` (the lead registers the command there)."""


_group.add_command(simulate_command)


def test_cli_writes_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    args = ["simulate", "--out", str(out), "--hours", "1", "--interval", "30s",
            "--start", "2026-01-06", "--seed", "3"]  # fmt: skip
    result = CliRunner().invoke(_group, args)
    assert result.exit_code == 0, result.output
    # 1 start + 1 warn + 3 pauses + 3 resumes + 1 stop; 15 limits; 3 runs ended in the hour.
    processes = result.stdout.split("processes ")[1].split(",")[0]
    total = 1440 + 120 + int(processes) + 9 + 15 + 3
    assert result.stdout.startswith(
        f"Wrote {total:,} rows (samples 1,440, system 120, processes {processes}, events 9, "
        "limits 15, runs 3) in "
    )
    assert "Planted cpu-over-limit: proj-2, 2026-01-06 00:30 to 2026-01-06 00:45 UTC" in (
        result.stdout
    )
    assert json.loads((out / "workspace.json").read_text())["workspace_name"] == "simulated"

    again = CliRunner().invoke(_group, args)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"Error: {out / 'workspace.json'} already exists")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--interval", "soon", "not a duration"),
        ("--interval", "2h", "must be between 0.01s and 3600s"),
        ("--start", "monday", "expected a UTC date"),
        ("--projects", "0", "0 is not in the range x>=1"),
    ],
)
def test_cli_checks_arguments(tmp_path: Path, option: str, value: str, message: str) -> None:
    out = tmp_path / "ws"
    result = CliRunner().invoke(_group, ["simulate", "--out", str(out), option, value])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not out.exists()


def test_cli_help_has_an_example() -> None:
    assert simulate_command.help is not None and "Example:" in simulate_command.help


def test_a_span_too_short_for_any_triggered_run_still_simulates(tmp_path):
    summary = simulate(tmp_path / "ws", hours=0.25, projects=3, agents_per_project=2,
                       interval=5, seed=2)  # fmt: skip
    assert summary.rows["samples"] == 1080 and summary.rows["system"] == 180
