"""The live dashboard: read a frame, draw it, wait for a key or the next refresh.

:func:`run_dashboard` records the workspace itself (a :class:`~devloop.runner.record.Recorder`
ticking in a background thread) unless a collector already holds the store, in which case it
only reads what that collector writes. Keys are read from the terminal in cbreak mode (no Enter
needed, Ctrl-C still interrupts): ``q`` quits. Ctrl-C and SIGTERM quit too, cleanly: the
recorder flushes and releases the store and the terminal is restored.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Collection, Iterator
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from devloop.config.models import Workspace
from devloop.dashboard.data import DashboardData, load
from devloop.dashboard.screen import SECTIONS, build_screen
from devloop.dashboard.snapshot import Snapshot, Usage
from devloop.errors import DevloopError, StoreLockedError

if TYPE_CHECKING:
    from devloop.runner.record import Recorder

QUIT_KEYS = frozenset(b"qQ")


@contextlib.contextmanager
def cbreak(stream: TextIO) -> Iterator[int | None]:
    """Put the terminal ``stream`` in cbreak mode while inside; yields its fd (None when it is
    not a terminal: then no key is read and only signals stop the dashboard)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield None
        return
    if not os.isatty(fd):
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_for_key(fd: int | None, timeout: float, stop: threading.Event) -> bool:
    """Wait up to ``timeout`` seconds; True when a quit key was pressed."""
    if fd is None:
        stop.wait(timeout)
        return False
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    if not ready:
        return False
    data = os.read(fd, 64)
    return not data or any(byte in QUIT_KEYS for byte in data)


def start_recorder(
    workspace: Workspace, interval: float, stop: threading.Event, failures: list[str]
) -> tuple[Recorder | None, threading.Thread | None]:
    """Start recording in a thread; (None, None) when another collector holds the store.

    An error that stops the recorder is appended to ``failures`` (the screen shows it)."""
    from devloop.runner.record import Recorder

    try:
        recorder = Recorder(workspace, interval=interval)
    except StoreLockedError:
        return None, None

    def record() -> None:
        try:
            recorder.run(stop=stop)
        except DevloopError as exc:
            failures.append(f"recording stopped: {exc}")

    thread = threading.Thread(target=record, name="devloop-dashboard-recorder", daemon=True)
    thread.start()
    return recorder, thread


def _empty() -> Snapshot:
    return Snapshot(at=None, cores=os.cpu_count() or 1, workspace=Usage(), projects=(), agents=())


def run_dashboard(
    workspace: Workspace,
    *,
    refresh: float = 2.0,
    metrics: Collection[str] = SECTIONS,
    window: float = 300.0,
    record: bool = True,
    keys: TextIO | None = None,
    console: Any = None,
) -> None:
    """Show the live dashboard until ``q``, Ctrl-C or SIGTERM."""
    from rich.console import Console
    from rich.live import Live

    from devloop.store.query import connect

    console = console or Console()
    stop = threading.Event()
    recorder: Recorder | None = None
    thread: threading.Thread | None = None
    failures: list[str] = []
    if record:
        check = workspace.config.global_.resource_limits.check_interval
        recorder, thread = start_recorder(workspace, min(check, refresh), stop, failures)
    who = "this dashboard" if recorder is not None else (
        "another collector" if record else "not started (--no-record)"
    )  # fmt: skip
    previous: dict[int, Any] = {}

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
    connection = None
    try:
        connection = connect(workspace.metrics_dir)
        with cbreak(keys or sys.stdin) as fd, Live(
            console=console, auto_refresh=False, screen=True, transient=False,
            redirect_stdout=False, redirect_stderr=False,
        ) as live:  # fmt: skip
            while not stop.is_set():
                began = time.monotonic()
                data = _frame(connection, workspace, window, who)
                if failures and data.error is None:
                    data = replace(data, error=failures[-1])
                live.update(
                    build_screen(data, width=console.width, metrics=metrics, refresh=refresh),
                    refresh=True,
                )
                left = refresh - (time.monotonic() - began)
                if wait_for_key(fd, left, stop):
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C quits, as q does
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if connection is not None:
            connection.close()
        if thread is not None:
            thread.join()
        if recorder is not None:
            recorder.close()


def _frame(connection: Any, workspace: Workspace, window: float, who: str) -> DashboardData:
    """One frame; a store that cannot be read now shows its error instead of stopping."""
    from devloop.store.query import create_views

    name = workspace.config.workspace_name or workspace.dir.parent.name
    # A skipped file warns on every frame: show it on the screen, not across it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            create_views(connection, workspace.metrics_dir)  # files written since the last frame
            data = load(connection, workspace, window=window, collector=who)
        except DevloopError as exc:
            data = DashboardData(name=name, snapshot=_empty(), collector=who, now=time.time(),
                                 error=str(exc))  # fmt: skip
    if caught:
        notes = (*data.snapshot.notes, *sorted({str(w.message) for w in caught}))
        data = replace(data, snapshot=replace(data.snapshot, notes=notes))
    return data
