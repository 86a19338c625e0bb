"""Benchmark the analytics reports against plain polars and plain pandas (issue 4).

Simulated stores of about 1M, 10M and 30M samples rows (the last: 7 days x 50 processes at
1 s) are made once under ``--dir``. Each command then runs in a fresh subprocess (so its peak
memory, ``ru_maxrss``, is its own), in the same run as the same question answered by plain
polars and by plain pandas over the same Parquet files. Times exclude interpreter start-up and
imports; "cpu s" is the CPU time (user + system, all threads) the call used, less sensitive than
wall time to other work on a shared machine; memory is the subprocess's peak RSS. With
``--repeat N`` each cell is the run with the best wall time.

``cache-build`` deletes the reports' per-hour rollups and builds them all (the one-off cost a
store pays once, or hour by hour at compaction); the commands after it run with a warm cache.

    python bench/analytics.py [--dir /tmp/devloop-bench] [--sizes 1m,10m,30m] [--repeat 1]

Needs pandas for the pandas column (``pip install pandas``); without it that column is empty.
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

SIZES = {
    # name: (days, projects, agents per project) -> rows = days * 86400 * projects * agents
    "1m": (1, 3, 4),
    "10m": (7, 4, 4),
    "30m": (7, 5, 10),
}

COMMANDS = [
    "cache-build",
    "metrics",
    "export-1m",
    "peak-usage",
    "bottlenecks",
    "efficiency",
    "health",
    "audit-memory",
    "sql",
]
#: Questions the plain baselines answer (the others have no baseline).
BASELINES = {"metrics", "export-1m", "peak-usage", "bottlenecks", "audit-memory"}


# --- the questions, three ways -------------------------------------------------------------


def run_devloop(command: str, ws: Path) -> Any:
    from devloop import analytics as a

    if command == "cache-build":  # cold: the one-off cost, like compaction's
        import shutil

        from devloop.store import write_rollups

        shutil.rmtree(ws / "metrics" / "_rollups", ignore_errors=True)
        built = write_rollups(ws / "metrics")
        with a.Store(ws) as store:  # the footer facts and the small tables' digests
            store.known()
        return built
    if command == "metrics":
        return a.workspace_metrics(ws)
    if command == "export-1m":
        return a.export_metrics(ws, interval=60)
    if command == "peak-usage":
        return a.peak_usage(ws)
    if command == "bottlenecks":
        return a.bottlenecks(ws, threshold=80)
    if command == "efficiency":
        return a.efficiency(ws)
    if command == "health":
        return a.health(ws)
    if command == "audit-memory":
        return a.audit_query(ws, "memory")
    if command == "sql":
        return a.run_sql(ws, "SELECT project, agent, max(rss_bytes) FROM samples GROUP BY ALL")
    raise ValueError(command)


def _files(ws: Path, table: str) -> list[str]:
    import warnings

    from devloop.store import live_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(p) for p in live_files(ws / "metrics", table)]


def run_polars(command: str, ws: Path) -> Any:
    import polars as pl

    samples = pl.scan_parquet(_files(ws, "samples"))
    system = pl.scan_parquet(_files(ws, "system"))
    cores = float(system.select(pl.col("cores").last()).collect().item())
    if command == "metrics":
        last = system.select(pl.col("ts").max()).collect().item()
        return (
            samples.filter(pl.col("ts") == last)
            .group_by("project")
            .agg((100 * pl.col("cpu_cores").sum() / cores).alias("cpu"), pl.col("rss_bytes").sum())
            .collect()
        )
    cols = ["ts", "project", "agent", "cpu_cores", "rss_bytes", "fds", "threads"]
    if command == "audit-memory":
        per_tick = samples.group_by("ts", "project", "agent").agg(pl.col("rss_bytes").sum())
        return (
            per_tick.group_by("project", "agent")
            .agg(
                pl.col("rss_bytes").mean().alias("avg"),
                pl.col("rss_bytes").quantile(0.95, interpolation="linear").alias("p95"),
                pl.col("rss_bytes").max().alias("max"),
            )
            .collect()
        )
    project = (
        samples.select(cols)
        .group_by("ts", "project")
        .agg(
            (100 * pl.col("cpu_cores").sum() / cores).alias("cpu"),
            pl.col("rss_bytes").sum(),
            pl.col("fds").sum(),
            pl.col("threads").sum(),
        )
    )
    if command == "export-1m":
        return (
            project.group_by(pl.col("ts").dt.truncate("1m"), "project")
            .agg(
                pl.col("cpu").mean(),
                pl.col("cpu").max().alias("cpu_max"),
                pl.col("rss_bytes").max(),
            )
            .collect()
        )
    if command == "peak-usage":
        stats = [
            pl.col("cpu").max(),
            pl.col("ts").filter(pl.col("cpu") == pl.col("cpu").max()).min().alias("at"),
            pl.col("cpu").quantile(0.95, interpolation="linear").alias("p95"),
            pl.col("rss_bytes").max(),
        ]
        frame = project.collect()
        agents = (
            samples.group_by("ts", "project", "agent")
            .agg((100 * pl.col("cpu_cores").sum() / cores).alias("cpu"), pl.col("rss_bytes").sum())
            .group_by("project", "agent")
            .agg(stats)
            .collect()
        )
        whole = frame.group_by("ts").agg(pl.col("cpu", "rss_bytes").sum()).select(stats)
        return frame.group_by("project").agg(stats), whole, agents
    if command == "bottlenecks":
        limits = (
            pl.scan_parquet(_files(ws, "limits"))
            .filter(pl.col("agent") == "")
            .select("project", "ts", "cpu_limit_percent")
            .collect()
            .sort("ts")
        )
        frame = project.collect().sort("ts").join_asof(limits, on="ts", by="project")
        flagged = (
            frame.sort("project", "ts")
            .with_columns(pl.int_range(pl.len()).over("project").alias("n"))
            .filter(100 * pl.col("cpu") / pl.col("cpu_limit_percent") >= 80)
            .with_columns((pl.col("n") - pl.int_range(pl.len()).over("project")).alias("g"))
        )
        return flagged.group_by("project", "g").agg(
            pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"), pl.len()
        )
    raise ValueError(command)


def run_pandas(command: str, ws: Path) -> Any:
    import pandas as pd
    import pyarrow.parquet as pq

    def read(table: str, columns: list[str]) -> pd.DataFrame:
        return pd.concat(
            [pq.read_table(f, columns=columns).to_pandas() for f in _files(ws, table)],
            ignore_index=True,
        )

    system = read("system", ["ts", "cores"])
    cores = float(system["cores"].iloc[-1])
    if command == "metrics":
        last = system["ts"].max()
        frame = read("samples", ["ts", "project", "cpu_cores", "rss_bytes"])
        now = frame[frame["ts"] == last]
        return now.groupby("project").agg(cpu=("cpu_cores", "sum"), rss=("rss_bytes", "sum")) * [
            100 / cores,
            1,
        ]
    if command == "audit-memory":
        frame = read("samples", ["ts", "project", "agent", "rss_bytes"])
        per_tick = frame.groupby(["ts", "project", "agent"], observed=True)["rss_bytes"].sum()
        grouped = per_tick.groupby(level=["project", "agent"])
        return pd.DataFrame(
            {"avg": grouped.mean(), "p95": grouped.quantile(0.95), "max": grouped.max()}
        )
    frame = read("samples", ["ts", "project", "agent", "cpu_cores", "rss_bytes", "fds", "threads"])
    frame["cpu"] = frame["cpu_cores"].astype("float64") * (100 / cores)
    project = (
        frame.groupby(["ts", "project"], observed=True)[["cpu", "rss_bytes"]].sum().reset_index()
    )
    if command == "export-1m":
        project["minute"] = project["ts"].dt.floor("1min")
        return project.groupby(["minute", "project"]).agg(
            cpu=("cpu", "mean"), cpu_max=("cpu", "max"), rss=("rss_bytes", "max")
        )
    if command == "peak-usage":

        def stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
            grouped = df.groupby(keys) if keys else df.assign(_k=0).groupby("_k")
            out = grouped.agg(cpu=("cpu", "max"), rss=("rss_bytes", "max"))
            out["p95"] = grouped["cpu"].quantile(0.95)
            out["at"] = df.loc[grouped["cpu"].idxmax(), "ts"].to_numpy()
            return out

        agents = frame.groupby(["ts", "project", "agent"], observed=True)[
            ["cpu", "rss_bytes"]
        ].sum()
        whole = project.groupby("ts")[["cpu", "rss_bytes"]].sum().reset_index()
        return (
            stats(project, ["project"]),
            stats(whole, []),
            stats(agents.reset_index(), ["project", "agent"]),
        )
    if command == "bottlenecks":
        limits = read("limits", ["ts", "project", "agent", "cpu_limit_percent"])
        limits = limits[limits["agent"] == ""].sort_values("ts")
        merged = pd.merge_asof(
            project.sort_values("ts"),
            limits[["ts", "project", "cpu_limit_percent"]],
            on="ts",
            by="project",
        )
        merged = merged.sort_values(["project", "ts"])
        merged["n"] = merged.groupby("project").cumcount()
        over = merged[100 * merged["cpu"] / merged["cpu_limit_percent"] >= 80].copy()
        over["g"] = over["n"] - over.groupby("project").cumcount()
        return over.groupby(["project", "g"]).agg(start=("ts", "min"), end=("ts", "max"))
    raise ValueError(command)


# --- driver ----------------------------------------------------------------------------------


def one(engine: str, command: str, ws: Path) -> None:
    """Run one command once in this process and print {seconds, maxrss_mb} as JSON."""
    import warnings

    warnings.simplefilter("ignore")
    import duckdb  # noqa: F401  - imports are not what is measured
    import polars  # noqa: F401

    if engine == "pandas":
        import pandas  # noqa: F401
    # Each engine's own modules too: devloop's reports, and the store listing the baselines use.
    import devloop.analytics  # noqa: F401
    import devloop.store.db  # noqa: F401

    run = {"devloop": run_devloop, "polars": run_polars, "pandas": run_pandas}[engine]
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    run(command, ws)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak = after.ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "maxrss_mb": peak}))


def measure(engine: str, command: str, ws: Path, repeat: int) -> dict[str, float] | None:
    best: dict[str, float] | None = None
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, __file__, "--one", engine, command, str(ws)],
            capture_output=True,
            text=True,
            env={"POLARS_MAX_THREADS": "2", "PATH": "/usr/bin:/bin"},
        )
        if done.returncode != 0:
            print(
                f"  {engine} {command} failed: {done.stderr.strip().splitlines()[-1:]}",
                file=sys.stderr,
            )
            return None
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def ensure_store(base: Path, size: str) -> tuple[Path, int]:
    from devloop.simulate import simulate

    ws = base / size / ".devloop-workspace"
    marker = ws / "rows.txt"
    if not marker.exists():
        days, projects, agents = SIZES[size]
        print(f"simulating {size}: {days} days x {projects * agents} processes...", file=sys.stderr)
        summary = simulate(
            ws, days=days, projects=projects, agents_per_project=agents, overwrite=True
        )
        marker.write_text(str(summary.rows["samples"]))
    return ws, int(marker.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-bench"))
    parser.add_argument("--sizes", default="1m,10m,30m")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", nargs=3, metavar=("ENGINE", "COMMAND", "WS"))
    args = parser.parse_args()
    if args.one:
        engine, command, ws = args.one
        one(engine, command, Path(ws))
        return
    try:
        import pandas  # noqa: F401

        engines = ["devloop", "polars", "pandas"]
    except ImportError:
        engines = ["devloop", "polars"]
    print(
        "| rows | command | devloop s | devloop cpu s | devloop MB | polars s | polars cpu s "
        "| polars MB | pandas s | pandas cpu s | pandas MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        ws, rows = ensure_store(args.dir, size)
        for command in args.commands.split(","):
            cells = []
            for engine in engines:
                if engine != "devloop" and command not in BASELINES:
                    cells += ["-", "-", "-"]
                    continue
                result = measure(engine, command, ws, args.repeat)
                cells += (
                    [
                        f"{result['seconds']:.2f}",
                        f"{result['cpu_seconds']:.2f}",
                        f"{result['maxrss_mb']:.0f}",
                    ]
                    if result
                    else ["fail", "", ""]
                )
            while len(cells) < 9:
                cells += ["-", "-", "-"]
            print(f"| {rows / 1e6:.1f}M | {command} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
