"""The spool record format: round trip, nulls, torn tails, corruption, bad rows."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from devloop.errors import SpoolCorruptError, StoreError
from devloop.store.spool import (
    MAGIC,
    MAGIC_V1,
    SYNC,
    Damage,
    SegmentWriter,
    encode_record,
    read_segment,
)
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
    assert contents.damaged == []


def test_bad_crc_in_a_whole_last_record_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    _write(path, [("samples", tick_rows(T0)), ("samples", tick_rows(T0 + 1))])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a crash cuts a record short, it never changes a byte of it
    path.write_bytes(bytes(data))
    contents = read_segment(path)
    assert contents.rows("samples") == 3
    last = len(encode_record("samples", tick_rows(T0 + 1)))
    assert contents.torn_bytes == 0
    assert contents.damaged == [Damage(len(data) - last, len(data), 1)]


def test_zero_filled_tail_is_torn_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    _write(path, [("samples", tick_rows(T0))])
    path.write_bytes(path.read_bytes() + bytes(64))  # crc32(b"") == 0: must not pass as a record
    contents = read_segment(path)
    assert (contents.records, contents.torn_bytes, contents.damaged) == (1, 64, [])


def test_segment_shorter_than_magic_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    path.write_bytes(MAGIC[:3])
    contents = read_segment(path)
    assert (contents.records, contents.torn_bytes) == (0, 3)


def test_record_with_good_crc_but_bad_body_is_corrupt(tmp_path: Path) -> None:
    payload = bytes([1, 1, 0, 3, 0, 0, 0, 16, 0, 0])  # samples, v1, 3 rows, 16 columns, then junk
    path = tmp_path / "a.seg"
    frame = SYNC + len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
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


# -- damage in the middle: skip the damaged record, resynchronise on the next frame -------------


def _ticks(path: Path, count: int) -> list[int]:
    """A segment of ``count`` samples records (3 rows each); returns each record's offset."""
    records = [("samples", tick_rows(T0 + tick)) for tick in range(count)]
    _write(path, records)
    offsets = [len(MAGIC)]
    for table, rows in records:
        offsets.append(offsets[-1] + len(encode_record(table, rows)))
    assert offsets[-1] == path.stat().st_size
    return offsets


def _xor(path: Path, at: int, size: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, at + size):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def _hit(offsets: list[int], at: int, size: int = 16) -> set[int]:
    """The records that bytes ``at`` to ``at + size`` fall in."""
    return {i for i in range(len(offsets) - 1) if offsets[i] < at + size and at < offsets[i + 1]}


def _ticks_read(path: Path) -> list[int]:
    contents = read_segment(path)
    ts = [t for b in contents.batches.get("samples", []) for t in b.column("ts").cast("int64")]
    return sorted({t.as_py() - T0 for t in ts})


def test_damage_in_the_middle_loses_only_the_damaged_record(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 20)
    middle = path.stat().st_size // 2
    _xor(path, middle)
    hit = _hit(offsets, middle)
    contents = read_segment(path)
    assert contents.rows("samples") == 3 * (20 - len(hit))
    assert _ticks_read(path) == [tick for tick in range(20) if tick not in hit]
    assert contents.torn_bytes == 0
    first, last = min(hit), max(hit)
    assert contents.damaged == [Damage(offsets[first], offsets[last + 1], len(hit))]
    assert (contents.skipped_records, contents.skipped_bytes) == (
        len(hit), offsets[last + 1] - offsets[first]
    )  # fmt: skip


@pytest.mark.parametrize("field", [0, 4, 8], ids=["sync", "length", "crc"])
def test_damage_to_a_frame_header_in_the_middle_is_skipped(tmp_path: Path, field: int) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 10)
    _xor(path, offsets[4] + field, 4)  # a length of millions looks like a torn tail: it is not
    contents = read_segment(path)
    assert _ticks_read(path) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert contents.damaged == [Damage(offsets[4], offsets[5], 1)]
    assert contents.torn_bytes == 0


def test_damage_in_two_places(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 12)
    _xor(path, offsets[2] + 20)
    _xor(path, offsets[9] + 30)
    contents = read_segment(path)
    assert _ticks_read(path) == [0, 1, 3, 4, 5, 6, 7, 8, 10, 11]
    assert contents.rows("samples") == 30
    assert contents.damaged == [
        Damage(offsets[2], offsets[3], 1),
        Damage(offsets[9], offsets[10], 1),
    ]
    assert (contents.skipped_records, contents.torn_bytes) == (2, 0)


def test_damage_in_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 5)
    _xor(path, len(MAGIC))
    contents = read_segment(path)
    assert _ticks_read(path) == [1, 2, 3, 4]
    assert contents.damaged == [Damage(offsets[0], offsets[1], 1)]


def test_damage_then_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 6)
    _xor(path, offsets[1] + 40)
    path.write_bytes(path.read_bytes()[: offsets[5] + 30])  # died writing the last record
    contents = read_segment(path)
    assert _ticks_read(path) == [0, 2, 3, 4]
    assert contents.damaged == [Damage(offsets[1], offsets[2], 1)]
    assert contents.torn_bytes == 30


def test_every_record_damaged_reads_nothing_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "a.seg"
    offsets = _ticks(path, 3)
    data = bytes(byte ^ 0x33 for byte in path.read_bytes()[len(MAGIC) :])
    path.write_bytes(MAGIC + data)
    contents = read_segment(path)
    assert (contents.records, contents.torn_bytes) == (0, 0)
    assert contents.damaged == [Damage(len(MAGIC), offsets[-1], 1)]  # no marker left to count


def test_format_1_segments_are_still_read_and_resynchronised(tmp_path: Path) -> None:
    records = [encode_record("samples", tick_rows(T0 + tick)) for tick in range(6)]
    assert all(record.startswith(SYNC) for record in records)
    old = [record[len(SYNC) :] for record in records]  # format 1: the frame without the marker
    path = tmp_path / "old.seg"
    path.write_bytes(MAGIC_V1 + b"".join(old))
    assert _ticks_read(path) == [0, 1, 2, 3, 4, 5]
    offsets = [len(MAGIC_V1) + sum(map(len, old[:i])) for i in range(len(old) + 1)]
    _xor(path, offsets[3] + 50)
    path.write_bytes(path.read_bytes() + old[0][:20])  # and a torn tail
    contents = read_segment(path)
    assert _ticks_read(path) == [0, 1, 2, 4, 5]
    assert contents.damaged == [Damage(offsets[3], offsets[4], 1)]
    assert contents.torn_bytes == 20


def test_a_sync_marker_inside_a_damaged_record_is_not_taken_for_a_record(
    tmp_path: Path,
) -> None:
    marked = int.from_bytes(SYNC * 2, "little")  # rss_bytes whose bytes hold the marker
    records = [("samples", tick_rows(T0 + tick)) for tick in range(4)]
    records[1] = ("samples", [sample_row(T0 + 1, pid, rss_bytes=marked) for pid in range(100, 110)])
    path = tmp_path / "a.seg"
    _write(path, records)
    start = len(MAGIC) + len(encode_record(*records[0]))
    data = path.read_bytes()
    assert data.count(SYNC, start + 1, start + len(encode_record(*records[1]))) >= 10
    _xor(path, start + 12)  # the damaged record's payload, before its markers
    contents = read_segment(path)
    assert _ticks_read(path) == [0, 2, 3]
    assert contents.damaged == [Damage(start, start + len(encode_record(*records[1])), 1)]
