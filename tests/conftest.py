"""Fixtures that build small, real workspaces on disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
