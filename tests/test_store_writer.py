"""StoreWriter and write_table: round trip through every reader, roll-over, partitions."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from devloop.errors import StoreError
from devloop.store import StoreWriter, connect, write_table
from tests.test_store_support import (
    HOUR,
    SECOND,
    T0,
    FakeClock,
    parquet_files,
    read_samples,
    system_row,
    tick_rows,
)


def _write_ticks(root: Path, ticks: int, **kwargs: object) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    with StoreWriter(root, **kwargs) as writer:  # type: ignore[arg-type]
        for tick in range(ticks):
            batch = tick_rows(T0 + tick * SECOND)
            writer.append("samples", batch)
            writer.append("system", [system_row(T0 + tick * SECOND)])
            writer.flush()
            rows.extend(batch)
    return rows


def test_round_trip_duckdb_polars_pyarrow(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    written = _write_ticks(root, 4)
    expected = sorted(written)
    assert len(expected) == 12

    assert read_samples(root) == expected

    # Plain readers see cpu_seconds as it is stored: DECIMAL(18,2), the same values.
    frame = pl.read_parquet(root / "samples" / "**" / "*.parquet", hive_partitioning=False)
    assert frame.schema["cpu_seconds"] == pl.Decimal(18, 2)
    frame = frame.with_columns(
        pl.col("ts", "start_time").dt.epoch("us"), pl.col("cpu_seconds").cast(pl.Float64)
    )
    assert sorted(frame.rows()) == expected

    dataset = ds.dataset(root / "samples", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.schema.field("cpu_seconds").type == pa.decimal128(18, 2)
    casts = {"ts": pa.int64(), "start_time": pa.int64(), "cpu_seconds": pa.float64()}
    columns = [
        table.column(name).cast(casts[name]) if name in casts else table.column(name)
        for name in table.column_names
        if name not in ("date", "hour")
    ]
    assert sorted(zip(*(c.to_pylist() for c in columns), strict=True)) == expected
    assert table.column("hour").to_pylist() == [10] * 12
    assert table.column("date").to_pylist() == ["2024-03-04"] * 12


def test_close_leaves_no_spool_and_names_files_after_the_segment(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _write_ticks(root, 2)
    assert os.listdir(root / "_spool") == []
    files = parquet_files(root)
    assert [f.relative_to(root).parts[:3] for f in files] == [
        ("samples", "date=2024-03-04", "hour=10"),
        ("system", "date=2024-03-04", "hour=10"),
    ]
    assert files[0].name == files[1].name
    assert files[0].name.startswith("s-")


def test_segments_roll_over_after_segment_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    root = tmp_path / "metrics"
    with StoreWriter(root, segment_seconds=60, clock=clock) as writer:
        for tick in range(150):
            clock.now = float(tick)
            writer.append("samples", tick_rows(T0 + tick * SECOND))
            writer.flush()
        # rolled when the append at t=60 and t=120 found the segment 60 s old
        assert [r.rows for r in writer.converted] == [{"samples": 180}, {"samples": 180}]
        assert writer.segments_converted == 2
        assert len(os.listdir(root / "_spool")) == 1
    assert len(parquet_files(root)) == 3
    assert len(read_samples(root)) == 450


def test_segment_spanning_an_hour_is_split_into_both_partitions(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    start = T0 + HOUR - 2 * SECOND
    with StoreWriter(root) as writer:
        for tick in range(4):
            writer.append("samples", tick_rows(start + tick * SECOND))
    with connect(root) as connection:
        counts = connection.sql(
            "SELECT date, hour, count(*) FROM samples GROUP BY ALL ORDER BY hour"
        ).fetchall()
    assert counts == [(date(2024, 3, 4), 10, 6), (date(2024, 3, 4), 11, 6)]
    assert sorted(p.parent.name for p in parquet_files(root)) == ["hour=10", "hour=11"]


def test_hour_is_not_zero_padded_and_duckdb_reads_it_as_an_integer(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    early = T0 - 3 * HOUR  # 07:00 UTC
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(early))
    [path] = parquet_files(root)
    assert path.parent.name == "hour=7"
    with connect(root) as connection:
        assert connection.sql("SELECT DISTINCT hour FROM samples").fetchall() == [(7,)]
        kinds = {row[0]: row[1] for row in connection.sql("DESCRIBE samples").fetchall()}
    assert kinds["hour"] == "BIGINT"


def test_write_table_partitions_by_hour_and_fills_missing_nullable_columns(
    tmp_path: Path,
) -> None:
    root = tmp_path / "metrics"
    data = pa.table(
        {
            "ts": pa.array([T0, T0 + HOUR, T0 + 2 * SECOND], pa.timestamp("us", tz="UTC")),
            "host": ["devbox"] * 3,
            "action": ["pause", "resume", "warn"],
            "message": ["a", "b", "c"],
        }
    )
    files = write_table(root, "events", data)
    assert [f.parent.name for f in files] == ["hour=10", "hour=11"]
    assert all(f.name.startswith("w-") for f in files)
    with connect(root) as connection:
        rows = connection.sql(
            'SELECT action, scope, pids, "limit", hour FROM events ORDER BY ts'
        ).fetchall()
    assert rows == [
        ("pause", None, None, None, 10),
        ("warn", None, None, None, 10),
        ("resume", None, None, None, 11),
    ]


def test_write_table_refuses_bad_tables(tmp_path: Path) -> None:
    ts = pa.array([T0], pa.timestamp("us", tz="UTC"))
    with pytest.raises(StoreError, match="unknown table 'sample'"):
        write_table(tmp_path, "sample", pa.table({"ts": ts}))
    with pytest.raises(StoreError, match="events: missing column host"):
        write_table(tmp_path, "events", pa.table({"ts": ts, "action": ["x"]}))
    with pytest.raises(StoreError, match="events: unknown columns colour"):
        write_table(tmp_path, "events", pa.table({"ts": ts, "colour": ["x"]}))
    with pytest.raises(StoreError, match=r"events.host: 1 null values"):
        write_table(tmp_path, "events", pa.table({"ts": ts, "host": [None], "action": ["x"]}))


def test_cpu_seconds_is_stored_to_the_clock_tick(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root) as writer:
        writer.append("samples", [tick_rows(T0)[0][:9] + (1.23456,) + tick_rows(T0)[0][10:]])
    assert [row[9] for row in read_samples(root)] == [1.23]


def test_closed_writer_refuses_appends(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "metrics")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        writer.append("samples", tick_rows(T0))
    with pytest.raises(StoreError, match="unknown table 'cpu'"):
        StoreWriter(tmp_path / "other").append("cpu", [(1,)])
