"""The long-running collector stays small: no pyarrow, DuckDB, polars or numpy in its process,
and a peak RSS (VmHWM) within the 60 MB goal, while its spool segments roll over to Parquet and
its hourly compaction runs, both in child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devloop.config import load_workspace
from devloop.runner.record import Recorder
from devloop.store import StoreWriter, connect
from devloop.store.spool import SegmentWriter
from tests.test_store_support import SECOND, T0, parquet_files, tick_rows

pytestmark = pytest.mark.realtime

RSS_GOAL_KB = 60 * 1024
HEAVY = ("pyarrow", "duckdb", "polars", "numpy", "pandas")
SLEEPERS = 3

#: Every process on the host tagged with this project is recorded: a name no concurrent test
#: session tags its own processes with.
PROJECT = f"memory-{os.getpid()}"

RECORDER = textwrap.dedent(
    f"""
    import json, sys, time
    from pathlib import Path
    from devloop.config import load_workspace
    from devloop.runner.record import Recorder

    def status():
        lines = (line.split() for line in open("/proc/self/status"))
        return {{fields[0][:-1]: int(fields[1]) for fields in lines if len(fields) > 1
                and fields[0] in ("VmRSS:", "VmHWM:")}}

    workspace = load_workspace(Path(sys.argv[1]))
    with Recorder(workspace, interval=0.1, segment_seconds=0.5) as recorder:
        recorder.run(duration=60, until=lambda: recorder.writer.segments_converted >= 4)
        running = status()
        metrics = workspace.metrics_dir
        parquet = len(list(metrics.rglob("*.parquet")))
        ticks = recorder.status().ticks
        converted = recorder.writer.segments_converted
    print(json.dumps({{
        "heavy": [name for name in {HEAVY!r} if name in sys.modules],
        "running": running, "closed": status(), "parquet_while_running": parquet,
        "ticks": ticks, "converted": converted,
    }}))
    """
)


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({"projects": [{"name": PROJECT}]}))
    return folder


def _sleepers() -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "DEVLOOP_PROJECT": PROJECT, "DEVLOOP_AGENT": "sleeper"}
    return [subprocess.Popen(["sleep", "120"], env=env) for _ in range(SLEEPERS)]


def test_recorder_stays_small_while_segments_roll_over_to_parquet(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    sleepers = _sleepers()
    try:
        result = subprocess.run(
            [sys.executable, "-c", RECORDER, str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert report["converted"] >= 4 and report["parquet_while_running"] >= 4
    assert report["running"]["VmHWM"] <= RSS_GOAL_KB, report
    assert report["closed"]["VmHWM"] <= RSS_GOAL_KB, report  # close() converts in a child too

    metrics = folder / "metrics"
    assert list((metrics / "_spool").iterdir()) == []
    ticks = report["ticks"]
    with connect(metrics) as db:
        system = db.sql("SELECT count(*), count(DISTINCT ts) FROM system").fetchall()
        samples = db.sql(
            "SELECT count(*), count(DISTINCT (pid, ts)), count(DISTINCT pid) FROM samples"
        ).fetchall()
        actions = db.sql("SELECT action FROM events ORDER BY ts").fetchall()
    assert system == [(ticks, ticks)]
    assert samples == [(SLEEPERS * ticks, SLEEPERS * ticks, SLEEPERS)]
    assert actions == [("start",), ("stop",)]
    assert len(list((metrics / "system").rglob("s-*.parquet"))) >= 5  # one per segment


def _status_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        lines = [line.split() for line in status]
    return {f[0][:-1]: int(f[1]) for f in lines if len(f) > 1 and f[0] in ("VmRSS:", "VmHWM:")}


def test_devloop_workspace_collect_maps_no_heavy_library(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    spool = folder / "metrics" / "_spool"
    spool.mkdir(parents=True)
    leftover = SegmentWriter(spool / "00000000000000000001-1.seg")  # recovered at start
    leftover.append("samples", tick_rows(T0))
    leftover.close()
    collector = subprocess.Popen(
        [sys.executable, "-m", "devloop", "workspace", "collect", "--workspace-dir",
         str(folder), "--interval", "0.1s"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert collector.stderr is not None
        assert collector.stderr.readline().startswith("Recording ")
        time.sleep(1.0)
        mapped = Path(f"/proc/{collector.pid}/maps").read_text()
        memory = _status_kb(collector.pid)
        collector.send_signal(signal.SIGTERM)
        _, err = collector.communicate(timeout=60)
        assert collector.returncode == 0, err
    finally:
        collector.kill()
        collector.wait()
    for name in HEAVY:
        assert f"/{name}/" not in mapped and f"/{name}." not in mapped, name
    assert memory["VmHWM"] <= RSS_GOAL_KB, memory
    with connect(folder / "metrics") as db:
        recovered = db.sql("SELECT count(*) FROM samples WHERE project = 'alpha'").fetchall()
    assert recovered == [(len(tick_rows(T0)),)]


def test_hourly_compaction_runs_in_a_child_and_close_waits_for_it(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    metrics = folder / "metrics"
    with StoreWriter(metrics) as writer:  # two files in a closed hour: compaction merges them
        writer.append("samples", tick_rows(T0))
        writer.roll()
        writer.append("samples", tick_rows(T0 + SECOND))
    hour = metrics / "samples" / "date=2024-03-04" / "hour=10"
    assert [p.name[:2] for p in parquet_files(hour)] == ["s-", "s-"]
    recorder = Recorder(load_workspace(folder), interval=0.1)
    with recorder:
        recorder.tick()
        recorder.tick()
        recorder._compacted_hour -= 1  # as if the hour had just turned
        recorder._maybe_compact()
        assert recorder._compactor is not None  # running while the recorder goes on
        recorder.tick()
    assert recorder._compactor is None
    [compacted] = parquet_files(hour)
    assert compacted.name.startswith("c-")
    with connect(metrics) as db:
        rows = db.sql("SELECT count(*) FROM samples WHERE project = 'alpha'").fetchall()
    assert rows == [(2 * len(tick_rows(T0)),)]


def test_hourly_compaction_applies_retention(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    metrics = folder / "metrics"
    with StoreWriter(metrics) as writer:  # an hour from 2024: far older than 30 days
        writer.append("samples", tick_rows(T0))
    old = metrics / "samples" / "date=2024-03-04" / "hour=10"
    assert parquet_files(old)
    recorder = Recorder(load_workspace(folder), interval=0.1, retention=30 * 86400)
    with recorder:
        recorder.tick()
        recorder.tick()
        recorder._compacted_hour -= 1
        recorder._maybe_compact()
    assert not old.exists()
    with connect(metrics) as db:
        drops = db.sql("SELECT message FROM events WHERE action = 'drop'").fetchall()
        kept = db.sql("SELECT count(*) FROM samples WHERE project = 'alpha'").fetchall()
    assert len(drops) == 1 and "2024-03-04" in drops[0][0]
    assert kept == [(0,)]
