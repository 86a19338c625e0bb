"""What autotune says when it has little to go on (issue 15): the reason an entry got no
suggestion is a note under the table, and a backtest without folds or runs says why, in the
table, suggestions.json (``backtest.note``) and the HTML report."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from click.testing import CliRunner

from devloop.cli import cli
from devloop.store import write_table
from tests.test_autotune_replay import GB, PARAMS, T0, THROTTLE, build, bursts
from tests.test_tune import build_tiny

NO_RUNS = "nothing to replay: no runs recorded, so the totals are empty"
TOO_SHORT = "history too short for a backtest (it needs two hours)"


def _autotune(folder: Path, tmp_path: Path, *extra: str) -> tuple[str, dict, str]:
    """The table autotune prints, its suggestions.json and its HTML report."""
    output, report = tmp_path / "suggestions.json", tmp_path / "report.html"
    argv = ["workspace", "autotune", "--workspace-dir", str(folder), "--format", "table",
            "--output", str(output), "--report", str(report), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    return result.stdout, json.loads(output.read_text()), report.read_text()


def test_short_history_says_why_under_each_table(tmp_path: Path) -> None:
    text, data, html = _autotune(build_tiny(tmp_path / "ws", minutes=50), tmp_path)
    lines = text.splitlines()
    below = lines.index("(p95: backtested run slowdown; target 1.1x)") + 1
    assert lines[below] == (
        "Note: no suggestion for api, api/job: too little history: 50 samples over 0.83 h "
        "recorded (needs 5 runs or 100 samples, over 1 h)"
    )
    assert lines[below + 6 :] == [
        f"Note: {TOO_SHORT}; {NO_RUNS}",
        "Note: no runs recorded: every limit comes from the per-tick percentile (record with "
        "devloop run or devloop watch for limits by run slowdown)",
    ]
    assert lines[below + 2] == "Backtest, all projects (every run together, in-sample)"
    assert data["backtest"]["folds"] == 0
    assert data["backtest"]["note"] == f"{TOO_SHORT}; {NO_RUNS}"
    assert f"<p class='note'>{TOO_SHORT}; {NO_RUNS}</p>" in html


def test_one_fold_without_runs_says_the_totals_are_empty(tmp_path: Path) -> None:
    # two hours of ticks: two blocks, one fold, but not a run to replay in it or the totals
    text, data, _ = _autotune(build_tiny(tmp_path / "ws", minutes=120), tmp_path)
    assert data["backtest"]["folds"] == 1
    assert data["backtest"]["totals"]["current"]["runs"] == 0
    assert data["backtest"]["note"] == NO_RUNS
    assert f"Note: {NO_RUNS}\n" in text
    assert "no suggestion for" not in text and TOO_SHORT not in text


def test_runs_without_a_fold_and_a_backtest_that_replayed(tmp_path: Path) -> None:
    # five runs in the first hour, ticks until 2.5 h: no block after the first has runs
    folder = build(tmp_path / "early", bursts(5), limits=THROTTLE)
    ticks = [{"ts": T0 + timedelta(seconds=s), "host": "h", "cores": 4, "cpu_busy_cores": 1.0,
              "mem_total_bytes": 16 * GB, "mem_used_bytes": 4 * GB}
             for s in range(600, 9000, 10)]  # fmt: skip
    write_table(folder / "metrics", "system", pa.Table.from_pylist(ticks))
    options = ("--min-history", "60s", "--min-samples", str(PARAMS.min_samples))
    text, data, _ = _autotune(folder, tmp_path, *options)
    note = "no fold replayed: no block after the first had runs and a fit before it"
    assert (data["backtest"]["folds"], data["backtest"]["note"]) == (2, note)
    assert f"Note: {note}\n" in text

    # 80 runs over 2.2 hours: two folds replayed, nothing to explain
    folder = build(tmp_path / "bursty", bursts(80), limits=THROTTLE)
    text, data, html = _autotune(folder, tmp_path, *options)
    assert (data["backtest"]["folds"], data["backtest"]["note"]) == (2, None)
    assert data["backtest"]["totals"]["current"]["runs"] == 80
    assert "no fold replayed" not in text and NO_RUNS not in text and TOO_SHORT not in text
    assert "<h2>Backtest</h2>" in html and "class='note'" not in html.split("<h2>Backtest")[1]
