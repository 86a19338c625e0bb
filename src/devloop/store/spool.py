"""The spool: append-only segment files that survive SIGKILL at any byte.

A Parquet file that was never closed cannot be read, so every tick is appended here first and
a closed segment becomes Parquet later (recovery.py). Format of a segment::

    b"DLSPOOL1"                                  8-byte magic
    record*                                      one per StoreWriter.append call

    record  = [u32 payload length][u32 crc32(payload)][payload]        little-endian
    payload = [u8 table id][u16 schema version][u32 rows][u16 columns] column*
    column  = [u8 flags] [validity: one byte per row, if flags & 1] buffers

The column buffers are Arrow's own layout, so decoding is ``pa.Array.from_buffers`` with no
per-value work: fixed-width values are ``rows * itemsize`` bytes (``array`` module, native
little-endian); strings are ``rows + 1`` int32 offsets then the UTF-8 bytes; a list of int32 is
``rows + 1`` int32 offsets then the int32 values. A null becomes 0 / "" / [] in the buffers and
a 0 in the validity bytes.

Reading stops at the first record that is short, has an impossible length or a wrong CRC: that is
the record in flight when the writer died (the *torn tail*); everything before it is intact
because records are only ever appended. One segment holds every table (records are tagged), so a
tick costs one ``write`` per table and one ``fdatasync`` per tick for all of them.

No pickle or marshal: the payload is plain numbers and bytes, checked before it is trusted.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import SpoolCorruptError, StoreError
from devloop.store.columns import PAST_COLUMNS, SCHEMA_VERSIONS, TABLE_COLUMNS, Column, Kind

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("devloop.store")

MAGIC: Final = b"DLSPOOL1"

#: Table tags in records. Fixed numbers, never reused: a segment may outlive a code change.
TABLE_IDS: Final[dict[str, int]] = {
    "samples": 1,
    "processes": 2,
    "system": 3,
    "events": 4,
    "limits": 5,
    "runs": 6,
}
_TABLE_NAMES: Final = {number: name for name, number in TABLE_IDS.items()}

_FRAME = struct.Struct("<II")
_HEADER = struct.Struct("<BHIH")
_INT32 = struct.Struct("<i")
_NO_MASK: Final = b"\x00"
_HAS_MASK: Final = b"\x01"
_MAX_RECORD: Final = 1 << 30

if sys.byteorder != "little":  # pragma: no cover - the spool writes native arrays
    raise ImportError("devloop.store's spool needs a little-endian machine")


# How each column kind is laid out: ("fixed", array typecode), ("string", ""), ("int32_list", "").
_LAYOUTS: Final[dict[Kind, tuple[str, str]]] = {
    "ts": ("fixed", "q"),
    "i8": ("fixed", "b"),
    "i16": ("fixed", "h"),
    "i32": ("fixed", "i"),
    "i64": ("fixed", "q"),
    "f32": ("fixed", "f"),
    "f64": ("fixed", "d"),
    "str": ("string", ""),
    "list_i32": ("int32_list", ""),
}

_KINDS: Final[dict[str, list[tuple[str, str]]]] = {
    name: [_LAYOUTS[column.kind] for column in columns] for name, columns in TABLE_COLUMNS.items()
}
for _code in "bhiqfd":  # the buffers are Arrow's layout only at these sizes
    assert array(_code).itemsize == {"b": 1, "h": 2, "i": 4, "q": 8, "f": 4, "d": 8}[_code]


# -- encoding ---------------------------------------------------------------------------------


def encode_record(table: str, rows: Sequence[Sequence[Any]]) -> bytes:
    """One framed record holding ``rows`` (tuples in the column order of ``columns.py``)."""
    kinds = _KINDS[table]
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError as exc:
        raise StoreError(f"{table}: rows of different lengths ({exc})") from exc
    if len(columns) != len(kinds):
        raise StoreError(f"{table}: rows have {len(columns)} values, the table has {len(kinds)}")
    parts = [_HEADER.pack(TABLE_IDS[table], SCHEMA_VERSIONS[table], len(rows), len(kinds))]
    for (kind, code), column, field_ in zip(kinds, columns, TABLE_COLUMNS[table], strict=True):
        mark = len(parts)
        try:
            if kind == "fixed":
                _encode_fixed(parts, code, column)
            elif kind == "string":
                _encode_string(parts, column)
            else:
                _encode_int32_list(parts, column)
        except (TypeError, OverflowError, ValueError) as exc:
            raise StoreError(f"{table}.{field_.name}: cannot store value ({exc})") from exc
        if not field_.nullable and parts[mark] == _HAS_MASK:
            raise StoreError(f"{table}.{field_.name}: None in a column that cannot be null")
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _mask(column: Sequence[Any]) -> bytes:
    return bytes([value is not None for value in column])


def _encode_fixed(parts: list[bytes], code: str, column: Sequence[Any]) -> None:
    try:
        values = array(code, column)
        parts.append(_NO_MASK)
    except TypeError:
        # Rare path: a None somewhere (the fast path above is the common case, kept C-speed).
        parts.append(_HAS_MASK)
        parts.append(_mask(column))
        values = array(code, [0 if value is None else value for value in column])
    parts.append(values.tobytes())


def _encode_string(parts: list[bytes], column: Sequence[Any]) -> None:
    try:
        joined = "".join(column)
        parts.append(_NO_MASK)
    except TypeError:
        parts.append(_HAS_MASK)
        parts.append(_mask(column))
        column = ["" if value is None else value for value in column]
        joined = "".join(column)
    data = joined.encode("utf-8", "replace")
    if len(data) == len(joined):  # all ASCII: character counts are byte counts
        offsets = array("i", accumulate(map(len, column), initial=0))
    else:
        encoded = [value.encode("utf-8", "replace") for value in column]
        offsets = array("i", accumulate(map(len, encoded), initial=0))
        data = b"".join(encoded)
    parts.append(offsets.tobytes())
    parts.append(data)


def _encode_int32_list(parts: list[bytes], column: Sequence[Any]) -> None:
    if any(value is None for value in column):
        parts.append(_HAS_MASK)
        parts.append(_mask(column))
        column = [() if value is None else value for value in column]
    else:
        parts.append(_NO_MASK)
    offsets = array("i", accumulate(map(len, column), initial=0))
    values = array("i", [item for value in column for item in value])
    parts.append(offsets.tobytes())
    parts.append(values.tobytes())


# -- decoding ---------------------------------------------------------------------------------


def decode_payload(payload: bytes) -> tuple[str, pa.RecordBatch]:
    """The table and rows of one record's payload (CRC already checked).

    Imports pyarrow (encoding does not: the collector only ever encodes).
    """
    import pyarrow as pa

    try:
        table_id, version, n_rows, n_columns = _HEADER.unpack_from(payload, 0)
    except struct.error as exc:
        raise SpoolCorruptError(f"short record header ({exc})") from exc
    table = _TABLE_NAMES.get(table_id)
    if table is None:
        raise SpoolCorruptError(f"unknown table id {table_id}")
    columns = TABLE_COLUMNS[table]
    if version != SCHEMA_VERSIONS[table]:
        columns = PAST_COLUMNS.get((table, version), ())
    if not columns or n_columns != len(columns):
        raise SpoolCorruptError(
            f"{table} record of schema version {version} with {n_columns} columns; this devloop"
            f" reads version {SCHEMA_VERSIONS[table]} with {len(TABLE_COLUMNS[table])}"
        )
    try:
        batch = _decode_columns(columns, payload, n_rows)
    except pa.ArrowInvalid as exc:
        raise SpoolCorruptError(f"{table} record does not decode: {exc}") from exc
    if columns is not TABLE_COLUMNS[table]:
        batch = _upgrade(table, batch)
    return table, batch


def _upgrade(table: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of an earlier schema version in the current one (new columns null)."""
    import pyarrow as pa

    from devloop.store.schema import TABLES

    schema = TABLES[table]
    arrays = [
        batch.column(field_.name)
        if field_.name in batch.schema.names
        else pa.nulls(batch.num_rows, field_.type)
        for field_ in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _decode_columns(columns: tuple[Column, ...], payload: bytes, n_rows: int) -> pa.RecordBatch:
    import pyarrow as pa

    from devloop.store.schema import past_schema

    reader = _Reader(payload, _HEADER.size)
    schema = past_schema(columns)
    arrays = []
    for field_, (kind, code) in zip(schema, (_LAYOUTS[c.kind] for c in columns), strict=True):
        validity = None
        flags = reader.take(1)[0]
        if flags & 1:
            validity = _bitmap(reader.take(n_rows), n_rows)
        if kind == "fixed":
            size = array(code).itemsize
            data = pa.py_buffer(reader.take(n_rows * size))
            arrays.append(pa.Array.from_buffers(field_.type, n_rows, [validity, data]))
        else:
            offsets_bytes = reader.take((n_rows + 1) * 4)
            (end,) = _INT32.unpack_from(offsets_bytes, n_rows * 4)
            width = 1 if kind == "string" else 4
            values = pa.py_buffer(reader.take(end * width))
            offsets = pa.py_buffer(offsets_bytes)
            if kind == "string":
                arrays.append(
                    pa.Array.from_buffers(pa.string(), n_rows, [validity, offsets, values])
                )
            else:
                child = pa.Array.from_buffers(pa.int32(), end, [None, values])
                arrays.append(
                    pa.Array.from_buffers(
                        field_.type, n_rows, [validity, offsets], children=[child]
                    )
                )
    if reader.position != len(payload):
        raise SpoolCorruptError(f"{len(payload) - reader.position} trailing bytes in record")
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    batch.validate(full=True)
    return batch


class _Reader:
    def __init__(self, data: bytes, position: int) -> None:
        self.data = memoryview(data)
        self.position = position

    def take(self, size: int) -> memoryview:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise SpoolCorruptError("record shorter than its columns")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk


def _bitmap(mask: memoryview, n_rows: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    flags = pa.Array.from_buffers(pa.uint8(), n_rows, [None, pa.py_buffer(mask)])
    return pc.not_equal(flags, 0).buffers()[1]


@dataclass
class SegmentContents:
    """The decoded records of one segment."""

    batches: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    records: int = 0
    torn_bytes: int = 0  # bytes after the last good record (the write in flight at a crash)

    def rows(self, table: str) -> int:
        """Rows of ``table`` in the segment."""
        return sum(batch.num_rows for batch in self.batches.get(table, []))


def read_segment(path: Path) -> SegmentContents:
    """Every intact record of a segment, in order; the torn tail, if any, is counted, not read.

    Raises SpoolCorruptError when a record with a good CRC cannot be decoded.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read spool segment {path}: {exc}") from exc
    contents = SegmentContents()
    if len(data) < len(MAGIC):
        contents.torn_bytes = len(data)  # died while creating the file
        return contents
    if data[: len(MAGIC)] != MAGIC:
        raise SpoolCorruptError(f"{path} is not a devloop spool segment")
    position = len(MAGIC)
    while position < len(data):
        if len(data) - position < _FRAME.size:
            break
        length, crc = _FRAME.unpack_from(data, position)
        start = position + _FRAME.size
        if length < _HEADER.size or length > _MAX_RECORD or start + length > len(data):
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        try:
            table, batch = decode_payload(payload)
        except SpoolCorruptError as exc:
            raise SpoolCorruptError(f"{path} at byte {position}: {exc}") from exc
        contents.batches.setdefault(table, []).append(batch)
        contents.records += 1
        position = start + length
    contents.torn_bytes = len(data) - position
    if contents.torn_bytes:
        logger.info("%s: dropped a torn last record (%d bytes)", path, contents.torn_bytes)
    return contents


# -- writing ----------------------------------------------------------------------------------


class SegmentWriter:
    """An open segment: ``append`` writes one record with one ``write`` call (in the page cache,
    so it survives SIGKILL); ``sync`` makes it survive power loss too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise StoreError(f"cannot create spool segment {path}: {exc}") from exc
        self.size = 0
        self.rows = 0
        self._synced_once = False
        self._write(MAGIC)

    def append(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Append one record of ``rows`` of ``table``."""
        if rows:
            self._write(encode_record(table, rows))
            self.rows += len(rows)

    def _write(self, record: bytes) -> None:
        fd = self._require_open()
        try:
            view = memoryview(record)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            # A half-written record would hide every later record from recovery: cut it off.
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                pass
            raise StoreError(f"cannot append to spool segment {self.path}: {exc}") from exc
        self.size += len(record)

    def sync(self) -> None:
        """fdatasync the segment (and, the first time, its folder, so the file itself exists)."""
        fd = self._require_open()
        try:
            os.fdatasync(fd)
            if not self._synced_once:
                dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                self._synced_once = True
        except OSError as exc:
            raise StoreError(f"cannot sync spool segment {self.path}: {exc}") from exc

    def close(self) -> None:
        """Sync and close; the segment is then immutable and ready for conversion."""
        if self._fd is None:
            return
        self.sync()
        try:
            os.close(self._fd)
        except OSError as exc:
            raise StoreError(f"cannot close spool segment {self.path}: {exc}") from exc
        finally:
            self._fd = None

    def _require_open(self) -> int:
        if self._fd is None:
            raise StoreError(f"spool segment {self.path} is closed")
        return self._fd
