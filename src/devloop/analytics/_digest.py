"""Small per-file digests of the store's small tables, so a report need not scan them.

Every report asks which projects and agents the store names (``processes`` and ``limits``) and
each host's core count (``system``). Scanning those tables opens every file of the range (about
1 ms a file, 0.2 s a query over a week of hourly files) for a few dozen distinct values. A digest
holds those values per file:

* ``processes``, ``limits``: the file's distinct ``(project, agent)`` pairs;
* ``system``: per host, the file's newest tick and the core count at it.

Digests are kept in ``<root>/_cache/digests.json``, keyed by the file's path, size and
modification time, and computed with one query over the files without one. Reports only read
the file; the writers of whole hours write it (``save``, from ``warm_cache``). The spool tail
(rows not yet in Parquet) is read live. Like every cache here it is derived data: a missing or
stale file only costs a report the scan, and a store that cannot be written works without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import duckdb

    from devloop.store.query import Listing

DIGESTS_FILE: Final = Path("_cache") / "digests.json"
_VERSION: Final = 1

#: Per table, the query over ``{source}`` giving ``({file}, value...)`` rows: ``file`` is the
#: ``filename`` column of a read_parquet, or a constant for the spool tail.
_SQL: Final = {
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
    connection: duckdb.DuckDBPyConnection, root: Path, listing: Listing, *, save: bool = False
) -> dict[str, list[list[Any]]]:
    """Per table of :data:`_SQL`, the digest rows (its value columns) of every live file and
    of the spool tail: read from ``digests.json`` once, the missing ones computed (one query
    per table); with ``save`` (the writers of whole hours only) the file is then saved."""
    cache_path = root / DIGESTS_FILE
    try:
        saved = json.loads(cache_path.read_text())
        entries: dict[str, Any] = saved["files"] if saved.get("version") == _VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = {}
    found: dict[str, list[list[Any]]] = {}
    changed = False
    for table, sql in _SQL.items():
        rows: list[list[Any]] = []
        missing: dict[str, tuple[int, int]] = {}
        for fact in listing.files[table]:
            key = str(fact.path)
            stat = _stat(fact.path)
            entry = entries.get(key)
            if stat is not None and entry is not None and tuple(entry["stat"]) == stat:
                rows.extend(entry["rows"])
            elif stat is not None:
                missing[key] = stat
        if missing:
            listing_sql = ", ".join("'" + key.replace("'", "''") + "'" for key in missing)
            source = f"read_parquet([{listing_sql}], filename = true, union_by_name = true)"
            per_file: dict[str, list[list[Any]]] = {key: [] for key in missing}
            for filename, *values in connection.sql(
                sql.format(file="filename", source=source)
            ).fetchall():
                per_file.setdefault(filename, []).append(values)
            for key, values in per_file.items():
                rows.extend(values)
                if key in missing:
                    entries[key] = {"stat": list(missing[key]), "rows": values}
            changed = True
        if table in listing.spooled:
            tail = sql.format(file="'spool'", source=f"_spool_{table}")
            rows.extend(list(values) for _, *values in connection.sql(tail).fetchall())
        found[table] = rows
    if save and changed:
        live = {str(fact.path) for facts in listing.files.values() for fact in facts}
        _save(cache_path, entries, live)
    return found


def _save(path: Path, entries: dict[str, Any], live: set[str]) -> None:
    kept = {key: entry for key, entry in entries.items() if key in live}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _VERSION, "files": kept}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
