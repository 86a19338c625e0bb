"""The replay's shortcuts change nothing: on random seeded cases, the replay equals the same
replay checking every tick (``check_every_tick``), run for run, to the last bit.

Each case draws a configuration (pause, throttle or warn, per project too; a resume threshold
and a minimum pause; equal, weighted, priority, custom or dynamic shares; agents' own limits;
the overflow queue and ``maxConcurrentAgents``; sometimes a time-of-day profile) and bursty
runs of a few agents, some of them over their memory limits, on a tick of 1 s, 0.5 s or 2 s.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devloop.config import AgentsConfig, Workspace, parse_agents, parse_workspace
from devloop.tune.objective import alone
from devloop.tune.replay import Replay, RunDemand, _Replayer, replay

T0 = 1_767_600_000  # 2026-01-05 08:00:00 UTC
MB = 1 << 20
FOLDER = Path("/nonexistent/.devloop-workspace")
AGENTS = {"lint": (0.6, 150), "types": (1.0, 400), "tests": (2.0, 700)}


def random_workspace(rng: random.Random, names: list[str]) -> Workspace:
    """A configuration drawn from ``rng`` for the projects ``names``."""
    action = rng.choice(["pause", "pause", "throttle", "throttle", "warn"])
    strategy = rng.choice(["equal", "weighted", "priority", "custom", "dynamic"])
    limits: dict[str, Any] = {
        "maxCpu": rng.choice([20, 40, 60, 90]),
        "maxMemory": f"{rng.choice([1, 2, 4])}GB",
        "checkInterval": rng.choice([1, 2, 10]),
        "enforcementAction": action,
        "resumeThreshold": rng.choice([0.5, 0.8, 0.95]),
        "overflow": {
            "enabled": rng.random() < 0.7,
            "queueing": rng.random() < 0.8,
            "maxQueueSize": rng.choice([1, 3, 10]),
            "maxWaitTime": rng.choice([30, 300, 3600]),
        },
    }
    data: dict[str, Any] = {
        "workspace_name": "fast",
        "projects": [
            {"name": n, "path": n, "priority": rng.randrange(4), "weight": rng.choice([1, 2, 3])}
            for n in names
        ],
        "global": {"resourceLimits": limits},
        "resource_sharing": {
            "strategy": strategy,
            "adaptation": {
                "adjustmentFrequency": rng.choice([5, 20, 60]),
                "usageThreshold": rng.choice([0.5, 0.8]),
                "reallocationFactor": rng.choice([0.3, 0.5]),
            },
        },
    }
    if rng.random() < 0.5:
        data["global"]["maxConcurrentAgents"] = rng.choice([2, 4, 8])
    if strategy == "custom":
        data["resource_sharing"]["perProjectLimits"] = {  # within the pool
            n: {"maxCpu": limits["maxCpu"] * rng.choice([0.1, 0.2, 0.33]),
                "maxMemory": f"{int(limits['maxMemory'][0]) * rng.choice([200, 330])}MB"}
            for n in names
        }  # fmt: skip
    if rng.random() < 0.3:  # the pool halves for 20 minutes, 20 minutes in (local time)
        half = datetime.fromtimestamp(T0 + 1200)
        window = f"{half:%H:%M}-{half + timedelta(minutes=20):%H:%M}"
        data["resource_sharing"]["profiles"] = {"half": {"cpuLimit": 50, "times": [window]}}
    config = parse_workspace(data, FOLDER / "workspace.json")
    agents: dict[str, AgentsConfig] = {}
    for name in names:
        own: dict[str, Any] = {}
        if rng.random() < 0.3:
            own["enforcementAction"] = rng.choice(["pause", "throttle"])
        if rng.random() < 0.3:
            own["resumeThreshold"] = rng.choice([0.6, 0.9])
        for agent in AGENTS:
            if rng.random() < 0.25:
                own.setdefault("agents", {})[agent] = {"resourceLimits": {
                    "maxCpu": rng.choice([5, 15, 30]),
                    "maxMemory": f"{rng.choice([300, 800])}MB"}}  # fmt: skip
        agents[name] = (
            parse_agents(own, FOLDER.parent / name / "agents.json")
            if own
            else AgentsConfig(file=None)
        )
    return Workspace(dir=FOLDER, config=config, agents=agents)


#: the part of a tick the last sample of the random runs takes, in turn
LASTS = (1.0, 0.25, 0.6, 1.0, 0.05)


def random_demand(rng: random.Random, names: list[str], minutes: float) -> list[RunDemand]:
    """Bursty runs of each project's agents over ``minutes`` from T0, some of them growing
    past their memory limits."""
    demand = []
    for project in names:
        for agent, (level, memory) in AGENTS.items():
            at = T0 + rng.uniform(0, 30)
            while (at := at + rng.expovariate(1 / 90)) < T0 + minutes * 60:
                length = max(1, int(rng.lognormvariate(2.5, 1.0)))
                cores = [max(0.0, rng.gauss(level, level / 2)) for _ in range(length)]
                if rng.random() < 0.2:
                    cores[rng.randrange(length)] = 0.0
                grow = rng.choice([0.0, 0.0, 0.0, 40.0])
                rss = [int((memory + grow * i) * MB * (1 + 0.3 * rng.random()))
                       for i in range(length)]  # fmt: skip
                last = LASTS[len(demand) % len(LASTS)]  # a last sample shorter than a tick
                demand.append(RunDemand(f"{agent}@{at:.3f}", project, agent, at, cores, rss,
                                        last=last))  # fmt: skip
    return demand


def both(demand: list[RunDemand], config: Workspace, **options: Any) -> tuple[Replay, Replay]:
    fast = replay(demand, config, **options)
    slow = replay(demand, config, check_every_tick=True, **options)
    return fast, slow


@pytest.mark.parametrize("seed", range(40))
def test_the_shortcuts_give_what_checking_every_tick_gives(seed: int):
    rng = random.Random(seed)
    names = ["api", "web", "worker"][: rng.randint(1, 3)]
    config = random_workspace(rng, names)
    demand = random_demand(rng, names, rng.choice([20, 45]))
    interval = rng.choice([1.0, 1.0, 0.5, 2.0])
    options = {"cores": rng.choice([2, 4, 8]), "interval": interval,
               "horizon": T0 + 3 * 3600}  # fmt: skip
    if rng.random() < 0.3:
        options["min_pause"] = rng.choice([1.0, 2.5, 30.0])
    fast, slow = both(demand, config, **options)
    assert fast == slow


@pytest.mark.parametrize("seed", range(30))
def test_the_searches_replays_alone_give_what_checking_every_tick_gives(seed: int):
    # what autotune replays most: one entity's runs under the one limit that binds
    rng = random.Random(1000 + seed)
    config = random_workspace(rng, ["api"])
    demand = random_demand(rng, ["api"], 30)
    agent = rng.choice(["", "lint", "tests"])
    if agent:
        demand = [run for run in demand if run.agent == agent]
    cpu = rng.choice([2.0, 5.0, 12.5, 30.0, 60.0])
    memory = rng.choice([None, 600 * MB])
    fast, slow = both(demand, alone(config, "api", agent, cpu, memory), cores=4)
    assert fast == slow


def test_the_cases_bind():
    # the random cases are not all free runs: they pause, throttle, queue and fail
    outcomes: set[str] = set()
    paused = throttled = 0.0
    for seed in range(40):
        rng = random.Random(seed)
        names = ["api", "web", "worker"][: rng.randint(1, 3)]
        config = random_workspace(rng, names)
        demand = random_demand(rng, names, 20)
        result = replay(demand, config, cores=4, horizon=T0 + 3 * 3600)
        outcomes |= {r.outcome for r in result.runs}
        paused += sum(r.paused_s for r in result.runs)
        throttled += sum(r.throttled_s for r in result.runs)
    assert outcomes >= {"done", "failed-memory", "refused", "timed-out"}
    assert paused > 0 and throttled > 0


def pause_cycle_case(seed: int) -> tuple[list[RunDemand], Workspace, dict[str, Any]]:
    """One agent's (or a project's) long runs far over a CPU limit under ``pause``: each run
    is paused, resumed for a tick, paused again; sometimes memory near a limit, the next runs
    triggered while one crawls, a horizon or a slowdown bound that cuts the cycles short."""
    rng = random.Random(2000 + seed)
    config = random_workspace(rng, ["api"])
    limits = replace(
        config.config.global_.resource_limits,
        enforcement_action=rng.choice(["pause", "pause", "pause", "throttle"]),
        check_interval=rng.choice([1, 2, 10]),
    )
    config = replace(
        config,
        config=replace(
            config.config, global_=replace(config.config.global_, resource_limits=limits)
        ),
    )
    agent = rng.choice(["", "lint", "tests"])
    demand = []
    for name in [agent] if agent else ["lint", "tests"]:
        at = T0 + rng.uniform(0, 5)
        for _ in range(rng.randint(1, 4)):
            length = rng.randint(3, 120)
            cores = [rng.choice([0.0, rng.uniform(0.05, 0.3), rng.uniform(0.6, 2.0)])
                     for _ in range(length)]  # fmt: skip
            grow = rng.choice([0.0, 0.0, 3.0])
            rss = [int((300 + grow * i) * MB * (1 + 0.05 * rng.random())) for i in range(length)]
            demand.append(RunDemand(f"{name}@{at:.3f}", "api", name, at, cores, rss,
                                    last=LASTS[len(demand) % len(LASTS)]))  # fmt: skip
            at += rng.choice([rng.uniform(1, 30), rng.uniform(60, 900)])
    cpu = rng.choice([2.0, 5.0, 12.5])
    memory = rng.choice([None, None, 320 * MB, 400 * MB])
    options: dict[str, Any] = {"cores": rng.choice([2, 4]),
                               "interval": rng.choice([1.0, 1.0, 0.5, 2.0])}  # fmt: skip
    if rng.random() < 0.5:
        options["min_pause"] = rng.choice([1.0, 5.0, 30.0])
    if rng.random() < 0.3:
        options["horizon"] = T0 + rng.uniform(300, 3600)
    if rng.random() < 0.3:
        options["slower_than"] = rng.choice([1.1, 3.0, 20.0])
    return demand, alone(config, "api", agent, cpu, memory), options


@pytest.mark.parametrize("seed", range(40))
def test_pause_cycles_taken_at_once_give_what_checking_every_tick_gives(seed: int):
    demand, config, options = pause_cycle_case(seed)
    fast, slow = both(demand, config, **options)
    if "slower_than" not in options:
        assert fast == slow
        return
    # Stopped once every run left is that slow, a replay stops at the first tick it looks at
    # past that point, which the shortcuts move: the same runs miss the bound, the others
    # finish alike (what a search reads).
    bound = options["slower_than"]

    def read(result: Replay) -> list[tuple[str, float | None]]:
        return [(r.run_id, r.slowdown if r.slowdown <= bound else None) for r in result.runs]

    assert read(fast) == read(slow)


def test_the_pause_cycles_are_taken_at_once(monkeypatch: pytest.MonkeyPatch):
    # the cases above do reach the shortcut, and it takes many cycles at once
    taken: list[int] = []
    cycles = _Replayer._cycles

    def counted(self: _Replayer, k: int, run: Any) -> int:
        ahead = cycles(self, k, run)
        taken.append(ahead - k)
        return ahead

    monkeypatch.setattr(_Replayer, "_cycles", counted)
    for seed in range(40):
        demand, config, options = pause_cycle_case(seed)
        replay(demand, config, **options)
    assert sum(1 for n in taken if n > 0) >= 20
    assert max(taken) > 500


def test_peak_demand_taken_per_overlapping_set_is_the_sum_over_all_runs_to_the_bit():
    from devloop.tune.objective import peak_demand

    def every_tick(runs: list[RunDemand], interval: float) -> tuple[float, int]:
        cores: dict[int, float] = {}
        memory: dict[int, int] = {}
        for run in runs:
            first = math.floor(run.queued_at / interval)
            for i, (c, m) in enumerate(zip(run.cores, run.rss_bytes, strict=True)):
                cores[first + i] = cores.get(first + i, 0.0) + float(c)
                memory[first + i] = memory.get(first + i, 0) + int(m)
        return max(cores.values(), default=0.0), max(memory.values(), default=0)

    rng = random.Random(7)
    overlapping = 0
    for _ in range(500):
        interval = rng.choice([0.5, 1.0, 2.0])
        runs = []
        for i in range(rng.randint(0, 10)):
            ticks = rng.randint(0, 8)
            runs.append(RunDemand(
                f"r{i}", "p", "a", T0 + rng.uniform(0, 40),
                [rng.random() * rng.choice([0.1, 1.0, 3.0]) for _ in range(ticks)],
                [rng.randint(0, 1 << 30) for _ in range(ticks)],
            ))  # fmt: skip
        expected = every_tick(runs, interval)
        assert peak_demand(runs, interval) == expected
        overlapping += expected[0] > max((max(r.cores, default=0.0) for r in runs), default=0.0)
    assert overlapping > 100  # the cases do sum coinciding runs
