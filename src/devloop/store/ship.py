"""Shipping closed hours to a fleet dataset on object storage, exactly once.

A fleet dataset holds the compacted hours of many machines' stores, one folder per table, host
and hour, through :mod:`pyarrow.fs` (S3 and S3-compatible stores, or a local folder)::

    <prefix>/<table>/host=<host>/date=YYYY-MM-DD/hour=H/c-<id>.parquet        a table's hour
    <prefix>/_rollups/<kind>/host=<host>/date=YYYY-MM-DD/hour=H/<key>.parquet  its rollups
    <prefix>/_manifests/host=<host>/date=YYYY-MM-DD/hour=H/<digest>.json       published

An hour ships when it is closed (before the current hour) and compacted: every table's folder
of the hour holds one ``c-`` file and, when it has ``samples``, the rollups of that file
(compaction writes them only when no row of the hour is left in the spool). Nothing else goes:
not the spool, not the current hour, not the whole-day rollup files (readers can rebuild them).

Exactly once (docs/fleet.md has the argument at length):

* A remote file's name is its local name, so sending it again overwrites the same object; a
  file already there with its size is not sent again (S3 makes an object visible only whole;
  on a local folder a file is written under a dot name and renamed).
* The hour's *manifest* lists its files with their sizes and SHA-256. It is written after all
  of them, and after every other file of the hour's folders is deleted, as one object whose
  name is the hour's digest (a hash of its files' names and sizes, as the rollups' key is). An
  hour without a manifest is absent, whatever files it has; readers take only the files its
  manifest lists (:func:`published`).
* A published hour whose digest equals the local one is skipped. One that changed (late rows,
  compacted again) first loses its manifest, so readers see the old hour or nothing, never a
  mix, until the new one is published.

A ship killed anywhere leaves published hours whole and unpublished ones invisible; the next
ship sends what is missing of them and publishes. One ship at a time per store
(``<root>/.ship.lock``). Retention on the fleet side (:func:`ship`'s ``retain_seconds``, or
:func:`expire`) deletes an old hour's manifest first, then its folders.

pyarrow is imported only when a filesystem is opened, so :func:`parse_target` is cheap: the
collector checks ``collect --ship-to`` with it and ships in its compaction child.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from devloop import __version__
from devloop.errors import ShipError, StoreError, UsageError
from devloop.store.columns import TABLE_COLUMNS
from devloop.store.db import KINDS, ROLLUPS_DIR, source_key, whole_parquet
from devloop.store.layout import Partition, data_files, iter_partitions

if TYPE_CHECKING:
    from devloop.store.lock import StoreLock

MANIFESTS_DIR: Final = "_manifests"
MANIFEST_FORMAT: Final = "devloop-fleet-hour"
MANIFEST_VERSION: Final = 1
#: Held while shipping, so two ships of one store never publish over each other.
SHIP_LOCK_FILE: Final = ".ship.lock"
#: Parallel transfers by default (each a request to the store).
DEFAULT_JOBS: Final = 8

_CHUNK = 1 << 20
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{32}\.json$")
#: The tables, in the store's order.
TABLES: Final = tuple(TABLE_COLUMNS)

#: ``progress(hours_done, hours_total, bytes_done)`` while :func:`ship` publishes hours.
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Target:
    """Where a fleet dataset lives: a parsed ``--to`` URI."""

    uri: str  # as given, for messages
    scheme: str  # "s3" or "file"
    path: str  # inside the filesystem: "bucket/prefix" or "/absolute/folder"
    endpoint_url: str | None = None  # an S3-compatible store's http(s)://host:port


def parse_target(uri: str, endpoint_url: str | None = None) -> Target:
    """The target named by ``uri`` (``s3://bucket/prefix`` or ``file:///folder``) and, for S3,
    ``endpoint_url`` (default: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, else AWS).
    Raises UsageError for anything else. Touches no network and no pyarrow."""
    hint = "expected s3://BUCKET/PREFIX or file:///ABSOLUTE/FOLDER"
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise UsageError(f"bad URI {uri!r}: no ?query or #fragment ({hint})")
    if parts.scheme == "s3":
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket or "@" in bucket or ":" in bucket:
            raise UsageError(f"bad URI {uri!r}: no bucket name ({hint})")
        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint is not None:
            _check_endpoint(endpoint)
        return Target(uri, "s3", f"{bucket}/{prefix}" if prefix else bucket, endpoint)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"bad URI {uri!r}: a file URI names no host ({hint})")
        if not parts.path.startswith("/") or parts.path.strip("/") == "":
            raise UsageError(f"bad URI {uri!r}: not an absolute folder ({hint})")
        if endpoint_url is not None:
            raise UsageError("--endpoint-url is for s3:// targets only")
        return Target(uri, "file", "/" + parts.path.strip("/"))
    raise UsageError(f"bad URI {uri!r}: {hint}")


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise UsageError(f"bad endpoint URL {endpoint!r}: expected http(s)://HOST[:PORT]")


def check_host(host: str) -> str:
    """``host`` if it can name a ``host=`` folder; UsageError otherwise."""
    if not _HOST_RE.match(host):
        raise UsageError(f"bad host name {host!r}: letters, digits, '.', '_' and '-' only")
    return host


# -- the local side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HourFile:
    """One file of a shippable hour."""

    path: str  # relative to the fleet's prefix
    local: Path
    size: int
    table: str  # the table, or "_rollups/<kind>"
    rows: int | None  # a table file's rows (its footer); None for a rollup


@dataclass(frozen=True)
class LocalHour:
    """A closed, compacted hour of the store, as it would be published."""

    partition: Partition
    files: tuple[HourFile, ...]
    digest: str  # of its files' remote names and sizes: what the manifest is named by

    @property
    def bytes(self) -> int:
        """Bytes of its files."""
        return sum(file.size for file in self.files)


@dataclass(frozen=True)
class Waiting:
    """A closed hour that does not ship yet, and why."""

    partition: Partition
    reason: str


def hour_dir(host: str, partition: Partition, table: str) -> str:
    """``<table>/host=<host>/date=YYYY-MM-DD/hour=H`` (``table`` may be ``_rollups/<kind>``)."""
    return f"{table}/host={host}/{partition.relative_dir}"


def manifest_path(host: str, partition: Partition, digest: str) -> str:
    """Where the manifest of an hour with ``digest`` is published, relative to the prefix."""
    return f"{hour_dir(host, partition, MANIFESTS_DIR)}/{digest}.json"


def hour_digest(files: Iterable[HourFile]) -> str:
    """The digest of an hour made of ``files``: their remote names and sizes, hashed. Names are
    unique (``c-<time>-<pid>``, rollup keys hash their sources), so equal digests are equal
    hours, without reading a byte."""
    lines = sorted(f"{file.path} {file.size}" for file in files)
    text = "\n".join([f"{MANIFEST_FORMAT} {MANIFEST_VERSION}", *lines])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def local_hours(
    root: Path, host: str, now: datetime | None = None
) -> tuple[list[LocalHour], list[Waiting]]:
    """The closed hours of the store at ``root`` that can ship (compacted, with rollups), oldest
    first, and the closed hours that cannot yet. Reads footers and folders, never the spool."""
    from devloop.store.layout import scan_partition

    current = Partition.of_datetime(now or datetime.now(UTC))
    folders: dict[Partition, list[tuple[str, Path]]] = {}
    for table in TABLES:
        for partition, directory in iter_partitions(root, table):
            if partition < current:
                folders.setdefault(partition, []).append((table, directory))
    ready: list[LocalHour] = []
    waiting: list[Waiting] = []
    for partition in sorted(folders):
        files: list[HourFile] = []
        reason = None
        for table, directory in folders[partition]:
            live = scan_partition(directory, table).live
            if not live:
                continue
            if len(live) != 1 or not live[0].path.name.startswith("c-"):
                reason = f"{table} not compacted yet"
                break
            fact = live[0]
            size = _size(fact.path)
            if size is None:
                reason = f"{table} changed while listing"
                break
            name = f"{hour_dir(host, partition, table)}/{fact.path.name}"
            files.append(HourFile(name, fact.path, size, table, fact.rows))
            if table == "samples":
                reason = _add_rollups(root, host, partition, source_key(live), files)
                if reason is not None:
                    break
        if reason is not None:
            waiting.append(Waiting(partition, reason))
        elif files:
            ready.append(LocalHour(partition, tuple(files), hour_digest(files)))
    return ready, waiting


def _add_rollups(
    root: Path, host: str, partition: Partition, key: str, files: list[HourFile]
) -> str | None:
    """Add the hour's rollups to ``files``; why the hour waits when they are not all there."""
    for kind in KINDS:
        entry = root / ROLLUPS_DIR / kind / partition.relative_dir / f"{key}.parquet"
        size = _size(entry) if whole_parquet(entry) else None
        if size is None:
            return "samples not rolled up yet"
        name = f"{hour_dir(host, partition, f'{ROLLUPS_DIR}/{kind}')}/{entry.name}"
        files.append(HourFile(name, entry, size, f"{ROLLUPS_DIR}/{kind}", None))
    return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot stat {path}: {exc}") from exc


def store_host(root: Path) -> str:
    """The host the store's rows name (its newest ``system`` file's), else this machine's
    name. UsageError when that file names several hosts."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for table in ("system", "samples"):
        for _, directory in reversed(iter_partitions(root, table)):
            for path in reversed(data_files(directory)):
                try:
                    column = pq.read_table(path, columns=["host"]).column("host")
                    hosts = sorted(str(value) for value in pc.unique(column).to_pylist())
                except (OSError, pa.ArrowException, KeyError):
                    continue  # a file being replaced, or not ours: the next one
                if len(hosts) == 1:
                    return hosts[0]
                if hosts:
                    raise UsageError(
                        f"{path} holds rows of several hosts ({', '.join(hosts)}): give --host"
                    )
    return socket.gethostname()


# -- the remote side --------------------------------------------------------------------------


class _Remote:
    """The fleet's filesystem below its prefix: every pyarrow call, and the one place where
    pyarrow's errors become ShipError."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.local = target.scheme == "file"
        self.base = target.path.rstrip("/") or "/"
        self.fs = self._call("open", lambda: _filesystem(target))

    def _call(self, doing: str, action: Callable[[], Any]) -> Any:
        import pyarrow as pa

        try:
            return action()
        except (OSError, pa.ArrowException) as exc:
            raise ShipError(f"{self.target.uri}: cannot {doing}: {self._reason(exc)}") from exc

    def _reason(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        if "NETWORK_CONNECTION" in text or "curlCode" in text:
            detail = text.rpartition(": ")[2] or text
            return f"cannot reach {self.target.endpoint_url or 'S3'} ({detail})"
        denied = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                  "ExpiredToken", "InvalidToken", "credentials", "HTTP status 403")  # fmt: skip
        if any(word in text for word in denied):
            return (
                "access denied: check the credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials)"
            )
        return text

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (relative to the prefix)."""
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def check(self) -> None:
        """ShipError unless the prefix can be used: the bucket exists, or the folder is one."""
        from pyarrow.fs import FileType

        where = self.base.split("/")[0] if not self.local else self.base
        info = self._call("look up the target", lambda: self.fs.get_file_info(where))
        if not self.local and info.type != FileType.Directory:
            raise ShipError(f"{self.target.uri}: bucket {where!r} does not exist")
        if self.local and info.type == FileType.File:
            raise ShipError(f"{self.target.uri}: {where} is a file, not a folder")

    def files(self, rel_dir: str) -> dict[str, int]:
        """Every file below ``rel_dir`` (relative paths) with its size; {} when none."""
        from pyarrow.fs import FileSelector, FileType

        selector = FileSelector(self.path(rel_dir), recursive=True, allow_not_found=True)
        infos = self._call(
            f"list {rel_dir or 'the prefix'}", lambda: self.fs.get_file_info(selector)
        )
        cut = len(self.base.rstrip("/")) + 1
        return {info.path[cut:]: info.size for info in infos if info.type == FileType.File}

    def put_file(self, local: Path, rel: str, size: int) -> str:
        """Copy the local file to ``rel``; its SHA-256. _Changed when it is gone or resized
        (compaction or retention got there first)."""
        digest = hashlib.sha256()

        def copy() -> None:
            final = self.path(rel)
            temp = self._temp(final)
            try:
                source = open(local, "rb")
            except FileNotFoundError as exc:
                raise _Changed(f"{local} is gone") from exc
            with source, self.fs.open_output_stream(temp) as sink:
                copied = 0
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    copied += len(chunk)
            if copied != size:
                self.fs.delete_file(temp)
                raise _Changed(f"{local} changed size")
            if temp != final:
                self.fs.move(temp, final)

        self._call(f"write {rel}", copy)
        return digest.hexdigest()

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` as one object (a whole file or none)."""

        def write() -> None:
            final = self.path(rel)
            temp = self._temp(final)
            with self.fs.open_output_stream(temp) as sink:
                sink.write(data)
            if temp != final:
                self.fs.move(temp, final)

        self._call(f"write {rel}", write)

    def _temp(self, final: str) -> str:
        """Where to write ``final`` first: S3 shows an object only when whole, so there it is
        ``final``; a local file is written under a dot name (readers skip it) and renamed."""
        if not self.local:
            return final
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        return f"{parent}/.{name}.{os.getpid()}-{threading.get_ident()}.tmp"

    def get_bytes(self, rel: str) -> bytes:
        """The content of ``rel``."""

        def read() -> bytes:
            with self.fs.open_input_stream(self.path(rel)) as source:
                data: bytes = source.read()
            return data

        result: bytes = self._call(f"read {rel}", read)
        return result

    def delete(self, rels: Iterable[str]) -> None:
        """Delete files (one already gone is fine)."""
        from pyarrow.fs import FileType

        for rel in rels:
            path = self.path(rel)

            def remove(path: str = path) -> None:
                try:
                    self.fs.delete_file(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    if self.fs.get_file_info(path).type != FileType.NotFound:
                        raise

            self._call(f"delete {rel}", remove)

    def delete_dir(self, rel: str) -> None:
        """Delete a folder and everything below it (one already gone is fine)."""
        from pyarrow.fs import FileSelector, FileType

        def remove() -> None:
            path = self.path(rel)
            if self.fs.get_file_info(path).type == FileType.NotFound:
                return
            self.fs.delete_dir(path)
            if self.local:  # S3 has no folders; a local one left empty goes too
                parent = path.rpartition("/")[0]
                while parent.startswith(self.base + "/"):
                    if self.fs.get_file_info(FileSelector(parent)):
                        break
                    self.fs.delete_dir(parent)
                    parent = parent.rpartition("/")[0]

        self._call(f"delete {rel}", remove)

    def manifests(self, host: str | None = None) -> dict[tuple[str, Partition], list[str]]:
        """Per published (host, hour), the digests of its manifests (one, unless a ship of
        another machine of the same name raced ours), of every host or of ``host``."""
        below = MANIFESTS_DIR if host is None else f"{MANIFESTS_DIR}/host={host}"
        found: dict[tuple[str, Partition], list[str]] = {}
        for rel in self.files(below):
            place = _place(rel)
            name = rel.rpartition("/")[2]
            if place is not None and _DIGEST_RE.match(name):
                found.setdefault(place, []).append(name.removesuffix(".json"))
        return found


def _filesystem(target: Target) -> Any:
    """The pyarrow filesystem of ``target``, credentials from the AWS chain (environment,
    profile, web identity, instance role) as the AWS SDK finds them."""
    import pyarrow.fs as pafs

    if target.scheme == "file":
        filesystem, _ = pafs.FileSystem.from_uri(target.uri)
        return filesystem
    options: dict[str, Any] = {
        "allow_delayed_open": True,  # a small file is one PutObject, not a multipart upload
        "connect_timeout": 5.0,
        "request_timeout": 60.0,
    }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if target.endpoint_url is not None:
        endpoint = urlsplit(target.endpoint_url)
        options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
        region = region or "us-east-1"
    else:
        region = region or pafs.resolve_s3_region(target.path.split("/")[0])
    return pafs.S3FileSystem(region=region, **options)


def _place(rel: str) -> tuple[str, Partition] | None:
    """The (host, hour) of a remote file, from its ``host=``, ``date=`` and ``hour=`` folders."""
    parts = rel.split("/")
    for index, part in enumerate(parts[:-3]):
        if part.startswith("host="):
            date, hour = parts[index + 1], parts[index + 2]
            if date.startswith("date=") and hour.startswith("hour=") and hour[5:].isdigit():
                return part[5:], Partition(date[5:], int(hour[5:]))
            return None
    return None


class _Changed(Exception):
    """A local file changed while it was being sent: its hour waits for the next ship."""


# -- shipping ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippedHour:
    """One hour published (or, in a dry run, that would be)."""

    partition: Partition
    files: int
    bytes: int
    sent: int  # files sent (the others were there already, from a ship killed before)
    replaced: bool  # another version of the hour was published before


@dataclass(frozen=True)
class DroppedHour:
    """One hour of the fleet deleted by retention (or, in a dry run, that would be)."""

    host: str
    partition: Partition
    published: bool  # it had a manifest (else: files of a ship that never published it)


@dataclass(frozen=True)
class ShipReport:
    """What a ship did."""

    target: str
    host: str
    shipped: tuple[ShippedHour, ...]
    unchanged: int  # hours published before, as they are now
    waiting: tuple[Waiting, ...]  # closed hours not ready to ship
    dropped: tuple[DroppedHour, ...]  # fleet hours deleted by retention
    seconds: float
    dry_run: bool

    @property
    def files(self) -> int:
        """Files of the hours shipped."""
        return sum(hour.files for hour in self.shipped)

    @property
    def bytes(self) -> int:
        """Bytes of the hours shipped."""
        return sum(hour.bytes for hour in self.shipped)


def ship(
    root: Path | str,
    target: Target | str,
    *,
    host: str | None = None,
    now: datetime | None = None,
    retain_seconds: float | None = None,
    dry_run: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> ShipReport:
    """Publish every closed, compacted hour of the store at ``root`` that the fleet ``target``
    lacks or holds in another version, under ``host=<host>`` (default: the host the store's
    rows name, :func:`store_host`). With ``retain_seconds``, hours that ended longer ago than
    that are not shipped, and are deleted from the fleet, every host's (:func:`expire`).
    ``dry_run`` writes nothing and reports what would be done. ``jobs`` transfers run at once.

    Raises UsageError for a bad target or host, ShipError when the fleet's store cannot be
    reached or written, StoreLockedError when another ship of this store is running.
    """
    started = time.monotonic()
    root = Path(root)
    target = parse_target(target) if isinstance(target, str) else target
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    if not root.is_dir():
        raise StoreError(f"no metrics store at {root}")
    moment = now or datetime.now(UTC)
    host = check_host(host or store_host(root))
    cutoff = moment - timedelta(seconds=retain_seconds) if retain_seconds is not None else None
    remote = _Remote(target)
    remote.check()
    lock = None if dry_run else _ship_lock(root)
    try:
        ready, waiting = local_hours(root, host, moment)
        if cutoff is not None:
            ready = [hour for hour in ready if hour.partition.end > cutoff]
        online = {partition: digests for (_, partition), digests in remote.manifests(host).items()}
        todo = [hour for hour in ready if online.get(hour.partition) != [hour.digest]]
        if dry_run:
            shipped = [
                ShippedHour(hour.partition, len(hour.files), hour.bytes, len(hour.files),
                            hour.partition in online)
                for hour in todo
            ]  # fmt: skip
        else:
            shipped, changed = _send(remote, host, todo, online, jobs, progress)
            waiting += changed
        dropped = expire(remote, cutoff, dry_run=dry_run) if cutoff is not None else []
    finally:
        if lock is not None:
            lock.release()
    return ShipReport(
        target.uri, host, tuple(shipped), len(ready) - len(todo),
        tuple(sorted(waiting, key=lambda w: w.partition)), tuple(dropped),
        time.monotonic() - started, dry_run,
    )  # fmt: skip


def _ship_lock(root: Path) -> StoreLock:
    from devloop.store.lock import StoreLock

    return StoreLock(root, SHIP_LOCK_FILE, "ship", "shipping")


def _send(
    remote: _Remote,
    host: str,
    todo: Sequence[LocalHour],
    published: dict[Partition, list[str]],
    jobs: int,
    progress: Progress | None,
) -> tuple[list[ShippedHour], list[Waiting]]:
    """Publish ``todo``, a day at a time: its old manifests deleted, the day's folders listed,
    every missing file sent, then per hour its other files deleted and its manifest written."""
    shipped: list[ShippedHour] = []
    changed: list[Waiting] = []
    days: dict[str, list[LocalHour]] = {}
    for hour in todo:
        days.setdefault(hour.partition.date, []).append(hour)
    done = sent_bytes = 0
    if progress is not None:
        progress(0, len(todo), 0)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="devloop-ship") as pool:
        for date, hours in days.items():
            # Readers see an hour being replaced as absent, never as a mix of two versions.
            remote.delete(
                manifest_path(host, hour.partition, digest)
                for hour in hours
                for digest in published.get(hour.partition, ())
            )
            there = _listing(remote, pool, host, date)
            uploads: list[tuple[LocalHour, list[tuple[HourFile, Future[str]]]]] = []
            for hour in hours:
                files = [
                    (file, pool.submit(_send_file, remote, file, there.get(file.path)))
                    for file in hour.files
                ]
                uploads.append((hour, files))
            try:
                for hour, files in uploads:
                    try:
                        sums = [(file, future.result()) for file, future in files]
                    except _Changed as exc:
                        changed.append(Waiting(hour.partition, f"changed while shipping: {exc}"))
                        continue
                    _publish(remote, host, hour, sums, there)
                    sent = sum(1 for file in hour.files if there.get(file.path) != file.size)
                    shipped.append(ShippedHour(hour.partition, len(hour.files), hour.bytes, sent,
                                               hour.partition in published))  # fmt: skip
                    done += 1
                    sent_bytes += hour.bytes
                    if progress is not None:
                        progress(done, len(todo), sent_bytes)
            except BaseException:
                for _, files in uploads:
                    for _, future in files:
                        future.cancel()
                raise
    return shipped, changed


def _listing(remote: _Remote, pool: ThreadPoolExecutor, host: str, date: str) -> dict[str, int]:
    """Every file of ``host`` on ``date`` in the fleet, over all tables and rollup kinds."""
    folders = [*TABLES, *(f"{ROLLUPS_DIR}/{kind}" for kind in KINDS)]
    listings = [
        pool.submit(remote.files, f"{folder}/host={host}/date={date}") for folder in folders
    ]
    there: dict[str, int] = {}
    for listing in listings:
        there.update(listing.result())
    return there


def _send_file(remote: _Remote, file: HourFile, size_there: int | None) -> str:
    """Send one file unless it is there with its size (sent whole by an earlier ship: the name
    fixes the content); its SHA-256 either way."""
    if size_there != file.size:
        return remote.put_file(file.local, file.path, file.size)
    digest = hashlib.sha256()
    try:
        with open(file.local, "rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise _Changed(f"{file.local} is gone") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {file.local}: {exc}") from exc
    return digest.hexdigest()


def _publish(
    remote: _Remote,
    host: str,
    hour: LocalHour,
    sums: Sequence[tuple[HourFile, str]],
    there: dict[str, int],
) -> None:
    """Delete whatever else the hour's folders hold (files of an older version, a killed
    ship's temporaries), then write the manifest: from then on the hour is visible."""
    mine = {file.path for file in hour.files}
    prefixes = tuple(
        f"{hour_dir(host, hour.partition, folder)}/"
        for folder in (*TABLES, *(f"{ROLLUPS_DIR}/{kind}" for kind in KINDS))
    )
    remote.delete(rel for rel in there if rel.startswith(prefixes) and rel not in mine)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "host": host,
        "date": hour.partition.date,
        "hour": hour.partition.hour,
        "digest": hour.digest,
        "shipped_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "devloop": __version__,
        "files": [
            {"path": file.path, "table": file.table, "size": file.size, "sha256": sha256}
            | ({"rows": file.rows} if file.rows is not None else {})
            for file, sha256 in sums
        ],
    }
    data = json.dumps(manifest, indent=1).encode()
    remote.put_bytes(manifest_path(host, hour.partition, hour.digest), data)


# -- reading and retention --------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a published hour, as its manifest lists it."""

    path: str  # relative to the fleet's prefix
    table: str  # the table, or "_rollups/<kind>"
    size: int
    sha256: str
    rows: int | None


@dataclass(frozen=True)
class RemoteHour:
    """One published hour of one host: what its manifest says."""

    host: str
    partition: Partition
    digest: str
    files: tuple[RemoteFile, ...]


def published(target: Target | str, host: str | None = None) -> list[RemoteHour]:
    """The published hours of the fleet at ``target`` (of ``host``, or of every host), by host
    then hour: the only files a reader should read. An hour without a manifest, or with two (two
    machines of one name shipping at once), is absent."""
    target = parse_target(target) if isinstance(target, str) else target
    remote = _Remote(target)
    remote.check()
    found: list[RemoteHour] = []
    for (name, partition), digests in sorted(remote.manifests(host).items()):
        if len(digests) != 1:
            continue
        rel = manifest_path(name, partition, digests[0])
        try:
            data = json.loads(remote.get_bytes(rel))
            if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"format {data.get('format')!r} {data.get('version')!r}")
            files = tuple(
                RemoteFile(str(f["path"]), str(f["table"]), int(f["size"]), str(f["sha256"]),
                           None if f.get("rows") is None else int(f["rows"]))
                for f in data["files"]
            )  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ShipError(f"{target.uri}: manifest {rel} cannot be read: {exc}") from exc
        found.append(RemoteHour(name, partition, digests[0], files))
    return found


def expire(
    remote: _Remote | Target | str, cutoff: datetime, *, dry_run: bool = False
) -> list[DroppedHour]:
    """Delete from the fleet every hour, of every host, that ended at or before ``cutoff``:
    its manifest first (the hour is gone for readers at once), then its folders. Also the
    files of such hours that were never published (a ship killed, then never run again)."""
    if not isinstance(remote, _Remote):
        remote = _Remote(parse_target(remote) if isinstance(remote, str) else remote)
        remote.check()
    manifests: dict[tuple[str, Partition], list[str]] = {}
    folders: dict[tuple[str, Partition], set[str]] = {}
    for rel in remote.files(""):
        place = _place(rel)
        if place is None or place[1].end > cutoff:
            continue
        if rel.startswith(f"{MANIFESTS_DIR}/"):
            manifests.setdefault(place, []).append(rel)
        folders.setdefault(place, set()).add(rel.rpartition("/")[0])
    dropped = [DroppedHour(host, partition, (host, partition) in manifests)
               for host, partition in sorted(folders)]  # fmt: skip
    if not dry_run:
        for place in sorted(folders):
            remote.delete(manifests.get(place, ()))
            for folder in sorted(folders[place]):
                remote.delete_dir(folder)
    return dropped
