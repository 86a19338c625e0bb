"""Every run counted exactly: devloop run beside a real collector, alone, and killed.

The ground truth is what each burner measures for itself (``os.times``, children included),
outside devloop; the runs rows come from wait4 at reap time, the tick series from the collector.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devloop.store import connect
from devloop.store import runs as journal
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.realtime

DEADLINE = 90.0  # generous: these machines are shared and may be loaded
RUN = uuid.uuid4().hex[:6]
PROJECT = f"runs-{RUN}"  # unique: another suite's tagged processes are not ours
BURN = str(Path(__file__).parent / "helpers" / "run_burn.py")


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (tmp_path / "proj").mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "projects": [{"name": PROJECT, "path": "proj"}],
        "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "64GB", "checkInterval": 1}},
    }))  # fmt: skip
    return folder


def _devloop(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "devloop", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _run(folder: Path, agent: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder), "-p", PROJECT,
         "-a", agent, "--", *command],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err


def _runs(folder: Path) -> dict[str, dict]:
    cursor = connect(folder / "metrics").execute("SELECT * FROM runs ORDER BY started")
    names = [d[0] for d in cursor.description]
    return {
        row[names.index("agent")]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()
    }


def _tick_cpu(folder: Path, run_id: str) -> float:
    """CPU seconds of the run's tick series: each row's ``cpu_cores`` times the time since the
    previous collector tick (1 s, or more where a loaded machine skipped a slot), so the sum is
    the CPU the rows account for; a row off the ticks (a lone run's last one) counts 1 s."""
    sql = """
        WITH ticks AS (
            SELECT ts, (epoch_us(ts) - lag(epoch_us(ts)) OVER (ORDER BY ts)) / 1e6 AS gap
            FROM (SELECT DISTINCT ts FROM system))
        SELECT sum(s.cpu_cores * coalesce(t.gap, 1.0)) FROM samples s
        JOIN processes p USING (host, pid, start_time) LEFT JOIN ticks t ON t.ts = s.ts
        WHERE p.run_id = ?
    """
    found = connect(folder / "metrics").execute(sql, [run_id]).fetchone()
    assert found is not None and found[0] is not None
    return float(found[0])


def _fresh_admission(folder: Path) -> bool:
    try:
        text = (folder / ".admission").read_text()
    except OSError:
        return False
    entries = dict(line.rsplit(" ", 1) for line in text.splitlines()[1:])
    return abs(time.time() - float(entries["ts"])) < 3


@pytest.mark.slow
def test_runs_beside_a_collector_are_exact_and_their_ticks_add_up(tmp_path):
    folder = _workspace(tmp_path)
    collector = _devloop("workspace", "collect", "--workspace-dir", str(folder),
                         "--interval", "1s")  # fmt: skip
    try:
        wait_until(lambda: _fresh_admission(folder), DEADLINE)
        truth = {}
        for seconds in (0.05, 0.3, 2.5, 4.0):
            agent = f"burn-{seconds:g}"
            out = tmp_path / f"{agent}.json"
            result = _run(folder, agent, sys.executable, BURN, str(seconds), str(out))
            assert result.returncode == 0, result.stderr
            truth[agent] = json.loads(out.read_text())["cpu"]
        wait_until(lambda: not os.listdir(folder / "metrics" / journal.RUNS_DIR), DEADLINE)
    finally:
        _stop(collector)
    runs = _runs(folder)
    assert set(runs) == set(truth)
    for agent, cpu in truth.items():
        row = runs[agent]
        assert row["status"] == "complete" and row["trigger"] == "manual"
        assert row["exit_code"] == 0 and row["signal"] is None
        recorded = row["cpu_user_seconds"] + row["cpu_system_seconds"]
        assert recorded == pytest.approx(cpu, rel=0.05), agent
        assert row["max_rss_bytes"] > 1 << 20
        assert row["ended"] > row["started"]
        if cpu >= 2.0:  # burn-2.5 and burn-4
            # Runs long enough for two ticks or more: 2.5 CPU-seconds last over 2.5 s, and any
            # 2.5 s of a 1-s grid hold two ticks (1.5 s hold one or two: it saw one once).
            assert row["ticks"] >= 2, agent
            assert _tick_cpu(folder, row["run_id"]) == pytest.approx(cpu, rel=0.10), agent
            assert 0.5 < row["peak_cores"] < 1.6
    # The short runs were never seen by a tick: the CPU after the last tick (all of it) is
    # still in the tick series, on a row of the run's root marked "exited".
    short = runs["burn-0.05"]
    exited = connect(folder / "metrics").execute(
        "SELECT s.state, s.pid FROM samples s JOIN processes p USING (host, pid, start_time) "
        "WHERE p.run_id = ?", [short["run_id"]],
    ).fetchall()  # fmt: skip
    assert ("exited", short["pid"]) in exited
    assert _tick_cpu(folder, short["run_id"]) > 0


def test_a_run_alone_records_itself_with_its_row(tmp_path):
    folder = _workspace(tmp_path)
    out = tmp_path / "burn.json"
    result = _run(folder, "alone", sys.executable, BURN, "0.3", str(out))
    assert result.returncode == 0, result.stderr
    cpu = json.loads(out.read_text())["cpu"]
    row = _runs(folder)["alone"]
    assert row["cpu_user_seconds"] + row["cpu_system_seconds"] == pytest.approx(cpu, rel=0.05)
    assert _tick_cpu(folder, row["run_id"]) == pytest.approx(cpu, rel=0.10)
    assert not os.listdir(folder / "metrics" / journal.RUNS_DIR)


def test_a_failing_command_and_a_signal_are_in_the_row(tmp_path):
    folder = _workspace(tmp_path)
    assert _run(folder, "fails", sys.executable, "-c", "raise SystemExit(3)").returncode == 3
    killed = _run(folder, "killed", sys.executable, "-c",
                  "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")  # fmt: skip
    assert killed.returncode == 128 + signal.SIGTERM
    runs = _runs(folder)
    assert (runs["fails"]["exit_code"], runs["fails"]["signal"]) == (3, None)
    assert (runs["killed"]["exit_code"], runs["killed"]["signal"]) == (None, signal.SIGTERM)


@pytest.mark.slow
def test_a_run_whose_launcher_is_killed_gets_an_incomplete_row(tmp_path):
    folder = _workspace(tmp_path)
    collector = _devloop("workspace", "collect", "--workspace-dir", str(folder),
                         "--interval", "0.5s")  # fmt: skip
    pidfile = tmp_path / "agent.pid"
    agent_pid = None
    try:
        wait_until(lambda: _fresh_admission(folder), DEADLINE)
        launcher = subprocess.Popen(  # its agent outlives it: no pipes to wait on
            [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder), "-p",
             PROJECT, "-a", "cut", "--", sys.executable, BURN, "1", "unused.json", str(pidfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: pidfile.exists() and bool(pidfile.read_text()), DEADLINE)
        agent_pid = int(pidfile.read_text())
        time.sleep(1.2)  # let two ticks see it
        launcher.kill()
        launcher.wait(DEADLINE)
        wait_until(lambda: not os.listdir(folder / "metrics" / journal.RUNS_DIR), DEADLINE)
    finally:
        if agent_pid is not None:
            os.kill(agent_pid, signal.SIGKILL)
        _stop(collector)
    row = _runs(folder)["cut"]
    assert row["status"] == "incomplete"
    assert row["exit_code"] is None and row["cpu_user_seconds"] is None
    assert row["ticks"] >= 1 and row["ended"] >= row["started"]


def test_a_run_row_is_published_once(tmp_path):
    from devloop.store.writer import StoreWriter

    metrics = tmp_path / "metrics"
    start = journal.RunStart(
        run_id=journal.new_run_id(), project="p", agent="a", trigger="manual", command=["x"],
        cwd="/", queued_us=1_000_000, started_us=2_000_000, launcher_pid=1, log_path=None,
    )  # fmt: skip
    active = journal.begin(metrics, start)
    assert journal.pending(metrics) == ([], [])  # held by its launcher: not ready
    active.finish(journal.RunEnd(pid=5, start_ticks=None, ended_us=3_000_000, exit_code=0,
                                 signal=None, cpu_user_seconds=1.0, cpu_system_seconds=0.5,
                                 max_rss_bytes=1024))  # fmt: skip
    found, unreadable = journal.pending(metrics)
    assert unreadable == [] and [run.start for run in found] == [start]
    assert found[0].end is not None and found[0].end.cpu_user_seconds == 1.0
    row = (2_000_000, "h", start.run_id, "p", "a", "manual", "complete", "x", "/", 5, None,
           1_000_000, 2_000_000, 3_000_000, 0, None, 1.0, 0.0, 0.0, 1.0, 0.5, 1024, None, 0,
           None, None, None)  # fmt: skip
    with StoreWriter(metrics) as writer:
        segment = journal.segment_id(start.run_id)
        assert writer.publish(segment, [("runs", [row])]) is True
        assert writer.publish(segment, [("runs", [row])]) is False
    # closing converted it, and converting it ended the journal
    assert os.listdir(metrics / journal.RUNS_DIR) == []
    with StoreWriter(metrics) as writer:  # published again after conversion: still once
        writer.publish(journal.segment_id(start.run_id), [("runs", [row])])
    assert connect(metrics).execute("SELECT count(*) FROM runs").fetchone() == (1,)
