"""Exclusive locks on a store root: one writer at a time, one maintenance job at a time.

``fcntl.flock`` on a lock file that holds the holder's pid (written best effort: on a full disk
the lock is taken all the same, see :func:`_write_pid`). The kernel drops the lock when the
holder's file descriptor closes, including on SIGKILL, so a dead collector never blocks the next.
The file itself is never deleted: deleting a lock file races with a process that just opened it.

A collector's conversion child holds a copy of the writer lock (convert.py) and dies with the
collector, a moment after it. So when the pid in the file is no longer alive, the lock belongs
to such a dying child, and taking it waits for it (a few seconds at most) instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from devloop._proc import pid_alive
from devloop.errors import StoreError, StoreLockedError
from devloop.store.layout import LOCK_FILE, MAINTENANCE_LOCK_FILE

#: How long to wait for a lock whose holder is dead (see the module doc).
ORPHAN_WAIT_SECONDS: Final = 5.0


class StoreLock:
    """A held flock on ``<root>/<name>``; ``release()`` (or the process ending) frees it."""

    def __init__(self, root: Path, name: str, holder: str, doing: str) -> None:
        """Take the lock or raise StoreLockedError naming the holder's pid.

        ``holder`` and ``doing`` word the error: "another {holder} (pid N) is {doing} <root>".
        """
        self.path = root / name
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            _flock_or_wait_for_orphan(fd)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "pid unknown"
            raise StoreLockedError(f"another {holder} ({who}) is {doing} {root}") from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc}") from exc
        _write_pid(fd)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def fileno(self) -> int:
        """The locked descriptor. A child process handed a copy holds the lock too: the kernel
        frees a flock when the last descriptor sharing it closes, so the lock outlives
        :meth:`release` (which only closes ours) until that child exits."""
        if self._fd is None:
            raise StoreError(f"the lock {self.path} is released")
        return self._fd

    def release(self) -> None:
        """Free the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next reader of the file
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _flock_or_wait_for_orphan(fd: int) -> None:
    """flock ``fd``; BlockingIOError if a live process holds it."""
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid = _read_pid(fd)
            if pid is None or pid_alive(pid) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _write_pid(fd: int) -> None:
    """Put our pid in the held lock file, best effort: the flock is the lock, the pid only
    words errors and tells a dead holder's child apart. On a full disk the write may fail
    (a file emptied by its last release has no block left to write into); the lock holds
    all the same, and a second writer is told "pid unknown"."""
    text = f"{os.getpid()}\n".encode()
    try:
        # Overwrite first, then cut: the file keeps its block, so a full disk rarely refuses.
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
    except OSError:
        try:
            os.ftruncate(fd, 0)  # no other process's pid left behind
        except OSError:
            pass


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def writer_lock(root: Path) -> StoreLock:
    """The lock every StoreWriter (and standalone recovery) holds while it owns the spool."""
    return StoreLock(root, LOCK_FILE, "collector", "recording into")


def maintenance_lock(root: Path) -> StoreLock:
    """The lock compaction and retention hold, so two of them never rewrite the same hour."""
    return StoreLock(root, MAINTENANCE_LOCK_FILE, "compaction or retention", "running on")
