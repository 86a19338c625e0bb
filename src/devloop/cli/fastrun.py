"""``devloop run``'s fast path: wrap a command in a few milliseconds when a collector records.

A lint takes 20 ms; ``devloop run`` must not cost more than the lint. When a recorder already
holds the workspace's store, this path does only what the run needs: it parses the arguments by
hand (click alone costs ~50 ms to import), takes the admission verdict from the recorder's
admission file (:mod:`devloop.core.admit`; it lists the workspace's projects, so an unknown
project has none), starts the command and reaps it (:mod:`devloop.runner.launch`). The recorder
stores the run's row.

Whenever it is not that simple (no recorder, the verdict is "wait", ``--help``, an unknown
project or option, a bad value) it returns None and the full click command handles the
invocation, with its queue, its own recording and its error messages. It imports no more than
os, time and fcntl: even ``json`` (with ``re`` and ``enum``) would cost every run 10 ms of CPU.
"""

from __future__ import annotations

import os
import sys
import time

from devloop.core import admit
from devloop.errors import SpawnError
from devloop.runner import launch

_WORKSPACE_DIR_NAME = ".devloop-workspace"  # devloop.config.folder.WORKSPACE_DIR_NAME
_WORKSPACE_FILE = "workspace.json"  # devloop.config.folder.WORKSPACE_FILE
_WITH_VALUE = {
    "--workspace-dir": "workspace_dir",
    "--project": "project",
    "-p": "project",
    "--agent": "agent",
    "-a": "agent",
    "--cwd": "cwd",
    "--interval": "interval",
}
_FLAGS = {"--no-record": "no_record", "--no-enforce": "no_enforce"}


def parse(args: list[str]) -> dict[str, object] | None:
    """The options and command of ``devloop run ARGS``; None for anything unusual."""
    options: dict[str, object] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-"):
            break
        name, has_value, value = arg.partition("=")
        if name in _WITH_VALUE:
            if not has_value:
                if index + 1 >= len(args):
                    return None
                index += 1
                value = args[index]
            options[_WITH_VALUE[name]] = value
        elif name in _FLAGS and not has_value:
            options[_FLAGS[name]] = True
        else:
            return None  # --help, --profile, a typo: the full command answers
        index += 1
    command = args[index:]
    if not command or "project" not in options or "agent" not in options:
        return None
    options["command"] = command
    return options


def workspace_folder(given: str | None) -> str | None:
    """The workspace folder as the full command resolves it; None when it would fail."""
    if given is not None:
        if not os.path.isdir(given):
            return None
        if not os.path.isfile(os.path.join(given, _WORKSPACE_FILE)):
            nested = os.path.join(given, _WORKSPACE_DIR_NAME)
            if os.path.isfile(os.path.join(nested, _WORKSPACE_FILE)):
                given = nested
        return os.path.realpath(given)
    here = os.path.realpath(os.getcwd())
    while True:
        if os.path.basename(here) == _WORKSPACE_DIR_NAME and os.path.isfile(
            os.path.join(here, _WORKSPACE_FILE)
        ):
            return here
        candidate = os.path.join(here, _WORKSPACE_DIR_NAME)
        if os.path.isfile(os.path.join(candidate, _WORKSPACE_FILE)):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def fast_run(args: list[str]) -> int | None:
    """Run ``devloop run ARGS`` here and return its exit status, or None to use the full path."""
    options = parse(args)
    if options is None:
        return None
    project, agent = str(options["project"]), str(options["agent"])
    if not agent.strip() or "/" in agent:
        return None
    folder = workspace_folder(options.get("workspace_dir"))  # type: ignore[arg-type]
    if folder is None:
        return None
    metrics_dir = os.path.join(folder, "metrics")
    if not launch.recorder_alive(metrics_dir):
        return None  # it must record by itself (or check the project itself): the full path
    allowed = admit.verdict(folder, project, agent, time.time())
    if allowed is None or (not allowed and not options.get("no_enforce")):
        return None  # it must wait or be refused, or nobody has decided: the full path does
    cwd = options.get("cwd")
    if cwd is not None and not os.path.isdir(str(cwd)):
        return None
    command = options["command"]
    assert isinstance(command, list)
    try:
        launched = launch.start(metrics_dir, project, agent, command, cwd=cwd)  # type: ignore[arg-type]
    except SpawnError:
        return None  # the full path words the error
    return _wait(launched)


def _wait(launched: launch.Launched) -> int:
    launch.forward_signals(launched)
    code = launched.reap()
    sys.stdout.flush()
    return code
