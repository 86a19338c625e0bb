"""Autotune reads the store and writes nothing into it, gives the same suggestions run after
run, and sees a late file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.simulate import simulate
from devloop.store import write_table


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    # 8 hours at 10 s: the leak, and proj-2's over-limit episode (limits in force, 12 pauses).
    out = tmp_path / ".devloop-workspace"
    simulate(out, hours=8, interval=10.0, seed=3)
    return out


def _suggestions(ws: Path, name: str) -> str:
    """suggestions.json written by the CLI, as text without its generated_at line."""
    output = ws.parent / name
    result = CliRunner().invoke(
        cli, ["workspace", "autotune", "--workspace-dir", str(ws), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    lines = output.read_text().splitlines(keepends=True)
    assert sum('"generated_at"' in line for line in lines) == 1
    return "".join(line for line in lines if '"generated_at"' not in line)


@pytest.mark.slow
def test_autotune_writes_nothing_and_is_the_same_run_after_run(ws: Path) -> None:
    shutil.rmtree(ws / "metrics" / "_rollups")  # the rollups simulate wrote
    first = _suggestions(ws, "first.json")
    assert not (ws / "metrics" / "_rollups").exists()  # looking never writes
    assert json.loads(first)["projects"]["proj-2"]["flags"]["censored_cpu"] is True
    assert _suggestions(ws, "second.json") == first


@pytest.mark.slow
def test_a_late_file_changes_the_suggestions(ws: Path) -> None:
    before = _suggestions(ws, "before.json")
    # A late file in hour 2: proj-3/linter at 95 % of the machine on one tick.
    folder = ws / "metrics" / "samples" / "date=2026-01-05" / "hour=2"
    table = pq.read_table(next(folder.glob("*.parquet")))
    row = table.filter(
        pc.and_(pc.equal(table["project"], "proj-3"), pc.equal(table["agent"], "linter"))
    ).slice(0, 1)
    assert row.num_rows == 1
    (late,) = row.to_pylist()
    late |= {"pid": late["pid"] + 100000, "cpu_cores": 1.9}
    write_table(ws / "metrics", "samples", pa.Table.from_pylist([late], schema=row.schema))

    after = _suggestions(ws, "after.json")
    assert not (ws / "metrics" / "_cache").exists()  # no cache of its own

    def cpu_max(text: str) -> float:
        return float(json.loads(text)["projects"]["proj-3"]["evidence"]["cpu_percent"]["max"])

    assert cpu_max(before) < 50
    assert cpu_max(after) >= 95
    assert _suggestions(ws, "again.json") == after
