"""Loading and validating workspace.json and agents.json into :mod:`devloop.config.models`."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devloop.config._reader import Node, load_json
from devloop.config.folder import AGENTS_FILE, WORKSPACE_FILE
from devloop.config.models import (
    ENFORCEMENT_ACTIONS,
    STRATEGIES,
    Adaptation,
    Agent,
    AgentLimits,
    AgentsConfig,
    EnforcementAction,
    GlobalConfig,
    Limit,
    Overflow,
    Profile,
    Project,
    ResourceLimits,
    ResourceSharing,
    Strategy,
    Workspace,
    WorkspaceConfig,
)
from devloop.config.timewindow import TimeWindow, parse_window
from devloop.errors import ConfigError, UsageError
from devloop.units import format_size


def display_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (shorter errors)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_workspace(workspace_dir: Path | str) -> Workspace:
    """Load and check ``<workspace_dir>/workspace.json`` and each project's agents.json."""
    folder = Path(workspace_dir)
    if not folder.is_dir():
        raise UsageError(f"workspace folder not found: {folder}")
    file = folder / WORKSPACE_FILE
    warnings: list[str] = []
    config = parse_workspace(load_json(file, display_path(file)), file, warnings)
    agents: dict[str, AgentsConfig] = {}
    for project in config.projects:
        agents_file = config.project_dir(project) / AGENTS_FILE
        if agents_file.is_file():
            data = load_json(agents_file, display_path(agents_file))
            agents[project.name] = parse_agents(data, agents_file, warnings)
        else:
            agents[project.name] = AgentsConfig(file=None)
    return Workspace(dir=folder.resolve(), config=config, agents=agents, warnings=tuple(warnings))


# --- workspace.json ------------------------------------------------------------------------


def parse_workspace(data: Any, file: Path, warnings: list[str] | None = None) -> WorkspaceConfig:
    """A checked :class:`WorkspaceConfig` from the parsed JSON of ``file``."""
    warnings = [] if warnings is None else warnings
    root = Node(data, display_path(file), "", warnings).obj()
    kind = _opt(root.get("type"), lambda n: n.string()) or "workspace"
    version = _opt(root.get("version"), lambda n: n.string()) or "1.0.0"
    default_name = file.resolve().parent.parent.name
    name = _opt(root.get("workspace_name", "name"), lambda n: n.string(non_empty=True))
    base = file.resolve().parent.parent
    root_text = _opt(root.get("workspace_root"), lambda n: n.string(non_empty=True))
    workspace_root = (base / root_text).resolve() if root_text else base

    projects_node = root.get("projects")
    projects = _projects(projects_node) if projects_node is not None else ()
    names = {p.name for p in projects}

    global_node = root.get("global")
    global_ = _global(global_node.obj()) if global_node is not None else GlobalConfig()

    profiles_node = root.get("resource_profiles")
    resource_profiles = (
        _profiles(profiles_node.obj(), with_times=False) if profiles_node is not None else {}
    )
    sharing_node = root.get("resource_sharing")
    sharing = (
        _sharing(sharing_node.obj(), names, global_.resource_limits)
        if sharing_node is not None
        else ResourceSharing()
    )
    root.done()
    config = WorkspaceConfig(
        file=file,
        workspace_name=name or default_name,
        workspace_root=workspace_root,
        projects=projects,
        global_=global_,
        resource_sharing=sharing,
        resource_profiles=resource_profiles,
        type=kind,
        version=version,
    )
    if sharing_node is not None:
        _check_custom_total(config, sharing_node)
    return config


def _opt(node: Node | None, read: Any) -> Any:
    return None if node is None else read(node)


