"""``devloop workspace init``: a new, valid workspace.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devloop._atomic import atomic_write_text
from devloop.config.folder import WORKSPACE_DIR_NAME, WORKSPACE_FILE
from devloop.config.load import parse_workspace
from devloop.errors import UsageError
from devloop.units import parse_size


def init_workspace(
    root: Path,
    *,
    name: str | None = None,
    projects: list[tuple[str, str]] | None = None,
    strategy: str = "equal",
    max_cpu: float = 60.0,
    max_memory: str = "2GB",
    force: bool = False,
) -> Path:
    """Write ``root/.devloop-workspace/workspace.json`` and return its path.

    The content is checked with the same loader every command uses before it is written.
    """
    root = Path(root)
    folder = root if root.name == WORKSPACE_DIR_NAME else root / WORKSPACE_DIR_NAME
    file = folder / WORKSPACE_FILE
    if file.exists() and not force:
        raise UsageError(f"{file} already exists (use --force to overwrite it)")
    parse_size(max_memory)
    seen: set[str] = set()
    for project_name, _ in projects or []:
        if project_name in seen:
            raise UsageError(f"project {project_name!r} given twice")
        seen.add(project_name)
    data: dict[str, Any] = {
        "type": "workspace",
        "version": "1.0.0",
        "workspace_name": name or (root.resolve().parent.name if root.name == WORKSPACE_DIR_NAME
                                   else root.resolve().name),
        "workspace_root": ".",
        "projects": [
            {"name": n, "path": p, "enabled": True, "priority": 2} for n, p in projects or []
        ],
        "global": {
            "resourceLimits": {
                "maxCpu": max_cpu,
                "maxMemory": max_memory,
                "checkInterval": 10,
                "enforcementAction": "pause",
                "resumeThreshold": 0.8,
            }
        },
        "resource_sharing": {"strategy": strategy},
    }  # fmt: skip
    parse_workspace(data, file)
    atomic_write_text(file, json.dumps(data, indent=2) + "\n")
    return file
