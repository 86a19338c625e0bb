"""What the collector reads and what it hands on.

A *source* (``procfs`` on Linux, ``psutil`` elsewhere) reads raw facts about processes; the
:class:`~devloop.collector.collector.Collector` turns them into :class:`Tick` records whose rows
follow the column order of :mod:`devloop.store.schema` (``SAMPLES``, ``PROCESSES``, ``SYSTEM``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, NamedTuple, TypeAlias, TypeVar

from devloop.tags import TAG_AGENT as TAG_AGENT
from devloop.tags import TAG_PROJECT as TAG_PROJECT
from devloop.tags import TAG_RUN as TAG_RUN

#: A ``samples`` row: ts, host, project, agent, pid, start_time, ppid, name, cpu_cores,
#: cpu_seconds, rss_bytes, fds, threads, io_read_bytes, io_write_bytes, state.
SampleRow: TypeAlias = tuple[
    int,
    str,
    str,
    str,
    int,
    int,
    int | None,
    str | None,
    float | None,
    float | None,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    str | None,
]
#: A ``processes`` row: ts, host, pid, start_time, project, agent, ppid, name, cmdline, cwd,
#: username, run_id.
ProcessRow: TypeAlias = tuple[
    int,
    str,
    int,
    int,
    str,
    str,
    int | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
]
#: A ``system`` row: ts, host, cores, cpu_busy_cores, mem_total_bytes, mem_used_bytes,
#: mem_available_bytes.
SystemRow: TypeAlias = tuple[int, str, int, float | None, int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """A project rule: a process belongs to ``(project, agent)`` when its working directory is
    under ``path`` and its command line runs ``command`` (compared by the basename of the
    command's first word, so ``"pytest -x"`` also matches ``python -m pytest``)."""

    project: str
    path: Path
    agent: str
    command: str


@dataclass(frozen=True, slots=True)
class Tick:
    """One sampling round.

    ``samples`` holds one ``samples`` row per recorded process, ``new_processes`` one
    ``processes`` row per process recorded for the first time, ``system`` the host totals.
    Timestamps are microseconds since the epoch, UTC.
    """

    ts_us: int
    samples: list[SampleRow]
    new_processes: list[ProcessRow]
    system: SystemRow


class Identity(NamedTuple):
    """Who a process is: ``(pid, start_us)`` is its identity, pids alone are reused."""

    pid: int
    start_us: int
    ppid: int
    name: str


class Reading(NamedTuple):
    """One sample of a process as a source reads it (cumulative counters, not rates)."""

    ppid: int
    state: str
    cpu_seconds: float  # user + system of the process itself (all its threads, live or exited)
    children_seconds: float  # user + system of its reaped children (cutime + cstime)
    rss_bytes: int
    threads: int
    fds: int | None  # None when not permitted
    io_read_bytes: int | None
    io_write_bytes: int | None
    execed: bool  # its executable changed since the previous reading (comm changed)


class SystemReading(NamedTuple):
    """Cumulative host CPU times and current memory."""

    cpu_busy_seconds: float
    cpu_total_seconds: float
    mem_total_bytes: int
    mem_used_bytes: int
    mem_available_bytes: int


#: What a cheap liveness check of an unrecorded process finds.
Check: TypeAlias = Literal["gone", "same", "exec"]

H = TypeVar("H")


class Source(ABC, Generic[H]):
    """Reads processes and host totals. ``H`` is the source's handle on one process identity.

    Every per-process method returns ``None`` (or ``"gone"``) when the process has vanished, so
    the collector can drop it; none raises for a process that exits mid-read.
    """

    #: "procfs" or "psutil"
    kind: str

    @abstractmethod
    def pids(self) -> list[int]:
        """The pids alive now."""

    @abstractmethod
    def identify(self, pid: int) -> tuple[H, Identity] | None:
        """A handle on the process now holding ``pid``, and its identity."""

    @abstractmethod
    def check(self, handle: H) -> Check:
        """Cheap test that the process is still the same one, and whether it exec'd."""

    @abstractmethod
    def sample(self, handle: H) -> Reading | None:
        """Read the process's counters."""

    @abstractmethod
    def environ_tags(self, handle: H) -> dict[str, str] | None:
        """The DEVLOOP_* variables of its environment; ``None`` when it cannot be read."""

    @abstractmethod
    def cmdline(self, handle: H) -> list[str] | None:
        """Its arguments; ``None`` when unreadable."""

    @abstractmethod
    def cwd(self, handle: H) -> str | None:
        """Its working directory; ``None`` when unreadable."""

    @abstractmethod
    def username(self, handle: H) -> str | None:
        """The name of the user it runs as."""

    @abstractmethod
    def process_name(self, handle: H) -> str | None:
        """Its current name (it changes on exec)."""

    @abstractmethod
    def release(self, handle: H) -> None:
        """Free what the handle holds (kept-open files)."""

    @abstractmethod
    def system(self) -> SystemReading:
        """Host CPU times and memory; raises CollectorError when they cannot be read."""

    @abstractmethod
    def cores(self) -> int:
        """Logical CPUs of the host."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Free what the source holds."""


STATE_NAMES: dict[str, str] = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "x": "dead",
    "K": "wake-kill",
    "W": "waking",
    "I": "idle",
    "P": "parked",
}
"""Linux state letters in words, spelled as psutil spells them so both sources agree."""