def _projects(node: Node) -> tuple[Project, ...]:
    projects: list[Project] = []
    seen: dict[str, str] = {}
    items = node.list()
    for item in items:
        item.obj()
        name_node = item.get("name")
        if name_node is None:
            raise item.error("missing key 'name'")
        name = name_node.string(non_empty=True)
        if name in seen:
            raise name_node.error(f"duplicate project name {name!r} (first at {seen[name]})")
        seen[name] = item.path
        path_node = item.get("path")
        path = path_node.string(non_empty=True) if path_node is not None else name
        priority_node = item.get("priority")
        project = Project(
            name=name,
            path=path,
            enabled=_opt(item.get("enabled"), lambda n: n.boolean()) is not False,
            priority=priority_node.integer(0, 3) if priority_node is not None else 2,
            weight=_opt(item.get("weight"), lambda n: n.number(0, exclusive_minimum=True)),
            tags=_opt(item.get("tags"), lambda n: n.strings()) or (),
            description=_opt(item.get("description"), lambda n: n.string()) or "",
            dependencies=_opt(item.get("dependencies"), lambda n: n.strings()) or (),
            config_override=_opt(item.get("config_override"), lambda n: n.obj().value) or {},
        )
        item.done()
        projects.append(project)
    for item, project in zip(items, projects, strict=True):
        for index, dependency in enumerate(project.dependencies):
            if dependency not in seen:
                raise ConfigError(
                    item.file,
                    f"{item.path}.dependencies[{index}]",
                    f"unknown project {dependency!r}{_known(seen)}",
                )
    return tuple(projects)


def _known(names: Any) -> str:
    listed = sorted(names)
    return f" (known projects: {', '.join(listed)})" if listed else " (no projects defined)"


def _memory(node: Node, text_key: str, bytes_key: str) -> int | None:
    """Bytes from ``text_key`` ("2GB" or integer MB) and/or ``bytes_key``; both must agree."""
    text_node = node.get(text_key)
    bytes_node = node.get(bytes_key)
    from_text = text_node.size() if text_node is not None else None
    from_bytes = bytes_node.integer(0) if bytes_node is not None else None
    if from_text is not None and from_bytes is not None and abs(from_text - from_bytes) > 1:
        assert bytes_node is not None and text_node is not None
        raise bytes_node.error(
            f"{from_bytes} bytes disagrees with {text_key} {text_node.value!r} "
            f"({from_text} bytes); give one of them"
        )
    return from_bytes if from_bytes is not None else from_text


def _cpu(node: Node | None) -> float | None:
    return None if node is None else node.number(0, 100)


def _limit(node: Node, cpu_key: str = "maxCpu", memory_key: str = "maxMemory") -> Limit:
    node.obj()
    limit = Limit(
        cpu=_cpu(node.get(cpu_key)),
        memory_bytes=_memory(node, memory_key, f"{memory_key}_bytes"),
    )
    node.done()
    return limit


def _resume_threshold(node: Node) -> float | None:
    given = node.get("resumeThreshold") or node.get("resumeThresholdPercent")
    if given is None:
        return None
    value = given.number(0, 100, exclusive_minimum=True)
    # DevLoop 0.10 wrote 0.8 under the Percent key and users write 80 under either: a value up
    # to 1 is a fraction, from 10 a percent. Between, 1.5 could mean 1.5 % (a paused agent
    # would practically never resume) or a typo for 0.15 or 15: refused, not guessed.
    if 1 < value < 10:
        raise given.error(
            f"{value:g} is ambiguous: write a fraction of the limit (0.8) or a percent (80)"
        )
    return value / 100 if value > 1 else value


@dataclass(frozen=True)
class _Enforcement:
    """The ``resourceLimits`` keys workspace.json and agents.json share; None where absent."""

    cpu: float | None
    memory_bytes: int | None
    check_interval: float | None
    action: EnforcementAction | None
    resume_threshold: float | None


