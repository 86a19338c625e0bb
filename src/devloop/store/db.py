"""The store's read side, and its one door to DuckDB for everything above it.

Reports, the dashboard, the exporter and the stress-test report ask the store questions in
SQL; they never hold a DuckDB connection or catch a DuckDB error themselves. :class:`Database`
is a read-only connection with the store's views; every DuckDB error raised while running or
fetching a query becomes a :class:`~devloop.errors.QueryError` (a StoreError) naming what was
asked, here and nowhere else.

    with Database.open(workspace.metrics_dir) as db:
        rows = db.rows("SELECT project, max(ts) FROM samples GROUP BY ALL")

Read top-down, this module holds, in order:

**The views** ``samples``, ``processes``, ``system``, ``events``, ``limits``. Each reads the
table's live files with ``read_parquet([...], hive_partitioning=true)`` (and
``union_by_name=true`` when files of several schema versions are mixed), so it has the table's
columns (``schema.TABLES``) followed by the two partition columns ``date`` (DATE) and ``hour``
(BIGINT, 0-23, UTC). They are kept on purpose: they are what Spark and pyarrow.dataset show for
the same folders, and filtering on them skips whole files. A table with no files yet gets an
empty view with the same columns, so queries never fail on an empty store. Files are listed
when the views are made: call :func:`create_views` again (or connect again) to see files
written since. The views also hold the spool's rows not yet converted to Parquet (a running
collector's last minutes), read when the views are made; a segment already converted (its
``s-<id>.parquet`` exists, or a compacted file lists it) is not read again, so no row appears
twice. Skipped, with a :class:`~devloop.store.layout.StoreWarning` naming them: files that are
not Parquet or lack devloop's footer metadata, and files of another table. Files already
contained in a compacted file (a compaction that died before deleting its inputs) are skipped
silently. The connection's time zone is UTC. What each file's footer says comes from
``_facts.json`` (:mod:`devloop.store.layout`) for the files it describes; the footers of the
others (written since the last compaction) are read by DuckDB in one pass, so reading the store
imports no pyarrow (only the spool's rows, Arrow batches, need it).

**The digests** of the small tables. Every report asks which projects and agents the store
names (``processes`` and ``limits``) and each host's core count (``system``). Scanning those
tables opens every file of the range (about 1 ms a file) for a few dozen distinct values, so a
digest holds them per file: ``processes``, ``limits``: the file's distinct ``(project,
agent)`` pairs; ``system``: per host, the file's newest tick and the core count at it. They are
kept with the footer facts in ``_facts.json``, each valid while its file's size and
modification time are unchanged. Reports read them (:func:`digests`) and compute the missing
ones with one query per table over the files without one, keeping nothing; the writers of
whole hours compute and save them (:func:`save_digests`). The spool tail is read live.

**The rollups a range reads** (:func:`hours`, :func:`resolve`, :func:`consolidated`): a closed
hour whose every rollup file (:mod:`devloop.store.rollups`, which writes them) is whole is read
from them, any other hour from its raw files and spool rows. Reports only read; looking at the
store never writes into it.

**A report's rows** as DuckDB returns them (:class:`Rows`, :func:`fetch`): the query does the
work (casts, order); the CLI renders them as they are, so it never imports polars (nor
pyarrow), and the Python API's DataFrame is :meth:`Rows.frame` of them, made when first asked
for. A report of many rows (the export: 40,000 a week at 1m) keeps its query as a
:class:`Query`, run when the rows are first asked for; the CLI has DuckDB write them as JSON or
CSV text instead (:meth:`Query.json`, :meth:`Query.csv`), the same text, byte for byte, as the
rows rendered in Python, where building it cost more than the query.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.errors import QueryError, QueryRefused, StoreError
from devloop.store.columns import (
    PAST_COLUMNS,
    ROLLUP_COLUMNS,
    ROLLUP_VERSIONS,
    SCHEMA_VERSIONS,
    TABLE_COLUMNS,
    Kind,
)
from devloop.store.files import STORED_AS_NAMES, conform
from devloop.store.layout import (
    SEGMENT_SUFFIX,
    Digest,
    FileFacts,
    Partition,
    StoreWarning,
    data_files,
    digest_of,
    iter_partitions,
    known_facts,
    known_versions,
    load_facts,
    parse_facts,
    remember_facts,
    save_facts,
    scan_partition,
    segment_paths,
    warn_invalid,
)

if TYPE_CHECKING:
    import duckdb
    import numpy.typing as npt
    import polars as pl
    import pyarrow as pa


@contextmanager
def mapped(what: str = "query failed") -> Iterator[None]:
    """Turn a DuckDB error inside the block into a QueryError ``"<what>: <DuckDB's words>"``."""
    import duckdb

    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None  # Ctrl-C during a query: DuckDB took the SIGINT
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"{what}: {exc}") from exc
    except duckdb.Error as exc:
        raise QueryError(f"{what}: {exc}") from exc


class Database:
    """A DuckDB connection over the store's views whose errors are QueryErrors."""

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, listing: Listing, root: Path | str = ""
    ) -> None:
        self.connection = connection
        #: The store's folder, named in every error.
        self.root = Path(root)
        #: The files (and spool tables) the views read, as listed when they were made.
        self.listing = listing

    @classmethod
    def open(cls, root: Path | str, *, threads: int | None = None) -> Database:
        """The store at ``root`` (its ``metrics`` folder); StoreError when DuckDB fails."""

        connection, listing = connect_listed(root)
        db = cls(connection, listing, root)
        if threads is not None:
            db.execute(f"SET threads = {int(threads)}")
        try:
            connection.execute("SET enable_progress_bar = false")
        except Exception:  # noqa: BLE001 - a Jupyter kernel without ipywidgets refuses it;
            pass  # there DuckDB never draws a bar either, so there is nothing to turn off
        return db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement for its effect."""
        with mapped(self._failed):
            self.connection.execute(sql, list(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The result of ``sql`` as tuples."""
        with mapped(self._failed):
            return self.connection.sql(sql, params=list(params)).fetchall()

    def named_rows(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The result of ``sql``: its column names and its rows as tuples."""
        with mapped(self._failed):
            relation = self.connection.sql(sql, params=list(params))
            return list(relation.columns), relation.fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of ``sql``'s result, None when it has none."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """The result of ``sql`` as a polars DataFrame."""
        with mapped(self._failed):
            result: pl.DataFrame = self.connection.sql(sql, params=list(params)).pl()
            return result

    def numpy(self, sql: str, params: Sequence[Any] = ()) -> dict[str, npt.NDArray[Any]]:
        """The result of ``sql`` as a NumPy array per column (no polars, no pyarrow)."""
        with mapped(self._failed):
            return dict(self.connection.sql(sql, params=list(params)).fetchnumpy())

    def arrow(self, sql: str, params: Sequence[Any] = (), batch: int = 1 << 17) -> pa.Table:
        """The result of ``sql`` as an Arrow table (read ``batch`` rows at a time)."""
        with mapped(self._failed):
            return self.connection.sql(sql, params=list(params)).to_arrow_table(batch)

    @property
    def _failed(self) -> str:
        return f"a query over {self.root} failed" if self.root.parts else "query failed"

    @contextmanager
    def registered(self, tables: dict[str, Any]) -> Iterator[None]:
        """Arrow tables (or polars frames) visible to queries under these names in the block."""
        with mapped("cannot register a table"):
            for name, table in tables.items():
                self.connection.register(name, table)
        try:
            yield
        finally:
            for name in tables:
                try:
                    self.connection.unregister(name)
                except Exception:  # noqa: BLE001 - a closed connection has nothing to drop
                    pass

    def register(self, name: str, table: Any) -> None:
        """Make ``table`` (Arrow or polars) visible to queries as ``name`` until closed."""
        with mapped("cannot register a table"):
            self.connection.register(name, table)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    import duckdb

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
    import duckdb

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
    versions = known_versions(paths)
    return versions is not None and len(versions) <= 1


def _absent_columns(table: str, paths: Sequence[Path | str]) -> set[str]:
    """Columns of the current schema that none of ``paths`` holds: every file is of an earlier
    version (``columns.PAST_COLUMNS``) that lacked them. The view gives them as NULL."""
    versions = known_versions(paths)
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
    import duckdb

    unknown: dict[str, tuple[Path, int, int]] = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # gone: read_facts says so
        if not known_facts(path, stat.st_size, stat.st_mtime_ns):
            unknown[str(path)] = (path, stat.st_size, stat.st_mtime_ns)
    if not unknown:
        return
    listing = "[" + ", ".join(sql_string(name) for name in unknown) + "]"
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
        facts = parse_facts(path, size, int(counts[name]), kvs.get(name, {}), ts)
        if facts is not None:
            remember_facts(facts, size, mtime_ns)


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
    listing = ", ".join(sql_string(str(path)) for path in paths)
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


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


#: Per table, the query over ``{source}`` giving ``({file}, value...)`` rows: ``file`` is the
#: ``filename`` column of a read_parquet, or a constant for the spool tail.
DIGEST_SQL: Final = {
    "processes": "SELECT DISTINCT {file}, project, agent FROM {source}",
    "limits": "SELECT DISTINCT {file}, project, agent FROM {source}",
    "system": (
        "SELECT {file}, host, epoch_us(max(ts)), arg_max(cores, ts) FROM {source} GROUP BY ALL"
    ),
}


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def digests(
    connection: duckdb.DuckDBPyConnection, root: Path, listing: Listing
) -> dict[str, Digest]:
    """Per table of :data:`DIGEST_SQL`, the digest rows (its value columns) of every live file
    of ``listing`` and of the spool tail: the kept ones read from ``_facts.json``, the missing
    ones computed (one query per table). Writes nothing."""
    return _collect(connection, root, listing)[0]


def save_digests(connection: duckdb.DuckDBPyConnection, root: Path, listing: Listing) -> None:
    """Compute the digests missing from ``_facts.json`` and save them with every live file's
    footer facts (:func:`~devloop.store.layout.save_facts`). For the writers of whole hours."""
    save_facts(root, _collect(connection, root, listing)[1])


def _collect(
    connection: duckdb.DuckDBPyConnection, root: Path, listing: Listing
) -> tuple[dict[str, Digest], dict[str, Digest]]:
    """The digest rows per table (files and spool tail), and the digests computed now, by
    path."""
    import duckdb

    entries = load_facts(root)
    found: dict[str, Digest] = {}
    computed: dict[str, Digest] = {}
    try:
        for table, sql in DIGEST_SQL.items():
            rows: Digest = []
            missing: list[str] = []
            for fact in listing.files[table]:
                key = str(fact.path)
                stat = _stat(fact.path)
                kept = digest_of(entries.get(key), stat)
                if kept is not None:
                    rows.extend(kept)
                elif stat is not None:
                    missing.append(key)
            if missing:
                listing_sql = ", ".join(sql_string(key) for key in missing)
                source = f"read_parquet([{listing_sql}], filename = true, union_by_name = true)"
                per_file: dict[str, Digest] = {key: [] for key in missing}
                for filename, *values in connection.sql(
                    sql.format(file="filename", source=source)
                ).fetchall():
                    per_file.setdefault(filename, []).append(values)
                for key, values in per_file.items():
                    rows.extend(values)
                    if key in missing:
                        computed[key] = values
            if table in listing.spooled:
                tail = sql.format(file="'spool'", source=f"_spool_{table}")
                rows.extend(list(values) for _, *values in connection.sql(tail).fetchall())
            found[table] = rows
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except duckdb.Error as exc:
        raise StoreError(f"cannot digest the small tables of {root}: {exc}") from exc
    return found, computed


ROLLUPS_DIR: Final = "_rollups"

#: Built in this order (``agent_hour`` is read from the ``agent`` entry).
KINDS: Final = tuple(ROLLUP_COLUMNS)

#: Every kind's version, in the key of each hour's entries: a bump makes them all stale.
_FORMAT: Final = ";".join(f"{kind}={version}" for kind, version in ROLLUP_VERSIONS.items())


@dataclass(frozen=True)
class SpoolHour:
    """The ``samples`` rows of one hour still in the spool, not yet in a Parquet file: the
    views' spool tail (``_spool_samples``, see :mod:`devloop.store.db`) of that hour."""

    partition: Partition


#: Where an hour's raw rows are: its live Parquet files and its rows still in the spool.
Raw = Path | SpoolHour


@dataclass(frozen=True)
class Hour:
    """One hour of ``samples``: its live files (and spool rows) and, when closed, where its
    rollups live."""

    partition: Partition
    files: tuple[Raw, ...]
    key: str
    closed: bool

    def entry(self, root: Path, kind: str) -> Path:
        """The rollup file of ``kind`` for this hour's current sources."""
        # One string, one Path: a week's resolve makes thousands of these.
        rel = self.partition.relative_dir
        return Path(f"{root}/{ROLLUPS_DIR}/{kind}/{rel}/{self.key}.parquet")


@dataclass(frozen=True)
class Sources:
    """Where the rows of a range come from: per kind, rollup files; and raw files of the hours
    without whole rollups (the current hour, an hour with rows in the spool, an hour not yet
    rolled up), with the spool's rows of those hours."""

    cached: dict[str, tuple[Path, ...]]
    partitions: tuple[Partition, ...]  # the hour of each rollup file, in the same order
    raw: tuple[Raw, ...]
    files: dict[Partition, tuple[Raw, ...]]  # every hour's live samples files and spool rows


def hour_dir(root: Path, kind: str, partition: Partition) -> Path:
    """``<root>/_rollups/<kind>/date=YYYY-MM-DD/hour=H``."""
    return root / ROLLUPS_DIR / kind / partition.relative_dir


def source_key(facts: Sequence[FileFacts]) -> str:
    """The key of an hour whose live files are ``facts``."""
    text = "\n".join([_FORMAT, *sorted(f"{f.path.name}:{f.bytes}" for f in facts)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def hours(
    root: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    spooled: Collection[Partition] = (),
    listed: Sequence[FileFacts] | None = None,
) -> list[Hour]:
    """The hours of ``samples`` overlapping ``[start, end)`` that hold live files or rows in
    the spool (``spooled``: the hours of the spool's rows), oldest first. An hour is closed
    when it is before the hour of ``now`` and has no row in the spool.

    ``listed``: the live ``samples`` files the views were made over (which, with the spool's
    rows read at the same moment, hold every row once), instead of a new scan of the folders:
    a segment converted since is then counted once, from the spool."""

    current = Partition.of_datetime(now or datetime.now(UTC))
    spool = set(spooled)

    def wanted(partition: Partition) -> bool:
        return (start is None or partition.end > start) and (end is None or partition.start < end)

    if listed is None:
        by_hour = [
            (partition, scan_partition(directory, "samples").live)
            for partition, directory in iter_partitions(root, "samples")
            if wanted(partition)
        ]
    else:
        grouped: dict[Partition, list[FileFacts]] = {}
        for fact in listed:
            # <root>/samples/date=YYYY-MM-DD/hour=H/<file>
            date, hour = fact.path.parent.parent.name, fact.path.parent.name
            partition = Partition(date.removeprefix("date="), int(hour.removeprefix("hour=")))
            if wanted(partition):
                grouped.setdefault(partition, []).append(fact)
        by_hour = [(partition, tuple(facts)) for partition, facts in grouped.items()]
    found: list[Hour] = []
    for partition, live in by_hour:
        tail: tuple[Raw, ...] = (SpoolHour(partition),) if partition in spool else ()
        spool.discard(partition)
        if live or tail:
            found.append(
                Hour(
                    partition,
                    (*(f.path for f in live), *tail),
                    source_key(live),
                    partition < current and not tail,
                )
            )
    found += [
        Hour(partition, (SpoolHour(partition),), "", False)
        for partition in spool
        if wanted(partition)
    ]
    return sorted(found, key=lambda hour: hour.partition)


def whole_parquet(path: Path) -> bool:
    """Cheap check that ``path`` is a whole Parquet file (it starts and ends with PAR1)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:  # raw reads: no buffered file object (a week's resolve checks thousands)
        size = os.fstat(fd).st_size
        return size >= 12 and os.pread(fd, 4, 0) == b"PAR1" == os.pread(fd, 4, size - 4)
    except OSError:
        return False
    finally:
        os.close(fd)


def resolve(root: Path, chosen: Sequence[Hour]) -> Sources:
    """The rollup files and raw files covering ``chosen``: a closed hour with every kind's
    entry whole is read from them, any other hour raw. Writes nothing."""
    entries = {
        hour.partition: {kind: hour.entry(root, kind) for kind in KINDS}
        for hour in chosen
        if hour.closed
    }
    cached: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    partitions: list[Partition] = []
    raw: list[tuple[Partition, tuple[Raw, ...]]] = []
    for hour in chosen:
        if hour.closed and all(whole_parquet(path) for path in entries[hour.partition].values()):
            partitions.append(hour.partition)
            for kind in KINDS:
                cached[kind].append(entries[hour.partition][kind])
        else:
            raw.append((hour.partition, hour.files))
    return Sources(
        {kind: tuple(paths) for kind, paths in cached.items()},
        tuple(partitions),
        tuple(path for _, files in raw for path in files),
        {hour.partition: hour.files for hour in chosen},
    )


#: A day's entries of one kind, concatenated (see :func:`consolidated`).
DAY_PREFIX: Final = "day-"


def day_key(entries: Sequence[Path]) -> str:
    text = "\n".join(sorted(f"{path.parent.name}/{path.name}" for path in entries))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def consolidated(
    paths: Sequence[Path],
    today: str | None = None,
    *,
    make: Callable[[Sequence[Path], Path], bool] | None = None,
) -> list[Path]:
    """``paths`` (entries of one kind) with each whole past day's entries replaced by one file.

    Opening a Parquet file costs DuckDB ~0.5 ms, so a week of hourly entries costs ~0.1 s per
    query and kind. When ``paths`` hold every entry of a past UTC day (every ``hour=H`` folder
    of its ``date=D`` folder), they are read from ``<kind>/date=D/day-<key>.parquet`` instead:
    the same rows (the entries concatenated; for value counts the same values with their
    counts summed over the day), ``key`` a hash of the entries' names, so a rebuilt hour makes
    a new one. Reports only use a day file that exists; the writers of whole hours pass
    ``make(entries, day)``, which writes a missing one and says whether it did
    (:func:`devloop.store.rollups.write_days`). Anything else is read as it is.
    """
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        groups.setdefault(path.parent.parent, []).append(path)
    out: list[Path] = []
    for date_dir, group in groups.items():
        day = date_dir / f"{DAY_PREFIX}{day_key(group)}.parquet"
        if len(group) > 1 and date_dir.name.removeprefix("date=") < today:
            if whole_parquet(day) or (make is not None and make(group, day)):
                out.append(day)
                continue
        out.extend(group)
    return out


def fetch(db: Database, sql: str, params: Sequence[Any], kinds: Mapping[str, Kind]) -> Rows:
    """The result of ``sql`` as :class:`Rows` whose columns are ``kinds``'s, in its order
    (the query casts each column to its kind; other names are a bug: ValueError)."""
    columns, rows = db.named_rows(sql, params)
    if tuple(columns) != tuple(kinds):
        raise ValueError(f"query columns {columns}, expected {list(kinds)}")
    return Rows(tuple(kinds), tuple(kinds.values()), rows)


#: The SQL type of each kind a report's columns have.
_SQL_TYPES: dict[str, str] = {
    "str": "VARCHAR",
    "i32": "INTEGER",
    "i64": "BIGINT",
    "f64": "DOUBLE",
    "ts": "TIMESTAMPTZ",
    "bool": "BOOLEAN",
}


def cast_columns(kinds: Mapping[str, Kind]) -> str:
    """The select list casting each column of ``kinds`` to its kind's SQL type, in order."""
    return ", ".join(
        f"CAST({name} AS {_SQL_TYPES[kind]}) AS {name}" for name, kind in kinds.items()
    )


def dtypes(kinds: Mapping[str, Kind]) -> dict[str, pl.DataType]:
    """The polars type of each column of ``kinds`` (the types of :meth:`Rows.frame`)."""
    import polars as pl

    types: dict[str, pl.DataType] = {
        "str": pl.String(),
        "i32": pl.Int32(),
        "i64": pl.Int64(),
        "f64": pl.Float64(),
        "ts": pl.Datetime("us", "UTC"),
        "bool": pl.Boolean(),
    }
    return {name: types[kind] for name, kind in kinds.items()}


@dataclass(frozen=True)
class Rows:
    """A report's rows as DuckDB returned them: tuples in the report's order, and each column's
    kind (:data:`devloop.store.columns.Kind`: ``str``, ``i64``, ``f64``, ``ts``).

    The query does the work (casts, order); the CLI renders these as they are, without polars,
    and the Python API's DataFrame is :meth:`frame` of them (built when it is first asked for).
    """

    columns: tuple[str, ...]
    kinds: tuple[Kind, ...]
    rows: list[tuple[Any, ...]]

    def frame(self) -> pl.DataFrame:
        """The rows as a polars DataFrame, each column of its kind's type."""
        import polars as pl

        types = dtypes(dict(zip(self.columns, self.kinds, strict=True)))
        values = list(zip(*self.rows, strict=True)) or [()] * len(self.columns)
        return pl.DataFrame(
            [
                pl.Series(name, column, dtype=types[name], strict=True)
                for name, column in zip(self.columns, values, strict=True)
            ]
        )

    @property
    def numeric(self) -> tuple[int, ...]:
        """The indexes of the numeric columns."""
        return tuple(i for i, kind in enumerate(self.kinds) if kind in _NUMERIC)

    def records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts, as :func:`devloop.analytics.records` gives them of
        :meth:`frame` (converted a column at a time: a report may have 100,000 rows)."""
        names = self.columns
        columns: list[Any] = list(zip(*self.rows, strict=True)) or [()] * len(names)
        for index, kind in enumerate(self.kinds):
            if kind in _AS_IS:
                continue
            column = columns[index]
            if kind in ("f64", "f32"):
                columns[index] = [
                    None if v is None or not math.isfinite(v) else round(v, 6) + 0.0 for v in column
                ]
            elif kind == "ts":
                columns[index] = [
                    None if v is None else v.astimezone(UTC).isoformat().replace("+00:00", "Z")
                    for v in column
                ]
            else:
                columns[index] = [None if v is None else json_value(v) for v in column]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


@dataclass(frozen=True, eq=False)
class Query:
    """A report's query, not run yet: ``sql`` (a relation with at least the columns of
    ``kinds``, in no order) over ``db``, its rows in the order ``order`` (column names).

    :meth:`fetch` gives its rows; :meth:`json` and :meth:`csv` have DuckDB write them as text,
    as :func:`devloop.cli.render.to_json` writes :meth:`Rows.records` (numbers rounded to a
    key's decimals) and as the CLI's CSV writes :attr:`Rows.rows`, or None when only Python can
    (a string that needs escaping or quoting, a kind without a rule below).
    """

    db: Database
    sql: str
    params: tuple[Any, ...]
    kinds: Mapping[str, Kind]
    order: str

    def fetch(self) -> Rows:
        """The rows, in order (see :func:`fetch`)."""
        sql = f"SELECT {cast_columns(self.kinds)} FROM ({self.sql}) ORDER BY {self.order}"
        return fetch(self.db, sql, self.params, self.kinds)

    def json(self, decimals: Mapping[str, int], depth: int) -> str | None:
        """The rows as ``json.dumps(records, indent=2)`` writes the list at ``depth``, each
        float rounded to ``decimals[key]`` places (``>= 1``; after :meth:`Rows.records`'s 6)
        where given: ``[]``, or ``[`` and one indented object per row, ``]`` at ``depth``."""
        row = "  " * (depth + 1)
        inside = "  " * (depth + 2)
        parts: list[str] = []
        values: list[str] = []
        plain: list[str] = []
        between = f"{row}{{\n{inside}"
        for name, kind in self.kinds.items():
            found = _cell(name, kind, decimals.get(name), as_json=True)
            if found is None:
                return None
            parts.append(f"{between}{json.dumps(name)}: ")
            values.append(found[0])
            plain.extend(found[1:])
            between = f",\n{inside}"
        parts.append(f"\n{row}}}")
        text = self._text(parts, values, plain, ",\n")
        if text is None:
            return None
        return f"[\n{text}\n{'  ' * depth}]" if text else "[]"

    def csv(self) -> str | None:
        """The rows as CSV (``csv.writer`` of :attr:`Rows.rows`, each float rounded to 6
        places, times in ISO 8601 UTC), header line first."""
        parts: list[str] = []
        values: list[str] = []
        plain: list[str] = []
        for index, (name, kind) in enumerate(self.kinds.items()):
            found = _cell(name, kind, None, as_json=False)
            if found is None or not _PLAIN_NAME.fullmatch(name):
                return None
            parts.append("," if index else "")
            values.append(found[0])
            plain.extend(found[1:])
        parts.append("")
        text = self._text(parts, values, plain, "\n")
        if text is None:
            return None
        return ",".join(self.kinds) + "\n" + (text + "\n" if text else "")

    def _text(
        self, parts: Sequence[str], values: Sequence[str], plain: Sequence[str], separator: str
    ) -> str | None:
        """``parts[0] value[0] parts[1] ... value[-1] parts[-1]`` per row, rows in order and
        joined by ``separator``; None when a row breaks one of the ``plain`` conditions."""
        pieces = [sql_string(parts[0])]
        for value, part in zip(values, parts[1:], strict=True):
            pieces += [value, sql_string(part)]
        line = f"concat({', '.join(pieces)})"
        broken = " OR ".join(f"NOT coalesce({condition}, true)" for condition in plain) or "false"
        casts = cast_columns(self.kinds)
        ((text, breaks),) = self.db.rows(
            f"""
            SELECT string_agg({line}, {sql_string(separator)} ORDER BY {self.order}),
                   count(*) FILTER (WHERE {broken})
            FROM (SELECT {casts} FROM ({self.sql}))
            """,
            self.params,
        )
        if breaks:
            return None
        return text or ""


#: A string written as it is, between double quotes in JSON and bare in CSV: printable ASCII
#: but for ``"``, ``\\`` and ``,`` (what needs no escaping in JSON and no quoting in CSV).
_PLAIN = r"[\x20\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*"
_PLAIN_NAME = re.compile(_PLAIN)
#: Microseconds since the epoch of 1000-01-01 and 10000-01-01: ``%Y`` writes four digits.
_YEARS = (-30_610_224_000_000_000, 253_402_300_800_000_000)


def _cell(name: str, kind: Kind, decimals: int | None, *, as_json: bool) -> tuple[str, ...] | None:
    """The SQL writing column ``name`` of ``kind`` as Python writes it (JSON or CSV), then
    the conditions under which it does; None for a kind without a rule."""
    null = "'null'" if as_json else "''"
    if kind == "str":
        text = f"'\"' || {name} || '\"'" if as_json else name
        return f"coalesce({text}, {null})", f"regexp_full_match({name}, '{_PLAIN}')"
    if kind in ("i8", "i16", "i32", "i64"):
        return f"coalesce(CAST({name} AS VARCHAR), {null})", "true"
    if kind == "ts":
        us = f"epoch_us({name})"
        moment = f"make_timestamp({us})"
        fraction = f"CASE WHEN {us} % 1000000 = 0 THEN '' ELSE strftime({moment}, '.%f') END"
        quote = "'\"'" if as_json else "''"
        text = f"{quote} || strftime({moment}, '%Y-%m-%dT%H:%M:%S') || {fraction} || 'Z' || {quote}"
        return f"coalesce({text}, {null})", f"{us} BETWEEN {_YEARS[0]} AND {_YEARS[1] - 1}"
    if kind == "f64":
        # Python's round(v, n) is correctly rounded, ties to even, as printf('%.nf') is;
        # a double cast to text is its shortest repr, as Python's (+ 0.0: no -0.0).
        text = f"CAST(printf('%.6f', {name}) AS DOUBLE)"
        if as_json and decimals is not None:
            if decimals < 1:
                return None
            text = f"CAST(printf('%.{decimals}f', {text}) AS DOUBLE)"
        text = f"CAST({text} + 0.0 AS VARCHAR)"
        if as_json:  # Rows.records: None for NaN and infinities
            return f"CASE WHEN isfinite({name}) THEN {text} ELSE 'null' END", "true"
        return f"CASE WHEN {name} IS NULL THEN '' ELSE {text} END", f"isfinite({name})"
    return None


_NUMERIC = frozenset({"i8", "i16", "i32", "i64", "i128", "f32", "f64"})
#: Kinds whose values JSON takes as they are.
_AS_IS = frozenset({"i8", "i16", "i32", "i64", "str", "bool"})


def iso(moment: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with ``Z`` (``2026-01-05T14:00:00Z``)."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def round6(value: float) -> float | None:
    return round(value, 6) + 0.0 if math.isfinite(value) else None


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float):
        return round(value, 6) + 0.0 if math.isfinite(value) else None
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, Decimal):  # DuckDB's sum of integers is a DECIMAL(38, 0)
        whole = value.to_integral_value()
        return int(whole) if whole == value else round(float(value), 6) + 0.0
    return value
