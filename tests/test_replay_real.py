"""The replay checked against reality, small: real agents throttled by a real enforcer take as
long as the replay of their own unconstrained recording says.

Two projects competing for the machine: A runs a burner, B a mixed agent (bursts and sleeps,
every second burst in a forked child). Recorded unconstrained beside a real collector, then run
again beside ``collect --enforce`` with each project throttled at 60 % of what its runs used.
The machine is shared with other test suites, and a recording made while other processes take
CPU understates what a run would use alone (docs/replay.md, "Checked against reality", item 4):
under a load average of 2-3 this test measured errors of 20-72 %. So its bar is 100 %, which
still catches a replay that gets throttling wrong by a factor of two or more; the issue's 15 %
is the bench's, on a quiet machine. The same loop also takes a different number of CPU-seconds
run to run (3.5-4.8 s for one burner, docs/replay.md): a clean-clone run measured a burner at
1.9 s throttled after recording 3.0 s unthrottled. So the replayed duration is scaled by the
run's kernel CPU-seconds enforced over recorded (its work in this run's CPU-seconds) before it
is compared: exact for a CPU-bound run held at its cap. The full comparison (pause too, three
levels, two agents sharing a project, runs queued behind a held one) is
``bench/replay_vs_real.py``; where it disagrees is in docs/replay.md ("Checked against
reality").
"""

from __future__ import annotations

import pytest

from tests.helpers.replay_real import (
    Compared,
    Experiment,
    Trigger,
    Work,
    calibrate,
    compare,
    level_limits,
    quantile,
)

pytestmark = pytest.mark.realtime

TRIGGERS = [  # on the tick grid at the same place in both phases, just before a tick
    Trigger(0, 0.0, 0, "burner", "burn"),
    Trigger(1, 0.05, 1, "mixed", "mixed", fork=True),
]
WORK = Work(burn=2.0, bursts=4, burst=0.4, sleep=0.3)


@pytest.mark.slow
def test_throttled_runs_last_as_long_as_the_replay_of_their_recording(tmp_path):
    with Experiment(WORK, calibrate(repeats=1), tmp_path) as experiment:
        recorded, demand = experiment.record(TRIGGERS)
        assert not recorded.failures
        assert sorted(recorded.runs) == [0, 1]
        limits = level_limits(demand, recorded, TRIGGERS, 0.6)
        enforced = experiment.enforce(TRIGGERS, "throttle", limits)
        assert not enforced.failures
    compared = compare(experiment, TRIGGERS, demand, recorded, enforced)

    def work(c: Compared) -> float:
        """The run's CPU-seconds enforced over recorded (kernel counts of each run)."""
        return c.measured.cpu_s / recorded.runs[c.trigger.index].cpu_s

    def error(c: Compared) -> float:
        return (c.replayed * work(c) - c.measured.duration) / c.measured.duration

    table = "\n".join(
        f"run {c.trigger.index}: recorded {c.recorded:.1f}s measured {c.measured.duration:.1f}s "
        f"replayed {c.replayed:.1f}s ({c.error:+.1%}); CPU-s enforced / recorded {work(c):.2f}, "
        f"error at the same work {error(c):+.1%}"
        for c in compared
    )
    assert [c.trigger.index for c in compared] == [0, 1]
    assert all(c.outcome == "done" for c in compared), table
    # the limits bound: every run was throttled, live and in the replay, and took longer
    assert all(c.measured.throttled_s > 0 and c.replayed_throttled > 0 for c in compared), table
    assert quantile([abs(error(c)) for c in compared], 0.9) <= 1.0, table
