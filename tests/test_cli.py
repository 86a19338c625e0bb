"""The CLI frame: init, schema, help text on every command, a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import jsonschema
import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.config import load_workspace
from devloop.config.schema import agents_schema, workspace_schema

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / ".devloop-workspace"


def _commands(group: click.Group, prefix: str = "devloop"):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


ALL_COMMANDS = list(_commands(cli))


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[p for p, _ in ALL_COMMANDS])
def test_every_command_has_help_with_an_example(path, command):
    assert command.help, f"{path} has no help text"
    if not isinstance(command, click.Group) or path == "devloop workspace":
        assert "Example" in command.help, f"{path} help has no example"


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[p for p, _ in ALL_COMMANDS])
def test_every_command_is_in_the_readme(path, command):
    assert f"`{path}" in (ROOT / "README.md").read_text(), f"{path} is not in the README"


def test_init_writes_a_workspace_that_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["workspace", "init", ".", "--name", "shop",
                                      "--project", "api=services/api", "--project", "web=web",
                                      "--strategy", "weighted"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "Wrote .devloop-workspace/workspace.json\n"
    config = load_workspace(tmp_path / ".devloop-workspace").config
    assert config.workspace_name == "shop"
    assert [(p.name, p.path) for p in config.projects] == [("api", "services/api"), ("web", "web")]
    assert config.resource_sharing.strategy == "weighted"
    again = CliRunner().invoke(cli, ["workspace", "init", "."])
    assert again.exit_code == 1
    assert again.stderr == (
        "Error: .devloop-workspace/workspace.json already exists (use --force to overwrite it)\n"
    )
    assert load_workspace(tmp_path / ".devloop-workspace").config.workspace_name == "shop"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "api"], "Invalid value for --project: expected NAME=PATH, got 'api'"),
        (["--max-memory", "2XB"], "Error: unknown size unit 'XB' in '2XB'"),
        (["--project", "a=x", "--project", "a=y"], "Error: project 'a' given twice"),
    ],
)
def test_init_rejects_bad_input_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["workspace", "init", ".", *args])
    assert result.exit_code != 0
    assert message in result.stderr
    assert not (tmp_path / ".devloop-workspace" / "workspace.json").exists()


def test_committed_schemas_are_current():
    for filename, build in [("workspace.schema.json", workspace_schema),
                            ("agents.schema.json", agents_schema)]:  # fmt: skip
        committed = json.loads((ROOT / "schemas" / filename).read_text())
        assert committed == build(), f"schemas/{filename} is stale: devloop workspace schema"


def test_schemas_accept_the_sample_and_reject_bad_values():
    workspace = json.loads((SAMPLE / "workspace.json").read_text())
    jsonschema.Draft202012Validator(workspace_schema()).validate(workspace)
    for agents_file in sorted(ROOT.glob("sample_data/projects/*/.devloop/agents.json")):
        jsonschema.Draft202012Validator(agents_schema()).validate(
            json.loads(agents_file.read_text())
        )
    workspace["global"]["resourceLimits"]["maxCpu"] = 150
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(workspace_schema()).validate(workspace)


def test_schema_command_prints_both(tmp_path):
    result = CliRunner().invoke(cli, ["workspace", "schema"])
    assert result.exit_code == 0
    assert set(json.loads(result.stdout)) == {"workspace.schema.json", "agents.schema.json"}
    result = CliRunner().invoke(cli, ["workspace", "schema", "--output-dir", str(tmp_path)])
    assert json.loads((tmp_path / "agents.schema.json").read_text()) == agents_schema()


def test_sample_workspace_limits():
    result = CliRunner().invoke(cli, ["workspace", "limits", "--workspace-dir", str(SAMPLE),
                                      "--at", "10:00", "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["profile"] == "peak"
    assert {n: p["maxCpu"] for n, p in data["projects"].items()} == {
        "devloop": 24.0, "wordfreq": 24.0, "unitconv": 12.0}  # fmt: skip


def test_workspace_dir_is_found_from_a_subfolder(monkeypatch):
    monkeypatch.chdir(ROOT / "sample_data" / "projects" / "wordfreq" / "src")
    monkeypatch.delenv("DEVLOOP_RESOURCE_PROFILE", raising=False)
    result = CliRunner().invoke(cli, ["workspace", "validate", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["workspace_name"] == "sample"


def test_python_dash_m_and_a_light_import():
    code = (
        "import sys, devloop.cli; "
        "heavy = {'polars', 'duckdb', 'pyarrow', 'rich', 'psutil'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    version = subprocess.run([sys.executable, "-m", "devloop", "--version"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    assert version.stdout.strip() == "devloop, version 0.1.0"


#: What each lean report command imports from the heavy libraries: DuckDB (and NumPy for
#: health's fit), never polars or pyarrow (their DataFrames are built only for the Python API).
LEAN = {
    ("workspace", "analytics", "peak-usage"): [],
    ("workspace", "metrics", "--interval", "1m"): [],
    ("workspace", "health", "--detailed", "--memory-analysis"): ["numpy"],
}


@pytest.mark.parametrize("command", list(LEAN), ids=" ".join)
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_lean_reports_import_neither_polars_nor_pyarrow(simulated_day, command, fmt):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['devloop', *{list(command)!r}, '--workspace-dir', {str(simulated_day)!r},"
        f" '--format', {fmt!r}]\n"
        "try:\n"
        "    runpy.run_module('devloop', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = {'polars', 'pyarrow', 'numpy', 'duckdb'} & set(sys.modules)\n"
        "print(sorted(heavy), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # the report was written
    assert out.stderr.strip().splitlines()[-1] == str(sorted(["duckdb", *LEAN[command]]))
