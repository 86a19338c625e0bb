"""Writing the store's Parquet files: conforming rows to the schema, atomic writes, and
:func:`write_table`, the bulk write straight to Parquet (the simulator, the store's own events).

Every file carries ``devloop.table`` and ``devloop.schema_version`` in its footer (and a
compacted file ``devloop.sources``, the names of the files it replaces): what its footer says,
and how readers sort a folder's files into live, redundant and foreign ones, is
:mod:`devloop.store.layout`'s. pyarrow is imported by the functions that need it, never by
reading the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import CorruptFileError, StoreError
from devloop.store.columns import (
    SCHEMA_VERSION_KEY,
    SCHEMA_VERSIONS,
    SORT_KEYS,
    TABLE_KEY,
)
from devloop.store.layout import (
    HOUR_US,
    SOURCES_KEY,
    Partition,
    check_table,
    fsync_dir,
    new_id,
    partition_dir,
    temp_path,
)

if TYPE_CHECKING:
    import pyarrow as pa


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