def _enforcement(node: Node) -> _Enforcement:
    interval = node.get("checkInterval", "checkIntervalSeconds")
    action = node.get("enforcementAction")
    return _Enforcement(
        cpu=_cpu(node.get("maxCpu")),
        memory_bytes=_memory(node, "maxMemory", "maxMemory_bytes"),
        check_interval=(
            interval.number(0, 86400, exclusive_minimum=True) if interval is not None else None
        ),
        action=_action(action) if action is not None else None,
        resume_threshold=_resume_threshold(node),
    )


def _global(node: Node) -> GlobalConfig:
    limits_node = node.get("resourceLimits")
    limits = ResourceLimits()
    if limits_node is not None:
        limits_node.obj()
        read = _enforcement(limits_node)
        overflow_node = limits_node.get("overflow")
        limits = ResourceLimits(
            max_cpu=read.cpu if read.cpu is not None else limits.max_cpu,
            max_memory_bytes=(
                read.memory_bytes if read.memory_bytes is not None else limits.max_memory_bytes
            ),
            check_interval=read.check_interval or limits.check_interval,
            enforcement_action=read.action or limits.enforcement_action,
            resume_threshold=read.resume_threshold or limits.resume_threshold,
            overflow=_overflow(overflow_node) if overflow_node is not None else Overflow(),
        )
        limits_node.done()
    concurrent = node.get("maxConcurrentAgents")
    node.done()
    return GlobalConfig(
        max_concurrent_agents=concurrent.integer(1) if concurrent is not None else None,
        resource_limits=limits,
    )


def _action(node: Node) -> EnforcementAction:
    value = node.choice(ENFORCEMENT_ACTIONS)
    return value  # type: ignore[return-value]


def _overflow(node: Node) -> Overflow:
    node.obj()
    default = Overflow()
    enabled = node.get("enabled")
    queueing = node.get("queueing")
    size = node.get("maxQueueSize")
    wait = node.get("maxWaitTime")
    node.done()
    return Overflow(
        enabled=enabled.boolean() if enabled is not None else default.enabled,
        queueing=queueing.boolean() if queueing is not None else default.queueing,
        max_queue_size=size.integer(0) if size is not None else default.max_queue_size,
        max_wait_time=wait.number(0) if wait is not None else default.max_wait_time,
    )


def _windows(node: Node) -> tuple[TimeWindow, ...]:
    windows = []
    for index, text in enumerate(node.strings()):
        try:
            windows.append(parse_window(text))
        except UsageError as exc:
            raise ConfigError(node.file, f"{node.path}[{index}]", str(exc)) from exc
    return tuple(windows)


def _profiles(node: Node, *, with_times: bool) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name, entry in node.items():
        entry.obj()
        times_node = entry.get("times") if with_times else None
        profiles[name] = Profile(
            name=name,
            cpu_limit=_cpu(entry.get("cpuLimit")),
            memory_limit_bytes=_memory(entry, "memoryLimit", "memoryLimit_bytes"),
            times=_windows(times_node) if times_node is not None else (),
        )
        entry.done()
    return profiles


def _adaptation(node: Node) -> Adaptation:
    node.obj()
    default = Adaptation()
    enabled = node.get("enabled")
    frequency = node.get("adjustmentFrequency")
    threshold = node.get("usageThreshold")
    factor = node.get("reallocationFactor")
    node.done()
    return Adaptation(
        enabled=enabled.boolean() if enabled is not None else default.enabled,
        adjustment_frequency=(
            frequency.number(0, exclusive_minimum=True)
            if frequency is not None
            else default.adjustment_frequency
        ),
        usage_threshold=(
            threshold.number(0, 1, exclusive_minimum=True)
            if threshold is not None
            else default.usage_threshold
        ),
        reallocation_factor=(
            factor.number(0, 1, exclusive_minimum=True)
            if factor is not None
            else default.reallocation_factor
        ),
    )


