"""The live dashboard: read a frame, draw it, wait for a key or the next refresh.

Viewing never writes: :func:`run_dashboard` only reads the store, whoever records it, and its
status line says when nobody does (and how to start a collector). With ``record`` it is the
workspace's collector and enforcer itself, as ``devloop workspace collect --enforce`` is (a
:class:`~devloop.runner.record.Recorder` ticking in a background thread), unless a collector
already holds the store, in which case it reads what that collector writes. Keys are read from
the terminal in cbreak mode (no Enter needed, Ctrl-C still interrupts): ``q`` quits. Ctrl-C and
SIGTERM quit too, cleanly: the recorder takes its last tick's rows to the store, resumes every
agent it paused and releases the store, and the terminal is restored.
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


def wait_for_key(
    fd: int | None, timeout: float, stop: threading.Event, wake: int | None = None
) -> bool:
    """Wait up to ``timeout`` seconds; True when a quit key was pressed. ``wake``: a pipe a
    signal writes to (``signal.set_wakeup_fd``): a signal ends the wait at once."""
    watched = [f for f in (fd, wake) if f is not None]
    if not watched:
        stop.wait(timeout)
        return False
    ready, _, _ = select.select(watched, [], [], max(timeout, 0.0))
    if wake is not None and wake in ready:
        try:
            os.read(wake, 512)
        except BlockingIOError:
            pass
    if fd is None or fd not in ready:
        return False
    data = os.read(fd, 64)
    return not data or any(byte in QUIT_KEYS for byte in data)


#: The status line's "collector:" when nobody records the store.
NOT_RECORDING = "none running (start one: devloop workspace collect, or dashboard --record)"
#: ... when this dashboard does.
RECORDING = "this dashboard (recording, enforcing)"
#: ... when another process does.
ANOTHER = "another collector"


def start_recorder(
    workspace: Workspace, stop: threading.Event, failures: list[str], profile: str | None = None
) -> tuple[Recorder | None, threading.Thread | None]:
    """Record and enforce in a thread; (None, None) when another collector holds the store.

    The recorder is the one ``devloop workspace collect --enforce`` runs: every
    ``checkInterval`` it records a tick and enforces the limits in force (``profile`` as
    ``--profile``), so an agent started while the dashboard records is held to them. An error
    that stops it is appended to ``failures`` (the screen shows it)."""
    from devloop.runner.record import Recorder

    try:
        recorder = Recorder(workspace, enforce=True, profile=profile)
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


def who_records(workspace: Workspace, recorder: Recorder | None) -> str:
    """The status line's "collector:": this dashboard, another collector, or nobody (with how
    to start one). Asked at every frame: a collector may start or stop while one looks."""
    from devloop.runner.launch import recorder_alive

    if recorder is not None:
        return RECORDING
    return ANOTHER if recorder_alive(workspace.metrics_dir) else NOT_RECORDING


def _empty() -> Snapshot:
    return Snapshot(at=None, cores=os.cpu_count() or 1, workspace=Usage(), projects=(), agents=())


def run_dashboard(
    workspace: Workspace,
    *,
    refresh: float = 2.0,
    metrics: Collection[str] = SECTIONS,
    window: float = 300.0,
    record: bool = False,
    keys: TextIO | None = None,
    console: Any = None,
    stop: threading.Event | None = None,
    profile: str | None = None,
) -> None:
    """Show the live dashboard until ``q``, Ctrl-C, SIGTERM or ``stop`` is set.

    Without ``record`` it never writes: not into the store, not anywhere in the workspace.
    With ``record`` it records and enforces (:func:`start_recorder`, ``profile`` as
    ``--profile``) unless a collector already runs, and on the way out it stops its recorder
    as ``collect`` does: the last ticks reach the store, no agent stays paused, the store is
    released."""
    from rich.console import Console
    from rich.live import Live

    from devloop.store.db import connect

    console = console or Console()
    stop = stop if stop is not None else threading.Event()
    recorder: Recorder | None = None
    thread: threading.Thread | None = None
    failures: list[str] = []
    previous: dict[int, Any] = {}

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Ctrl-C and SIGTERM set ``stop`` and wake the wait (the pipe): the loop ends at once,
    # whatever code (a DuckDB query, rich) the signal arrives in; no exception has to find
    # its way out of it.
    main = threading.current_thread() is threading.main_thread()
    wake: tuple[int, int] | None = None
    old_wakeup = -1
    if main:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_term)
        wake = os.pipe()
        for end in wake:
            os.set_blocking(end, False)
        old_wakeup = signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)
    connection = None
    try:
        if record:
            recorder, thread = start_recorder(workspace, stop, failures, profile)
        connection = connect(workspace.metrics_dir)
        with cbreak(keys or sys.stdin) as fd, Live(
            console=console, auto_refresh=False, screen=True, transient=False,
            redirect_stdout=False, redirect_stderr=False,
        ) as live:  # fmt: skip
            while not stop.is_set():
                began = time.monotonic()
                data = _frame(connection, workspace, window, who_records(workspace, recorder))
                if failures and data.error is None:
                    data = replace(data, error=failures[-1])
                live.update(
                    build_screen(data, width=console.width, metrics=metrics, refresh=refresh),
                    refresh=True,
                )
                left = refresh - (time.monotonic() - began)
                if wait_for_key(fd, left, stop, None if wake is None else wake[0]):
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C quits, as q does (a caller's own SIGINT handler may still raise it)
    finally:
        stop.set()
        try:
            if connection is not None:
                connection.close()
            if thread is not None:
                thread.join()
            if recorder is not None:
                recorder.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if wake is not None:
                signal.set_wakeup_fd(old_wakeup)
                for end in wake:
                    os.close(end)


def _frame(connection: Any, workspace: Workspace, window: float, who: str) -> DashboardData:
    """One frame; a store that cannot be read now shows its error instead of stopping."""
    from devloop.store.db import create_views

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
