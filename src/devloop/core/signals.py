"""Stopping and continuing process trees, safely.

A pid alone names nobody: pids are reused. Every process devloop may signal is held as a
:class:`ProcessRef`, its pid and its start time in clock ticks since boot (``/proc/PID/stat``
field 22, the same field the collector keeps), and is signalled only after :func:`verify` has
read that the process now holding the pid is still the one it was, that it runs as our user,
and that it is devloop's: tagged with the project's ``DEVLOOP_PROJECT`` (children inherit the
tag) or started by this devloop process.

Stopped trees are written to a :class:`PauseJournal` *before* the first SIGSTOP, so that a devloop
killed with SIGKILL leaves a record that its watchdog (:mod:`devloop.core.watchdog`), or else the
next start, reads to SIGCONT them (:meth:`PauseJournal.recover`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devloop._atomic import atomic_write_text
from devloop.tags import TAG_PROJECT

_PROC = "/proc"
_LINUX = sys.platform.startswith("linux") and os.path.exists(f"{_PROC}/self/stat")


@dataclass(frozen=True, slots=True, order=True)
class ProcessRef:
    """One process: ``start`` is its start time in clock ticks since boot on Linux (in
    microseconds since the epoch elsewhere); it never changes while the process lives."""

    pid: int
    start: int


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the name is in parentheses and may itself contain ") "
    return data[data.rfind(b")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The start token of the process now holding ``pid``; None if there is none."""
    if _LINUX:
        fields = _stat_fields(pid)
        return int(fields[19]) if fields is not None else None
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1_000_000)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def ref(pid: int) -> ProcessRef | None:
    """A reference to the process holding ``pid`` now."""
    start = process_start(pid)
    return ProcessRef(pid, start) if start is not None else None


def _state(pid: int) -> str | None:
    if _LINUX:
        fields = _stat_fields(pid)
        return fields[0].decode() if fields is not None else None
    import psutil

    try:
        return str(psutil.Process(pid).status())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"{_PROC}/{pid}").st_uid
    except OSError:
        pass
    if _LINUX:
        return None
    import psutil

    try:
        return int(psutil.Process(pid).uids().real)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _project_tag(pid: int) -> str | None:
    if _LINUX:
        try:
            with open(f"{_PROC}/{pid}/environ", "rb") as f:
                data = b"\0" + f.read()
        except OSError:
            return None
        marker = b"\0" + TAG_PROJECT.encode() + b"="
        at = data.find(marker)
        if at < 0:
            return None
        end = data.find(b"\0", at + len(marker))
        return data[at + len(marker) : end if end >= 0 else None].decode("utf-8", "replace")
    import psutil

    try:
        return psutil.Process(pid).environ().get(TAG_PROJECT)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _ppid(pid: int) -> int | None:
    if _LINUX:
        fields = _stat_fields(pid)
        return int(fields[1]) if fields is not None else None
    import psutil

    try:
        return int(psutil.Process(pid).ppid())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same(process: ProcessRef) -> bool:
    """Is the process holding ``process.pid`` the one we saw, and ours to touch at all: our
    user's, not a zombie, not pid 1 nor ourselves?"""
    if process.pid <= 1 or process.pid == os.getpid():
        return False
    if process_start(process.pid) != process.start:
        return False
    if _owner(process.pid) != os.getuid():
        return False
    return _state(process.pid) not in ("Z", "X", "zombie", "dead")


