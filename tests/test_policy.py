"""The enforcement policy on hand-made usage: no processes, no clock, exact decisions."""

from __future__ import annotations

import pytest

from devloop.config.allocation import AgentAllocation, Allocation, Pool, ProjectAllocation
from devloop.core.policy import Action, AgentUsage, Hold, Policy, Release, Rules, Usage

GB = 1 << 30
CORES = 4  # 1 core = 25 % of the machine


def allocation(
    projects: dict[str, tuple[float, int]],
    *,
    pool: float = 100.0,
    agents: dict[str, float] | None = None,
    fds: int | None = None,
) -> Allocation:
    """Projects as name -> (cpu %, priority), 4GB each; agents as "p/a" -> own cpu %."""
    return Allocation(
        "custom",
        None,
        Pool(pool, 16 * GB),
        {
            name: ProjectAllocation(name, cpu, 4 * GB, prio)
            for name, (cpu, prio) in projects.items()
        },
        {
            key: AgentAllocation(
                *key.split("/"), cpu, 4 * GB, max_file_handles=fds, source="agent"
            )  # fmt: skip
            for key, cpu in (agents or {}).items()
        },
    )


def usage(ts: float, **agents: float | tuple[float, int]) -> Usage:
    """Agents as project_agent=cores (or (cores, fds)); pid 100, 101, ... in that order."""
    found = {}
    for pid, (name, value) in enumerate(agents.items(), start=100):
        project, agent = name.split("_")
        cores, fds = value if isinstance(value, tuple) else (value, 0)
        found[(project, agent)] = AgentUsage(
            project, agent, cores, 100 << 20, fds, 1, [(pid, pid * 1000, 1)]
        )
    return Usage(ts, CORES, found)


def kinds(decisions: list) -> list[tuple]:
    return [
        (d.action, d.scope, d.project, d.agent) if isinstance(d, Action) else d for d in decisions
    ]


def test_the_lowest_priority_project_then_the_largest_consumer_is_paused_only_as_needed():
    # the workspace pool is 35 %; web (priority 1) may not be touched while batch (3) can give
    policy = Policy(allocation({"web": (40, 1), "batch": (50, 3)}, pool=35), Rules(min_pause=10))
    done = policy.check(usage(0, web_a=0.8, batch_x=0.6, batch_y=1.0, batch_z=0.2), now=0.0)
    message = "workspace workspace CPU 65.0% over its 35% limit"
    assert done == [
        Action("pause", "workspace", "batch", "y", (102,), "cpu", 65.0, 35, message),
        Action("pause", "workspace", "batch", "x", (101,), "cpu", 65.0, 35, message),
    ]  # 65 - 25 = 40 > 35, - 15 = 25: z (5 %) and web (20 %) keep running
    assert sorted(policy.paused) == [("batch", "x"), ("batch", "y")]
    assert policy.state_of(("batch", "y"), None) == "paused"
    assert policy.counts == {("batch", "y"): [1, 0], ("batch", "x"): [1, 0]}


def test_an_agent_devloop_may_not_signal_is_passed_over_and_then_it_warns_once():
    policy = Policy(allocation({"p": (40, 2)}), Rules())
    over = usage(0, p_big=1.8, p_small=0.2)  # 50 % of 40 %; 45 % without small
    done = policy.check(over, now=0.0, pausable=lambda agent: agent.agent != "big")
    assert kinds(done) == [("pause", "project", "p", "small"), ("warn", "project", "p", None)]
    assert done[1].message == (
        "project p CPU 50.0% over its 40% limit; nothing left that devloop may pause"
    )
    assert policy.check(over, now=1.0, pausable=lambda agent: False) == []


def test_resume_waits_for_the_minimum_pause_and_the_threshold():
    policy = Policy(allocation({"p": (40, 2)}), Rules(resume_threshold=0.8, min_pause=10))
    assert kinds(policy.check(usage(0, p_a=1.2, p_b=0.8), now=0.0)) == [
        ("pause", "project", "p", "a")
    ]
    # a is stopped (0 cores); b alone is at 35 %: under the limit, over 0.8 x 40 = 32 %
    assert policy.check(usage(5, p_a=0.0, p_b=1.4), now=5.0) == []  # paused only 5 s
    assert policy.check(usage(10, p_a=0.0, p_b=1.4), now=10.0) == []  # 35 % >= 32 %
    done = policy.check(usage(12, p_a=0.0, p_b=1.2), now=12.0)  # 30 % < 32 %
    assert done == [
        Action(
            "resume",
            "project",
            "p",
            "a",
            (),
            "cpu",
            message="usage fell under the resume threshold; paused 12.0s",
        )  # fmt: skip
    ]
    assert policy.paused == {} and policy.counts[("p", "a")] == [1, 1]


