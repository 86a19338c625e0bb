"""The metrics store: a crash-safe, hive-partitioned Parquet time series with DuckDB views.

Pipeline, one module per stage::

    spool.py      append-only, checksummed segment files (what a tick is written to first)
    writer.py     StoreWriter (spool -> Parquet on roll-over)
    recovery.py   leftover segments -> Parquet, exactly once
    compact.py    one sorted zstd file per closed hour, and its rollups in the same pass
    rollups.py    per-hour rollups of samples (what reports read for closed hours): build, read
    retention.py  drop the oldest hours (and their rollups) by age or size
    ship.py       copy the compacted hours (and rollups) to a fleet dataset, by manifest
    query.py      DuckDB views samples, processes, system, events, limits
    facts.py      _facts.json: the live files' footer facts and digests (digests.py)
    info.py       store_info: rows, bytes, spans per table
    files.py      Parquet files: write_table (bulk writes), conforming, atomic writes, footers
    lock.py, layout.py   locks, paths
    columns.py, schema.py   the tables' and rollups' contract, and its Arrow form

Nothing heavy is imported with the package: each name below is loaded from its module on first
use (PEP 562), so the collector can import ``devloop.store.writer`` without pulling in pyarrow
or DuckDB (it converts its spool in a child process, see convert.py).
"""

from __future__ import annotations

from devloop._lazy import install

TYPE_CHECKING = False  # not typing's: this package is imported on devloop run's fast path
if TYPE_CHECKING:
    from devloop.store.compact import CompactReport, compact
    from devloop.store.files import write_table
    from devloop.store.info import StoreInfo, TableInfo, store_info
    from devloop.store.layout import Partition, StoreWarning
    from devloop.store.query import connect, create_views, live_files
    from devloop.store.recovery import RecoveryReport, SegmentReport, recover
    from devloop.store.retention import DroppedPartition, DropReport, retention
    from devloop.store.rollups import write_rollups
    from devloop.store.writer import StoreWriter

#: Where each public name lives.
_MODULES: dict[str, str] = {
    "CompactReport": "compact",
    "compact": "compact",
    "StoreWarning": "layout",
    "StoreInfo": "info",
    "TableInfo": "info",
    "store_info": "info",
    "Partition": "layout",
    "connect": "query",
    "create_views": "query",
    "live_files": "query",
    "RecoveryReport": "recovery",
    "SegmentReport": "recovery",
    "recover": "recovery",
    "DroppedPartition": "retention",
    "DropReport": "retention",
    "retention": "retention",
    "write_rollups": "rollups",
    "StoreWriter": "writer",
    "write_table": "files",
}

__all__ = [
    "CompactReport",
    "DropReport",
    "DroppedPartition",
    "Partition",
    "RecoveryReport",
    "SegmentReport",
    "StoreInfo",
    "StoreWarning",
    "StoreWriter",
    "TableInfo",
    "compact",
    "connect",
    "create_views",
    "live_files",
    "recover",
    "retention",
    "store_info",
    "write_rollups",
    "write_table",
]


install(__name__, _MODULES)
