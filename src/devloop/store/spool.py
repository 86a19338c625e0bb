"""The spool: append-only segment files that survive SIGKILL at any byte.

A Parquet file that was never closed cannot be read, so every tick is appended here first and
a closed segment becomes Parquet later (recovery.py). Format of a segment::

    b"DLSPOOL2"                                  8-byte magic
    record*                                      one per StoreWriter.append call

    record  = [sync][u32 payload length][u32 crc32(payload)][payload]  little-endian
    sync    = b"\xf9\xd1\x0b\x5c"               4 bytes that start every record
    payload = [u8 table id][u16 schema version][u32 rows][u16 columns] column*
    column  = [u8 flags] [validity: one byte per row, if flags & 1] buffers

The column buffers are Arrow's own layout, so decoding is ``pa.Array.from_buffers`` with no
per-value work: fixed-width values are ``rows * itemsize`` bytes (``array`` module, native
little-endian); strings are ``rows + 1`` int32 offsets then the UTF-8 bytes; a list of int32 is
``rows + 1`` int32 offsets then the int32 values. A null becomes 0 / "" / [] in the buffers and
a 0 in the validity bytes. Segments of format 1 (``b"DLSPOOL1"``, records without the sync
marker) are still read.

A record that is short, has an impossible length or a wrong CRC is either the *torn tail* (the
record in flight when the writer died: a prefix of a record, or zeros, at the very end of the
file) or *damage* (bytes changed after they were written). Records are only ever appended, so
everything before a torn tail is intact and it is dropped quietly. Damage is skipped: reading
resynchronises on the next position where a whole record validates (sync marker, length, CRC of
the payload, and the payload decodes; a chance match of all of these is about one in 2**64 per
candidate) and carries on from there. :class:`SegmentContents` lists each damaged range, so
recovery can warn and keep the segment. One segment holds every table (records are tagged), so
a tick costs one ``write`` per table and one ``fdatasync`` per tick for all of them.

No pickle or marshal: the payload is plain numbers and bytes, checked before it is trusted.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import DiskFullError, SpoolCorruptError, StoreError
from devloop.store.columns import PAST_COLUMNS, SCHEMA_VERSIONS, TABLE_COLUMNS, Column, Kind

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("devloop.store")

MAGIC: Final = b"DLSPOOL2"
MAGIC_V1: Final = b"DLSPOOL1"  # records without the sync marker; read, never written
SYNC: Final = b"\xf9\xd1\x0b\x5c"  # 0xF9 never occurs in UTF-8, so no string holds it

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

_FRAME = struct.Struct("<4sII")
_FRAME_V1 = struct.Struct("<II")
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
    return _FRAME.pack(SYNC, len(payload), zlib.crc32(payload)) + payload


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
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise SpoolCorruptError(f"{table} record does not decode: {exc}") from exc
    if columns is not TABLE_COLUMNS[table]:
        batch = _upgrade(table, batch)
    return table, batch


def decode_rows(table: str, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """``rows`` of ``table`` as the batch a record of them reads back as."""
    return decode_payload(encode_record(table, rows)[_FRAME.size :])[1]


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


@dataclass(frozen=True)
class Damage:
    """A skipped stretch of a segment: damaged records, from the first byte that did not read
    as a record to the next record that does (or the end of the file)."""

    start: int
    end: int
    records: int  # damaged records in it, told apart by their lengths and sync markers

    @property
    def size(self) -> int:
        """Bytes skipped."""
        return self.end - self.start


@dataclass
class SegmentContents:
    """The decoded records of one segment."""

    batches: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    records: int = 0
    torn_bytes: int = 0  # bytes after the last good record (the write in flight at a crash)
    damaged: list[Damage] = field(default_factory=list)  # skipped ranges, in file order

    def rows(self, table: str) -> int:
        """Rows of ``table`` in the segment."""
        return sum(batch.num_rows for batch in self.batches.get(table, []))

    @property
    def skipped_bytes(self) -> int:
        """Bytes of damaged records skipped (the torn tail not included)."""
        return sum(damage.size for damage in self.damaged)

    @property
    def skipped_records(self) -> int:
        """Damaged records skipped (the torn tail not included)."""
        return sum(damage.records for damage in self.damaged)


@dataclass(frozen=True)
class _Format:
    frame: struct.Struct
    sync: bytes  # b"" in format 1

    def header(self, data: bytes, position: int) -> tuple[bytes, int, int] | None:
        """(sync, length, crc) of the frame at ``position``; None if the file ends first."""
        if len(data) - position < self.frame.size:
            return None
        if self.sync:
            sync, length, crc = self.frame.unpack_from(data, position)
            return sync, length, crc
        length, crc = self.frame.unpack_from(data, position)
        return b"", length, crc

    def payload(self, data: bytes, position: int) -> bytes | None:
        """The payload of the record at ``position`` if its frame and CRC are right."""
        header = self.header(data, position)
        if header is None:
            return None
        sync, length, crc = header
        start = position + self.frame.size
        if sync != self.sync or not _HEADER.size <= length <= _MAX_RECORD:
            return None
        if start + length > len(data):
            return None
        # A view, not a slice: resynchronising tries many lengths that are not a record's.
        if zlib.crc32(memoryview(data)[start : start + length]) != crc:
            return None
        return data[start : start + length]

    def candidates(self, data: bytes, start: int) -> Iterator[int]:
        """Positions from ``start`` on where a record may begin."""
        if self.sync:
            position = data.find(self.sync, start)
            while position != -1:
                yield position
                position = data.find(self.sync, position + 1)
        else:  # format 1 has no marker: try every byte (only segments left by an old devloop)
            yield from range(start, len(data) - self.frame.size + 1)

    def resync(self, data: bytes, start: int) -> int | None:
        """The first position from ``start`` on holding a whole valid record, or None."""
        for position in self.candidates(data, start):
            table_id = position + self.frame.size
            if table_id < len(data) and data[table_id] not in _TABLE_NAMES:
                continue  # the cheapest test first: most candidates fail it
            payload = self.payload(data, position)
            if payload is None:
                continue
            try:
                decode_payload(payload)
            except SpoolCorruptError:
                continue
            return position
        return None

    def torn(self, data: bytes, position: int) -> bool:
        """Whether the bytes from ``position`` to the end are a record cut short by a crash: a
        prefix of a frame, or zeros (a file extended but never written, after a power loss)."""
        rest = data[position:]
        if rest.count(0) == len(rest):
            return True
        header = self.header(data, position)
        if header is None:
            return rest[: len(self.sync)] == self.sync[: len(rest)]
        sync, length, _crc = header
        end = position + self.frame.size + length
        return sync == self.sync and _HEADER.size <= length <= _MAX_RECORD and end > len(data)

    def count(self, data: bytes, start: int, end: int) -> int:
        """Records in the damaged range ``start``-``end`` (at least one): follows each record's
        length while it lands inside the range, else skips to the next sync marker."""
        records = 0
        position = start
        while position < end:
            records += 1
            header = self.header(data, position)
            following = position + self.frame.size + header[1] if header is not None else end
            if position < following <= end:
                position = following
            elif self.sync:
                found = data.find(self.sync, position + 1, end)
                position = end if found == -1 else found
            else:
                position = end
        return records


_FORMATS: Final = {MAGIC: _Format(_FRAME, SYNC), MAGIC_V1: _Format(_FRAME_V1, b"")}


def read_segment(path: Path) -> SegmentContents:
    """Every intact record of a segment, in order; the torn tail, if any, is counted, not read,
    and damaged records are skipped and listed in ``damaged``.

    Raises SpoolCorruptError when the file is not a segment, or when a record with a good CRC
    cannot be decoded (a bug or a version skew, not damage: the CRC vouches for the bytes).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read spool segment {path}: {exc}") from exc
    contents = SegmentContents()
    if len(data) < len(MAGIC):
        contents.torn_bytes = len(data)  # died while creating the file
        return contents
    format_ = _FORMATS.get(data[: len(MAGIC)])
    if format_ is None:
        raise SpoolCorruptError(f"{path} is not a devloop spool segment")
    position = len(MAGIC)
    while position < len(data):
        payload = format_.payload(data, position)
        if payload is None:
            following = format_.resync(data, position + 1)
            if following is None and format_.torn(data, position):
                contents.torn_bytes = len(data) - position
                logger.info("%s: dropped a torn last record (%d bytes)", path, contents.torn_bytes)
                break
            end = len(data) if following is None else following
            damage = Damage(position, end, format_.count(data, position, end))
            contents.damaged.append(damage)
            position = end
            continue
        try:
            table, batch = decode_payload(payload)
        except SpoolCorruptError as exc:
            raise SpoolCorruptError(f"{path} at byte {position}: {exc}") from exc
        contents.batches.setdefault(table, []).append(batch)
        contents.records += 1
        position += format_.frame.size + len(payload)
    return contents


