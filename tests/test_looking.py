"""Looking never writes: every report, run on a copy of the sample workspace, leaves every file
of the workspace (store, config, projects) as it was: same names, sizes and modification times."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.cli import cli

ROOT = Path(__file__).resolve().parent.parent

REPORTS = [
    ["workspace", "validate"],
    ["workspace", "limits", "--at", "10:00"],
    ["workspace", "store-info"],
    ["workspace", "metrics", "--detailed"],
    ["workspace", "metrics", "--format", "csv", "--interval", "1m"],
    ["workspace", "analytics", "peak-usage"],
    ["workspace", "analytics", "bottlenecks", "--threshold", "80"],
    ["workspace", "analytics", "efficiency"],
    ["workspace", "analytics", "runs", "--summary"],
    ["workspace", "health", "--detailed", "--memory-analysis"],
    ["audit", "query", "--agent", "*", "--metric", "memory"],
    ["workspace", "sql", "SELECT project, max(rss_bytes) FROM samples GROUP BY project"],
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("looking") / "sample_data"
    shutil.copytree(
        ROOT / "sample_data",
        copy,
        ignore=shutil.ignore_patterns("_cache", "_rollups", "_facts.json"),
    )
    return copy


@pytest.mark.parametrize("args", REPORTS, ids=[" ".join(a[:3]) for a in REPORTS])
def test_a_report_leaves_the_workspace_unchanged(sample: Path, args: list[str]) -> None:
    workspace = sample / ".devloop-workspace"
    before = _snapshot(sample)
    result = CliRunner().invoke(cli, [*args, "--workspace-dir", str(workspace)])
    assert result.exit_code == 0, result.output
    assert _snapshot(sample) == before


def test_autotune_on_the_sample_leaves_it_unchanged_and_says_why_once(
    sample: Path, tmp_path: Path
) -> None:
    workspace = sample / ".devloop-workspace"
    before = _snapshot(sample)
    out = tmp_path / "suggestions.json"
    result = CliRunner().invoke(cli, ["workspace", "autotune", "--workspace-dir", str(workspace),
                                      "--min-history", "10m", "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _snapshot(sample) == before
    text = out.read_text()
    assert "No runs recorded: " in text  # the sample's devloop project has no runs
    assert "No runs recorded: No runs recorded" not in text  # once, even after scaling
