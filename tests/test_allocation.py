"""Every worked example of the guide, with its numbers (binary MB/GB)."""

from __future__ import annotations

import json
from datetime import time

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.config import Adaptation, Limit, load_workspace
from devloop.config.allocation import (
    Pool,
    ProjectAllocation,
    UsagePoint,
    allocate,
    equal,
    priority,
    rebalance,
    split_bytes,
    weighted,
)
from devloop.errors import UsageError
from tests.conftest import guide_workspace

MB = 1024**2
GB = 1024**3
POOL = Pool(60.0, 2 * GB)


def test_equal_three_projects():
    shares = equal(POOL, ["auth-service", "api-service", "worker-service"])
    assert [s.cpu for s in shares.values()] == [20.0, 20.0, 20.0]
    # 2GB / 3 = 682.67MB (the guide's "686MB" is a slip); the bytes add up to the pool.
    assert [s.memory_bytes for s in shares.values()] == [715827883, 715827883, 715827882]
    assert sum(s.memory_bytes for s in shares.values()) == 2 * GB


def test_weighted_2_2_1():
    shares = weighted(POOL, {"auth-service": 2, "api-service": 2, "worker-service": 1})
    assert {n: s.cpu for n, s in shares.items()} == {
        "auth-service": 24.0, "api-service": 24.0, "worker-service": 12.0}  # fmt: skip
    assert {n: s.memory_bytes for n, s in shares.items()} == {
        "auth-service": 858993459,  # 819.2MB
        "api-service": 858993459,
        "worker-service": 429496730,  # 409.6MB
    }
    assert round(shares["auth-service"].memory_bytes / MB) == 819
    assert round(shares["worker-service"].memory_bytes / MB) == 410


