"""Fixtures that build small, real workspaces on disk; the check that no test leaves a process.

Every process a test starts inherits ``DEVLOOP_TEST_SESSION`` (set here, unique per session).
When the session ends, a process that carries it and a ``DEVLOOP_PROJECT`` tag and is still
alive after a grace period was left behind by a test: it is killed, named, and the run fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SESSION_TAG = "DEVLOOP_TEST_SESSION"
SESSION = uuid.uuid4().hex
os.environ[SESSION_TAG] = SESSION
STRAY_GRACE = 10.0  # seconds for processes a test just ended to be reaped


@pytest.fixture(autouse=True, scope="session")
def _full_width_tables() -> None:
    """Tables render at their full width, as into a file or a pipe, whatever terminal runs the
    suite: the width comes from ``COLUMNS`` when it is set (and pytest-xdist's workers have it
    at 80), so the tests asserting rendered lines leave it unset."""
    os.environ.pop("COLUMNS", None)


def stray_processes() -> dict[int, str]:
    """Live processes of this session that carry an agent tag: pid -> command line."""
    marker = f"{SESSION_TAG}={SESSION}".encode()
    found = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and marker in env and any(v.startswith(b"DEVLOOP_PROJECT=") for v in env):
            found[int(name)] = cmdline
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + STRAY_GRACE
    stray = stray_processes()
    while stray and time.monotonic() < deadline:
        time.sleep(0.2)
        stray = stray_processes()
    if not stray:
        return
    for pid in stray:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    listed = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in sorted(stray.items()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"tests left tagged processes running (killed now): {listed}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


GUIDE_PROJECTS = ["auth-service", "api-service", "worker-service"]

WriteWorkspace = Callable[..., Path]


def guide_workspace(sharing: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The guide's three-project workspace, with ``resource_sharing`` as given."""
    data: dict[str, Any] = {
        "workspace_name": "guide",
        "projects": [{"name": name, "path": name} for name in GUIDE_PROJECTS],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
    }
    if sharing is not None:
        data["resource_sharing"] = sharing
    data.update(extra)
    return data


@pytest.fixture(scope="session")
def simulated_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated day of 24 closed hours (2 projects of 2 agents), shared: tests copy it."""
    from devloop.simulate import simulate

    out = tmp_path_factory.mktemp("sim-day") / ".devloop-workspace"
    simulate(out, days=1, projects=2, agents_per_project=2, seed=11)
    return out


@pytest.fixture(scope="session")
def simulated_day_raw(
    simulated_day: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Every report of ``tests/test_store_rollups.py`` over the simulated day, from raw rows
    (no rollups), computed once on a copy without rollups: the reference the rollup tests
    compare their reports against (read-only; the copies they change are byte-identical)."""
    from tests.helpers.stores import copy_without_cache
    from tests.test_store_rollups import _all

    copy = copy_without_cache(simulated_day, tmp_path_factory.mktemp("sim-day-raw"))
    return _all(copy, use_cache=False)


@pytest.fixture
def write_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteWorkspace:
    """Write ``tmp_path/.devloop-workspace/workspace.json`` (and agents.json files), chdir there.

    ``data`` may be a dict (dumped as JSON) or raw text; ``agents`` maps a project path to its
    agents.json content (dict or text). Returns the .devloop-workspace folder.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)

    def write(data: dict[str, Any] | str, agents: dict[str, Any] | None = None) -> Path:
        folder = tmp_path / ".devloop-workspace"
        folder.mkdir(exist_ok=True)
        text = data if isinstance(data, str) else json.dumps(data, indent=2)
        (folder / "workspace.json").write_text(text)
        for project_path, content in (agents or {}).items():
            file = tmp_path / project_path / ".devloop" / "agents.json"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
        return folder

    return write
