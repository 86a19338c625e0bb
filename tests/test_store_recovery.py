"""Recovery of spool segments left by a dead writer: exactly once, whatever step it died in."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from devloop.errors import StoreLockedError
from devloop.store import StoreWarning, StoreWriter, compact, connect, recover
from devloop.store.spool import MAGIC, SegmentWriter, encode_record
from tests.test_store_support import (
    HOUR,
    SECOND,
    T0,
    T0_DT,
    parquet_files,
    read_samples,
    system_row,
    tick_rows,
)

SEGMENT = "00000000000000000001-1.seg"


def _leave_segment(root: Path, ticks: list[int], name: str = SEGMENT) -> Path:
    """A segment as a writer killed after flushing ``ticks`` leaves it."""
    (root / "_spool").mkdir(parents=True, exist_ok=True)
    segment = SegmentWriter(root / "_spool" / name)
    for ts in ticks:
        segment.append("samples", tick_rows(ts))
        segment.append("system", [system_row(ts)])
    segment.close()
    return root / "_spool" / name


def _expected(ticks: list[int]) -> list[tuple[object, ...]]:
    return sorted(row for ts in ticks for row in tick_rows(ts))


def test_writer_start_recovers_leftovers_and_drops_the_torn_record(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    path = _leave_segment(root, [T0, T0 + SECOND])
    torn = encode_record("samples", tick_rows(T0 + 2 * SECOND))
    with open(path, "ab") as segment:
        segment.write(torn[: len(torn) // 2])
    with StoreWriter(root) as writer:
        assert writer.recovered.rows == 8
        assert writer.recovered.torn_bytes == len(torn) // 2
    assert read_samples(root) == _expected([T0, T0 + SECOND])
    assert not path.exists()


def test_recovery_is_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _leave_segment(root, [T0])
    first = recover(root)
    second = recover(root)
    assert [len(r.files_written) for r in first.segments] == [2]
    assert second.segments == ()
    assert read_samples(root) == _expected([T0])


def test_crash_after_rename_before_segment_deletion(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    path = _leave_segment(root, [T0, T0 + SECOND])
    saved = path.read_bytes()
    recover(root)
    path.write_bytes(saved)  # the segment survived: the writer died before deleting it
    report = recover(root)
    assert report.segments[0].files_written == ()
    assert report.segments[0].rows == {"samples": 6, "system": 2}
    assert read_samples(root) == _expected([T0, T0 + SECOND])
    assert not path.exists()


def test_crash_between_partition_renames_writes_only_the_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    ticks = [T0 + HOUR - SECOND, T0 + HOUR]  # 10:59:59 and 11:00:00: two partitions
    path = _leave_segment(root, ticks)
    saved = path.read_bytes()
    recover(root)
    files = parquet_files(root)
    assert len(files) == 4  # samples and system, hours 10 and 11
    missing = next(f for f in files if "samples" in f.parts and f.parent.name == "hour=11")
    missing.unlink()  # as if the writer died before this rename
    path.write_bytes(saved)
    report = recover(root)
    assert report.segments[0].files_written == (missing,)
    assert read_samples(root) == _expected(ticks)


def test_leftover_temp_of_a_killed_conversion_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _leave_segment(root, [T0])
    hour_dir = root / "samples" / "date=2024-03-04" / "hour=10"
    hour_dir.mkdir(parents=True)
    (hour_dir / f".s-{SEGMENT.removesuffix('.seg')}.parquet.tmp").write_bytes(b"PAR1 half")
    recover(root)
    assert sorted(p.name for p in hour_dir.iterdir()) == [f"s-{SEGMENT[:-4]}.parquet"]
    assert read_samples(root) == _expected([T0])


def test_segment_converted_then_compacted_is_not_recovered_again(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    path = _leave_segment(root, [T0])
    saved = path.read_bytes()
    recover(root)
    compact(root, now=T0_DT + timedelta(hours=1))  # s-<id> is now inside c-<id>, and deleted
    assert [p.name[:2] for p in parquet_files(root)] == ["c-", "c-"]
    path.write_bytes(saved)
    report = recover(root)
    assert report.segments[0].files_written == ()
    assert read_samples(root) == _expected([T0])


def test_undecodable_segment_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    (root / "_spool").mkdir(parents=True)
    bad = root / "_spool" / SEGMENT
    bad.write_bytes(b"NOTSPOOL" + bytes(20))
    _leave_segment(root, [T0], name="00000000000000000002-1.seg")
    with pytest.warns(StoreWarning, match=r"set aside spool segment .*0001-1\.seg\.bad"):
        report = recover(root)
    assert [r.quarantined for r in report.segments] == [True, False]
    assert (root / "_spool" / (SEGMENT + ".bad")).exists()
    assert read_samples(root) == _expected([T0])


def test_recover_refuses_while_a_writer_is_alive(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root), pytest.raises(StoreLockedError, match="is recording into"):
        recover(root)


def _record_offsets(ticks: list[int]) -> list[tuple[int, int, str, int]]:
    """(start, end, table, ts) of each record :func:`_leave_segment` writes for ``ticks``."""
    out = []
    position = len(MAGIC)
    for ts in ticks:
        for table, rows in (("samples", tick_rows(ts)), ("system", [system_row(ts)])):
            size = len(encode_record(table, rows))
            out.append((position, position + size, table, ts))
            position += size
    return out


def _damage(path: Path, at: int, size: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, at + size):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _events(root: Path) -> list[tuple[str, str]]:
    with connect(root) as connection:
        return connection.sql("SELECT action, message FROM events ORDER BY ts").fetchall()


def test_damage_in_the_middle_is_skipped_with_a_warning_and_an_event(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    ticks = [T0 + i * SECOND for i in range(19)]
    path = _leave_segment(root, ticks)
    records = _record_offsets(ticks)
    middle = path.stat().st_size // 2
    _damage(path, middle)
    hit = [r for r in records if r[0] < middle + 16 and middle < r[1]]
    lost = {ts for _, _, table, ts in hit if table == "samples"}
    assert len(lost) == 1  # the 16 bytes fall in one samples record (and maybe a system one)
    skipped = (hit[0][0], hit[-1][1])
    with pytest.warns(StoreWarning) as caught:
        report = recover(root)
    assert read_samples(root) == _expected([ts for ts in ticks if ts not in lost])
    (segment,) = report.segments
    assert (segment.skipped_records, segment.skipped_bytes) == (len(hit), skipped[1] - skipped[0])
    assert segment.torn_bytes == 0
    assert segment.quarantined
    assert segment.rows == {"samples": 3 * 18, "system": 19 - (len(hit) - 1)}
    (message,) = [str(w.message) for w in caught]
    assert SEGMENT in message
    assert f"bytes {skipped[0]}-{skipped[1]}" in message
    assert f"{len(hit)} damaged record" in message
    ((action, text),) = _events(root)
    assert action == "spool-corrupt"
    assert f"bytes {skipped[0]}-{skipped[1]}" in text and SEGMENT in text
    assert not path.exists()
    assert path.with_name(SEGMENT + ".bad").exists()  # kept aside, not deleted
    assert recover(root).segments == ()  # exactly once: the kept copy is not converted again


def test_damaged_segment_recovered_again_after_a_crash_writes_its_event_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "metrics"
    ticks = [T0 + HOUR - 2 * SECOND, T0 + HOUR - SECOND, T0 + HOUR]  # two partitions
    path = _leave_segment(root, ticks)
    records = _record_offsets(ticks)
    _damage(path, records[0][0] + 30)  # the first samples record
    saved = path.read_bytes()
    with pytest.warns(StoreWarning, match="skipped 1 damaged record "):
        recover(root)
    kept = path.with_name(SEGMENT + ".bad")
    assert kept.read_bytes() == saved
    events = [f for f in parquet_files(root) if "events" in f.parts]
    assert len(events) == 1 and events[0].parent.name == "hour=11"  # the last intact tick's hour
    events[0].unlink()  # as if the writer died before this rename, and before setting aside
    kept.rename(path)
    with pytest.warns(StoreWarning, match="skipped 1 damaged record "):
        report = recover(root)
    assert report.segments[0].files_written == (events[0],)
    assert [action for action, _ in _events(root)] == ["spool-corrupt"]
    assert read_samples(root) == _expected(ticks[1:])


def test_collector_start_in_child_mode_recovers_around_damage(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    ticks = [T0 + i * SECOND for i in range(8)]
    path = _leave_segment(root, ticks)
    samples_4 = _record_offsets(ticks)[8]
    _damage(path, samples_4[0] + 40)
    with pytest.warns(StoreWarning, match=rf"{SEGMENT}: skipped 1 damaged record \(bytes "):
        writer = StoreWriter(root, convert_in_child=True)
    with writer:
        assert [r.quarantined for r in writer.recovered.segments] == [True]
        assert writer.recovered.rows == 3 * 7 + 8
    assert read_samples(root) == _expected(ticks[:4] + ticks[5:])
    assert [action for action, _ in _events(root)] == ["spool-corrupt"]
    assert sorted(p.name for p in (root / "_spool").iterdir()) == [SEGMENT + ".bad"]