def test_a_pause_is_over_at_the_tick_its_minimum_ends_within_a_millisecond():
    # The recorder checks at its ticks' stamps; one stamped a fraction of a millisecond early
    # (or with float noise) must not keep a pause a whole tick longer. Live, the checks ran at
    # the wall time after sampling (1.1-1.7 ms after the tick, varying): a 5-s minimum pause
    # lasted 5 or 6 ticks at random, where the replay says 5 (bench/replay_vs_real.py).
    t = 1_796_307_993.0
    policy = Policy(allocation({"p": (40, 2)}), Rules(min_pause=5))
    paused = policy.check(usage(0, p_a=2.0), now=t)
    assert kinds(paused) == [("pause", "project", "p", "a")]
    assert policy.check(usage(0, p_a=0.0), now=t + 4.998) == []  # 2 ms short: not yet
    assert kinds(policy.check(usage(0, p_a=0.0), now=t + 4.9995)) == [
        ("resume", "project", "p", "a")
    ]


def test_one_agent_per_project_is_resumed_per_check_the_longest_paused_first():
    policy = Policy(allocation({"p": (40, 2)}), Rules(min_pause=0))
    assert kinds(policy.check(usage(0, p_a=1.2, p_b=0.8, p_c=0.1), now=0.0)) == [
        ("pause", "project", "p", "a")
    ]
    assert kinds(policy.check(usage(1, p_a=0.0, p_b=2.0, p_c=0.1), now=1.0)) == [
        ("pause", "project", "p", "b")
    ]
    quiet = usage(2, p_a=0.0, p_b=0.0, p_c=0.1)
    assert kinds(policy.check(quiet, now=2.0)) == [("resume", "project", "p", "a")]
    assert kinds(policy.check(quiet, now=3.0)) == [("resume", "project", "p", "b")]


def test_a_paused_agent_whose_processes_exited_is_forgotten():
    policy = Policy(allocation({"p": (40, 2)}), Rules(min_pause=100))
    policy.check(usage(0, p_a=1.2, p_b=0.8), now=0.0)
    done = policy.check(usage(1, p_b=0.8), now=1.0)
    assert done == [Action("resume", "project", "p", "a",
                           message="its processes exited while paused")]  # fmt: skip
    assert policy.paused == {}


def test_warn_fires_once_and_re_arms_only_under_the_threshold():
    policy = Policy(allocation({"p": (40, 2)}), Rules(action="warn", resume_threshold=0.8))
    seen = [
        kinds(policy.check(usage(t, p_a=cores), now=float(t)))
        for t, cores in enumerate([2.0, 1.8, 1.4, 2.0, 1.2, 2.0])  # 50, 45, 35, 50, 30, 50 %
    ]
    warn = [("warn", "project", "p", None)]
    assert seen == [warn, [], [], [], [], warn]
    assert policy.paused == {}


def test_an_agent_warning_re_arms_for_a_later_run():
    # issue 15: agent scopes were judged only while the agent had processes, so a warning for
    # one run never re-armed for the next
    policy = Policy(allocation({"p": (40, 2)}, agents={"p/lint": 15}, fds=10), Rules(action="warn"))
    run = usage(0, p_lint=(0.8, 20))  # 20 % of its own 15 %, 20 file handles of 10
    first = policy.check(run, now=0.0)
    assert kinds(first) == [("warn", "agent", "p", "lint"), ("warn", "agent", "p", "lint")]
    assert [(d.metric, d.message) for d in first] == [
        ("cpu", "agent p/lint CPU 20.0% over its 15% limit"),
        ("fds", "fds 20 over its limit of 10"),
    ]
    assert policy.check(run, now=1.0) == []  # the same run: nothing new
    assert policy.check(usage(2), now=2.0) == []  # the run ended
    assert kinds(policy.check(run, now=3.0)) == kinds(first)  # the next run is warned about


