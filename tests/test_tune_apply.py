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
    assert data["kind"] == "devloop-autotune-suggestions" and data["version"] == 2
    # runs shorter than their 10-s ticks, at their own rates: the limits they need total more
    # than the largest pool
    assert set(data["patch"]["resource_sharing"]) == {"strategy", "perProjectLimits",
                                                      "overcommitCpu"}  # fmt: skip
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
    backups = [path for path in (ws / "tuning-backups").iterdir() if path.is_dir()]
    assert len(backups) == 1 and (backups[0] / "manifest.json").is_file()
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


# --- the target workspace, the transaction, the clean-up (issue 15) --------------------------


def _copy(source: Path, parent: Path) -> Path:
    """A copy of a whole workspace folder under ``parent`` (same folder name, so the
    simulated ``workspace_root``, relative to the folder's parent, resolves inside the copy)."""
    import shutil

    target = parent / source.name
    shutil.copytree(source, target)
    return target


def _state(ws: Path) -> dict[str, bytes]:
    """workspace.json and the agents.json files, keyed by their path inside the workspace."""
    return {str(path.relative_to(ws)): data for path, data in _files(ws).items()}


def _leftovers(ws: Path) -> list[str]:
    """Temp files anywhere in the workspace, and backup folders without a manifest."""
    found = [str(path.relative_to(ws)) for path in ws.rglob("*.tmp")]
    backups = ws / "tuning-backups"
    for folder in backups.iterdir() if backups.is_dir() else ():
        if folder.is_dir() and not any(
            (folder / name).is_file() for name in ("manifest.json", "manifest.json.restored")
        ):
            found.append(str(folder.relative_to(ws)))
    return sorted(found)


def test_suggestions_name_projects_and_apply_writes_the_target_only(base, tmp_path):
    sim = _copy(base, tmp_path / "sim")
    suggestions, data = _autotune(sim)
    copy = _copy(sim, tmp_path / "copy")
    sim_before, copy_before = _files(sim), _files(copy)

    result = _apply(str(suggestions), "--workspace-dir", str(copy))
    assert result.exit_code == 0, result.output
    assert _files(sim) == sim_before  # the workspace autotune ran on is not touched
    after = _files(copy)
    assert [path for path in copy_before if after[path] == copy_before[path]] == []
    written = [line[len("Wrote ") :] for line in result.stdout.splitlines() if "Wrote " in line]
    assert sorted(Path(p).resolve() for p in written) == sorted(p.resolve() for p in after)
    (backup,) = (copy / "tuning-backups").glob("2*")
    assert str(sim) not in (backup / "manifest.json").read_text()

    undo = _apply("--rollback", "--workspace-dir", str(copy))
    assert undo.exit_code == 0, undo.output
    assert _files(copy) == copy_before and _files(sim) == sim_before

    assert str(tmp_path) not in suggestions.read_text()  # no paths, only names
    assert data["version"] == 2
    assert data["workspace"]["name"] == "simulated"
    assert data["workspace"]["projects"] == ["proj-1", "proj-2", "proj-3"]
    assert set(data["workspace"]["agents_files"]["proj-1"]) == {"sha256"}
    assert set(data["agents_patches"]["proj-1"]) == {"patch"}


@pytest.mark.parametrize("edit", ["renamed", "one more project"])
def test_refuses_a_suggestions_file_made_for_another_workspace(base, tmp_path, edit):
    sim = _copy(base, tmp_path / "sim")
    suggestions, _ = _autotune(sim)
    other = _copy(base, tmp_path / "other")
    data = json.loads((other / "workspace.json").read_text())
    if edit == "renamed":
        data["workspace_name"] = "other"
        theirs = "'other' (projects proj-1, proj-2, proj-3)"
    else:
        data["projects"].append({"name": "proj-4", "path": "proj-4"})
        theirs = "'simulated' (projects proj-1, proj-2, proj-3, proj-4)"
    (other / "workspace.json").write_text(json.dumps(data, indent=4) + "\n")
    before = _files(other)
    result = _apply(str(suggestions), "--workspace-dir", str(other), "--force")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {suggestions} was made for workspace 'simulated' (projects proj-1, proj-2, "
        f"proj-3), not for {other}: {theirs}; run `devloop workspace autotune` on it\n"
    )
    assert _files(other) == before and not (other / "tuning-backups").exists()


