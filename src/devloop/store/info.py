"""``store_info``: what the store holds, from Parquet footers only (no row is read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devloop.store.layout import iter_partitions, scan_partition, spool_backlog, warn_invalid
from devloop.store.schema import TABLES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TableInfo:
    """One table of the store."""

    name: str
    rows: int
    files: int
    bytes: int
    partitions: int
    first_ts: datetime | None  # None when the table is empty
    last_ts: datetime | None

    @property
    def bytes_per_row(self) -> float | None:
        """Bytes on disk per row; None when the table is empty."""
        return self.bytes / self.rows if self.rows else None


@dataclass(frozen=True)
class StoreInfo:
    """The whole store: tables in ``schema.TABLES`` order and the spool awaiting conversion."""

    root: Path
    tables: tuple[TableInfo, ...]
    spool_segments: int
    spool_bytes: int
    skipped_files: tuple[Path, ...]  # corrupt or foreign files readers ignore

    def table(self, name: str) -> TableInfo:
        """The info of table ``name``."""
        for info in self.tables:
            if info.name == name:
                return info
        raise KeyError(name)


def store_info(root: Path | str) -> StoreInfo:
    """Rows, files, bytes and time span per table, plus pending spool segments.

    Counts only the files readers use (a compaction's leftover inputs are not counted twice);
    skipped files are listed and warned about.
    """
    root = Path(root)
    tables: list[TableInfo] = []
    skipped: list[Path] = []
    for name in TABLES:
        rows = files = size = partitions = 0
        lows: list[int] = []
        highs: list[int] = []
        for _, directory in iter_partitions(root, name):
            scan = scan_partition(directory, name)
            warn_invalid(scan.invalid)
            skipped.extend(path for path, _ in scan.invalid)
            partitions += 1 if scan.live else 0
            for fact in scan.live:
                rows += fact.rows
                files += 1
                size += fact.bytes
                if fact.ts_min_us is not None and fact.ts_max_us is not None:
                    lows.append(fact.ts_min_us)
                    highs.append(fact.ts_max_us)
        tables.append(
            TableInfo(
                name,
                rows,
                files,
                size,
                partitions,
                _EPOCH + timedelta(microseconds=min(lows)) if lows else None,
                _EPOCH + timedelta(microseconds=max(highs)) if highs else None,
            )
        )
    segments, spool_bytes = spool_backlog(root)
    return StoreInfo(root, tuple(tables), segments, spool_bytes, tuple(skipped))
