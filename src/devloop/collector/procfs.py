"""The Linux fast path: read ``/proc`` directly.

Per process the source keeps ``/proc/PID/stat`` (and, once the process is recorded,
``/proc/PID/io`` and the ``/proc/PID/fd`` directory) open and re-reads it with ``pread`` (or
``fstat``) every tick: an open costs three times a
read. A kept-open file is bound to the process it was opened for, not to the pid: once that
process is reaped the read fails with ESRCH, so a reused pid can never be mistaken for the old
process. Kept-open files are capped at half the soft RLIMIT_NOFILE so the collector never starves
its host program; beyond the cap a handle opens, reads and closes each time and compares the start
time instead.

Open-file counts come from the size of ``/proc/PID/fd`` where the kernel reports it (Linux 6.2
and later), which avoids listing the directory; otherwise from listing it.
"""

from __future__ import annotations

import functools
import os
import pwd
import resource

from devloop.collector.model import (
    STATE_NAMES,
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

_PROC = "/proc"
_O_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_STAT_MAX = 4096  # a stat line is ~350 bytes even with a 15-byte comm of ')' and spaces
_ENV_PROJECT = b"\0" + TAG_PROJECT.encode() + b"="
_ENV_AGENT = b"\0" + TAG_AGENT.encode() + b"="
_ENV_RUN = b"\0" + TAG_RUN.encode() + b"="
_ENV_MARKERS = ((TAG_PROJECT, _ENV_PROJECT), (TAG_AGENT, _ENV_AGENT), (TAG_RUN, _ENV_RUN))
_STATES = {letter.encode(): word for letter, word in STATE_NAMES.items()}


class ProcfsHandle:
    """A kept-open view of one process identity."""

    __slots__ = ("pid", "start_ticks", "stat_fd", "io_fd", "io_denied", "comm", "fd_path", "fd_dir")

    def __init__(self, pid: int, start_ticks: bytes, stat_fd: int, comm: bytes) -> None:
        self.pid = pid
        self.start_ticks = start_ticks  # raw field 22, compared when no file is kept open
        self.stat_fd = stat_fd  # -1: over the kept-open budget, open per read
        self.io_fd = -1
        self.io_denied = False
        self.comm = comm
        self.fd_path = f"{_PROC}/{pid}/fd"
        self.fd_dir = -1  # kept-open /proc/PID/fd, whose size is the number of open files


def _read_all(path: str) -> bytes:
    fd = os.open(path, _O_FLAGS)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _split_stat(data: bytes) -> tuple[bytes, list[bytes]]:
    """The comm and the fields after it; comm may hold spaces and ')' so split at the last ')'."""
    right = data.rfind(b")")
    return data[data.find(b"(") + 1 : right], data[right + 2 :].split()


def _parse_io(parts: list[bytes]) -> tuple[int | None, int | None]:
    values = dict(zip(parts[::2], parts[1::2], strict=False))
    read, write = values.get(b"read_bytes:"), values.get(b"write_bytes:")
    return (int(read) if read else None), (int(write) if write else None)


@functools.cache
def boot_us() -> int:
    """The boot time in microseconds since the epoch, read once per process: the kernel
    recomputes ``btime`` from the wall clock on every read, so it may shift by a second, and
    start times (identity) must never change. Everything in this process that turns start ticks
    into start times (the source, devloop.core.signals) uses this one value."""
    with open(f"{_PROC}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return int(line.split()[1]) * 1_000_000
    raise CollectorError(f"no btime line in {_PROC}/stat")


def start_us_of(start_ticks: int) -> int:
    """A process's start (/proc/PID/stat field 22, clock ticks after boot) in µs since the
    epoch, by :func:`boot_us`: the identity every part of this process gives that process."""
    return boot_us() + start_ticks * 1_000_000 // os.sysconf("SC_CLK_TCK")


class ProcfsSource(Source[ProcfsHandle]):
    """Processes and host totals from ``/proc`` (Linux only)."""

    kind = "procfs"

    def __init__(self) -> None:
        if not os.path.exists(f"{_PROC}/self/stat"):
            raise CollectorError("the procfs source needs Linux /proc (use source='psutil')")
        self._clk_tck = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        try:
            boot_us()  # read now, where a failure is reported; identities use it from here on
            self._stat_fd = os.open(f"{_PROC}/stat", _O_FLAGS)
            self._meminfo_fd = os.open(f"{_PROC}/meminfo", _O_FLAGS)
        except OSError as exc:
            raise CollectorError(f"cannot read {_PROC}: {exc}") from exc
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._fd_budget = (soft // 2) if soft != resource.RLIM_INFINITY else 1 << 16
        self._fds_kept = 0
        self._fd_count_by_stat = self._kernel_counts_fds()
        self._users: dict[int, str] = {}
        self._cores = os.cpu_count() or 1

    @staticmethod
    def _kernel_counts_fds() -> bool:
        # Linux >= 6.2 reports the number of open files as the size of /proc/PID/fd; older
        # kernels report 0, and this process has at least stdin..stderr or its /proc files open
        try:
            return os.stat(f"{_PROC}/self/fd").st_size > 0
        except OSError:
            return False

    # -- kept-open files -------------------------------------------------------------------

    def _open_kept(self, path: str, flags: int = 0) -> int:
        """Open ``path`` to keep; -1 when over budget. Raises OSError when it cannot be opened."""
        if self._fds_kept >= self._fd_budget:
            return -1
        fd = os.open(path, _O_FLAGS | flags)
        self._fds_kept += 1
        return fd

    def _close_kept(self, fd: int) -> None:
        if fd >= 0:
            os.close(fd)
            self._fds_kept -= 1

    def _read_stat(self, handle: ProcfsHandle) -> bytes | None:
        if handle.stat_fd >= 0:
            try:
                data = os.pread(handle.stat_fd, _STAT_MAX, 0)
            except OSError:  # ESRCH: the process was reaped
                return None
            return data or None
        try:
            data = _read_all(f"{_PROC}/{handle.pid}/stat")
        except OSError:
            return None
        if not data or _split_stat(data)[1][19] != handle.start_ticks:
            return None  # the pid now belongs to another process
        return data

    # -- Source ----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The pids alive now (a listing of /proc)."""
        try:
            names = os.listdir(_PROC)
        except OSError as exc:
            raise CollectorError(f"cannot list {_PROC}: {exc}") from exc
        return [int(name) for name in names if name.isdigit()]

    def identify(self, pid: int) -> tuple[ProcfsHandle, Identity] | None:
        """Open the process's stat file and read who it is."""
        path = f"{_PROC}/{pid}/stat"
        try:
            fd = self._open_kept(path)
        except OSError:
            return None
        try:
            data = os.pread(fd, _STAT_MAX, 0) if fd >= 0 else _read_all(path)
        except OSError:
            data = b""
        if not data:
            self._close_kept(fd)
            return None
        comm, fields = _split_stat(data)
        start_ticks = fields[19]
        handle = ProcfsHandle(pid, start_ticks, fd, comm)
        start_us = start_us_of(int(start_ticks))
        name = comm.decode("utf-8", "replace")
        return handle, Identity(pid, start_us, int(fields[1]), name)

    def check(self, handle: ProcfsHandle) -> Check:
        """Still the same process? ``"exec"`` when its comm changed since the last look."""
        data = self._read_stat(handle)
        if data is None:
            return "gone"
        comm = data[data.find(b"(") + 1 : data.rfind(b")")]
        if comm != handle.comm:
            handle.comm = comm
            return "exec"
        return "same"

    def sample(self, handle: ProcfsHandle) -> Reading | None:
        """Counters from stat, io and the fd directory."""
        # the hot path of the collector: one pread, one stat and one more pread per process
        if handle.stat_fd >= 0:
            try:
                data = os.pread(handle.stat_fd, _STAT_MAX, 0)
            except OSError:  # ESRCH: the process was reaped
                return None
            if not data:
                return None
        else:
            found = self._read_stat(handle)
            if found is None:
                return None
            data = found
        right = data.rfind(b")")
        comm = data[data.find(b"(") + 1 : right]
        f = data[right + 2 :].split()
        execed = comm != handle.comm
        if execed:
            handle.comm = comm
        fds: int | None
        try:
            if handle.fd_dir >= 0:
                fds = os.fstat(handle.fd_dir).st_size
            elif self._fd_count_by_stat:
                fds = os.stat(handle.fd_path).st_size
                # keep the directory open too: fstat skips the path walk
                handle.fd_dir = self._open_kept(handle.fd_path, os.O_DIRECTORY)
            else:
                fds = len(os.listdir(handle.fd_path))
        except OSError:  # another user's process, or it just exited
            fds = None
        io_read: int | None = None
        io_write: int | None = None
        if handle.io_fd >= 0:
            try:
                parts = os.pread(handle.io_fd, 1024, 0).split()
                # the kernel's fixed order: rchar wchar syscr syscw read_bytes write_bytes ...
                if parts[8] == b"read_bytes:" and parts[10] == b"write_bytes:":
                    io_read, io_write = int(parts[9]), int(parts[11])
                else:
                    io_read, io_write = _parse_io(parts)
            except PermissionError:
                handle.io_denied = True
            except (OSError, IndexError):
                pass
        elif not handle.io_denied:
            io_read, io_write = self._read_io(handle)
        tck = self._clk_tck
        return Reading(
            int(f[1]),
            _STATES.get(f[0], "unknown"),
            (int(f[11]) + int(f[12])) / tck,
            (int(f[13]) + int(f[14])) / tck,
            int(f[21]) * self._page,
            int(f[17]),
            fds,
            io_read,
            io_write,
            execed,
        )

    def _read_io(self, handle: ProcfsHandle) -> tuple[int | None, int | None]:
        path = f"{_PROC}/{handle.pid}/io"
        try:
            if handle.io_fd < 0:
                handle.io_fd = self._open_kept(path)
            data = os.pread(handle.io_fd, 1024, 0) if handle.io_fd >= 0 else _read_all(path)
        except PermissionError:
            # only the owner (or root) may read it; do not retry every tick
            handle.io_denied = True
            return None, None
        except OSError:
            return None, None
        return _parse_io(data.split())

    def environ_tags(self, handle: ProcfsHandle) -> dict[str, str] | None:
        """DEVLOOP_PROJECT, DEVLOOP_AGENT and DEVLOOP_RUN_ID from /proc/PID/environ; None when
        unreadable."""
        try:
            data = b"\0" + _read_all(f"{_PROC}/{handle.pid}/environ")
        except OSError:
            return None
        tags: dict[str, str] = {}
        for key, marker in _ENV_MARKERS:
            at = data.find(marker)
            if at >= 0:
                start = at + len(marker)
                end = data.find(b"\0", start)
                tags[key] = data[start : end if end >= 0 else None].decode("utf-8", "replace")
        return tags

    def cmdline(self, handle: ProcfsHandle) -> list[str] | None:
        """Arguments from /proc/PID/cmdline."""
        try:
            data = _read_all(f"{_PROC}/{handle.pid}/cmdline")
        except OSError:
            return None
        return [arg.decode("utf-8", "replace") for arg in data.rstrip(b"\0").split(b"\0") if arg]

    def cwd(self, handle: ProcfsHandle) -> str | None:
        """The target of /proc/PID/cwd."""
        try:
            return os.readlink(f"{_PROC}/{handle.pid}/cwd")
        except OSError:
            return None

    def username(self, handle: ProcfsHandle) -> str | None:
        """The owner of /proc/PID (the real user), by name when it has one."""
        try:
            uid = os.stat(f"{_PROC}/{handle.pid}").st_uid
        except OSError:
            return None
        user = self._users.get(uid)
        if user is None:
            try:
                user = pwd.getpwuid(uid).pw_name
            except KeyError:
                user = str(uid)
            self._users[uid] = user
        return user

    def process_name(self, handle: ProcfsHandle) -> str | None:
        """The comm of the process as last read."""
        return handle.comm.decode("utf-8", "replace")

    def release(self, handle: ProcfsHandle) -> None:
        """Close the handle's kept-open files."""
        self._close_kept(handle.stat_fd)
        self._close_kept(handle.io_fd)
        self._close_kept(handle.fd_dir)
        handle.stat_fd = handle.io_fd = handle.fd_dir = -1

    def system(self) -> SystemReading:
        """Host CPU times from /proc/stat, memory from /proc/meminfo."""
        try:
            cpu_line = os.pread(self._stat_fd, 512, 0).split(b"\n", 1)[0]
            meminfo = os.pread(self._meminfo_fd, 8192, 0)
        except OSError as exc:
            raise CollectorError(f"cannot read host totals from {_PROC}: {exc}") from exc
        # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        # already inside user and nice, so it is left out of the total
        ticks = [int(v) for v in cpu_line.split()[1:9]]
        total = sum(ticks)
        busy = total - ticks[3] - ticks[4]
        mem: dict[bytes, int] = {}
        for line in meminfo.split(b"\n"):
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree"):
                mem[key] = int(rest.split()[0]) * 1024
        mem_total = mem.get(b"MemTotal", 0)
        available = mem.get(b"MemAvailable", mem.get(b"MemFree", 0))
        # psutil's definition, so both sources agree: used = total - available
        return SystemReading(
            busy / self._clk_tck, total / self._clk_tck, mem_total, mem_total - available, available
        )

    def cores(self) -> int:
        """Logical CPUs."""
        return self._cores

    def close(self) -> None:
        """Close the host files (handles are released by their owner)."""
        for fd in (self._stat_fd, self._meminfo_fd):
            if fd >= 0:
                os.close(fd)
        self._stat_fd = self._meminfo_fd = -1
