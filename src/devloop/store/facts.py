"""What the store knows about its own files, kept in one file, ``<root>/_facts.json``.

Per live data file, keyed by its path, size and modification time:

* its footer facts (:class:`~devloop.store.files.FileFacts`: table, schema version, rows,
  bytes, ``ts`` range, the names it replaces), so a new process connects with one ``stat``
  per unchanged file instead of reading every footer (about 1 ms a file);
* for the small tables ``processes``, ``limits`` and ``system``, its *digest*: the few values
  every report asks of them, computed by :mod:`devloop.store.digests`.

Only the writers of whole hours write the file (compaction and
:func:`~devloop.store.rollups.write_rollups`, under the maintenance lock, through
:func:`save_facts`); connecting and reporting only read it (:func:`load_facts`), so looking at
the store never writes into it. It is derived data: a missing, stale or unreadable file only
costs reading the footers and scanning the small tables it lacks; an entry whose file changed
since is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from devloop.store import files as _files
from devloop.store.columns import TABLE_COLUMNS
from devloop.store.files import FileFacts, scan_partition
from devloop.store.layout import iter_partitions

FACTS_FILE: Final = Path("_facts.json")
#: Bumped when an entry's fields change; a file of another version is ignored.
FACTS_VERSION: Final = 2

#: A digest: its rows of values (see :mod:`devloop.store.digests`).
Digest = list[list[Any]]


#: The entries last read, per file, with the file's size and mtime: connecting and the digests
#: both ask, and the file only changes at compaction.
_read: dict[Path, tuple[tuple[int, int], dict[str, dict[str, Any]]]] = {}


def load_facts(root: Path) -> dict[str, dict[str, Any]]:
    """The entries of ``FACTS_FILE`` (by path; {} when there is none or it is unreadable),
    after seeding the footer cache of :mod:`devloop.store.files` with their facts. The result
    is shared: do not change it."""
    path = root / FACTS_FILE
    try:
        status = path.stat()
    except OSError:
        return {}
    stat = (status.st_size, status.st_mtime_ns)
    known = _read.get(path)
    if known is None or known[0] != stat:
        known = (stat, _parse(path))
        _read[path] = known
    entries = known[1]
    try:
        for key, entry in entries.items():
            if key in _files._facts_cache:
                continue
            facts = FileFacts(
                Path(key),
                str(entry["table"]),
                int(entry["schema_version"]),
                int(entry["rows"]),
                int(entry["bytes"]),
                entry["ts_min_us"],
                entry["ts_max_us"],
                frozenset(entry["sources"]),
            )
            _files._facts_cache[key] = (int(entry["size"]), int(entry["mtime_ns"]), facts)
    except (ValueError, KeyError, TypeError, AttributeError):
        _read[path] = (stat, {})
        return {}
    return entries


def _parse(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != FACTS_VERSION:
            return {}
        return {entry["path"]: entry for entry in data["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def digest_of(entry: Mapping[str, Any] | None, stat: tuple[int, int] | None) -> Digest | None:
    """The digest kept in ``entry`` when it describes the file as it is now (``stat``: its
    size and mtime), else None."""
    if entry is None or stat is None or "digest" not in entry:
        return None
    if (entry.get("size"), entry.get("mtime_ns")) != stat:
        return None
    digest: Digest = entry["digest"]
    return digest


def save_facts(root: Path | str, digests: Mapping[str, Digest] | None = None) -> None:
    """Write ``FACTS_FILE`` for the live files of every table now in the store at ``root``:
    their footer facts and digests (``digests``, by path, else the ones kept for an unchanged
    file), when it differs from the one there. A store that cannot be written keeps none.
    Called by the writers of whole hours, under the maintenance lock, never by a reader;
    removes the temps of killed ones."""
    root = Path(root)
    # Temps of writers killed between writing and renaming (each named by its pid): the
    # callers hold the maintenance lock, so none is being written now.
    for stale in root.glob(f".{FACTS_FILE.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    known = load_facts(root)
    given = digests or {}
    facts = [
        fact
        for table in TABLE_COLUMNS
        for _, directory in iter_partitions(root, table)
        for fact in scan_partition(directory, table).live
    ]
    entries: dict[str, Any] = {}
    for fact in facts:
        key = str(fact.path)
        cached = _files._facts_cache.get(key)
        if cached is None or cached[2] != fact:
            continue
        entry: dict[str, Any] = {
            "path": key,
            "size": cached[0],
            "mtime_ns": cached[1],
            "table": fact.table,
            "schema_version": fact.schema_version,
            "rows": fact.rows,
            "bytes": fact.bytes,
            "ts_min_us": fact.ts_min_us,
            "ts_max_us": fact.ts_max_us,
            "sources": sorted(fact.sources),
        }
        digest = given.get(key)
        if digest is None:
            digest = digest_of(known.get(key), (cached[0], cached[1]))
        if digest is not None:
            entry["digest"] = digest
        entries[key] = entry
    if entries == known:
        return
    target = root / FACTS_FILE
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": FACTS_VERSION, "files": list(entries.values())}))
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