# -- writing ----------------------------------------------------------------------------------

#: The errors that mean "no room": the disk (ENOSPC) or the user's quota (EDQUOT) is full.
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def _spool_error(message: str, exc: OSError) -> StoreError:
    """``message`` as a DiskFullError when ``exc`` says the disk is full, else a StoreError."""
    kind = DiskFullError if exc.errno in DISK_FULL_ERRNOS else StoreError
    return kind(f"{message}: {exc}")


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
            raise _spool_error(f"cannot create spool segment {path}", exc) from exc
        self.size = 0
        self.rows = 0
        self._synced_once = False
        try:
            self._write(MAGIC)
        except StoreError:
            # An empty or torn file is harmless (recovery drops it), but not an fd leak.
            os.close(self._fd)
            self._fd = None
            raise

    def append(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Append one record of ``rows`` of ``table``."""
        if rows:
            self.append_record(encode_record(table, rows), len(rows))

    def append_record(self, record: bytes, rows: int) -> None:
        """Append one record already encoded by :func:`encode_record` (of ``rows`` rows).

        Raises DiskFullError (nothing of the record is left in the file) when the disk is full.
        """
        self._write(record)
        self.rows += rows

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
            raise _spool_error(f"cannot append to spool segment {self.path}", exc) from exc
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
            raise _spool_error(f"cannot sync spool segment {self.path}", exc) from exc

    def close(self) -> None:
        """Sync and close; the segment is then immutable and ready for conversion."""
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            fd, self._fd = self._fd, None
            self._close_fd(fd)

    def _close_fd(self, fd: int) -> None:
        try:
            os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot close spool segment {self.path}: {exc}") from exc

    def _require_open(self) -> int:
        if self._fd is None:
            raise StoreError(f"spool segment {self.path} is closed")
        return self._fd
