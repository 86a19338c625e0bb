"""The simulated workspace's configuration: workspace.json and one agents.json per project.

Layout of the output folder ``DIR`` (a workspace folder, like ``.devloop-workspace``)::

    DIR/workspace.json
    DIR/projects/proj-1/.devloop/agents.json
    DIR/metrics/...                              (written by the generator)

``workspace_root`` is resolved against the parent of ``DIR`` (see config/load.py), so it is set
to ``<DIR's name>/projects``: the projects then live inside ``DIR`` and the whole simulation is
one self-contained folder (renaming it means editing ``workspace_root``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devloop._atomic import atomic_write_text
from devloop.config import AGENTS_FILE, WORKSPACE_FILE, Workspace, load_workspace
from devloop.simulate.model import (
    PROJECT_PRIORITIES,
    PROJECT_WEIGHTS,
    AgentKind,
    agent_command,
    agent_kinds,
    project_names,
)

PROJECTS_DIR = "projects"


def workspace_json(out: Path, projects: int, names: list[str] | None = None) -> dict[str, Any]:
    """The content of ``out/workspace.json``: the guide's default 60% / 2GB pool, weighted.
    The projects are ``names`` when given, else proj-1..proj-N."""
    return {
        "type": "workspace",
        "version": "1.0.0",
        "workspace_name": "simulated",
        "workspace_root": f"{out.resolve().name}/{PROJECTS_DIR}",
        "projects": [
            {
                "name": name,
                "path": name,
                "enabled": True,
                "priority": PROJECT_PRIORITIES[i % len(PROJECT_PRIORITIES)],
                "weight": PROJECT_WEIGHTS[i % len(PROJECT_WEIGHTS)],
                "tags": ["simulated"],
            }
            for i, name in enumerate(names or project_names(projects))
        ],
        "global": {
            "maxConcurrentAgents": 64,
            "resourceLimits": {
                "maxCpu": 60,
                "maxMemory": "2GB",
                "checkInterval": 10,
                "enforcementAction": "pause",
                "resumeThreshold": 0.8,
            },
        },
        "resource_sharing": {"strategy": "weighted"},
    }


def agents_json(agents: list[tuple[str, AgentKind]]) -> dict[str, Any]:
    """The content of a project's ``.devloop/agents.json``."""
    entries: dict[str, Any] = {}
    for name, kind in agents:
        entry: dict[str, Any] = {
            "enabled": True,
            "command": list(agent_command(name, kind)),
            "triggers": ["file:modified", "file:created"],
        }
        if kind.limits:
            entry["resourceLimits"] = dict(kind.limits)
        entries[name] = entry
    return {"version": "1.1.0", "enabled": True, "agents": entries}


def write_workspace(out: Path, projects: int, agents_per_project: int) -> Workspace:
    """Write the configuration files under ``out`` and return the workspace loaded back.

    Loading it back with the loader every command uses proves the files are valid.
    """
    data = workspace_json(out, projects)
    atomic_write_text(out / WORKSPACE_FILE, json.dumps(data, indent=2) + "\n")
    agents = agents_json(agent_kinds(agents_per_project))
    text = json.dumps(agents, indent=2) + "\n"
    for name in project_names(projects):
        atomic_write_text(out / PROJECTS_DIR / name / AGENTS_FILE, text)
    return load_workspace(out)


def write_projects(out: Path, projects: list[tuple[str, list[tuple[str, AgentKind]]]]) -> Workspace:
    """Write a workspace of the named projects, each with its own agents (a calibrated
    simulation's), and return it loaded back."""
    names = [name for name, _ in projects]
    data = workspace_json(out, len(names), names)
    atomic_write_text(out / WORKSPACE_FILE, json.dumps(data, indent=2) + "\n")
    for name, agents in projects:
        text = json.dumps(agents_json(agents), indent=2) + "\n"
        atomic_write_text(out / PROJECTS_DIR / name / AGENTS_FILE, text)
    return load_workspace(out)
