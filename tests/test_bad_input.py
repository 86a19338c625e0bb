"""The bad input campaign: every case is refused with one line and changes nothing.

Each case writes a small workspace into a fresh folder (``workspace.json`` with projects api and
web, api's ``agents.json``, and whatever the case breaks), runs the real command line, and checks
that it exits 1 (``Error: ...`` from devloop) or 2 (click's usage error: ``Usage:``/``Try``
lines, then one ``Error:`` line), prints exactly one ``Error:`` line matching the case's pattern
(a config error names its file and the JSON path of the key), prints no traceback, and leaves
every file and folder of the workspace as it was (names, sizes, modification times).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from tests.test_analytics_reports import build_store

WS = ".devloop-workspace/workspace.json"
AGENTS = "api/.devloop/agents.json"
SUGGESTIONS = "suggestions.json"
DIR = ["--workspace-dir", ".devloop-workspace"]
VALIDATE = ["workspace", "validate", *DIR]
PEAK = ["workspace", "analytics", "peak-usage", *DIR]

BASE_WORKSPACE: dict[str, Any] = {
    "workspace_name": "bad",
    "projects": [{"name": "api", "path": "api", "priority": 1}, {"name": "web", "path": "web"}],
    "global": {
        "maxConcurrentAgents": 2,
        "resourceLimits": {"maxCpu": 60, "maxMemory": "2GB", "resumeThreshold": 0.8},
    },
    "resource_sharing": {
        "strategy": "equal",
        "profiles": {"day": {"cpuLimit": 40, "times": ["09:00-17:00"]}},
    },
}
BASE_AGENTS: dict[str, Any] = {
    "agents": {"tests": {"command": ["pytest", "-q"], "resourceLimits": {"maxCpu": 15}}},
    "global": {"resourceLimits": {"maxCpu": 25}},
}
DELETE = object()


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the value at ``path`` (``a.b[0].c``) replaced (or deleted)."""
    out = copy.deepcopy(data)
    keys: list[str | int] = [
        int(part[1:-1]) if part.startswith("[") else part
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", path)
    ]
    target: Any = out
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return out


def workspace(path: str | None = None, value: Any = None) -> dict[str, str]:
    """The base workspace's files, with ``path`` of workspace.json set to ``value``."""
    data = BASE_WORKSPACE if path is None else _set(BASE_WORKSPACE, path, value)
    return {WS: json.dumps(data, indent=2), AGENTS: json.dumps(BASE_AGENTS, indent=2)}


def agents(path: str, value: Any) -> dict[str, str]:
    """The base workspace's files, with ``path`` of api's agents.json set to ``value``."""
    return {**workspace(), AGENTS: json.dumps(_set(BASE_AGENTS, path, value), indent=2)}


def suggestions(**changes: Any) -> dict[str, str]:
    """The base workspace and a suggestions file for it, with top-level keys changed."""
    data: dict[str, Any] = {
        "kind": "devloop-autotune-suggestions",
        "version": 2,
        "workspace": {"name": "bad", "projects": ["api", "web"]},
        "projects": [],
    }
    data.update(changes)
    return {**workspace(), SUGGESTIONS: json.dumps(data)}


def config_error(file: str, key: str, problem: str) -> str:
    """The pattern of ``Error: <file>: <key>: <problem>`` (``problem`` is a regex)."""
    return rf"Error: {re.escape(file)}: {re.escape(key)}: {problem}"


def ws_error(key: str, problem: str) -> str:
    return config_error(WS, key, problem)


def agents_error(key: str, problem: str) -> str:
    return config_error(AGENTS, key, problem)


def usage(option: str, problem: str) -> str:
    """The pattern of click's ``Error: Invalid value for <option>: <problem>``."""
    return rf"Error: Invalid value for {re.escape(option)}: {problem}"


@dataclass(frozen=True)
class Case:
    """One bad input: the files of the workspace, the command, the exit code, the error line."""

    id: str
    files: dict[str, str]
    argv: list[str]
    exit_code: int
    error: str
    store: bool = False
    xfail: str | None = field(default=None)


def ws_case(id: str, path: str, value: Any, error: str) -> Case:
    return Case(id, workspace(path, value), VALIDATE, 1, error)


def agents_case(id: str, path: str, value: Any, error: str) -> Case:
    return Case(id, agents(path, value), VALIDATE, 1, error)