def test_throttle_holds_agents_at_their_limits_and_pauses_for_memory():
    policy = Policy(
        allocation({"p": (40, 2)}, agents={"p/a": 15}), Rules(action="throttle", min_pause=0)
    )
    done = policy.check(usage(0, p_a=1.2, p_b=1.2), now=0.0)  # a 30 % of 15 %; p 60 % of 40 %
    assert done == [
        Hold("p", "a", pytest.approx(0.6)),  # its own 15 %
        Hold("p", "a", pytest.approx(0.6)),  # the project's 20 % each, bounded by its own 15 %
        Hold("p", "b", pytest.approx(0.8)),  # 20 % of 4 cores
    ]
    assert policy.state_of(("p", "b"), None) == "throttled"
    # memory over the project's 4GB: paused (holding a rate does not bound memory); a throttled
    # victim is released first
    big = usage(1, p_a=0.6, p_b=0.8)  # held at 35 %: no new hold
    big.agents[("p", "b")].memory_bytes = 5 * GB
    assert kinds(policy.check(big, now=1.0)) == [
        Release("p", "b"),
        ("pause", "project", "p", "b"),
    ]
    assert policy.state_of(("p", "b"), None) == "paused"
    # a's run ends: it is released; b's memory is back under 0.8 x 4GB: it is resumed
    assert kinds(policy.check(usage(2, p_b=0.0), now=2.0)) == [
        Release("p", "a"),
        ("resume", "project", "p", "b"),
    ]
    assert policy.throttled == set()


def test_a_hold_is_raised_when_the_limit_allows_more():
    """A throttled agent is held at its share; when the share grows (the other agent's run
    ends, or the limit itself rises: a profile, the dynamic strategy), the hold is raised on
    the next check, never past another scope's cap, and never lowered while under the limit."""
    policy = Policy(
        allocation({"p": (40, 2)}, agents={"p/b": 30}), Rules(action="throttle", min_pause=0)
    )
    assert policy.check(usage(0, p_a=1.2, p_b=1.2), now=0.0) == [
        Hold("p", "a", pytest.approx(0.8)),  # 20 % each of the project's 40 %
        Hold("p", "b", pytest.approx(0.8)),
    ]
    # held at their caps: under the limit, nothing to raise (the share is still 20 %)
    assert policy.check(usage(1, p_a=0.8, p_b=0.8), now=1.0) == []
    # a's run ends: b alone may have the project's 40 %, but its own limit is 30 %
    assert policy.check(usage(2, p_b=0.8), now=2.0) == [
        Release("p", "a"),
        Hold("p", "b", pytest.approx(1.2)),
    ]
    assert policy.hold_targets[("p", "b")] == {("project", "p"): 30.0}
    # the project's limit rises (a profile switch): a new agent held at the old share gets more
    policy.check(usage(3, p_b=1.2, p_c=1.2), now=3.0)  # 60 % of 40 %: 20 % each again
    policy.allocation = allocation({"p": (80, 2)}, agents={"p/b": 30})
    assert policy.check(usage(4, p_b=0.8, p_c=0.8), now=4.0) == [
        Hold("p", "b", pytest.approx(1.2)),  # min(40 %, its own 30 %)
        Hold("p", "c", pytest.approx(1.6)),  # 40 % of 4 cores
    ]


def test_a_hold_counts_at_its_cap_so_a_broader_scope_does_not_pause_it():
    """A project whose share is the whole pool: its agent over the share is held at it, and
    the workspace, checked after the project in the same check, counts the agent at its cap,
    so it does not pause it for what the hold already removes (it did, and the agent then
    flapped between paused and resumed every minimum pause)."""
    policy = Policy(allocation({"p": (50, 2)}, pool=50), Rules(action="throttle", min_pause=0))
    assert policy.check(usage(0, p_a=3.2), now=0.0) == [Hold("p", "a", pytest.approx(2.0))]
    assert policy.paused == {}
    # the throttler lags a little: measured over the cap, the agent is still not paused
    assert policy.check(usage(1, p_a=2.2), now=1.0) == []
    # over the pool with another project's agent: the workspace pauses, counting a at its cap
    policy.allocation = allocation({"p": (50, 2), "q": (50, 3)}, pool=50)
    assert kinds(policy.check(usage(2, p_a=2.0, q_b=0.4), now=2.0)) == [
        ("pause", "workspace", "q", "b"),
    ]


