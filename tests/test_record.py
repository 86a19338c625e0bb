"""devloop run and devloop workspace collect, with real processes and a real store."""

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
from click.testing import CliRunner

from devloop.cli import cli
from devloop.store import connect

pytestmark = pytest.mark.realtime

DEADLINE = 60.0  # generous: these machines are shared and may be loaded
# Project names unique to this run: tagged processes of another test suite running on the same
# machine would otherwise be recorded as ours.
RUN = uuid.uuid4().hex[:6]
API, WEB = f"api-{RUN}", f"web-{RUN}"


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (tmp_path / "api").mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "projects": [{"name": API, "path": "api"}, {"name": WEB, "path": "web"}],
        "global": {"resourceLimits": {"checkInterval": 0.2}},
    }))  # fmt: skip
    return folder


def _devloop(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "devloop", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def _wait_for(predicate, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_records_the_tagged_command_and_returns_its_exit_code(tmp_path):
    folder = _workspace(tmp_path)
    # Bursts of CPU between sleeps, about 12 % of the machine: under its project's 30 % limit,
    # so the enforcer (on by default) does not pause it for its 5 s (a steady burner was,
    # twice). Pausing a ``devloop run`` command: test_watchdog.py and the fault campaign.
    burn = (
        "import time\nfor _ in range(4):\n    end = time.process_time() + 0.05\n"
        "    while time.process_time() < end: pass\n    time.sleep(0.15)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder), "--project",
         API, "--agent", "burner", "--", sys.executable, "-c", burn + "raise SystemExit(3)"],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    db = connect(folder / "metrics")
    rows = db.execute(
        f"SELECT count(*), max(cpu_seconds) FROM samples WHERE project='{API}' AND agent='burner'"
    ).fetchone()
    assert rows is not None and rows[0] >= 1 and rows[1] > 0
    actions = [r[0] for r in db.execute("SELECT action FROM events ORDER BY ts").fetchall()]
    assert actions[:2] == ["start", "agent-start"] and actions[-2:] == ["agent-exit", "stop"]
    cmd = db.execute("SELECT cmdline FROM processes WHERE agent='burner'").fetchall()
    assert any("raise SystemExit(3)" in c[0] for c in cmd)
    limits = db.execute("SELECT project, cpu_limit_percent FROM limits ORDER BY project").fetchall()
    assert limits == [(API, 30.0), (WEB, 30.0)]


def test_run_passes_the_tags_to_the_command(tmp_path):
    folder = _workspace(tmp_path)
    code = "import os; print(os.environ['DEVLOOP_PROJECT'], os.environ['DEVLOOP_AGENT'])"
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder), "-p", WEB,
         "-a", "linter", "--no-record", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == f"{WEB} linter\n"
    assert not (folder / "metrics").exists()


def test_run_exit_code_of_a_signalled_command(tmp_path):
    folder = _workspace(tmp_path)
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder), "-p", API,
         "-a", "x", "--no-record", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "billing", "-a", "x", "--", "true"],
         f"Error: unknown project 'billing' (known projects: {API}, {WEB})\n"),
        (["-p", API, "-a", "x", "--", "no-such-command-xyz"],
         "Error: command not found: no-such-command-xyz\n"),
        (["-p", API, "-a", "x", "--interval", "soon", "--", "true"], None),
    ],
)  # fmt: skip
def test_run_rejects_bad_input(tmp_path, monkeypatch, args, message):
    folder = _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "--workspace-dir", str(folder), *args])
    assert result.exit_code in (1, 2)
    if message is None:
        assert "Invalid value for --interval: not a duration: 'soon'" in result.stderr
    else:
        assert result.stderr == message


def test_collect_records_a_tagged_busy_loop_and_stops_cleanly_on_sigterm(tmp_path):
    folder = _workspace(tmp_path)
    env = {**os.environ, "DEVLOOP_PROJECT": API, "DEVLOOP_AGENT": "burner"}
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    foreign = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "DEVLOOP_PROJECT": "elsewhere", "DEVLOOP_AGENT": "x"},
    )
    collector = _devloop("workspace", "collect", "--workspace-dir", str(folder),
                         "--interval", "0.2s")  # fmt: skip
    try:
        lock = folder / "metrics"
        _wait_for(lambda: any(lock.rglob("*.seg")) or any(lock.rglob("*.spool")) or
                  _has_spool(lock), "the collector to start")  # fmt: skip
        time.sleep(1.5)
        collector.send_signal(signal.SIGTERM)
        _, err = collector.communicate(timeout=DEADLINE)
        assert collector.returncode == 0, err
        assert "Done: ticks" in err
    finally:
        for process in (burner, foreign, collector):
            process.kill()
            process.wait()
    db = connect(folder / "metrics")
    projects = {r[0] for r in db.execute("SELECT DISTINCT project FROM samples").fetchall()}
    assert projects == {API}  # the process tagged for another workspace is not recorded
    cpu = db.execute("SELECT avg(cpu_cores) FROM samples WHERE agent='burner' AND cpu_cores IS NOT "
                 "NULL").fetchone()  # fmt: skip
    assert cpu is not None and 0.3 < cpu[0] <= 1.1  # a busy loop is one core at most


def _has_spool(root: Path) -> bool:
    return root.exists() and any(p.is_file() for p in root.rglob("*") if "spool" in str(p))


def test_a_second_collector_is_refused(tmp_path):
    folder = _workspace(tmp_path)
    first = _devloop("workspace", "collect", "--workspace-dir", str(folder), "--interval", "0.2s")
    try:
        _wait_for(lambda: _has_spool(folder / "metrics"), "the first collector")
        second = subprocess.run(
            [sys.executable, "-m", "devloop", "workspace", "collect", "--workspace-dir",
             str(folder), "--duration", "1s"], capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.startswith("Error: another collector (pid ")
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=DEADLINE)
    assert first.returncode == 0


def test_collect_duration_and_bad_interval(tmp_path, monkeypatch):
    folder = _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["workspace", "collect", "--interval", "0s"])
    assert result.exit_code == 2
    assert "Invalid value for --interval: must be above 0, got '0s'" in result.stderr
    result = CliRunner().invoke(cli, ["workspace", "collect", "--max-size", "2XB"])
    assert result.exit_code == 2
    assert "Invalid value for --max-size: unknown size unit 'XB' in '2XB'" in result.stderr
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["workspace", "collect", "--workspace-dir", str(folder),
                                      "--duration", "1s", "--interval", "0.25s"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < DEADLINE
    ticks = connect(folder / "metrics").execute("SELECT count(*) FROM system").fetchone()
    assert ticks is not None and 3 <= ticks[0] <= 6
