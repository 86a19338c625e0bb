"""Workspace configuration: workspace.json, agents.json, sizes, time windows, JSON Schema.

The limits a configuration gives each project and agent are :mod:`devloop.config.allocation`'s
(the sharing strategies, a pure function of the config); it is not imported here, so loading a
config stays cheap.
"""

from devloop.config._reader import load_json, strip_comments
from devloop.config.load import (
    AGENTS_FILE,
    WORKSPACE_DIR_NAME,
    WORKSPACE_FILE,
    find_workspace_dir,
    load_workspace,
    parse_agents,
    parse_workspace,
)
from devloop.config.models import (
    Adaptation,
    Agent,
    AgentLimits,
    AgentsConfig,
    GlobalConfig,
    Limit,
    Overflow,
    Profile,
    Project,
    ResourceLimits,
    ResourceSharing,
    Workspace,
    WorkspaceConfig,
)
from devloop.config.timewindow import TimeWindow, parse_time_of_day, parse_window

__all__ = [
    "AGENTS_FILE",
    "WORKSPACE_DIR_NAME",
    "WORKSPACE_FILE",
    "Adaptation",
    "Agent",
    "AgentLimits",
    "AgentsConfig",
    "GlobalConfig",
    "Limit",
    "Overflow",
    "Profile",
    "Project",
    "ResourceLimits",
    "ResourceSharing",
    "TimeWindow",
    "Workspace",
    "WorkspaceConfig",
    "find_workspace_dir",
    "load_json",
    "load_workspace",
    "parse_agents",
    "parse_time_of_day",
    "parse_workspace",
    "parse_window",
    "strip_comments",
]
