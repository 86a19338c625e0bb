"""The newest ticks count: every report reads the spool's rows (a running collector's last
minutes, not yet Parquet) as it reads the same rows from Parquet.

Two stores: the hand-built store of ``test_analytics_reports`` over two hours, once with every
row in Parquet and once with some ``samples`` and ``system`` rows still in the spool, must give
every report the same JSON; and a real collector ticking beside a tagged burner, whose newest
tick every report must show with the burner's CPU while its rows are only in the spool.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from devloop.analytics import (
    Store,
    audit_query,
    bottlenecks,
    efficiency,
    export_metrics,
    health,
    peak_usage,
    workspace_metrics,
)
from devloop.analytics.timerange import TimeRange
from devloop.store import StoreWriter, write_rollups, write_table
from devloop.store.db import ROLLUPS_DIR, connect
from devloop.store.layout import iter_partitions
from devloop.store.schema import TABLES
from devloop.tune import TuneParameters
from devloop.tune.history import read_history
from tests.helpers.procs import wait_until
from tests.test_analytics_reports import GB, MB, T0, _series, build_store

pytestmark = pytest.mark.realtime

NOW = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

REPORTS: dict[str, Callable[[Path | Store], Any]] = {
    "metrics": lambda ws: workspace_metrics(ws, detailed=True, now=NOW),
    "export": lambda ws: export_metrics(ws, interval=1),
    "export-detailed": lambda ws: export_metrics(ws, interval=1, detailed=True),
    "export-hourly": lambda ws: export_metrics(ws, interval=3600),
    "peak-usage": lambda ws: peak_usage(ws),
    "peak-usage-agents": lambda ws: peak_usage(ws, agents=["*"]),
    "peak-usage-api": lambda ws: peak_usage(ws, projects=["api"]),
    "bottlenecks": lambda ws: bottlenecks(ws, threshold=20),
    "bottlenecks-tests": lambda ws: bottlenecks(ws, agents=["tests"], threshold=20),
    "efficiency": lambda ws: efficiency(ws),
    "health": lambda ws: health(ws, min_life=5, now=NOW),
    "audit-cpu": lambda ws: audit_query(ws, "cpu"),
    "audit-memory": lambda ws: audit_query(ws, "memory"),
    "efficiency-cut": lambda ws: efficiency(ws, TimeRange(start=T0 + HOUR / 2)),
    "peak-usage-cut": lambda ws: peak_usage(ws, TimeRange(start=T0 + HOUR / 2)),
}


def _us(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return value


def _rows(table: str, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``rows`` as the spool takes them: tuples in schema order, times in microseconds."""
    return [tuple(_us(row.get(name)) for name in TABLES[table].names) for row in rows]


def _system(tick: int) -> dict[str, Any]:
    """The ``system`` row of ``build_store`` at ``tick``."""
    return {
        "ts": T0 + timedelta(seconds=tick),
        "host": "h1",
        "cores": 4,
        "cpu_busy_cores": 1.0,
        "mem_total_bytes": 16 * GB,
        "mem_used_bytes": 4 * GB + tick * MB,
    }


def _build(folder: Path, spooled_from: datetime | None) -> StoreWriter | None:
    """The hand-built store of ``test_analytics_reports`` in ``folder`` with its ten ticks
    at 10:00 and again at 11:00; the ``samples`` and ``system`` rows from ``spooled_from`` on
    appended to the spool of an open writer (returned: closing it converts them)."""
    build_store(folder)
    root = folder / "metrics"
    for table in ("samples", "system"):
        for _, directory in iter_partitions(root, table):
            for path in directory.iterdir():
                path.unlink()
    shifts = (timedelta(0), HOUR)
    tables = {
        "samples": [{**row, "ts": row["ts"] + shift} for shift in shifts for row in _series()],
        "system": [
            {**row, "ts": row["ts"] + shift} for shift in shifts for row in map(_system, range(10))
        ],
    }
    writer = None if spooled_from is None else StoreWriter(root, segment_seconds=3600)
    for table, rows in tables.items():
        stored = [row for row in rows if spooled_from is None or row["ts"] < spooled_from]
        spooled = [row for row in rows if spooled_from is not None and row["ts"] >= spooled_from]
        if stored:
            write_table(root, table, pa.Table.from_pylist(stored))
        if writer is not None and spooled:
            writer.append(table, _rows(table, spooled))
    if writer is not None:
        writer.flush()
    return writer


def _reports(ws: Path | Store) -> dict[str, Any]:
    found = {name: run(ws).to_json() for name, run in REPORTS.items()}
    del found["health"]["store"]  # the spool's own size: what differs on purpose
    return found


