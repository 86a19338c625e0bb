"""How many devloop modules a report passes through between its function and the Parquet files.

    python bench/report_path.py [--dir /tmp/devloop-bench-13] [--days 7]

Issue 13's readability goal: "a report's path reads top-down: report -> store (views and
rollups) -> files, at most 5 devloop modules from the report function to the Parquet files,
none visited twice". Measured, not reviewed: every call made while a report runs is traced
(``sys.setprofile``), and each call from one devloop module into another is an edge. A report
that is a package (``analytics.bottlenecks``: the issue's own split into grid, runs and
drivers) counts as one module, the report: its stages are its inside, not its path to the
files. Printed per report:

* ``modules``: the devloop modules the report's calls reach (the report's own included);
* the distinct calls back up the path: a module calling one the path had reached before it
  (a return to the caller is not a call), the "comes back" of the issue;
* the path itself, modules in the order first entered.

The store is the one ``bench/report_vs_duckdb.py`` simulates (rollups written with the hours).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any


def trace(report: Callable[[], Any], package: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    """The devloop modules ``report`` enters, in the order first entered, and the distinct
    calls that go back up that order (a module calling one the path had reached before it).
    The modules of ``package`` (a report that is a package) count as that one module."""
    order: list[str] = []
    edges: set[tuple[str, str]] = set()
    stack: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if package and module.startswith(package + "."):
                module = package
            caller = next((m for m in reversed(stack) if m.startswith("devloop")), "")
            stack.append(module)
            if not module.startswith("devloop") or module == caller:
                return
            if module not in order:
                order.append(module)
            if caller:
                edges.add((caller, module))
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        report()
    finally:
        sys.setprofile(None)
    rank = {module: i for i, module in enumerate(order)}
    back = sorted(
        (caller, callee) for caller, callee in edges if rank.get(caller, 0) > rank[callee]
    )
    return order, back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-bench-13"))
    parser.add_argument("--days", type=float, default=7)
    args = parser.parse_args()
    ws = args.dir / f"sim-{args.days:g}d" / ".devloop-workspace"
    if not ws.exists():
        sys.exit(f"no store at {ws}: run bench/report_vs_duckdb.py first (it simulates one)")

    import devloop.analytics as analytics

    reports: dict[str, Callable[[], Any]] = {
        "peak-usage": lambda: analytics.peak_usage(ws),
        "metrics --interval 1m": lambda: analytics.export_metrics(ws, interval=60.0),
        "efficiency": lambda: analytics.efficiency(ws),
        "health": lambda: analytics.health(ws),
        "bottlenecks": lambda: analytics.bottlenecks(ws),
        "runs": lambda: analytics.runs(ws),
    }
    for report in reports.values():
        report()  # imports done, so the trace sees the report, not the importer

    def short(module: str) -> str:
        return module.removeprefix("devloop.")

    print("| report | devloop modules | calls back up the path | path |")
    print("|---|---|---|---|")
    packages = {"bottlenecks": "devloop.analytics.bottlenecks"}
    for name, report in reports.items():
        order, back = trace(report, packages.get(name, ""))
        shown = " -> ".join(short(module) for module in order)
        upward = ", ".join(f"{short(a)} -> {short(b)}" for a, b in back) or "none"
        print(f"| {name} | {len(order)} | {len(back)}: {upward} | {shown} |")


if __name__ == "__main__":
    main()
