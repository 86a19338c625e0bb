"""The hindsight bound of autotune by run slowdown (issue 14), against what autotune suggests.

Per project and agent, the smallest CPU limit (0.1 % grid) under which the p95 of its runs'
replayed slowdown is at most the target (1.10), knowing the whole history: the search autotune
runs (:func:`devloop.tune.objective.smallest_cpu`, each entity's runs alone under its own limit),
on every run at once with equal weights, without walk-forward, decay, floor or pool. No limit
chosen from the past can meet the target on the whole history with less. The reservation is the
sum of the projects' limits; issue 14's goal is a suggested reservation within 1.25x of the
bound's.

Reads the simulated week ``bench/autotune.py`` makes (and its suggestions.json; run it first),
or any workspace with ``--workspace-dir`` and ``--suggestions``.

    python bench/autotune_bound.py [--dir /tmp/devloop-autotune-bench] [--agents]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def bounds(ws: Path, max_slowdown: float, agents: bool) -> dict[str, tuple[float, float, int]]:
    """Per entity (``project`` or ``project/agent``): (bound, p95 slowdown there, runs)."""
    from devloop.config import load_workspace
    from devloop.tune.objective import smallest_cpu
    from devloop.tune.replay import demand_from_store

    demand = demand_from_store(ws)
    workspace = load_workspace(ws)
    cores = demand.cores or 1
    groups: dict[tuple[str, str], list[Any]] = {}
    for run in demand.runs:
        groups.setdefault((run.project, ""), []).append(run)
        if agents:
            groups.setdefault((run.project, run.agent), []).append(run)
    found = {}
    for (project, agent), runs in sorted(groups.items()):
        search = smallest_cpu(runs, workspace, project, agent, cores=cores,
                              interval=demand.interval, max_slowdown=max_slowdown,
                              weights=[1.0] * len(runs))  # fmt: skip
        name = f"{project}/{agent}" if agent else project
        found[name] = (search.cpu, search.p95, len(runs))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-autotune-bench"))
    parser.add_argument("--workspace-dir", type=Path)
    parser.add_argument("--suggestions", type=Path)
    parser.add_argument("--agents", action="store_true", help="agents too, not only projects")
    args = parser.parse_args()
    ws = args.workspace_dir or args.dir / "week" / ".devloop-workspace"
    path = args.suggestions or args.dir / "week" / "suggestions.json"
    if not path.is_file():
        raise SystemExit(f"no {path}: run bench/autotune.py first (or pass --suggestions)")
    doc = json.loads(path.read_text())
    target = doc["parameters"]["max_slowdown"]
    started = time.perf_counter()
    found = bounds(ws, target, args.agents)
    print(f"hindsight bound for a p95 slowdown <= {target:g}x "
          f"({time.perf_counter() - started:.0f} s)\n")  # fmt: skip
    print("| entity | runs | bound | p95 at the bound | needed (autotune, decayed) "
          "| suggested | suggested / bound |")  # fmt: skip
    print("|---" * 7 + "|")
    reserved = {"bound": 0.0, "needed": 0.0, "suggested": 0.0}
    for name, (bound, p95, runs) in found.items():
        entry = doc["agents" if "/" in name else "projects"].get(name) or {}
        needed = entry.get("needed_cpu_percent") or (entry.get("objective") or {}).get(
            "needed_cpu_percent"
        )
        suggested = (entry.get("suggested") or {}).get("cpu_percent")
        ratio = f"{suggested / bound:.2f}" if suggested is not None and bound else "-"
        print(f"| {name} | {runs} | {bound:g} % | {p95:.3f} | {needed} % | {suggested} % "
              f"| {ratio} |")  # fmt: skip
        if "/" not in name:
            reserved["bound"] += bound
            reserved["needed"] += needed or 0.0
            reserved["suggested"] += suggested or 0.0
    total = reserved["suggested"] / reserved["bound"] if reserved["bound"] else float("nan")
    print(
        f"\nreservation (sum of the projects' CPU limits): bound {reserved['bound']:.1f} %, "
        f"needed {reserved['needed']:.1f} %, suggested {reserved['suggested']:.1f} % "
        f"= {total:.2f}x the bound (goal: <= 1.25x, with the suggested p95 <= {target:g})"
    )


if __name__ == "__main__":
    main()
