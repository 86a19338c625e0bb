"""The per-hour rollups (``store.rollups``): every report gives the same JSON with them missing,
written, deleted, stale or corrupt as from raw rows, an open hour is never rolled up, and a past
day is read from one file. How compaction and retention write and drop them:
``test_store_compact_rollups.py``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
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
from devloop.store import write_rollups, write_table
from devloop.store.db import DAY_PREFIX, KINDS, ROLLUPS_DIR, consolidated, hours
from devloop.store.files import conform, read_rows, unlink_files, write_atomic
from devloop.store.layout import Partition, iter_partitions, scan_partition
from devloop.store.rollups import prune, write_days
from tests.helpers.stores import copy_without_cache

pytestmark = pytest.mark.slow

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def store_copy(simulated_day: Path, tmp_path: Path) -> Path:
    return copy_without_cache(simulated_day, tmp_path)


@pytest.fixture
def rolled_copy(simulated_day: Path, tmp_path: Path) -> Path:
    """A copy with every closed hour rolled up, hourly entries and day files, as
    ``write_rollups`` (called by ``simulate``) wrote them: the state the tests of rebuilding,
    corrupt entries, day files and prune start from."""
    target = tmp_path / ".devloop-workspace"
    shutil.copytree(simulated_day, target)
    assert write_rollups(target / "metrics") == 0  # whole already: nothing to write
    assert len(_entries(target)) == len(hours(target / "metrics")) * len(KINDS)
    return target


def _mid_range(ws: Path) -> TimeRange:
    """A range cutting hours in the middle, so the rollups of its edge hours are not used whole."""
    first = min(p.start for p, _ in iter_partitions(ws / "metrics", "samples"))
    return TimeRange(
        start=first + timedelta(hours=2, minutes=17, seconds=3),
        end=first + timedelta(hours=20, minutes=41, seconds=30),
    )


REPORTS: dict[str, Callable[[Store, TimeRange | None], Any]] = {
    "metrics": lambda s, r: workspace_metrics(s, r, detailed=True, compare_config=True, now=NOW),
    "export": lambda s, r: export_metrics(s, r, interval=300),
    "export-detailed": lambda s, r: export_metrics(s, r, interval=300, detailed=True),
    "peak-usage": lambda s, r: peak_usage(s, r),
    "peak-usage-agents": lambda s, r: peak_usage(s, r, agents=["*"]),
    "bottlenecks": lambda s, r: bottlenecks(s, r, threshold=50),
    "efficiency": lambda s, r: efficiency(s, r),
    "health": lambda s, r: health(s, r, min_life=600, now=NOW),
    "audit-cpu": lambda s, r: audit_query(s, "cpu", r),
    "audit-memory": lambda s, r: audit_query(s, "memory", r),
    "audit-fds": lambda s, r: audit_query(s, "fds", r),
}


#: The reports that read each kind of rollup, for the tests that need not run them all.
FEW = ("peak-usage", "bottlenecks", "audit-memory", "health")


def _all(ws: Path, *, use_cache: bool, names: tuple[str, ...] = tuple(REPORTS)) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for time_range in (None, _mid_range(ws)):
        with Store(ws) as store:
            store.use_cache = use_cache
            for name in names:
                run = REPORTS[name]
                results[f"{name} {time_range}"] = run(store, time_range).to_json()
    return results


def _entries(ws: Path) -> list[Path]:
    """The hourly entries (not the whole-day files made from them)."""
    return sorted((ws / "metrics" / ROLLUPS_DIR).rglob("hour=*/*.parquet"))


def _only(raw: dict[str, Any], names: tuple[str, ...] = FEW) -> dict[str, Any]:
    """The results of the reports ``names`` among ``raw`` (keyed as :func:`_all` keys them)."""
    return {key: value for key, value in raw.items() if key.split(" ", 1)[0] in names}


def test_reports_identical_cold_warm_and_deleted(
    store_copy: Path, simulated_day_raw: dict[str, Any]
) -> None:
    raw = simulated_day_raw  # every report, from the rows of an identical copy
    assert _entries(store_copy) == []
    cold = _all(store_copy, use_cache=True)
    assert _entries(store_copy) == []  # a report only reads
    hour_count = len(hours(store_copy / "metrics"))
    assert write_rollups(store_copy / "metrics") == hour_count  # as compaction does
    assert len(_entries(store_copy)) == hour_count * len(KINDS)
    warm = _all(store_copy, use_cache=True)
    shutil.rmtree(store_copy / "metrics" / ROLLUPS_DIR)
    # Deleted: the reports reading each kind of rollup (FEW); cold above ran them all.
    deleted = _all(store_copy, use_cache=True, names=FEW)
    assert cold == raw
    assert warm == raw
    assert deleted == _only(raw)


def test_a_changed_hour_is_rebuilt(rolled_copy: Path) -> None:
    root = rolled_copy / "metrics"
    before = set(_entries(rolled_copy))
    partition, directory = iter_partitions(root, "samples")[3]
    (old,) = scan_partition(directory, "samples").live
    rows = read_rows(old.path, "samples")
    rss = rows.column("rss_bytes").to_pylist()
    rss[0] += 3 * 1024**3  # a spike the reports must see
    changed = rows.set_column(
        rows.schema.get_field_index("rss_bytes"), "rss_bytes", pa.array(rss, pa.int64())
    )
    write_atomic("samples", conform("samples", changed), directory / "w-changed.parquet")
    unlink_files([old.path])
    raw = _all(rolled_copy, use_cache=False, names=FEW)
    assert _all(rolled_copy, use_cache=True, names=FEW) == raw  # the changed hour read raw
    assert set(_entries(rolled_copy)) == before  # a report only reads
    assert write_rollups(root) == 1
    assert _all(rolled_copy, use_cache=True, names=FEW) == raw
    after = set(_entries(rolled_copy))
    rebuilt = {p for p in after - before}
    assert len(rebuilt) == len(KINDS)
    assert all(partition.relative_dir in str(p) for p in rebuilt)
    assert not any(partition.relative_dir in str(p) for p in after & before)  # stale ones gone
    assert write_rollups(root) == 0


def test_a_corrupt_entry_is_rebuilt(rolled_copy: Path, simulated_day_raw: dict[str, Any]) -> None:
    root = rolled_copy / "metrics"
    raw = _only(simulated_day_raw)
    broken = _entries(rolled_copy)[:3]
    broken[0].write_bytes(b"not parquet at all")
    broken[1].write_bytes(broken[1].read_bytes()[:100])
    broken[2].write_bytes(b"")
    assert _all(rolled_copy, use_cache=True, names=FEW) == raw
    assert broken[0].read_bytes() == b"not parquet at all"  # a report only reads
    assert write_rollups(root) == 3
    for path in broken:
        assert path.read_bytes()[:4] == b"PAR1"


def test_unwritable_rollups_leave_the_hours_read_raw(
    store_copy: Path, simulated_day_raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from devloop.store import rollups

    def refuse(*args: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(rollups, "write_entry", refuse)
    write_rollups(store_copy / "metrics")
    raw = _only(simulated_day_raw)
    assert _all(store_copy, use_cache=True, names=FEW) == raw
    assert _entries(store_copy) == []


def test_the_open_hour_is_never_rolled_up(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    root = ws / "metrics"
    now = datetime.now(UTC)
    ticks = [now - timedelta(hours=1, seconds=s) for s in range(3)] + [now]
    write_table(
        root,
        "samples",
        pa.Table.from_pylist(
            [
                {
                    "ts": ts,
                    "host": "h1",
                    "project": "api",
                    "agent": "linter",
                    "pid": 7,
                    "start_time": now - timedelta(hours=2),
                    "cpu_cores": 0.5,
                    "rss_bytes": 1000,
                    "fds": 3,
                    "threads": 1,
                    "state": "running",
                }
                for ts in ticks
            ]
        ),
    )
    write_table(
        root,
        "system",
        pa.Table.from_pylist(
            [{"ts": ts, "host": "h1", "cores": 2, "cpu_busy_cores": 1.0} for ts in ticks]
        ),
    )
    result = peak_usage(ws)
    write_rollups(root, now=now)  # the clock passed in: the hour turning meanwhile changes nothing
    cached = {p.parent.relative_to(root / ROLLUPS_DIR / p.parent.parent.parent.name) for p in
              _entries(ws)}  # fmt: skip
    open_hour = Path(Partition.of_datetime(now).relative_dir)
    closed_hour = Path(Partition.of_datetime(ticks[0]).relative_dir)
    assert open_hour not in cached
    assert closed_hour in cached
    assert result.peaks["ticks"].to_list() == [0, 4]  # no project known, one agent
    assert write_rollups(root, now=ticks[0]) == 0  # "now" in the older hour: nothing is closed


def test_whole_days_are_read_from_one_file_with_the_same_rows(rolled_copy: Path) -> None:
    """A past day's hourly entries of one kind are read from one day file holding the same
    rows (value counts: the same values, counts summed); a partial group is read as it is;
    a changed hour makes a new day file and prune removes the old one."""
    root = rolled_copy / "metrics"
    connection = duckdb.connect()

    def entries(kind: str) -> list[Path]:
        return sorted((root / ROLLUPS_DIR / kind).glob("date=*/hour=*/*.parquet"))

    for kind in ("agent", "agent_hour", "agent_rss"):
        hourly = entries(kind)
        assert len(hourly) == 24  # days=1: one date
        day = consolidated(hourly)
        assert len(day) == 1 and day[0].name.startswith(DAY_PREFIX)
        assert consolidated(hourly[1:]) == hourly[1:]  # not the whole day: as it is
        assert consolidated(hourly, today="2000-01-01") == hourly  # a day not yet over
        if kind == "agent_rss":
            query = (
                "SELECT project, agent, rss, sum(n) "
                "FROM read_parquet({}, hive_partitioning = false) GROUP BY ALL"
            )
            assert pq.read_metadata(day[0]).num_rows < sum(
                pq.read_metadata(p).num_rows for p in hourly
            )
        else:
            query = "SELECT * FROM read_parquet({}, hive_partitioning = false)"
        got = sorted(connection.sql(query.format([str(day[0])])).fetchall())
        want = sorted(connection.sql(query.format([str(p) for p in hourly])).fetchall())
        assert got == want
    # A changed hour (a late file, a compaction) gets a new key: a report reads its hours as
    # they are, the next compaction writes a new day file replacing the old one, and prune
    # removes day files no hour set matches any more.
    hourly = entries("agent")
    old_day = consolidated(hourly)[0]
    renamed = hourly[2].with_name("0" * 24 + ".parquet")
    hourly[2].rename(renamed)
    changed = [*hourly[:2], renamed, *hourly[3:]]
    assert consolidated(changed) == changed and old_day.exists()  # a report writes nothing
    new_day = write_days(changed)[0]
    assert new_day != old_day and new_day.is_file() and not old_day.exists()
    renamed.rename(hourly[2])
    assert prune(root) == 1  # the day file made with the renamed entry
    assert not new_day.exists()
    assert write_days(hourly) == [old_day] and old_day.is_file()  # made again


def test_prune_removes_a_killed_writers_temporary_rollups(rolled_copy: Path) -> None:
    """A compaction killed while writing leaves ``.<name>.<pid>.tmp`` files (hourly entries and
    day files); the next one (prune, under the maintenance lock) removes them and nothing else."""
    root = rolled_copy / "metrics"
    hourly = sorted((root / ROLLUPS_DIR / "agent").glob("date=*/hour=*/*.parquet"))
    kept = sorted(p for p in (root / ROLLUPS_DIR).rglob("*") if p.is_file())
    left = [
        hourly[0].with_name(f".{hourly[0].name}.4242.tmp"),
        hourly[0].parent.parent / f".{DAY_PREFIX}abc.parquet.4242.tmp",
    ]
    for path in left:
        path.write_bytes(b"half a file")
    assert prune(root) == 2
    assert sorted(p for p in (root / ROLLUPS_DIR).rglob("*") if p.is_file()) == kept


def test_an_hour_is_whole_when_all_of_its_rows_are_in_the_range(rolled_copy: Path) -> None:
    """The default range ends just after the newest tick, inside the last hour: that hour's
    rows are all in it, so its rollups answer (and its day reads as one file); a range that
    leaves out its newest tick cuts it. Likewise at the start, before an hour's oldest row."""
    with Store(rolled_copy, now=NOW) as store:
        selection = store.select(None, (), ())
        partitions = sorted(store.sources(selection).files)
        assert len(partitions) == 24
        oldest, newest = store.ends("samples")  # type: ignore[misc]
        assert selection.end == newest + timedelta(microseconds=1) < partitions[-1].end
        assert all(store.holds_whole(selection, partition) for partition in partitions)
        short = replace(selection, end=newest)  # the newest tick left out
        assert not store.holds_whole(short, partitions[-1])
        assert store.holds_whole(short, partitions[-2])
        later = replace(selection, start=oldest + timedelta(microseconds=1))
        assert not store.holds_whole(later, partitions[0])
        before = replace(selection, start=partitions[0].start - timedelta(hours=1))
        assert store.holds_whole(before, partitions[0])
