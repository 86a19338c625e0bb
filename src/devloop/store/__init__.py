"""The metrics store: a crash-safe, hive-partitioned Parquet time series with DuckDB views.

Pipeline, one module per stage::

    spool.py      append-only, checksummed segment files (what a tick is written to first)
    writer.py     StoreWriter (spool -> Parquet on roll-over)
    recovery.py   leftover segments -> Parquet, exactly once
    compact.py    one sorted zstd file per closed hour, and its rollups in the same pass
    rollups.py    per-hour rollups of samples (what reports read for closed hours): the writers
    retention.py  drop the oldest hours (and their rollups) by age or size
    ship.py       copy the compacted hours (and rollups) to a fleet dataset, by manifest
    info.py       store_info: rows, bytes, spans per table
    files.py      Parquet files: write_table (bulk writes), conforming, atomic writes
    lock.py       the writer and maintenance locks

The read side, top-down (what every report, the dashboard and the exporter go through)::

    db.py         Database, the one door to DuckDB: views samples, processes, system, events,
                  limits over the files and the spool; the small tables' digests; which rollup
                  files and raw files hold a range
    layout.py     where the files live, what their footers say, _facts.json
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
    from devloop.store.db import connect, create_views, live_files
    from devloop.store.files import write_table
    from devloop.store.info import StoreInfo, TableInfo, store_info
    from devloop.store.layout import Partition, StoreWarning
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
    "connect": "db",
    "create_views": "db",
    "live_files": "db",
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
