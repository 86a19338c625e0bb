"""``workspace health`` on its fast paths: the ``thinned`` rollup gives exactly the points the
raw rows give (cache cold, warm, deleted; ranges cutting hours; an open hour), and the
vectorised Theil-Sen is exactly the pairwise one."""

from __future__ import annotations

import shutil
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devloop.analytics import Store, health, theil_sen
from devloop.analytics.stats import theil_sen_rows
from devloop.analytics.timerange import TimeRange
from devloop.simulate import simulate
from devloop.store import write_rollups
from devloop.store.db import DAY_PREFIX, ROLLUPS_DIR
from devloop.store.layout import Partition, iter_partitions
from devloop.store.rollups import THINNED_EVERY, THINNED_TICK_US
from tests.helpers.stores import copy_without_cache

NOW = datetime(2030, 1, 1, tzinfo=UTC)
#: Thresholds low enough that every part of the report has rows on a few simulated hours.
LOW: dict[str, Any] = {"stopped_min": 10.0, "restart_threshold": 2, "short_life": 600.0}


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _brute_force(x: list[float], y: list[float]) -> tuple[float, float]:
    """Theil-Sen and Kendall's tau-a by the definition, pair by pair."""
    slopes: list[float] = []
    agreement = 0
    for a in range(len(x)):
        for b in range(a + 1, len(x)):
            dx, dy = x[b] - x[a], y[b] - y[a]
            if dx != 0:
                slopes.append(dy / dx)
                agreement += _sign(dx) * _sign(dy)
    if not slopes:
        return 0.0, 0.0
    return float(statistics.median(slopes)), agreement / len(slopes)


@pytest.mark.parametrize("width", [0, 1, 2, 3, 4, 7, 12, 100])
def test_theil_sen_rows_is_exactly_the_pairwise_fit(width: int) -> None:
    rng = np.random.default_rng(width)
    rows = 40  # more than one batch
    # ties in y (small integers) and, in some rows, in x; some rows not in time order
    x = np.sort(rng.integers(0, 3 * width + 1, (rows, width)).astype(np.float64), axis=1)
    x[::3] = np.sort(rng.uniform(0, 5, (len(x[::3]), width)), axis=1)
    x[1::7] = x[1::7, ::-1]
    y = np.stack([rng.integers(0, 4, (rows, width)), rng.normal(0, 9, (rows, width))])
    y = y.astype(np.float64)
    slopes, taus = theil_sen_rows(x, y)
    assert slopes.shape == taus.shape == (2, rows)
    for s in range(2):
        for r in range(rows):
            expected = _brute_force(x[r].tolist(), y[s, r].tolist())
            assert (slopes[s, r], taus[s, r]) == expected
            assert theil_sen(x[r], y[s, r]) == expected
    # one series: shapes follow y
    one_slopes, one_taus = theil_sen_rows(x, y[1])
    assert one_slopes.tolist() == slopes[1].tolist() and one_taus.tolist() == taus[1].tolist()