def _history(ws: Path) -> dict[str, Any]:
    """What autotune reads (its per-entity hours and CPU histogram), as plain lists."""
    from devloop.config import load_workspace

    with Store(ws) as store:
        selection = store.select()
        found = read_history(store, selection, load_workspace(ws), TuneParameters())
    return {
        entity.name: {
            "stats": {name: values.tolist() for name, values in entity.stats.items()},
            "hist": [
                entity.hist_hour.tolist(),
                entity.hist_bin.tolist(),
                entity.hist_count.tolist(),
            ],
        }
        for entity in found.entities.values()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every report and autotune's input on the store with every row in Parquet."""
    ws = tmp_path_factory.mktemp("parquet") / ".devloop-workspace"
    _build(ws, None)
    return _reports(ws), _history(ws)


@pytest.mark.parametrize(
    "spooled_from",
    [
        pytest.param(T0, id="all-spooled"),
        pytest.param(T0 + timedelta(seconds=5), id="straddling-an-hour"),
        pytest.param(T0 + HOUR + timedelta(seconds=7), id="last-three-ticks"),
    ],
)
def test_every_report_reads_the_spool_as_it_reads_parquet(
    tmp_path: Path, reference: tuple[dict[str, Any], dict[str, Any]], spooled_from: datetime
) -> None:
    ws = tmp_path / ".devloop-workspace"
    root = ws / "metrics"
    writer = _build(ws, spooled_from)
    assert writer is not None
    try:
        assert list((root / "_spool").glob("*.seg"))
        with connect(root) as db:
            newest = db.execute("SELECT max(ts) FROM samples").fetchone()
        assert newest == (T0 + HOUR + timedelta(seconds=9),)
        reports, history = _reports(ws), _history(ws)
        for name, want in reference[0].items():
            assert reports[name] == want, name
        assert history == reference[1]
        # Reports write nothing into the store. The hours with rows in the spool are read raw
        # (files and spool), never rolled up from their files alone; a closed hour without
        # any is rolled up by the writer of whole hours.
        assert not list((root / ROLLUPS_DIR).rglob("*.parquet"))
        write_rollups(root)
        whole = {"hour=10"} if spooled_from > T0 + HOUR else set()
        found = (root / ROLLUPS_DIR / "project").rglob("hour=*/*.parquet")
        assert {path.parent.name for path in found} == whole
        # A store opened before the spool is converted reads those rows once (from its
        # spool snapshot, not again from the Parquet written since).
        before = Store(ws)
    finally:
        writer.close()
    assert not list((root / "_spool").glob("*.seg"))  # converted: now all in Parquet
    with before:
        assert _reports(before) == reference[0]
    assert _reports(ws) == reference[0]


# --- a real collector ticking beside a tagged burner ------------------------------------------

DEADLINE = 120.0  # generous: a loaded 2-core machine is slow to start Python (segments: 300 s)
INTERVAL = 0.5
TICKS = 4  # ticks with the burner's CPU before the reports read
PROJECT = f"spool-{uuid.uuid4().hex[:6]}"  # unique: another suite's tagged processes are not ours


def _collector_workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (tmp_path / "proj").mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "projects": [{"name": PROJECT, "path": "proj"}],
        "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "64GB",
                                      "checkInterval": INTERVAL}},
    }))  # fmt: skip
    return folder


def _newest(root: Path) -> tuple[datetime, int, float] | None:
    """The views' newest collector tick, the host's cores, and the burner's CPU (cores) at it;
    None before the burner has a CPU reading there and at TICKS ticks before it."""
    if not root.is_dir():
        return None
    with connect(root) as db:
        found = db.execute(
            "SELECT s.ts, s.cores, (SELECT sum(cpu_cores) FROM samples p WHERE p.ts = s.ts "
            "AND p.project = ? AND p.agent = 'burner'), (SELECT count(*) FROM samples p "
            "WHERE p.project = ? AND p.cpu_cores > 0) FROM system s ORDER BY s.ts DESC LIMIT 1",
            [PROJECT, PROJECT],
        ).fetchall()
    if not found or not found[0][2] or found[0][3] < TICKS:
        return None
    ts, cores, cpu, _ = found[0]
    return ts, int(cores), float(cpu)


def _used(root: Path, cores: int, newest: datetime | None = None) -> tuple[float, float]:
    """From the views: the average and highest CPU % of the project's per-tick sums over the
    collector ticks (of the export interval holding ``newest`` when given): 0 at a tick
    without a sample, none at a tick whose samples have no CPU reading yet (a process's
    first)."""
    bucket = round(INTERVAL * 1e6)
    where = f"epoch_us(t.ts) // {bucket} = epoch_us(?::TIMESTAMPTZ) // {bucket}"
    with connect(root) as db:
        ((avg, top),) = db.execute(
            f"""
            SELECT avg(v), max(v) FROM (
                SELECT CASE WHEN u.ts IS NULL THEN 0 ELSE u.cpu END AS v FROM system t
                LEFT JOIN (SELECT ts, sum(cpu_cores) AS cpu FROM samples WHERE project = ?
                           GROUP BY ts) u ON u.ts = t.ts
                WHERE {where if newest is not None else "true"}
            )
            """,
            [PROJECT, newest] if newest is not None else [PROJECT],
        ).fetchall()
    return 100.0 * avg / cores, 100.0 * top / cores


