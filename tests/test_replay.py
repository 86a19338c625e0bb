"""The replay of recorded runs under a configuration, on hand-computed cases.

Every case runs on a 4-core machine (1 core = 25 % of the machine) with a 1 s tick, times in
seconds from ``T0``. The check at a tick sees what the runs used over the tick before it (what
the collector measures), so a run starting at a tick runs free until the next one.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from devloop.config import AgentsConfig, Workspace, parse_agents, parse_workspace
from devloop.errors import UsageError
from devloop.store import write_table
from devloop.store.columns import PROCESSES, RUNS, SAMPLES
from devloop.tune.replay import (
    Replay,
    ReplayedRun,
    RunDemand,
    SlowdownSummary,
    demand_from_store,
    own_clock,
    replay,
    summarize,
)

T0 = 1_767_600_000  # 2026-01-05 08:00:00 UTC, on every grid
CORES = 4
MB = 1 << 20
FOLDER = Path("/nonexistent/.devloop-workspace")


def workspace(data: dict[str, Any], agents: dict[str, dict[str, Any]] | None = None) -> Workspace:
    """A workspace from workspace.json (and agents.json per project) content, no files."""
    data = {"workspace_name": "replay", **data}
    config = parse_workspace(data, FOLDER / "workspace.json")
    parsed = {
        p.name: parse_agents(agents[p.name], FOLDER.parent / p.name / "agents.json")
        if agents and p.name in agents
        else AgentsConfig(file=None)
        for p in config.projects
    }
    return Workspace(dir=FOLDER, config=config, agents=parsed)


def projects(*names: str, **priorities: int) -> list[dict[str, Any]]:
    return [{"name": n, "path": n, "priority": priorities.get(n, 2)} for n in names]


def run(
    run_id: str, at: float, cores: list[float], rss: int | list[int] = 100 * MB, project: str = "p"
) -> RunDemand:
    """``run_id`` is ``agent`` or ``agent#n``; ``at`` seconds from T0."""
    memory = rss if isinstance(rss, list) else [rss] * len(cores)
    return RunDemand(run_id, project, run_id.split("#")[0], T0 + at, cores, memory)


def times(result: Replay) -> dict[str, tuple[float | None, float | None]]:
    """Start and end of each run, seconds from T0."""
    return {
        r.run_id: (
            None if r.start is None else r.start - T0,
            None if r.end is None else r.end - T0,
        )
        for r in result.runs
    }


def by_id(result: Replay) -> dict[str, ReplayedRun]:
    return {r.run_id: r for r in result.runs}


# --- no limits -------------------------------------------------------------------------------


def test_without_limits_every_run_keeps_its_recorded_duration():
    limits = {"maxCpu": 100, "maxMemory": "8GB"}
    config = workspace({"projects": projects("p", "q"), "global": {"resourceLimits": limits}})
    demand = [
        run("lint", 0, [0.5, 1.0, 0.25]),
        run("tests", 1.5, [1.0] * 4),  # between ticks: it starts at its trigger
        run("build", 86_400, [0.75, 0.0, 0.75], project="q"),  # a day later
    ]
    result = replay(demand, config, cores=CORES)
    assert times(result) == {"lint": (0, 3), "tests": (1.5, 5.5), "build": (86_400, 86_403)}
    assert [(r.replayed_duration, r.slowdown, r.outcome) for r in result.runs] == [
        (3.0, 1.0, "done"),
        (4.0, 1.0, "done"),
        (3.0, 1.0, "done"),
    ]
    assert all(r.paused_s == r.throttled_s == r.waited_s == 0 for r in result.runs)
    # the day between is skipped: ticks 0..5, then 86400..86402
    assert (result.steps, result.over_pool_ticks) == (9, 0)


