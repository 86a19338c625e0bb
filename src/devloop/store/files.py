"""Parquet files of the store: conforming rows to the schema, atomic writes, footer facts, and
:func:`write_table`, the bulk write straight to Parquet (the simulator, the store's own events).

Every file carries ``devloop.table`` and ``devloop.schema_version`` in its footer; a file
without them (or not Parquet at all) is *foreign* and is skipped by every reader with a
:class:`StoreWarning`. A compacted file also carries ``devloop.sources``: the names of the files
it replaces (transitively), so a crash between "compacted file renamed" and "inputs deleted"
never yields duplicate rows: a file named in a sibling's sources is *redundant*, readers ignore
it and the next compaction or recovery deletes it.

Footers are read with ``pyarrow.parquet.read_metadata`` and cached by (path, size, mtime), so
listing a large store twice costs one ``stat`` per file. (Connecting reads the new files'
footers with DuckDB instead, all at once, see :mod:`devloop.store.query`: pyarrow is imported
by the functions that need it, never by reading the store.)
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import CorruptFileError, StoreError
from devloop.store.columns import (
    SCHEMA_VERSION_KEY,
    SCHEMA_VERSIONS,
    SORT_KEYS,
    TABLE_COLUMNS,
    TABLE_KEY,
)
from devloop.store.layout import (
    HOUR_US,
    Partition,
    StoreWarning,
    check_table,
    data_files,
    fsync_dir,
    new_id,
    partition_dir,
    temp_path,
)

if TYPE_CHECKING:
    import pyarrow as pa

SOURCES_KEY: Final = b"devloop.sources"

#: Rows per row group: an hour of 200 processes at 1 s is 720,000 rows, one row group; large
#: groups let dictionary and delta encodings work over long runs.
ROW_GROUP_ROWS: Final = 1_048_576

#: zstd level for files the writer makes every minute (cheap) and for compacted files (small).
FAST_ZSTD_LEVEL: Final = 3
COMPACT_ZSTD_LEVEL: Final = 9

#: cpu_seconds is stored to the 0.01 s clock tick (USER_HZ = 100): finer digits are float noise
#: from psutil's arithmetic, and they defeat run-length and dictionary encoding.
_ROUNDED_COLUMNS: Final = {"cpu_seconds": 2}

#: Columns whose type on disk differs from the schema's. cpu_seconds is a cumulative counter in
#: 0.01 s steps: as DECIMAL(18,2) stored as INT64 it delta-encodes (a counter's deltas are small)
#: where a double could only be dictionary-encoded, which it defeats (about 1.0 -> 0.25 bytes a
#: row). Every Parquet reader reads DECIMAL; readers of the store get the schema's type back.
#: (Made on first use, as pyarrow is: reading the store imports no pyarrow.)
if TYPE_CHECKING:
    STORED_AS: dict[str, pa.DataType]
else:

    def __getattr__(name: str) -> Any:
        if name == "STORED_AS":
            return _stored_as()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The columns of :data:`STORED_AS`, without pyarrow.
STORED_AS_NAMES: Final = frozenset({"cpu_seconds"})


def _stored_as() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {"cpu_seconds": pa.decimal128(18, 2)}


@dataclass(frozen=True)
class FileFacts:
    """What a data file's footer says, without reading its rows."""

    path: Path
    table: str
    schema_version: int
    rows: int
    bytes: int
    ts_min_us: int | None
    ts_max_us: int | None
    sources: frozenset[str]


@dataclass(frozen=True)
class PartitionFiles:
    """The files of one partition directory, sorted into what readers use and what they skip."""

    live: tuple[FileFacts, ...]
    redundant: tuple[FileFacts, ...]  # contained in a compacted sibling: delete on repair
    invalid: tuple[tuple[Path, str], ...]  # (path, why) for corrupt or foreign files


_cache_lock = threading.Lock()
_facts_cache: dict[str, tuple[int, int, FileFacts | str]] = {}


