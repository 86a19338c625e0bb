"""Where a workspace's configuration lives: the ``.devloop-workspace`` folder, its
``workspace.json`` and each project's ``.devloop/agents.json``; finding the folder.

Imports nothing heavy: every report resolves its workspace folder before reading the store,
and need not load the configuration's models to do so.
"""

from __future__ import annotations

from pathlib import Path

from devloop.errors import UsageError

WORKSPACE_DIR_NAME = ".devloop-workspace"
WORKSPACE_FILE = "workspace.json"
AGENTS_FILE = Path(".devloop") / "agents.json"


def find_workspace_dir(start: Path | None = None) -> Path:
    """The nearest ``.devloop-workspace`` folder at or above ``start`` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if folder.name == WORKSPACE_DIR_NAME and (folder / WORKSPACE_FILE).is_file():
            return folder
        candidate = folder / WORKSPACE_DIR_NAME
        if (candidate / WORKSPACE_FILE).is_file():
            return candidate
    raise UsageError(
        f"no {WORKSPACE_DIR_NAME}/{WORKSPACE_FILE} in {here} or above it; "
        "pass --workspace-dir or create one with `devloop workspace init`"
    )
