"""``workspace health``: the processes that lived under ``--min-life`` are not analysed for
leaks, and every output says how many (issue 15: an empty trend table said nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.analytics import health
from devloop.cli import cli
from tests.test_analytics_reports import at, build_store


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    # four lives: three sampled over 9 s (ticks 0..9), web/tests over 4 s (ticks 5..9)
    return build_store(tmp_path / ".devloop-workspace")


def test_the_report_counts_the_lives_too_short_to_analyse(workspace: Path) -> None:
    report = health(workspace, min_life=5, now=at(10))
    assert (report.memory.height, report.short_lives, report.min_life) == (3, 1, 5)
    assert report.to_json()["short_lives"] == {
        "min_life_seconds": 5,
        "skipped": 1,
        "note": "1 process lived under 5s (min_life) and is not analysed for leaks",
    }
    everyone = health(workspace, min_life=4, now=at(10))
    assert (everyone.memory.height, everyone.short_lives) == (4, 0)
    assert everyone.to_json()["short_lives"]["note"] is None
    nobody = health(workspace, min_life=7200, now=at(10))
    assert (nobody.memory.height, nobody.short_lives) == (0, 4)
    assert nobody.to_json()["short_lives"]["note"] == (
        "4 processes lived under 2h (min_life) and are not analysed for leaks"
    )


@pytest.mark.parametrize(
    ("min_life", "note"),
    [
        ("2h", "Note: 4 processes lived under --min-life 2h and are not analysed for leaks; "
               "a smaller --min-life includes them\n"),
        ("5s", "Note: 1 process lived under --min-life 5s and is not analysed for leaks; "
               "a smaller --min-life includes them\n"),
    ],
)  # fmt: skip
def test_the_table_says_how_many_were_skipped_and_why(
    workspace: Path, min_life: str, note: str
) -> None:
    argv = ["workspace", "health", "--memory-analysis", "--workspace-dir", str(workspace)]
    result = CliRunner().invoke(cli, [*argv, "--min-life", min_life])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(note)
    as_json = CliRunner().invoke(cli, [*argv, "--min-life", min_life, "--format", "json"])
    data = json.loads(as_json.stdout)
    assert data["short_lives"]["skipped"] == (4 if min_life == "2h" else 1)
    assert len(data["memory_trends"]) == (0 if min_life == "2h" else 3)


def test_the_file_handle_trends_say_it_too(workspace: Path) -> None:
    argv = ["workspace", "health", "--detailed", "--workspace-dir", str(workspace)]
    result = CliRunner().invoke(cli, [*argv, "--min-life", "5s"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    trends = text[text.index("File-handle trends") : text.index("Short-lived processes")]
    assert trends.endswith(
        "Note: 1 process lived under --min-life 5s and is not analysed for leaks; a smaller "
        "--min-life includes them\n\n"
    )
