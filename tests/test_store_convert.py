"""The collector's side of the store stays free of pyarrow: the plain column description, lazy
imports, and conversion (and recovery) of spool segments in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

import devloop.store
from devloop.errors import StoreError
from devloop.store import StoreWarning, StoreWriter
from devloop.store.columns import SCHEMA_VERSIONS, SORT_KEYS, TABLE_COLUMNS
from devloop.store.schema import TABLES
from devloop.store.spool import SegmentWriter, encode_record
from tests.test_store_support import (
    SECOND,
    T0,
    FakeClock,
    parquet_files,
    read_samples,
    system_row,
    tick_rows,
)

HEAVY = ("pyarrow", "duckdb", "polars", "numpy", "pandas")

#: The on-disk format as it was when the pyarrow schemas were written out by hand: neither
#: description may drift from it without a schema version bump.
GOLDEN: dict[str, list[tuple[str, str, bool]]] = {
    "samples": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("project", "string", False), ("agent", "string", False), ("pid", "int32", False),
        ("start_time", "timestamp[us, tz=UTC]", False), ("ppid", "int32", True),
        ("name", "string", True), ("cpu_cores", "float", True), ("cpu_seconds", "double", True),
        ("rss_bytes", "int64", True), ("fds", "int32", True), ("threads", "int32", True),
        ("io_read_bytes", "int64", True), ("io_write_bytes", "int64", True),
        ("state", "string", True),
    ],
    "processes": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("pid", "int32", False), ("start_time", "timestamp[us, tz=UTC]", False),
        ("project", "string", False), ("agent", "string", False), ("ppid", "int32", True),
        ("name", "string", True), ("cmdline", "string", True), ("cwd", "string", True),
        ("username", "string", True), ("run_id", "string", True),
    ],
    "system": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("cores", "int16", False), ("cpu_busy_cores", "float", True),
        ("mem_total_bytes", "int64", True), ("mem_used_bytes", "int64", True),
        ("mem_available_bytes", "int64", True),
    ],
    "events": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("action", "string", False), ("scope", "string", True), ("project", "string", True),
        ("agent", "string", True), ("pids", "list<item: int32>", True),
        ("metric", "string", True), ("value", "double", True), ("limit", "double", True),
        ("message", "string", True),
    ],
    "limits": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("project", "string", False), ("agent", "string", False),
        ("cpu_limit_percent", "double", True), ("memory_limit_bytes", "int64", True),
        ("priority", "int8", True), ("strategy", "string", True), ("profile", "string", True),
        ("reason", "string", True),
    ],
    "runs": [
        ("ts", "timestamp[us, tz=UTC]", False), ("host", "string", False),
        ("run_id", "string", False), ("project", "string", False), ("agent", "string", False),
        ("trigger", "string", False), ("status", "string", False), ("command", "string", True),
        ("cwd", "string", True), ("pid", "int32", True),
        ("start_time", "timestamp[us, tz=UTC]", True), ("queued", "timestamp[us, tz=UTC]", True),
        ("started", "timestamp[us, tz=UTC]", True), ("ended", "timestamp[us, tz=UTC]", True),
        ("exit_code", "int16", True), ("signal", "int16", True),
        ("queue_wait_seconds", "double", True), ("paused_seconds", "double", True),
        ("throttled_seconds", "double", True), ("cpu_user_seconds", "double", True),
        ("cpu_system_seconds", "double", True), ("max_rss_bytes", "int64", True),
        ("tick_cpu_seconds", "double", True), ("ticks", "int32", True),
        ("peak_cores", "float", True), ("peak_rss_bytes", "int64", True),
        ("log_path", "string", True),
    ],
}  # fmt: skip

#: Each kind as pyarrow prints its type, written independently of schema.py.
KIND_TYPES = {
    "ts": "timestamp[us, tz=UTC]", "str": "string", "i8": "int8", "i16": "int16",
    "i32": "int32", "i64": "int64", "f32": "float", "f64": "double",
    "list_i32": "list<item: int32>",
}  # fmt: skip


def test_column_description_and_arrow_schemas_agree_with_the_format() -> None:
    assert list(TABLE_COLUMNS) == list(TABLES) == list(GOLDEN)
    for table, golden in GOLDEN.items():
        arrow = [(f.name, str(f.type), f.nullable) for f in TABLES[table]]
        plain = [(c.name, KIND_TYPES[c.kind], c.nullable) for c in TABLE_COLUMNS[table]]
        assert arrow == golden, table
        assert plain == golden, table
    assert SCHEMA_VERSIONS == {**dict.fromkeys(GOLDEN, 1), "processes": 2}
    assert set(SORT_KEYS) == set(GOLDEN)
    for table, keys in SORT_KEYS.items():
        assert set(keys) <= {name for name, _, _ in GOLDEN[table]}


def _imported_by(code: str) -> list[str]:
    script = code + "\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script.format(HEAVY=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_the_collectors_imports_pull_in_no_heavy_library() -> None:
    assert _imported_by("import devloop.store") == []
    assert _imported_by("from devloop.store.writer import StoreWriter") == []
    assert _imported_by("from devloop.store import StoreWriter, StoreWarning, Partition") == []
    assert _imported_by("import devloop.runner.record, devloop.collector") == []
    assert _imported_by("from devloop.store.spool import encode_record") == []
    assert "pyarrow" in _imported_by("from devloop.store.schema import TABLES")


def test_lazy_names_are_the_functions_even_after_their_modules_load() -> None:
    code = textwrap.dedent(
        """
        import devloop.store.compact, devloop.store.retention
        from devloop.store import compact, retention
        assert callable(compact) and callable(retention), (compact, retention)
        import devloop.store as store
        assert "write_table" in dir(store)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        devloop.store.nothing  # noqa: B018


