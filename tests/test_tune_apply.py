"""apply-tuning: the patch round trip, the refusals, the file untouched on every failure, the
report and the terminal summary (through the CLI, on a small simulated workspace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.config import load_workspace
from devloop.config.allocation import allocate
from devloop.simulate import simulate

pytestmark = pytest.mark.slow


def _files(ws: Path) -> dict[Path, bytes]:
    found = [ws / "workspace.json", *sorted(ws.glob("projects/*/.devloop/agents.json"))]
    return {path: path.read_bytes() for path in found}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 3-hour simulated workspace, its workspace.json rewritten with a 4-space indent and
    unknown keys (tuning must keep both)."""
    ws = tmp_path_factory.mktemp("apply") / ".devloop-workspace"
    simulate(ws, hours=3, interval=10.0, seed=1)
    data = json.loads((ws / "workspace.json").read_text())
    data = {"x_owner": {"team": "infra"}, **data}
    data["resource_sharing"]["x_comment"] = "kept"
    (ws / "workspace.json").write_text(json.dumps(data, indent=4) + "\n")
    return ws


@pytest.fixture
def ws(base, tmp_path):
    """A fresh copy of the base workspace and its suggestions.json."""
    import shutil

    copy = tmp_path / ".devloop-workspace"
    shutil.copytree(base, copy)
    data = json.loads((copy / "workspace.json").read_text())
    data["workspace_root"] = str(copy / "projects")
    (copy / "workspace.json").write_text(json.dumps(data, indent=4) + "\n")
    return copy


