"""workspace.json and agents.json: what loads, and the exact error for what does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.config import load_workspace
from devloop.errors import ConfigError
from tests.conftest import guide_workspace

WS = ".devloop-workspace/workspace.json"

# The agents.json DevLoop 0.10 writes, as it writes it.
DEVLOOP_010_AGENTS = """{
  "version": "1.1.0",
  "enabled": true,
  "agents": {
    "linter": {
      "enabled": true,
      "triggers": ["file:modified", "file:created"],
      "config": {"autoFix": false, "reportOnly": true, "filePatterns": ["**/*.py"],
                 "linters": {"python": "ruff"}},
      "resourceLimits": {"maxCpu": 5, "maxMemory": 128}
    },
    "test-runner": {
      "enabled": true,
      "triggers": ["file:modified"],
      "config": {"runOnSave": true, "testFrameworks": {"python": "pytest"}},
      "resourceLimits": {"maxCpu": 15, "maxMemory": 512}
    },
    "ci-monitor": {"enabled": false, "triggers": ["time:tick"], "config": {"check_interval": 300}}
  },
  "global": {
    "mode": "report-only",
    "maxConcurrentAgents": 5,
    "notificationLevel": "summary",
    "resourceLimits": {
      "maxCpu": 25,
      "maxMemory": 500,
      "enforcementAction": "pause",
      "checkIntervalSeconds": 10,
      "resumeThresholdPercent": 80
    },
    "logging": {},
    "contextStore": {"enabled": true, "path": ".devloop/context"},
    "autonomousFixes": {"enabled": true, "safetyLevel": "safe_only"}
  },
  "eventSystem": {"collectors": {}, "dispatcher": {}, "store": {}}
}"""


def test_guide_global_limits_load(write_workspace):
    folder = write_workspace(
        guide_workspace(
            **{
                "global": {
                    "maxConcurrentAgents": 8,
                    "resourceLimits": {
                        "maxCpu": 60,
                        "maxMemory": "2GB",
                        "maxMemory_bytes": 2147483648,
                        "checkInterval": 10,
                        "enforcementAction": "pause",
                        "resumeThreshold": 0.8,
                        "overflow": {"enabled": True, "queueing": True, "maxQueueSize": 50,
                                     "maxWaitTime": 300},
                    },
                }
            }
        )
    )  # fmt: skip
    config = load_workspace(folder).config
    limits = config.global_.resource_limits
    assert (limits.max_cpu, limits.max_memory_bytes) == (60.0, 2147483648)
    assert (limits.check_interval, limits.enforcement_action, limits.resume_threshold) == (
        10.0, "pause", 0.8)  # fmt: skip
    assert limits.overflow.enabled and limits.overflow.max_queue_size == 50
    assert limits.overflow.max_wait_time == 300.0
    assert config.global_.max_concurrent_agents == 8
    assert config.pool.cpu == 60.0 and config.pool.memory_bytes == 2147483648


def test_defaults_when_keys_are_absent(write_workspace):
    config = load_workspace(write_workspace({"projects": [{"name": "a", "path": "a"}]})).config
    project = config.projects[0]
    assert (project.enabled, project.priority, project.weight) == (True, 2, None)
    assert config.resource_sharing.strategy == "equal"
    assert config.pool.cpu == 60.0 and config.pool.memory_bytes == 2 * 1024**3
    assert config.workspace_root == Path.cwd().resolve()


def test_guide_priority_example_with_comments_loads(write_workspace):
    text = """{
      "projects": [
        { "name": "auth-service", "priority": 0 },    // Critical
        { "name": "api-service", "priority": 1 },     // High
        { "name": "worker-service", "priority": 2 }   // Normal
      ],
      /* the guide's strategy block */
      "resource_sharing": { "strategy": "priority" }
    }"""
    config = load_workspace(write_workspace(text)).config
    assert [(p.name, p.priority, p.path) for p in config.projects] == [
        ("auth-service", 0, "auth-service"),
        ("api-service", 1, "api-service"),
        ("worker-service", 2, "worker-service"),
    ]


def test_devloop_010_agents_json_loads_as_written(write_workspace):
    folder = write_workspace(
        {"projects": [{"name": "api", "path": "api"}]}, agents={"api": DEVLOOP_010_AGENTS}
    )
    loaded = load_workspace(folder)
    agents = loaded.agents["api"]
    assert loaded.warnings == ()
    assert agents.version == "1.1.0"
    assert [a.name for a in agents.enabled_agents] == ["linter", "test-runner"]
    linter = agents.agents["linter"]
    assert linter.limits.max_cpu == 5.0
    assert linter.limits.max_memory_bytes == 128 * 1024**2  # integer maxMemory is MB
    assert linter.triggers == ("file:modified", "file:created")
    assert linter.config["linters"] == {"python": "ruff"}
    assert agents.resource_limits.cpu == 25.0
    assert agents.resource_limits.memory_bytes == 500 * 1024**2
    assert agents.check_interval == 10.0
    assert agents.resume_threshold == 0.8
    assert agents.max_concurrent_agents == 5


def test_both_key_spellings(write_workspace):
    data = guide_workspace()
    data["global"]["resourceLimits"] = {"checkIntervalSeconds": 5, "resumeThresholdPercent": 70}
    limits = load_workspace(write_workspace(data)).config.global_.resource_limits
    assert (limits.check_interval, limits.resume_threshold) == (5.0, 0.7)


def test_unknown_keys_warn_but_load(write_workspace):
    data = guide_workspace({"strategy": "equal", "fairness": "max-min"}, colour="blue")
    runner = CliRunner()
    write_workspace(data)
    result = runner.invoke(cli, ["workspace", "validate", "--workspace-dir", ".devloop-workspace"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Warning: {WS}: resource_sharing.fairness: unknown key, ignored",
        f"Warning: {WS}: colour: unknown key, ignored",
    ]


def test_command_string_is_split(write_workspace):
    agents = {"agents": {"lint": {"command": "ruff check --select 'E,F' ."}}}
    folder = write_workspace({"projects": [{"name": "a", "path": "a"}]}, agents={"a": agents})
    command = load_workspace(folder).agents["a"].agents["lint"].command
    assert command == ("ruff", "check", "--select", "E,F", ".")


def _global(**limits):
    return guide_workspace(**{"global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB",
                                                            **limits}}})  # fmt: skip


def _project(index_value: dict, index: int = 1):
    data = guide_workspace()
    data["projects"][index].update(index_value)
    return data


MALFORMED = [
    ('{"projects": [}', f"{WS}: line 1 column 15: invalid JSON: Expecting value"),
    ('{"projects": []\n "global": {}}', f"{WS}: line 2 column 2: invalid JSON: "
     "Expecting ',' delimiter"),
    ("[1, 2]", f"{WS}: (top level): must be an object, got a list"),
    ({"projects": {"a": {}}}, f"{WS}: projects: must be a list, got an object"),
    (_global(maxCpu="sixty"), f'{WS}: global.resourceLimits.maxCpu: must be a number, '
     'got a string "sixty"'),
    (_global(maxCpu=150), f"{WS}: global.resourceLimits.maxCpu: must be from 0 to 100, got 150"),
    (_global(maxMemory="2XB"), f"{WS}: global.resourceLimits.maxMemory: unknown size unit 'XB' "
     "in '2XB' (use B, KB, MB, GB, TB)"),
    (_global(maxMemory="-5MB"), f"{WS}: global.resourceLimits.maxMemory: size must not be "
     "negative: '-5MB'"),
    (_global(maxMemory="1GB", maxMemory_bytes=2147483648), f"{WS}: global.resourceLimits."
     "maxMemory_bytes: 2147483648 bytes disagrees with maxMemory '1GB' (1073741824 bytes); "
     "give one of them"),
    (_global(enforcementAction="kill"), f'{WS}: global.resourceLimits.enforcementAction: must be '
     'one of pause, warn, throttle, got "kill"'),
    (_global(checkInterval=0), f"{WS}: global.resourceLimits.checkInterval: must be above 0 and "
     "at most 86400, got 0"),
    (_global(overflow={"maxQueueSize": -1}), f"{WS}: global.resourceLimits.overflow.maxQueueSize:"
     " must be at least 0, got -1"),
    (_project({"priority": 5}), f"{WS}: projects[1].priority: must be from 0 to 3, got 5"),
    (_project({"priority": 1.5}), f"{WS}: projects[1].priority: must be a whole number, "
     "got a number 1.5"),
    (_project({"enabled": "yes"}), f'{WS}: projects[1].enabled: must be true or false, '
     'got a string "yes"'),
    (_project({"weight": 0}), f"{WS}: projects[1].weight: must be above 0, got 0"),
    (_project({"name": "auth-service"}), f"{WS}: projects[1].name: duplicate project name "
     "'auth-service' (first at projects[0])"),
    (_project({"dependencies": ["billing"]}), f"{WS}: projects[1].dependencies[0]: unknown "
     "project 'billing' (known projects: api-service, auth-service, worker-service)"),
    ({"projects": [{"path": "a"}]}, f"{WS}: projects[0]: missing key 'name'"),
    (guide_workspace({"strategy": "fair"}), f'{WS}: resource_sharing.strategy: must be one of '
     'equal, weighted, priority, dynamic, custom, got "fair"'),
    (guide_workspace({"strategy": "weighted", "weights": {"billing": 1}}), f"{WS}: "
     "resource_sharing.weights.billing: unknown project 'billing' (known projects: "
     "api-service, auth-service, worker-service)"),
    (guide_workspace({"strategy": "weighted", "weights": {"api-service": -2}}), f"{WS}: "
     "resource_sharing.weights.api-service: must be above 0, got -2"),
    (guide_workspace({"perProjectLimits": {"billing": {"maxCpu": 5}}}), f"{WS}: "
     "resource_sharing.perProjectLimits.billing: unknown project 'billing' (known projects: "
     "api-service, auth-service, worker-service)"),
    (guide_workspace({"strategy": "custom", "perProjectLimits": {
        "auth-service": {"maxCpu": 30}, "api-service": {"maxCpu": 30},
        "worker-service": {"maxCpu": 10}}}),
     f"{WS}: resource_sharing.perProjectLimits: custom limits total 70% CPU, over the pool of 60% "
     '(with "overcommitCpu": true they may, the pool enforced on their sum)'),
    (guide_workspace({"strategy": "custom", "perProjectLimits": {
        "auth-service": {"maxMemory": "1GB"}, "api-service": {"maxMemory": "800MB"},
        "worker-service": {"maxMemory": "512MB"}}}),
     f"{WS}: resource_sharing.perProjectLimits: custom limits total 2.3GB memory, over the pool "
     "of 2GB"),
    (guide_workspace({"cpuLimit": 80}), f"{WS}: resource_sharing.cpuLimit: the pool (80%) may not "
     "exceed global.resourceLimits.maxCpu (60%)"),
    (guide_workspace({"memoryLimit": "3GB"}), f"{WS}: resource_sharing.memoryLimit: the pool "
     "(3GB) may not exceed global.resourceLimits.maxMemory (2GB)"),
    (guide_workspace({"profiles": {"peak": {"cpuLimit": 80, "times": ["25:00-09:00"]}}}),
     f"{WS}: resource_sharing.profiles.peak.times[0]: not a time of day in '25:00-09:00' "
     "(hours 00-23, minutes 00-59)"),
    (guide_workspace({"profiles": {"idle": {"times": ["9-17"]}}}), f"{WS}: "
     "resource_sharing.profiles.idle.times[0]: not a time window: '9-17' (expected HH:MM-HH:MM, "
     "like 09:00-17:00)"),
    (guide_workspace({"adaptation": {"usageThreshold": 80}}), f"{WS}: "
     "resource_sharing.adaptation.usageThreshold: must be above 0 and at most 1, got 80"),
    (guide_workspace(resource_profiles={"ci": {"cpuLimit": "90%"}}), f'{WS}: '
     'resource_profiles.ci.cpuLimit: must be a number, got a string "90%"'),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), MALFORMED)
def test_malformed_workspace_json_gives_one_line_error(write_workspace, data, expected):
    write_workspace(data)
    result = CliRunner().invoke(cli, ["workspace", "limits"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {expected}\n"
    assert "Traceback" not in result.output


AGENTS = "api/.devloop/agents.json"

MALFORMED_AGENTS = [
    ({"agents": {"lint": {"resourceLimits": {"maxMemory": "lots"}}}}, f"{AGENTS}: "
     "agents.lint.resourceLimits.maxMemory: not a size: 'lots' (expected a number and a unit, "
     "like '512MB')"),
    ({"agents": {"lint": {"resourceLimits": {"maxThreads": 0}}}}, f"{AGENTS}: "
     "agents.lint.resourceLimits.maxThreads: must be at least 1, got 0"),
    ({"agents": {"lint": {"command": []}}}, f"{AGENTS}: agents.lint.command: must not be empty"),
    ({"agents": ["lint"]}, f"{AGENTS}: agents: must be an object, got a list"),
    ({"global": {"resourceLimits": {"resumeThresholdPercent": 0}}}, f"{AGENTS}: "
     "global.resourceLimits.resumeThresholdPercent: must be above 0 and at most 100, got 0"),
    ({"global": {"resourceLimits": {"resumeThreshold": 1.5}}}, f"{AGENTS}: "
     "global.resourceLimits.resumeThreshold: 1.5 is ambiguous: write a fraction of the limit "
     "(0.8) or a percent (80)"),
    ({"global": {"resourceLimits": {"resumeThresholdPercent": 9}}}, f"{AGENTS}: "
     "global.resourceLimits.resumeThresholdPercent: 9 is ambiguous: write a fraction of the "
     "limit (0.8) or a percent (80)"),
    ('{"agents": {"lint": {"enabled": true,}}}', f"{AGENTS}: line 1 column 38: invalid JSON: "
     "Expecting property name enclosed in double quotes"),
]  # fmt: skip


@pytest.mark.parametrize(("agents", "expected"), MALFORMED_AGENTS)
def test_malformed_agents_json_gives_one_line_error(write_workspace, agents, expected):
    write_workspace({"projects": [{"name": "api", "path": "api"}]}, agents={"api": agents})
    result = CliRunner().invoke(cli, ["workspace", "validate"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {expected}\n"


def test_missing_workspace_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["workspace", "limits"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no .devloop-workspace/workspace.json in ")


def test_config_error_carries_file_and_path(write_workspace):
    folder = write_workspace(_project({"priority": -1}))
    with pytest.raises(ConfigError) as caught:
        load_workspace(folder)
    assert (caught.value.file, caught.value.path) == (WS, "projects[1].priority")


def test_validate_json_reports_what_was_read(write_workspace):
    write_workspace(
        {"projects": [{"name": "api", "path": "api", "priority": 0}]},
        agents={"api": DEVLOOP_010_AGENTS},
    )
    result = CliRunner().invoke(cli, ["workspace", "validate", "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["projects"] == [
        {
            "name": "api",
            "path": "api",
            "enabled": True,
            "priority": 0,
            "weight": None,
            "agents_file": AGENTS,
            "agents": ["linter", "test-runner"],
        }
    ]
    assert summary["global"]["resumeThreshold"] == 0.8


def test_the_fast_run_path_names_the_workspace_files_as_the_config_does() -> None:
    """``devloop run``'s fast path keeps its own copies (it imports no more than os, time and
    fcntl); they must be the config's."""
    from devloop.cli import fastrun
    from devloop.config import WORKSPACE_DIR_NAME, WORKSPACE_FILE

    assert (fastrun._WORKSPACE_DIR_NAME, fastrun._WORKSPACE_FILE) == (
        WORKSPACE_DIR_NAME,
        WORKSPACE_FILE,
    )
