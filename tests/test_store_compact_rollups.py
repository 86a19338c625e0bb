"""Rollups are part of the store: compaction writes each closed hour's rollups in the same call
as its sorted file (never for an hour with rows in the spool), in the schemas ``columns.py``
declares; retention drops them with their hour; the collector's compaction child does the same;
the ``_cache`` folder of an older devloop is ignored, then removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devloop.analytics import Store, peak_usage
from devloop.errors import StoreError
from devloop.simulate import simulate
from devloop.store import StoreWriter, compact, retention, write_table
from devloop.store.columns import (
    ROLLUP_COLUMNS,
    ROLLUP_KEY,
    ROLLUP_SOURCES_KEY,
    ROLLUP_VERSIONS,
    SCHEMA_VERSION_KEY,
)
from devloop.store.db import DAY_PREFIX, KINDS, ROLLUPS_DIR, hours
from devloop.store.layout import iter_partitions
from devloop.store.schema import ROLLUPS
from tests.helpers.stores import copy_without_cache
from tests.test_store_rollups import FEW, _all, _entries, _only
from tests.test_store_support import HOUR, SECOND, T0, T0_DT, system_row, tick_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compacted(simulated_day: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A day of 24 closed hours, neither compacted nor rolled up, compacted once, and compact's
    report: read (or copied) by the tests of what compaction wrote, not one compaction each."""
    ws = copy_without_cache(simulated_day, tmp_path_factory.mktemp("compacted"))
    assert _entries(ws) == []
    return ws, compact(ws / "metrics")


def _sources(entry: Path) -> list[str]:
    metadata = pq.read_schema(entry).metadata
    return list(json.loads(metadata[ROLLUP_SOURCES_KEY]))


def test_compaction_writes_each_hours_rollups_in_the_same_call(
    compacted: tuple[Path, Any], simulated_day_raw: dict[str, Any]
) -> None:
    """Every closed hour compacted gets its rollups, built from its sorted file, in the call
    that wrote that file; the reports read them and give what the rows give."""
    store_copy, report = compacted  # compacted without rollups before
    root = store_copy / "metrics"
    raw = _only(simulated_day_raw)  # the reports over the rows before compaction
    closed = [hour.partition for hour in hours(root)]
    assert report.rolled_up == len(closed) == 24
    for hour in hours(root):
        (compacted,) = hour.files  # one sorted file
        assert isinstance(compacted, Path) and compacted.name.startswith("c-")
        for kind in KINDS:
            assert _sources(hour.entry(root, kind)) == [compacted.name]
    assert len(_entries(store_copy)) == len(closed) * len(KINDS)
    assert _all(store_copy, use_cache=True, names=FEW) == raw
    assert compact(root).rolled_up == 0  # nothing new: nothing rebuilt


def test_rollup_files_have_the_declared_schemas(compacted: tuple[Path, Any]) -> None:
    root = compacted[0] / "metrics"
    files = sorted((root / ROLLUPS_DIR).rglob("*.parquet"))
    days = [path for path in files if path.name.startswith(DAY_PREFIX)]
    assert len(files) == 25 * len(KINDS) and len(days) == len(KINDS)  # 24 hours and their day
    for path in files:
        kind = path.relative_to(root / ROLLUPS_DIR).parts[0]
        schema = pq.read_schema(path)
        assert schema.equals(ROLLUPS[kind]), (path, schema)
        assert schema.metadata[ROLLUP_KEY] == kind.encode()
        assert schema.metadata[SCHEMA_VERSION_KEY] == str(ROLLUP_VERSIONS[kind]).encode()
        assert [c.name for c in ROLLUP_COLUMNS[kind]] == schema.names


def test_a_rollup_unlike_its_declaration_is_refused() -> None:
    from devloop.store import rollups

    lives = pa.table({"host": ["h1"], "project": ["api"]})
    with pytest.raises(StoreError, match=r"rollup lives: columns \['host', 'project'\]"):
        rollups.conform("lives", lives)
    counts = pa.table(
        {"host": ["h1"], "project": ["api"], "agent": ["lint"], "cpu": [None], "n": [3]},
        schema=pa.schema([(name, pa.string()) for name in ("host", "project", "agent")])
        .append(pa.field("cpu", pa.float64()))
        .append(pa.field("n", pa.int64())),
    )
    with pytest.raises(StoreError, match="rollup agent_cpu.cpu: 1 null values"):
        rollups.conform("agent_cpu", counts)


def _ticks(root: Path, ticks: list[datetime]) -> None:
    """One process of api/linter at each of ``ticks`` (one file per call), with its processes
    and system rows."""
    rows = [
        {"ts": ts, "host": "h1", "project": "api", "agent": "linter", "pid": 7,
         "start_time": ticks[0] - timedelta(hours=1), "cpu_cores": 0.5, "rss_bytes": 1000 + i,
         "fds": 3, "threads": 1, "state": "running"}
        for i, ts in enumerate(ticks)
    ]  # fmt: skip
    write_table(root, "samples", pa.Table.from_pylist(rows))
    names = ("ts", "host", "pid", "start_time", "project", "agent")
    write_table(
        root, "processes", pa.Table.from_pylist([{n: row[n] for n in names} for row in rows])
    )
    write_table(
        root,
        "system",
        pa.Table.from_pylist([{"ts": ts, "host": "h1", "cores": 2} for ts in ticks]),
    )