def test_runs_of_one_agent_run_one_after_another():
    config = workspace({"projects": projects("p")})
    demand = [run("lint#1", 0, [0.25] * 5), run("lint#2", 2, [0.25] * 3)]
    # watch runs an agent once at a time: #2 asks at 2 s, #1 ends at 5 s
    assert times(replay(demand, config, cores=CORES)) == {"lint#1": (0, 5), "lint#2": (5, 8)}


# --- throttle --------------------------------------------------------------------------------

#: p may use 12.5 % of the machine (half a core of 4), held by the throttle
THROTTLED = {
    "projects": projects("p"),
    "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "8GB",
                                  "enforcementAction": "throttle"}},
    "resource_sharing": {"strategy": "custom",
                         "perProjectLimits": {"p": {"maxCpu": 12.5, "maxMemory": "4GB"}}},
}  # fmt: skip


def test_throttle_is_work_conserving_at_the_cap():
    # p may use 12.5 % of 4 cores = 0.5 core; the run wants 1 core for 10 ticks
    config = workspace(THROTTLED)
    (tests,) = replay([run("tests", 0, [1.0] * 10)], config, cores=CORES).runs
    # tick 0-1 free (the check at 1 s sees 1 core: held at 0.5); the other 9 ticks of work at
    # half speed take 18 s
    assert (tests.start - T0, tests.end - T0) == (0, 19)
    assert (tests.recorded_duration, tests.replayed_duration, tests.slowdown) == (10, 19, 1.9)
    assert (tests.throttled_s, tests.paused_s, tests.outcome) == (18, 0, "done")


def test_runs_of_two_hosts_are_replayed_each_on_its_own_machine():
    # p may use 12.5 % of a machine, throttled. Two runs at the same time wanting 0.5 core: on
    # one 4-core machine they share p's 0.5 core; on two hosts each has its own. Host b has 2
    # cores: 12.5 % of it is 0.25 core, so its run (held from the check at 1 s) takes 1 + 9 x 2.
    config = workspace(THROTTLED)
    one, two = run("lint", 0, [0.5] * 10), run("tests", 0, [0.5] * 10)
    shared = replay([one, two], config, cores=CORES)
    assert [r.replayed_duration for r in shared.runs] == [19, 19]  # held at 0.25 core each
    a, b = replace(one, host="a"), replace(two, host="b")
    apart = replay([a, b], config, cores=CORES, host_cores={"b": 2})
    assert [(r.run_id, r.replayed_duration) for r in apart.runs] == [("lint", 10), ("tests", 19)]
    assert apart.steps == 10 + 19


# --- pause -----------------------------------------------------------------------------------

