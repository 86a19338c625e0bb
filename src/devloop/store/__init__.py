"""The metrics store: a crash-safe, hive-partitioned Parquet time series with DuckDB views.

Pipeline, one module per stage::

    spool.py      append-only, checksummed segment files (what a tick is written to first)
    writer.py     StoreWriter (spool -> Parquet on roll-over), write_table (bulk writes)
    recovery.py   leftover segments -> Parquet, exactly once
    compact.py    one sorted zstd file per closed hour
    retention.py  drop the oldest hours by age or size
    query.py      DuckDB views samples, processes, system, events, limits
    info.py       store_info: rows, bytes, spans per table
    lock.py, layout.py, files.py, schema.py   locks, paths, Parquet files, the table contract
"""

from devloop.store.compact import CompactReport, compact
from devloop.store.files import StoreWarning
from devloop.store.info import StoreInfo, TableInfo, store_info
from devloop.store.layout import Partition
from devloop.store.query import connect, create_views, live_files
from devloop.store.recovery import RecoveryReport, SegmentReport, recover
from devloop.store.retention import DroppedPartition, DropReport, retention
from devloop.store.writer import StoreWriter, write_table

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
    "write_table",
]
