"""``LimitsInForce`` asks the dynamic rule only where it can move something (a project hungry
over its whole window, and not before a move it judged impossible could be possible) and builds
each profile's allocation once: the limits it gives, tick by
tick, are those of asking the rule and allocating afresh at every update, as it did before."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest

from devloop.config import Workspace
from devloop.config.allocation import Allocation, allocate
from devloop.config.load import parse_workspace
from devloop.core.limits import LimitsInForce
from devloop.core.policy import AgentUsage, Usage

T0 = 1_767_600_000.0  # 2026-01-05 08:00 UTC
NAMES = ["a", "b", "c"]


class EveryTick(LimitsInForce):
    """The rule asked and the allocation built at every update (no shortcut)."""

    def _any_hungry(self, adaptation):  # type: ignore[no-untyped-def]
        return True

    def _still_before(self, now, adaptation, pool):  # type: ignore[no-untyped-def]
        return -math.inf

    def _base_at(self, now: float) -> Allocation:
        return allocate(self.workspace, profile=self.profile,
                        at=datetime.fromtimestamp(now).time())  # fmt: skip


def _workspace(rng: random.Random, tmp_path) -> Workspace:  # type: ignore[no-untyped-def]
    data = {
        "workspace_name": "dyn",
        "projects": [{"name": n, "path": n, "priority": rng.randrange(4)} for n in NAMES],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB"}},
        "resource_sharing": {
            "strategy": "dynamic",
            "weights": {n: rng.choice([1, 2, 3]) for n in NAMES},
            "adaptation": {
                "adjustmentFrequency": rng.choice([5, 20, 30]),
                "usageThreshold": rng.choice([0.5, 0.8]),
                "reallocationFactor": rng.choice([0.2, 0.5]),
            },
        },
    }
    if rng.random() < 0.5:  # a project capped under its share: the pool keeps some free
        data["resource_sharing"]["perProjectLimits"] = {
            "a": {"maxCpu": rng.choice([5, 15]), "maxMemory": rng.choice(["200MB", "500MB"])}
        }
    if rng.random() < 0.5:  # the pool halves for 10 minutes, 5 minutes in (local time)
        start = datetime.fromtimestamp(T0 + 300)
        window = f"{start:%H:%M}-{start + timedelta(minutes=10):%H:%M}"
        data["resource_sharing"]["profiles"] = {"half": {"cpuLimit": 30, "times": [window]}}
    config = parse_workspace(data, tmp_path / "workspace.json")
    return Workspace(dir=tmp_path, config=config, agents={})


@pytest.mark.parametrize("seed", range(12))
def test_the_shortcuts_give_the_limits_of_asking_at_every_update(seed, tmp_path):
    rng = random.Random(seed)
    workspace = _workspace(rng, tmp_path)
    fast, slow = LimitsInForce(workspace, None), EveryTick(workspace, None)
    # each project idles, works near its share or over it, in stretches of 5-90 s
    level = dict.fromkeys(NAMES, 0.0)
    moved = 0
    for tick in range(1800):
        for name in NAMES:
            if rng.random() < 1 / 30:
                level[name] = rng.choice([0.0, rng.uniform(0.01, 0.7)])
        agents = {
            (n, "t"): AgentUsage(n, "t", max(0.0, rng.gauss(level[n], 0.02)) * 4,
                                 int(rng.choice([100, 300, 600, 900]) * 2**20))
            for n in NAMES if level[n] > 0
        }  # fmt: skip
        usage = Usage(T0 + tick, 4, agents)
        a, b = fast.update(T0 + tick, usage), slow.update(T0 + tick, usage)
        assert a.actions == b.actions, tick
        assert fast.allocation == slow.allocation, tick
        moved += sum(1 for action in a.actions if action.scope == "project")
    assert moved > 0  # the rule did move shares