PAUSE = {
    "projects": projects("p"),
    "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "8GB", "resumeThreshold": 0.8}},
    "resource_sharing": {"strategy": "custom",
                         "perProjectLimits": {"p": {"maxCpu": 50, "maxMemory": "4GB"}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("high", "check_interval", "min_pause", "resumed"),
    [
        # min pause 2 s is over at 3 s, but "steady" holds 43.75 % of p's 50 %, over the
        # resume threshold (0.8 x 50 = 40 %) until its tick 5 shows 3.125 % at 6 s
        (5, 1, 2.0, 6),
        # steady drops to 3.125 % at 2 s, but the default minimum pause, max(3 x checkInterval
        # 2 s, 5 s) = 6 s, holds the burst until 7 s
        (1, 2, None, 7),
    ],
)
def test_pause_resumes_under_the_threshold_after_the_minimum_pause(
    high: int, check_interval: float, min_pause: float | None, resumed: int
):
    data = {**PAUSE, "global": {"resourceLimits": {
        **PAUSE["global"]["resourceLimits"], "checkInterval": check_interval}}}  # fmt: skip
    demand = [
        run("steady", 0, [1.75] * high + [0.125] * (10 - high)),  # 43.75 %, then 3.125 %
        run("burst", 0, [1.875] * 4),  # 46.875 %
    ]
    result = replay(demand, workspace(data), cores=CORES, min_pause=min_pause)
    # at 1 s p is at 90.625 % of 50 %: the largest consumer, burst, is paused (43.75 % is left)
    # once resumed, burst (46.875 %) and steady (3.125 %) make 50 %: not over, it runs on
    burst = by_id(result)["burst"]
    assert times(result) == {"steady": (0, 10), "burst": (0, resumed + 3)}
    assert (burst.paused_s, burst.slowdown) == (resumed - 1, (resumed + 3) / 4)
    assert by_id(result)["steady"].slowdown == 1.0


def test_a_pause_for_memory_waits_for_the_memory_to_go():
    # p holds 1GB; two runs of 600MB: the second to be seen over is paused until the first ends
    config = workspace({
        "projects": projects("p"),
        "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "8GB"}},
        "resource_sharing": {"strategy": "custom",
                             "perProjectLimits": {"p": {"maxCpu": 100, "maxMemory": "1GB"}}},
    })  # fmt: skip
    demand = [run("a", 0, [0.5] * 4, 600 * MB), run("b", 0, [0.25] * 4, 600 * MB)]
    result = replay(demand, config, cores=CORES, min_pause=1)
    # at 1 s: 1200MB > 1GB, both use 600MB: the first listed (a) is paused. a stays paused
    # while b holds 600MB + a's own 600MB >= 0.8 x 1GB; b ends at 4 s, a resumes at 4 s
    assert times(result) == {"a": (0, 7), "b": (0, 4)}
    assert by_id(result)["a"].paused_s == 3


# --- the queue -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overflow", "expected", "outcomes"),
    [
        ({"enabled": True}, {"c": (8, 11), "d": (5, 8)}, ("done", "done")),
        ({"enabled": False}, {"c": (None, None), "d": (None, None)}, ("refused", "refused")),
        ({"enabled": True, "maxWaitTime": 2}, {"c": (None, None), "d": (None, None)},
         ("timed-out", "timed-out")),
    ],
)  # fmt: skip
def test_the_queue_admits_by_priority_within_max_concurrent_agents(
    overflow: dict[str, Any], expected: dict[str, tuple[float | None, float | None]],
    outcomes: tuple[str, str],
):  # fmt: skip
    config = workspace({
        "projects": projects("hi", "lo", hi=0, lo=3),
        "global": {"maxConcurrentAgents": 2,
                   "resourceLimits": {"maxCpu": 100, "maxMemory": "8GB", "overflow": overflow}},
    })  # fmt: skip
    demand = [
        run("a", 0, [0.25] * 5, project="lo"),
        run("b", 0, [0.25] * 8, project="lo"),
        run("c", 1, [0.25] * 3, project="lo"),  # both wait for a slot from 1 s ...
        run("d", 1, [0.25] * 3, project="hi"),  # ... and the first one (at 5 s) is hi's
    ]
    result = replay(demand, config, cores=CORES)
    assert times(result) == {"a": (0, 5), "b": (0, 8), **expected}
    found = by_id(result)
    assert (found["c"].outcome, found["d"].outcome) == outcomes
    if outcomes[0] == "done":
        assert (found["c"].waited_s, found["d"].waited_s, found["c"].slowdown) == (7, 4, 1.0)
    else:
        assert math.isinf(found["c"].slowdown)


# --- memory ----------------------------------------------------------------------------------


def test_a_run_whose_peak_alone_exceeds_its_memory_limit_fails():
    config = workspace(
        {"projects": projects("p"),
         "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "8GB"}}},
        {"p": {"agents": {"tests": {"resourceLimits": {"maxMemory": "256MB"}},
                          "lint": {"resourceLimits": {"maxMemory": "256MB"}}}}},
    )  # fmt: skip
    demand = [
        run("tests", 0, [0.5] * 4, [100 * MB, 200 * MB, 300 * MB, 100 * MB]),
        run("lint", 0, [0.5] * 4, 250 * MB),
    ]
    result = by_id(replay(demand, config, cores=CORES))
    tests, lint = result["tests"], result["lint"]
    # its third tick ends at 300MB over its 256MB: the tick at 3 s sees it, and it fails there
    assert (tests.failed_memory, tests.outcome, tests.end, tests.slowdown) == (
        True, "failed-memory", T0 + 3, math.inf)  # fmt: skip
    assert (lint.failed_memory, lint.outcome, lint.slowdown) == (False, "done", 1.0)


# --- dynamic and profiles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "first", "second"),
    [("dynamic", (0, 14 + 2 / 3), (20, 25)), ("weighted", (0, 19), (20, 27))],
)
def test_dynamic_lends_an_idle_projects_share_to_a_busy_one(
    strategy: str, first: tuple[float, float], second: tuple[float, float]
):
    # pool 50 %: busy and idle get 25 % (1 core) each. busy's run wants 2 cores and is held at 1.
    # dynamic: at 6 s busy has used over 0.8 x 25 % for the last 5 s while idle used nothing, so
    # busy asks 0.5 x 25 % more and idle gives it, down to half its share: busy 37.5 %, idle
    # 12.5 %. The held run's hold is raised to 1.5 cores at 6 s: 1 free tick and 5 at half
    # speed did 3.5 ticks of work, the other 6.5 at 0.75 take 8 2/3 s (weighted: 1 core, 19 s);
    # the next run is held at 37.5 % = 1.5 cores: after its free tick, 3 ticks of work at 0.75
    # take 4 s.
    config = workspace({
        "projects": projects("busy", "idle"),
        "global": {"resourceLimits": {"maxCpu": 50, "maxMemory": "8GB",
                                      "enforcementAction": "throttle"}},
        "resource_sharing": {"strategy": strategy,
                             "adaptation": {"enabled": True, "adjustmentFrequency": 5,
                                            "usageThreshold": 0.8, "reallocationFactor": 0.5}},
    })  # fmt: skip
    demand = [
        run("tests#1", 0, [2.0] * 10, project="busy"),
        run("tests#2", 20, [2.0] * 4, project="busy"),
    ]
    result = replay(demand, config, cores=CORES)
    found = times(result)
    assert found["tests#1"] == pytest.approx(first)
    assert found["tests#2"] == pytest.approx(second)


def test_the_profile_of_the_time_of_day_is_in_force():
    # local time, as the runtime reads profiles: at 18:00 the pool drops from 100 % to 50 %, and
    # p's equal share from 50 % to 25 % (the idle q has the other half)
    config = workspace({
        "projects": projects("p", "q"),
        "global": {"resourceLimits": {"maxCpu": 100, "maxMemory": "8GB",
                                      "enforcementAction": "throttle"}},
        "resource_sharing": {"profiles": {
            "day": {"cpuLimit": 100, "times": ["06:00-18:00"]},
            "night": {"cpuLimit": 50, "times": ["18:00-06:00"]}}},
    })  # fmt: skip
    start = datetime(2026, 1, 5, 17, 59, 50).timestamp()
    demand = [RunDemand("tests", "p", "tests", start, [2.0] * 20, [100 * MB] * 20)]
    (tests,) = replay(demand, config, cores=CORES).runs
    # 10 ticks free before 18:00, then held at 1 core: 10 ticks of work at half speed
    assert (tests.start - start, tests.end - start, tests.throttled_s) == (0, 30, 20)


def test_a_project_whose_share_is_the_pool_is_held_not_paused():
    # one project: its share is the whole pool (1 core), so the workspace is over with it. The
    # project's hold (1 core) is counted at its cap by the workspace scope checked after it, so
    # the run is held, not paused: a free first tick, then 3 ticks of work at half speed (6 s).
    # (It used to be paused by the workspace too and flap: 1 tick of work every 6 s, 19 s.)
    config = workspace({
        "projects": projects("p"),
        "global": {"resourceLimits": {"maxCpu": 25, "maxMemory": "8GB", "checkInterval": 1,
                                      "enforcementAction": "throttle"}},
    })  # fmt: skip
    (tests,) = replay([run("tests", 0, [2.0] * 4)], config, cores=CORES).runs
    assert (tests.start - T0, tests.end - T0, tests.paused_s, tests.throttled_s) == (0, 7, 0, 6)


# --- arguments, the summary ------------------------------------------------------------------


def test_bad_demand_is_refused():
    config = workspace({"projects": projects("p")})
    with pytest.raises(UsageError, match="'x' is not an enabled project"):
        replay([run("a", 0, [1.0], project="x")], config, cores=CORES)
    with pytest.raises(UsageError, match="as long as each other"):
        replay([RunDemand("a", "p", "a", T0, [1.0, 1.0], [1])], config, cores=CORES)
    with pytest.raises(UsageError, match="at least one core"):
        replay([], config, cores=0)


def test_the_summary_per_project_and_agent():
    def replayed(run_id: str, slowdown: float, outcome: str = "done") -> ReplayedRun:
        agent = run_id[0]
        return ReplayedRun(run_id, "p", agent, 0, 0, 1, 1, 1, slowdown, 0, 0,
                           float(len(run_id)), False, outcome)  # fmt: skip

    result = Replay(
        (replayed("a1", 1.0), replayed("a2", 1.5), replayed("a3", 2.5),
         replayed("b1", 1.0), replayed("b22", math.inf, "refused")),
        1.0, CORES, 0, 0,
    )  # fmt: skip
    inf = math.inf
    # p: 1, 1, 1.5, 2.5, inf: p50 the 3rd; p95 at rank 3.8, between 2.5 and inf
    assert summarize(result) == [
        SlowdownSummary("p", None, 5, 1.5, inf, inf, 2, 0, 1, pytest.approx(2.8)),
        SlowdownSummary("p", "a", 3, 1.5, pytest.approx(2.4), 2.5, 1, 0, 0, 2.0),
        SlowdownSummary("p", "b", 2, inf, inf, inf, 1, 0, 1, pytest.approx(2.95)),
    ]


# --- demand from the store -------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def row(columns: Any, **values: Any) -> dict[str, Any]:
    return {column.name: values.get(column.name) for column in columns}


def test_demand_is_read_from_the_runs_and_their_processes_ticks(tmp_path: Path):
    root = tmp_path / ".devloop-workspace" / "metrics"
    write_table(root, "system", pa.Table.from_pylist(
        [{"ts": at(t), "host": "h", "cores": 8} for t in range(20)]))  # fmt: skip
    write_table(root, "runs", pa.Table.from_pylist([
        # tests: asked at 0.5 s, ran 1..5 s, paused 1 s of it (its tick at 3 s)
        row(RUNS, ts=at(5), host="h", run_id="r1", project="api", agent="tests",
            trigger="watch", status="complete", queued=at(0.5), started=at(1), ended=at(5),
            paused_seconds=1.0, cpu_user_seconds=2.0, cpu_system_seconds=0.5,
            max_rss_bytes=50 * MB),
        # lint: 0.25 s between two ticks, no tick saw it
        row(RUNS, ts=at(10.5), host="h", run_id="r2", project="api", agent="lint",
            trigger="manual", status="complete", started=at(10.25), ended=at(10.5),
            cpu_user_seconds=0.125, cpu_system_seconds=0.125, max_rss_bytes=30 * MB),
    ]))  # fmt: skip
    write_table(root, "processes", pa.Table.from_pylist([
        row(PROCESSES, ts=at(2), host="h", pid=10, start_time=at(1), project="api",
            agent="tests", run_id="r1"),
        row(PROCESSES, ts=at(2), host="h", pid=11, start_time=at(1.5), project="api",
            agent="tests", run_id="r1"),
        row(PROCESSES, ts=at(2), host="h", pid=12, start_time=at(1), project="api",
            agent="lsp"),  # another agent's
    ]))  # fmt: skip
    ticks = [(2, 10, 1.0, 40, "running"), (2, 11, 0.5, 20, "running"),
             (3, 10, 0.0, 40, "stopped"), (3, 11, 0.0, 20, "stopped"),
             (4, 10, 0.25, 45, "running"), (2, 12, 3.0, 500, "running")]  # fmt: skip
    write_table(root, "samples", pa.Table.from_pylist([
        row(SAMPLES, ts=at(t), host="h", project="api", agent="tests", pid=pid,
            start_time=at(1.5 if pid == 11 else 1), cpu_cores=cores, rss_bytes=rss * MB,
            state=state)
        for t, pid, cores, rss, state in ticks
    ]))  # fmt: skip
    demand = demand_from_store(root.parent, at(0), at(60))
    assert (demand.interval, demand.cores, demand.host_cores) == (1.0, 8, {"h": 8})
    # r1: 4 s less 1 s paused = 3 ticks; 2 seen (the stopped one left out), the third padded
    # with the CPU the ticks missed: 2.5 - (1.5 + 0.25) = 0.75 core-seconds. r2: a quarter of
    # a second no tick saw: one sample lasting a quarter of an interval
    assert demand.runs == (
        RunDemand("r1", "api", "tests", T0 + 0.5, [1.5, 0.25, 0.75], [60 * MB, 45 * MB, 45 * MB],
                  "h"),
        RunDemand("r2", "api", "lint", T0 + 10.25, [0.25], [30 * MB], "h", last=0.25),
    )  # fmt: skip
    assert demand_from_store(root.parent, at(10), at(60)).runs[0].run_id == "r2"
    assert demand_from_store(root.parent, at(0), at(10)).runs[0].run_id == "r1"
    assert len(demand_from_store(root.parent, at(0), at(10)).runs) == 1


def test_a_run_between_ticks_is_laid_out_from_its_own_start():
    # A burner of one core started 0.75 s into a tick: the tick at 101 saw 0.25 s of it, the
    # ticks at 102 and 103 a whole core, and the launcher's count after the last tick (0.5 s,
    # to its end at 103.5) came in a row stamped at the next tick
    cores, memory, last = own_clock(
        100.75, 103.5, 2.75, 2.75, 30 * MB,
        ([0.25, 1.0, 1.0, 0.5], [10 * MB, 20 * MB, 25 * MB, 0],
         [101_000_000, 102_000_000, 103_000_000, 104_000_000]),
        1.0,
    )  # fmt: skip
    assert (cores, memory, last) == ([1.0, 1.0, 0.75], [20 * MB, 25 * MB, 25 * MB], 0.75)
    # the ticks' own layout would say 0.25 core first and a run of 4 whole intervals
    # a tick left out (paused) takes no time: 1..2 and 3..4 seen, 1 s paused, ended at 4.5
    cores, memory, last = own_clock(
        1.0, 4.5, 2.5, 1.75, None, ([1.0, 0.5], [MB, MB], [2_000_000, 4_000_000]), 1.0
    )
    assert (cores, last) == ([1.0, 0.5, 0.25], 0.5)
    # no tick: the kernel's count over the run's time, at its largest memory
    assert own_clock(10.0, 10.3, 0.3, 0.15, 5 * MB, ((), (), ()), 1.0) == ([0.15], [5 * MB], 0.3)


def test_a_last_sample_shorter_than_a_tick_is_replayed_in_that_time():
    # 2.75 s of a whole core: free it takes 2.75 s; held at half a core from the check at
    # 1 s, the 1.75 core-seconds left take 3.5 s, the last sample's 0.75 in 1.5 of them
    free = workspace({"projects": projects("p")})
    demand = [replace(run("tests", 0, [1.0, 1.0, 0.75]), last=0.75)]
    (alone,) = replay(demand, free, cores=CORES).runs
    assert (alone.recorded_duration, alone.replayed_duration, alone.slowdown) == (2.75, 2.75, 1)
    held = workspace(THROTTLED)
    (tests,) = replay(demand, held, cores=CORES).runs
    assert (tests.replayed_duration, tests.throttled_s) == (pytest.approx(4.5), pytest.approx(3.5))
    every = replay(demand, held, cores=CORES, check_every_tick=True).runs[0]
    assert (every.start, every.end) == (tests.start, tests.end)
    # a quarter of a second at a whole core, held at half a core: half a second
    short = [replace(run("lint", 0.5, [0.25]), last=0.25), run("tests", 0, [1.0] * 4)]
    lint = by_id(replay(short, held, cores=CORES))["lint"]
    assert lint.replayed_duration == pytest.approx(0.25)  # free until the check at 1 s


def test_demand_from_an_empty_store(tmp_path: Path):
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    assert demand_from_store(folder, at(0), at(60)).runs == ()


def test_replaying_a_day_of_demand_takes_no_time_per_idle_second():
    config = workspace({"projects": projects("p")})
    demand = [run(f"lint#{i}", i * 3600, [0.25] * 10) for i in range(24)]
    result = replay(demand, config, cores=CORES)
    assert result.steps == 240
    assert all(r.slowdown == 1.0 for r in result.runs)


# --- the shortcuts change nothing ------------------------------------------------------------


def random_demand(seed: int, hours: float) -> list[RunDemand]:
    """Bursty runs of 3 projects x 3 agents, from T0."""
    rng = random.Random(seed)
    levels = {"lint": (0.8, 150), "types": (1.2, 400), "tests": (2.5, 600)}
    demand = []
    for project in ("api", "web", "worker"):
        for agent, (level, memory) in levels.items():
            at = T0 + rng.uniform(0, 60)
            while (at := at + rng.expovariate(1 / 300)) < T0 + hours * 3600:
                length = max(1, int(rng.lognormvariate(3.5, 0.8)))
                cores = [max(0.0, rng.gauss(level, level / 2)) for _ in range(length)]
                rss = [int(memory * MB * (1 + rng.random())) for _ in range(length)]
                demand.append(RunDemand(f"{agent}@{at:.3f}", project, agent, at, cores, rss))
    return demand


@pytest.mark.parametrize(
    ("action", "strategy", "extra"),
    [
        ("pause", "equal", {"maxConcurrentAgents": 3}),
        ("throttle", "dynamic", {}),
        ("pause", "dynamic", {}),
        ("throttle", "priority", {}),
    ],
)
def test_skipping_ticks_gives_what_checking_every_tick_gives(
    action: str, strategy: str, extra: dict[str, Any]
):
    # the replay skips idle time, coasts where runs run free, skips checks that cannot change
    # anything and stalled stretches; the same replay checking every tick must agree exactly
    half = datetime.fromtimestamp(T0 + 1200)  # local time: the pool halves 20 minutes in
    window = f"{half:%H:%M}-{half + timedelta(minutes=20):%H:%M}"
    config = workspace({
        "projects": projects("api", "web", "worker", api=1, worker=3),
        "global": {**extra, "resourceLimits": {
            "maxCpu": 60, "maxMemory": "4GB", "checkInterval": 1, "enforcementAction": action,
            "overflow": {"enabled": True, "maxWaitTime": 600}}},
        "resource_sharing": {
            "strategy": strategy,
            "adaptation": {"adjustmentFrequency": 20, "reallocationFactor": 0.3},
            "profiles": {"half": {"cpuLimit": 30, "times": [window]}}},
    })  # fmt: skip
    demand = random_demand(7, 1.0)
    horizon = T0 + 2 * 3600  # runs paused for good are unfinished there
    fast = replay(demand, config, cores=8, horizon=horizon)
    slow = replay(demand, config, cores=8, horizon=horizon, check_every_tick=True)
    assert fast == slow
    assert len({r.outcome for r in fast.runs}) > 1  # the limits did bind