def _sharing(node: Node, names: set[str], limits: ResourceLimits) -> ResourceSharing:
    strategy_node = node.get("strategy")
    strategy: Strategy = (
        strategy_node.choice(STRATEGIES) if strategy_node is not None else "equal"  # type: ignore[assignment]
    )
    cpu_node = node.get("cpuLimit")
    cpu = _cpu(cpu_node)
    if cpu is not None and cpu_node is not None and cpu > limits.max_cpu:
        raise cpu_node.error(
            f"the pool ({_pct(cpu)}) may not exceed global.resourceLimits.maxCpu "
            f"({_pct(limits.max_cpu)})"
        )
    memory = _memory(node, "memoryLimit", "memoryLimit_bytes")
    if memory is not None and memory > limits.max_memory_bytes:
        memory_node = node.get("memoryLimit") or node.get("memoryLimit_bytes")
        assert memory_node is not None
        raise memory_node.error(
            f"the pool ({format_size(memory)}) may not exceed global.resourceLimits.maxMemory "
            f"({format_size(limits.max_memory_bytes)})"
        )
    weights: dict[str, float] = {}
    weights_node = node.get("weights")
    if weights_node is not None:
        weights_node.obj()
        for name, value in weights_node.items():
            if name not in names:
                raise value.error(f"unknown project {name!r}{_known(names)}")
            weights[name] = value.number(0, exclusive_minimum=True)
    per_project: dict[str, Limit] = {}
    limits_node = node.get("perProjectLimits")
    if limits_node is not None:
        limits_node.obj()
        for name, value in limits_node.items():
            if name not in names:
                raise value.error(f"unknown project {name!r}{_known(names)}")
            per_project[name] = _limit(value)
    overcommit_node = node.get("overcommitCpu")
    overcommit = overcommit_node.boolean() if overcommit_node is not None else False
    if overcommit and strategy != "custom":
        assert overcommit_node is not None
        raise overcommit_node.error(
            f"overcommitCpu applies to the custom strategy (this one is {strategy!r})"
        )
    adaptation_node = node.get("adaptation")
    profiles_node = node.get("profiles")
    sharing = ResourceSharing(
        strategy=strategy,
        cpu_limit=cpu,
        memory_limit_bytes=memory,
        weights=weights,
        per_project_limits=per_project,
        overcommit_cpu=overcommit,
        adaptation=_adaptation(adaptation_node) if adaptation_node is not None else Adaptation(),
        profiles=_profiles(profiles_node.obj(), with_times=True) if profiles_node else {},
    )
    node.done()
    return sharing


def _pct(value: float) -> str:
    return f"{value:g}%"


def _check_custom_total(config: WorkspaceConfig, node: Node) -> None:
    """The guide's total check: custom per-project limits must fit the pool (CPU limits may
    total more with ``overcommitCpu``, each still within it)."""
    sharing = config.resource_sharing
    if sharing.strategy != "custom":
        return
    pool = config.pool
    enabled = {p.name for p in config.enabled_projects}
    limits = [lim for name, lim in sharing.per_project_limits.items() if name in enabled]
    path = "resource_sharing.perProjectLimits"
    cpu_total = sum(lim.cpu or 0.0 for lim in limits)
    if sharing.overcommit_cpu:
        for name, lim in sharing.per_project_limits.items():
            if name in enabled and pool.cpu is not None and (lim.cpu or 0.0) > pool.cpu + 1e-9:
                raise ConfigError(
                    node.file, f"{path}.{name}.maxCpu",
                    f"{_pct(lim.cpu or 0.0)} is over the pool of {_pct(pool.cpu)} (with "
                    "overcommitCpu the limits may total more than the pool, each within it)",
                )  # fmt: skip
    elif pool.cpu is not None and cpu_total > pool.cpu + 1e-9:
        raise ConfigError(
            node.file, path,
            f"custom limits total {_pct(cpu_total)} CPU, over the pool of {_pct(pool.cpu)} "
            '(with "overcommitCpu": true they may, the pool enforced on their sum)',
        )  # fmt: skip
    memory_total = sum(lim.memory_bytes or 0 for lim in limits)
    if pool.memory_bytes is not None and memory_total > pool.memory_bytes:
        raise ConfigError(
            node.file, path,
            f"custom limits total {format_size(memory_total)} memory, over the pool of "
            f"{format_size(pool.memory_bytes)}",
        )  # fmt: skip


