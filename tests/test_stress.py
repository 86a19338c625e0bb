"""The stress test: load agents measured from /proc, a short real run checked against the store.

Project names are unique to this test run: other suites on this machine run tagged processes
at the same time, and ours must neither see nor signal theirs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.config.allocation import allocate
from devloop.config.load import load_workspace
from devloop.runner.load import split_cores
from devloop.runner.stress import limit_result
from tests.helpers.procs import (
    DEADLINE,
    helpers,
    proc_cpu_seconds,
    proc_state,
    vm_rss_bytes,
    wait_until,
)

pytestmark = pytest.mark.realtime

RUN = uuid.uuid4().hex[:8]
LOAD = [sys.executable, "-m", "devloop.runner.load"]
MB = 1 << 20


def gone(pid: int) -> bool:
    """No such process, or only its zombie left for init to reap."""
    try:
        return proc_state(pid) == "Z"
    except FileNotFoundError:
        return True


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_split_cores():
    assert split_cores(0) == []
    assert split_cores(0.5) == [0.5]
    assert split_cores(2.25) == [1.0, 1.0, 0.25]


@pytest.mark.slow
def test_cpu_load_burns_its_share_in_forked_burners_and_stops_on_eof():
    with helpers() as start:
        load = start(argv=[*LOAD, "cpu", "1.5"], ready=False)
        words = load.readline()
        assert words[0] == "ready" and int(words[1]) == load.pid
        whole, half = (int(w) for w in words[2:])
        # both burn (polled: a loaded machine may be slow to schedule them)
        wait_until(lambda: proc_cpu_seconds(whole) > 0.3 and proc_cpu_seconds(half) > 0.15)
        # the half burner never takes more than about half a core (less on a busy machine)
        cpu0, wall0 = proc_cpu_seconds(half), time.monotonic()
        wait_until(lambda: time.monotonic() - wall0 >= 1.5)
        rate = (proc_cpu_seconds(half) - cpu0) / (time.monotonic() - wall0)
        assert 0 < rate < 0.5 + 0.15
        # a new level replaces the burners
        load.send("0.25")
        words = load.readline()
        assert words[:2] == ["level", "0.25"] and len(words) == 3
        assert gone(whole) and gone(half)
        new = int(words[2])
        assert load.has_line() is False
        load.proc.stdin.close()  # end of input: the loader and its burner exit
        assert load.proc.wait(DEADLINE) == 0
        wait_until(lambda: gone(new))


@pytest.mark.slow
def test_memory_files_and_threads_loads_hold_what_they_say():
    with helpers() as start:
        memory = start(argv=[*LOAD, "memory", str(64 * MB)])
        assert 64 * MB <= vm_rss_bytes(memory.pid) < 64 * MB + 40 * MB
        memory.send("32MB")
        assert memory.readline()[:2] == ["level", "32MB"]
        assert 32 * MB <= vm_rss_bytes(memory.pid) < 64 * MB

        files = start(argv=[*LOAD, "files", "40"])
        baseline = 3  # stdin, stdout, stderr
        assert fd_count(files.pid) == baseline + 40
        files.send("10")
        files.readline()
        assert fd_count(files.pid) == baseline + 10

        threads = start(argv=[*LOAD, "threads", "5"])
        assert thread_count(threads.pid) == 1 + 5
        for helper in (memory, files, threads):
            helper.proc.stdin.close()
            assert helper.proc.wait(DEADLINE) == 0


@pytest.mark.slow
def test_loads_die_with_their_parent_even_when_stopped():
    code = (
        "import subprocess, sys\n"
        f"argv = {LOAD!r}\n"
        "a = subprocess.Popen(argv + ['cpu', '1.2'], stdin=subprocess.PIPE, "
        "stdout=subprocess.PIPE, text=True)\n"
        "b = subprocess.Popen(argv + ['memory', '8MB'], stdin=subprocess.PIPE, "
        "stdout=subprocess.PIPE, text=True)\n"
        "print('ready', a.stdout.readline().split()[1:], b.stdout.readline().split()[1:], "
        "flush=True)\n"
        "sys.stdin.read()\n"
    )
    with helpers() as start:
        parent = start(argv=[sys.executable, "-c", code], ready=False)
        words = parent.readline()
        assert words[0] == "ready"
        pids = [int(w.strip("[],'")) for w in words[1:] if w.strip("[],'")]
        assert len(pids) == 4  # the CPU loader and its two burners, the memory loader
        os.kill(pids[0], signal.SIGSTOP)  # a paused loader still dies with its parent
        wait_until(lambda: proc_state(pids[0]) == "T")
        parent.proc.kill()
        parent.proc.wait()
        wait_until(lambda: all(gone(pid) for pid in pids))


def test_limit_result_defines_held():
    ts = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    limit = [10.0] * 6
    # over at 2, reaction at 2.1, back under: held
    held = limit_result(ts, [5, 20, 5, 5, 5, 5], limit, [2.1], 1.0)
    assert held["held"] and held["seconds_to_react"] == pytest.approx(0.1)
    assert held["max_overshoot"] == 10 and held["seconds_over"] == 1.0
    # over for three ticks in a row: a 3 s stretch is longer than interval + 1 s
    long = limit_result(ts, [5, 20, 20, 20, 5, 5], limit, [2.1], 1.0)
    assert not long["held"] and long["longest_stretch_seconds"] == 3.0
    # over and nobody reacted (warn mode)
    assert not limit_result(ts, [5, 20, 5, 5, 5, 5], limit, [], 1.0)["held"]
    never = limit_result(ts, [5] * 6, limit, [], 1.0)
    assert never["held"] and never["max_overshoot"] == -5 and never["seconds_to_react"] is None


def stress_workspace(root: Path, names: list[str]) -> Path:
    folder = root / ".devloop-workspace"
    folder.mkdir(parents=True)
    for name in names:
        (root / name).mkdir()
    data = {
        "workspace_name": "stress",
        "projects": [{"name": n, "path": n, "priority": 1 + i} for i, n in enumerate(names)],
        "global": {
            "resourceLimits": {
                "maxCpu": 20, "maxMemory": "256MB", "checkInterval": 1,
                "enforcementAction": "pause", "resumeThreshold": 0.8,
            }
        },
        "resource_sharing": {"strategy": "weighted", "weights": {names[0]: 1, names[1]: 3}},
    }  # fmt: skip
    (folder / "workspace.json").write_text(json.dumps(data))
    return folder


@pytest.mark.slow
def test_a_short_stress_test_reports_what_the_store_holds(tmp_path, monkeypatch):
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)
    names = [f"stress-a-{RUN}", f"stress-b-{RUN}"]
    folder = stress_workspace(tmp_path, names)
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "devloop", "workspace", "stress-test", str(folder),
         "--duration", "5", "--target-cpu", "80", "--target-memory", "50",
         "--output", str(report_file)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Stress test: pause" in done.stdout and names[0] in done.stdout
    report = json.loads(report_file.read_text())
    allocation = allocate(load_workspace(folder))
    assert report["parameters"]["target_cpu_percent_of_machine"] == 80
    assert report["machine"]["cores"] == os.cpu_count()
    assert report["enforcement"]["action"] == "pause"
    assert report["workspace_totals"]["cpu_limit"] == 20
    assert report["workspace_totals"]["memory_limit_bytes"] == 256 * MB

    from devloop.store.db import connect

    db = connect(folder / "metrics")
    window = [report["started"], report["ended"]]
    ticks = [r[0].timestamp() for r in db.execute(
        "SELECT DISTINCT ts FROM system WHERE ts BETWEEN ? AND ? ORDER BY ts", window
    ).fetchall()]  # fmt: skip
    assert len(ticks) == report["ticks"] >= 3
    cores = os.cpu_count()
    total_pauses = 0
    for name in names:
        project = report["projects"][name]
        share = allocation.projects[name]
        assert project["cpu_limit"] == share.cpu and project["cpu"]["limit"] == share.cpu
        assert project["memory_limit_bytes"] == share.memory_bytes
        # the usage series is the store's, tick for tick
        series = project["series"]
        assert len(series) == len(ticks)
        stored = {
            r[0].timestamp(): (r[1], r[2]) for r in db.execute(
                "SELECT ts, sum(cpu_cores), sum(rss_bytes) FROM samples WHERE project = ? "
                "AND ts BETWEEN ? AND ? GROUP BY ts", [name, *window],
            ).fetchall()
        }  # fmt: skip
        assert stored, "the loads were recorded"
        for point, t in zip(series, ticks, strict=True):
            cpu_cores, rss = stored.get(t, (0.0, 0))
            assert point["cpu_percent"] == pytest.approx(cpu_cores / cores * 100, abs=0.001)
            assert point["memory_bytes"] == rss
        assert project["cpu"]["max_overshoot"] == pytest.approx(
            max(s["cpu_percent"] for s in series) - share.cpu, abs=0.001
        )
        # pauses and resumes are the store's events
        events = db.execute(
            "SELECT action, count(*) FROM events WHERE project = ? AND ts BETWEEN ? AND ? "
            "GROUP BY action", [name, *window],
        ).fetchall()  # fmt: skip
        counted = dict(events)
        assert project["pauses"] == counted.get("pause", 0)
        assert project["resumes"] == counted.get("resume", 0)
        assert project["resumes"] == project["pauses"]  # everything paused was continued
        total_pauses += project["pauses"]
        if project["cpu"]["seconds_over"] > 0:
            first_pause = db.execute(
                "SELECT min(ts) FROM events WHERE project = ? AND action = 'pause' "
                "AND metric = 'cpu' AND scope IN ('project', 'agent') AND ts BETWEEN ? AND ?",
                [name, *window],
            ).fetchone()[0]
            first_over = min(
                datetime.fromisoformat(s["ts"]).timestamp()
                for s in series if s["cpu_percent"] > share.cpu
            )  # fmt: skip
            assert project["cpu"]["seconds_to_react"] == pytest.approx(
                max(first_pause.timestamp() - first_over, 0.0), abs=0.002
            )
    assert total_pauses > 0  # 1.6 cores of load on a 20 % pool: enforcement acted
    # every load agent (and every burner it forked) is gone, none left stopped
    pids = [r[0] for r in db.execute(
        "SELECT DISTINCT pid FROM processes WHERE project IN (?, ?)", names
    ).fetchall()]  # fmt: skip
    assert len(pids) >= 2 * 4
    wait_until(lambda: all(gone(pid) for pid in pids))
    assert not (folder / "enforcement-state.json").exists()
    assert not (folder / ".paused-processes.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/ws"], "Error: workspace folder not found: /nonexistent/ws\n"),
        (["WS", "--target-cpu", "-5"],
         "Error: --target-cpu must be between 0 and 100 (percent of the machine), got -5\n"),
        (["WS", "--target-cpu", "150"],
         "Error: --target-cpu must be between 0 and 100 (percent of the machine), got 150\n"),
        (["WS", "--target-memory", "-1"],
         "Error: --target-memory must be between 0 and 1000 (percent of the workspace's memory "
         "limit), got -1\n"),
        (["WS", "--duration", "-3"], "Error: --duration must be above 0 seconds, got '-3'\n"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_1(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    folder = stress_workspace(tmp_path, [f"x-{RUN}", f"y-{RUN}"])
    argv = [str(folder) if a == "WS" else a for a in args]
    result = CliRunner().invoke(cli, ["workspace", "stress-test", *argv])
    assert result.exit_code == 1
    assert result.stderr == message
    assert not (folder / "metrics").exists()  # refused before anything started


def test_a_folder_without_a_workspace_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["workspace", "stress-test", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "workspace.json" in result.stderr


def test_a_store_error_in_the_report_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    import types

    import duckdb

    from devloop.errors import StoreError
    from devloop.runner import stress
    from devloop.store import db as store_db

    class Broken:
        def execute(self, *args: object) -> None:
            raise duckdb.IOException("IO Error: cannot read file")

        def close(self) -> None:
            pass

    monkeypatch.setattr(store_db, "connect", lambda root: Broken())
    workspace = types.SimpleNamespace(metrics_dir=tmp_path / "metrics")
    run = types.SimpleNamespace(
        workspace=workspace, options=types.SimpleNamespace(interval=1.0), host="h",
        started=0.0, ended=1.0,
    )  # fmt: skip
    with pytest.raises(StoreError, match="cannot read the stress test's rows from .*cannot read"):
        stress.stress_report(run)  # type: ignore[arg-type]
