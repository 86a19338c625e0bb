"""Parquet files of the store carry page checksums, and compaction verifies them: a damaged file
is quarantined with a warning and an event, never merged into the compacted hour."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from devloop.errors import CorruptFileError, StoreError
from devloop.store import StoreWriter, compact, connect
from devloop.store.files import read_rows
from devloop.store.layout import StoreWarning
from tests.test_store_support import SECOND, T0, FakeClock, parquet_files, read_samples, tick_rows

PIDS = range(100, 580)  # 480 processes, 3 ticks a file: 1,440 rows, pages of a few kB


def _write_files(root: Path, files: int) -> list[list[tuple[object, ...]]]:
    """``files`` samples files in the hour of T0, one spool segment each; their rows."""
    written: list[list[tuple[object, ...]]] = []
    clock = FakeClock()
    with StoreWriter(root, segment_seconds=3600, clock=clock) as writer:
        for number in range(files):
            rows: list[tuple[object, ...]] = []
            for tick in range(3):
                batch = tick_rows(T0 + (number * 3 + tick) * SECOND, PIDS)
                writer.append("samples", batch)
                writer.flush()
                rows += batch
            writer.roll()
            written.append(rows)
    return written


def _flip_data_page(path: Path) -> None:
    """XOR 16 bytes near the end of the file's largest column chunk without a dictionary:
    inside its data page's values, not its header."""
    group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = [group.column(i) for i in range(group.num_columns)]
    plain = [chunk for chunk in chunks if not chunk.has_dictionary_page]  # one data page
    chunk = max(plain, key=lambda c: c.total_compressed_size)
    end = chunk.data_page_offset + chunk.total_compressed_size
    assert chunk.total_compressed_size > 100  # a page header is < 40 bytes
    data = bytearray(path.read_bytes())
    for offset in range(end - 24, end - 8):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_page_fails_the_read_instead_of_changing_rows(tmp_path: Path) -> None:
    _write_files(tmp_path, 1)
    [path] = parquet_files(tmp_path)
    _flip_data_page(path)
    with pytest.raises(CorruptFileError, match="CRC checksum verification failed"):
        read_rows(path, "samples")


def test_a_missing_file_is_not_called_corrupt(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        read_rows(tmp_path / "gone.parquet", "samples")
    assert not isinstance(caught.value, CorruptFileError)


def test_compaction_quarantines_a_corrupt_file_and_compacts_the_others(tmp_path: Path) -> None:
    written = _write_files(tmp_path, 3)
    files = parquet_files(tmp_path)
    assert len(files) == 3
    # The second file: the one whose first tick is T0 + 3 s.
    [damaged] = [p for p in files if pq.read_table(p)["ts"][0].value == T0 + 3 * SECOND]
    _flip_data_page(damaged)
    with pytest.warns(StoreWarning, match=rf"quarantined {damaged} as {damaged.name}\.corrupt"):
        report = compact(tmp_path)
    quarantined = damaged.with_name(damaged.name + ".corrupt")
    assert report.quarantined == (quarantined,)
    assert quarantined.exists() and not damaged.exists()
    [compacted] = [path for path in parquet_files(tmp_path) if path.name.startswith("c-")]
    assert (report.files_in, report.rows) == (2, 2 * 1440)
    assert read_samples(tmp_path) == sorted(written[0] + written[2])
    read_rows(compacted, "samples")  # it verifies: written with checksums too
    with connect(tmp_path) as db:
        events = db.sql("SELECT action, message FROM events").fetchall()
    name = quarantined.relative_to(tmp_path)
    message = f"{name} failed its page checksums: moved aside, not compacted"
    assert events == [("quarantine", message)]
