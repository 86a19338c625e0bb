"""Fleet autotune on real stores built by hand: hosts of two machine classes, each host's runs
replayed on its own machine, suggestions per class."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from click.testing import CliRunner

from devloop.cli import cli
from devloop.store import write_table
from devloop.store.columns import PROCESSES, RUNS, SAMPLES
from devloop.tune import TuneParameters, autotune
from devloop.tune.fleet import autotune_fleet, machine_classes

MB = 1 << 20
GB = 1 << 30
T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
PARAMS = TuneParameters(min_history=60, min_samples=10, half_life=1e9, min_memory=0)
PAUSE = {"maxCpu": 100, "maxMemory": "8GB", "enforcementAction": "pause"}
#: host -> (cores, memory)
MACHINES = {"ci-1": (8, 32 * GB), "laptop-1": (4, 16 * GB), "laptop-2": (4, 16 * GB)}


def row(columns: Any, **values: Any) -> dict[str, Any]:
    return {column.name: values.get(column.name) for column in columns}


def build(folder: Path, runs: list[tuple[str, int, float]]) -> Path:
    """A workspace of one project ``api`` whose ``runs`` are (host, start second, cores): 10
    ticks each at ``cores``, 100MB, agent ``tests``; every host of MACHINES ticks throughout."""
    folder.mkdir(parents=True)
    (folder / "workspace.json").write_text(json.dumps({
        "workspace_name": "fleet",
        "projects": [{"name": "api", "path": "api", "priority": 2}],
        "global": {"resourceLimits": PAUSE},
    }))  # fmt: skip
    root = folder / "metrics"
    end = max(start for _, start, _ in runs) + 15
    for host, (cores, memory) in MACHINES.items():  # each host writes its own files
        write_table(root, "system", pa.Table.from_pylist([
            {"ts": T0 + timedelta(seconds=s), "host": host, "cores": cores,
             "cpu_busy_cores": 1.0, "mem_total_bytes": memory, "mem_used_bytes": 4 * GB}
            for s in range(end)
        ]))  # fmt: skip
        _runs(root, [(n, r) for n, r in enumerate(runs) if r[0] == host])
    return folder


def _runs(root: Path, runs: list[tuple[int, tuple[str, int, float]]]) -> None:
    if not runs:
        return
    run_rows, process_rows, sample_rows = [], [], []
    for n, (host, start, cores) in runs:
        begin, stop = T0 + timedelta(seconds=start), T0 + timedelta(seconds=start + 10)
        run_id, pid = f"r{n}", 1000 + n
        run_rows.append(row(
            RUNS, ts=stop, host=host, run_id=run_id, project="api", agent="tests",
            trigger="watch", status="complete", queued=begin, started=begin, ended=stop,
            paused_seconds=0.0, throttled_seconds=0.0, cpu_user_seconds=10 * cores,
            cpu_system_seconds=0.0, max_rss_bytes=100 * MB))  # fmt: skip
        process_rows.append(row(
            PROCESSES, ts=begin + timedelta(seconds=1), host=host, pid=pid, start_time=begin,
            project="api", agent="tests", run_id=run_id))  # fmt: skip
        for i in range(10):
            sample_rows.append(row(
                SAMPLES, ts=begin + timedelta(seconds=i + 1), host=host, project="api",
                agent="tests", pid=pid, start_time=begin, cpu_cores=cores,
                rss_bytes=100 * MB, state="running"))  # fmt: skip
    write_table(root, "runs", pa.Table.from_pylist(run_rows))
    write_table(root, "processes", pa.Table.from_pylist(process_rows))
    write_table(root, "samples", pa.Table.from_pylist(sample_rows))


def bursts(host: str, count: int = 20, cores: float = 3.0) -> list[tuple[str, int, float]]:
    return [(host, i * 100, cores) for i in range(count)]


def test_hosts_bursting_at_once_do_not_share_a_machine(tmp_path):
    # Two laptops burst at the same seconds, 3 cores each (75 % of 4). On one machine they
    # would need 150 %; each on its own needs its burst level: under pause, exactly 75 %.
    ws = build(tmp_path / "ws", bursts("laptop-1") + bursts("laptop-2"))
    result = autotune(ws, params=PARAMS, now=T0)
    assert result.projects["api"].cpu == 75.0
    assert result.to_json()["backtest"]["totals"]["suggested"]["p95"] == 1.0


def test_each_machine_class_is_tuned_from_its_own_hosts(tmp_path):
    # The same 3-core bursts are 75 % of a laptop and 37.5 % of the 8-core CI runner.
    runs = bursts("laptop-1") + bursts("laptop-2") + bursts("ci-1")
    ws = build(tmp_path / "ws", runs)
    from devloop.analytics import Store

    with Store(ws) as store:
        classes = machine_classes(store)
    assert [(c.name, c.hosts, c.cores, c.memory_bytes) for c in classes] == [
        ("4 cores, 16GB", ("laptop-1", "laptop-2"), 4, 16 * GB),
        ("8 cores, 32GB", ("ci-1",), 8, 32 * GB),
    ]
    found = autotune_fleet(ws, params=PARAMS)
    assert [(m.name, s.projects["api"].cpu) for m, s in found] == [
        ("4 cores, 16GB", 75.0),
        ("8 cores, 32GB", 37.5),
    ]
    assert found[0][1].to_json()["group"] == {
        "name": "4 cores, 16GB",
        "hosts": ["laptop-1", "laptop-2"],
        "cores": 4,
        "memory_bytes": 16 * GB,
    }
    assert [
        m.hosts for m in (c for c, _ in autotune_fleet(ws, params=PARAMS, group_by="host"))
    ] == [
        ("ci-1",),
        ("laptop-1",),
        ("laptop-2",),
    ]


def test_the_cli_writes_one_suggestions_file_per_class(tmp_path):
    runs = bursts("laptop-1") + bursts("ci-1")
    ws = build(tmp_path / "ws", runs)
    out = tmp_path / "suggestions.json"
    args = ["workspace", "autotune", "--workspace-dir", str(ws), "--group-by", "class",
            "--min-history", "1m", "--min-samples", "10", "--min-memory", "0",
            "--output", str(out), "--format", "table"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    laptop = json.loads((tmp_path / "suggestions.4-cores-16gb.json").read_text())
    runner = json.loads((tmp_path / "suggestions.8-cores-32gb.json").read_text())
    # laptop-2 recorded (system rows) but ran nothing: in its class, with no runs
    assert laptop["group"]["hosts"] == ["laptop-1", "laptop-2"]
    assert runner["group"]["hosts"] == ["ci-1"]
    assert laptop["projects"]["api"]["suggested"]["cpu_percent"] == 75.0
    assert runner["projects"]["api"]["suggested"]["cpu_percent"] == 37.5
    assert "Machine class 4 cores, 16GB (hosts laptop-1, laptop-2)" in result.output
    assert "Machine class 8 cores, 32GB (hosts ci-1)" in result.output
    assert not out.exists()
    bad = CliRunner().invoke(cli, [*args[:4], "--group-by", "rack"])
    assert bad.exit_code == 2 and "'rack' is not one of" in bad.output