def test_split_bytes_is_exact():
    assert split_bytes(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(split_bytes(2 * GB, [3, 7, 11, 13])) == 2 * GB
    assert split_bytes(0, [1, 2]) == [0, 0]


def test_priority_without_requests_gives_equal_shares():
    shares = priority(POOL, [("auth-service", 0), ("api-service", 1), ("worker-service", 2)])
    assert [s.cpu for s in shares.values()] == pytest.approx([20.0, 20.0, 20.0])
    assert sum(s.memory_bytes for s in shares.values()) == 2 * GB


def test_priority_with_the_guides_per_project_limits():
    requests = {
        "auth-service": Limit(20, 512 * MB),
        "api-service": Limit(25, 750 * MB),
        "worker-service": Limit(15, 256 * MB),
    }
    shares = priority(POOL, [("auth-service", 0), ("api-service", 1), ("worker-service", 2)],
                      requests)  # fmt: skip
    assert {n: s.cpu for n, s in shares.items()} == {
        "auth-service": 20.0, "api-service": 25.0, "worker-service": 15.0}  # fmt: skip
    # 2048 - 512 - 750 = 786MB: the lowest tier gets its 256MB plus what is left over.
    assert {n: s.memory_bytes for n, s in shares.items()} == {
        "auth-service": 512 * MB, "api-service": 750 * MB, "worker-service": 786 * MB}  # fmt: skip


def test_priority_runs_short_critical_first_and_lowest_gets_nothing():
    requests = {"auth-service": Limit(50, None), "api-service": Limit(25, None)}
    projects = [("auth-service", 0), ("api-service", 1), ("worker-service", 2)]
    shares = priority(POOL, projects, requests)
    assert shares["auth-service"].cpu == 50.0
    assert shares["api-service"].cpu == pytest.approx(10.0)
    assert shares["worker-service"].cpu == 0.0
    assert not shares["worker-service"].granted


def test_priority_tier_split_in_proportion_when_short():
    projects = [("a", 0), ("b", 1), ("c", 1)]
    requests = {"a": Limit(40, None), "b": Limit(30, None), "c": Limit(10, None)}
    shares = priority(POOL, projects, requests)
    # 20% left for tier 1, which asks 30 + 10: split 3:1.
    assert [shares[n].cpu for n in "abc"] == pytest.approx([40.0, 15.0, 5.0])


def test_priority_in_workspace_reports_a_project_granted_nothing(write_workspace):
    data = guide_workspace({"strategy": "priority", "perProjectLimits": {
        "auth-service": {"maxCpu": 60}}})  # fmt: skip
    for index, prio in enumerate([0, 1, 2]):
        data["projects"][index]["priority"] = prio
    allocation = allocate(load_workspace(write_workspace(data)))
    assert allocation.projects["auth-service"].cpu == 60.0
    assert allocation.projects["worker-service"].note == (
        "granted nothing: its agents will queue until capacity frees up"
    )
    assert allocation.notes == (
        "api-service: granted nothing: its agents will queue until capacity frees up",
        "worker-service: granted nothing: its agents will queue until capacity frees up",
    )


CUSTOM = {
    "strategy": "custom",
    "perProjectLimits": {
        "auth-service": {"maxCpu": 30, "maxMemory": "800MB"},
        "api-service": {"maxCpu": 20, "maxMemory": "500MB"},
        "worker-service": {"maxCpu": 10, "maxMemory": "256MB"},
    },
}


def test_custom_total_check_passes_at_exactly_the_pool(write_workspace):
    # Sum: 30 + 20 + 10 = 60% CPU; 800 + 500 + 256 = 1556MB < 2GB.
    allocation = allocate(load_workspace(write_workspace(guide_workspace(CUSTOM))))
    assert {n: (p.cpu, p.memory_bytes) for n, p in allocation.projects.items()} == {
        "auth-service": (30.0, 800 * MB),
        "api-service": (20.0, 500 * MB),
        "worker-service": (10.0, 256 * MB),
    }


def test_custom_total_check_refuses_over_the_pool(write_workspace):
    sharing = json.loads(json.dumps(CUSTOM))
    sharing["perProjectLimits"]["auth-service"]["maxCpu"] = 31
    write_workspace(guide_workspace(sharing))
    result = CliRunner().invoke(cli, ["workspace", "limits"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: .devloop-workspace/workspace.json: resource_sharing.perProjectLimits: "
        "custom limits total 61% CPU, over the pool of 60% "
        '(with "overcommitCpu": true they may, the pool enforced on their sum)\n'
    )


OVERCOMMIT = {
    "strategy": "custom",
    "overcommitCpu": True,
    "perProjectLimits": {
        "auth-service": {"maxCpu": 40, "maxMemory": "800MB"},
        "api-service": {"maxCpu": 35, "maxMemory": "500MB"},
    },
}


def test_overcommit_keeps_each_cpu_limit_and_the_pool_holds_the_sum(write_workspace):
    # 40 + 35 = 75% of a 60% pool: each kept as given; worker-service (no entry) shares what
    # the given ones leave, which is nothing; memory still splits the rest of 2GB.
    allocation = allocate(load_workspace(write_workspace(guide_workspace(OVERCOMMIT))))
    assert allocation.pool.cpu == 60.0
    assert {n: (p.cpu, p.memory_bytes) for n, p in allocation.projects.items()} == {
        "auth-service": (40.0, 800 * MB),
        "api-service": (35.0, 500 * MB),
        "worker-service": (0.0, 2048 * MB - 1300 * MB),
    }
    assert allocation.notes[0] == (
        "custom CPU limits total 75%, over the base pool of 60% (overcommitCpu): the pool "
        "holds their sum"
    )


def test_overcommit_under_a_smaller_profile_caps_each_limit_at_it(write_workspace):
    sharing = {**OVERCOMMIT, "profiles": {"idle": {"cpuLimit": 30, "memoryLimit": "2GB",
                                                   "times": ["17:00-09:00"]}}}  # fmt: skip
    allocation = allocate(load_workspace(write_workspace(guide_workspace(sharing))),
                          at=time(18, 0))  # fmt: skip
    assert allocation.profile == "idle"
    assert [p.cpu for p in allocation.projects.values()] == [30.0, 30.0, 0.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"perProjectLimits": {"auth-service": {"maxCpu": 61}}},
         "resource_sharing.perProjectLimits.auth-service.maxCpu: 61% is over the pool of 60% "
         "(with overcommitCpu the limits may total more than the pool, each within it)"),
        ({"strategy": "weighted"},
         "resource_sharing.overcommitCpu: overcommitCpu applies to the custom strategy (this "
         "one is 'weighted')"),
    ],
)  # fmt: skip
def test_overcommit_refuses_a_limit_over_the_pool_and_other_strategies(
    write_workspace, change, message
):
    write_workspace(guide_workspace({**OVERCOMMIT, **change}))
    result = CliRunner().invoke(cli, ["workspace", "limits"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: .devloop-workspace/workspace.json: {message}\n"


def test_custom_projects_without_entry_share_the_rest(write_workspace):
    sharing = {
        "strategy": "custom",
        "perProjectLimits": {"auth-service": {"maxCpu": 30, "maxMemory": "1GB"}},
    }
    allocation = allocate(load_workspace(write_workspace(guide_workspace(sharing))))
    assert allocation.projects["api-service"].cpu == 15.0
    assert allocation.projects["worker-service"].cpu == 15.0
    assert allocation.projects["api-service"].memory_bytes == 512 * MB


def test_scenario_uneven_requirements(write_workspace):
    data = guide_workspace({"strategy": "custom", "perProjectLimits": {
        "compute-service": {"maxCpu": 40, "maxMemory": "1GB"},
        "doc-service": {"maxCpu": 10, "maxMemory": "256MB"},
        "sync-service": {"maxCpu": 10, "maxMemory": "256MB"}}})  # fmt: skip
    data["projects"] = [{"name": n} for n in ["compute-service", "doc-service", "sync-service"]]
    allocation = allocate(load_workspace(write_workspace(data)))
    assert allocation.projects["compute-service"].memory_bytes == GB
    assert allocation.projects["doc-service"].cpu == 10.0


PROFILES = {
    "strategy": "equal",
    "profiles": {
        "peak": {"cpuLimit": 60, "memoryLimit": "2GB", "times": ["09:00-17:00"]},
        "idle": {"cpuLimit": 20, "memoryLimit": "512MB", "times": ["17:00-09:00"]},
    },
}


@pytest.mark.parametrize(
    ("at", "profile", "cpu", "memory"),
    [
        (time(10, 0), "peak", 60.0, 2 * GB),
        (time(9, 0), "peak", 60.0, 2 * GB),
        (time(16, 59), "peak", 60.0, 2 * GB),
        (time(17, 0), "idle", 20.0, 512 * MB),
        (time(23, 30), "idle", 20.0, 512 * MB),
        (time(3, 0), "idle", 20.0, 512 * MB),  # the window crosses midnight
    ],
)
def test_profiles_by_time_of_day(write_workspace, at, profile, cpu, memory):
    allocation = allocate(load_workspace(write_workspace(guide_workspace(PROFILES))), at=at)
    assert (allocation.profile, allocation.pool.cpu, allocation.pool.memory_bytes) == (
        profile, cpu, memory)  # fmt: skip


def test_idle_profile_splits_its_own_pool(write_workspace):
    allocation = allocate(load_workspace(write_workspace(guide_workspace(PROFILES))),
                          at=time(18, 0))  # fmt: skip
    assert [p.cpu for p in allocation.projects.values()] == pytest.approx([20 / 3] * 3)
    assert sum(p.memory_bytes for p in allocation.projects.values()) == 512 * MB


RESOURCE_PROFILES = {"dev": {"cpuLimit": 60, "memoryLimit": "2GB"},
                     "ci": {"cpuLimit": 90, "memoryLimit": "4GB"}}  # fmt: skip


def test_profile_by_environment_variable_beats_time_of_day(write_workspace, monkeypatch):
    write_workspace(guide_workspace(PROFILES, resource_profiles=RESOURCE_PROFILES))
    monkeypatch.setenv("DEVLOOP_RESOURCE_PROFILE", "ci")
    result = CliRunner().invoke(cli, ["workspace", "limits", "--format", "json", "--at", "10:00"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["profile"] == "ci"
    assert data["pool"] == {"maxCpu": 90.0, "maxMemory_bytes": 4 * GB}
    assert data["projects"]["auth-service"]["maxCpu"] == 30.0


def test_profile_option_beats_environment(write_workspace, monkeypatch):
    write_workspace(guide_workspace(PROFILES, resource_profiles=RESOURCE_PROFILES))
    monkeypatch.setenv("DEVLOOP_RESOURCE_PROFILE", "ci")
    result = CliRunner().invoke(cli, ["workspace", "limits", "--format", "json",
                                      "--profile", "dev"])  # fmt: skip
    assert json.loads(result.stdout)["pool"] == {"maxCpu": 60.0, "maxMemory_bytes": 2 * GB}


def test_unknown_profile_lists_the_known_ones(write_workspace, monkeypatch):
    write_workspace(guide_workspace(PROFILES, resource_profiles=RESOURCE_PROFILES))
    monkeypatch.setenv("DEVLOOP_RESOURCE_PROFILE", "staging")
    result = CliRunner().invoke(cli, ["workspace", "limits"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: unknown resource profile 'staging' (known: ci, dev, idle, peak)\n"
    )
    with pytest.raises(UsageError):
        allocate(load_workspace(".devloop-workspace"), profile="staging")


def test_bad_at_is_a_usage_error(write_workspace):
    write_workspace(guide_workspace())
    result = CliRunner().invoke(cli, ["workspace", "limits", "--at", "25:61"])
    assert result.exit_code == 2
    assert (
        "Invalid value for --at: not a time of day in '25:61' (hours 00-23, minutes 00-59)"
        in result.stderr
    )


def test_limits_json_shape(write_workspace):
    agents = {"agents": {"linter": {"resourceLimits": {"maxCpu": 5, "maxMemory": "128MB"}},
                         "tests": {}}}  # fmt: skip
    write_workspace(
        guide_workspace({"strategy": "weighted", "weights": {
            "auth-service": 2, "api-service": 2, "worker-service": 1}}),
        agents={"auth-service": agents},
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["workspace", "limits", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "strategy": "weighted",
        "profile": None,
        "pool": {"maxCpu": 60.0, "maxMemory_bytes": 2147483648},
        "projects": {
            "auth-service": {"maxCpu": 24.0, "maxMemory_bytes": 858993459, "priority": 2},
            "api-service": {"maxCpu": 24.0, "maxMemory_bytes": 858993459, "priority": 2},
            "worker-service": {"maxCpu": 12.0, "maxMemory_bytes": 429496730, "priority": 2},
        },
        "agents": {
            "auth-service/linter": {"maxCpu": 5.0, "maxMemory_bytes": 134217728,
                                    "source": "agent"},
            "auth-service/tests": {"maxCpu": 24.0, "maxMemory_bytes": 858993459,
                                   "source": "project"},
        },
        "notes": [],
    }  # fmt: skip


def test_weights_fall_back_to_project_weight_then_one(write_workspace):
    data = guide_workspace({"strategy": "weighted"})
    data["projects"][0]["weight"] = 3
    allocation = allocate(load_workspace(write_workspace(data)))
    assert [p.cpu for p in allocation.projects.values()] == [36.0, 12.0, 12.0]


def test_disabled_projects_get_nothing_and_are_not_counted(write_workspace):
    data = guide_workspace({"strategy": "equal"})
    data["projects"][2]["enabled"] = False
    allocation = allocate(load_workspace(write_workspace(data)))
    assert list(allocation.projects) == ["auth-service", "api-service"]
    assert [p.cpu for p in allocation.projects.values()] == [30.0, 30.0]


# --- dynamic -------------------------------------------------------------------------------

ADAPT = Adaptation(enabled=True, adjustment_frequency=30, usage_threshold=0.8,
                   reallocation_factor=0.2)  # fmt: skip


def _start():
    return {
        "auth-service": ProjectAllocation("auth-service", 24.0, 858993459, 0),
        "api-service": ProjectAllocation("api-service", 24.0, 858993459, 1),
        "worker-service": ProjectAllocation("worker-service", 12.0, 429496730, 2),
    }


def _history(cpu: float, seconds: int = 30, memory: int = 100 * MB):
    return [UsagePoint(t, cpu, memory) for t in range(0, seconds + 1, 5)]


def test_dynamic_gives_20_percent_more_taken_from_the_idle_lowest_priority():
    usage = {"auth-service": _history(22.0), "api-service": _history(10.0),
             "worker-service": _history(3.0)}  # fmt: skip
    new, changes = rebalance(_start(), usage, ADAPT)
    # auth used 22 > 0.8 x 24 for 30 s: +0.2 x 24 = 4.8, from worker (priority 2, under 50 %).
    assert new["auth-service"].cpu == pytest.approx(28.8)
    assert new["worker-service"].cpu == pytest.approx(7.2)
    assert new["api-service"].cpu == 24.0
    assert sum(a.cpu for a in new.values()) == pytest.approx(60.0)
    assert [(c.project, c.resource) for c in changes] == [
        ("worker-service", "cpu"), ("auth-service", "cpu")]  # fmt: skip


def test_dynamic_donors_keep_half_their_start_and_twice_their_peak():
    usage = {"auth-service": _history(23.0), "api-service": _history(4.0),
             "worker-service": _history(5.0)}  # fmt: skip
    new, _ = rebalance(_start(), usage, ADAPT)
    # worker may go down to max(6, 2 x 5) = 10: gives 2; api gives the other 2.8.
    assert new["worker-service"].cpu == pytest.approx(10.0)
    assert new["api-service"].cpu == pytest.approx(21.2)
    assert new["auth-service"].cpu == pytest.approx(28.8)


def test_dynamic_needs_the_whole_window_above_threshold():
    usage = {"auth-service": _history(22.0, seconds=25), "worker-service": _history(1.0)}
    new, changes = rebalance(_start(), usage, ADAPT)
    assert changes == [] and new == _start()
    dip = _history(22.0)
    dip[3] = UsagePoint(dip[3].t, 10.0, dip[3].memory_bytes)
    new, changes = rebalance(_start(), {"auth-service": dip, "worker-service": _history(1.0)},
                             ADAPT)  # fmt: skip
    assert changes == []


def test_dynamic_never_takes_a_donor_below_half_its_start_share():
    start = _start()
    usage = {"auth-service": _history(23.0), "worker-service": _history(0.0),
             "api-service": _history(23.0)}  # fmt: skip
    new, _ = rebalance(start, usage, ADAPT)
    # Both big projects are hungry (4.8 each); worker can give only 6 (down to 6).
    assert new["worker-service"].cpu == pytest.approx(6.0)
    assert new["auth-service"].cpu == pytest.approx(28.8)  # priority 0 served first
    assert new["api-service"].cpu == pytest.approx(25.2)
    assert sum(a.cpu for a in new.values()) == pytest.approx(60.0)


def test_dynamic_memory_is_rebalanced_in_whole_bytes():
    usage = {"auth-service": _history(1.0, memory=800 * MB), "api-service": _history(1.0),
             "worker-service": _history(1.0, memory=10 * MB)}  # fmt: skip
    new, _ = rebalance(_start(), usage, ADAPT)
    gained = new["auth-service"].memory_bytes - 858993459
    assert gained == int(0.2 * 858993459)
    assert sum(a.memory_bytes for a in new.values()) == 2 * GB


def test_dynamic_disabled_changes_nothing():
    usage = {"auth-service": _history(23.0), "worker-service": _history(0.0)}
    new, changes = rebalance(_start(), usage, Adaptation(enabled=False))
    assert changes == [] and new == _start()


def test_dynamic_strategy_starts_from_weighted(write_workspace):
    data = guide_workspace({"strategy": "dynamic", "weights": {
        "auth-service": 2, "api-service": 2, "worker-service": 1}})  # fmt: skip
    allocation = allocate(load_workspace(write_workspace(data)))
    assert [p.cpu for p in allocation.projects.values()] == [24.0, 24.0, 12.0]
