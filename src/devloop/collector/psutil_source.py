"""The portable path: the same readings through psutil (macOS, BSD, Windows, or Linux on request).

Slower than :mod:`devloop.collector.procfs` (psutil opens and parses files per call), but the
numbers agree: start times are psutil's create time, CPU times come from the same kernel counters.
"""

from __future__ import annotations

import psutil

from devloop.collector.model import (
    TAG_AGENT,
    TAG_PROJECT,
    TAG_RUN,
    Check,
    Identity,
    Reading,
    Source,
    SystemReading,
)
from devloop.errors import CollectorError


class PsutilHandle:
    """A psutil Process plus the name last seen, to notice an exec."""

    __slots__ = ("process", "last_name")

    def __init__(self, process: psutil.Process, name: str) -> None:
        self.process = process
        self.last_name = name


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


class PsutilSource(Source[PsutilHandle]):
    """Processes and host totals through psutil."""

    kind = "psutil"

    def __init__(self) -> None:
        self._cores = psutil.cpu_count(logical=True) or 1

    def pids(self) -> list[int]:
        """The pids alive now."""
        try:
            return psutil.pids()
        except (OSError, psutil.Error) as exc:
            raise CollectorError(f"cannot list processes: {exc}") from exc

    def identify(self, pid: int) -> tuple[PsutilHandle, Identity] | None:
        """A psutil Process for ``pid`` and its identity."""
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                start_us = round(process.create_time() * 1_000_000)
                ppid = process.ppid()
                name = process.name()
        except (psutil.Error, OSError):
            return None
        return PsutilHandle(process, name), Identity(pid, start_us, ppid, name)

    def check(self, handle: PsutilHandle) -> Check:
        """``is_running`` compares the create time, so a reused pid reads as gone."""
        try:
            if not handle.process.is_running():
                return "gone"
            name = handle.process.name()
        except (psutil.Error, OSError):
            return "gone"
        if name != handle.last_name:
            handle.last_name = name
            return "exec"
        return "same"

    def sample(self, handle: PsutilHandle) -> Reading | None:
        """cpu_times, memory_info, threads, fds, io counters, status and ppid in one oneshot."""
        process = handle.process
        try:
            with process.oneshot():
                if not process.is_running():
                    return None
                times = process.cpu_times()
                rss = process.memory_info().rss
                threads = process.num_threads()
                state = process.status()
                ppid = process.ppid()
                name = process.name()
                fds: int | None
                try:
                    fds = process.num_fds()
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    fds = None
                io_read: int | None = None
                io_write: int | None = None
                try:
                    io = process.io_counters()
                    io_read = _optional_int(getattr(io, "read_bytes", None))
                    io_write = _optional_int(getattr(io, "write_bytes", None))
                except (psutil.AccessDenied, psutil.ZombieProcess, AttributeError):
                    pass  # not permitted, or not available on this platform
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            return None
        execed = name != handle.last_name
        handle.last_name = name
        return Reading(
            ppid=ppid,
            state=str(state),
            cpu_seconds=times.user + times.system,
            children_seconds=times.children_user + times.children_system,
            rss_bytes=rss,
            threads=threads,
            fds=fds,
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            execed=execed,
        )

    def environ_tags(self, handle: PsutilHandle) -> dict[str, str] | None:
        """The DEVLOOP_* tags of the environment; None when unreadable."""
        try:
            env = handle.process.environ()
        except (psutil.Error, OSError):
            return None
        return {key: env[key] for key in (TAG_PROJECT, TAG_AGENT, TAG_RUN) if key in env}

    def cmdline(self, handle: PsutilHandle) -> list[str] | None:
        """Its arguments."""
        try:
            return handle.process.cmdline()
        except (psutil.Error, OSError):
            return None

    def cwd(self, handle: PsutilHandle) -> str | None:
        """Its working directory."""
        try:
            return handle.process.cwd()
        except (psutil.Error, OSError):
            return None

    def username(self, handle: PsutilHandle) -> str | None:
        """The user it runs as."""
        try:
            return handle.process.username()
        except (psutil.Error, OSError, KeyError):
            return None

    def process_name(self, handle: PsutilHandle) -> str | None:
        """Its current name."""
        try:
            return handle.process.name()
        except (psutil.Error, OSError):
            return None

    def release(self, handle: PsutilHandle) -> None:
        """Nothing is kept open per process."""

    def system(self) -> SystemReading:
        """Host CPU times and memory from psutil."""
        try:
            times = psutil.cpu_times()
            memory = psutil.virtual_memory()
        except (psutil.Error, OSError) as exc:
            raise CollectorError(f"cannot read host totals: {exc}") from exc
        idle = times.idle + getattr(times, "iowait", 0.0)
        # guest time is already counted in user and nice on Linux
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return SystemReading(
            total - idle, total, memory.total, memory.total - memory.available, memory.available
        )

    def cores(self) -> int:
        """Logical CPUs."""
        return self._cores
