"""Small per-file digests of the store's small tables, so a report need not scan them.

Every report asks which projects and agents the store names (``processes`` and ``limits``) and
each host's core count (``system``). Scanning those tables opens every file of the range (about
1 ms a file, 0.2 s a query over a week of hourly files) for a few dozen distinct values. A digest
holds those values per file:

* ``processes``, ``limits``: the file's distinct ``(project, agent)`` pairs;
* ``system``: per host, the file's newest tick and the core count at it.

Digests are kept with the files' footer facts in ``<root>/_facts.json``
(:mod:`devloop.store.facts`), each valid while its file's size and modification time are
unchanged. Reports read them (:func:`digests`) and compute the missing ones with one query per
table over the files without one, keeping nothing; the writers of whole hours compute and save
them (:func:`save_digests`). The spool tail (rows not yet in Parquet) is read live.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from devloop.errors import StoreError
from devloop.store.facts import Digest, digest_of, load_facts, save_facts

if TYPE_CHECKING:
    import duckdb

    from devloop.store.query import Listing

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
    footer facts (:func:`~devloop.store.facts.save_facts`). For the writers of whole hours."""
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
                listing_sql = ", ".join("'" + key.replace("'", "''") + "'" for key in missing)
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
