"""Starting one agent run and reaping it exactly: the part every launcher shares.

``devloop run``, each ``devloop watch`` round and the stress-test's loads start their command
with :func:`start` and end it with :meth:`Launched.reap`, which waits with ``wait4`` and so
gets from the kernel the run's exact CPU (user and system of the root process and of every
descendant it waited for) and its max RSS, however short the run was. The run is written to the
run journal (:mod:`devloop.store.runs`) when it starts and when it ends; the workspace's recorder
turns that into the ``runs`` row.

Standard library only: this is on ``devloop run``'s fast path, where every millisecond of import
is a millisecond added to every lint.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from devloop._proc import pid_alive
from devloop.errors import SpawnError
from devloop.store import runs as journal
from devloop.tags import TAG_AGENT, TAG_PROJECT, TAG_RUN

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, pathlib and subprocess are too slow to import on this path
    import subprocess
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

_LINUX = sys.platform.startswith("linux")
try:  # the C module: ``signal`` itself imports enum, 5 ms of CPU on every run
    _signal: Any = importlib.import_module("_signal")
except ImportError:  # pragma: no cover - a Python without it
    _signal = importlib.import_module("signal")


def run_environment(
    project: str, agent: str, run_id: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a run's process: the caller's plus the tags its children inherit."""
    env = dict(os.environ if base is None else base)
    env[TAG_PROJECT] = project
    env[TAG_AGENT] = agent
    env[TAG_RUN] = run_id
    return env


def start_ticks(pid: int) -> int | None:
    """The start of process ``pid`` in clock ticks after boot (None off Linux or if gone).

    Read before the process is reaped, so the pid cannot have been reused yet."""
    if not _LINUX:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2 :].split()[19])


def recorder_alive(metrics_dir: str | os.PathLike[str]) -> bool:
    """Whether a live recorder holds the store: its writer lock file names a live pid (the
    holder truncates it on release). The pid is read, the lock not tried: a collector starting
    at this moment must not find it taken by us."""
    try:
        with open(os.path.join(metrics_dir, ".lock"), "rb") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and pid_alive(pid)


class Launched:
    """A started run: its root process and its journal entry."""

    def __init__(self, pid: int, active: journal.ActiveRun | None, cwd: str) -> None:
        self.pid = pid
        self.active = active
        self.cwd = cwd
        self.start_ticks = start_ticks(pid)
        self.returncode: int | None = None
        self.end: journal.RunEnd | None = None
        #: When started through subprocess (beside other threads): kept, and told the status.
        self.popen: subprocess.Popen[bytes] | None = None

    def send_signal(self, signum: int, *, group: bool = False) -> None:
        """Signal the root process (with ``group``, its process group: started with
        ``new_session``) while it is not reaped, so its pid is still ours."""
        if self.returncode is None:
            try:
                (os.killpg if group else os.kill)(self.pid, signum)
            except ProcessLookupError:
                pass

    def signal_group(self, signum: int) -> None:
        """Signal the root's process group (started with ``new_session``) while not reaped."""
        self.send_signal(signum, group=True)

    def poll(self) -> bool:
        """Whether the root has exited (without reaping it: :meth:`reap` still gets rusage)."""
        if self.returncode is not None:
            return True
        try:
            found = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return found is not None

    def reap(self) -> int:
        """Wait for the root, journal the run's end, and return its exit status the way a
        shell reports it (128 + N when signal N killed it). Once reaped, returns the same."""
        if self.returncode is not None:
            return self.returncode
        _, status, usage = os.wait4(self.pid, 0)
        ended_us = time.time_ns() // 1000
        code = os.waitstatus_to_exitcode(status)
        self.returncode = 128 - code if code < 0 else code
        if self.popen is not None:
            self.popen.returncode = code
        self.end = journal.RunEnd(
            pid=self.pid,
            start_ticks=self.start_ticks,
            ended_us=ended_us,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            cpu_user_seconds=usage.ru_utime,
            cpu_system_seconds=usage.ru_stime,
            max_rss_bytes=usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024),
        )
        if self.active is not None:
            try:
                self.active.finish(self.end)
            except OSError as exc:  # the run happened; only its row is lost
                sys.stderr.write(f"devloop: cannot journal run {self.active.run_id}: {exc}\n")
        return self.returncode


