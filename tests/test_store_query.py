"""DuckDB views, skipped files, store_info, and the package's public surface."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import devloop.store
from devloop.store import StoreWarning, StoreWriter, connect, store_info
from devloop.store.schema import TABLES
from devloop.store.spool import SegmentWriter
from tests.test_store_support import SECOND, T0, T0_DT, parquet_files, read_samples, tick_rows


def test_empty_store_has_every_view_with_its_columns(tmp_path: Path) -> None:
    with connect(tmp_path / "nothing-here") as connection:
        for table, schema in TABLES.items():
            assert connection.sql(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]
            described = connection.sql(f"DESCRIBE {table}").fetchall()
            assert [row[0] for row in described] == [*schema.names, "date", "hour"]
        kinds = {row[0]: row[1] for row in connection.sql("DESCRIBE events").fetchall()}
    assert kinds == {
        "ts": "TIMESTAMP WITH TIME ZONE", "host": "VARCHAR", "action": "VARCHAR",
        "scope": "VARCHAR", "project": "VARCHAR", "agent": "VARCHAR", "pids": "INTEGER[]",
        "metric": "VARCHAR", "value": "DOUBLE", "limit": "DOUBLE", "message": "VARCHAR",
        "date": "DATE", "hour": "BIGINT",
    }  # fmt: skip


def test_empty_and_full_views_have_the_same_types(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with connect(root) as connection:
        empty = connection.sql("DESCRIBE samples").fetchall()
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0))
    with connect(root) as connection:
        full = connection.sql("DESCRIBE samples").fetchall()
    assert [row[:2] for row in full] == [row[:2] for row in empty]


def _store_with_one_tick(root: Path) -> Path:
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0))
    return root / "samples" / "date=2024-03-04" / "hour=10"


def test_corrupt_file_is_skipped_with_a_warning_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    hour_dir = _store_with_one_tick(root)
    (hour_dir / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(StoreWarning, match=r"skipping .*broken\.parquet: not a readable Parquet"):
        rows = read_samples(root)
    assert rows == sorted(tick_rows(T0))


def test_foreign_parquet_and_wrong_table_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    hour_dir = _store_with_one_tick(root)
    [ours] = parquet_files(root)
    pq.write_table(pa.table({"ts": [1]}), hour_dir / "foreign.parquet")
    system_dir = root / "system" / "date=2024-03-04" / "hour=10"
    system_dir.mkdir(parents=True)
    (system_dir / "moved.parquet").write_bytes(ours.read_bytes())
    with pytest.warns(StoreWarning) as caught:
        connection = connect(root)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        f"skipping {hour_dir / 'foreign.parquet'}: not written by devloop"
        " (no devloop.table / devloop.schema_version metadata)",
        f"skipping {system_dir / 'moved.parquet'}: holds table 'samples', not 'system'",
    ]
    assert connection.sql("SELECT count(*) FROM samples").fetchall() == [(3,)]
    assert connection.sql("SELECT count(*) FROM system").fetchall() == [(0,)]
    connection.close()


def test_file_replaced_in_place_is_checked_again(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    _store_with_one_tick(root)
    assert len(read_samples(root)) == 3  # footer now cached
    [path] = parquet_files(root)
    path.write_bytes(b"garbage")
    with pytest.warns(StoreWarning, match="not a readable Parquet file"):
        assert read_samples(root) == []


def test_store_info_counts_rows_bytes_span_and_pending_spool(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root) as writer:
        for tick in range(5):
            writer.append("samples", tick_rows(T0 + tick * SECOND))
    segment = SegmentWriter(root / "_spool" / "00000000000000000009-1.seg")
    segment.append("samples", tick_rows(T0))
    segment.close()
    info = store_info(root)
    samples = info.table("samples")
    [path] = parquet_files(root)
    assert (samples.rows, samples.files, samples.partitions) == (15, 1, 1)
    assert samples.bytes == path.stat().st_size
    assert samples.bytes_per_row == path.stat().st_size / 15
    assert (samples.first_ts, samples.last_ts) == (T0_DT, T0_DT + timedelta(seconds=4))
    assert info.table("events").rows == 0 and info.table("events").bytes_per_row is None
    assert (info.spool_segments, info.spool_bytes) == (1, segment.size)
    assert [t.name for t in info.tables] == list(TABLES)


def test_public_surface() -> None:
    assert sorted(devloop.store.__all__) == sorted(
        [
            "CompactReport", "DropReport", "DroppedPartition", "Partition", "RecoveryReport",
            "SegmentReport", "StoreInfo", "StoreWarning", "StoreWriter", "TableInfo", "compact",
            "connect", "create_views", "live_files", "recover", "retention", "store_info",
            "write_rollups", "write_table",
        ]
    )  # fmt: skip
    for name in devloop.store.__all__:
        assert getattr(devloop.store, name).__doc__, name


def _count(root: Path, table: str = "samples") -> int:
    row = connect(root).execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_views_include_the_spool_not_yet_converted(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    writer = StoreWriter(root, segment_seconds=3600)
    try:
        for tick in range(3):
            writer.append("samples", tick_rows(T0 + tick * SECOND))
            writer.flush()
        assert parquet_files(root / "samples") == []
        assert _count(root) == 9  # a running collector's latest ticks are visible
        db = connect(root)
        row = db.execute("SELECT max(ts), min(date), max(hour) FROM samples").fetchone()
        assert row == (T0_DT + timedelta(seconds=2), T0_DT.date(), 10)
        writer.roll()
        assert _count(root) == 9  # once converted, read from Parquet only
    finally:
        writer.close()


def test_a_converted_segment_not_yet_deleted_is_not_read_twice(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root, segment_seconds=3600) as writer:
        writer.append("samples", tick_rows(T0))
        writer.flush()
        segment = next((root / "_spool").glob("*.seg"))
        kept = segment.read_bytes()
    # A crash between the Parquet rename and the segment's deletion leaves both.
    segment.write_bytes(kept)
    assert len(parquet_files(root / "samples")) == 1
    assert _count(root) == 3


def test_footer_facts_are_kept_for_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process (an empty in-memory footer cache) reads no footer of an unchanged file:
    they come from ``_facts.json``, which compaction writes and connecting only reads; a
    file changed since is read again."""
    from devloop.store import compact, layout

    root = tmp_path / "metrics"
    _store_with_one_tick(root)
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0 + 3600 * SECOND))
    with connect(root) as connection:
        want = connection.sql("SELECT count(*) FROM samples").fetchall()
    assert not (root / layout.FACTS_FILE).exists()  # looking never writes
    compact(root, now=T0_DT)  # no closed hour: it only writes the facts
    assert (root / layout.FACTS_FILE).is_file()
    read: list[Path] = []
    original = layout._read_facts_uncached

    def counting(path: Path, size: int) -> layout.FileFacts | str:
        read.append(path)
        return original(path, size)

    monkeypatch.setattr(layout, "_read_facts_uncached", counting)
    monkeypatch.setattr(layout, "_facts_cache", {})
    with connect(root) as connection:
        assert connection.sql("SELECT count(*) FROM samples").fetchall() == want == [(6,)]
    assert read == []
    first, second = sorted(parquet_files(root / "samples"))
    second.write_bytes(b"garbage")
    monkeypatch.setattr(layout, "_facts_cache", {})
    with pytest.warns(StoreWarning, match="not a readable Parquet file"):
        with connect(root) as connection:
            assert connection.sql("SELECT count(*) FROM samples").fetchall() == [(3,)]
    assert read == [second]


