"""``devloop run``: one command run as a project's agent, recorded while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from devloop.collector.model import TAG_AGENT, TAG_PROJECT
from devloop.config.models import Workspace
from devloop.errors import StoreLockedError, UsageError
from devloop.runner.record import Recorder


def agent_environment(
    project: str, agent: str, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of an agent's process: the caller's plus the two tags children inherit."""
    env = dict(os.environ if base is None else base)
    env[TAG_PROJECT] = project
    env[TAG_AGENT] = agent
    return env


def check_agent(workspace: Workspace, project: str, agent: str) -> None:
    """Refuse an unknown project; an agent need not be declared in agents.json."""
    names = [p.name for p in workspace.config.projects]
    if project not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise UsageError(f"unknown project {project!r} (known projects: {listed})")
    if not agent.strip() or "/" in agent:
        raise UsageError(f"bad agent name {agent!r} (a non-empty name without '/')")


def run_agent(
    workspace: Workspace,
    project: str,
    agent: str,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    interval: float | None = None,
    record: bool = True,
) -> int:
    """Run ``argv`` (no shell) tagged as ``project``/``agent`` and return its exit status.

    While it runs, the workspace is recorded, unless a collector already records it (then that
    collector sees the tagged process). SIGINT and SIGTERM are passed on to the command. A
    command killed by signal N returns 128 + N, as shells do.
    """
    check_agent(workspace, project, agent)
    if not argv:
        raise UsageError("no command given (put it after --, e.g. devloop run ... -- ruff check .)")
    recorder: Recorder | None = None
    if record:
        try:
            # An agent run is often shorter than checkInterval: sample at least every second.
            every = interval or min(workspace.config.global_.resource_limits.check_interval, 1.0)
            recorder = Recorder(workspace, interval=every)
        except StoreLockedError:
            recorder = None  # a running collector records the tagged process
    try:
        try:
            child = subprocess.Popen(list(argv), env=agent_environment(project, agent), cwd=cwd)
        except FileNotFoundError as exc:
            raise UsageError(f"command not found: {argv[0]}") from exc
        except PermissionError as exc:
            raise UsageError(f"cannot execute {argv[0]}: permission denied") from exc
        restore = _forward_signals(child)
        try:
            if recorder is not None:
                recorder.event("agent-start", scope="agent", project=project, agent=agent,
                               message=f"pid {child.pid}: {' '.join(argv)}")  # fmt: skip
                done = threading.Event()

                def wait_for_child() -> None:
                    child.wait()
                    done.set()

                waiter = threading.Thread(target=wait_for_child, daemon=True)
                waiter.start()
                recorder.run(stop=done)
                waiter.join()
            code = child.wait()
        finally:
            restore()
        if recorder is not None:
            recorder.event("agent-exit", scope="agent", project=project, agent=agent,
                           message=f"pid {child.pid} exited with {code}")  # fmt: skip
    finally:
        if recorder is not None:
            recorder.close()
    return 128 - code if code < 0 else code


def _forward_signals(child: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Pass SIGINT/SIGTERM on to ``child``; returns a function that restores the handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
