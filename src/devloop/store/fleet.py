"""Reading a fleet dataset: a local, read-only mirror in the store's layout, synced by manifest.

The reports read a store folder. A fleet dataset (:mod:`devloop.store.ship`, on S3 or in a
folder) is made one by :func:`sync`, which mirrors its *published* hours, and only those, into a
cache folder laid out as a workspace's store::

    <cache>/metrics/<table>/date=YYYY-MM-DD/hour=H/<host>--<name>.parquet   the hours' files
    <cache>/metrics/_rollups/<kind>/date=YYYY-MM-DD/hour=H/<key>.parquet    every host's rollups
    <cache>/_host_rollups/<kind>/date=YYYY-MM-DD/hour=H/<host>--<key>.parquet   as shipped
    <cache>/_manifests/host=<host>/date=YYYY-MM-DD/hour=H/<digest>.json     what is mirrored
    <cache>/fleet.json                                                      which dataset

``<cache>`` is ``$DEVLOOP_FLEET_CACHE/<key>``, else ``$XDG_CACHE_HOME/devloop/fleet/<key>``
(``~/.cache/...`` by default), ``key`` a hash of the URI and endpoint. Every host's files of an
hour sit side by side in the hour's folder (the views read every live file of a partition, and
the rows carry ``host``); a host's name prefixes its files, so two machines' files never
collide. Each host's rollups of an hour come with it (``_host_rollups``); when every host of a
mirrored hour has them, in this devloop's versions, the sync concatenates them into the hour's
rollups of the mirror's store (every kind is per host: rows of one host never mix with
another's), keyed on the hour's mirrored files as compaction keys a machine's, with the
whole-day files of the days it completes. Reports then read a fleet's closed hours from rollups
as they read a machine's own (the same numbers: :mod:`devloop.store.rollups`); an hour some host
shipped without them, or a ``--host`` filter (the hour's files are then a part of it), is read
from its rows.

What a sync does, with one listing of the fleet's ``_manifests/`` and nothing more when nothing
changed:

* an hour published in a version the mirror does not hold (by the manifest's digest) is
  fetched: the manifest, then each file it lists (a file the mirror holds already, shared with
  the older version, is kept), its size and SHA-256 checked against the manifest, written to a
  dot name and renamed; then the older version's other files go and the manifest is written;
* an hour the mirror holds and the fleet no longer publishes (retention, or a new version being
  shipped) is removed, its manifest first;
* the rollups of every hour fetched or removed are made again from its hosts' (or removed);
* ``hosts`` (globs) restricts both to the matching hosts; other hosts' hours already mirrored
  stay (a report filters them out, :func:`narrow`).

A sync killed anywhere leaves a ``.syncing`` mark; the next one first deletes every file no
mirrored manifest lists, so the mirror holds whole hours only. Syncs of one mirror run one at a
time, and wait for the reports reading it (:func:`reading_mirror`; ``.sync.lock``). Errors are
:class:`~devloop.errors.ShipError` (the fleet cannot be read, a file does not match its
manifest) and :class:`~devloop.errors.UsageError` (a bad URI, no host matching).

:func:`narrow` is the query-time host filter of any store (a mirror or a machine's own): it keeps
the views and the listing to the files of the matching hosts, so every report, rollup choice
and footer shortcut sees those hosts only.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devloop.errors import ShipError, StoreError, UsageError
from devloop.store.db import KINDS, ROLLUPS_DIR, source_key
from devloop.store.layout import Partition
from devloop.store.ship import (
    DEFAULT_JOBS,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    MANIFESTS_DIR,
    TABLES,
    Target,
    _Remote,
    manifest_path,
    parse_target,
)

if TYPE_CHECKING:
    from devloop.store.db import Database
    from devloop.store.layout import FileFacts

#: Names the dataset a mirror holds (and marks a folder as a mirror).
MIRROR_FILE: Final = "fleet.json"
#: Overrides where mirrors are kept.
CACHE_ENV: Final = "DEVLOOP_FLEET_CACHE"
#: Between a mirror file's host and its name in the dataset.
HOST_SEPARATOR: Final = "--"

#: Each host's rollups of a mirrored hour, as shipped (see the module doc).
HOST_ROLLUPS_DIR: Final = "_host_rollups"
#: The mirror's layout: a mirror of another (older devloops mirrored no rollups) is dropped and
#: fetched again by the next sync (it is a cache).
MIRROR_LAYOUT: Final = 2

_SYNCING = ".syncing"
_LOCK = ".sync.lock"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Mirror:
    """What :func:`sync` did, and where the mirror is."""

    uri: str
    folder: Path  # a workspace folder: its store is ``folder / "metrics"``
    hosts: tuple[str, ...]  # the fleet's hosts the sync covered
    fetched: int  # hours fetched (new, or in a new version)
    files: int  # files downloaded
    bytes: int  # bytes downloaded
    removed: int  # hours removed (gone from the fleet, or replaced)
    unchanged: int  # hours the mirror held as published
    seconds: float


def is_uri(text: str) -> bool:
    """Whether ``--store`` names a dataset by URI (``s3://``, ``file://``) rather than a folder."""
    return "://" in text


def target_of(store: str, endpoint_url: str | None = None) -> Target | Path:
    """What ``--store`` names: a fleet dataset (a URI, or a folder holding ``_manifests/``)
    as a :class:`Target`, or a machine's store (a workspace folder holding ``metrics/``, or
    the ``metrics`` folder itself) as the workspace folder. UsageError for anything else."""
    if is_uri(store):
        return parse_target(store, endpoint_url)
    folder = Path(store).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--store: no such folder: {folder}")
    if endpoint_url is not None:
        raise UsageError("--endpoint-url is for s3:// stores only")
    if (folder / MANIFESTS_DIR).is_dir():
        return parse_target(folder.resolve().as_uri())
    if (folder / "metrics").is_dir():
        return folder
    if folder.name == "metrics":
        return folder.parent
    raise UsageError(
        f"--store: {folder} is neither a fleet dataset (no {MANIFESTS_DIR}/) nor a store "
        "(no metrics/)"
    )


def cache_dir(target: Target) -> Path:
    """Where the mirror of ``target`` is kept (see the module doc)."""
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "devloop" / "fleet"
    text = f"{target.scheme}\n{target.path}\n{target.endpoint_url or ''}"
    return root / hashlib.sha256(text.encode()).hexdigest()[:16]


def matching(hosts: Sequence[str], globs: Sequence[str], where: str) -> list[str]:
    """The ``hosts`` matched by any of ``globs`` (fnmatch; all when none), sorted; UsageError
    naming the hosts there are when a glob matches none."""
    if not globs:
        return sorted(hosts)
    chosen: set[str] = set()
    for glob in globs:
        hits = [host for host in hosts if fnmatch.fnmatchcase(host, glob)]
        if not hits:
            known = ", ".join(sorted(hosts)) or "none"
            raise UsageError(f"no host matches {glob!r} in {where} (hosts: {known})")
        chosen.update(hits)
    return sorted(chosen)


# -- syncing ------------------------------------------------------------------------------------


def sync(
    target: Target | str,
    hosts: Sequence[str] = (),
    *,
    cache: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> Mirror:
    """Bring the mirror of the fleet at ``target`` up to date with its published hours (of
    the hosts matching ``hosts``, globs; all by default); the mirror and what was done.

    Raises UsageError for a bad URI or a glob matching no host, ShipError when the fleet
    cannot be read or a file differs from its manifest, StoreError when the cache cannot be
    written.
    """
    started = time.monotonic()
    target = parse_target(target) if isinstance(target, str) else target
    remote = _Remote(target)
    remote.check()
    online = remote.manifests()
    chosen = matching(sorted({host for host, _ in online}), hosts, target.uri)
    wanted = {
        place: digests[0]
        for place, digests in online.items()
        if place[0] in chosen and len(digests) == 1
    }
    folder = cache or cache_dir(target)
    with _locked(folder):
        if _mark(folder, target):
            for name in ("metrics", MANIFESTS_DIR, HOST_ROLLUPS_DIR):
                shutil.rmtree(folder / name, ignore_errors=True)
        killed = (folder / _SYNCING).exists()
        if killed:
            _clean(folder)
        held = _mirrored(folder)
        stale = [
            (place, digest)
            for place, digest in held.items()
            if place[0] in chosen and wanted.get(place) != digest
        ]
        todo = sorted(place for place, digest in wanted.items() if held.get(place) != digest)
        fetched = files = size = 0
        if stale or todo or killed:
            (folder / _SYNCING).touch()
            for place, digest in stale:
                if place not in wanted:
                    _remove_hour(folder, place, digest)
            with ThreadPoolExecutor(jobs, thread_name_prefix="devloop-fleet") as pool:
                results = pool.map(
                    lambda place: _fetch_hour(remote, folder, place, wanted[place], held), todo
                )
                for sent, sent_bytes in results:
                    fetched += 1
                    files += sent
                    size += sent_bytes
            # after a killed sync, every hour's: it may have died before making them
            touched = {p for _, p in held} if killed else set()
            touched |= {place[1] for place in todo} | {p[1] for p, _ in stale}
            _combine_rollups(folder, touched)
            _save_facts(folder)
            (folder / _SYNCING).unlink()
    removed = len(stale)
    return Mirror(
        target.uri, folder, tuple(chosen), fetched, files, size, removed,
        len(wanted) - len(todo), time.monotonic() - started,
    )  # fmt: skip


@contextmanager
def _locked(folder: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """One sync of a mirror at a time, and none while it is read: a sync waits for the others
    and for the readers (:func:`reading_mirror`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / _LOCK, "a+b")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise StoreError(f"cannot write the fleet cache {folder}: {exc}") from exc
    with handle:
        fcntl.flock(handle, mode)
        yield


@contextmanager
def reading_mirror(folder: Path) -> Iterator[None]:
    """Hold the mirror at ``folder`` as it is while the block reads it: another process's
    sync waits (readers do not wait for each other)."""
    with _locked(folder, fcntl.LOCK_SH):
        yield


def _mark(folder: Path, target: Target) -> bool:
    """Name the dataset the mirror holds; True when the mirror held another layout (an older
    devloop's), whose files the caller then drops."""
    data = {"uri": target.uri, "endpoint_url": target.endpoint_url, "layout": MIRROR_LAYOUT}
    path = folder / MIRROR_FILE
    old: object = None
    try:
        if path.is_file():
            old = json.loads(path.read_text())
            if old == data:
                return False
    except (OSError, ValueError):
        pass
    _write(path, json.dumps(data, indent=1).encode())
    return isinstance(old, dict) and old.get("layout") != MIRROR_LAYOUT


def _write(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a dot name and a rename: the file is whole or absent."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(data)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc


def _place_dir(folder: Path, place: tuple[str, Partition]) -> Path:
    host, partition = place
    return folder / MANIFESTS_DIR / f"host={host}" / partition.relative_dir


def _mirrored(folder: Path) -> dict[tuple[str, Partition], str]:
    """The hours the mirror holds (those with a manifest), with their digests."""
    found: dict[tuple[str, Partition], str] = {}
    base = folder / MANIFESTS_DIR
    for manifest in base.glob("host=*/date=*/hour=*/*.json"):
        if manifest.name.startswith("."):
            continue
        host = manifest.parts[-4].removeprefix("host=")
        date = manifest.parts[-3].removeprefix("date=")
        hour = manifest.parts[-2].removeprefix("hour=")
        if hour.isdigit():
            found[(host, Partition(date, int(hour)))] = manifest.stem
    return found


def _local_files(folder: Path, place: tuple[str, Partition], manifest: dict) -> list[Path]:  # type: ignore[type-arg]
    """Where the files a manifest lists live in the mirror (what it does not know, skipped)."""
    paths = []
    for entry in manifest["files"]:
        local = _local_path(folder, place, str(entry["table"]), str(entry["path"]))
        if local is not None:
            paths.append(local)
    return paths


def _local_path(folder: Path, place: tuple[str, Partition], table: str, path: str) -> Path | None:
    """Where a fleet file of ``table`` (or ``_rollups/<kind>``) of the hour ``place`` lives in
    the mirror; None for what this devloop does not read (a table or kind it does not know)."""
    host, partition = place
    name = f"{host}{HOST_SEPARATOR}{path.rpartition('/')[2]}"
    if table in TABLES:
        return folder / "metrics" / table / partition.relative_dir / name
    kind = table.removeprefix(f"{ROLLUPS_DIR}/")
    if kind != table and kind in KINDS:
        return folder / HOST_ROLLUPS_DIR / kind / partition.relative_dir / name
    return None


def _read_manifest(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise ValueError("no files")
        return data
    except (OSError, ValueError) as exc:
        raise StoreError(f"the fleet cache's manifest {path} cannot be read: {exc}") from exc


def _remove_hour(folder: Path, place: tuple[str, Partition], digest: str) -> None:
    """An hour out of the mirror: its manifest first, then its files."""
    manifest = _place_dir(folder, place) / f"{digest}.json"
    listed = _local_files(folder, place, _read_manifest(manifest))
    manifest.unlink(missing_ok=True)
    for path in listed:
        path.unlink(missing_ok=True)
        _prune(path.parent, folder)
    _prune(manifest.parent, folder)


def _prune(directory: Path, folder: Path) -> None:
    """Remove ``directory`` and its parents below ``folder`` while they are empty."""
    while directory != folder and folder in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _fetch_hour(
    remote: _Remote,
    folder: Path,
    place: tuple[str, Partition],
    digest: str,
    held: dict[tuple[str, Partition], str],
) -> tuple[int, int]:
    """Install the published version ``digest`` of an hour; (files, bytes) downloaded."""
    host, partition = place
    rel = manifest_path(host, partition, digest)
    data = remote.get_bytes(rel)
    try:
        manifest = json.loads(data)
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
            raise ValueError(f"format {manifest.get('format')!r} {manifest.get('version')!r}")
        entries = [
            (str(f["path"]), str(f["table"]), int(f["size"]), str(f["sha256"]))
            for f in manifest["files"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShipError(f"{remote.target.uri}: manifest {rel} cannot be read: {exc}") from exc
    old_digest = held.get(place)
    old: list[Path] = []
    if old_digest is not None:
        old_manifest = _place_dir(folder, place) / f"{old_digest}.json"
        old = _local_files(folder, place, _read_manifest(old_manifest))
        old_manifest.unlink(missing_ok=True)  # the mirror holds no version of it now
    sent = sent_bytes = 0
    for path, table, size, sha256 in entries:
        local = _local_path(folder, place, table, path)
        if local is None:
            continue  # of a newer devloop
        if local in old and _size(local) == size:
            continue  # unchanged between the versions, checked when it came
        _download(remote, path, local, size, sha256)
        sent += 1
        sent_bytes += size
    keep = set(_local_files(folder, place, manifest))
    for gone in old:
        if gone not in keep:
            gone.unlink(missing_ok=True)
            _prune(gone.parent, folder)
    _write(_place_dir(folder, place) / f"{digest}.json", data)
    return sent, sent_bytes


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _download(remote: _Remote, rel: str, local: Path, size: int, sha256: str) -> None:
    """Copy the fleet's ``rel`` to ``local`` (a dot name, then a rename), checked against the
    size and SHA-256 its manifest gives."""
    temp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    copied = 0

    def copy() -> None:
        nonlocal copied
        with remote.fs.open_input_stream(remote.path(rel)) as source, open(temp, "wb") as sink:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                copied += len(chunk)

    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        remote._call(f"read {rel}", copy)
        if copied != size or digest.hexdigest() != sha256:
            raise ShipError(
                f"{remote.target.uri}: {rel} does not match its manifest "
                f"({copied} bytes, sha256 {digest.hexdigest()[:12]}…; the manifest says "
                f"{size} bytes, {sha256[:12]}…)"
            )
        os.replace(temp, local)
    except OSError as exc:
        raise StoreError(f"cannot write {local}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def _clean(folder: Path) -> None:
    """After a killed sync: delete every mirror file no mirrored manifest lists, and temps."""
    listed: set[Path] = set()
    for place, digest in _mirrored(folder).items():
        manifest = _place_dir(folder, place) / f"{digest}.json"
        try:
            listed.update(_local_files(folder, place, _read_manifest(manifest)))
        except StoreError:
            manifest.unlink(missing_ok=True)  # half a manifest cannot be: but a hand-edited one
    tables = [folder / "metrics" / table for table in TABLES]
    tables += [folder / HOST_ROLLUPS_DIR / kind for kind in KINDS]
    for directory in tables:
        for path in directory.glob("date=*/hour=*/*"):
            if path not in listed:
                path.unlink(missing_ok=True)
                _prune(path.parent, folder)
    for temp in (folder / MANIFESTS_DIR).glob("**/.*.tmp"):
        temp.unlink(missing_ok=True)


def _combine_rollups(folder: Path, partitions: set[Partition]) -> None:
    """Make the mirror's rollups of ``partitions`` again from their hosts' (see the module
    doc), then the whole-day files of their days; an hour without every host's, removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from devloop.store.columns import ROLLUP_VERSIONS, SCHEMA_VERSION_KEY
    from devloop.store.db import hour_dir
    from devloop.store.layout import scan_partition
    from devloop.store.rollups import conform, drop_hour, write_days, write_entry

    root = folder / "metrics"
    dates = set()
    for partition in sorted(partitions):
        directory = root / "samples" / partition.relative_dir
        live = scan_partition(directory, "samples").live if directory.is_dir() else ()
        hosts = sorted({f.path.name.rpartition(HOST_SEPARATOR)[0] for f in live})
        drop_hour(root, partition)
        dates.add(partition.date)
        if not hosts:
            continue
        key = source_key(live)
        built: dict[str, pa.Table] = {}
        for kind in KINDS:
            shipped = folder / HOST_ROLLUPS_DIR / kind / partition.relative_dir
            parts = []
            for host in hosts:
                found = [
                    path
                    for path in shipped.glob(f"{host}{HOST_SEPARATOR}*.parquet")
                    if path.name.rpartition(HOST_SEPARATOR)[0] == host  # not host--x's
                ]
                if len(found) != 1:
                    break
                try:
                    table = pq.read_table(found[0])
                except (OSError, pa.ArrowException):
                    break
                version = (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY)
                if version != str(ROLLUP_VERSIONS[kind]).encode():
                    break  # another devloop's version: the hour is read from its rows
                parts.append(table.replace_schema_metadata(None))
            if len(parts) != len(hosts):
                break
            try:
                built[kind] = conform(kind, pa.concat_tables(parts))
            except (StoreError, pa.ArrowException):
                break
        if len(built) != len(KINDS):
            continue
        for kind, table in built.items():
            write_entry(table, hour_dir(root, kind, partition) / f"{key}.parquet")
    base = root / ROLLUPS_DIR
    for kind in KINDS:
        for date in sorted(dates):
            entries = sorted((base / kind / f"date={date}").glob("hour=*/*.parquet"))
            if len(entries) > 1:
                write_days(entries)


def _save_facts(folder: Path) -> None:
    """The mirror's ``_facts.json`` (footer facts and digests), so reports open it fast."""
    from devloop.store.layout import save_facts

    if (folder / "metrics").is_dir():
        save_facts(folder / "metrics")


def drop(folder: Path) -> None:
    """Delete a mirror (it is a cache: the next sync fetches everything again)."""
    shutil.rmtree(folder, ignore_errors=True)


# -- the host filter ----------------------------------------------------------------------------


def file_hosts(path: Path, mirror: bool) -> frozenset[str]:
    """The hosts whose rows a store file holds: in a mirror, the host its name starts with;
    elsewhere from its footer (the ``host`` column's statistics, else its values)."""
    if mirror:
        host, separator, _ = path.name.rpartition(HOST_SEPARATOR)
        if separator:
            return frozenset({host})
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
        index = metadata.schema.to_arrow_schema().get_field_index("host")
        if index < 0:
            return frozenset()
        low = high = None
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                break
            low = stats.min if low is None else min(low, stats.min)
            high = stats.max if high is None else max(high, stats.max)
        else:
            if low is not None and low == high:
                return frozenset({str(low)})
            if metadata.num_rows == 0:
                return frozenset()
        column = pq.read_table(path, columns=["host"]).column("host")
        return frozenset(str(value) for value in pc.unique(column).to_pylist())
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"cannot read the hosts of {path}: {exc}") from exc


def narrow(db: Database, globs: Sequence[str]) -> tuple[str, ...]:
    """Keep the views of ``db`` (and its listing) to the rows of the hosts matching
    ``globs``: the files of other hosts leave the views and the listing, the spool's rows of
    other hosts leave its tail. The hosts kept. UsageError when a glob matches no host, or a
    file holds rows of a kept host and of another (it cannot be split by file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from devloop.store.db import Listing, _view_sql

    root = Path(db.root)
    mirror = (root.parent / MIRROR_FILE).is_file()
    hosts_of: dict[Path, frozenset[str]] = {}
    for facts in db.listing.files.values():
        for fact in facts:
            hosts_of[fact.path] = file_hosts(fact.path, mirror)
    tails = {
        table: db.arrow(f"SELECT * FROM _spool_{table}") for table in sorted(db.listing.spooled)
    }
    every = set().union(*hosts_of.values()) if hosts_of else set()
    for tail in tails.values():
        every.update(str(host) for host in pc.unique(tail.column("host")).to_pylist())
    kept = matching(sorted(every), globs, f"the store {root}")
    if len(kept) == len(every):
        return tuple(kept)
    wanted = set(kept)
    files: dict[str, list[FileFacts]] = {}
    for table, facts in db.listing.files.items():
        files[table] = []
        for fact in facts:
            hosts = hosts_of[fact.path]
            if hosts and hosts <= wanted:
                files[table].append(fact)
            elif hosts & wanted:
                raise UsageError(
                    f"{fact.path} holds rows of several hosts ({', '.join(sorted(hosts))}): "
                    "--host cannot pick among them"
                )
    for table, tail in tails.items():
        mask = pc.is_in(tail.column("host"), value_set=pa.array(kept))
        db.connection.unregister(f"_spool_{table}")
        db.connection.register(f"_spool_{table}", tail.filter(mask))
    for table, facts in files.items():
        sql = _view_sql(table, [fact.path for fact in facts], spooled=table in tails)
        db.execute(sql)
    db.listing = Listing(files, db.listing.spooled)
    return tuple(kept)
