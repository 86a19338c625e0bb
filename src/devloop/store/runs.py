"""The run journal: how a launcher hands a finished run to whoever records the workspace.

A *run* is one command devloop started as an agent (``devloop run``, a ``devloop watch`` round,
a stress-test load). Its launcher is the parent that reaps it, so only the launcher knows the
run's exact CPU and max RSS (``wait4``); only the workspace's recorder (the holder of the store
lock) may write the store. The journal joins the two with two small JSON files per run in
``<metrics>/_runs/``::

    <run_id>.started   written when the run starts; the launcher holds an flock on it
    <run_id>.ended     written (temp file, rename) when the launcher has reaped the run

The recorder looks at the folder every tick (:func:`pending`): an ``.ended`` run becomes its
``runs`` row; a ``.started`` file nobody holds locked belongs to a launcher that died (the
kernel drops an flock with its holder, so no pid is ever guessed) and becomes an ``incomplete``
row. The row is written as its own spool segment named after the run (``run-<run_id>.seg``), so
publishing it twice is impossible: a name already in the spool, or already converted to
Parquet, is skipped (:func:`devloop.store.writer.StoreWriter.publish`). Only then are the
journal files removed, so a crash at any point loses nothing and duplicates nothing.

A launcher pays for two small files and no fsync: a run is never lost to a SIGKILL (the files
are in the page cache); after a power cut the ``.started`` file survives and the run is recorded
as incomplete. This module imports only the standard library: ``devloop run`` loads it on its
fast path.
"""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, dataclasses and pathlib cost ~40 ms of imports on this path
    from typing import Any, Final

RUNS_DIR: Final = "_runs"
STARTED: Final = ".started"
ENDED: Final = ".ended"
RUN_SEGMENT_PREFIX: Final = "run-"

#: Triggers a run may have.
TRIGGERS: Final = ("manual", "watch", "stress")


def runs_dir(metrics_dir: str | os.PathLike[str]) -> str:
    """The journal folder of a store."""
    return os.path.join(metrics_dir, RUNS_DIR)


def new_run_id() -> str:
    """A unique, time-ordered run id: microseconds since the epoch in hex, then 8 random hex."""
    return f"{time.time_ns() // 1000:013x}-{os.urandom(4).hex()}"


class _Record:
    """A record of named fields that round-trips through JSON (a dataclass without the import)."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name))
        if fields:
            raise TypeError(f"unknown fields {sorted(fields)}")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(tuple(map(repr, self.to_json().values())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items())
        return f"{type(self).__name__}({fields})"


class RunStart(_Record):
    """What a launcher knows when a run starts."""

    __slots__ = ("run_id", "project", "agent", "trigger", "command", "cwd", "queued_us",
                 "started_us", "launcher_pid", "log_path")  # fmt: skip
    run_id: str
    project: str
    agent: str
    trigger: str  # manual, watch, stress
    command: list[str]
    cwd: str
    queued_us: int  # asked to run (µs since the epoch)
    started_us: int
    launcher_pid: int
    log_path: str | None


class RunEnd(_Record):
    """What the launcher learns when it reaps the run's root process."""

    __slots__ = ("pid", "start_ticks", "ended_us", "exit_code", "signal", "cpu_user_seconds",
                 "cpu_system_seconds", "max_rss_bytes")  # fmt: skip
    pid: int
    #: The root's start in clock ticks after boot (/proc/PID/stat field 22): with the pid, its
    #: identity. Ticks, not a time: each process reads the boot time with its own rounding.
    start_ticks: int | None
    ended_us: int
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    cpu_user_seconds: float
    cpu_system_seconds: float
    max_rss_bytes: int


class PendingRun:
    """A run found in the journal: ``end`` is None when its launcher died before reaping it."""

    __slots__ = ("start", "end", "paths")

    def __init__(self, start: RunStart, end: RunEnd | None, paths: tuple[str, ...]) -> None:
        self.start = start
        self.end = end
        self.paths = paths

    @property
    def complete(self) -> bool:
        return self.end is not None