def test_a_memory_pause_that_cannot_end_resumes_the_agent_and_is_not_repeated():
    """Stopped, an agent keeps its memory: one whose own memory alone is at or over
    resumeThreshold x a limit would stay paused for ever. After the minimum pause it is
    resumed, saying why, and not paused for memory again while its processes last; the others
    are not paused in its place, since that cannot bring the scope under either."""
    policy = Policy(allocation({"p": (100, 2)}), Rules(min_pause=5))  # 4GB for p

    def big(ts: float, **more: float) -> Usage:
        found = usage(ts, p_a=0.1, **more)
        found.agents[("p", "a")].memory_bytes = 5 * GB  # alone over p's 4GB
        return found

    assert kinds(policy.check(big(0), now=0.0)) == [("pause", "project", "p", "a")]
    assert policy.check(big(1), now=1.0) == []  # the minimum pause
    (resumed,) = policy.check(big(5), now=5.0)
    assert kinds([resumed]) == [("resume", "project", "p", "a")]
    assert "its own memory (5120MB) is over 0.8 x the memory limit of project p" in (
        resumed.message
    )
    assert policy.paused == {} and policy.memory_exempt == {("p", "a")}
    assert policy.check(big(6, p_b=0.1), now=6.0) == []  # neither a nor b is paused
    # its run ends: the exemption goes with it, and a later run is paused again
    assert policy.check(usage(7, p_b=0.1), now=7.0) == []
    assert policy.memory_exempt == set()
    assert kinds(policy.check(big(8), now=8.0)) == [("pause", "project", "p", "a")]


def test_admission_follows_the_limits_and_the_pauses():
    policy = Policy(allocation({"p": (40, 2), "q": (40, 2)}, agents={"p/lint": 15}), Rules())
    calm = usage(0, p_lint=0.4, q_test=0.4)  # 10 % each
    assert policy.can_run(calm, "lint", ["p"]) and policy.can_run(calm, "test", ["p", "q"])
    assert not policy.can_run(usage(0, p_lint=0.8), "lint", ["p"])  # 20 % of its own 15 %
    assert not policy.can_run(usage(0, q_test=1.6), "test", ["p", "q"])  # q at its 40 %
    policy.check(usage(0, p_lint=0.4, p_test=2.0), now=0.0)  # pauses test
    assert not policy.can_run(calm, "test", ["p"])


def test_the_state_file_is_written_and_read_through_one_module(tmp_path):
    from devloop.core import state
    from devloop.dashboard.snapshot import read_state

    policy = Policy(allocation({"p": (40, 2)}, agents={"p/lint": 15}), Rules(min_pause=0))
    now = usage(0, p_lint=0.4, p_test=2.0)
    policy.check(now, now=0.0)  # pauses test
    data = state.build(policy, now, now=1000.0, interval=1.0, enforcement="pause",
                       agents=[("p", "idle")], queue=[])  # fmt: skip
    state.write(tmp_path, data)
    assert state.read(tmp_path, now=1001.0) == (data, None)
    assert {k: a["state"] for k, a in data["agents"].items()} == {
        "p/idle": "idle",
        "p/lint": "running",
        "p/test": "paused",
    }
    assert data["agents"]["p/lint"]["cpu_limit"] == 15 and data["pauses_total"] == 1
    parsed, note = read_state(tmp_path, now=1001.0)  # the dashboard's typed view of it
    assert note is None and parsed is not None and parsed.agents["p/test"].pauses == 1
    path = tmp_path / state.STATE_NAME
    assert state.read(tmp_path, now=1000.0 + 301) == (None, f"ignored {path}: written 301s ago")
    path.write_text('{"version": 2}')
    assert state.read(tmp_path) == (
        None,
        f"ignored {path}: not an enforcement state (version 2, expected 1)",
    )
    state.remove(tmp_path)
    assert state.read(tmp_path) == (None, None)


def test_a_project_held_at_its_limit_by_the_throttle_admits_a_run():
    """Throttle is work-conserving: a project at its CPU limit only because its agents are held
    there admits a run (held with them); over the limit, or at it with use nobody holds, it
    does not. A held agent counts at most at its cap: live, its measured use jitters around
    it, and counted as measured a run got in only at the ticks it measured under (it waited
    1-2 s live and not at all in the replay, docs/replay.md)."""
    policy = Policy(allocation({"p": (40, 2)}), Rules(action="throttle", min_pause=0))
    assert policy.check(usage(0, p_a=2.4), now=0.0) == [Hold("p", "a", pytest.approx(1.6))]
    assert policy.can_run(usage(1, p_a=1.6), "b", ["p"])  # at 40 % through its hold alone
    assert policy.can_run(usage(1, p_a=1.8), "b", ["p"])  # the duty cycle's jitter: 45 %
    assert not policy.can_run(usage(1, p_a=1.8, p_c=0.05), "b", ["p"])  # c is not held
    assert not policy.can_run(usage(1, p_a=1.6, p_c=0.2), "b", ["p"])  # c is not held
    # nobody held: a project exactly at its limit refuses, as before
    calm = Policy(allocation({"p": (40, 2)}), Rules(action="throttle", min_pause=0))
    assert not calm.can_run(usage(1, p_a=1.6), "b", ["p"])
