"""The spool record format: round trip, nulls, torn tails, corruption, bad rows."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from devloop.errors import SpoolCorruptError, StoreError
from devloop.store.spool import MAGIC, SegmentWriter, encode_record, read_segment
from tests.test_store_support import T0, sample_row, system_row, tick_rows


def _write(path: Path, records: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> None:
    segment = SegmentWriter(path)
    for table, rows in records:
        segment.append(table, rows)
    segment.close()


def test_round_trip_every_table_with_nulls_and_unicode(tmp_path: Path) -> None:
    samples = [sample_row(T0, 100), sample_row(T0, 101, ppid=None, name=None, state="zombie")]
    events = [
        (T0, "devbox", "pause", "agent", "bêta", "lint", [1, 2], "cpu", 61.5, 60.0, "über ✓"),
        (T0, "devbox", "start", None, None, None, None, None, None, None, None),
    ]
    limits = [(T0, "devbox", "alpha", "", 25.0, 512 * 1024**2, 1, "weighted", "day", "start")]
    processes = [
        (T0, "devbox", 7, T0 - 5, "alpha", "lint", 1, "ruff", "ruff check .", "/src", "me", "r1")
    ]
    path = tmp_path / "a.seg"
    _write(
        path,
        [
            ("samples", samples),
            ("system", [system_row(T0)]),
            ("events", events),
            ("limits", limits),
            ("processes", processes),
        ],
    )
    contents = read_segment(path)
    assert contents.records == 5
    assert contents.torn_bytes == 0

    def plain(table: str) -> list[tuple[object, ...]]:
        batch = contents.batches[table][0]
        columns = [batch.column(i).cast("int64") if name in ("ts", "start_time") else
                   batch.column(i) for i, name in enumerate(batch.schema.names)]  # fmt: skip
        return list(zip(*(column.to_pylist() for column in columns), strict=True))

    assert plain("samples") == samples
    assert plain("events") == [tuple(row) for row in events]
    assert plain("limits") == limits
    assert plain("processes") == processes
    assert plain("system") == [system_row(T0)]


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 50, -1])
def test_torn_last_record_is_dropped(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "a.seg"
    _write(path, [("samples", tick_rows(T0)), ("samples", tick_rows(T0 + 1_000_000))])
    last = len(encode_record("samples", tick_rows(T0 + 1_000_000)))
    data = path.read_bytes()
    keep = len(data) - last + (cut if cut > 0 else last + cut)
    path.write_bytes(data[:keep])
    contents = read_segment(path)
    assert contents.rows("samples") == 3
    assert contents.batches["samples"][0].column("ts").cast("int64").to_pylist() == [T0] * 3
    assert contents.torn_bytes == keep - (len(data) - last)


def test_bad_crc_stops_reading_there(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    _write(path, [("samples", tick_rows(T0)), ("samples", tick_rows(T0 + 1))])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    contents = read_segment(path)
    assert contents.rows("samples") == 3
    assert contents.torn_bytes == len(encode_record("samples", tick_rows(T0 + 1)))


def test_zero_filled_tail_is_torn_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    _write(path, [("samples", tick_rows(T0))])
    path.write_bytes(path.read_bytes() + bytes(64))  # crc32(b"") == 0: must not pass as a record
    contents = read_segment(path)
    assert (contents.records, contents.torn_bytes) == (1, 64)


def test_segment_shorter_than_magic_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    path.write_bytes(MAGIC[:3])
    contents = read_segment(path)
    assert (contents.records, contents.torn_bytes) == (0, 3)


def test_record_with_good_crc_but_bad_body_is_corrupt(tmp_path: Path) -> None:
    payload = bytes([1, 1, 0, 3, 0, 0, 0, 16, 0, 0])  # samples, v1, 3 rows, 16 columns, then junk
    path = tmp_path / "a.seg"
    frame = len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
    path.write_bytes(MAGIC + frame + payload)
    with pytest.raises(SpoolCorruptError, match="a.seg at byte 8"):
        read_segment(path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([sample_row(T0, 1)[:-1]], "rows have 15 values, the table has 16"),
        ([(None, *sample_row(T0, 1)[1:])], r"samples.ts: None in a column that cannot be null"),
        ([sample_row(T0, 1, host=None)], r"samples.host: None in a column that cannot be null"),
        ([sample_row(T0, 2**31)], r"samples.pid: cannot store value"),
        ([sample_row(T0, 1, rss_bytes="big")], r"samples.rss_bytes: cannot store value"),
        ([sample_row(T0, 1), sample_row(T0, 2)[:3]], "rows of different lengths"),
    ],
)
def test_bad_rows_are_refused_at_append(rows: list[tuple[object, ...]], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        encode_record("samples", rows)