def test_files_of_two_schema_versions_are_read_by_name(tmp_path: Path) -> None:
    """An older file (another schema version, a column missing) next to a current one: the
    view reads both, by column name, the missing column as NULL. (Files of one version are
    read without ``union_by_name``, which would read every footer at every query.)"""
    from devloop.store.db import one_schema
    from devloop.store.files import SCHEMA_VERSION_KEY, TABLE_KEY

    root = tmp_path / "metrics"
    hour_dir = _store_with_one_tick(root)
    current = parquet_files(root / "samples")
    with connect(root) as connection:
        assert one_schema(current)
        before = connection.sql("SELECT count(*) FROM samples").fetchall()
    old = pa.Table.from_pylist(
        [
            {
                "ts": T0 + 5 * SECOND,
                "host": "devbox",
                "project": "alpha",
                "agent": "linter",
                "pid": 7,
                "start_time": T0,
                "cpu_cores": 0.5,
            }
        ]  # fmt: skip
    ).cast(
        pa.schema(
            [
                ("ts", pa.timestamp("us", "UTC")),
                ("host", pa.string()),
                ("project", pa.string()),
                ("agent", pa.string()),
                ("pid", pa.int32()),
                ("start_time", pa.timestamp("us", "UTC")),
                ("cpu_cores", pa.float32()),
            ]
        )
    )
    old = old.replace_schema_metadata({TABLE_KEY: b"samples", SCHEMA_VERSION_KEY: b"0"})
    pq.write_table(old, hour_dir / "older.parquet")
    with connect(root) as connection:
        assert not one_schema(parquet_files(root / "samples"))
        rows = connection.sql(
            "SELECT pid, cpu_cores, rss_bytes FROM samples WHERE pid = 7"
        ).fetchall()
        after = connection.sql("SELECT count(*) FROM samples").fetchall()
    assert rows == [(7, 0.5, None)]
    assert after[0][0] == before[0][0] + 1
