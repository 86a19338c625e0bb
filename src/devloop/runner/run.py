"""``devloop run``: one command run as a project's agent, recorded while it runs."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.collector.model import TAG_AGENT, TAG_PROJECT
from devloop.config.models import Workspace
from devloop.errors import EnforcementError, SpawnError, StoreLockedError, UsageError
from devloop.runner import launch
from devloop.runner.record import Recorder

if TYPE_CHECKING:
    from devloop.core.resource_manager import ResourceManager


def agent_environment(
    project: str, agent: str, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of an agent's process outside a run: the caller's plus the two tags
    children inherit (a run also carries DEVLOOP_RUN_ID: :func:`launch.run_environment`)."""
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
    enforce: bool = True,
    profile: str | None = None,
    trigger: str = "manual",
) -> int:
    """Run ``argv`` (no shell) as a run of ``project``/``agent`` and return its exit status.

    The run gets an id (``DEVLOOP_RUN_ID``) and a row in the ``runs`` table with its exact CPU
    and max RSS from the kernel. While it runs, the workspace is recorded and, with
    ``enforce``, its limits enforced, unless a collector already records it (then that
    collector sees the tagged process and stores the run's row). Before it starts, the agent is
    admitted as the guide's overflow rules say (:func:`admit`). SIGINT and SIGTERM are passed
    on to the command. A command killed by signal N returns 128 + N, as shells do.
    """
    check_agent(workspace, project, agent)
    if not argv:
        raise UsageError("no command given (put it after --, e.g. devloop run ... -- ruff check .)")
    recorder: Recorder | None = None
    manager: ResourceManager | None = None
    if record:
        try:
            # An agent run is often shorter than checkInterval: sample at least every second.
            every = interval or min(workspace.config.global_.resource_limits.check_interval, 1.0)
            recorder = Recorder(workspace, interval=every, enforce=enforce, profile=profile)
            manager = recorder.manager
        except StoreLockedError:
            recorder = None  # a running collector records the tagged process
    own_manager = None
    try:
        queued_us = time.time_ns() // 1000
        if enforce:
            if manager is None:
                from devloop.core.resource_manager import ResourceManager

                manager = own_manager = ResourceManager(workspace, profile=profile, enforce=False)
            admit(manager, project, agent)
        try:
            # Not recording: the run's row is left to a recorder only if one is running.
            journal = record or launch.recorder_alive(workspace.metrics_dir)
            store = workspace.metrics_dir if journal else None
            launched = launch.start(store, project, agent, argv, trigger=trigger, cwd=cwd,
                                    queued_us=queued_us)  # fmt: skip
        except SpawnError as exc:
            if exc.errno == errno.ENOENT:
                raise UsageError(f"command not found: {argv[0]}") from exc
            if exc.errno == errno.EACCES:
                raise UsageError(f"cannot execute {argv[0]}: permission denied") from exc
            raise UsageError(f"cannot run {exc.strerror}") from exc
        if manager is not None:
            manager.started(launched.pid)
        restore = launch.forward_signals(launched)
        try:
            if recorder is not None:
                recorder.event("agent-start", scope="agent", project=project, agent=agent,
                               message=f"pid {launched.pid}: {' '.join(argv)}")  # fmt: skip
                done = threading.Event()

                def wait_for_child() -> None:
                    launched.reap()
                    done.set()

                waiter = threading.Thread(target=wait_for_child, daemon=True)
                waiter.start()
                recorder.run(stop=done)
                waiter.join()
            else:
                launched.reap()
            code = launched.returncode
            assert code is not None
        finally:
            restore()
        if recorder is not None:
            recorder.record_runs()  # this run's row, and its CPU after the last tick
            recorder.event("agent-exit", scope="agent", project=project, agent=agent,
                           message=f"pid {launched.pid} exited with {code}")  # fmt: skip
    finally:
        if own_manager is not None:
            own_manager.close()
        if recorder is not None:
            recorder.close()
    return code


def admit(manager: ResourceManager, project: str, agent: str) -> None:
    """Return when ``project``/``agent`` may start, as the guide's overflow rules say.

    It may start at once when fewer than ``global.maxConcurrentAgents`` agents run and
    :meth:`ResourceManager.can_run_agent` says yes. Otherwise, with ``overflow.enabled`` and
    ``queueing``, it waits (a ``queue`` event) until it may, or fails after ``maxWaitTime``
    seconds (a ``queue-timeout`` event); with overflow disabled it is refused at once (a
    ``queue-full`` event). A lone ``devloop run`` is a queue of one: the priority order among
    several waiting agents is kept by ``devloop watch``, which starts them all.
    """
    emit = manager.record
    config = manager.workspace.config
    most = config.global_.max_concurrent_agents
    overflow = config.global_.resource_limits.overflow

    def why_not() -> str | None:
        if most is not None and manager.running_agents() >= most:
            return f"{most} agents already run (global.maxConcurrentAgents)"
        if not manager.can_run_agent(agent, project):
            return "the workspace or the project is at its limits"
        return None

    reason = why_not()
    if reason is None:
        return
    if not (overflow.enabled and overflow.queueing):
        emit("queue-full", scope="agent", project=project, agent=agent,
             message=f"refused: {reason}; overflow queueing is disabled")  # fmt: skip
        raise EnforcementError(
            f"{project}/{agent} cannot start: {reason} (enable global.resourceLimits.overflow "
            "to queue it instead)"
        )
    emit("queue", scope="agent", project=project, agent=agent, message=f"waiting: {reason}")
    deadline = time.monotonic() + overflow.max_wait_time
    poll = min(manager.interval, 1.0)
    while reason is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            emit("queue-timeout", scope="agent", project=project, agent=agent,
                 message=f"gave up after {overflow.max_wait_time:g}s: {reason}")  # fmt: skip
            raise EnforcementError(
                f"{project}/{agent} waited {overflow.max_wait_time:g}s (overflow.maxWaitTime) "
                f"and still cannot start: {reason}"
            )
        time.sleep(min(poll, left))
        reason = why_not()
    emit("dequeue", scope="agent", project=project, agent=agent, message="resources free: starting")
