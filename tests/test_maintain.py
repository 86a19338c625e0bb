"""The collector's hourly maintenance child: compaction, then the closed hours' rollups."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devloop.analytics import peak_usage
from devloop.analytics._cache import CACHE_DIR
from devloop.simulate import simulate


def _entries(metrics: Path) -> list[Path]:
    return sorted((metrics / CACHE_DIR).rglob("hour=*/*.parquet"))


def test_the_maintenance_child_compacts_and_rolls_up_the_closed_hours(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    simulate(ws, hours=2, projects=2, agents_per_project=2, seed=3, start=start)
    metrics = ws / "metrics"
    for entry in (metrics / CACHE_DIR).rglob("*"):  # as a collector's store: no rollups yet
        if entry.is_file():
            entry.unlink()
    raw = peak_usage(ws).to_json()
    assert _entries(metrics) == []  # a report only reads
    result = subprocess.run(
        [sys.executable, "-m", "devloop.runner.maintain", "compact", str(metrics),
         str(os.getpid())],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"rolled_up": 2' in result.stdout
    hours = {p.parent.name for p in _entries(metrics)}
    assert hours == {f"hour={(start + timedelta(hours=h)).hour}" for h in (0, 1)}
    assert peak_usage(ws).to_json() == raw  # read from the rollups now, the same numbers
