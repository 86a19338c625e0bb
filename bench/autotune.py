"""Benchmark autotune (issue 6): the 7-day goal and the time at 30M rows.

* ``7d``: the simulated 7-day workspace (3 projects x 4 agents at 1 s, 7.3M samples rows, the
  guide's default 60 % / 2GB pool split by weight). Goal: suggested limits cut slack by at
  least half against those default limits, while the backtested would-pause share stays
  <= 1 % of ticks. Printed for the default parameters and a few CPU percentiles, so the
  trade-off between slack and pauses is visible.
* ``30m``: 7 days x 50 processes at 1 s (30.2M rows). Goal: autotune with its backtest <= 10 s.

Each timed run is a fresh subprocess (seconds for the call, imports excluded; its peak RSS);
the fastest of ``--repeat`` runs counts (the machine is shared).
The baseline is plain polars answering the simplest version of the question over the same
files: per-tick sums per project and agent, then p95 CPU and max memory (no decay, no
censoring, no backtest). The per-hour rollups are written first (what compaction does), and
their one-off build time is printed too (``--keep-rollups`` reuses the rollups already there).
Autotune's own per-hour bins cache (``_cache/tune``) is deleted first: the first run builds it
(printed as the cold run), the timed runs read it.

    python bench/autotune.py [--dir /tmp/devloop-autotune-bench] [--sizes 7d,30m] [--repeat 3]
                             [--keep-rollups]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIZES = {"7d": (7, 3, 4), "30m": (7, 5, 10)}  # days, projects, agents per project


def _store(base: Path, size: str) -> Path:
    from devloop.simulate import simulate

    ws = base / size / ".devloop-workspace"
    if not (ws / "workspace.json").is_file():
        days, projects, agents = SIZES[size]
        started = time.perf_counter()
        summary = simulate(ws, days=days, projects=projects, agents_per_project=agents)
        print(f"simulated {size}: {summary.rows['samples']:,} samples rows in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return ws


def child(kind: str, ws: str, percentile: float) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    started = time.perf_counter()
    out: dict[str, Any] = {}
    if kind in ("cache", "cache-keep"):
        import shutil

        from devloop.store import write_rollups

        root = Path(ws) / "metrics"
        if kind == "cache":
            shutil.rmtree(root / "_rollups", ignore_errors=True)
        write_rollups(root)
    elif kind == "autotune":
        from devloop.tune import TuneParameters, autotune

        result = autotune(ws, params=TuneParameters(cpu_percentile=percentile)).to_json()
        out = {"totals": result["backtest"]["totals"], "pool": result["pool"],
               "projects": {n: p["suggested"] for n, p in result["projects"].items()}}  # fmt: skip
    elif kind == "polars":
        import polars as pl

        files = [str(p) for p in (Path(ws) / "metrics" / "samples").glob("date=*/hour=*/*.parquet")]
        frame = pl.scan_parquet(files).select("ts", "project", "agent", "cpu_cores", "rss_bytes")
        for keys in (["project"], ["project", "agent"]):
            sums = frame.group_by(["ts", *keys]).agg(pl.col("cpu_cores", "rss_bytes").sum())
            sums.group_by(keys).agg(
                (pl.col("cpu_cores").quantile(0.95) * 50).alias("cpu_p95"),
                pl.col("rss_bytes").max(),
            ).collect()
    out["seconds"] = time.perf_counter() - started
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _run(kind: str, ws: Path, percentile: float = 95.0) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(ws), str(percentile)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _goal(totals: dict[str, Any]) -> tuple[str, bool]:
    cur, sug = totals["current"], totals["suggested"]
    cpu_cut = 1 - sug["cpu_slack_avg_percent"] / cur["cpu_slack_avg_percent"]
    mem_cut = 1 - sug["memory_slack_avg_bytes"] / cur["memory_slack_avg_bytes"]
    pause = sug["would_pause_percent"]
    met = cpu_cut >= 0.5 and mem_cut >= 0.5 and pause <= 1.0
    text = (
        f"| {cur['would_pause_percent']:.2f} % | {pause:.2f} % "
        f"| {cur['cpu_slack_percent']:.1f} % ({cur['cpu_slack_avg_percent']:.1f} pts) "
        f"| {sug['cpu_slack_percent']:.1f} % ({sug['cpu_slack_avg_percent']:.1f} pts) "
        f"| {cpu_cut:+.0%} "
        f"| {cur['memory_slack_percent']:.1f} % ({cur['memory_slack_avg_bytes'] / 2**20:.0f} MB) "
        f"| {sug['memory_slack_percent']:.1f} % ({sug['memory_slack_avg_bytes'] / 2**20:.0f} MB) "
        f"| {mem_cut:+.0%} | {'met' if met else 'not met'} |"
    )
    return text, met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-autotune-bench"))
    parser.add_argument("--sizes", default="7d,30m")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the fastest counts)")
    parser.add_argument("--keep-rollups", action="store_true", help="reuse the rollups there")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "WS", "PERCENTILE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], float(args.child[2]))
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        ws = _store(args.dir, size)
        cache = _run("cache-keep" if args.keep_rollups else "cache", ws)
        print(f"\n### {size}: {ws}\n\nrollup cache, one-off build: {cache['seconds']:.2f} s, "
              f"{cache['rss_mb']:.0f} MB\n")  # fmt: skip
        print("| run | seconds | peak MB |\n|---|---|---|")
        cold = _run("autotune", ws)
        print(f"| autotune + backtest, bins cache cold (builds it) | {cold['seconds']:.2f} | "
              f"{cold['rss_mb']:.0f} |")  # fmt: skip
        runs = [_run("autotune", ws) for _ in range(max(1, args.repeat))]
        timed = min(runs, key=lambda run: run["seconds"])
        baseline = min((_run("polars", ws) for _ in range(max(1, args.repeat))),
                       key=lambda run: run["seconds"])  # fmt: skip
        every = ", ".join(f"{run['seconds']:.2f}" for run in runs)
        print(f"| autotune, every warm run | {every} | |")
        print(f"| autotune + backtest (p95), bins cache warm | {timed['seconds']:.2f} | "
              f"{timed['rss_mb']:.0f} |")  # fmt: skip
        print(f"| plain polars p95/max (no backtest) | {baseline['seconds']:.2f} | "
              f"{baseline['rss_mb']:.0f} |")  # fmt: skip
        if size != "7d":
            continue
        print(
            "\n| CPU percentile | would pause, current | would pause, suggested "
            "| CPU slack, current | CPU slack, suggested | CPU slack cut "
            "| memory slack, current | memory slack, suggested | memory slack cut | goal |\n"
            + "|---" * 10
            + "|"
        )
        for percentile in (95.0, 99.0, 99.9):
            run = timed if percentile == 95.0 else _run("autotune", ws, percentile)
            text, _ = _goal(run["totals"])
            print(f"| p{percentile:g} {text}")
        print("\nsuggested (p95):", json.dumps(timed["projects"]))
        print("pool:", json.dumps(timed["pool"]))


if __name__ == "__main__":
    main()
