"""What ``devloop workspace validate`` reports about a loaded workspace."""

from __future__ import annotations

from typing import Any

from devloop.config.load import display_path
from devloop.config.models import Workspace


def workspace_summary(workspace: Workspace) -> dict[str, Any]:
    """A JSON-ready description of what was read from the workspace's files."""
    config = workspace.config
    limits = config.global_.resource_limits
    pool = config.pool
    projects = []
    for project in config.projects:
        agents = workspace.agents.get(project.name)
        projects.append(
            {
                "name": project.name,
                "path": project.path,
                "enabled": project.enabled,
                "priority": project.priority,
                "weight": project.weight,
                "agents_file": display_path(agents.file) if agents and agents.file else None,
                "agents": [a.name for a in agents.enabled_agents] if agents else [],
            }
        )
    overcommit = {"overcommitCpu": True} if config.resource_sharing.overcommit_cpu else {}
    return {
        "file": display_path(config.file),
        "workspace_name": config.workspace_name,
        "workspace_root": str(config.workspace_root),
        "strategy": config.resource_sharing.strategy,
        **overcommit,
        "pool": {"maxCpu": pool.cpu, "maxMemory_bytes": pool.memory_bytes},
        "global": {
            "maxCpu": limits.max_cpu,
            "maxMemory_bytes": limits.max_memory_bytes,
            "checkInterval": limits.check_interval,
            "enforcementAction": limits.enforcement_action,
            "resumeThreshold": limits.resume_threshold,
            "maxConcurrentAgents": config.global_.max_concurrent_agents,
        },
        "profiles": sorted({*config.resource_profiles, *config.resource_sharing.profiles}),
        "projects": projects,
        "warnings": list(workspace.warnings),
    }