def start(
    metrics_dir: str | os.PathLike[str] | None,
    project: str,
    agent: str,
    argv: Sequence[str],
    *,
    trigger: str = "manual",
    cwd: str | os.PathLike[str] | None = None,
    queued_us: int | None = None,
    log_path: str | os.PathLike[str] | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    new_session: bool = False,
    run_id: str | None = None,
) -> Launched:
    """Start ``argv`` (no shell) as a run of ``project``/``agent`` and journal it in the store
    at ``metrics_dir`` (None: journal nothing).

    ``stdin``/``stdout`` are descriptors the command gets (stdout also as stderr); ``new_session``
    puts it in a process group of its own. Raises SpawnError when it cannot be executed.
    """
    run_id = run_id or journal.new_run_id()
    folder = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    now_us = time.time_ns() // 1000
    active = None
    if metrics_dir is not None:
        begun = journal.RunStart(
            run_id=run_id, project=project, agent=agent, trigger=trigger, command=list(argv),
            cwd=folder, queued_us=queued_us if queued_us is not None else now_us,
            started_us=now_us, launcher_pid=os.getpid(),
            log_path=os.fspath(log_path) if log_path is not None else None,
        )  # fmt: skip
        try:
            active = journal.begin(metrics_dir, begun)
        except OSError as exc:  # a read-only store: the run still runs, unrecorded as a run
            sys.stderr.write(f"devloop: cannot journal the run in {metrics_dir}: {exc}\n")
    env = run_environment(project, agent, run_id)
    threading = sys.modules.get("threading")
    try:
        if threading is not None and threading.active_count() > 1:
            popen = _popen(list(argv), env, folder, stdin, stdout, new_session)
            launched = Launched(popen.pid, active, folder)
            launched.popen = popen
            return launched
        pid = _spawn(list(argv), env, folder, stdin, stdout, new_session)
    except BaseException:
        if active is not None:
            active.abandon()
        raise
    return Launched(pid, active, folder)


def _popen(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdin: int | None,
    stdout: int | None,
    new_session: bool,
) -> subprocess.Popen[bytes]:
    """Start through subprocess, whose fork and exec happen in C: safe beside other threads.
    The launcher keeps the Popen (so subprocess never reaps it behind our back) but reaps the
    child itself with wait4."""
    import subprocess

    try:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout,
            stderr=stdout, start_new_session=new_session,
        )  # fmt: skip
    except OSError as exc:
        raise SpawnError(exc.errno or 0, f"{argv[0]}: {exc.strerror or exc}") from exc


def forward_signals(launched: Launched) -> Callable[[], None]:
    """Pass SIGINT and SIGTERM on to the run's root; returns a function that restores the
    previous handlers. Only the main thread may set handlers: elsewhere it does nothing."""
    threading = sys.modules.get("threading")  # not imported by the fast path: the main thread
    if threading is not None and threading.current_thread() is not threading.main_thread():
        return lambda: None

    def forward(signum: int, frame: object) -> None:
        launched.send_signal(signum)

    previous = {signum: _signal.signal(signum, forward) for signum in (_signal.SIGINT,
                                                                      _signal.SIGTERM)}  # fmt: skip

    def restore() -> None:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)

    return restore


def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdin: int | None,
    stdout: int | None,
    new_session: bool,
) -> int:
    """posix_spawn (vfork and exec in C): the child shares no copy-on-write pages with this
    interpreter, so the run's rusage holds the command's CPU and not ~10 ms of page faults of a
    forked Python. Only from a single-threaded process: the working directory is changed for
    the moment of the spawn (Python 3.11 has no chdir file action)."""
    actions = []
    if stdin is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdin, 0))
    if stdout is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
        actions.append((os.POSIX_SPAWN_DUP2, stdout, 2))
    here = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise SpawnError(exc.errno or 0, f"{cwd}: {exc.strerror or exc}") from exc
    try:
        return os.posix_spawnp(
            argv[0], argv, env, file_actions=actions, setsid=new_session,
            setsigdef=(_signal.SIGINT, _signal.SIGTERM),
        )  # fmt: skip
    except OSError as exc:
        raise SpawnError(exc.errno or 0, f"{argv[0]}: {exc.strerror or exc}") from exc
    finally:
        os.chdir(here)