def time_case(id: str, options: list[str], exit_code: int, error: str) -> Case:
    return Case(id, workspace(), [*PEAK, *options], exit_code, error)


def sql_case(id: str, statement: str, error: str) -> Case:
    return Case(
        id, workspace(), ["workspace", "sql", statement, *DIR], 1, f"Error: {error}", store=True
    )


RANGE = r"must be from 0 to 100, got "
CASES: list[Case] = [
    # --- workspace.json: not JSON, not an object ------------------------------------------
    Case("ws-not-json", {**workspace(), WS: '{"projects": [,]}'}, VALIDATE, 1,
         config_error(WS, "line 1 column 15", "invalid JSON: Expecting value")),
    Case("ws-truncated", {**workspace(), WS: json.dumps(BASE_WORKSPACE)[:40]}, VALIDATE, 1,
         rf"Error: {re.escape(WS)}: line 1 column \d+: invalid JSON: .+"),
    Case("ws-empty-file", {**workspace(), WS: ""}, VALIDATE, 1,
         config_error(WS, "line 1 column 1", "invalid JSON: Expecting value")),
    Case("ws-a-list", {**workspace(), WS: "[]"}, VALIDATE, 1,
         config_error(WS, "(top level)", "must be an object, got a list")),
    Case("ws-not-utf8", {**workspace(), WS: "\udcff"}, VALIDATE, 1,
         rf"Error: {re.escape(WS)}: not UTF-8 text"),
    # --- workspace.json: wrong types ------------------------------------------------------
    ws_case("projects-an-object", "projects", {"api": "api"},
            ws_error("projects", "must be a list, got an object")),
    ws_case("project-name-a-number", "projects[1].name", 7,
            ws_error("projects[1].name", "must be a string, got a number")),
    ws_case("project-name-missing", "projects[1].name", DELETE,
            ws_error("projects[1]", "missing key 'name'")),
    ws_case("project-name-empty", "projects[1].name", " ",
            ws_error("projects[1].name", "must not be empty")),
    ws_case("project-name-twice", "projects[1].name", "api",
            ws_error("projects[1].name",
                     r"duplicate project name 'api' \(first at projects\[0\]\)")),
    ws_case("project-enabled-a-string", "projects[0].enabled", "yes",
            ws_error("projects[0].enabled", 'must be true or false, got a string "yes"')),
    ws_case("project-unknown-dependency", "projects[0].dependencies", ["db"],
            ws_error("projects[0].dependencies[0]",
                     r"unknown project 'db' \(known projects: api, web\)")),
    ws_case("max-cpu-a-string", "global.resourceLimits.maxCpu", "60%",
            ws_error("global.resourceLimits.maxCpu", 'must be a number, got a string "60%"')),
    ws_case("global-a-list", "global", [],
            ws_error("global", "must be an object, got a list")),
    ws_case("strategy-unknown", "resource_sharing.strategy", "fair",
            ws_error("resource_sharing.strategy",
                     'must be one of equal, weighted, priority, dynamic, custom, got "fair"')),
    ws_case("action-unknown", "global.resourceLimits.enforcementAction", "kill",
            ws_error("global.resourceLimits.enforcementAction", 'must be one of .+, got "kill"')),
    # --- workspace.json: limits out of range ----------------------------------------------
    ws_case("max-cpu-over-100", "global.resourceLimits.maxCpu", 150,
            ws_error("global.resourceLimits.maxCpu", RANGE + "150")),
    ws_case("max-cpu-negative", "global.resourceLimits.maxCpu", -5,
            ws_error("global.resourceLimits.maxCpu", RANGE + "-5")),
    Case("max-cpu-nan", {**workspace(), WS: json.dumps(
        _set(BASE_WORKSPACE, "global.resourceLimits.maxCpu", float("nan")))}, VALIDATE, 1,
         ws_error("global.resourceLimits.maxCpu", "must be a finite number")),
    Case("max-cpu-infinity", {**workspace(), WS: json.dumps(
        _set(BASE_WORKSPACE, "global.resourceLimits.maxCpu", float("inf")))}, VALIDATE, 1,
         ws_error("global.resourceLimits.maxCpu", "must be a finite number")),
    ws_case("pool-cpu-over-global", "resource_sharing.cpuLimit", 80,
            ws_error("resource_sharing.cpuLimit",
                     r"the pool \(80%\) may not exceed global.resourceLimits.maxCpu \(60%\)")),
    ws_case("profile-cpu-limit-over-100", "resource_sharing.profiles.day.cpuLimit", 101,
            ws_error("resource_sharing.profiles.day.cpuLimit", RANGE + "101")),
    ws_case("memory-unknown-unit", "global.resourceLimits.maxMemory", "2XB",
            ws_error("global.resourceLimits.maxMemory", r"unknown size unit 'XB' in '2XB'.*")),
    ws_case("memory-negative", "global.resourceLimits.maxMemory", "-1GB",
            ws_error("global.resourceLimits.maxMemory", r"size must not be negative: '-1GB'")),
    ws_case("memory-negative-number", "global.resourceLimits.maxMemory", -512,
            ws_error("global.resourceLimits.maxMemory", r"not a size: -512.*")),
    ws_case("memory-bytes-negative", "global.resourceLimits.maxMemory_bytes", -1,
            ws_error("global.resourceLimits.maxMemory_bytes", r"must be at least 0, got -1")),
    ws_case("memory-no-number", "global.resourceLimits.maxMemory", "lots",
            ws_error("global.resourceLimits.maxMemory", r"not a size: 'lots'.*")),
    ws_case("memory-a-list", "global.resourceLimits.maxMemory", [2, "GB"],
            ws_error("global.resourceLimits.maxMemory", 'must be a size like "512MB", got a list')),
    ws_case("memory-bytes-disagree", "global.resourceLimits.maxMemory_bytes", 1024,
            ws_error("global.resourceLimits.maxMemory_bytes",
                     r"1024 bytes disagrees with maxMemory '2GB' .*")),
    ws_case("profile-memory-unknown-unit", "resource_sharing.profiles.day.memoryLimit", "1 gallon",
            ws_error("resource_sharing.profiles.day.memoryLimit", r"unknown size unit .*")),
    ws_case("resume-threshold-1.5", "global.resourceLimits.resumeThreshold", 1.5,
            ws_error("global.resourceLimits.resumeThreshold", r"1.5 is ambiguous: .*")),
    ws_case("resume-threshold-0", "global.resourceLimits.resumeThreshold", 0,
            ws_error("global.resourceLimits.resumeThreshold",
                     r"must be above 0 and at most 100, got 0")),
    ws_case("resume-threshold-11", "global.resourceLimits.resumeThreshold", 110,
            ws_error("global.resourceLimits.resumeThreshold",
                     r"must be above 0 and at most 100, got 110")),
    ws_case("resume-threshold-a-string", "global.resourceLimits.resumeThreshold", "80%",
            ws_error("global.resourceLimits.resumeThreshold",
                     r"must be a number, got a string .*")),
    ws_case("check-interval-zero", "global.resourceLimits.checkInterval", 0,
            ws_error("global.resourceLimits.checkInterval",
                     r"must be above 0 and at most 86400, got 0")),
    ws_case("max-concurrent-0", "global.maxConcurrentAgents", 0,
            ws_error("global.maxConcurrentAgents", r"must be at least 1, got 0")),
    ws_case("max-concurrent-negative", "global.maxConcurrentAgents", -1,
            ws_error("global.maxConcurrentAgents", r"must be at least 1, got -1")),
    ws_case("max-concurrent-fraction", "global.maxConcurrentAgents", 2.5,
            ws_error("global.maxConcurrentAgents", r"must be a whole number, got a number 2.5")),
    ws_case("queue-size-negative", "global.resourceLimits.overflow", {"maxQueueSize": -3},
            ws_error("global.resourceLimits.overflow.maxQueueSize",
                     r"must be at least 0, got -3")),
    ws_case("priority-a-string", "projects[0].priority", "high",
            ws_error("projects[0].priority", r'must be a whole number, got a string "high"')),
    ws_case("priority-a-fraction", "projects[0].priority", 1.5,
            ws_error("projects[0].priority", r"must be a whole number, got a number 1.5")),
    ws_case("priority-out-of-range", "projects[0].priority", 9,
            ws_error("projects[0].priority", r"must be from 0 to 3, got 9")),
    ws_case("weight-zero", "resource_sharing.weights", {"api": 0},
            ws_error("resource_sharing.weights.api", r"must be above 0, got 0")),
    ws_case("weight-unknown-project", "resource_sharing.weights", {"db": 1},
            ws_error("resource_sharing.weights.db", r"unknown project 'db' .*")),
    ws_case("usage-threshold-over-1", "resource_sharing.adaptation", {"usageThreshold": 80},
            ws_error("resource_sharing.adaptation.usageThreshold",
                     r"must be above 0 and at most 1, got 80")),
    # --- workspace.json: profiles' times ---------------------------------------------------
    ws_case("profile-time-25h", "resource_sharing.profiles.day.times", ["09:00-25:00"],
            ws_error("resource_sharing.profiles.day.times[0]",
                     r"not a time of day in '09:00-25:00' .*")),
    ws_case("profile-time-minutes-60", "resource_sharing.profiles.day.times", ["09:60-17:00"],
            ws_error("resource_sharing.profiles.day.times[0]", r"not a time of day .*")),
    ws_case("profile-time-no-end", "resource_sharing.profiles.day.times", ["09:00"],
            ws_error("resource_sharing.profiles.day.times[0]",
                     r"not a time window: '09:00' \(expected HH:MM-HH:MM, like 09:00-17:00\)")),
    ws_case("profile-times-a-string", "resource_sharing.profiles.day.times", "09:00-17:00",
            ws_error("resource_sharing.profiles.day.times",
                     r"must be a list of strings, got a string")),
    ws_case("profile-a-number", "resource_sharing.profiles.day", 40,
            ws_error("resource_sharing.profiles.day", r"must be an object, got a number")),
    # --- agents.json ----------------------------------------------------------------------
    Case("agents-not-json", {**workspace(), AGENTS: "{'agents': {}}"}, VALIDATE, 1,
         config_error(AGENTS, "line 1 column 2", "invalid JSON: Expecting property name .+")),
    Case("agents-a-string", {**workspace(), AGENTS: '"tests"'}, VALIDATE, 1,
         config_error(AGENTS, "(top level)", "must be an object, got a string")),
    Case("agents-duplicate-name", {**workspace(), AGENTS: (
        '{"agents": {"tests": {"command": ["pytest"]}, "tests": {"command": ["tox"]}}}')},
         VALIDATE, 1, agents_error("agents.tests", r"duplicate key 'tests' "
                                   r"\(JSON keeps only the last; give it once\)")),
    Case("ws-duplicate-key", {**workspace(), WS: (
        '{"workspace_name": "bad", '
        '"global": {"maxConcurrentAgents": 2, "maxConcurrentAgents": 9}}')},
         VALIDATE, 1, ws_error("global.maxConcurrentAgents", r"duplicate key .*")),
    agents_case("agents-a-list", "agents", [{"name": "tests"}],
                agents_error("agents", r"must be an object, got a list")),
    agents_case("agent-a-string", "agents.tests", "pytest -q",
                agents_error("agents.tests", r"must be an object, got a string")),
    agents_case("agent-command-empty-list", "agents.tests.command", [],
                agents_error("agents.tests.command", r"must not be empty")),
    agents_case("agent-command-empty-string", "agents.tests.command", "  ",
                agents_error("agents.tests.command", r"must not be empty")),
    agents_case("agent-command-unclosed-quote", "agents.tests.command", "pytest -k 'slow",
                agents_error("agents.tests.command",
                             r"cannot split command: No closing quotation")),
    agents_case("agent-command-a-number", "agents.tests.command", 7,
                agents_error("agents.tests.command", r"must be a list of strings, got a number")),
    agents_case("agent-command-item-a-number", "agents.tests.command", ["pytest", 1],
                agents_error("agents.tests.command[1]", r"must be a string, got a number")),
    agents_case("agent-enabled-a-number", "agents.tests.enabled", 1,
                agents_error("agents.tests.enabled", r"must be true or false, got a number 1")),
    agents_case("agent-cpu-over-100", "agents.tests.resourceLimits.maxCpu", 250,
                agents_error("agents.tests.resourceLimits.maxCpu", RANGE + "250")),
    agents_case("agent-memory-bad-unit", "agents.tests.resourceLimits.maxMemory", "2XB",
                agents_error("agents.tests.resourceLimits.maxMemory",
                             r"unknown size unit 'XB' in '2XB'.*")),
    agents_case("agent-threads-zero", "agents.tests.resourceLimits.maxThreads", 0,
                agents_error("agents.tests.resourceLimits.maxThreads",
                             r"must be at least 1, got 0")),
    agents_case("agents-global-cpu-negative", "global.resourceLimits.maxCpu", -1,
                agents_error("global.resourceLimits.maxCpu", RANGE + "-1")),
    agents_case("agents-resume-percent-5", "global.resourceLimits.resumeThresholdPercent", 5,
                agents_error("global.resourceLimits.resumeThresholdPercent",
                             r"5 is ambiguous: .*")),
    agents_case("agents-max-concurrent-0", "global.maxConcurrentAgents", 0,
                agents_error("global.maxConcurrentAgents", r"must be at least 1, got 0")),
    # --- time options ---------------------------------------------------------------------
    time_case("start-tomorrow-ish", ["--start", "tomorrow-ish"], 2,
              usage("--start", r"cannot read the time 'tomorrow-ish': expected .*")),
    time_case("start-empty", ["--start", ""], 2, usage("--start", r"empty time '': .*")),
    time_case("start-hour-25", ["--start", "25:00"], 2,
              usage("--start", r"cannot read the time '25:00': no such time of day")),
    time_case("start-bad-date", ["--start", "2026-02-30"], 2,
              usage("--start", r"cannot read the time '2026-02-30': .*")),
    time_case("end-before-start", ["--start", "2026-01-05T10:00Z", "--end", "2026-01-05T09:00Z"],
              2, r"Error: the start \(2026-01-05 10:00:00 UTC\) is not before the end "
                 r"\(2026-01-05 09:00:00 UTC\)"),
    time_case("all-three", ["--start", "2 hours ago", "--end", "now", "--period", "1h"], 2,
              r"Error: give at most two of --start, --end and --period"),
    time_case("period-0s", ["--period", "0s"], 2,
              usage("--period", r"the period must be positive, not '0s'")),
    time_case("period-negative", ["--period", "-5m"], 2,
              usage("--period", r"not a duration: '-5m' .*")),
    time_case("period-parsecs", ["--period", "5parsecs"], 2,
              usage("--period", r"unknown duration unit 'parsecs' in '5parsecs' .*")),
    time_case("period-empty", ["--period", ""], 2, usage("--period", r"empty duration")),
    Case("health-min-life-zero", workspace(), ["workspace", "health", *DIR, "--min-life", "0"],
         2, usage("--min-life", r"must be above 0, got '0'")),
    Case("bottlenecks-min-duration-bad", workspace(),
         ["workspace", "analytics", "bottlenecks", *DIR, "--min-duration", "soon"], 2,
         usage("--min-duration", r"not a duration: 'soon' .*")),
    Case("metrics-interval-negative", workspace(),
         ["workspace", "metrics", *DIR, "--interval", "-1m"], 2,
         usage("--interval", r"not a duration: '-1m' .*")),
    Case("limits-at-25h", workspace(), ["workspace", "limits", *DIR, "--at", "25:00"], 2,
         usage("--at", r"not a time of day in '25:00' .*")),
    # --- size options ---------------------------------------------------------------------
    Case("compact-max-size-xb", workspace(), ["workspace", "compact", *DIR, "--max-size", "2XB"],
         2, usage("--max-size", r"unknown size unit 'XB' in '2XB' .*")),
    Case("compact-max-size-negative", workspace(),
         ["workspace", "compact", *DIR, "--max-size", "-1GB"], 2,
         usage("--max-size", r"size must not be negative: '-1GB'")),
    Case("compact-max-size-zero", workspace(), ["workspace", "compact", *DIR, "--max-size", "0"],
         2, usage("--max-size", r"must be above 0, got '0'")),
    Case("compact-retention-zero", workspace(),
         ["workspace", "compact", *DIR, "--retention", "0d"], 2,
         usage("--retention", r"must be above 0, got '0d'")),
    Case("collect-max-size-no-unit-word", workspace(),
         ["workspace", "collect", *DIR, "--max-size", "big"], 2,
         usage("--max-size", r"not a size: 'big' .*")),
    Case("init-max-memory-xb", {}, ["workspace", "init", ".", "--max-memory", "2XB"], 1,
         r"Error: unknown size unit 'XB' in '2XB' \(use B, KB, MB, GB, TB\)"),
    Case("init-max-memory-negative", {}, ["workspace", "init", ".", "--max-memory", "-1GB"], 1,
         r"Error: size must not be negative: '-1GB'"),
    # --- workspace sql --------------------------------------------------------------------
    sql_case("sql-syntax-error", "SELEC 1",
             r'SQL error: Parser Error: syntax error at or near "SELEC" \(at line 1, column 1\)'),
    sql_case("sql-syntax-error-line-2", "SELECT 1\nFROM samples WHERE",
             r'SQL error: Parser Error: syntax error at or near "WHERE" \(at line 2, column 14\)'),
    sql_case("sql-unknown-view", "SELECT * FROM sample",
             r'SQL error: Catalog Error: Table with name sample does not exist! '
             r'Did you mean "samples"\?'),
    sql_case("sql-unknown-column", "SELECT nocol FROM samples",
             r'SQL error: Binder Error: Referenced column "nocol" not found in FROM clause! '
             r'Candidate bindings: .*'),
    sql_case("sql-bad-cast", "SELECT 'a'::int",
             r"SQL error: Conversion Error: Could not convert string 'a' to INT32 "
             r"\(at line 1, column \d+\)"),
    sql_case("sql-delete", "DELETE FROM samples", r".*read-only.*not a DELETE statement"),
    sql_case("sql-copy-out", "COPY samples TO 'out.csv'", r".*read-only.*not a COPY statement"),
    sql_case("sql-create-table", "CREATE TABLE t AS SELECT 1",
             r".*read-only.*not a CREATE statement"),
    sql_case("sql-attach", "ATTACH 'other.db' AS other", r".*read-only.*not a ATTACH statement"),
    sql_case("sql-read-workspace-json",
             "SELECT * FROM read_text('.devloop-workspace/workspace.json')",
             r".*read-only: Cannot access file .*workspace.json.*"),
    # --- suggestions files (apply-tuning) -------------------------------------------------
    Case("suggestions-not-json", {**workspace(), SUGGESTIONS: "kind: suggestions"},
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS}: not a suggestions file: .*"),
    Case("suggestions-missing", workspace(),
         ["workspace", "apply-tuning", "nowhere.json", *DIR], 1,
         r"Error: nowhere.json: file not found"),
    Case("suggestions-wrong-kind", suggestions(kind="devloop-baseline"),
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS}: not a suggestions file \(kind is not .*\)"),
    Case("suggestions-version-1", suggestions(version=1),
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS}: version 1 names files by path, .*"),
    Case("suggestions-version-9", suggestions(version=9),
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS}: version 9 is not supported \(2\)"),
    Case("suggestions-another-workspace",
         suggestions(workspace={"name": "shop", "projects": ["api", "db"]}),
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS} was made for workspace 'shop' \(projects api, db\), not for .*"),
    Case("suggestions-no-workspace", suggestions(workspace=None),
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         rf"Error: {SUGGESTIONS}: workspace.name and workspace.projects are missing or bad"),
    Case("apply-tuning-broken-workspace",
         {**suggestions(), WS: '{"workspace_name": "bad", "projects": 3}'},
         ["workspace", "apply-tuning", SUGGESTIONS, *DIR], 1,
         ws_error("projects", "must be a list, got a number")),
]  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and folder (None) under ``folder``, by relative path."""
    out: dict[str, tuple[int, int] | None] = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(folder))] = (
            None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
        )
    return out


def test_the_campaign_is_large_and_its_ids_are_unique() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)
    for name, text in case.files.items():
        file = tmp_path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(text.encode("utf-8", "surrogateescape"))
    if case.store:
        build_store(tmp_path / ".devloop-workspace", workspace=False)
    before = snapshot(tmp_path)

    result = CliRunner().invoke(cli, case.argv)

    assert result.exit_code == case.exit_code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    if case.exit_code == 1:
        assert lines == errors, result.stderr
    else:  # click's usage error: Usage: and Try lines, a blank line, the Error line
        assert lines[0].startswith("Usage: ") and lines[-1] == errors[0], result.stderr
    assert re.fullmatch(case.error, errors[0]), errors[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("files", "warning"),
    [
        (workspace("global.resourceLimits.maxCPU", 50),
         f"Warning: {WS}: global.resourceLimits.maxCPU: unknown key, ignored"),
        (agents("agents.tests.shell", "bash"),
         f"Warning: {AGENTS}: agents.tests.shell: unknown key, ignored"),
    ],
    ids=["workspace-key", "agent-field"],
)  # fmt: skip
def test_an_unknown_key_is_a_warning_naming_file_and_key(
    files: dict[str, str], warning: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown keys are tolerated (DevLoop 0.10's files carry many), never silently."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = CliRunner().invoke(cli, VALIDATE)
    assert result.exit_code == 0, result.output
    assert result.stderr == warning + "\n"