# --- agents.json ---------------------------------------------------------------------------


def parse_agents(data: Any, file: Path, warnings: list[str] | None = None) -> AgentsConfig:
    """A checked :class:`AgentsConfig` from the parsed JSON of a project's agents.json."""
    warnings = [] if warnings is None else warnings
    root = Node(data, display_path(file), "", warnings).obj()
    version = _opt(root.get("version"), lambda n: n.string()) or "1.0.0"
    enabled_node = root.get("enabled")
    agents: dict[str, Agent] = {}
    agents_node = root.get("agents")
    if agents_node is not None:
        agents_node.obj()
        for name, entry in agents_node.items():
            agents[name] = _agent(name, entry.obj())
    # Keys DevLoop 0.10 writes that are not about resources: known, not warned about.
    root.get("eventSystem", "$schema", "description")
    global_node = root.get("global")
    concurrent = None
    project_limit = None
    interval = None
    action = None
    resume = None
    if global_node is not None:
        global_node.obj()
        global_node.get("mode", "notificationLevel", "logging", "contextStore",
                        "autonomousFixes")  # fmt: skip
        concurrent_node = global_node.get("maxConcurrentAgents")
        concurrent = concurrent_node.integer(1) if concurrent_node is not None else None
        limits_node = global_node.get("resourceLimits")
        if limits_node is not None:
            limits_node.obj()
            read = _enforcement(limits_node)
            project_limit = Limit(cpu=read.cpu, memory_bytes=read.memory_bytes)
            interval, action, resume = read.check_interval, read.action, read.resume_threshold
            limits_node.done()
        global_node.done()
    root.done()
    return AgentsConfig(
        file=file,
        version=version,
        enabled=enabled_node.boolean() if enabled_node is not None else True,
        agents=agents,
        max_concurrent_agents=concurrent,
        resource_limits=project_limit or Limit(),
        check_interval=interval,
        enforcement_action=action,
        resume_threshold=resume,
    )


def _agent(name: str, node: Node) -> Agent:
    enabled = node.get("enabled")
    command_node = node.get("command")
    command: tuple[str, ...] = ()
    if command_node is not None:
        if isinstance(command_node.value, str):
            try:
                command = tuple(shlex.split(command_node.value))
            except ValueError as exc:
                raise command_node.error(f"cannot split command: {exc}") from exc
        else:
            command = command_node.strings()
        if not command:
            raise command_node.error("must not be empty")
    triggers = node.get("triggers")
    config = node.get("config")
    limits_node = node.get("resourceLimits")
    limits = AgentLimits()
    if limits_node is not None:
        limits_node.obj()
        handles = limits_node.get("maxFileHandles")
        threads = limits_node.get("maxThreads")
        limits = AgentLimits(
            max_cpu=_cpu(limits_node.get("maxCpu")),
            max_memory_bytes=_memory(limits_node, "maxMemory", "maxMemory_bytes"),
            max_file_handles=handles.integer(1) if handles is not None else None,
            max_threads=threads.integer(1) if threads is not None else None,
        )
        limits_node.done()
    node.done()
    return Agent(
        name=name,
        enabled=enabled.boolean() if enabled is not None else True,
        command=command,
        triggers=triggers.strings() if triggers is not None else (),
        config=config.obj().value if config is not None else {},
        limits=limits,
    )


def environment_profile() -> str | None:
    """The profile named by ``DEVLOOP_RESOURCE_PROFILE``, if set and not empty."""
    value = os.environ.get("DEVLOOP_RESOURCE_PROFILE", "").strip()
    return value or None