def conform(table_name: str, data: pa.Table) -> pa.Table:
    """``data`` with exactly the columns and types of ``table_name``, rounded where the store
    rounds (cpu_seconds to 0.01 s), sorted by the table's series then time.

    Missing nullable columns become nulls; a missing non-nullable column, an extra column, a null
    in a non-nullable column or a value that does not fit its type raises StoreError.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from devloop.store.schema import TABLES

    schema = TABLES[table_name]
    extra = sorted(set(data.column_names) - set(schema.names))
    if extra:
        raise StoreError(f"{table_name}: unknown columns {', '.join(extra)}")
    columns: list[Any] = []
    for field in schema:
        if field.name in data.column_names:
            column = data.column(field.name)
            try:
                column = column.cast(field.type) if column.type != field.type else column
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StoreError(f"{table_name}.{field.name}: {exc}") from exc
            digits = _ROUNDED_COLUMNS.get(field.name)
            if digits is not None:
                column = pc.round(column, digits)
        elif field.nullable:
            column = pa.nulls(data.num_rows, field.type)
        else:
            raise StoreError(f"{table_name}: missing column {field.name}")
        if not field.nullable and column.null_count:
            raise StoreError(f"{table_name}.{field.name}: {column.null_count} null values")
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=schema)
    return table.sort_by([(key, "ascending") for key in SORT_KEYS[table_name]])


def split_by_hour(table: pa.Table) -> list[tuple[Partition, pa.Table]]:
    """``table`` cut into UTC hours by its ``ts`` column, oldest first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return []
    hours = pc.divide(table.column("ts").cast(pa.int64()), HOUR_US)
    if pc.min(table.column("ts").cast(pa.int64())).as_py() < 0:
        raise StoreError("timestamps before 1970 cannot be stored")
    parts: list[tuple[Partition, pa.Table]] = []
    for hour_index in sorted(pc.unique(hours).to_pylist()):
        part = table.filter(pc.equal(hours, hour_index))
        parts.append((Partition.of_hour_index(hour_index), part))
    return parts


def to_disk(table: pa.Table) -> pa.Table:
    """``table`` with the columns of STORED_AS cast to their type on disk."""
    for name, stored in _stored_as().items():
        index = table.schema.get_field_index(name)
        if index >= 0 and table.schema.field(index).type != stored:
            field = table.schema.field(index).with_type(stored)
            table = table.set_column(index, field, table.column(index).cast(stored))
    return table


