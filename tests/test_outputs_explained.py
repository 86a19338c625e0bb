"""Outputs that puzzled a new user (issue 15), now said plainly: small sizes, the docs' state
word, whose limit is in force, a negative idle allocation or a p95 under the mean, and an
empty memory-trend table."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.cli.render_reports import _efficiency_explained, _mb
from tests.test_analytics_reports import build_store


def test_small_sizes_are_not_zero_mb() -> None:
    # An agent without a process is "idle" in the data itself: tests/test_metrics_detailed.py
    assert [_mb(0), _mb(512 * 1024), _mb(1000), _mb(150 * 1024**2), _mb(None)] == [
        "0B", "512KB", "1000B", "150MB", ""]  # fmt: skip


def test_limits_say_per_resource_whose_limit_is_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "workspace_name": "w", "projects": [{"name": "api", "path": "api"}],
        "global": {"resourceLimits": {"maxCpu": 40, "maxMemory": "1GB"}}}))  # fmt: skip
    agents = {
        "own": {"command": ["a"], "resourceLimits": {"maxCpu": 10, "maxMemory": "100MB"}},
        "memory-only": {"command": ["b"], "resourceLimits": {"maxMemory": "100MB"}},
        "above-the-project": {"command": ["c"], "resourceLimits": {"maxCpu": 90}},
        "none": {"command": ["d"]},
    }
    (tmp_path / "api" / ".devloop").mkdir(parents=True)
    (tmp_path / "api" / ".devloop" / "agents.json").write_text(json.dumps({"agents": agents}))
    result = CliRunner().invoke(cli, ["workspace", "limits", "--workspace-dir", str(folder)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("api/")}
    assert rows["api/own"].endswith("  agent")
    assert rows["api/memory-only"].endswith("  cpu: project, memory: agent")
    assert rows["api/above-the-project"].endswith("  project")
    assert rows["api/none"].endswith("  project")


def test_efficiency_explains_a_negative_idle_allocation_and_a_p95_under_the_mean() -> None:
    frame = pl.DataFrame({
        "project": ["api", "web", None],
        "cpu_idle_allocation_percent": [-1.8, 5.0, 3.2],
        "cpu_used_avg_percent": [1.1, 1.0, 2.1],
        "cpu_used_p95_percent": [0.0, 2.0, 2.5],
        "memory_idle_allocation_bytes": [10, 20, 30],
        "memory_used_avg_bytes": [5, 5, 10],
        "memory_used_p95_bytes": [6, 6, 12],
    })  # fmt: skip
    assert _efficiency_explained(frame) == [
        "cpu_idle_allocation is negative for api: on average it used more than it was allocated",
        "cpu p95 is below the average for api: mostly idle, with short bursts that lift the "
        "average above 95% of the ticks",
    ]
    assert _efficiency_explained(frame.filter(pl.col("project") == "web")) == []


def test_an_empty_memory_trend_table_says_why(tmp_path: Path) -> None:
    folder = build_store(tmp_path / ".devloop-workspace")
    argv = ["workspace", "health", "--memory-analysis", "--workspace-dir", str(folder)]
    result = CliRunner().invoke(cli, [*argv, "--min-life", "2h"])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        "Note: 4 processes lived under --min-life 2h and are not analysed for leaks; a smaller "
        "--min-life includes them\n"
    )
