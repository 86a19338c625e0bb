"""Replay vs measured enforced runs (issue 14): does the replay predict what enforcement does?

    python bench/replay_vs_real.py [--seed 1] [--quick] [--actions throttle,pause]
                                   [--levels 0.75,0.5,0.25] [--runs] [--scale 1] [--keep DIR]

Real agents with a fixed amount of work (``tests/helpers/replay_agent.py``: a CPU-bound burner
and a mixed agent, 5 x (0.6 s of CPU + 0.4 s asleep), every second burst of some in a forked
child) in two projects, each run launched by ``devloop run`` at a fixed offset of a schedule
(``--seed`` jitters the offsets; ``--quick``: 4 runs instead of 10):

1. **Unconstrained**: the schedule beside ``devloop workspace collect --interval 1s`` (no
   enforcement); ``demand_from_store`` reads the runs back.
2. **Enforced**: the same schedule (same offsets, same place on the tick grid) beside
   ``devloop workspace collect --interval 1s --enforce``, per action (``throttle``, ``pause``)
   and level: project CPU limits holding each project at ``level`` x the cores its runs'
   ticks used unconstrained (median over the ticks). Measured duration: ``ended - started`` of
   each run's ``runs`` row (queue wait apart, as the replay counts it).
``--scale S`` multiplies every agent's work (a burner's CPU-seconds, a mixed agent's bursts)
and the schedule's offsets by S: the same pattern with runs S times as long. Under ``pause``
a replay one cycle out errs the minimum pause over the run's duration (docs/replay.md): longer
runs show whether that grain is what is left.

3. The demand of phase 1 replayed (``devloop.tune.replay.replay``) under each enforced
   configuration; per run ``|replayed - measured| / measured``; p50 / p90 / max per action and
   level and the p90 overall (goal: <= 15 %).

The machine is shared: what a CPU-bound agent gets unconstrained depends on what else runs, and
the recording is the demand the replay is given. The ``drift`` column is the median over the
configuration's runs of (CPU per running second when enforced) / (CPU per second
unconstrained): 1.0 when the machine gave the agents the same while they ran. Under ``pause``
a run's duration scales with it (every pause cycle does one tick of work), so ``adj p90`` is
the p90 with each run's replayed duration divided by its own drift: the replay's error with the
machine's change of load taken out. Under ``throttle`` the cap, not the machine, sets the pace.

**The floor.** The same loop does not take the same CPU-seconds run to run on these vCPUs
(3.5-4.8 s for one burner, docs/replay.md), so no replay of a recording can predict a later
run better than the recording predicts a repeat of itself. The schedule is recorded twice
unconstrained: ``floor p90`` is the p90 of |second - first| / second over the runs' durations
(what an exact replay of the first would err on the second), and ``cpu p90`` the same of the
runs' kernel CPU-seconds. ``work p90`` is the replay's error with each replayed duration
scaled by its run's kernel CPU-seconds enforced / recorded: the replay at the work the run
actually did (exact for a CPU-bound run held at its cap; under ``pause`` a cycle's tick of
work scales with it too). ``refit p90`` replays the recording again with every run stretched
in time to its kernel CPU-seconds enforced (``at_work``: its rate kept at every moment), all at
once, so a run's noise in its work no longer carries down a chain of shared holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.helpers.replay_real import (  # noqa: E402
    Compared,
    Experiment,
    Phase,
    Trigger,
    Work,
    calibrate,
    compare,
    level_limits,
    quantile,
)

from devloop.tune.replay import Demand  # noqa: E402

#: (offset s, project 0/1, agent, kind, fork): two projects competing, two agents each
SCHEDULE = [
    (0.0, 0, "burner", "burn", False),
    (1.5, 1, "mixed", "mixed", True),
    (5.0, 1, "burner", "burn", False),
    (8.0, 0, "mixed", "mixed", False),
    (13.0, 0, "burner", "burn", False),
    (17.0, 1, "mixed", "mixed", True),
    (21.0, 0, "mixed", "mixed", True),
    (25.0, 1, "burner", "burn", False),
    (30.0, 0, "burner", "burn", False),
    (34.0, 1, "mixed", "mixed", False),
]
QUICK = 4


def schedule(seed: int, quick: bool, scale: float = 1.0) -> list[Trigger]:
    """The schedule, its offsets times ``scale``, each moved by up to a second either way
    (``seed``)."""
    rng = random.Random(seed)
    chosen = SCHEDULE[:QUICK] if quick else SCHEDULE
    return [
        Trigger(i, max(0.0, round(offset * scale + rng.uniform(-1.0, 1.0), 2)), project, agent,
                kind, fork)
        for i, (offset, project, agent, kind, fork) in enumerate(chosen)
    ]  # fmt: skip


def drift(compared: Compared, recorded: Phase) -> float:
    """What the run got per running second enforced / per second unconstrained."""
    before = recorded.runs[compared.trigger.index]
    after = compared.measured
    running = max(after.duration - after.paused_s, 1e-9)
    return (after.cpu_s / running) / (before.cpu_s / before.duration)


def at_work(demand: Demand, recorded: Phase, enforced: Phase) -> Demand:
    """``demand`` with each run's series stretched in time to the kernel CPU-seconds the run
    did when enforced (its rate at every moment kept: a CPU-bound run that did 9 % less work
    lasts 9 % less): the replay at the work every run actually did, all at once, so a run's
    noise no longer carries down a chain of shared holds."""
    import numpy as np

    ratios = {
        recorded.runs[i].run_id: enforced.runs[i].cpu_s / recorded.runs[i].cpu_s
        for i in recorded.runs
        if i in enforced.runs and recorded.runs[i].cpu_s > 0
    }
    runs = []
    for run in demand.runs:
        r = ratios.get(run.run_id)
        if r is None or not run.cores:
            runs.append(run)
            continue
        n = len(run.cores)
        times = np.array([*range(n), n - 1 + run.last], dtype=float)
        work = np.concatenate([[0.0], np.cumsum(run.cores)])  # the last sample's work in `last`
        length = (n - 1 + run.last) * r
        count = max(1, math.ceil(length - 1e-9))
        grid = np.array([*range(count), length], dtype=float)
        cores = np.diff(r * np.interp(grid / r, times, work))
        rss = [run.rss_bytes[min(int(j / r), n - 1)] for j in range(count)]
        runs.append(dataclasses.replace(
            run, cores=cores.tolist(), rss_bytes=rss, last=length - (count - 1)
        ))  # fmt: skip
    return dataclasses.replace(demand, runs=tuple(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 runs instead of 10")
    parser.add_argument("--actions", default="throttle,pause")
    parser.add_argument("--levels", default="0.75,0.5,0.25")
    parser.add_argument("--runs", action="store_true", help="also print every run")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="every agent's work and the offsets times this"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep every phase's workspace folder (its store) under this"
    )
    args = parser.parse_args()
    actions = args.actions.split(",")
    levels = [float(x) for x in args.levels.split(",")]
    cores = os.cpu_count() or 1

    began = time.monotonic()
    rate = calibrate()
    triggers = schedule(args.seed, args.quick, args.scale)
    plain = Work()
    work = Work(burn=plain.burn * args.scale, bursts=max(1, round(plain.bursts * args.scale)))
    print(f"machine: {cores} cores; load average at start {os.getloadavg()}")
    print(f"agents: burner {work.burn:g} CPU-s; mixed {work.bursts} x ({work.burst:g} CPU-s + "
          f"{work.sleep:g} s asleep); loop {rate / 1e6:.1f}M iterations per CPU-s")  # fmt: skip
    print("schedule: " + ", ".join(
        f"{t.offset:g}s {'ab'[t.project]}/{t.agent}{'+fork' if t.fork else ''}" for t in triggers
    ))  # fmt: skip
    rows = []
    everything: list[float] = []
    per_action: dict[str, list[float]] = {a: [] for a in actions}
    worked: dict[str, list[float]] = {a: [] for a in actions}
    refits: dict[str, list[float]] = {a: [] for a in actions}
    floor: list[float] = []
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with Experiment(work, rate, root=args.keep) as experiment:
        recorded, demand = experiment.record(triggers)
        if recorded.failures:
            raise SystemExit(f"unconstrained phase failed: {recorded.failures}")
        again, _ = experiment.record(triggers)
        if again.failures:
            raise SystemExit(f"second unconstrained phase failed: {again.failures}")
        floor = [abs(again.runs[i].duration - r.duration) / again.runs[i].duration
                 for i, r in recorded.runs.items()]  # fmt: skip
        cpu_floor = [abs(again.runs[i].cpu_s - r.cpu_s) / again.runs[i].cpu_s
                     for i, r in recorded.runs.items()]  # fmt: skip
        print(f"the floor: the schedule unconstrained twice: durations differ p50 "
              f"{quantile(floor, 0.5):.1%}, p90 {quantile(floor, 0.9):.1%}, max {max(floor):.1%};"
              f" kernel CPU-seconds p90 {quantile(cpu_floor, 0.9):.1%} (load "
              f"{again.load[0]:.1f}->{again.load[1]:.1f})")  # fmt: skip
        speeds = [r.cpu_s / r.duration for r in recorded.runs.values()]
        print(f"\nunconstrained: {len(recorded.runs)} runs, {recorded.wall:.0f} s, load "
              f"{recorded.load[0]:.1f}->{recorded.load[1]:.1f}; CPU per second of a run: "
              f"{min(speeds):.2f}-{max(speeds):.2f} cores (median "
              f"{statistics.median(speeds):.2f})")  # fmt: skip
        for level in levels:
            limits = level_limits(demand, recorded, triggers, level)
            for action in actions:
                enforced = experiment.enforce(triggers, action, limits)
                compared = compare(experiment, triggers, demand, recorded, enforced)
                errors = [abs(c.error) for c in compared]
                drifts = [drift(c, recorded) for c in compared]
                adjusted = [
                    abs(c.replayed / d - c.measured.duration) / c.measured.duration
                    for c, d in zip(compared, drifts, strict=True)
                ]
                worked_at = [
                    abs(c.replayed * c.measured.cpu_s / recorded.runs[c.trigger.index].cpu_s
                        - c.measured.duration) / c.measured.duration
                    for c in compared
                ]  # fmt: skip
                refit = [
                    abs(c.replayed - c.measured.duration) / c.measured.duration
                    for c in compare(experiment, triggers, at_work(demand, recorded, enforced),
                                     recorded, enforced)
                ]  # fmt: skip
                everything += errors
                per_action[action] += errors
                worked[action] += worked_at
                refits[action] += refit
                rows.append(
                    (action, level, limits, enforced, compared, errors, drifts, adjusted, worked_at,
                     refit)
                )  # fmt: skip
                print(f"\n{action} at {level:.0%} (limits {limits[0]:g} % / {limits[1]:g} % of "
                      f"the machine): {enforced.wall:.0f} s, load {enforced.load[0]:.1f}->"
                      f"{enforced.load[1]:.1f}; p90 {quantile(errors, 0.9):.1%}"
                      + (f"; failures: {enforced.failures}" if enforced.failures else ""),
                      flush=True)  # fmt: skip
                if args.runs:
                    print(
                        "  run  agent           recorded  measured  replayed  error   "
                        "paused m/r   throttled m/r  waited m/r  drift"
                    )
                    for c, d in zip(compared, drifts, strict=True):
                        t, m = c.trigger, c.measured
                        name = f"{'ab'[t.project]}/{t.agent}{'+fork' if t.fork else ''}"
                        print(f"  {t.index:>3}  {name:<15}"
                              f" {c.recorded:>7.1f}s {m.duration:>8.1f}s {c.replayed:>8.1f}s "
                              f"{c.error:>+6.1%} {m.paused_s:>5.0f}/{c.replayed_paused:<5.0f}"
                              f"  {m.throttled_s:>6.0f}/{c.replayed_throttled:<6.0f} "
                              f"{m.waited:>5.1f}/{c.replayed_waited:<5.1f} "
                              f"{d:>5.2f}")  # fmt: skip
    print(
        "\n| action | level | limits A / B (% of machine) | runs | p50 | p90 | max | bias | "
        "drift | adj p90 | work p90 | refit p90 | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (
        action,
        level,
        limits,
        enforced,
        compared,
        errors,
        drifts,
        adjusted,
        worked_at,
        refit,
    ) in rows:
        bias = statistics.mean(c.error for c in compared)
        print(f"| {action} | {level:.0%} | {limits[0]:g} / {limits[1]:g} | {len(errors)} | "
              f"{quantile(errors, 0.5):.1%} | {quantile(errors, 0.9):.1%} | {max(errors):.1%} | "
              f"{bias:+.1%} | {statistics.median(drifts):.2f} | "
              f"{quantile(adjusted, 0.9):.1%} | {quantile(worked_at, 0.9):.1%} | "
              f"{quantile(refit, 0.9):.1%} | "
              f"{enforced.load[0]:.1f}-{enforced.load[1]:.1f} |")  # fmt: skip
    print()
    for action, errors in per_action.items():
        print(f"p90 {action}: {quantile(errors, 0.9):.1%} over {len(errors)} runs; at the runs' "
              f"own work {quantile(worked[action], 0.9):.1%}; every run refit to its work "
              f"{quantile(refits[action], 0.9):.1%}")  # fmt: skip
    print(f"the floor (the schedule unconstrained twice): p90 {quantile(floor, 0.9):.1%}")
    print(f"p90 overall: {quantile(everything, 0.9):.1%} over {len(everything)} runs "
          f"(goal <= 15 %); {time.monotonic() - began:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
