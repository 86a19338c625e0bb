"""Workspace configuration: workspace.json, agents.json, sizes, time windows, JSON Schema.

The limits a configuration gives each project and agent are :mod:`devloop.config.allocation`'s
(the sharing strategies, a pure function of the config); it is not imported here, so loading a
config stays cheap.
"""

from devloop._lazy import install

TYPE_CHECKING = False  # not typing's: nothing more is imported with the package
if TYPE_CHECKING:
    from devloop.config._reader import load_json, strip_comments
    from devloop.config.folder import (
        AGENTS_FILE,
        WORKSPACE_DIR_NAME,
        WORKSPACE_FILE,
        find_workspace_dir,
    )
    from devloop.config.load import (
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

#: Where each public name lives.
_MODULES: dict[str, str] = {
    "AGENTS_FILE": "folder",
    "WORKSPACE_DIR_NAME": "folder",
    "WORKSPACE_FILE": "folder",
    "Adaptation": "models",
    "Agent": "models",
    "AgentLimits": "models",
    "AgentsConfig": "models",
    "GlobalConfig": "models",
    "Limit": "models",
    "Overflow": "models",
    "Profile": "models",
    "Project": "models",
    "ResourceLimits": "models",
    "ResourceSharing": "models",
    "TimeWindow": "timewindow",
    "Workspace": "models",
    "WorkspaceConfig": "models",
    "find_workspace_dir": "folder",
    "load_json": "_reader",
    "load_workspace": "load",
    "parse_agents": "load",
    "parse_time_of_day": "timewindow",
    "parse_workspace": "load",
    "parse_window": "timewindow",
    "strip_comments": "_reader",
}

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


install(__name__, _MODULES)
