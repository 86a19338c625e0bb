"""DuckDB views over the store: ``samples``, ``processes``, ``system``, ``events``, ``limits``.

Each view reads the table's live files with ``read_parquet([...], hive_partitioning=true)``
(and ``union_by_name=true`` when files of several schema versions are mixed), so it has the
table's columns (``schema.TABLES``) followed by the two partition columns ``date`` (DATE) and
``hour`` (BIGINT, 0-23, UTC). They are kept on purpose: they
are what Spark and pyarrow.dataset show for the same folders, and filtering on them skips whole
files. A table with no files yet gets an empty view with the same columns, so queries never fail
on an empty store. Files are listed when the views are made: call :func:`create_views` again (or
connect again) to see files written since.

The views also hold the spool's rows not yet converted to Parquet (a running collector's last
minutes), read when the views are made; a segment already converted (its ``s-<id>.parquet``
exists, or a compacted file lists it) is not read again, so no row appears twice.

Skipped, with a :class:`~devloop.store.files.StoreWarning` naming them: files that are not
Parquet or lack devloop's footer metadata, and files of another table. Files already contained in
a compacted file (a compaction that died before deleting its inputs) are skipped silently.
The connection's time zone is UTC.

What each file's footer says (:class:`~devloop.store.files.FileFacts`) is read from
``<root>/_facts.json`` where it is kept for the file as it is (:mod:`devloop.store.facts`), so
a new process connects with one ``stat`` per unchanged file instead of reading every footer.
Connecting only reads it: the writers of whole hours write it. The footers of the files it does
not describe (those written since the last compaction) are read by DuckDB in one pass, so
reading the store imports no pyarrow (only the spool's rows, Arrow batches, need it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from devloop.errors import StoreError
from devloop.store import files as _files
from devloop.store.columns import PAST_COLUMNS, SCHEMA_VERSIONS, TABLE_COLUMNS, Kind
from devloop.store.facts import load_facts
from devloop.store.files import (
    STORED_AS_NAMES,
    FileFacts,
    conform,
    scan_partition,
    warn_invalid,
)
from devloop.store.layout import (
    SEGMENT_SUFFIX,
    StoreWarning,
    data_files,
    iter_partitions,
    segment_paths,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: The partition columns DuckDB adds (see module doc).
PARTITION_COLUMNS: tuple[tuple[str, str], ...] = (("date", "DATE"), ("hour", "BIGINT"))


def live_files(root: Path | str, table: str) -> list[Path]:
    """The files a reader of ``table`` should read, oldest hour first; warns about skipped ones."""
    paths: list[Path] = []
    for _, directory in iter_partitions(Path(root), table):
        scan = scan_partition(directory, table)
        warn_invalid(scan.invalid)
        paths.extend(fact.path for fact in scan.live)
    return paths


@dataclass(frozen=True)
class Listing:
    """What the views were made over: each table's live files (oldest hour first) and the
    tables that also read rows of the spool (registered as ``_spool_<table>``)."""

    files: dict[str, list[FileFacts]]
    spooled: frozenset[str]


def connect(root: Path | str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table of the store at ``root``."""
    return connect_listed(root, database)[0]


def connect_listed(
    root: Path | str, database: str = ":memory:"
) -> tuple[duckdb.DuckDBPyConnection, Listing]:
    """:func:`connect`, and the :class:`Listing` its views read."""
    try:
        connection = duckdb.connect(database)
        connection.execute("SET TimeZone = 'UTC'")
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except duckdb.Error as exc:
        raise StoreError(f"cannot open DuckDB: {exc}") from exc
    return connection, create_views(connection, root)


def create_views(connection: duckdb.DuckDBPyConnection, root: Path | str) -> Listing:
    """(Re)create the five views on ``connection`` from the files now in ``root``."""
    root = Path(root)
    load_facts(root)
    listed = {
        table: [(directory, data_files(directory)) for _, directory in iter_partitions(root, table)]
        for table in TABLE_COLUMNS
    }
    _read_footers(
        connection, [path for dirs in listed.values() for _, paths in dirs for path in paths]
    )
    files: dict[str, list[FileFacts]] = {}
    for table, directories in listed.items():
        files[table] = []
        for directory, paths in directories:
            scan = scan_partition(directory, table, paths)
            warn_invalid(scan.invalid)
            files[table].extend(scan.live)
    converted = {
        name for facts in files.values() for fact in facts
        for name in (fact.path.name, *fact.sources)
    }  # fmt: skip
    pending = _spool_tables(root, converted)
    for table in TABLE_COLUMNS:
        tail = pending.get(table)
        if tail is not None:
            connection.register(f"_spool_{table}", tail)
        sql = _view_sql(table, [fact.path for fact in files[table]], spooled=tail is not None)
        try:
            connection.execute(sql)
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None  # Ctrl-C while DuckDB ran: not a store error
        except duckdb.Error as exc:
            raise StoreError(f"cannot create the {table} view over {root}: {exc}") from exc
    return Listing(files, frozenset(pending))