def from_disk(table: pa.Table, table_name: str) -> pa.Table:
    """``table`` as read from a file, with STORED_AS columns back in the schema's types."""
    from devloop.store.schema import TABLES

    schema = TABLES[table_name]
    for name in STORED_AS_NAMES:
        index = table.schema.get_field_index(name)
        if index >= 0 and name in schema.names:
            wanted = schema.field(name).type
            if table.schema.field(index).type != wanted:
                field = table.schema.field(index).with_type(wanted)
                table = table.set_column(index, field, table.column(index).cast(wanted))
    return table


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """Per-column encodings: delta for integers, timestamps and integer-backed decimals (series
    sorted by time make small, regular deltas), dictionary for strings and floats (idle
    processes repeat values)."""
    import pyarrow as pa

    use_dictionary: list[str] = []
    column_encoding: dict[str, str] = {}
    for field in schema:
        if (
            pa.types.is_integer(field.type)
            or pa.types.is_timestamp(field.type)
            or pa.types.is_decimal(field.type)
        ):
            column_encoding[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_list(field.type):
            continue
        else:
            use_dictionary.append(field.name)
    return {"use_dictionary": use_dictionary, "column_encoding": column_encoding}


def file_metadata(table_name: str, sources: Iterable[str] = ()) -> dict[bytes, bytes]:
    """The footer key-value metadata every store file of ``table_name`` carries."""
    metadata = {
        TABLE_KEY: table_name.encode(),
        SCHEMA_VERSION_KEY: str(SCHEMA_VERSIONS[table_name]).encode(),
    }
    source_list = sorted(sources)
    if source_list:
        metadata[SOURCES_KEY] = json.dumps(source_list).encode()
    return metadata


def write_atomic(
    table_name: str,
    table: pa.Table,
    final: Path,
    *,
    sources: Iterable[str] = (),
    zstd_level: int = FAST_ZSTD_LEVEL,
) -> int:
    """Write ``table`` (already conformed) to ``final``: temp file, fsync, rename, fsync dir.

    A reader sees either no file or the whole file. Returns the file's size in bytes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = temp_path(final)
    table = to_disk(table).replace_schema_metadata(file_metadata(table_name, sources))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as sink:
            pq.write_table(
                table,
                sink,
                row_group_size=ROW_GROUP_ROWS,
                compression="zstd",
                compression_level=zstd_level,
                write_statistics=True,
                write_page_checksum=True,  # a flipped byte fails the read, not a silent row
                store_decimal_as_integer=True,
                **_write_options(table.schema),
            )
            sink.flush()
            os.fsync(sink.fileno())
            size = sink.tell()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except (OSError, pa.ArrowException) as exc:
        _unlink_quietly(tmp)
        raise StoreError(f"cannot write {final}: {exc}") from exc
    return size


def write_table(root: Path | str, table_name: str, data: pa.Table) -> list[Path]:
    """Write an Arrow table straight to final Parquet files, one per UTC hour it covers.

    For bulk and synthetic rows (the simulator) and for the store's own events. Columns are
    matched by name and cast to the schema (missing nullable columns become null). Each file is
    written atomically as ``w-<id>.parquet``; no lock is needed, a new name never collides.
    Returns the files written.
    """
    check_table(table_name)
    root = Path(root)
    conformed = conform(table_name, data)
    stem = new_id()
    written: list[Path] = []
    for partition, part in split_by_hour(conformed):
        final = partition_dir(root, table_name, partition) / f"w-{stem}.parquet"
        write_atomic(table_name, part, final)
        written.append(final)
    return written


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def read_facts(path: Path, table_name: str) -> FileFacts | str:
    """The footer facts of ``path``, or why it is not a valid file of ``table_name``."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc}"
    key = str(path)
    with _cache_lock:
        cached = _facts_cache.get(key)
    if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
        result = cached[2]
    else:
        result = _read_facts_uncached(path, stat.st_size)
        with _cache_lock:
            _facts_cache[key] = (stat.st_size, stat.st_mtime_ns, result)
    if isinstance(result, FileFacts) and result.table != table_name:
        return f"holds table {result.table!r}, not {table_name!r}"
    return result


def _read_facts_uncached(path: Path, size: int) -> FileFacts | str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file ({exc})"
    kv = metadata.metadata or {}
    if TABLE_KEY not in kv or SCHEMA_VERSION_KEY not in kv:
        return "not written by devloop (no devloop.table / devloop.schema_version metadata)"
    table = kv[TABLE_KEY].decode(errors="replace")
    try:
        version = int(kv[SCHEMA_VERSION_KEY])
        sources = frozenset(json.loads(kv[SOURCES_KEY])) if SOURCES_KEY in kv else frozenset()
    except ValueError as exc:
        return f"bad devloop metadata ({exc})"
    if table not in TABLE_COLUMNS:
        return f"holds unknown table {table!r}"
    ts_min, ts_max = _ts_range(metadata)
    return FileFacts(path, table, version, metadata.num_rows, size, ts_min, ts_max, sources)


def _ts_range(metadata: Any) -> tuple[int | None, int | None]:
    lows: list[int] = []
    highs: list[int] = []
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        if group.num_rows == 0:
            continue
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            if column.path_in_schema != "ts":
                continue
            stats = column.statistics
            if stats is None or not stats.has_min_max:
                return None, None
            lows.append(int(stats.min_raw))
            highs.append(int(stats.max_raw))
    return (min(lows), max(highs)) if lows else (None, None)


def known_facts(path: Path, size: int, mtime_ns: int) -> bool:
    """Whether this process's cache holds the footer facts of ``path`` at that size and
    mtime."""
    with _cache_lock:
        cached = _facts_cache.get(str(path))
    return cached is not None and cached[0] == size and cached[1] == mtime_ns


def remember_facts(facts: FileFacts, size: int, mtime_ns: int) -> None:
    """Keep ``facts``, read from the footer of the file of that size and mtime some other way
    (:mod:`devloop.store.query` reads new files' footers with DuckDB, without pyarrow)."""
    with _cache_lock:
        _facts_cache[str(facts.path)] = (size, mtime_ns, facts)


def parse_facts(
    path: Path, size: int, rows: int, kv: dict[bytes, bytes], ts: tuple[int | None, int | None]
) -> FileFacts | None:
    """The facts of a footer with ``rows``, key-values ``kv`` and ``ts`` range, as
    :func:`read_facts` makes them; None when it is not a valid devloop file (then
    :func:`read_facts` says why)."""
    if TABLE_KEY not in kv or SCHEMA_VERSION_KEY not in kv:
        return None
    table = kv[TABLE_KEY].decode(errors="replace")
    try:
        version = int(kv[SCHEMA_VERSION_KEY])
        sources = frozenset(json.loads(kv[SOURCES_KEY])) if SOURCES_KEY in kv else frozenset()
    except ValueError:
        return None
    if table not in TABLE_COLUMNS:
        return None
    return FileFacts(path, table, version, rows, size, ts[0], ts[1], sources)


def scan_partition(
    directory: Path, table_name: str, paths: Sequence[Path] | None = None
) -> PartitionFiles:
    """Sort the files of one partition into live, redundant and invalid (see module doc);
    ``paths``: its files as just listed (:func:`~devloop.store.layout.data_files`)."""
    facts: list[FileFacts] = []
    invalid: list[tuple[Path, str]] = []
    for path in data_files(directory) if paths is None else paths:
        result = read_facts(path, table_name)
        if isinstance(result, str):
            if path.exists():  # deleted meanwhile by a compaction: not an error
                invalid.append((path, result))
        else:
            facts.append(result)
    contained: set[str] = set()
    for fact in facts:
        contained |= fact.sources
    live = tuple(f for f in facts if f.path.name not in contained)
    redundant = tuple(f for f in facts if f.path.name in contained)
    return PartitionFiles(live, redundant, tuple(invalid))


def warn_invalid(invalid: Sequence[tuple[Path, str]]) -> None:
    """Warn once per skipped file, naming it."""
    for path, reason in invalid:
        warnings.warn(f"skipping {path}: {reason}", StoreWarning, stacklevel=3)


def read_rows(path: Path, table_name: str) -> pa.Table:
    """The rows of one store file, cast to the current schema of ``table_name``, each page
    checked against its checksum (files written before checksums are read unchecked).

    Raises CorruptFileError when the file's bytes are damaged, StoreError when it cannot be
    read at all (missing, no permission, an I/O error of the disk).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.ParquetFile(path, page_checksum_verification=True).read()
    except (OSError, pa.ArrowException) as exc:
        # Errors of the system carry an errno; pyarrow's own decoding errors (a failed CRC,
        # an undecodable page header) do not.
        kind = StoreError if getattr(exc, "errno", None) is not None else CorruptFileError
        raise kind(f"cannot read {path}: {exc}") from exc
    return from_disk(data.replace_schema_metadata(None), table_name)


def unlink_files(paths: Iterable[Path]) -> int:
    """Delete ``paths`` (missing ones are fine) and fsync their folders; return how many."""
    removed = 0
    folders: set[Path] = set()
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc}") from exc
        folders.add(path.parent)
    for folder in folders:
        try:
            fsync_dir(folder)
        except OSError as exc:
            raise StoreError(f"cannot sync {folder}: {exc}") from exc
    return removed
