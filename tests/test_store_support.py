"""Shared builders for the store tests: real rows in schema order, a fake clock, readers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from devloop.store.db import connect

#: 2024-03-04 10:00:00 UTC in microseconds.
T0_DT = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
T0 = int(T0_DT.timestamp()) * 1_000_000
SECOND = 1_000_000
HOUR = 3600 * SECOND


def sample_row(ts: int, pid: int, **overrides: Any) -> tuple[Any, ...]:
    """A samples row; cpu values are exact in float32 / after rounding to 0.01."""
    row: dict[str, Any] = {
        "ts": ts,
        "host": "devbox",
        "project": "alpha",
        "agent": "linter",
        "pid": pid,
        "start_time": T0 - 600 * SECOND + pid,
        "ppid": 1,
        "name": "ruff",
        "cpu_cores": 0.25,
        "cpu_seconds": 12.5,
        "rss_bytes": 4096 * pid,
        "fds": 12,
        "threads": 2,
        "io_read_bytes": 1000 + pid,
        "io_write_bytes": 2000,
        "state": "sleeping",
    }
    row.update(overrides)
    return tuple(row.values())


def tick_rows(ts: int, pids: range | list[int] = range(100, 103)) -> list[tuple[Any, ...]]:
    """One tick's samples rows for ``pids``."""
    return [sample_row(ts, pid, cpu_seconds=(ts - T0) / SECOND / 100 + pid) for pid in pids]


def system_row(ts: int) -> tuple[Any, ...]:
    """A system row."""
    return (ts, "devbox", 8, 1.5, 32 * 1024**3, 9 * 1024**3, 23 * 1024**3)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SAMPLE_COLUMNS_AS_INTS = (
    "epoch_us(ts), host, project, agent, pid, epoch_us(start_time), ppid, name, cpu_cores,"
    " cpu_seconds, rss_bytes, fds, threads, io_read_bytes, io_write_bytes, state"
)


def read_samples(root: Path) -> list[tuple[Any, ...]]:
    """Every samples row through the DuckDB view, timestamps as int µs, sorted."""
    with connect(root) as connection:
        rows = connection.sql(f"SELECT {SAMPLE_COLUMNS_AS_INTS} FROM samples").fetchall()
    return sorted(rows)


def parquet_files(root: Path) -> list[Path]:
    """Every visible Parquet file under ``root``: as for pyarrow.dataset and Spark, not under a
    ``_`` folder (the rollups) nor named ``.``."""
    return sorted(
        path
        for path in root.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
    )


def row_count(path: Path) -> int:
    """Rows in one Parquet file (footer only)."""
    return int(pq.read_metadata(path).num_rows)