def _autotune(ws: Path, *extra: str) -> tuple[Path, dict]:
    out = ws.parent / "suggestions.json"
    result = CliRunner().invoke(
        cli, ["workspace", "autotune", "--workspace-dir", str(ws), "--output", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(out.read_text())


def _apply(*args: str):
    return CliRunner().invoke(cli, ["workspace", "apply-tuning", *args])


def test_the_patch_round_trip_keeps_order_indent_and_unknown_keys(ws):
    before = _files(ws)
    old = json.loads(before[ws / "workspace.json"])
    suggestions, data = _autotune(ws)
    assert data["kind"] == "devloop-autotune-suggestions" and data["version"] == 1
    assert set(data["patch"]["resource_sharing"]) == {"strategy", "perProjectLimits"}
    result = _apply(str(suggestions), "--workspace-dir", str(ws))
    assert result.exit_code == 0, result.output
    text = (ws / "workspace.json").read_text()
    new = json.loads(text)
    assert list(new)[: len(old)] == list(old)  # key order kept
    assert list(new["resource_sharing"])[:2] == ["strategy", "x_comment"]
    assert new["x_owner"] == {"team": "infra"} and new["resource_sharing"]["x_comment"] == "kept"
    assert '\n    "x_owner": {\n        "team": "infra"\n    },' in text  # 4-space indent kept
    allocation = allocate(load_workspace(ws))
    for name, entry in data["projects"].items():
        assert allocation.projects[name].cpu == entry["suggested"]["cpu_percent"]
        assert allocation.projects[name].memory_bytes == entry["suggested"]["memory_bytes"]
    for name, entry in data["agents"].items():
        assert allocation.agents[name].cpu == entry["suggested"]["cpu_percent"]
        assert allocation.agents[name].memory_bytes == entry["suggested"]["memory_bytes"]
    assert allocation.strategy == "custom"
    backups = list((ws / "tuning-backups").iterdir())
    assert len(backups) == 1
    assert "Backup: " in result.output
    # rollback restores every file byte for byte
    result = _apply("--rollback", "--workspace-dir", str(ws))
    assert result.exit_code == 0, result.output
    assert _files(ws) == before
    again = _apply("--rollback", "--workspace-dir", str(ws))
    assert again.exit_code == 1
    assert "Error: no backup to roll back to in" in again.stderr


def test_refused_when_workspace_json_changed_unless_forced(ws):
    suggestions, _ = _autotune(ws)
    text = (ws / "workspace.json").read_text().replace('"x_comment": "kept"', '"x_comment": "x"')
    (ws / "workspace.json").write_text(text)
    before = _files(ws)
    result = _apply(str(suggestions), "--workspace-dir", str(ws))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {ws / 'workspace.json'} changed since the suggestions were made (sha256 "
        "differs); run `devloop workspace autotune` again, or pass --force to apply them anyway\n"
    )
    assert _files(ws) == before and not (ws / "tuning-backups").exists()
    forced = _apply(str(suggestions), "--workspace-dir", str(ws), "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads((ws / "workspace.json").read_text())["resource_sharing"]["x_comment"] == "x"


def test_refused_for_a_file_with_comments(ws):
    text = (ws / "workspace.json").read_text().replace("{\n", "{\n    // tuned by hand\n", 1)
    (ws / "workspace.json").write_text(text)
    suggestions, _ = _autotune(ws)  # the loader reads comments
    before = _files(ws)
    result = _apply(str(suggestions), "--workspace-dir", str(ws))
    assert result.exit_code == 1
    assert "has comments, which rewriting it would lose" in result.stderr
    assert _files(ws) == before


def test_a_patch_that_does_not_validate_changes_nothing(ws):
    suggestions, data = _autotune(ws)
    first = next(iter(data["patch"]["resource_sharing"]["perProjectLimits"]))
    data["patch"]["resource_sharing"]["perProjectLimits"][first]["maxCpu"] = 500
    suggestions.write_text(json.dumps(data))
    before = _files(ws)
    result = _apply(str(suggestions), "--workspace-dir", str(ws))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {ws / 'workspace.json'}: resource_sharing.perProjectLimits.{first}.maxCpu: "
        "must be from 0 to 100, got 500\n"
    )
    assert _files(ws) == before and not (ws / "tuning-backups").exists()


def test_dry_run_min_change_and_only(ws):
    suggestions, data = _autotune(ws)
    before = _files(ws)
    dry = _apply(str(suggestions), "--workspace-dir", str(ws), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert '+        "perProjectLimits": {' in dry.stdout
    assert f"--- {ws / 'workspace.json'} (current)" in dry.stdout
    assert _files(ws) == before and not (ws / "tuning-backups").exists()
    nothing = _apply(str(suggestions), "--workspace-dir", str(ws), "--min-change", "900%")
    assert nothing.exit_code == 0 and nothing.stdout == "Nothing to change.\n"
    assert "Skipped proj-1: maxCpu changes by" in nothing.stderr
    assert _files(ws) == before
    agents = _apply(str(suggestions), "--workspace-dir", str(ws), "--only", "agents")
    assert agents.exit_code == 0, agents.output
    after = _files(ws)
    assert after[ws / "workspace.json"] == before[ws / "workspace.json"]
    changed = [path for path in before if after[path] != before[path]]
    assert len(changed) == len(data["agents_patches"]) == 3


def test_bad_suggestions_files(ws, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    result = _apply(str(bad), "--workspace-dir", str(ws))
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: {bad}: not a suggestions file (kind is not "
        "'devloop-autotune-suggestions')\n"
    )
    missing = _apply("--workspace-dir", str(ws))
    assert missing.exit_code == 2 and "missing the SUGGESTIONS file" in missing.stderr


def test_report_and_table(ws):
    report = ws.parent / "report.html"
    result = CliRunner().invoke(cli, ["workspace", "autotune", "--workspace-dir", str(ws),
                                      "--output", str(ws.parent / "s.json"), "--report",
                                      str(report), "--format", "table"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Suggested limits\nscope")
    assert "Backtest, all projects" in result.stdout
    assert "proj-1/type-checker" in result.stdout
    page = report.read_text()
    assert page.count("<svg") >= 3 * 3  # per project: CPU, memory, distribution
    assert "<script" not in page and "https://" not in page and " src=" not in page
    assert "<h2>Backtest</h2>" in page and "total (projects)" in page
    bad = CliRunner().invoke(cli, ["workspace", "autotune", "--workspace-dir", str(ws),
                                   "--cpu-margin", "lots"])  # fmt: skip
    assert bad.exit_code == 2
    assert "Invalid value for --cpu-margin: expected a percent like 15%, got 'lots'" in bad.stderr


def test_duration_records_live_first_then_analyses(write_workspace, tmp_path):
    from tests.helpers.procs import helpers

    folder = write_workspace(
        {
            "workspace_name": "live",
            "projects": [{"name": "api", "path": "api"}],
            "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
        }
    )
    out = tmp_path / "live.json"
    with helpers() as start:
        start("sleep", tags=("api", "sleeper"))
        result = CliRunner().invoke(cli, [
            "workspace", "autotune", "--workspace-dir", str(folder), "--duration", "3s",
            "--interval", "0.5s", "--min-history", "1s", "--min-samples", "2",
            "--output", str(out),
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Recorded " in result.stderr
    data = json.loads(out.read_text())
    entry = data["agents"]["api/sleeper"]
    assert entry["evidence"]["cpu_percent"]["samples"] >= 2
    assert entry["suggested"]["memory_bytes"] >= entry["evidence"]["memory_bytes"]["max"]
    assert data["projects"]["api"]["suggested"]["cpu_percent"] >= 1.0  # at least the minimum