def test_theil_sen_rows_of_a_steady_rise() -> None:
    x = np.tile(np.arange(10.0), (3, 1))
    y = np.stack([2 * x + 1, -x, np.zeros_like(x)])
    y[0, 0, 3] = 100.0  # one outlier moves neither the slope nor much the tau
    slopes, taus = theil_sen_rows(x, y)
    assert slopes.tolist() == [[2.0, 2.0, 2.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]]
    assert taus.tolist() == [[33 / 45, 1.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / ".devloop-workspace"
    # 7 hours: the type-checker daemons (proj-1's leaks) live through it, restarting at 03:00
    simulate(out, hours=7, projects=2, agents_per_project=4, seed=5)
    return out


@pytest.fixture
def store_copy(simulated: Path, tmp_path: Path) -> Path:
    return copy_without_cache(simulated, tmp_path)


def _cut(ws: Path) -> TimeRange:
    first = min(p.start for p, _ in iter_partitions(ws / "metrics", "samples"))
    return TimeRange(
        start=first + timedelta(hours=1, minutes=17, seconds=3),
        end=first + timedelta(hours=5, minutes=41, seconds=29, microseconds=500),
    )


def _reports(ws: Path, *, use_rollups: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, time_range in (("all", None), ("cut", _cut(ws))):
        for low in (False, True):
            with Store(ws) as store:
                store.use_rollups = use_rollups
                report = health(store, time_range, now=NOW, **(LOW if low else {}))
            out[f"{name} {low}"] = report.to_json()
            # the frames exactly, floats to the last bit (to_json rounds them)
            out[f"{name} {low} frames"] = [
                frame.rows() for frame in (report.memory, report.fds, report.stopped)
            ]
    return out


@pytest.mark.slow
def test_thinned_rollup_is_exact_cold_warm_and_deleted(store_copy: Path) -> None:
    raw = _reports(store_copy, use_rollups=False)
    cold = _reports(store_copy, use_rollups=True)
    assert not (store_copy / "metrics" / ROLLUPS_DIR).exists()  # a report only reads
    write_rollups(store_copy / "metrics")  # as compaction does
    thinned = sorted((store_copy / "metrics" / ROLLUPS_DIR / "thinned").rglob("hour=*/*.parquet"))
    assert len(thinned) == len(iter_partitions(store_copy / "metrics", "samples"))
    warm = _reports(store_copy, use_rollups=True)
    shutil.rmtree(store_copy / "metrics" / ROLLUPS_DIR)
    deleted = _reports(store_copy, use_rollups=True)
    assert cold == raw
    assert warm == raw
    assert deleted == raw
    # not vacuous: the planted leak is found, on both ranges, and every part has rows
    for name in ("all", "cut"):
        leaks = raw[f"{name} False"]["memory_leaks"]
        # the daemon's two lives: before and after its daily restart at 03:00-03:15
        assert [(row["project"], row["agent"]) for row in leaks] == [("proj-1", "type-checker")] * 2
        assert len({row["pid"] for row in leaks}) == 2
        for row in leaks:
            assert row["points"] == 100
            assert 10.0 < row["slope_per_hour"] < 14.0  # 12 MiB an hour, noise aside
        low = raw[f"{name} True"]
        assert low["stopped"] and low["restart_loops"] and len(low["memory_trends"]) > 8


@pytest.mark.slow
def test_the_thinned_rollup_is_what_is_read(store_copy: Path) -> None:
    """Rows doubled in the ``thinned`` entries show in the trends, so the rollup is read (and
    the test above compares it with raw rows rather than raw rows with themselves)."""
    root = store_copy / "metrics"
    with Store(store_copy) as store:
        store.use_rollups = False
        before = health(store, now=NOW)
    write_rollups(root)
    # the hours' entries and the whole past days' files that concatenate them
    entries = sorted((root / ROLLUPS_DIR / "thinned").rglob("*.parquet"))
    assert any(entry.name.startswith(DAY_PREFIX) for entry in entries)
    for entry in entries:
        table = pq.read_table(entry)
        grid = THINNED_TICK_US * THINNED_EVERY
        ts = table.column("ts").cast(pa.int64()).to_numpy()
        assert len(ts) and (ts % grid < THINNED_TICK_US).all()
        rss = table.column("rss_bytes").to_numpy() * 2
        index = table.schema.get_field_index("rss_bytes")
        table = table.set_column(index, table.schema.field(index), pa.array(rss, pa.int64()))
        pq.write_table(table, entry)
    after = health(store_copy, now=NOW)
    leak = before.memory.filter(before.memory["leak"]).row(0, named=True)
    doubled = after.memory.filter(after.memory["pid"] == leak["pid"]).row(0, named=True)
    assert doubled["slope_per_hour"] > 1.5 * leak["slope_per_hour"]


@pytest.mark.slow
def test_an_open_hour_reads_raw_rows(tmp_path: Path) -> None:
    """Samples up to now: the current hour has no rollup and comes from ``samples``."""
    ws = tmp_path / ".devloop-workspace"
    now = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)  # a clock of our own: hour 12 is open
    simulate(ws, hours=2.5, projects=2, agents_per_project=4, start=now - timedelta(hours=2.5))
    shutil.rmtree(ws / "metrics" / ROLLUPS_DIR)  # simulate's rollups, made by the real clock
    write_rollups(ws / "metrics", now=now)  # compaction at 12:30: hours 10 and 11 are closed
    with Store(ws) as store:
        store.use_rollups = False
        raw = health(store, now=NOW, **LOW)
    cached = health(ws, now=NOW, **LOW)
    assert cached.to_json() == raw.to_json()
    assert cached.memory.rows() == raw.memory.rows() and cached.fds.rows() == raw.fds.rows()
    assert len(raw.memory) >= 2  # the daemons lived through
    thinned = ws / "metrics" / ROLLUPS_DIR / "thinned"
    assert not list((thinned / Partition.of_datetime(now).relative_dir).glob("*.parquet"))
    earlier = Partition.of_datetime(now - timedelta(hours=1)).relative_dir
    assert list((thinned / earlier).glob("*.parquet"))