def _expected(ticks: int) -> list[tuple[object, ...]]:
    return sorted(row for tick in range(ticks) for row in tick_rows(T0 + tick * SECOND))


def _tick(writer: StoreWriter, clock: FakeClock, tick: int) -> None:
    clock.now = float(tick)
    writer.append("samples", tick_rows(T0 + tick * SECOND))
    writer.append("system", [system_row(T0 + tick * SECOND)])
    writer.flush()


def test_roll_over_converts_in_a_child_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    clock = FakeClock()
    writer = StoreWriter(root, segment_seconds=10, clock=clock, convert_in_child=True)
    with writer:
        for tick in range(10):
            _tick(writer, clock, tick)
        _tick(writer, clock, 10)  # rolls: the child starts, the tick does not wait for it
        assert writer.converting
        first = writer._child
        assert first is not None
        for tick in range(11, 21):  # rolls again while the first child (probably) still runs
            _tick(writer, clock, tick)
        first.process.wait(60)
        _tick(writer, clock, 21)  # reaps the first child, starts one for the second segment
        writer.wait_for_conversions()
        assert not writer.converting
        assert writer.segments_converted == 2
        assert [r.rows for r in writer.converted] == [
            {"samples": 30, "system": 10},
            {"samples": 30, "system": 10},
        ]
        assert len(os.listdir(root / "_spool")) == 1  # the open segment
    assert writer.segments_converted == 3
    assert read_samples(root) == _expected(22)
    names = [p.name for p in parquet_files(root)]
    assert len(names) == 6 and len(set(names)) == 3  # samples and system of 3 segments, once


def test_a_killed_child_is_a_crash_mid_conversion(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    clock = FakeClock()
    with StoreWriter(root, segment_seconds=5, clock=clock, convert_in_child=True) as writer:
        for tick in range(6):
            _tick(writer, clock, tick)
        child = writer._child
        assert child is not None
        child.process.send_signal(signal.SIGKILL)
        child.process.wait(60)
        _tick(writer, clock, 6)  # reaps it: logged, the segment stays for the next roll-over
        assert not writer.converting and writer.segments_converted == 0
        assert len(os.listdir(root / "_spool")) == 2
        for tick in range(7, 12):
            _tick(writer, clock, tick)  # rolls at 10: one child converts both segments
        writer.wait_for_conversions()
        assert writer.segments_converted == 2
    assert read_samples(root) == _expected(12)
    assert os.listdir(root / "_spool") == []


def test_start_recovers_leftovers_in_a_child(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    (root / "_spool").mkdir(parents=True)
    segment = SegmentWriter(root / "_spool" / "00000000000000000001-1.seg")
    segment.append("samples", tick_rows(T0))
    segment.close()
    torn = encode_record("samples", tick_rows(T0 + SECOND))
    with open(segment.path, "ab") as file:
        file.write(torn[:10])
    bad = root / "_spool" / "00000000000000000002-1.seg"
    record = bytearray(encode_record("system", [system_row(T0)])[4:])  # format 1: no sync mark
    record[8] = 99  # an unknown table id, behind a CRC that still matches
    record[4:8] = zlib.crc32(bytes(record[8:])).to_bytes(4, "little")
    bad.write_bytes(b"DLSPOOL1" + bytes(record))
    with pytest.warns(StoreWarning, match="set aside spool segment"):
        writer = StoreWriter(root, convert_in_child=True)
    with writer:
        assert writer.recovered.rows == 3
        assert writer.recovered.torn_bytes == 10
        assert [r.quarantined for r in writer.recovered.segments] == [False, True]
    assert read_samples(root) == sorted(tick_rows(T0))
    assert sorted(os.listdir(root / "_spool")) == [bad.name + ".bad"]


def test_a_failing_conversion_at_close_raises_and_keeps_the_segment(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    writer = StoreWriter(root, convert_in_child=True)
    writer.append("samples", tick_rows(T0))
    (root / "samples").write_text("a file where the table's folder should be")
    with pytest.raises(
        StoreError, match=r"converting the spool of .*: cannot list .*Not a directory"
    ):
        writer.close()
    assert writer.closed
    assert len(os.listdir(root / "_spool")) == 1  # still there for the next start