def one_schema(paths: Sequence[Path | str]) -> bool:
    """Whether the store files ``paths`` (all known to this process, from the footers read
    when the views were made) share one schema version, so DuckDB may read them without
    ``union_by_name``: that reads every file's footer at every bind (~0.5 ms a file), where
    the default reads the first one and matches the others' columns by name."""
    versions = _versions(paths)
    return versions is not None and len(versions) <= 1


def _versions(paths: Sequence[Path | str]) -> set[int] | None:
    """The schema versions of ``paths`` from the footers this process read; None if unknown."""
    versions = set()
    with _files._cache_lock:
        for path in paths:
            cached = _files._facts_cache.get(str(path))
            if cached is None or not isinstance(cached[2], FileFacts):
                return None
            versions.add(cached[2].schema_version)
    return versions


def _absent_columns(table: str, paths: Sequence[Path | str]) -> set[str]:
    """Columns of the current schema that none of ``paths`` holds: every file is of an earlier
    version (``columns.PAST_COLUMNS``) that lacked them. The view gives them as NULL."""
    versions = _versions(paths)
    if not versions or SCHEMA_VERSIONS[table] in versions:
        return set()
    present: set[str] = set()
    for version in versions:
        past = PAST_COLUMNS.get((table, version))
        if past is None:
            return set()  # a version we know nothing of: let DuckDB say what is wrong
        present |= {column.name for column in past}
    return {field.name for field in TABLE_COLUMNS[table]} - present


def _read_footers(connection: duckdb.DuckDBPyConnection, paths: Sequence[Path]) -> None:
    """Read the footers of those of ``paths`` whose facts this process does not know (not in
    ``_facts.json``: the files written since the last compaction) with DuckDB, all in one
    pass, so connecting imports no pyarrow. Anything DuckDB cannot read, or that is not a
    devloop file, is left to :func:`~devloop.store.files.read_facts`, which says why."""
    unknown: dict[str, tuple[Path, int, int]] = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # gone: read_facts says so
        if not _files.known_facts(path, stat.st_size, stat.st_mtime_ns):
            unknown[str(path)] = (path, stat.st_size, stat.st_mtime_ns)
    if not unknown:
        return
    listing = "[" + ", ".join(_quote_string(name) for name in unknown) + "]"
    try:
        kv_rows = connection.execute(
            f"SELECT file_name, key, value FROM parquet_kv_metadata({listing})"
        ).fetchall()
        counts = dict(
            connection.execute(
                f"SELECT file_name, num_rows FROM parquet_file_metadata({listing})"
            ).fetchall()
        )
        groups = connection.execute(
            "SELECT file_name, row_group_num_rows, "
            "epoch_us(CAST(stats_min_value AS TIMESTAMPTZ)), "
            "epoch_us(CAST(stats_max_value AS TIMESTAMPTZ)) "
            f"FROM parquet_metadata({listing}) WHERE path_in_schema = 'ts'"
        ).fetchall()
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except duckdb.Error:
        return  # an unreadable file among them: each is read (and judged) on its own
    kvs: dict[str, dict[bytes, bytes]] = {}
    for name, key, value in kv_rows:
        kvs.setdefault(name, {})[bytes(key)] = bytes(value)
    ranges: dict[str, tuple[list[int], list[int]] | None] = {}
    for name, group_rows, low, high in groups:
        if not group_rows:
            continue
        found = ranges.setdefault(name, ([], []))
        if found is None:
            continue
        if low is None or high is None:
            ranges[name] = None  # a row group without statistics: no range (as pyarrow says)
            continue
        found[0].append(int(low))
        found[1].append(int(high))
    for name, (path, size, mtime_ns) in unknown.items():
        if name not in counts:
            continue
        lows_highs = ranges.get(name, ([], []))
        ts = (
            (min(lows_highs[0]), max(lows_highs[1]))
            if lows_highs and lows_highs[0]
            else (None, None)
        )
        facts = _files.parse_facts(path, size, int(counts[name]), kvs.get(name, {}), ts)
        if facts is not None:
            _files.remember_facts(facts, size, mtime_ns)