def verify(
    process: ProcessRef,
    *,
    project: str | None = None,
    started: Iterable[ProcessRef] = (),
    parents: Iterable[int] = (),
) -> bool:
    """May devloop stop ``process``?

    Yes only when it is :func:`same` (the same process, not a reuse of its pid; our user's) and
    devloop's: tagged for ``project`` (when given), in ``started``, or a child of one of
    ``parents``, pids already verified in the same walk down a tree (a child inherits the tag,
    but between its fork and the end of its exec its environment cannot be read yet).
    """
    if not same(process):
        return False
    if process in set(started):
        return True
    if project is not None and _project_tag(process.pid) == project:
        return True
    return bool(parents) and _ppid(process.pid) in set(parents)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (Linux ``/proc/PID/task/*/children``; psutil elsewhere)."""
    if _LINUX:
        found: list[int] = []
        try:
            tasks = os.listdir(f"{_PROC}/{pid}/task")
        except OSError:
            return []
        for task in tasks:
            try:
                with open(f"{_PROC}/{pid}/task/{task}/children", "rb") as f:
                    found.extend(int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
        return found
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def tree(roots: Iterable[ProcessRef]) -> list[ProcessRef]:
    """``roots`` and every descendant alive now, parents before children, each once."""
    seen: dict[int, ProcessRef] = {}
    # a root whose pid now belongs to another process has no tree of ours
    queue = [r for r in roots if process_start(r.pid) == r.start]
    while queue:
        process = queue.pop(0)
        if process.pid in seen:
            continue
        seen[process.pid] = process
        for pid in children(process.pid):
            child = ref(pid)
            if child is not None and child.pid not in seen:
                queue.append(child)
    return list(seen.values())


def send(
    processes: Sequence[ProcessRef],
    sig: int,
    *,
    project: str | None = None,
    started: Iterable[ProcessRef] = (),
) -> list[ProcessRef]:
    """Send ``sig`` to each of ``processes`` that :func:`verify` allows; returns those signalled.

    A process that exits between the check and the signal is skipped. Between the check and the
    signal a pid cannot be reused by a process of ours unless the process died and a new one got
    the same pid within microseconds; the window is as small as reading three /proc files.
    """
    started = set(started)
    return [p for p in processes if verify(p, project=project, started=started) and _kill(p, sig)]


def _kill(process: ProcessRef, sig: int) -> bool:
    try:
        os.kill(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_tree(
    roots: Sequence[ProcessRef],
    *,
    project: str | None = None,
    started: Iterable[ProcessRef] = (),
) -> list[ProcessRef]:
    """SIGSTOP ``roots`` and all their descendants, parents first, then again for any child
    forked before its parent stopped; returns every process stopped.

    Each root must pass :func:`verify`; a descendant also passes as the child of a process
    stopped in this walk."""
    started = set(started)
    stopped: dict[ProcessRef, None] = {}
    for _ in range(5):
        todo = [p for p in tree(roots) if p not in stopped]
        if not todo:
            break
        for process in todo:
            parents = [p.pid for p in stopped]
            if verify(process, project=project, started=started, parents=parents):
                if _kill(process, signal.SIGSTOP):
                    stopped[process] = None
    return list(stopped)


def continue_all(processes: Sequence[ProcessRef]) -> list[ProcessRef]:
    """SIGCONT ``processes`` (children before parents); returns those continued.

    Only processes devloop stopped are given here (verified when they were stopped, or read
    from the journal devloop wrote then), so each is checked to be :func:`same`, not for its
    tag: a child that cleared its environment must not stay stopped for it."""
    return [p for p in reversed(processes) if same(p) and _kill(p, signal.SIGCONT)]


# --- the journal ---------------------------------------------------------------------------


def boot_id() -> str:
    """An id of this boot of the machine (start ticks only mean something within one)."""
    try:
        return Path(f"{_PROC}/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return str(int(psutil.boot_time()))


@dataclass(frozen=True)
class JournalEntry:
    """A process devloop holds stopped: whose it is, and since when."""

    pid: int
    start: int
    project: str
    agent: str
    since: float

    @property
    def process(self) -> ProcessRef:
        return ProcessRef(self.pid, self.start)


class PauseJournal:
    """The processes devloop holds stopped, on disk, written before each SIGSTOP.

    One JSON file, replaced atomically on every change: ``{"version": 1, "boot_id", "owner",
    "entries": [{pid, start, project, agent, since}]}``.
    """

    VERSION = 1

    def __init__(
        self,
        path: Path,
        *,
        arm: Callable[[], None] | None = None,
        disarm: Callable[[], None] | None = None,
    ) -> None:
        """``arm`` is called before new entries are written (so before their processes are
        stopped), ``disarm`` once the journal is empty again: the enforcer's hold on its
        watchdog (:class:`devloop.core.watchdog.Guard`)."""
        self.path = Path(path)
        self._boot = boot_id()
        self._entries: dict[ProcessRef, JournalEntry] = {}
        self._lock = threading.RLock()  # the throttler's thread writes it too
        self._arm = arm
        self._disarm = disarm

    def add(self, project: str, agent: str, processes: Iterable[ProcessRef]) -> None:
        with self._lock:
            self._add(project, agent, processes)

    def _add(self, project: str, agent: str, processes: Iterable[ProcessRef]) -> None:
        now = time.time()
        new = [p for p in dict.fromkeys(processes) if p not in self._entries]
        if not new:
            return
        if self._arm is not None:
            self._arm()
        for process in new:
            self._entries[process] = JournalEntry(process.pid, process.start, project, agent, now)
        self._write()

    def remove(self, processes: Iterable[ProcessRef]) -> None:
        with self._lock:
            self._remove(processes)

    def _remove(self, processes: Iterable[ProcessRef]) -> None:
        changed = False
        for process in processes:
            if self._entries.pop(process, None) is not None:
                changed = True
        if changed:
            self._write()

    def _write(self) -> None:
        if not self._entries:
            self.path.unlink(missing_ok=True)
            if self._disarm is not None:
                self._disarm()
            return
        data = {
            "version": self.VERSION,
            "boot_id": self._boot,
            "owner": os.getpid(),
            "entries": [asdict(e) for e in self._entries.values()],
        }
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")

    def read_left_over(self) -> list[JournalEntry]:
        """Entries a previous devloop left (empty when there is no journal, it is unreadable,
        or it was written before the last boot)."""
        try:
            data: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("boot_id") != self._boot:
            return []
        entries = []
        for item in data.get("entries", []):
            try:
                entries.append(
                    JournalEntry(
                        int(item["pid"]),
                        int(item["start"]),
                        str(item["project"]),
                        str(item["agent"]),
                        float(item["since"]),
                    )  # fmt: skip
                )
            except (KeyError, TypeError, ValueError):
                continue
        return entries

    def recover(self) -> list[JournalEntry]:
        """SIGCONT every process a previous devloop left stopped that is still the same process
        (and tagged for the project the entry names), then clear the journal. Returns the
        entries whose process was continued."""
        with self._lock:
            return self._recover()

    def _recover(self) -> list[JournalEntry]:
        resumed = []
        for entry in self.read_left_over():
            if continue_all([entry.process]):
                resumed.append(entry)
        self._entries.clear()
        self.path.unlink(missing_ok=True)
        return resumed


def ref_at(pid: int, start_us: int) -> ProcessRef | None:
    """A reference to the process holding ``pid`` if it is the one the collector saw start at
    ``start_us`` (microseconds since the epoch), else None: the pid was reused or is gone."""
    start = process_start(pid)
    if start is None:
        return None
    if _LINUX:
        from devloop.collector.procfs import boot_us

        now_us = boot_us() + start * 1_000_000 // os.sysconf("SC_CLK_TCK")
    else:
        now_us = start
    return ProcessRef(pid, start) if now_us == start_us else None