def test_a_version_1_suggestions_file_is_refused(ws):
    suggestions, data = _autotune(ws)
    data["version"] = 1
    data["workspace"]["file"] = str(ws / "workspace.json")
    suggestions.write_text(json.dumps(data))
    before = _files(ws)
    result = _apply(str(suggestions), "--workspace-dir", str(ws))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {suggestions}: version 1 names files by path, which may be another "
        "workspace's; run `devloop workspace autotune` again for a version 2 file\n"
    )
    assert _files(ws) == before


#: Runs the CLI with os.replace wrapped: SIGKILL just before call number argv[1] (0: never),
#: the calls counted on stderr. Every file apply-tuning and rollback write goes through one.
KILLER = """
import os, signal, sys
from devloop.cli import cli

stop_at, calls, real_replace = int(sys.argv[1]), 0, os.replace

def replace(src, dst):
    global calls
    calls += 1
    if calls == stop_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
try:
    cli.main(sys.argv[2:], prog_name="devloop")
except SystemExit as exc:
    print(f"os.replace calls: {calls}", file=sys.stderr)
    raise
"""


def _killed_run(stop_at: int, *args: str) -> tuple[int, str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(stop_at), "workspace", "apply-tuning", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_sigkill_at_every_write_leaves_all_old_or_all_new_after_recovery(base, tmp_path, command):
    import signal

    sim = _copy(base, tmp_path / "sim")
    suggestions, _ = _autotune(sim)
    old = _state(sim)
    reference = _copy(sim, tmp_path / "reference")
    assert _apply(str(suggestions), "--workspace-dir", str(reference)).exit_code == 0
    new = _state(reference)
    assert len(new) == 4 and all(new[name] != old[name] for name in old)
    # the files before and after the command killed
    before, after = (old, new) if command == "apply" else (new, old)
    args = [str(suggestions)] if command == "apply" else ["--rollback"]

    first = _copy(reference if command == "rollback" else sim, tmp_path / "count")
    code, err = _killed_run(0, *args, "--workspace-dir", str(first))
    assert code == 0, err
    calls = int(err.rsplit("os.replace calls: ", 1)[1])
    assert _state(first) == after
    outcomes = set()
    for stop_at in range(1, calls + 1):
        ws = _copy(reference if command == "rollback" else sim, tmp_path / f"kill-{stop_at}")
        code, err = _killed_run(stop_at, *args, "--workspace-dir", str(ws))
        assert code == -signal.SIGKILL, err
        for data in _state(ws).values():
            json.loads(data)  # every file is valid JSON, even before recovery
        dry = _apply(str(suggestions), "--workspace-dir", str(ws), "--dry-run")  # recovers
        assert dry.exit_code == 0, (stop_at, dry.output)
        state = _state(ws)
        assert state in (before, after), f"killed before os.replace call {stop_at}: mixed files"
        outcomes.add("before" if state == before else "after")
        assert _leftovers(ws) == [], stop_at
        again = _apply(str(suggestions), "--workspace-dir", str(ws))  # a re-apply works
        assert again.exit_code == 0, (stop_at, again.output)
        assert _state(ws) == new
        undo = _apply("--rollback", "--workspace-dir", str(ws))
        assert undo.exit_code == 0, (stop_at, undo.output)
        assert _state(ws) == old
    assert outcomes == {"before", "after"}  # both recoveries were exercised


def test_stale_temp_files_and_incomplete_backups_are_removed_under_the_lock(ws):
    import fcntl
    import os

    stamp = "20250101T000000.000000Z"
    incomplete = ws / "tuning-backups" / stamp
    incomplete.mkdir(parents=True)
    (incomplete / "0-workspace.json").write_text("{}\n")
    ours = [
        incomplete / ".0-workspace.json.k2j3h4ab.tmp",
        ws / f".workspace.json.tuning-{stamp}.tmp",
        ws / "projects" / "proj-1" / ".devloop" / f".agents.json.tuning-{stamp}.tmp",
    ]
    theirs = [
        ws / "notes.tmp",
        ws / "projects" / "proj-1" / ".devloop" / "agents.json.orig",
        ws / "tuning-backups" / "keep-me" / "0-workspace.json",
    ]
    for path in [*ours, *theirs]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{")
    lock = os.open(ws / "tuning-backups" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(lock, f"{os.getpid()}\n".encode())
        busy = _apply("--rollback", "--workspace-dir", str(ws))
        assert busy.exit_code == 1
        assert busy.stderr == (
            f"Error: another apply-tuning (pid {os.getpid()}) is running on "
            f"{ws / 'tuning-backups'}\n"
        )
        assert all(path.exists() for path in [*ours, incomplete, *theirs])
    finally:
        os.close(lock)
    result = _apply("--rollback", "--workspace-dir", str(ws))
    assert result.exit_code == 1 and "no backup to roll back to" in result.stderr
    assert [path for path in [*ours, incomplete] if path.exists()] == []
    assert all(path.exists() for path in theirs)


def test_recovery_undoes_a_half_published_apply_when_a_file_was_edited_since(base, tmp_path):
    import signal

    sim = _copy(base, tmp_path / "sim")
    suggestions, _ = _autotune(sim)
    old = _state(sim)
    # os.replace calls: 4 backups, the journal, workspace.json published; killed before the
    # first agents.json is
    code, err = _killed_run(4 + 1 + 1 + 1, str(suggestions), "--workspace-dir", str(sim))
    assert code == -signal.SIGKILL, err
    assert [name for name in old if _state(sim)[name] != old[name]] == ["workspace.json"]
    (backup,) = (sim / "tuning-backups").glob("2*")
    edited = sim / "projects" / "proj-3" / ".devloop" / "agents.json"
    edited.write_text(edited.read_text().replace('"enabled": true', '"enabled": false', 1))
    by_hand = {**old, "projects/proj-3/.devloop/agents.json": edited.read_bytes()}
    assert by_hand != old

    result = _apply(str(suggestions), "--workspace-dir", str(sim), "--dry-run")
    assert result.exit_code == 1  # recovered, then refused: proj-3 changed since autotune
    assert result.stderr == (
        f"Recovered: undid the apply-tuning interrupted in {backup} (kept {edited}: changed by "
        f"hand since)\nError: {edited} changed since the suggestions were made (sha256 "
        "differs); run `devloop workspace autotune` again, or pass --force to apply them anyway\n"
    )
    assert _state(sim) == by_hand  # the published file has its content before back
    assert _leftovers(sim) == [] and not backup.exists()


@pytest.mark.parametrize(
    ("states", "decision"),
    [
        (["published", "published"], "forward"),
        (["published", "staged"], "forward"),
        (["staged", "staged"], "forward"),
        (["published", "edited"], "forward"),  # publishing was over: edited after
        (["published", "staged", "edited"], "undo"),
        (["published", "unstaged"], "undo"),  # a staged file lost: cannot finish
        (["staged", "unstaged"], "undo"),
        ([], "forward"),
    ],
)
def test_recovery_finishes_or_undoes(states, decision):
    from devloop.tune.patch import decide

    assert decide(states) == decision


def test_rollback_of_a_backup_whose_manifest_names_paths(base, tmp_path):
    """Backups made before the manifest named projects: restored when the paths are this
    workspace's files, refused when they are another's (a copied workspace)."""
    ws = _copy(base, tmp_path / "sim")
    suggestions, _ = _autotune(ws)
    before = _files(ws)
    assert _apply(str(suggestions), "--workspace-dir", str(ws)).exit_code == 0
    (backup,) = (ws / "tuning-backups").glob("2*")
    manifest = json.loads((backup / "manifest.json").read_text())
    paths = [ws / "workspace.json", *(ws / "projects" / f"proj-{n}" / ".devloop" / "agents.json"
                                      for n in (1, 2, 3))]  # fmt: skip
    old_style = {
        "files": [
            {"backup": entry["backup"], "path": str(path.resolve())}
            for entry, path in zip(manifest["files"], paths, strict=True)
        ]
    }
    (backup / "manifest.json").write_text(json.dumps(old_style))
    elsewhere = _copy(ws, tmp_path / "elsewhere")
    tuned = _files(elsewhere)
    refused = _apply("--rollback", "--workspace-dir", str(elsewhere))
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: {elsewhere / 'tuning-backups' / backup.name}: its manifest names "
        f"{paths[0].resolve()}, which is not a file of {elsewhere}; restore it by hand from "
        f"{elsewhere / 'tuning-backups' / backup.name}\n"
    )
    assert _files(elsewhere) == tuned and _files(ws) != before
    restored = _apply("--rollback", "--workspace-dir", str(ws))
    assert restored.exit_code == 0, restored.output
    assert _files(ws) == before
