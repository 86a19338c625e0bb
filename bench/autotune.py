"""Benchmark autotune by run slowdown (issue 14) on the simulated week: what it suggests against
what the runs used, the slowdown current vs suggested, and its whole-process time.

The store: ``devloop workspace simulate --days 7 --projects 4 --agents-per-project 4
--interval 1s --seed 5`` (9.7M samples rows, ~5,500 runs in the ``runs`` table), made under
``--dir`` when missing. Autotune runs as ``python -m devloop workspace autotune`` in a fresh
process (interpreter start included), timed from outside with its peak RSS; the fastest of
``--repeat`` runs counts (the machine is shared). Then, per project:

* the suggested CPU limit (and what its runs need for the target, before the pool rule) against
  its runs' CPU: p50 / p95 / max of the runs' peak CPU (the ``runs`` table's ``peak_cores``,
  percent of the machine);
* the walk-forward backtest's p95 run slowdown under the current and the suggested limit, and
  under the suggested pool with every project at once (``at_pool``; in-sample);
* memory: current and suggested limit against the runs' peak (the most the project's runs held at
  one tick) and the largest single run; runs failing on memory, current vs suggested.

Goals (issue 14): walk-forward p95 slowdown <= 1.10 under the suggestion, 0 runs failing on
memory, never worse than current, and autotune <= 10 s whole-process at 30M samples rows.

First the times side by side: autotune whole-process on the week (9.7M samples rows), on
``--also`` days of the same simulation (22: 30.4M rows, the goal's size; simulated under
``DIR/22d`` when missing, about 3.5 minutes) and on the real recording
(``sample_data/.devloop-watch``), each with autotune's workers as it picks them (two forked
processes where two cores are free) and in one process (``DEVLOOP_TUNE_WORKERS=1``), with the
machine's load average at the start of each run (the machine may be shared).

    python bench/autotune.py [--dir /tmp/devloop-autotune-bench] [--repeat 1] [--days 7]
        [--also 22] [--real sample_data/.devloop-watch]

``--days 1`` simulates and times a day instead (under ``DIR/1d``; about a fifth of the week's
time): quicker while iterating, not the goal's measure. ``--also 0`` and ``--real ''`` leave
those stores out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIMULATION = {"days": 7, "projects": 4, "agents_per_project": 4, "interval": 1.0, "seed": 5}


def store(base: Path, days: float = 7) -> Path:
    """The simulated store's workspace folder (the week under ``week``), simulated when
    missing."""
    from devloop.simulate import simulate

    ws = folder(base, days) / ".devloop-workspace"
    if not (ws / "workspace.json").is_file():
        started = time.perf_counter()
        summary = simulate(ws, **{**SIMULATION, "days": days})  # type: ignore[arg-type]
        print(f"simulated {days:g} days: {summary.rows['samples']:,} samples rows, "
              f"{summary.rows['runs']:,} runs in {time.perf_counter() - started:.0f} s",
              flush=True)  # fmt: skip
    return ws


def folder(base: Path, days: float) -> Path:
    """Where the store of ``days`` days lives under ``base``."""
    return base / ("week" if days == 7 else f"{days:g}d")


def timed_autotune(ws: Path, output: Path, workers: int | None = None) -> tuple[float, float]:
    """Run autotune in a fresh interpreter: (wall seconds, peak RSS in MB, the largest of its
    processes). ``workers``: ``DEVLOOP_TUNE_WORKERS`` (None: autotune's choice)."""
    command = [sys.executable, "-m", "devloop", "workspace", "autotune", "--workspace-dir",
               str(ws), "--output", str(output)]  # fmt: skip
    env = dict(os.environ)
    env.pop("DEVLOOP_TUNE_WORKERS", None)
    if workers is not None:
        env["DEVLOOP_TUNE_WORKERS"] = str(workers)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"autotune exited {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024


def rows(ws: Path) -> tuple[int, int]:
    """The store's samples rows and runs."""
    from devloop.store import connect

    with connect(ws / "metrics") as db:
        ((samples,),) = db.execute("SELECT count(*) FROM samples").fetchall()
        ((runs,),) = db.execute("SELECT count(*) FROM runs").fetchall()
    return int(samples), int(runs)


def times(stores: list[tuple[str, Path, Path]], repeat: int) -> None:
    """Autotune whole-process on each ``(name, workspace, output)``, with its workers and in
    one process, side by side (the fastest of ``repeat`` runs of each; the load average before
    each run)."""
    print("| store | samples rows | runs | autotune (workers) | autotune (1 process) "
          "| peak RSS | load avg (1 min) |")  # fmt: skip
    print("|---" * 7 + "|")
    for name, ws, output in stores:
        samples, runs = rows(ws)
        found: dict[int | None, list[tuple[float, float]]] = {None: [], 1: []}
        loads = []
        for _ in range(max(1, repeat)):
            for workers in (None, 1):
                loads.append(os.getloadavg()[0])
                found[workers].append(timed_autotune(ws, output, workers))
        best = {workers: min(runs_) for workers, runs_ in found.items()}
        every = {w: ", ".join(f"{s:.1f}" for s, _ in r) for w, r in found.items()}
        print(f"| {name} | {samples:,} | {runs:,} | {best[None][0]:.1f} s ({every[None]}) "
              f"| {best[1][0]:.1f} s ({every[1]}) | {max(best[None][1], best[1][1]):.0f} MB "
              f"| {min(loads):.1f}-{max(loads):.1f} |", flush=True)  # fmt: skip
    print("\ngoal: <= 10 s whole-process at 30M samples rows\n")


def run_cpu(ws: Path) -> dict[str, dict[str, float]]:
    """Per project: runs, p50 / p95 / max of the runs' peak CPU (% of the machine), and the
    largest single run's memory."""
    from devloop.store import connect

    with connect(ws / "metrics") as db:
        ((cores,),) = db.execute("SELECT max(cores) FROM system").fetchall()
        rows = db.execute(
            """SELECT project, count(*), quantile_cont(peak_cores, 0.5),
                      quantile_cont(peak_cores, 0.95), max(peak_cores), max(max_rss_bytes)
               FROM runs GROUP BY project ORDER BY project"""
        ).fetchall()
    scale = 100.0 / cores
    return {
        project: {"runs": runs, "p50": p50 * scale, "p95": p95 * scale, "max": peak * scale,
                  "largest_run_bytes": largest}
        for project, runs, p50, p95, peak, largest in rows
    }  # fmt: skip


def _x(side: dict[str, Any] | None, key: str = "p95") -> str:
    if not side or not side.get("runs"):
        return "-"
    value = side.get(key)
    return "inf" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def table(doc: dict[str, Any], runs: dict[str, dict[str, float]]) -> None:
    """The per-project table, then the totals."""
    print("| project | runs | run peak CPU p50 / p95 / max | needed CPU | suggested CPU "
          "| current CPU | p95 slowdown current | p95 slowdown suggested | p95 at the pool "
          "| memory current / suggested | runs' peak / largest run | failed on memory "
          "current / suggested |")  # fmt: skip
    print("|---" * 13 + "|")
    for name, entry in sorted(doc["projects"].items()):
        used = runs.get(name, {})
        objective = entry["objective"] or {}
        backtest = entry["backtest"] or {}
        suggested = entry["suggested"] or {}
        needed = entry["needed_cpu_percent"] or objective.get("needed_cpu_percent")
        current_bt, suggested_bt = backtest.get("current"), backtest.get("suggested")
        failed = (
            f"{current_bt['failed_memory']} / {suggested_bt['failed_memory']}"
            if current_bt and suggested_bt else "-"
        )  # fmt: skip
        kept = " (kept current)" if objective.get("kept_current") else ""
        print(
            f"| {name} | {used.get('runs', 0)} "
            f"| {used.get('p50', 0):.1f} / {used.get('p95', 0):.1f} / {used.get('max', 0):.1f} % "
            f"| {needed if needed is not None else '-'} % "
            f"| {suggested.get('cpu_percent', '-')} %{kept} "
            f"| {entry['current']['cpu_percent']:g} % "
            f"| {_x(current_bt)} | {_x(suggested_bt)} | {_x(entry['at_pool'])} "
            f"| {_mb(entry['current']['memory_bytes'])} / {_mb(suggested.get('memory_bytes'))} MB "
            f"| {_mb(objective.get('runs_peak_memory_bytes'))} / "
            f"{_mb(used.get('largest_run_bytes'))} MB | {failed} |"
        )
    totals = doc["backtest"]["totals"]
    print()
    print("| all runs at once (in-sample) | runs | p50 | p95 | max | slowed > 2x "
          "| failed on memory | pool CPU | pool memory |")  # fmt: skip
    print("|---" * 9 + "|")
    for side in ("current", "suggested"):
        found = totals[side]
        print(
            f"| {side} | {found['runs']} | {_x(found, 'p50')} | {_x(found)} "
            f"| {_x(found, 'max')} | {found['slowed_2x']} | {found['failed_memory']} "
            f"| {found['reserved_cpu_percent']} % | {_mb(found['reserved_memory_bytes'])} MB |"
        )
    print()
    for note in doc["notes"]:
        print("note:", note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-autotune-bench"))
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (the fastest counts)")
    parser.add_argument("--days", type=float, default=7,
                        help="days of history to simulate (7: the goal's week)")  # fmt: skip
    parser.add_argument("--also", type=float, default=22,
                        help="days of a larger store, timed too (22: 30M rows)")  # fmt: skip
    parser.add_argument("--real", default="sample_data/.devloop-watch",
                        help="a real recording timed beside them ('': none)")  # fmt: skip
    args = parser.parse_args()
    if not args.days > 0 or args.also < 0:
        parser.error("--days must be positive and --also at least 0")
    ws = store(args.dir, args.days)
    output = folder(args.dir, args.days) / "suggestions.json"
    stores = [(folder(args.dir, args.days).name, ws, output)]
    if args.also:
        stores.append((folder(args.dir, args.also).name, store(args.dir, args.also),
                       folder(args.dir, args.also) / "suggestions.json"))  # fmt: skip
    if args.real:
        stores.append(("real", Path(args.real), args.dir / "real-suggestions.json"))
    times(stores, args.repeat)
    doc = json.loads(output.read_text())
    table(doc, run_cpu(ws))


if __name__ == "__main__":
    main()
