"""``simulate --calibrate-from``: a small recording built by hand (runs, their processes' ticks
in samples, system ticks), calibrated, then replayed; the simulated runs checked against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pytest
from click.testing import CliRunner

from devloop.cli import DevloopGroup
from devloop.cli.simulate import simulate as simulate_command
from devloop.errors import UsageError
from devloop.simulate import simulate
from devloop.simulate.calibrate import (
    AgentRuns,
    Calibration,
    ProjectCalibration,
    calibrate,
    calibration_from,
    load_calibration,
    save_calibration,
)
from devloop.store import connect, write_table
from devloop.store.columns import PROCESSES, RUNS, SAMPLES

MB = 1 << 20
PAGE = 4096
T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
START = datetime(2026, 2, 2, tzinfo=UTC)

#: Trigger times (seconds from T0): api edits in bursts (gaps 10, 10, 12, 120, 8, 9, 11, 150,
#: 10, 20: mean 36 s); web every minute.
API_TRIGGERS = (0, 10, 20, 32, 152, 160, 169, 180, 330, 340, 360)
WEB_TRIGGERS = (5, 65, 125, 185, 245)


def row(columns: Any, **values: Any) -> dict[str, Any]:
    return {column.name: values.get(column.name) for column in columns}


def recorded_runs() -> list[dict[str, Any]]:
    """The runs of the recording: project, agent, queued (s from T0), cores per tick, rss,
    ticks the enforcer held it stopped (at its end)."""
    runs = []
    for k, at in enumerate(API_TRIGGERS):
        runs.append(
            {
                "project": "api",
                "agent": "lint",
                "at": float(at),
                "cores": [0.5 + 0.01 * k] * (1 + k % 2),
                "rss": (30 + k) * MB,
                "paused": 0,
            }
        )
        runs.append(
            {
                "project": "api",
                "agent": "tests",
                "at": at + 0.25,
                "cores": [0.2, 0.9, 0.6, 0.3, 0.8, 0.1][: 3 + k % 4],
                "rss": (200 + 7 * k) * MB,
                "paused": 1 if k == 3 else 0,
            }
        )
    for k, at in enumerate(WEB_TRIGGERS):
        runs.append(
            {
                "project": "web",
                "agent": "tests",
                "at": at + 0.5,
                "cores": [1.5 - 0.1 * k, 1.2],
                "rss": (500 + k) * MB,
                "paused": 0,
            }
        )
    return runs  # fmt: skip


def record(folder: Path) -> Path:
    """A workspace folder whose metrics hold the runs of :func:`recorded_runs`."""
    folder.mkdir(parents=True)
    (folder / "workspace.json").write_text(json.dumps({
        "workspace_name": "recorded",
        "projects": [{"name": "api", "path": "api"}, {"name": "web", "path": "web"}],
    }))  # fmt: skip
    root = folder / "metrics"
    ticks = [{"ts": T0 + timedelta(seconds=s), "host": "h", "cores": 4, "cpu_busy_cores": 1.0,
              "mem_total_bytes": 16 << 30} for s in range(1000)]  # fmt: skip
    write_table(root, "system", pa.Table.from_pylist(ticks))
    run_rows, process_rows, sample_rows = [], [], []
    for n, run in enumerate(recorded_runs()):
        begin = T0 + timedelta(seconds=run["at"])
        ticks = len(run["cores"]) + run["paused"]
        stop = begin + timedelta(seconds=ticks)
        run_id, pid = f"r{n:03d}", 1000 + n
        run_rows.append(row(
            RUNS, ts=stop, host="h", run_id=run_id, project=run["project"], agent=run["agent"],
            trigger="watch", status="complete", command=f"{run['agent']} --check .",
            pid=pid, start_time=begin, queued=begin, started=begin, ended=stop,
            paused_seconds=float(run["paused"]), throttled_seconds=0.0,
            cpu_user_seconds=round(0.9 * sum(run["cores"]), 3),
            cpu_system_seconds=round(0.1 * sum(run["cores"]), 3),
            max_rss_bytes=run["rss"] + 12345))  # fmt: skip
        process_rows.append(row(
            PROCESSES, ts=begin + timedelta(seconds=1), host="h", pid=pid, start_time=begin,
            project=run["project"], agent=run["agent"], name=f"{run['agent']}-proc",
            run_id=run_id))  # fmt: skip
        states = ["running"] * len(run["cores"]) + ["stopped"] * run["paused"]
        cores = run["cores"] + [0.0] * run["paused"]
        for i, (c, state) in enumerate(zip(cores, states, strict=True)):
            sample_rows.append(row(
                SAMPLES, ts=begin + timedelta(seconds=i + 1), host="h", project=run["project"],
                agent=run["agent"], pid=pid, start_time=begin, cpu_cores=c,
                rss_bytes=run["rss"], state=state))  # fmt: skip
    write_table(root, "runs", pa.Table.from_pylist(run_rows))
    write_table(root, "processes", pa.Table.from_pylist(process_rows))
    write_table(root, "samples", pa.Table.from_pylist(sample_rows))
    return folder


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("rec") / "ws")


@pytest.fixture(scope="module")
def calibration(recording: Path) -> Calibration:
    return calibrate(recording)


def simulated_runs(out: Path) -> list[dict[str, Any]]:
    db = connect(out / "metrics")
    relation = db.sql(
        "SELECT project, agent, epoch_us(queued) AS queued, epoch_us(started) AS started, "
        "epoch_us(ended) AS ended, cpu_user_seconds + cpu_system_seconds AS cpu, "
        "max_rss_bytes, peak_cores, queue_wait_seconds, pid, run_id FROM runs "
        "ORDER BY started, project, agent"
    )
    return [dict(zip(relation.columns, values, strict=True)) for values in relation.fetchall()]


# --- calibration -----------------------------------------------------------------------------


def test_calibration_keeps_every_recorded_run(calibration: Calibration) -> None:
    api, web = calibration.projects
    assert (api.name, web.name) == ("api", "web")
    assert api.triggers == tuple(float(t) for t in API_TRIGGERS)
    assert web.triggers == (0.0, 60.0, 120.0, 180.0, 240.0)
    assert api.gaps == (10.0, 10.0, 12.0, 120.0, 8.0, 9.0, 11.0, 150.0, 10.0, 20.0)
    assert [a.name for a in api.agents] == ["lint", "tests"]
    assert [a.name for a in web.agents] == ["tests"]

    lint, tests = api.agents
    assert lint.process == "lint-proc" and lint.command == "lint --check ."
    assert lint.trigger == tuple(range(11)) and set(lint.offset) == {0.0}
    assert tests.offset == (0.25,) * 11
    assert lint.seconds == tuple(float(1 + k % 2) for k in range(11))
    # The paused tick is not demand: left out of the duration and of the per-tick series.
    assert tests.seconds == tuple(float(3 + k % 4) for k in range(11))
    assert tests.cores[3] == (0.2, 0.9, 0.6, 0.3, 0.8, 0.1)
    assert tests.cores[0] == (0.2, 0.9, 0.6)
    assert tests.peak_rss_bytes[2] == 214 * MB + 12345
    assert tests.cpu_seconds[0] == pytest.approx(1.7)
    assert calibration.interval == 1.0 and calibration.runs == 27

    summary = {(r["project"], r["agent"]): r for r in calibration.summary()}
    assert summary["api", "tests"]["runs"] == 11
    assert summary["api", "tests"]["median_seconds"] == 4.0
    assert summary["api", "lint"]["mean_gap_seconds"] == pytest.approx(36.0)
    assert summary["web", "tests"]["median_gap_seconds"] == 60.0


def test_the_json_round_trips(calibration: Calibration, recording: Path, tmp_path: Path) -> None:
    path = save_calibration(calibration, tmp_path / "calibration.json")
    data = json.loads(path.read_text())
    assert data["format"] == "devloop-simulate-calibration" and data["version"] == 1
    assert data["source"]["runs"] == 27
    assert data["projects"][0]["agents"][1]["runs"]["cores"][0] == [0.2, 0.9, 0.6]
    assert load_calibration(path) == calibration
    assert calibration_from(path) == calibration_from(recording)
    assert len(path.read_text()) < 8000  # small enough to commit


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not JSON"),
        ('{"format": "other"}', 'is not a valid calibration: "format" is not'),
        ('{"format": "devloop-simulate-calibration", "version": 99}', "version 99 is not"),
    ],
)
def test_a_bad_calibration_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        calibration_from(path)
    assert "\n" not in str(caught.value)


def test_a_store_without_runs_cannot_calibrate(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_table(empty / "metrics", "system", pa.Table.from_pylist(
        [{"ts": T0, "host": "h", "cores": 4, "cpu_busy_cores": 1.0}]))  # fmt: skip
    with pytest.raises(UsageError) as caught:
        calibrate(empty)
    assert str(caught.value) == f"no runs recorded in {empty}: calibration needs runs"
    with pytest.raises(UsageError, match="does not exist"):
        calibration_from(tmp_path / "nowhere")


# --- the simulation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(calibration: Calibration, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "ws"
    simulate(out, hours=2, interval=1, seed=4, start=START, cores=8, calibration=calibration)
    return out


def test_every_simulated_run_replays_a_recorded_one(
    calibration: Calibration, replayed: Path
) -> None:
    runs = simulated_runs(replayed)
    recorded = {(p.name, a.name): a for p in calibration.projects for a in p.agents}
    assert {(r["project"], r["agent"]) for r in runs} == set(recorded)
    for run in runs:
        agent = recorded[run["project"], run["agent"]]
        # Its duration, CPU and peak memory are those of one recorded run of its agent...
        same = [
            i for i in range(agent.runs)
            if round(agent.seconds[i] * 1e6) == run["ended"] - run["started"]
            and agent.peak_rss_bytes[i] // PAGE * PAGE == run["max_rss_bytes"]
            and round(agent.cpu_seconds[i], 2) == round(run["cpu"], 2)
        ]  # fmt: skip
        assert same, run
        # ... and what its ticks saw, that run's ticks x U(0.9, 1.1), counted in centiseconds.
        if run["peak_cores"] is not None:
            assert any(run["peak_cores"] <= 1.1 * max(agent.cores[i]) + 0.011 for i in same)
        assert run["queued"] == run["started"] and run["queue_wait_seconds"] == 0
    assert sum(r["peak_cores"] is not None for r in runs) > 100


def test_a_run_waits_while_its_agent_is_busy(tmp_path: Path) -> None:
    """Edits every second, runs of 2.5 s: each run waits for the one before (none is cut)."""
    agent = AgentRuns(
        name="tests",
        process="pytest",
        command="pytest",
        trigger=(0, 1, 2),
        offset=(0.0, 0.0, 0.0),
        seconds=(2.5, 2.5, 2.5),
        cpu_seconds=(1.0,) * 3,
        peak_rss_bytes=(100 * MB,) * 3,
        cores=((0.4, 0.4, 0.4),) * 3,
    )
    project = ProjectCalibration(name="busy", triggers=(0.0, 1.0, 2.0), agents=(agent,))
    calibration = Calibration(source="by hand", first=T0, last=T0, interval=1.0,
                              projects=(project,))  # fmt: skip
    simulate(tmp_path / "ws", hours=0.05, interval=1, seed=1, start=START,
             calibration=calibration)  # fmt: skip
    runs = simulated_runs(tmp_path / "ws")
    assert len(runs) > 40
    assert {r["ended"] - r["started"] for r in runs} == {2_500_000}
    assert all(b["started"] == a["ended"] for a, b in zip(runs, runs[1:], strict=False))
    assert runs[-1]["queue_wait_seconds"] > 50
    assert {b["queued"] - a["queued"] for a, b in zip(runs, runs[1:], strict=False)} == {1_000_000}


def test_triggers_come_with_the_recorded_gaps(calibration: Calibration, replayed: Path) -> None:
    runs = simulated_runs(replayed)
    for project in calibration.projects:
        first = project.agents[0].name
        queued = sorted(r["queued"] for r in runs
                        if r["project"] == project.name and r["agent"] == first)  # fmt: skip
        gaps = {round(g * 1e6) for g in project.gaps}
        assert len(queued) > 20
        assert all(b - a in gaps for a, b in zip(queued, queued[1:], strict=False))
    # Each api edit starts lint and, 0.25 s later, tests: both runs of the recorded trigger.
    api = [r for r in runs if r["project"] == "api"]
    lint = {r["queued"] for r in api if r["agent"] == "lint"}
    tests = {r["queued"] for r in api if r["agent"] == "tests"}
    assert {t - 250_000 for t in tests} <= lint


def test_the_mean_gap_matches_the_recording(calibration: Calibration, tmp_path: Path) -> None:
    simulate(tmp_path / "ws", hours=12, interval=60, seed=9, start=START, calibration=calibration)
    runs = simulated_runs(tmp_path / "ws")
    for project in calibration.projects:
        agent = project.agents[0].name
        queued = sorted(r["queued"] for r in runs
                        if r["project"] == project.name and r["agent"] == agent)  # fmt: skip
        mean = (queued[-1] - queued[0]) / (len(queued) - 1) / 1e6
        recorded = sum(project.gaps) / len(project.gaps)
        assert mean == pytest.approx(recorded, rel=0.05), project.name
        assert len(queued) == pytest.approx(12 * 3600 / recorded, rel=0.06)


def test_the_same_seed_gives_the_same_rows(calibration: Calibration, tmp_path: Path) -> None:
    def rows(seed: int, name: str) -> tuple[list[dict[str, Any]], list[Any]]:
        out = tmp_path / name
        simulate(out, hours=1, interval=5, seed=seed, start=START, calibration=calibration)
        samples = (
            connect(out / "metrics")
            .sql("SELECT ts, pid, cpu_cores, rss_bytes FROM samples ORDER BY ALL")
            .fetchall()
        )
        return simulated_runs(out), samples  # fmt: skip

    first = rows(1, "a")
    assert rows(1, "b") == first
    assert rows(2, "c")[0] != first[0]


def test_more_projects_than_recorded_cycle_them(calibration: Calibration, tmp_path: Path) -> None:
    summary = simulate(tmp_path / "ws", hours=1, interval=10, seed=1, start=START,
                       projects=3, calibration=calibration)  # fmt: skip
    assert summary.anomalies == () and summary.calibrated_from == calibration.source
    config = json.loads((tmp_path / "ws" / "workspace.json").read_text())
    assert [p["name"] for p in config["projects"]] == ["api", "web", "api-2"]
    agents = json.loads((tmp_path / "ws/projects/web/.devloop/agents.json").read_text())
    assert list(agents["agents"]) == ["tests"]
    db = connect(tmp_path / "ws" / "metrics")
    assert db.sql("SELECT DISTINCT project, agent FROM runs ORDER BY ALL").fetchall() == [
        ("api", "lint"), ("api", "tests"), ("api-2", "lint"), ("api-2", "tests"),
        ("web", "tests"),
    ]  # fmt: skip
    assert db.sql("SELECT count(*) FROM limits WHERE project = 'web'").fetchall() == [(2,)]
    assert db.sql("SELECT list(action) FROM events").fetchall() == [(["start", "stop"],)]
    with pytest.raises(UsageError, match="recorded agents"):
        simulate(tmp_path / "other", hours=1, agents_per_project=2, calibration=calibration)


# --- the command -----------------------------------------------------------------------------


@click.group(cls=DevloopGroup)
def _group() -> None:
    """Stands in for ``devloop workspace``."""


_group.add_command(simulate_command)


def test_cli_saves_a_calibration_and_simulates_from_it(recording: Path, tmp_path: Path) -> None:
    saved = tmp_path / "calibration.json"
    result = CliRunner().invoke(
        _group, ["simulate", "--calibrate-from", str(recording), "--save-calibration", str(saved)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Saved the calibration of 27 runs ({recording}, ")
    assert "  api/tests: 11 runs, median 4 s (p90 6 s)" in result.stdout
    assert "web/tests: 5 runs" in result.stdout and "gap median 60 s, mean 60 s" in result.stdout
    assert not (tmp_path / "ws").exists()

    out = tmp_path / "ws"
    result = CliRunner().invoke(_group, [
        "simulate", "--out", str(out), "--hours", "1", "--interval", "10s", "--seed", "2",
        "--calibrate-from", str(saved), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Runs and triggers replay the recording {recording}" in result.stdout
    assert "Planted" not in result.stdout
    assert simulated_runs(out)

    def fails(*args: str) -> str:
        failed = CliRunner().invoke(_group, ["simulate", *args])
        assert failed.exit_code != 0
        return failed.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    assert fails("--out", str(tmp_path / "x"), "--calibrate-from", str(empty)) == (
        f"Error: no runs recorded in {empty}: calibration needs runs\n"
    )
    assert "needs --calibrate-from" in fails("--save-calibration", str(saved))
    assert "Missing option '--out'" in fails("--hours", "1")
    assert "does not go with --calibrate-from" in fails(
        "--out", str(tmp_path / "y"), "--calibrate-from", str(saved), "--agents-per-project", "2"
    )
