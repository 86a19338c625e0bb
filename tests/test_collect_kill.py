"""SIGKILL the real `devloop workspace collect` at KILLS random moments, restarting it each time.

Afterwards every file is readable, no (host, pid, start_time, ts) appears twice, each run kept
its ticks up to (about) the moment it was killed, and a final SIGTERM loses nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from devloop.store import connect

pytestmark = pytest.mark.realtime

INTERVAL = 0.1
#: SIGKILLs, each at a random moment. Four restarts suffice here: the fault campaign
#: (tests/test_faults.py, "collector tick" and "conversion child") kills the same collector at
#: chosen file operations with the same checks, and test_store_kill.py kills its StoreWriter at
#: 12 random moments per mode.
KILLS = 4
# A tick in flight is at most one interval; the rest is room for a loaded 2-core machine.
SLACK_S = 1.5

#: Every process on the host tagged with this project is recorded: a name no concurrent test
#: session tags its own processes with.
PROJECT = f"kill-{os.getpid()}"


class Collector:
    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devloop", "workspace", "collect", "--workspace-dir",
             str(folder), "--interval", f"{INTERVAL}s"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.started = threading.Event()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr.append(line)
                if line.startswith("Recording "):
                    self.started.set()

    def wait(self) -> int:
        code = self.process.wait(60)
        self.reader.join(60)
        return code


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({"projects": [{"name": PROJECT}]}))
    return folder


@pytest.mark.slow
def test_collector_survives_sigkill_at_random_moments(tmp_path):
    folder = _workspace(tmp_path)
    rng = random.Random(int(os.environ.get("DEVLOOP_KILL_SEED", "7")))
    env = {**os.environ, "DEVLOOP_PROJECT": PROJECT, "DEVLOOP_AGENT": "sleeper"}
    sleepers = [subprocess.Popen(["sleep", "600"], env=env) for _ in range(5)]
    kills: list[tuple[float, float]] = []  # (wall time the run was ready, wall time of the kill)
    try:
        for _ in range(KILLS):
            run = Collector(folder)
            assert run.started.wait(60), "".join(run.stderr)
            ready = time.time()
            # up to 3 s: a kill more than SLACK_S after the start checks the ticks reached it
            time.sleep(rng.uniform(0.2, 3.0))
            killed = time.time()
            run.process.send_signal(signal.SIGKILL)
            run.wait()
            kills.append((ready, killed))
        last = Collector(folder)
        assert last.started.wait(60)
        time.sleep(1.0)
        stopped = time.time()
        last.process.send_signal(signal.SIGTERM)
        assert last.wait() == 0, "".join(last.stderr)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()

    metrics = folder / "metrics"
    assert not list((metrics / "_spool").glob("*.seg")), "leftover spool after a clean stop"
    for file in metrics.rglob("*.parquet"):
        pq.read_metadata(file)  # every file is readable
    db = connect(metrics)
    duplicates = db.execute(
        "SELECT count(*) FROM (SELECT host, pid, start_time, ts FROM samples "
        "GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()
    assert duplicates == (0,)
    sleeper_pids = {p.pid for p in sleepers}
    recorded = {r[0] for r in db.execute("SELECT DISTINCT pid FROM samples").fetchall()}
    assert recorded == sleeper_pids
    ticks = [r[0] for r in db.execute(
        "SELECT epoch_ms(ts) / 1000.0 FROM system ORDER BY ts").fetchall()]  # fmt: skip
    assert len(ticks) == len(set(ticks))
    for ready, killed in kills:
        in_run = [t for t in ticks if ready - 1.0 <= t <= killed + INTERVAL]
        # What the run made durable reaches to within a tick (plus load slack) of the kill.
        if killed - ready > SLACK_S:
            assert in_run and in_run[-1] >= killed - SLACK_S, (ready, killed, in_run[-3:])
    # After SIGTERM the last tick before the stop is there.
    assert ticks[-1] >= stopped - SLACK_S
    starts = db.execute("SELECT count(*) FROM events WHERE action = 'start'").fetchone()
    stops = db.execute("SELECT count(*) FROM events WHERE action = 'stop'").fetchone()
    assert starts is not None and starts[0] == KILLS + 1
    assert stops == (1,)
