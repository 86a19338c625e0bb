"""Compaction: one sorted zstd file per closed hour, rows unchanged, idempotent, crash-safe."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from devloop.store import StoreWriter, compact, store_info, write_table
from devloop.store.layout import SOURCES_KEY
from devloop.store.schema import SORT_KEYS
from tests.test_store_support import (
    HOUR,
    SECOND,
    T0,
    T0_DT,
    FakeClock,
    parquet_files,
    read_samples,
    system_row,
    tick_rows,
)

NOW = T0_DT + timedelta(hours=1, minutes=30)  # 11:30: hour 10 is closed, hour 11 is not


def _fill(root: Path) -> None:
    """Three segments in hour 10 (pids written in descending order), one in hour 11."""
    clock = FakeClock()
    with StoreWriter(root, segment_seconds=10, clock=clock) as writer:
        for tick in range(30):
            clock.now = float(tick)
            writer.append("samples", tick_rows(T0 + tick * SECOND, [105, 101, 103]))
            writer.append("system", [system_row(T0 + tick * SECOND)])
        writer.roll()
        writer.append("samples", tick_rows(T0 + HOUR, [101]))


def _hour_files(root: Path, table: str, hour: int) -> list[Path]:
    return [p for p in parquet_files(root / table) if p.parent.name == f"hour={hour}"]


def test_compaction_writes_one_sorted_zstd_file_per_closed_hour(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    before = read_samples(root)
    assert len(_hour_files(root, "samples", 10)) == 3
    report = compact(root, now=NOW)
    assert (report.partitions, report.files_in, report.rows) == (2, 6, 120)
    [samples_file] = _hour_files(root, "samples", 10)
    [system_file] = _hour_files(root, "system", 10)
    assert samples_file.name.startswith("c-") and system_file.name.startswith("c-")
    assert [p.name[:2] for p in _hour_files(root, "samples", 11)] == ["s-"]  # current hour
    assert read_samples(root) == before

    table = pq.read_table(samples_file)
    keys = SORT_KEYS["samples"]
    assert (
        table.select(keys).to_pylist()
        == table.select(keys).sort_by([(k, "ascending") for k in keys]).to_pylist()
    )
    assert table.column("pid").to_pylist()[:31] == [101] * 30 + [103]
    metadata = pq.read_metadata(samples_file)
    assert metadata.num_row_groups == 1
    columns = {metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i)
               for i in range(metadata.num_columns)}  # fmt: skip
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    assert "DELTA_BINARY_PACKED" in columns["ts"].encodings
    assert "DELTA_BINARY_PACKED" in columns["rss_bytes"].encodings
    assert "RLE_DICTIONARY" in columns["project"].encodings
    assert metadata.metadata[b"devloop.schema_version"] == b"1"
    assert metadata.metadata[b"devloop.table"] == b"samples"


def test_compaction_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    compact(root, now=NOW)
    files = parquet_files(root)
    again = compact(root, now=NOW)
    assert (again.partitions, again.files_in, again.repaired) == (0, 0, 0)
    assert parquet_files(root) == files


def test_late_file_in_a_compacted_hour_is_merged_next_time(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    compact(root, now=NOW)
    [first] = _hour_files(root, "system", 10)
    late = pa.table({"ts": pa.array([T0 + 59 * SECOND], pa.timestamp("us", tz="UTC")),
                     "host": ["devbox"], "cores": pa.array([8], pa.int16())})  # fmt: skip
    write_table(root, "system", late)
    report = compact(root, now=NOW)
    assert (report.partitions, report.files_in, report.rows) == (1, 2, 31)
    [merged] = _hour_files(root, "system", 10)
    sources = pq.read_metadata(merged).metadata[SOURCES_KEY].decode()
    assert first.name in sources
    assert store_info(root).table("system").rows == 31


def test_crash_between_rename_and_deleting_inputs_is_repaired(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    before = read_samples(root)
    inputs = {path: path.read_bytes() for path in _hour_files(root, "samples", 10)}
    compact(root, now=NOW)
    for path, data in inputs.items():  # the compactor died before deleting its inputs
        path.write_bytes(data)
    assert len(_hour_files(root, "samples", 10)) == 4
    assert read_samples(root) == before  # readers already skip the contained inputs
    assert store_info(root).table("samples").rows == 91
    report = compact(root, now=NOW)
    assert (report.repaired, report.partitions) == (3, 0)
    assert [p.name[:2] for p in _hour_files(root, "samples", 10)] == ["c-"]
    assert read_samples(root) == before


def test_crash_before_rename_leaves_a_temp_that_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _fill(root)
    hour_dir = root / "samples" / "date=2024-03-04" / "hour=10"
    (hour_dir / ".c-00000000000000000001-1.parquet.tmp").write_bytes(b"PAR1 unfinished")
    report = compact(root, now=NOW)
    assert report.temps_removed == 1
    assert [p.name[:2] for p in hour_dir.iterdir()] == ["c-"]