def _spool_tables(root: Path, converted: set[str]) -> dict[str, pa.Table]:
    """The rows of spool segments not yet in Parquet, per table, in the schema's types."""
    segments = segment_paths(root)
    if not segments:
        return {}
    from devloop.store.spool import read_segment  # only when there are segments to read

    batches: dict[str, list[pa.RecordBatch]] = {}
    for segment in segments:
        segment_id = segment.name.removesuffix(SEGMENT_SUFFIX)
        if f"s-{segment_id}.parquet" in converted:
            continue  # converted; the segment is about to be deleted
        try:
            contents = read_segment(segment)
        except FileNotFoundError:
            continue  # converted and deleted since it was listed: its Parquet was not listed
        except StoreError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                continue
            warnings.warn(f"skipped spool segment {segment}: {exc}", StoreWarning, stacklevel=3)
            continue
        for table, parts in contents.batches.items():
            batches.setdefault(table, []).extend(parts)
    out: dict[str, pa.Table] = {}
    for table, parts in batches.items():
        if parts:
            import pyarrow as pa  # only when the spool holds rows (they are Arrow batches)

            out[table] = conform(table, pa.Table.from_batches(parts))
    return out


def _view_sql(table: str, paths: list[Path], *, spooled: bool = False) -> str:
    if spooled:
        # The spool tail has the schema's types already; its partition columns are derived.
        names = ", ".join(_quote_identifier(c.name) for c in TABLE_COLUMNS[table])
        tail = (
            f"SELECT {names}, CAST(ts AS DATE) AS date, CAST(hour(ts) AS BIGINT) AS hour "
            f"FROM _spool_{table}"
        )
        if not paths:
            return f"CREATE OR REPLACE VIEW {table} AS {tail}"
        files = _view_sql(table, paths).split(" AS ", 1)[1]
        return f"CREATE OR REPLACE VIEW {table} AS {files} UNION ALL {tail}"
    if not paths:
        columns = [
            f"CAST(NULL AS {_duckdb_type(column.kind)}) AS {_quote_identifier(column.name)}"
            for column in TABLE_COLUMNS[table]
        ]
        columns += [f"CAST(NULL AS {kind}) AS {name}" for name, kind in PARTITION_COLUMNS]
        return f"CREATE OR REPLACE VIEW {table} AS SELECT {', '.join(columns)} WHERE false"
    listing = ", ".join(_quote_string(str(path)) for path in paths)
    # Explicit column list: the view's columns do not depend on which files happen to exist.
    # Columns stored in another type on disk (files.STORED_AS) come back in the schema's type.
    absent = _absent_columns(table, paths)
    columns = [
        f"CAST(NULL AS {_duckdb_type(c.kind)}) AS {name}"
        if c.name in absent
        else f"CAST({name} AS {_duckdb_type(c.kind)}) AS {name}"
        if c.name in STORED_AS_NAMES
        else name
        for c in TABLE_COLUMNS[table]
        for name in [_quote_identifier(c.name)]
    ]
    columns += [name for name, _ in PARTITION_COLUMNS]
    union = "false" if one_schema(paths) else "true"
    return (
        f"CREATE OR REPLACE VIEW {table} AS SELECT {', '.join(columns)} FROM read_parquet("
        f"[{listing}], hive_partitioning = true, union_by_name = {union})"
    )


#: The DuckDB type of each column kind (``columns.py``) a table has.
_DUCKDB_TYPES: dict[Kind, str] = {
    "ts": "TIMESTAMPTZ",
    "str": "VARCHAR",
    "i8": "TINYINT",
    "i16": "SMALLINT",
    "i32": "INTEGER",
    "i64": "BIGINT",
    "f32": "FLOAT",
    "f64": "DOUBLE",
    "list_i32": "INTEGER[]",
}


def _duckdb_type(kind: Kind) -> str:
    if kind not in _DUCKDB_TYPES:
        raise StoreError(f"no DuckDB type for {kind}")
    return _DUCKDB_TYPES[kind]


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
