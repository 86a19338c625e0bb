"""The watchdog: a process devloop stopped is continued when the devloop that stopped it dies.

SIGKILL cannot be caught, so the enforcer cannot continue what it stopped when it is killed.
Two flocks in the workspace folder bind a small watchdog process to it instead:

``.enforcer.lock``
    held *shared* by every enforcer (:class:`Guard`, armed by the pause journal before it
    writes a process it is about to stop, disarmed when the journal is empty again). The kernel
    drops an flock when the last descriptor of its holder closes, SIGKILL included.
``.watchdog.lock``
    held *exclusively* by the one watchdog of the workspace for as long as it lives (the
    enforcer takes it before it spawns the watchdog and hands the locked descriptor over, so
    there is no moment when a starting watchdog does not hold it and a second one is spawned).

The watchdog (``python -m devloop.core.watchdog``: a session of its own, no agent tags,
/dev/null for stdin, stdout and stderr, the standard library and :mod:`devloop.core.signals`
only) blocks on an *exclusive* flock of ``.enforcer.lock``: it is granted the moment no enforcer
holds the lock, because the last one died or stopped enforcing. It then continues every process
the pause journal lists that is still the one devloop stopped (:meth:`PauseJournal.recover`:
same pid *and* start time, our user, not a zombie; a pid alone is reused), writes one
``recover`` line per agent to the enforcement log, releases both locks and exits. It never
signals a process the journal does not list.

The same exclusive lock decides who may recover a journal at start
(:meth:`Guard.alone`): while an enforcer holds ``.enforcer.lock`` the journal is its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import devloop
from devloop.core.signals import JournalEntry, PauseJournal
from devloop.tags import TAG_AGENT, TAG_PROJECT, TAG_RUN

ENFORCER_LOCK = ".enforcer.lock"
WATCHDOG_LOCK = ".watchdog.lock"


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


class Guard:
    """An enforcer's side of the watchdog: the shared enforcer lock, and the watchdog spawned.

    ``journal`` and ``log`` are the pause journal and the enforcement log the watchdog reads
    and writes; the locks live beside the journal.
    """

    def __init__(self, journal: Path, log: Path) -> None:
        self.journal = Path(journal)
        self.log = Path(log)
        self.lock_path = self.journal.with_name(ENFORCER_LOCK)
        self.watchdog_path = self.journal.with_name(WATCHDOG_LOCK)
        self._fd: int | None = None
        self._spawned: list[int] = []  # watchdogs started here, reaped once they exit
        self._lock = threading.Lock()  # the throttler's thread arms it too

    def arm(self) -> None:
        """Hold the enforcer lock (shared) and make sure a watchdog waits on it. Called before
        a process is journaled, so before it is stopped. Raises OSError."""
        with self._lock:
            if self._fd is None:
                fd = _open(self.lock_path)
                try:
                    # waits while a watchdog or a starting devloop recovers a dead one's journal
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._ensure_watchdog()

    def disarm(self) -> None:
        """Release the enforcer lock (nothing is stopped any more): the watchdog, finding an
        empty journal, exits."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            self._reap()

    @contextmanager
    def alone(self) -> Iterator[bool]:
        """The enforcer lock held exclusively for the block, if no enforcer (nor a watchdog at
        work) holds it now: True, the pause journal is nobody's; False, it is a live one's."""
        try:
            fd = _open(self.lock_path)
        except OSError:
            yield True  # a read-only folder: nobody can have armed a guard there
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _ensure_watchdog(self) -> None:
        fd = _open(self.watchdog_path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # one waits already (spawned here or by another enforcer)
            self._reap()
            self._spawned.append(spawn(fd, self.lock_path, self.journal, self.log))
        finally:
            os.close(fd)  # the watchdog holds its own copy of the locked descriptor

    def _reap(self) -> None:
        for pid in list(self._spawned):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._spawned.remove(pid)


def spawn(watchdog_fd: int, lock: Path, journal: Path, log: Path) -> int:
    """Start a watchdog holding ``watchdog_fd`` (the locked ``.watchdog.lock``); returns its pid.

    posix_spawn, not subprocess: no Popen object to warn when it is collected while the
    watchdog lives on. Raises OSError."""
    target = 4 if watchdog_fd == 3 else 3
    source = str(Path(devloop.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in (TAG_PROJECT, TAG_AGENT, TAG_RUN)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "devloop.core.watchdog", str(target), str(lock),
            str(journal), str(log)]  # fmt: skip
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, watchdog_fd, target),  # dup2 clears close-on-exec on the copy
    ]
    return os.posix_spawn(
        sys.executable, argv, env, file_actions=actions, setsid=True, setsigmask=(),
        setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    )  # fmt: skip


def watch(watchdog_fd: int, lock: Path, journal: Path, log: Path) -> list[JournalEntry]:
    """The watchdog's life: wait until no enforcer holds ``lock``, continue what ``journal``
    still lists, log it, release the locks. Returns the entries continued."""
    try:
        os.ftruncate(watchdog_fd, 0)
        os.pwrite(watchdog_fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is for people and tests; the lock is what counts
    fd = _open(lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            resumed = PauseJournal(journal).recover()
            _log(log, resumed, time.time())
        finally:
            try:
                os.ftruncate(watchdog_fd, 0)
            except OSError:
                pass
            # released before the enforcer lock: an enforcer that arms next sees no watchdog
            # (its shared lock waits for ours) and spawns a new one
            os.close(watchdog_fd)
    finally:
        os.close(fd)
    return resumed


def _log(log: Path, resumed: Sequence[JournalEntry], now: float) -> None:
    """One ``recover`` line per agent, in the enforcement log's shape."""
    by_agent: dict[tuple[str, str], list[int]] = {}
    for entry in resumed:
        by_agent.setdefault((entry.project, entry.agent), []).append(entry.pid)
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    message = "the devloop that stopped it died; continued by the watchdog"
    lines = [
        json.dumps({"ts": stamp, "action": "recover", "scope": "agent", "project": project,
                    "agent": agent, "pids": pids, "metric": None, "value": None, "limit": None,
                    "message": message})
        for (project, agent), pids in by_agent.items()
    ]  # fmt: skip
    if lines:
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        except OSError:
            pass  # the processes are continued; only the line is lost


def main(argv: Sequence[str]) -> int:
    """``python -m devloop.core.watchdog FD LOCK JOURNAL LOG`` (started by :func:`spawn`)."""
    fd, lock, journal, log = int(argv[0]), Path(argv[1]), Path(argv[2]), Path(argv[3])
    watch(fd, lock, journal, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
