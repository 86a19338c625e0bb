"""Typed, validated views of ``workspace.json`` and each project's ``.devloop/agents.json``.

CPU values are percent of the whole machine (0-100); memory values are bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from devloop.config.timewindow import TimeWindow
from devloop.units import GIB

Strategy = Literal["equal", "weighted", "priority", "dynamic", "custom"]
STRATEGIES: tuple[Strategy, ...] = ("equal", "weighted", "priority", "dynamic", "custom")
EnforcementAction = Literal["pause", "warn", "throttle"]
ENFORCEMENT_ACTIONS: tuple[EnforcementAction, ...] = ("pause", "warn", "throttle")

DEFAULT_MAX_CPU = 60.0
DEFAULT_MAX_MEMORY_BYTES = 2 * GIB
DEFAULT_PRIORITY = 2


@dataclass(frozen=True)
class Limit:
    """A CPU and/or memory limit; ``None`` where the file gives none."""

    cpu: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Overflow:
    """``global.resourceLimits.overflow``: queueing agents that cannot start yet."""

    enabled: bool = False
    queueing: bool = True
    max_queue_size: int = 50
    max_wait_time: float = 300.0


@dataclass(frozen=True)
class ResourceLimits:
    """``global.resourceLimits``: the workspace's ceiling and how it is enforced."""

    max_cpu: float = DEFAULT_MAX_CPU
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    check_interval: float = 10.0
    enforcement_action: EnforcementAction = "pause"
    resume_threshold: float = 0.8
    overflow: Overflow = field(default_factory=Overflow)


@dataclass(frozen=True)
class GlobalConfig:
    """``global``."""

    max_concurrent_agents: int | None = None
    resource_limits: ResourceLimits = field(default_factory=ResourceLimits)


@dataclass(frozen=True)
class Adaptation:
    """``resource_sharing.adaptation``: the dynamic strategy's rebalancing rule."""

    enabled: bool = True
    adjustment_frequency: float = 30.0
    usage_threshold: float = 0.8
    reallocation_factor: float = 0.2


@dataclass(frozen=True)
class Profile:
    """A named pool: ``resource_profiles`` entries (by env var) or ``resource_sharing.profiles``
    entries (by time of day, ``times``)."""

    name: str
    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None
    times: tuple[TimeWindow, ...] = ()


@dataclass(frozen=True)
class ResourceSharing:
    """``resource_sharing``: how the pool is shared among projects."""

    strategy: Strategy = "equal"
    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None
    weights: dict[str, float] = field(default_factory=dict)
    per_project_limits: dict[str, Limit] = field(default_factory=dict)
    #: ``overcommitCpu``: under ``custom``, the projects' CPU limits may total more than the
    #: pool (each at most the pool); the pool is then enforced on their sum
    overcommit_cpu: bool = False
    adaptation: Adaptation = field(default_factory=Adaptation)
    profiles: dict[str, Profile] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        """Whether some profile is chosen by the time of day (has ``times``)."""
        return any(p.times for p in self.profiles.values())


@dataclass(frozen=True)
class Project:
    """One entry of ``projects``."""

    name: str
    path: str
    enabled: bool = True
    priority: int = DEFAULT_PRIORITY
    weight: float | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    dependencies: tuple[str, ...] = ()
    config_override: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkspaceConfig:
    """The whole of ``workspace.json``."""

    file: Path
    workspace_name: str
    workspace_root: Path
    projects: tuple[Project, ...]
    global_: GlobalConfig = field(default_factory=GlobalConfig)
    resource_sharing: ResourceSharing = field(default_factory=ResourceSharing)
    resource_profiles: dict[str, Profile] = field(default_factory=dict)
    type: str = "workspace"
    version: str = "1.0.0"

    @property
    def pool(self) -> Limit:
        """The base pool shared among projects (before any profile)."""
        limits = self.global_.resource_limits
        sharing = self.resource_sharing
        return Limit(
            cpu=sharing.cpu_limit if sharing.cpu_limit is not None else limits.max_cpu,
            memory_bytes=(
                sharing.memory_limit_bytes
                if sharing.memory_limit_bytes is not None
                else limits.max_memory_bytes
            ),
        )

    @property
    def enabled_projects(self) -> tuple[Project, ...]:
        return tuple(p for p in self.projects if p.enabled)

    def project(self, name: str) -> Project:
        for project in self.projects:
            if project.name == name:
                return project
        raise KeyError(name)

    def project_dir(self, project: Project) -> Path:
        return (self.workspace_root / project.path).resolve()


@dataclass(frozen=True)
class AgentLimits:
    """An agent's ``resourceLimits`` in agents.json."""

    max_cpu: float | None = None
    max_memory_bytes: int | None = None
    max_file_handles: int | None = None
    max_threads: int | None = None


@dataclass(frozen=True)
class Agent:
    """One agent of a project's agents.json."""

    name: str
    enabled: bool = True
    command: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    limits: AgentLimits = field(default_factory=AgentLimits)


@dataclass(frozen=True)
class AgentsConfig:
    """A project's ``.devloop/agents.json`` (absent file: no agents)."""

    file: Path | None
    version: str = "1.0.0"
    enabled: bool = True
    agents: dict[str, Agent] = field(default_factory=dict)
    max_concurrent_agents: int | None = None
    resource_limits: Limit = field(default_factory=Limit)
    check_interval: float | None = None
    enforcement_action: EnforcementAction | None = None
    resume_threshold: float | None = None

    @property
    def enabled_agents(self) -> tuple[Agent, ...]:
        if not self.enabled:
            return ()
        return tuple(a for a in self.agents.values() if a.enabled)


@dataclass(frozen=True)
class Workspace:
    """A loaded workspace: its folder, workspace.json and every project's agents.json."""

    dir: Path
    config: WorkspaceConfig
    agents: dict[str, AgentsConfig]
    warnings: tuple[str, ...] = ()

    @property
    def metrics_dir(self) -> Path:
        return self.dir / "metrics"
