"""Retention: whole oldest hours dropped by age or size, each drop recorded as an event."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from devloop.store import connect, retention, store_info, write_table
from tests.test_store_support import HOUR, SECOND, T0, T0_DT, parquet_files

NOW = T0_DT + timedelta(minutes=30)  # 10:30
HOURS = [6, 7, 8, 9, 10]


def _fill(root: Path) -> None:
    for hour in HOURS:
        start = T0 + (hour - 10) * HOUR
        ts = pa.array([start + i * SECOND for i in range(hour)], pa.timestamp("us", tz="UTC"))
        cores = pa.array([8] * hour, pa.int16())
        write_table(root, "system", pa.table({"ts": ts, "host": ["devbox"] * hour, "cores": cores}))


def _hour_bytes(root: Path) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for path in parquet_files(root):
        hour = int(path.parent.name.removeprefix("hour="))
        sizes[hour] = sizes.get(hour, 0) + path.stat().st_size
    return sizes


def _events(root: Path) -> list[tuple[object, ...]]:
    with connect(root) as connection:
        return connection.sql(
            "SELECT ts, host, action, scope, message FROM events ORDER BY ts"
        ).fetchall()


def test_drop_by_age_removes_whole_old_hours_and_records_it(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    size = _hour_bytes(root)[6]
    report = retention(root, max_age_seconds=3 * 3600, now=NOW, host="devbox")  # cutoff 07:30
    assert [(str(d.partition), d.tables, d.rows, d.bytes) for d in report.dropped] == [
        ("2024-03-04 hour=6", ("system",), 6, size)
    ]
    assert sorted(_hour_bytes(root)) == [7, 8, 9, 10]
    message = f"dropped 1 hour (2024-03-04 hour=6): 6 rows, {size} bytes; older than 10800s"
    assert _events(root) == [(NOW, "devbox", "drop", "workspace", message)]
    assert store_info(root).table("system").rows == 7 + 8 + 9 + 10


def test_drop_by_size_removes_oldest_hours_until_under_the_limit(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    sizes = _hour_bytes(root)
    limit = sizes[8] + sizes[9] + sizes[10]
    report = retention(root, max_bytes=limit, now=NOW, host="devbox")
    assert [d.partition.hour for d in report.dropped] == [6, 7]
    assert (report.bytes_before, report.bytes_after) == (sum(sizes.values()), limit)
    assert sorted(_hour_bytes(root)) == [8, 9, 10]
    message = (
        f"dropped 2 hours (2024-03-04 hour=6 to 2024-03-04 hour=7): 13 rows,"
        f" {sizes[6] + sizes[7]} bytes; store above {limit} bytes"
    )
    assert [row[4] for row in _events(root)] == [message]


def test_current_hour_is_never_dropped(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    report = retention(root, max_age_seconds=0, max_bytes=0, now=NOW)
    assert [d.partition.hour for d in report.dropped] == [6, 7, 8, 9]
    assert sorted(_hour_bytes(root)) == [10]


def test_nothing_to_drop_writes_no_event(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    report = retention(root, max_age_seconds=86400, max_bytes=10**9, now=NOW)
    assert (report.dropped, report.reason) == ((), "")
    assert _events(root) == []


def test_leftover_of_a_crashed_drop_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    leftover = root / "system" / ".drop-2024-03-04-5-123"
    (leftover / "x").mkdir(parents=True)
    retention(root, now=NOW)
    assert not leftover.exists()


def test_negative_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="max_bytes must not be negative"):
        retention(tmp_path, max_bytes=-1)