def test_every_report_shows_the_newest_spooled_tick_of_a_running_collector(
    tmp_path: Path,
) -> None:
    from tests.helpers.procs import helpers

    folder = _collector_workspace(tmp_path)
    root = folder / "metrics"
    collector = subprocess.Popen(
        [sys.executable, "-m", "devloop", "workspace", "collect", "--workspace-dir", str(folder),
         "--interval", f"{INTERVAL}s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with helpers() as start:
        try:
            start("busy", tags=(PROJECT, "burner"))
            wait_until(lambda: _newest(root) is not None, timeout=DEADLINE, step=0.2)
            # Freeze the collector so the store holds still while the reports read it; its
            # newest tick must carry the burner's CPU.
            deadline = time.monotonic() + DEADLINE
            while True:
                os.kill(collector.pid, signal.SIGSTOP)
                found = _newest(root)
                if found is not None or time.monotonic() > deadline:
                    break
                os.kill(collector.pid, signal.SIGCONT)
                time.sleep(INTERVAL)
            assert found is not None, "no tick with the burner's CPU"
            newest, cores, cpu = found
            percent = 100.0 * cpu / cores
            # Before any conversion: the rows are only in the spool.
            assert list((root / "_spool").glob("*.seg"))
            assert not list((root / "samples").rglob("*.parquet"))
            _check_reports(folder, newest, cores, percent)
        finally:
            os.kill(collector.pid, signal.SIGCONT)
            collector.send_signal(signal.SIGTERM)
            _, err = collector.communicate(timeout=DEADLINE)
    assert collector.returncode == 0, err


def _check_reports(folder: Path, newest: datetime, cores: int, percent: float) -> None:
    """Every report's newest tick is ``newest`` and holds the burner's ``percent``."""
    root = folder / "metrics"
    approx = pytest.approx(percent, rel=1e-6)
    tick = TimeRange(start=newest)  # the newest tick alone

    export = export_metrics(folder, interval=INTERVAL).rows
    last = export.filter(export["project"] == PROJECT).row(-1, named=True)
    assert last["interval_start"] <= newest < last["interval_start"] + timedelta(seconds=INTERVAL)
    avg, top = _used(root, cores, newest)
    assert last["cpu_avg_percent"] == pytest.approx(avg, rel=1e-6)
    assert last["cpu_max_percent"] == pytest.approx(top, rel=1e-6)
    assert top >= percent * (1 - 1e-6)
    (alone,) = export_metrics(folder, tick, interval=INTERVAL).rows.iter_rows(named=True)
    assert (alone["ticks"], alone["cpu_avg_percent"]) == (1, approx)

    peaks = peak_usage(folder, tick).peaks
    project = peaks.filter(peaks["scope"] == "project").row(0, named=True)
    assert (project["project"], project["cpu_peak_percent"], project["cpu_peak_at"]) == (
        PROJECT, approx, newest,
    )  # fmt: skip
    agent = peaks.filter(peaks["agent"] == "burner").row(0, named=True)
    assert (agent["cpu_peak_percent"], agent["ticks"]) == (approx, 1)

    used = efficiency(folder, tick).projects.row(0, named=True)
    assert (used["project"], used["ticks"], used["cpu_used_avg_percent"]) == (PROJECT, 1, approx)

    # The burner runs throughout, so a low threshold makes one interval that ends at the tick.
    found = bottlenecks(folder, threshold=0.1, resources=("cpu",)).intervals
    ends = found.filter((found["project"] == PROJECT) & (found["end"] == newest))
    assert ends.height == 1
    (driver, *_) = ends["drivers"][0]
    assert (driver["agent"], driver["share_percent"]) == ("burner", pytest.approx(100.0))
    just = bottlenecks(folder, tick, threshold=0.1, resources=("cpu",)).intervals
    row = just.filter(just["scope"] == "project").row(0, named=True)
    assert (row["start"], row["end"], row["peak"]) == (newest, newest, approx)

    live = workspace_metrics(folder, detailed=True, compare_config=True)
    assert live.at == newest
    (mine,) = live.projects.filter(live.projects["project"] == PROJECT).iter_rows(named=True)
    assert mine["cpu_percent"] == approx
    assert live.config is not None
    (config,) = live.config.iter_rows(named=True)
    assert config["used_avg_cpu_percent"] == pytest.approx(_used(root, cores)[0], rel=1e-6)

    (audited,) = audit_query(folder, "cpu", tick, agents=["burner"]).agents.iter_rows(named=True)
    assert (audited["ticks"], audited["max"], audited["max_at"]) == (1, approx, newest)

    lives = health(folder, min_life=INTERVAL).memory
    (life,) = lives.filter(lives["agent"] == "burner").iter_rows(named=True)
    assert life["last"] == newest

    from devloop.config import load_workspace

    with Store(folder) as store:
        history = read_history(store, store.select(tick), load_workspace(folder), TuneParameters())
    for key in ((PROJECT, ""), (PROJECT, "burner")):
        stats = history.entities[key].stats
        assert (stats["ticks"].sum(), stats["cpu_sum"].sum()) == (1, approx), key
