"""Whole-process time of a report against a hand-written DuckDB query over the same files.

    python bench/report_vs_duckdb.py [--dir /tmp/devloop-bench-13] [--days 7] [--repeat 3]

Issue 13's yardstick: what a user waits for (interpreter start and imports included), on a store
fresh from ``devloop workspace simulate`` (which writes the hours' rollups, as compaction does),
side by side with the plain tool a user would otherwise use: ``python -c "import duckdb; ..."``
answering the same question over the same Parquet files. The first devloop run is the cold one
(nothing of devloop's in memory; the files in the OS cache, as for the DuckDB run beside it);
then ``--repeat`` alternating runs of each, median reported, and the ratio devloop / DuckDB.

Questions: peak-usage (per project: peak and p95 of the per-tick CPU and memory sums) and export
(per project and minute: mean CPU and memory).

Both run with compiled bytecode, as an installed package does (pip compiles it): in a session
whose environment says PYTHONDONTWRITEBYTECODE, devloop's ~100 modules would be compiled from
source at every run (~0.15 s) while duckdb's come compiled from its wheel. The children get a
bytecode cache under ``--dir`` (PYTHONPYCACHEPREFIX), filled before timing; ``--source``
measures the other way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
DEVLOOP = (
    [str(BIN / "devloop")] if (BIN / "devloop").exists() else [sys.executable, "-m", "devloop"]
)

DUCKDB = {
    "peak-usage": """
import duckdb
duckdb.sql('''
WITH t AS (SELECT ts, project, sum(cpu_cores) AS cpu, sum(rss_bytes) AS rss
           FROM read_parquet('{files}', hive_partitioning = true) GROUP BY ts, project)
SELECT project, max(cpu), quantile_cont(cpu, 0.95), max(rss), quantile_cont(rss, 0.95)
FROM t GROUP BY project ORDER BY project''').fetchall()
""",
    "export-1m": """
import duckdb
duckdb.sql('''
WITH t AS (SELECT ts, project, sum(cpu_cores) AS cpu, sum(rss_bytes) AS rss
           FROM read_parquet('{files}', hive_partitioning = true) GROUP BY ts, project)
SELECT time_bucket(INTERVAL 1 minute, ts) AS minute, project, avg(cpu), avg(rss)
FROM t GROUP BY ALL ORDER BY ALL''').fetchall()
""",
}


def devloop_argv(question: str, ws: Path) -> list[str]:
    common = ["--workspace-dir", str(ws), "--format", "json", "--output", "/dev/null"]
    if question == "peak-usage":
        return [*DEVLOOP, "workspace", "analytics", "peak-usage", *common]
    return [*DEVLOOP, "workspace", "metrics", "--interval", "1m", *common]


#: The children's environment (see the module doc; set by main).
ENV = dict(os.environ)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - started


def bytecode(cache: Path) -> None:
    """Let the children use compiled bytecode kept in ``cache``, compiled now."""
    import devloop

    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(cache)
    package = Path(devloop.__file__).parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=True, stdout=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/devloop-bench-13"))
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--source", action="store_true", help="no bytecode cache: compile devloop at every run"
    )
    parser.add_argument(
        "--store",
        type=Path,
        help="this .devloop-workspace instead of DIR/sim-DAYSd (not a "
        "symbolic link: _facts.json names the files by their real paths)",
    )
    parser.add_argument(
        "--question", choices=sorted(DUCKDB), action="append", help="only these (repeatable)"
    )
    args = parser.parse_args()
    if not args.source:
        bytecode(args.dir / "pycache")
    ws = args.store or args.dir / f"sim-{args.days:g}d" / ".devloop-workspace"
    if not ws.exists():
        started = time.perf_counter()
        subprocess.run(
            [*DEVLOOP, "workspace", "simulate", "--out", str(ws), "--days", f"{args.days:g}",
             "--projects", "4", "--agents-per-project", "4", "--interval", "1s", "--seed", "5"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"simulated {args.days:g} days in {time.perf_counter() - started:.0f} s")
    files = ws / "metrics" / "samples" / "*" / "*" / "*.parquet"
    print(f"store: {ws} ({'source' if args.source else 'compiled bytecode'}), "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(
        "| question | devloop cold | devloop warm (median) | DuckDB (median) | devloop / DuckDB |"
    )
    print("|---|---|---|---|---|")
    for question, code in DUCKDB.items():
        if args.question and question not in args.question:
            continue
        script = [sys.executable, "-c", code.format(files=files)]
        cold = timed(devloop_argv(question, ws))
        ours, theirs = [], []
        for _ in range(args.repeat):
            theirs.append(timed(script))
            ours.append(timed(devloop_argv(question, ws)))
        warm, plain = statistics.median(ours), statistics.median(theirs)
        print(f"| {question} | {cold:.2f} s | {warm:.2f} s | {plain:.2f} s | "
              f"{warm / plain:.2f}x |")  # fmt: skip
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
