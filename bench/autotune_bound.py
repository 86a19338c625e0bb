"""The best any CPU limits could do on the simulated 7-day workspace (issue 6's slack goal).

Issue 6 asks that suggested limits cut slack by at least half against the guide's default
limits (60 % of the machine, split 3:2:1) while at most 1 % of project-ticks would pause. This
script computes, from the recorded per-tick usage, the lowest would-pause share that ANY
limits could reach with the allocation that halving the slack allows: chosen with hindsight
(knowing the whole week), per project, on a 0.5-point grid. It counts CPU only; memory can only
add pauses. Two families of limits:

* static: one CPU limit per project for the whole week;
* two time windows (as the guide's ``profiles`` with ``times``): one set of limits for weekday
  working hours (Mon-Fri 08:00-18:00 UTC) and one for the rest, whose time-weighted total is
  the halved-slack allocation.

If even the hindsight optimum is above 1 %, no method can meet the goal on this workload.

    python bench/autotune_bound.py [--dir /tmp/devloop-autotune-bench]

Uses the 7-day store ``bench/autotune.py`` simulates (made here if missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

GRID_STEP = 0.5
WORK = "dayofweek(ts) BETWEEN 1 AND 5 AND hour(ts) BETWEEN 8 AND 17"


def usage(ws: Path) -> tuple[dict[str, dict[str, Any]], float, float]:
    """Per project, sorted per-tick CPU % of the machine (0 where idle): in working hours,
    outside them; the workspace mean; and the share of ticks in working hours."""
    import numpy as np

    from devloop.store import connect

    with connect(ws / "metrics") as db:
        db.execute(
            "CREATE TEMP TABLE d AS "
            "WITH cores AS (SELECT host, arg_max(cores, ts) AS cores FROM system GROUP BY host), "
            "ticks AS (SELECT DISTINCT host, ts FROM system), "
            "names AS (SELECT DISTINCT project FROM samples), "
            "used AS (SELECT host, ts, project, sum(cpu_cores) AS cpu FROM samples GROUP BY ALL) "
            "SELECT t.ts, n.project, coalesce(100.0 * u.cpu / c.cores, 0.0) AS cpu "
            "FROM ticks t CROSS JOIN names n JOIN cores c ON c.host = t.host "
            "LEFT JOIN used u ON u.host = t.host AND u.ts = t.ts AND u.project = n.project"
        )
        ((mean, work_share),) = db.sql(
            f"SELECT sum(cpu) / count(DISTINCT ts), "
            f"count(DISTINCT ts) FILTER (WHERE {WORK}) / count(DISTINCT ts) FROM d"
        ).fetchall()
        windows: dict[str, dict[str, Any]] = {}
        for name, where in (("all", "true"), ("work", WORK), ("rest", f"NOT ({WORK})")):
            rows = db.sql(
                f"SELECT project, list(cpu ORDER BY cpu) FROM d WHERE {where} GROUP BY project "
                "ORDER BY project"
            ).fetchall()
            windows[name] = {project: np.array(values) for project, values in rows}
    return windows, float(mean), float(work_share)


def best_share(sorted_usage: dict[str, Any], pool: float) -> tuple[float, list[float]]:
    """The lowest mean share of ticks over the limit, over limits on the grid summing to at
    most ``pool``, and those limits (an exact search: a knapsack over the grid)."""
    import numpy as np

    grid = np.arange(0.0, 100.0 + GRID_STEP, GRID_STEP)
    over = [
        1.0 - np.searchsorted(values, grid, side="right") / len(values)
        for values in sorted_usage.values()
    ]
    budget = int(round(pool / GRID_STEP))
    # best[k] = the lowest summed share of the projects so far using k grid steps at most
    best = np.zeros(budget + 1)
    choices: list[Any] = []
    for share in over:
        steps = min(len(grid), budget + 1)
        candidates = np.full((budget + 1, steps), np.inf)
        for s in range(steps):
            candidates[s:, s] = best[: budget + 1 - s] + share[s]
        choices.append(candidates.argmin(axis=1))
        best = candidates.min(axis=1)
    limits: list[float] = []
    k = budget
    for pick in reversed(choices):
        s = int(pick[k])
        limits.append(float(grid[s]))
        k -= s
    return float(best[budget]) / len(over), list(reversed(limits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-autotune-bench"))
    args = parser.parse_args()
    ws = args.dir / "7d" / ".devloop-workspace"
    if not (ws / "metrics").is_dir():
        from devloop.simulate import simulate

        print("simulating 7 days x 3 projects x 4 agents...", file=sys.stderr)
        simulate(ws, days=7, projects=3, agents_per_project=4, overwrite=True)
    windows, mean, work = usage(ws)
    default = 60.0
    halved = mean + (default - mean) / 2
    print(f"workspace mean CPU use {mean:.2f} % of the machine; default allocation {default:.0f}")
    print(f"slack halved = allocation of {halved:.2f} points on average; working hours are")
    print(f"{100 * work:.1f} % of ticks")
    print()
    print("| limits | allocation | lowest possible would-pause share | limits (per project) |")
    print("|---|---|---|---|")
    for pool in (default, halved):
        share, limits = best_share(windows["all"], pool)
        label = "default pool" if pool == default else "slack halved"
        print(f"| static | {pool:.1f} ({label}) | {100 * share:.2f} % | {limits} |")
    results = []
    for work_pool in range(0, 101, 5):
        rest_pool = (halved - work * work_pool) / (1 - work)
        if rest_pool < 0:
            break
        work_share, work_limits = best_share(windows["work"], float(work_pool))
        rest_share, rest_limits = best_share(windows["rest"], rest_pool)
        total = work * work_share + (1 - work) * rest_share
        results.append((total, work_pool, rest_pool, work_limits, rest_limits))
    total, work_pool, rest_pool, work_limits, rest_limits = min(results)
    print(
        f"| two windows | {work_pool} in working hours, {rest_pool:.1f} outside (slack halved) "
        f"| {100 * total:.2f} % | {work_limits}; {rest_limits} |"
    )
    print()
    print("goal: <= 1.00 % with the slack halved")


if __name__ == "__main__":
    main()
