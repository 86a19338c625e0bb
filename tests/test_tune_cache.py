"""The per-hour cache of autotune's bins (devloop.tune.bins_cache): suggestions.json is the same
with the cache cold, warm and deleted, and an hour whose files change is rebuilt."""

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
from devloop.tune.bins_cache import cache_root


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


def _entries(ws: Path) -> dict[str, tuple[str, int]]:
    """Per level and hour directory: the entry's name and mtime."""
    base = cache_root(ws / "metrics")
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(base.glob("*/date=*/hour=*/*")):
        folder = str(path.parent.relative_to(base))
        assert folder not in found, f"two entries in {folder}"
        found[folder] = (path.name, path.stat().st_mtime_ns)
    return found


@pytest.mark.slow
def test_suggestions_are_the_same_with_the_cache_cold_warm_and_deleted(ws: Path) -> None:
    assert not cache_root(ws / "metrics").exists()
    cold = _suggestions(ws, "cold.json")
    built = _entries(ws)
    # Hours 0-6 are closed and wholly inside the history; hour 7 ends at the last sample.
    hours = [
        f"{level}/date=2026-01-05/hour={h}" for level in ("agent", "project") for h in range(7)
    ]
    assert sorted(built) == sorted(hours)
    assert json.loads(cold)["projects"]["proj-2"]["flags"]["censored_cpu"] is True

    warm = _suggestions(ws, "warm.json")
    assert _entries(ws) == built  # read, not rebuilt
    assert warm == cold

    shutil.rmtree(cache_root(ws / "metrics"))
    deleted = _suggestions(ws, "deleted.json")
    assert deleted == cold
    assert {name: entry[0] for name, entry in _entries(ws).items()} == {
        name: entry[0] for name, entry in built.items()
    }


@pytest.mark.slow
def test_an_hour_whose_files_change_is_rebuilt(ws: Path) -> None:
    before = _suggestions(ws, "before.json")
    built = _entries(ws)
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
    rebuilt = _entries(ws)
    changed = {name for name in built if rebuilt[name] != built[name]}
    assert changed == {"agent/date=2026-01-05/hour=2", "project/date=2026-01-05/hour=2"}
    assert all(rebuilt[name][0] != built[name][0] for name in changed)

    def cpu_max(text: str) -> float:
        return float(json.loads(text)["projects"]["proj-3"]["evidence"]["cpu_percent"]["max"])

    assert cpu_max(before) < 50
    assert cpu_max(after) >= 95

    shutil.rmtree(cache_root(ws / "metrics"))
    assert _suggestions(ws, "cold.json") == after


@pytest.mark.slow
def test_entries_of_hours_dropped_from_the_store_are_pruned(ws: Path) -> None:
    _suggestions(ws, "first.json")
    assert "agent/date=2026-01-05/hour=0" in _entries(ws)
    shutil.rmtree(ws / "metrics" / "samples" / "date=2026-01-05" / "hour=0")  # as retention does
    _suggestions(ws, "second.json")
    left = _entries(ws)
    assert not any(folder.endswith("hour=0") for folder in left)
    assert "agent/date=2026-01-05/hour=1" in left and "project/date=2026-01-05/hour=6" in left