class ActiveRun:
    """A run whose ``.started`` file this process holds locked; :meth:`finish` ends it."""

    def __init__(self, directory: str, start: RunStart, fd: int) -> None:
        self.directory = directory
        self.start = start
        self._fd: int | None = fd

    @property
    def run_id(self) -> str:
        return self.start.run_id

    def finish(self, end: RunEnd) -> None:
        """Write ``<run_id>.ended`` (temp, rename), then drop ``.started`` and its lock."""
        final = os.path.join(self.directory, f"{self.run_id}{ENDED}")
        temp = os.path.join(self.directory, f".{self.run_id}{ENDED}.tmp")
        payload = _dumps({"start": self.start.to_json(), "end": end.to_json()})
        try:
            _write_new(temp, payload.encode())
            os.replace(temp, final)
            _unlink(os.path.join(self.directory, f"{self.run_id}{STARTED}"))
        finally:
            self.release()

    def abandon(self) -> None:
        """The run never started: remove its ``.started`` file and let go."""
        _unlink(os.path.join(self.directory, f"{self.run_id}{STARTED}"))
        self.release()

    def release(self) -> None:
        """Let go of the lock without ending the run (it is then recorded as incomplete)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _dumps(value: object) -> str:
    """JSON text of plain values (dict, list, str, int, float, bool, None), without the json
    module: importing it (and re, and enum) costs a launcher 10 ms of CPU per run."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote(text: str) -> str:
    out = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " " or "\ud800" <= char <= "\udfff":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def begin(metrics_dir: str | os.PathLike[str], start: RunStart) -> ActiveRun:
    """Write ``<run_id>.started`` and hold an flock on it for as long as the run lasts.

    The descriptor is close-on-exec, so the agent does not inherit (and keep) the lock.
    Raises OSError when the folder cannot be written.
    """
    directory = runs_dir(metrics_dir)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{start.run_id}{STARTED}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, _dumps({"start": start.to_json()}).encode())
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    return ActiveRun(directory, start, fd)


def _load(path: str) -> tuple[RunStart | None, RunEnd | None]:
    import json  # the recorder reads the journal; launchers only write it

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        start = RunStart(**data["start"])
        end = RunEnd(**data["end"]) if "end" in data else None
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return start, end


def _held(path: str) -> bool | None:
    """Whether some process holds the flock of ``path``; None when the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if we got it
    return False


def pending(metrics_dir: str | os.PathLike[str]) -> tuple[list[PendingRun], list[str]]:
    """Runs ready to record, oldest first, and journal files that cannot be read.

    Ready: every ``.ended`` run, and every ``.started`` run whose launcher is gone (nobody holds
    its lock). A ``.started`` file is written under its lock, so it is never read half-done.
    """
    directory = runs_dir(metrics_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], []
    found: list[PendingRun] = []
    unreadable: list[str] = []
    ended = {name.removesuffix(ENDED) for name in names if name.endswith(ENDED)}
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(ENDED):
            start, end = _load(path)
            if start is None or end is None:
                unreadable.append(path)
                continue
            started = os.path.join(directory, f"{start.run_id}{STARTED}")
            found.append(PendingRun(start, end, (path, started)))
        elif name.endswith(STARTED):
            if name.removesuffix(STARTED) in ended or _held(path) is not False:
                continue
            start, _ = _load(path)
            if start is None:
                unreadable.append(path)  # a launcher that died before writing its start
                continue
            found.append(PendingRun(start, None, (path,)))
    return found, unreadable


def forget(run: PendingRun) -> None:
    """Remove a recorded run's journal files."""
    for path in run.paths:
        _unlink(path)


def forget_journal(metrics_dir: str | os.PathLike[str], run_id: str) -> None:
    """Remove the journal files of ``run_id`` (its row is in the store)."""
    directory = runs_dir(metrics_dir)
    for suffix in (ENDED, STARTED):
        _unlink(os.path.join(directory, f"{run_id}{suffix}"))


def segment_id(run_id: str) -> str:
    """The spool segment id a run's row is published under (one name per run: exactly once)."""
    return f"{RUN_SEGMENT_PREFIX}{run_id}"
