"""Autotune by run slowdown, on real stores built by hand: a 4-core machine, a tick a second, runs
recorded in the ``runs`` table with their processes' ticks in ``samples``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from devloop.store import write_table
from devloop.store.columns import PROCESSES, RUNS, SAMPLES
from devloop.tune import TuneParameters, autotune
from devloop.tune.report import html_report

MB = 1 << 20
GB = 1 << 30
T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
PARAMS = TuneParameters(min_history=60, min_samples=10, half_life=1e9, min_memory=0)


def row(columns: Any, **values: Any) -> dict[str, Any]:
    return {column.name: values.get(column.name) for column in columns}


def build(
    folder: Path,
    runs: list[tuple[str, str, int, list[float], list[int]]],
    *,
    limits: dict[str, Any],
    per_project: dict[str, Any] | None = None,
    projects: list[tuple[str, int]] = (("api", 2),),  # type: ignore[assignment]
    profiles: dict[str, Any] | None = None,
) -> Path:
    """A workspace whose ``runs`` are (project, agent, start second, cores per tick, rss per
    tick), each one process sampled at every tick of its life."""
    folder.mkdir(parents=True)
    sharing: dict[str, Any] = {"strategy": "custom" if per_project else "equal"}
    if per_project:
        sharing["perProjectLimits"] = per_project
    if profiles:
        sharing["profiles"] = profiles
    (folder / "workspace.json").write_text(json.dumps({
        "workspace_name": "bursty",
        "projects": [{"name": n, "path": n, "priority": p} for n, p in projects],
        "global": {"resourceLimits": limits},
        "resource_sharing": sharing,
    }))  # fmt: skip
    root = folder / "metrics"
    end = max(start + len(cores) for _, _, start, cores, _ in runs) + 5
    at = [T0 + timedelta(seconds=s) for s in range(end)]
    write_table(root, "system", pa.Table.from_pylist(
        [{"ts": ts, "host": "h", "cores": 4, "cpu_busy_cores": 1.0, "mem_total_bytes": 16 * GB,
          "mem_used_bytes": 4 * GB} for ts in at]))  # fmt: skip
    run_rows, process_rows, sample_rows = [], [], []
    for n, (project, agent, start, cores, rss) in enumerate(runs):
        begin, stop = T0 + timedelta(seconds=start), T0 + timedelta(seconds=start + len(cores))
        run_id, pid = f"r{n}", 1000 + n
        run_rows.append(row(
            RUNS, ts=stop, host="h", run_id=run_id, project=project, agent=agent,
            trigger="watch", status="complete", queued=begin, started=begin, ended=stop,
            paused_seconds=0.0, throttled_seconds=0.0, cpu_user_seconds=float(sum(cores)),
            cpu_system_seconds=0.0, max_rss_bytes=max(rss)))  # fmt: skip
        process_rows.append(row(
            PROCESSES, ts=begin + timedelta(seconds=1), host="h", pid=pid, start_time=begin,
            project=project, agent=agent, run_id=run_id))  # fmt: skip
        for i, (c, m) in enumerate(zip(cores, rss, strict=True)):
            sample_rows.append(row(
                SAMPLES, ts=begin + timedelta(seconds=i + 1), host="h", project=project,
                agent=agent, pid=pid, start_time=begin, cpu_cores=c, rss_bytes=m,
                state="running"))  # fmt: skip
    write_table(root, "runs", pa.Table.from_pylist(run_rows))
    write_table(root, "processes", pa.Table.from_pylist(process_rows))
    write_table(root, "samples", pa.Table.from_pylist(sample_rows))
    return folder


def bursts(count: int, *, cores: float = 3.0, gap: int = 100, rss: int = 100 * MB,
           project: str = "api", agent: str = "tests", offset: int = 0):  # fmt: skip
    """``count`` runs of 10 ticks at ``cores`` (3 cores = 75 % of 4), one every ``gap``."""
    return [(project, agent, offset + i * gap, [cores] * 10, [rss] * 10) for i in range(count)]


THROTTLE = {"maxCpu": 100, "maxMemory": "8GB", "enforcementAction": "throttle"}
PAUSE = {"maxCpu": 100, "maxMemory": "8GB", "enforcementAction": "pause"}


def test_a_bursty_agent_is_suggested_what_keeps_its_runs_within_the_target(tmp_path):
    # 80 runs of 10 ticks at 75 % of the machine, idle 90 s between (cores exact in float32).
    ws = build(tmp_path / "ws", bursts(80), limits=THROTTLE)
    result = autotune(ws, params=PARAMS)
    for name, entry in (("api", result.projects["api"]), ("api/tests", result.agents["api/tests"])):
        # Throttled at c %, a run's first tick runs free (the check sees it a tick later) and
        # the 9 others take 75 / c ticks each: (1 + 9 x 75 / c) / 10 <= 1.10 gives c >= 67.5,
        # on the 0.1 grid exactly.
        assert entry.cpu == 67.5, name
        assert entry.objective is not None and entry.objective["method"] == "replay"
        assert entry.objective["p95_at_needed"] == 1.1
        # Never below the burst level less what the free first tick and the target allow:
        # 75 x 9 / (10 x 1.10 - 1) = 67.5.
        assert entry.cpu >= 75 * 9 / (10 * 1.10 - 1) - 1e-9
        assert "smallest limit under which the replayed p95 slowdown" in entry.rationale

    # Under pause, a run over its limit stops for the minimum pause: only the burst level fits.
    ws = build(tmp_path / "pause", bursts(80), limits=PAUSE)
    assert autotune(ws, params=PARAMS).agents["api/tests"].cpu == 75.0


def test_a_projects_limit_holds_the_few_heavy_runs_of_one_agent_among_many_light_ones(tmp_path):
    # 95 lint runs at 0.5 core (12.5 % of 4) and 5 test runs at 3 cores (75 %), one every
    # 100 s. Pooled, the 5 test runs are 5 % of the project's runs: a p95 over all of them is
    # a lint run's, and the project's limit would hold the tests at a sixth of what they need.
    # Taken per agent, the tests' own p95 decides: the same 67.5 % as the agent's own limit.
    runs = [
        ("api", "tests", i * 100, [3.0] * 10, [100 * MB] * 10)
        if i % 20 == 19
        else ("api", "lint", i * 100, [0.5] * 10, [50 * MB] * 10)
        for i in range(100)
    ]
    ws = build(tmp_path / "ws", runs, limits=THROTTLE)
    result = autotune(ws, params=PARAMS)
    assert result.agents["api/tests"].cpu == 67.5
    # (1 + 9 x 12.5 / c) / 10 <= 1.10 gives c >= 11.25: 11.3 on the 0.1 grid
    assert result.agents["api/lint"].cpu == 11.3
    assert result.projects["api"].cpu == 67.5
    assert result.projects["api"].objective["p95_at_needed"] == 1.1
    assert result.projects["api"].objective["kept_current"] is None


def test_a_current_limit_that_does_better_is_kept_with_the_reason(tmp_path):
    # Day 1 (the fit): small runs at 25 %. Day 2 (the replay): bursts at 75 %. The fit on day
    # 1 gives 22.5 %, which slows day 2's runs; the current 100 % limit slows none: kept.
    runs = bursts(30, cores=1.0) + bursts(30, offset=86_400)
    ws = build(tmp_path / "ws", runs, limits=THROTTLE, per_project={"api": {"maxCpu": 100,
               "maxMemory": "4GB"}})  # fmt: skip
    result = autotune(ws, params=PARAMS)
    entry = result.projects["api"]
    data = result.to_json()["projects"]["api"]
    assert data["backtest"]["folds"][0]["cpu_percent"] == 22.5
    assert data["backtest"]["current"]["p95"] == 1.0
    # day 2 under 22.5 %: (1 + 9 x 75 / 22.5) / 10 = 3.1
    assert data["backtest"]["suggested"]["p95"] == 3.1
    assert (entry.cpu, entry.memory_bytes) == (100.0, 4 * GB)
    assert entry.objective is not None
    assert entry.objective["kept_current"] == (
        "its backtested p95 slowdown would be 3.10x against 1.00x under the current limit"
    )
    assert entry.rationale.startswith("Keeps its current limit: its backtested p95")


def test_memory_is_never_under_a_run_peak_and_a_run_over_it_fails(tmp_path):
    # 20 runs of 100 MB, then one of 300 MB on day 2: fitted on day 1, the limit (100 MB +
    # 15 %) is under that run's peak, so the backtest counts it failed; the current 1 GB does
    # not: never worse keeps 1 GB. The final suggestion itself is never under 300 MB.
    runs = bursts(20, cores=0.4) + bursts(1, cores=0.4, rss=300 * MB, offset=86_400)
    ws = build(tmp_path / "ws", runs, limits=THROTTLE, per_project={"api": {"maxCpu": 100,
               "maxMemory": "1GB"}})  # fmt: skip
    result = autotune(ws, params=PARAMS)
    data = result.to_json()["projects"]["api"]
    assert data["backtest"]["folds"][0]["memory_bytes"] == 115 * MB
    assert data["backtest"]["suggested"]["failed_memory"] == 1
    assert data["backtest"]["current"]["failed_memory"] == 0
    assert data["objective"]["kept_current"].startswith("1 runs would fail on memory")
    assert result.projects["api"].memory_bytes == GB
    # the agent's own fit over the whole history holds the 300 MB peak plus 15 %
    ws2 = build(tmp_path / "ws2", runs[-1:] + bursts(20, cores=0.4, offset=100_000),
                limits=THROTTLE)  # fmt: skip
    agent = autotune(ws2, params=PARAMS).agents["api/tests"]
    assert agent.memory_bytes == 345 * MB  # ceil(300 MB x 1.15) in whole MiB


def test_limits_the_pool_cannot_hold_overcommit_it_when_the_runs_take_turns(tmp_path):
    # Two projects, each bursting at 75 % by turns: each needs 75 % alone (pause), 150 % in all,
    # more than the largest pool allowed (90 %). Fit into it by priority (a: 71.4 %, b:
    # 18.6 %), every run is over its project's limit and paused for the 5-s minimum pause;
    # overcommitted (each keeps 75 %, the pool holds their sum), runs taking turns never meet.
    runs = bursts(20, project="a", agent="t") + bursts(20, project="b", agent="t", offset=50)
    limits = {**PAUSE, "maxCpu": 60}
    ws = build(tmp_path / "ws", runs, limits=limits, projects=[("a", 0), ("b", 3)])
    result = autotune(ws, params=PARAMS)
    pool = result.to_json()["pool"]
    assert pool["fits"] is False
    assert pool["needed"]["cpu_percent"] == 150.0
    assert pool["suggested"]["cpu_percent"] == 90.0  # the default --max-pool
    assert pool["overcommit_cpu"] is True
    # (1 + 5 paused + 9) / 10 ticks: every run of both paused once at its first check
    # dynamic: the pool split 45 / 45 by the needs; a run of 10 s is over before the 30 s the
    # rule waits to move a share, so every run is paused as under the limits fit by priority
    assert pool["compared"] == [
        {"limits": "fit", "overcommit_cpu": False, "failed_or_unfinished": 0,
         "worst_p95": 28.0, "mean_p95": 28.0},
        {"limits": "overcommit", "overcommit_cpu": True, "failed_or_unfinished": 0,
         "worst_p95": 1.0, "mean_p95": 1.0},
        {"limits": "dynamic", "overcommit_cpu": False, "failed_or_unfinished": 0,
         "worst_p95": 28.0, "mean_p95": 28.0},
    ]  # fmt: skip
    assert pool["dynamic"] is False and pool["weights"] is None
    assert result.patch["global"] == {"resourceLimits": {"maxCpu": 90}}
    assert result.patch["resource_sharing"]["overcommitCpu"] is True
    a, b = result.projects["a"], result.projects["b"]
    assert (a.cpu, b.cpu) == (75.0, 75.0) and not a.scaled and not b.scaled
    assert a.at_pool is not None and b.at_pool is not None
    assert (a.at_pool["p95"], b.at_pool["p95"]) == (1.0, 1.0)
    assert b.rationale.endswith(
        "the projects' limits overcommit the pool (overcommitCpu): with every project at once, "
        "p95 slowdown 1.0x."
    )
    page = html_report(result)
    assert "<td>suggested (overcommitCpu)</td><td>90.00%</td>" in page
    assert "<tr><td>fit into the pool</td><td>28.00x</td><td>28.00x</td><td>0</td></tr>" in page
    assert "<tr><td>overcommitted (suggested)</td><td>1.00x</td>" in page
    # raised within max_pool when it is enough (37.5 % each, 75 % in all): no overcommit
    runs = [(p, "t", start, [1.5] * 10, rss) for p, _, start, _, rss in runs]
    ws = build(tmp_path / "ws2", runs, limits=limits, projects=[("a", 0), ("b", 3)])
    result = autotune(ws, params=PARAMS)
    pool = result.to_json()["pool"]
    assert pool["suggested"]["cpu_percent"] == 75.0
    assert pool["overcommit_cpu"] is False and pool["compared"] == []
    assert "overcommitCpu" not in result.patch["resource_sharing"]


def test_runs_together_over_the_largest_pool_keep_the_better_of_the_two_pools(tmp_path):
    # The same bursts at the same moments: 150 % at once. Fit by priority, both projects are
    # paused at every run (28x); overcommitted, the pool pauses b (priority 3) for the minimum
    # pause while a (priority 0) runs alone: a 1.0x, b (1 + 5 + ... ) 4.0x. The better is
    # kept; with throttle the limits fit into the pool slow a little, b pays.
    runs = bursts(20, project="a", agent="t") + bursts(20, project="b", agent="t")
    ws = build(tmp_path / "ws", runs, limits={**PAUSE, "maxCpu": 60},
               projects=[("a", 0), ("b", 3)])  # fmt: skip
    result = autotune(ws, params=PARAMS)
    assert [c["worst_p95"] for c in result.pool.compared] == [28.0, 4.0, 28.0]
    assert result.pool.overcommit
    a, b = result.projects["a"], result.projects["b"]
    assert a.at_pool is not None and b.at_pool is not None
    assert (a.at_pool["p95"], b.at_pool["p95"]) == (1.0, 4.0)


def long_runs(project: str, offset: int, *, rss: int = 100 * MB):
    """6 runs of 120 ticks at 3 cores (75 % of 4), one every 400 s from ``offset``."""
    return [(project, "t", offset + i * 400, [3.0] * 120, [rss] * 120) for i in range(6)]


def test_the_dynamic_strategy_is_replayed_beside_the_two_pools(tmp_path):
    # Two projects taking turns with runs of 2 minutes at 75 %, throttled: 150 % needed, 90 %
    # allowed. Fit by priority b gets 90 - 71.4 = 18.6 %: its runs stretch ~4x, into a's next
    # ones and its own next trigger (3.42x at p95). Under dynamic both start at 45 % (the pool by
    # their needs) and a run over 80 % of its share for 30 s takes 20 % more from the idle
    # project: each run climbs from 45 % towards its 68.2 % cap, between the other two.
    runs = long_runs("a", 0) + long_runs("b", 200)
    ws = build(tmp_path / "ws", runs, limits={**THROTTLE, "maxCpu": 60},
               projects=[("a", 0), ("b", 3)])  # fmt: skip
    result = autotune(ws, params=PARAMS)
    fit, overcommit, dynamic = result.pool.compared
    assert (fit["limits"], overcommit["limits"], dynamic["limits"]) == (
        "fit", "overcommit", "dynamic"
    )  # fmt: skip
    assert fit["worst_p95"] == 3.42
    assert (
        overcommit["worst_p95"] == 1.0989
    )  # each alone at its 68.2 %: (1 + 119 x 75 / 68.2) / 120
    assert abs((1 + 119 * 75 / 68.2) / 120 - 1.0989) < 1e-4
    assert overcommit["worst_p95"] < dynamic["worst_p95"] < fit["worst_p95"]
    assert dynamic["worst_p95"] == 1.9123
    assert result.pool.overcommit and not result.pool.dynamic  # the best of the three


def test_a_dynamic_pool_holds_each_projects_memory_in_its_share_and_patches_the_strategy(
    tmp_path, monkeypatch
):
    # Only the dynamic trial (as when it replays best): the pool is split by the CPU needs
    # (68.2 : 68.2), so each project's memory share is half the pool; b's runs reach 5 GB,
    # its limit 5.75 GB (+ 15 %): the memory pool is raised to twice that, 11.5 GB.
    import devloop.tune.suggest as suggest
    from devloop.config import load_workspace
    from devloop.config.allocation import allocate
    from devloop.tune.patch import apply_tuning

    monkeypatch.setattr(suggest, "POOL_MODES", ("dynamic",))
    runs = long_runs("a", 0) + long_runs("b", 200, rss=5 * GB)
    ws = build(tmp_path / "ws", runs, limits={**THROTTLE, "maxCpu": 60},
               projects=[("a", 0), ("b", 3)])  # fmt: skip
    result = autotune(ws, params=PARAMS)
    pool = result.to_json()["pool"]
    assert pool["dynamic"] is True and pool["weights"] == {"a": 68.2, "b": 68.2}
    b_memory = result.projects["b"].memory_bytes
    assert b_memory == 5888 * MB  # 5 GB x 1.15
    assert pool["suggested"] == {"cpu_percent": 90.0, "memory_bytes": 2 * b_memory,
                                 "memory": "11.5GB"}  # fmt: skip
    assert result.pool.note is not None
    assert "raises it to 90% CPU and 11.5GB (the dynamic pool splits memory" in result.pool.note
    sharing = result.patch["resource_sharing"]
    assert sharing["strategy"] == "dynamic"
    assert sharing["weights"] == {"a": 68.2, "b": 68.2}
    assert sharing["perProjectLimits"]["b"] == {"maxCpu": 68.2, "maxMemory": "5888MB"}
    assert "overcommitCpu" not in sharing and "adaptation" not in sharing  # enabled by default
    assert "dynamic strategy shares the pool" in result.projects["b"].rationale
    assert "(dynamic, weights a 68.2, b 68.2)" in html_report(result)
    # applied, the files load, and every project starts with its memory in its share
    out = tmp_path / "suggestions.json"
    out.write_text(json.dumps(result.to_json()))
    apply_tuning(out, ws)
    allocation = allocate(load_workspace(ws))
    assert allocation.strategy == "dynamic"
    assert {n: p.cpu for n, p in allocation.projects.items()} == {"a": 45.0, "b": 45.0}
    assert allocation.projects["b"].memory_bytes >= b_memory


def test_an_agent_running_a_second_after_each_save_has_the_time_recorded_as_history(tmp_path):
    # Runs of 2 ticks every 20 minutes: a few samples, but hours recorded (the system rows are
    # the recorder's ticks). Its history is the time recorded, its evidence its runs.
    params = TuneParameters(half_life=1e9, min_memory=0)  # min_history 1 h, 5 runs or 100 samples
    runs = [("api", "lint", i * 1200, [3.0, 3.0], [50 * MB] * 2) for i in range(6)]
    result = autotune(build(tmp_path / "ws", runs, limits=PAUSE), params=params)
    lint = result.agents["api/lint"]
    assert lint.evidence["cpu_percent"]["samples"] == 12
    assert lint.objective is not None and lint.objective["method"] == "replay"
    assert lint.confidence == "low"  # 6,007 s recorded: over an hour, under a day
    # paused at the check after its first tick, a 2-tick run only meets 1.10x unheld
    assert lint.cpu == 75.0
    # four runs over 1 h: neither 5 runs nor 100 samples
    result = autotune(build(tmp_path / "few", runs[:4], limits=PAUSE), params=params)
    lint = result.agents["api/lint"]
    assert lint.cpu is None and lint.confidence == "none"
    assert lint.rationale == (
        "No suggestion: too little history: 4 runs and 8 samples over 1 h recorded (needs 5 "
        "runs or 100 samples, over 1 h)."
    )


def test_a_time_of_day_profile_too_small_for_the_runs_is_raised_in_the_patch(tmp_path):
    # The base pool (100 %) holds the 75 % the bursts need, but every run is triggered under
    # a profile of 20 % (its window holds the whole run span in any time zone): that profile is
    # the pool the runs meet, so the patch raises it, and the suggested replay uses it raised.
    profiles = {"day": {"cpuLimit": 20, "memoryLimit": "1GB", "times": ["00:00-23:59"]},
                "unused": {"cpuLimit": 10, "times": ["23:59-00:00"]}}  # fmt: skip
    ws = build(tmp_path / "ws", bursts(20), limits=PAUSE, profiles=profiles)
    result = autotune(ws, params=PARAMS)
    assert result.projects["api"].cpu == 75.0
    pool = result.to_json()["pool"]
    assert pool["fits"] is False
    assert pool["profiles"] == {
        "day": {
            "current": {"cpu_percent": 20.0, "memory_bytes": GB},
            "suggested": {"cpu_percent": 75.0, "memory_bytes": GB, "memory": "1GB"},
        }
    }
    assert result.patch["resource_sharing"]["profiles"] == {"day": {"cpuLimit": 75}}
    assert "the patch raises the profile day (20% CPU and 1GB, in force when runs" in pool["note"]
    totals = result.to_json()["backtest"]["totals"]
    assert totals["suggested"]["p95"] <= 1.10 and totals["suggested"]["not_finished"] == 0
    # under the current 20 %, the paused bursts are slowed far past the target
    assert totals["current"]["p95"] is None or totals["current"]["p95"] > 2.0


def test_an_agents_json_cap_under_the_suggestion_is_raised_with_it(tmp_path):
    # agents.json's own project cap (global.resourceLimits) holds the project at 25 % whatever
    # workspace.json says: a suggestion of 75 % would not take effect unless it rises too.
    ws = build(tmp_path / "ws", bursts(20), limits=PAUSE)
    agents = ws.parent / "api" / ".devloop" / "agents.json"
    agents.parent.mkdir(parents=True)
    agents.write_text(
        json.dumps(
            {
                "global": {"resourceLimits": {"maxCpu": 25, "maxMemory": 500}},
                "agents": {"tests": {"resourceLimits": {"maxCpu": 10}}},
            }
        )
    )
    result = autotune(ws, params=PARAMS)
    assert result.projects["api"].cpu == 75.0
    patch = result.agents_patches["api"]["patch"]
    assert patch["global"] == {"resourceLimits": {"maxCpu": 75}}  # 500 MB holds 115 MB
    assert patch["agents"]["tests"]["resourceLimits"]["maxCpu"] == 75
    # replayed with the cap raised: no run slowed (under 25 % each would be paused)
    assert result.projects["api"].at_pool is not None
    assert result.projects["api"].at_pool["p95"] == 1.0


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC (profile windows and the daily pattern are read in local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def working_days(days: int, *, night_run: int | None = None):
    """Runs of 10 ticks at 1 core (25 % of 4) for projects a and b together, every 10 minutes
    from 09:00 to 17:00 UTC on ``days`` days (T0 is 08:00); on day ``night_run``, one of a's at
    03:00 the next morning."""
    runs = []
    for day in range(days):
        for slot in range(48):
            start = day * 86_400 + 3_600 + slot * 600
            runs += [(p, "t", start, [1.0] * 10, [100 * MB] * 10) for p in ("a", "b")]
    if night_run is not None:
        runs.append(("a", "t", night_run * 86_400 + 19 * 3_600, [1.0] * 10, [100 * MB] * 10))
    return runs


def test_a_profile_for_the_quiet_hours_is_learned_and_suggested_when_the_runs_fare_no_worse(
    tmp_path, utc
):
    # Three days: both projects' runs from 09:00 to 17:00 only. Each needs 22.5 % (a run at 25 %
    # throttled: (1 + 9 x 25 / c) / 10 <= 1.10), 45 % in all: the hours 09-17 use 45 % of the
    # 60 % pool at once, the others nothing. Quiet: 17:00-09:00, where the pool can be the
    # least (1 % per project: 2 %), the runs unchanged; on average 60 x 8/24 + 2 x 16/24 %.
    ws = build(tmp_path / "ws", working_days(3), limits={**THROTTLE, "maxCpu": 60},
               projects=[("a", 0), ("b", 0)])  # fmt: skip
    result = autotune(ws, params=PARAMS)
    assert (result.projects["a"].cpu, result.projects["b"].cpu) == (22.5, 22.5)
    learned = result.to_json()["pool"]["learned_profile"]
    assert learned["suggested"] is True
    assert learned["times"] == ["17:00-09:00"]
    assert learned["quiet_hours"] == [*range(9), *range(17, 24)]
    assert learned["cpu_percent"] == 2.0
    assert learned["peak_percent_by_hour"][9:17] == [45.0] * 8
    assert learned["reserved_cpu_percent"] == round((60 * 8 + 2 * 16) / 24, 2)
    assert learned["compared"]["with"] == learned["compared"]["without"]
    # walk-forward: learned on the first two days, the third day's 96 runs fare the same
    (fold,) = learned["walk_forward"]
    assert (fold["day"], fold["runs"], fold["times"], fold["cpu_percent"]) == (
        2, 96, ["17:00-09:00"], 2.0
    )  # fmt: skip
    assert fold["with"] == fold["without"] and fold["worse"] is False
    assert result.patch["resource_sharing"]["profiles"] == {
        "quiet": {"cpuLimit": 2, "times": ["17:00-09:00"]}
    }
    assert any(note.startswith("learned profile 'quiet'") for note in result.notes)
    assert "Learned time-of-day profile <code>quiet</code> (suggested): pool 2% at 17:00-09:00" in (
        html_report(result)
    )
    totals = result.to_json()["backtest"]["totals"]["suggested"]
    assert totals["reserved_cpu_percent"] == learned["reserved_cpu_percent"]
    # applied, the files load and the pool is the profile's at night, the base one by day
    from datetime import time as clock

    from devloop.config import load_workspace
    from devloop.config.allocation import allocate
    from devloop.tune.patch import apply_tuning

    (tmp_path / "s.json").write_text(json.dumps(result.to_json()))
    apply_tuning(tmp_path / "s.json", ws)
    applied = load_workspace(ws)
    assert allocate(applied, at=clock(3, 0)).pool.cpu == 2.0
    assert allocate(applied, at=clock(12, 0)).pool.cpu == 60.0
    assert totals["p95"] == 1.1  # the target, as without the profile

    # A run of a's at 03:00 on the second night: it uses a's whole 22.5 % limit, which a pool
    # under the limits' 45 % would scale down, so hour 3 needs 45 %: the windows split there.
    ws = build(tmp_path / "night", working_days(3, night_run=1), limits={**THROTTLE,
               "maxCpu": 60}, projects=[("a", 0), ("b", 0)])  # fmt: skip
    learned = autotune(ws, params=PARAMS).to_json()["pool"]["learned_profile"]
    assert learned["times"] == ["04:00-09:00", "17:00-03:00"]
    assert learned["peak_percent_by_hour"][3] == 45.0
    assert learned["suggested"] is True

    # The same run on the third night instead: the profile learned on the first two days holds
    # it to 2 % (the walk-forward says so), though in-sample hour 3 is busy and it would not.
    ws = build(tmp_path / "late", working_days(3, night_run=2), limits={**THROTTLE,
               "maxCpu": 60}, projects=[("a", 0), ("b", 0)])  # fmt: skip
    result = autotune(ws, params=PARAMS)
    learned = result.to_json()["pool"]["learned_profile"]
    assert learned["times"] == ["04:00-09:00", "17:00-03:00"]
    assert learned["compared"]["with"] == learned["compared"]["without"]  # in-sample: the same
    (fold,) = learned["walk_forward"]
    assert fold["times"] == ["17:00-09:00"] and fold["worse"] is True
    # a's night run held to 1 % (its 22.5 % scaled into 2 %): one run of 49, so a's p95 does
    # not show it (1.1x either way); the runs slowed over 2x do
    assert fold["without"]["worst_p95"] == fold["with"]["worst_p95"] == 1.1
    assert (fold["without"]["slowed_2x"], fold["with"]["slowed_2x"]) == (0, 1)
    assert learned["suggested"] is False
    assert learned["why"].startswith("not suggested: learned on the days before it, the profile "
                                     "makes day 3's runs fare worse")  # fmt: skip
    assert "profiles" not in result.patch["resource_sharing"]

    # Two days of history are not two recordings of every hour of the day: nothing learned.
    ws = build(tmp_path / "short", working_days(1), limits={**THROTTLE, "maxCpu": 60},
               projects=[("a", 0), ("b", 0)])  # fmt: skip
    learned = autotune(ws, params=PARAMS).to_json()["pool"]["learned_profile"]
    assert learned == {
        "name": "quiet",
        "suggested": False,
        "why": "too little history to learn a daily pattern (every hour of the day recorded "
        "on 2 days; the least recorded has 0)",
    }
