"""Autotune on real stores: a tiny hand-built one (backtest checked by hand) and a simulated
two-day history with known anomalies (suggestions in bands, the leak and the over-limit episode
flagged)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from devloop.analytics import Store
from devloop.analytics.timerange import TimeRange
from devloop.config import load_workspace
from devloop.simulate import simulate
from devloop.store import write_table
from devloop.tune import TuneParameters, autotune

MB = 1024**2
GB = 1024**3
T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)


# --- a tiny store: one project "api" with one agent "job", 4 cores, a tick a minute, 3 hours --


def _cpu_at(minute: int) -> float:
    """CPU % of the machine: hour 0 all 10; hour 1 10 but 50 for its first 6 ticks; hour 2 20."""
    if minute < 60:
        return 10.0
    if minute < 120:
        return 50.0 if minute < 66 else 10.0
    return 20.0


def _rss_at(minute: int) -> int:
    return 120 * MB if minute >= 120 else 100 * MB


def build_tiny(folder: Path, minutes: int = 180) -> Path:
    folder.mkdir(parents=True)
    (folder / "workspace.json").write_text(
        json.dumps(
            {
                "workspace_name": "tiny",
                "projects": [{"name": "api", "path": "api"}],
                "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
            }
        )
    )
    root = folder / "metrics"
    at = [T0 + timedelta(minutes=m) for m in range(minutes)]
    samples = [
        {"ts": ts, "host": "h1", "project": "api", "agent": "job", "pid": 7, "start_time": T0,
         "cpu_cores": _cpu_at(m) / 25, "rss_bytes": _rss_at(m), "fds": 5, "threads": 1,
         "state": "running"}
        for m, ts in enumerate(at)
    ]  # fmt: skip
    write_table(root, "samples", pa.Table.from_pylist(samples))
    write_table(
        root,
        "system",
        pa.Table.from_pylist(
            [{"ts": ts, "host": "h1", "cores": 4, "cpu_busy_cores": 1.0,
              "mem_total_bytes": 16 * GB, "mem_used_bytes": 4 * GB} for ts in at]
        ),
    )  # fmt: skip
    write_table(
        root,
        "limits",
        pa.Table.from_pylist(
            [{"ts": T0 - timedelta(minutes=1), "host": "h1", "project": "api", "agent": agent,
              "cpu_limit_percent": 30.0, "memory_limit_bytes": GB, "priority": 2,
              "strategy": "equal", "profile": None, "reason": "start"}
             for agent in ("", "job")]
        ),
    )  # fmt: skip
    return folder


TINY = TuneParameters(
    cpu_percentile=50,
    half_life=1e9,
    cpu_margin=0,
    memory_margin=0,
    memory_percentile=None,
    min_cpu=0,
    min_memory=0,
    min_samples=10,
)


def test_without_runs_the_percentile_is_kept_and_flagged(tmp_path):
    # The tiny store has ticks but no runs table: nothing to replay.
    result = autotune(build_tiny(tmp_path / "ws"), params=TINY)
    for name in ("api", "api/job"):
        entry = result.to_json()["projects" if name == "api" else "agents"][name]
        assert entry["suggested"]["cpu_percent"] == 10.0  # p50 of "10 %", no margin
        assert entry["suggested"]["memory_bytes"] == 120 * MB
        assert entry["objective"]["method"] == "percentile"
        assert entry["objective"]["why"] == "no runs recorded"
        assert entry["backtest"] is None
        assert entry["rationale"].startswith("No runs recorded: CPU is the")
    assert any(note.startswith("no runs recorded") for note in result.notes)
    assert result.block_hours == 1


def test_under_an_hour_of_history_gives_no_suggestion_and_says_so(tmp_path):
    result = autotune(build_tiny(tmp_path / "ws", minutes=50), params=TuneParameters())
    entry = result.to_json()["projects"]["api"]
    assert entry["suggested"] is None
    assert entry["confidence"] == "none"
    assert entry["rationale"] == (
        "No suggestion: too little history: 50 samples over 0.83 h recorded (needs 5 runs or "
        "100 samples, over 1 h)."
    )
    assert result.patch == {}
    assert "history too short for a backtest (it needs two hours)" in result.notes


# --- a simulated two-day history with known anomalies ---------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / ".devloop-workspace"
    summary = simulate(out, days=2, interval=10.0, seed=3)
    return out, summary, autotune(out)


@pytest.mark.slow
def test_the_leak_is_flagged_and_not_granted(sim):
    _, summary, result = sim
    leak = next(a for a in summary.anomalies if a.kind == "memory-leak")
    assert (leak.project, leak.agent) == ("proj-1", "type-checker")
    flagged = {name for name, s in {**result.projects, **result.agents}.items() if s.leak}
    assert flagged == {"proj-1", "proj-1/type-checker"}
    entry = result.agents["proj-1/type-checker"]
    assert entry.leak is not None
    assert 11.0 <= entry.leak["mb_per_hour"] <= 13.0  # planted: 12 MiB an hour
    assert entry.memory_bytes is not None and entry.current_memory is not None
    assert entry.memory_bytes <= entry.current_memory  # never raised to feed it
    assert "a leak" in entry.rationale


@pytest.mark.slow
def test_the_over_limit_episode_is_flagged_as_censored(sim):
    _, summary, result = sim
    episode = next(a for a in summary.anomalies if a.kind == "cpu-over-limit")
    assert episode.project == "proj-2"
    censoring = {name: s.censoring for name, s in result.projects.items()}
    # 12 pauses of 20 s at a 10 s tick: 24 paused ticks, all of proj-2's.
    assert censoring["proj-2"]["pause_events"] == 12
    assert censoring["proj-2"]["paused_ticks"] == 24
    assert censoring["proj-1"]["paused_ticks"] == censoring["proj-3"]["paused_ticks"] == 0
    assert result.projects["proj-2"].censored_cpu
    assert "raised because demand was hidden (paused or throttled for 24 ticks" in (
        result.projects["proj-2"].rationale
    )
    assert all(result.agents[f"proj-2/{a}"].censoring["paused_ticks"] == 24
               for a in ("linter", "formatter", "test-runner", "type-checker"))  # fmt: skip


def _decayed_percentile(values: np.ndarray, ts: np.ndarray, end: datetime, q: float) -> float:
    """The exact time-decayed percentile (no bins), weights by hour middle as autotune does."""
    hour = (ts - ts.min()).astype("timedelta64[us]").astype(np.int64) // 3_600_000_000
    origin = ts.min().astype("datetime64[h]").astype("datetime64[us]")
    middle = origin + (hour * 3600 + 1800) * np.timedelta64(1, "s")
    end64 = np.datetime64(end.replace(tzinfo=None), "us")
    age = (end64 - middle) / np.timedelta64(1, "s")
    weight = 0.5 ** (np.maximum(age, 0) / 86400)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weight[order])
    index = np.searchsorted(cumulative, q / 100 * cumulative[-1])
    return float(values[order][index])


@pytest.mark.slow
def test_suggestions_fall_in_the_bands_the_data_gives(sim):
    out, _, result = sim
    store = Store(out)
    frame = store.frame(
        "SELECT s.ts, s.project, 100.0 * sum(s.cpu_cores) / 2 AS cpu, sum(s.rss_bytes) AS rss "
        "FROM samples s GROUP BY ALL"
    )
    store.close()
    assert frame["ts"].n_unique() == 17280  # every tick has processes of every project
    for name, entry in result.projects.items():
        part = frame.filter(frame["project"] == name).sort("ts")
        ts = part["ts"].dt.replace_time_zone(None).to_numpy()
        exact = _decayed_percentile(part["cpu"].to_numpy(), ts, result.selection.end, 95)
        assert entry.cpu is not None and entry.memory_bytes is not None
        found = entry.objective or {}
        if found.get("method") == "replay":
            # the smallest limit meeting the slowdown target is never above the runs' peak
            # (there nothing is slowed); the pool may grant less than that
            if not found.get("kept_current"):
                needed = entry.needed_cpu if entry.scaled else entry.cpu
                assert needed is not None
                assert 1.0 <= needed <= found["runs_peak_cpu_percent"] + 0.1, name
        elif not entry.censored_cpu:
            # the bin's upper edge is at most 0.1 point above the value; then +15 %, at
            # least the 1 % minimum, rounded up to a tenth
            low, high = max(exact * 1.15, 1.0), max((exact + 0.1) * 1.15, 1.0) + 0.1
            assert low - 1e-6 <= entry.cpu <= high, name
        peak = int(part["rss"].max())
        assert entry.evidence["memory_bytes"]["max"] == peak
        if not entry.leak and not entry.scaled:
            # the runs' peak (their wait4 maximum) may be above the ticks' sum
            top = max(peak, found.get("runs_peak_memory_bytes") or 0)
            assert (
                peak
                <= entry.memory_bytes
                <= math.ceil(top * 1.15 / MB) * MB * (1.25 if entry.censored_memory else 1)
            ), name
    assert result.to_json()["period"]["hours"] == pytest.approx(48, abs=0.01)
    assert {s.confidence for s in result.projects.values()} == {"medium"}


@pytest.mark.slow
def test_the_pool_is_raised_to_hold_the_suggestions(sim):
    out, _, result = sim
    data = result.to_json()
    pool = load_workspace(out).config.pool
    suggested = [p["suggested"] for p in data["projects"].values()]
    if not data["pool"]["fits"]:
        assert data["pool"]["suggested"]["cpu_percent"] <= 90.0
        assert data["pool"]["suggested"]["memory_bytes"] >= sum(
            s["memory_bytes"] for s in suggested
        )  # memory is never scaled to fit a pool
    else:
        assert sum(s["cpu_percent"] for s in suggested) <= pool.cpu
    for name, entry in data["agents"].items():
        project = data["projects"][name.split("/")[0]]["suggested"]
        assert (
            entry["suggested"]["cpu_percent"] <= project["cpu_percent"]
            or entry["flags"]["scaled_to_pool"] is False
        )


@pytest.mark.slow
def test_a_pool_too_small_is_raised_not_squeezed(sim):
    out, _, _ = sim
    result = autotune(out, params=TuneParameters(min_memory=GB))
    pool = result.to_json()["pool"]
    assert pool["fits"] is False
    assert pool["needed"]["memory_bytes"] >= 3 * GB
    assert pool["suggested"]["memory_bytes"] == pool["needed"]["memory_bytes"]
    assert any(note.startswith("the pool is too small") for note in result.notes)
    assert all((p.memory_bytes or 0) >= GB for p in result.projects.values())
    assert result.patch["global"]["resourceLimits"]["maxMemory"] == (
        f"{pool['needed']['memory_bytes'] // MB}MB"
    )


@pytest.mark.slow
def test_a_period_narrows_the_history(sim):
    out, _, _ = sim
    result = autotune(out, TimeRange(period=timedelta(hours=6)))
    assert result.to_json()["period"]["hours"] == pytest.approx(6, abs=0.01)
    assert result.block_hours == 1
    assert {s.confidence for s in result.projects.values()} == {"low"}


@pytest.mark.slow
def test_a_range_far_larger_than_the_data_gives_the_same_suggestions(sim):
    out, _, whole = sim  # the whole store: 2 days
    huge = autotune(out, TimeRange(period=timedelta(days=3650))).to_json()
    expected = whole.to_json()
    for result in (huge, expected):
        del result["generated_at"], result["period"]  # the range as asked differs, not the rest
    assert huge == expected