def _peaks(ws: Path, *, use_cache: bool) -> Any:
    with Store(ws) as store:
        store.use_cache = use_cache
        return peak_usage(store, agents=["*"]).to_json()


def test_retention_drops_the_rollups_with_their_hour(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    root = ws / "metrics"
    start = datetime(2024, 3, 4, 8, tzinfo=UTC)
    _ticks(root, [start + timedelta(minutes=20 * i) for i in range(9)])  # hours 8, 9, 10
    now = datetime(2024, 3, 5, 0, 30, tzinfo=UTC)
    assert compact(root, now=now).rolled_up == 3
    folders = sorted({p.parent.relative_to(root / ROLLUPS_DIR) for p in _entries(ws)})
    assert len(folders) == 3 * len(KINDS)
    assert len(list((root / ROLLUPS_DIR).glob(f"*/date=*/{DAY_PREFIX}*.parquet"))) == len(KINDS)
    raw = _peaks(ws, use_cache=False)
    assert _peaks(ws, use_cache=True) == raw
    report = retention(root, max_age_seconds=14 * 3600, now=now)  # cutoff 10:30: 8 and 9 go
    assert [str(d.partition) for d in report.dropped] == ["2024-03-04 hour=8", "2024-03-04 hour=9"]
    left = sorted({p.parent.relative_to(root / ROLLUPS_DIR) for p in _entries(ws)})
    assert left == [Path(kind, "date=2024-03-04", "hour=10") for kind in sorted(KINDS)]
    assert not list((root / ROLLUPS_DIR).glob(f"*/date=*/{DAY_PREFIX}*.parquet"))  # not whole
    assert _peaks(ws, use_cache=True) != raw  # two hours fewer
    assert _peaks(ws, use_cache=True) == _peaks(ws, use_cache=False)


def test_compaction_never_rolls_up_an_hour_with_rows_in_the_spool(tmp_path: Path) -> None:
    """A closed hour whose newest rows are still in a running collector's spool is compacted
    but not rolled up (its files do not hold all its rows); once they are in Parquet, the next
    compaction rolls it up."""
    root = tmp_path / "metrics"
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0))
        writer.append("samples", tick_rows(T0 + HOUR))
        writer.append("system", [system_row(T0), system_row(T0 + HOUR)])
    writer = StoreWriter(root, segment_seconds=3600)
    try:
        writer.append("samples", tick_rows(T0 + HOUR + 5 * SECOND))  # hour 11, in the spool
        writer.flush()
        now = T0_DT + timedelta(hours=2)
        assert compact(root, now=now).rolled_up == 1
        rolled = {p.parent.name for p in (root / ROLLUPS_DIR).rglob("hour=*/*.parquet")}
        assert rolled == {"hour=10"}
    finally:
        writer.close()
    assert compact(root, now=now).rolled_up == 1
    rolled = {p.parent.name for p in (root / ROLLUPS_DIR).rglob("hour=*/*.parquet")}
    assert rolled == {"hour=10", "hour=11"}


def test_the_cache_folder_of_an_older_devloop_is_ignored_then_removed(
    compacted: tuple[Path, Any], simulated_day_raw: dict[str, Any], tmp_path: Path
) -> None:
    # A compacted store with its rollups, and the ``_cache`` an older devloop left beside them.
    store_copy = tmp_path / ".devloop-workspace"
    shutil.copytree(compacted[0], store_copy)
    root = store_copy / "metrics"
    assert len(_entries(store_copy)) == 24 * len(KINDS)
    partition, _ = iter_partitions(root, "samples")[0]
    old = root / "_cache" / "project" / partition.relative_dir
    old.mkdir(parents=True)
    (old / f"{'0' * 24}.parquet").write_bytes(b"an old rollup")
    (root / "_cache" / "digests.json").write_text('{"version": 1, "files": {}}')
    raw = _only(simulated_day_raw)
    assert _all(store_copy, use_cache=True, names=FEW) == raw
    assert compact(root).rolled_up == 0  # nothing to redo: the folder goes all the same
    assert not (root / "_cache").exists()
    assert _all(store_copy, use_cache=True, names=FEW) == raw


def test_the_collectors_compaction_child_rolls_up_the_closed_hours(tmp_path: Path) -> None:
    """What a recorder starts once an hour: compaction with the hours' rollups, in a child."""
    ws = tmp_path / ".devloop-workspace"
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    simulate(ws, hours=2, projects=2, agents_per_project=2, seed=3, start=start)
    metrics = ws / "metrics"
    shutil.rmtree(metrics / ROLLUPS_DIR)  # as a collector's store: no rollups yet
    raw = peak_usage(ws).to_json()
    assert not (metrics / ROLLUPS_DIR).exists()  # a report only reads
    result = subprocess.run(
        [sys.executable, "-m", "devloop.store.convert", "compact", str(metrics),
         str(os.getpid()), "max-age=36000"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    compacted = json.loads(result.stdout.splitlines()[0])["compacted"]
    assert compacted["rolled_up"] == 2
    rolled = {p.parent.name for p in (metrics / ROLLUPS_DIR).rglob("hour=*/*.parquet")}
    assert rolled == {f"hour={(start + timedelta(hours=h)).hour}" for h in (0, 1)}
    assert peak_usage(ws).to_json() == raw  # read from the rollups now, the same numbers
