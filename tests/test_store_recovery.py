"""Recovery of spool segments left by a dead writer: exactly once, whatever step it died in."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from devloop.errors import StoreLockedError
from devloop.store import StoreWarning, StoreWriter, compact, recover
from devloop.store.spool import SegmentWriter, encode_record
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
