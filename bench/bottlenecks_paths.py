"""The three ways ``bottlenecks`` sums an interval's usage per agent, timed side by side.

    python bench/bottlenecks_paths.py WORKSPACE_DIR

On the store of WORKSPACE_DIR (e.g. ``devloop workspace simulate --days 7 --projects 4
--agents-per-project 4 --seed 5``), for three option sets, the drivers step and the whole report
(best of 3) read: from the rollups' slices; from raw rows hour by hour (rollup entries refused);
tick by tick; and the last two with the rollups off. Every way must give the same report.
The figures behind the docstring of ``devloop.analytics.bottlenecks.usage``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from typing import Any

from devloop.analytics import Store, bottlenecks

top: Any = importlib.import_module("devloop.analytics.bottlenecks")
usage: Any = importlib.import_module("devloop.analytics.bottlenecks.usage")
real_grid, real_drivers, real_cached = top.project_grid, top.ranked_drivers, usage._cached_part
spent: list[float] = []


def timed_drivers(*args: Any) -> Any:
    started = time.perf_counter()
    try:
        return real_drivers(*args)
    finally:
        spent.append(time.perf_counter() - started)


def refuse_rollups(*args: Any) -> Any:
    raise ValueError("read the raw rows")


def between_ticks(*args: Any) -> Any:
    return dataclasses.replace(real_grid(*args), at_ticks=False)


def run(ws: str, label: str, way: str, rollups: bool, **options: Any) -> dict[str, Any]:
    top.ranked_drivers = timed_drivers
    top.project_grid = between_ticks if way == "tick" else real_grid
    usage._cached_part = refuse_rollups if way == "raw" else real_cached
    whole: list[float] = []
    spent.clear()
    try:
        for _ in range(3):
            with Store(ws) as store:
                store.use_cache = rollups
                started = time.perf_counter()
                report = bottlenecks(store, **options)
                whole.append(time.perf_counter() - started)
    finally:
        top.project_grid, top.ranked_drivers, usage._cached_part = (
            real_grid,
            real_drivers,
            real_cached,
        )
    print(
        f"{label:<18} {options!s:<34} drivers {min(spent):.3f}s  report {min(whole):.3f}s  "
        f"intervals {report.intervals.height}",
        flush=True,
    )
    return report.to_json()


def main(ws: str) -> None:
    for options in (
        {"threshold": 80, "limit": 20},
        {"threshold": 80, "limit": None},
        {"threshold": 20, "limit": None},
    ):
        bottlenecks(ws, **options)  # the rollups built
        found = [
            run(ws, "rollup slices", "slices", True, **options),
            run(ws, "raw rows per hour", "raw", True, **options),
            run(ws, "tick by tick", "tick", True, **options),
            run(ws, "raw, no rollups", "raw", False, **options),
            run(ws, "tick, no rollups", "tick", False, **options),
        ]
        assert all(report == found[0] for report in found), "the ways disagree"


if __name__ == "__main__":
    main(sys.argv[1])
