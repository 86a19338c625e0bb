"""Whole-process time of a report against a hand-written DuckDB query over the same files.

    python bench/report_vs_duckdb.py [--dir /tmp/devloop-bench-13] [--days 7] [--repeat 3]

Issue 13's yardstick: what a user waits for (interpreter start and imports included), on a store
fresh from ``devloop workspace simulate`` (which writes the hours' rollups, as compaction does),
side by side with the plain tool a user would otherwise use: ``python -c "import duckdb; ..."``
answering the same question over the same Parquet files. The first devloop run is the cold one
(nothing of devloop's in memory; the files in the OS cache, as for the DuckDB run beside it);
then ``--repeat`` alternating runs of each, median reported, and the ratio devloop / DuckDB.

Questions: peak-usage (per project: peak and p95 of the per-tick CPU and memory sums), export
(per project and minute: mean CPU and memory), efficiency (per project and for the workspace:
mean, p95 and peak of CPU and memory against the limits, ticks over them, pauses), bottlenecks
(the 20 longest runs of ticks at 80 % of a limit or more, with the agents driving each) and
health (per process life of an hour or more, the trend of memory and of open files; lives under
a minute per agent and hour; stopped samples) and runs (the launched runs and those estimated
from ticks as spans split at gaps). The hand-written queries answer each as a user
would write it: least squares where devloop fits Theil-Sen on thinned points, the limits typed in
as numbers.

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
    # per project and for the workspace, over every tick of the system table (a tick without a
    # sample is 0): mean, p95 and peak of CPU (% of the machine) and memory, ticks over the
    # limit; pauses from the events
    "efficiency": """
import duckdb
duckdb.sql('''
WITH sys AS (SELECT ts, cores FROM read_parquet('{system}', hive_partitioning = true)),
n AS (SELECT max(cores) AS cores FROM sys),
lim(project, cpu, mem) AS (VALUES {limits}),
s AS (SELECT ts, project, sum(cpu_cores) AS cpu, sum(rss_bytes) AS rss
      FROM read_parquet('{files}', hive_partitioning = true) GROUP BY ts, project),
p AS (SELECT lim.project, coalesce(s.cpu, 0) / n.cores * 100 AS cpu, coalesce(s.rss, 0) AS rss,
             lim.cpu AS cl, lim.mem AS ml
      FROM sys CROSS JOIN lim CROSS JOIN n
      LEFT JOIN s ON s.ts = sys.ts AND s.project = lim.project),
w AS (SELECT coalesce(sum(s.cpu), 0) / any_value(n.cores) * 100 AS cpu,
             coalesce(sum(s.rss), 0) AS rss,
             {pool_cpu} AS cl, {pool_mem} AS ml
      FROM sys CROSS JOIN n LEFT JOIN s ON s.ts = sys.ts GROUP BY sys.ts),
e AS (SELECT project, count(*) AS pauses FROM read_parquet('{events}', hive_partitioning = true)
      WHERE action = 'pause' GROUP BY project),
u AS (SELECT project, cpu, rss, cl, ml FROM p UNION ALL SELECT NULL, cpu, rss, cl, ml FROM w)
SELECT u.project, count(*), avg(cpu), quantile_cont(cpu, 0.95), max(cpu),
       count(*) FILTER (cpu > cl),
       avg(rss), quantile_cont(rss, 0.95), max(rss), count(*) FILTER (rss > ml), any_value(e.pauses)
FROM u LEFT JOIN e ON e.project IS NOT DISTINCT FROM u.project GROUP BY u.project ORDER BY u.project
''').fetchall()
""",
    # intervals (consecutive ticks) where a project's or the workspace's CPU or memory is at
    # 80 % of its limit or more, the 20 longest, each with its agents' shares of the usage
    "bottlenecks": """
import duckdb
duckdb.sql('''
CREATE TEMP TABLE a AS SELECT ts, project, agent, sum(cpu_cores) AS cpu, sum(rss_bytes) AS rss
FROM read_parquet('{files}', hive_partitioning = true) GROUP BY ALL''')
duckdb.sql('''
WITH n AS (SELECT max(cores) AS cores FROM read_parquet('{system}', hive_partitioning = true)),
lim(project, cpu, mem) AS (VALUES {limits}, (NULL, {pool_cpu}, {pool_mem})),
p AS (SELECT ts, project, sum(cpu) / any_value(n.cores) * 100 AS cpu, sum(rss) AS rss
      FROM a CROSS JOIN n GROUP BY ts, project
      UNION ALL SELECT ts, NULL, sum(cpu) / any_value(n.cores) * 100, sum(rss)
      FROM a CROSS JOIN n GROUP BY ts),
o AS (SELECT p.project, 'cpu' AS res, ts, p.cpu AS v, lim.cpu AS l FROM p JOIN lim
        ON lim.project IS NOT DISTINCT FROM p.project WHERE p.cpu >= 0.8 * lim.cpu
      UNION ALL SELECT p.project, 'memory', ts, p.rss, lim.mem FROM p JOIN lim
        ON lim.project IS NOT DISTINCT FROM p.project WHERE p.rss >= 0.8 * lim.mem),
g AS (SELECT *, epoch(ts) - row_number() OVER (PARTITION BY project, res ORDER BY ts) AS island
      FROM o),
iv AS (SELECT project, res, min(ts) AS start, max(ts) AS stop, count(*) AS ticks, max(v) AS peak,
              any_value(l) AS l FROM g GROUP BY project, res, island
       ORDER BY ticks DESC, start LIMIT 20),
d AS (SELECT iv.project, iv.res, iv.start, a.project || '/' || a.agent AS agent,
             sum(CASE WHEN iv.res = 'cpu' THEN a.cpu ELSE a.rss END) AS used
      FROM iv JOIN a ON a.ts BETWEEN iv.start AND iv.stop
        AND (iv.project IS NULL OR a.project = iv.project) GROUP BY ALL)
SELECT iv.*, list(d.agent || ' ' || d.used ORDER BY d.used DESC)[1:3]
FROM iv JOIN d ON d.project IS NOT DISTINCT FROM iv.project AND d.res = iv.res
  AND d.start = iv.start GROUP BY ALL ORDER BY ticks DESC, iv.start
''').fetchall()
""",
    # per process life of an hour or more: the trend of memory and of open files (least squares
    # per hour), lives under a minute per agent and hour (restart loops), stopped samples, and
    # the newest tick
    "health": """
import duckdb
duckdb.sql('''
WITH s AS (SELECT * FROM read_parquet('{files}', hive_partitioning = true)),
life AS (SELECT project, agent, pid, start_time, min(ts) AS first, max(ts) AS last,
                regr_slope(rss_bytes, epoch(ts)) * 3600 / 1048576 AS mb_per_hour,
                corr(rss_bytes, epoch(ts)) AS r_mem,
                regr_slope(fds, epoch(ts)) * 3600 AS fds_per_hour, corr(fds, epoch(ts)) AS r_fds,
                count(*) FILTER (state = 'stopped') AS stopped
         FROM s GROUP BY ALL)
SELECT * FROM life WHERE last - first >= INTERVAL 1 hour
  AND ((mb_per_hour >= 5 AND r_mem >= 0.5) OR (fds_per_hour >= 10 AND r_fds >= 0.5))
UNION ALL SELECT project, agent, NULL, NULL, date_trunc('hour', first), NULL, count(*), NULL,
                 NULL, NULL, NULL
  FROM life WHERE last - first < INTERVAL 60 second GROUP BY ALL HAVING count(*) >= 30
UNION ALL SELECT project, agent, pid, start_time, first, last, NULL, NULL, NULL, NULL, stopped
  FROM life WHERE stopped >= 300
''').fetchall()
duckdb.sql("SELECT max(ts) FROM read_parquet('{system}', hive_partitioning = true)").fetchall()
""",
    # every run: the launched ones (the runs table) and, for the processes no launched run
    # owns, each agent's spans of ticks split at gaps of more than two ticks (1 s ticks)
    "runs": """
import duckdb
duckdb.sql('''
WITH launched AS (SELECT DISTINCT host, pid, start_time
                  FROM read_parquet('{processes}', hive_partitioning = true)
                  WHERE run_id IS NOT NULL),
t AS (SELECT s.host, s.project, s.agent, s.ts, sum(s.cpu_cores) AS cores,
             sum(s.rss_bytes) AS rss
      FROM read_parquet('{files}', hive_partitioning = true) s ANTI JOIN launched l
        ON l.host = s.host AND l.pid = s.pid AND l.start_time = s.start_time
      GROUP BY ALL),
g AS (SELECT *, sum(CASE WHEN gap <= 2 THEN 0 ELSE 1 END)
                OVER (PARTITION BY host, project, agent ORDER BY ts) AS span
      FROM (SELECT *, epoch(ts) - lag(epoch(ts)) OVER (PARTITION BY host, project, agent
                                                       ORDER BY ts) AS gap FROM t)),
e AS (SELECT host, project, agent, min(ts) - INTERVAL 1 second AS started, max(ts) AS ended,
             sum(cores) AS cpu_seconds, max(cores) AS peak_cores, max(rss) AS peak_rss
      FROM g GROUP BY host, project, agent, span)
SELECT host, project, agent, started, ended, cpu_seconds, peak_cores, peak_rss FROM e
UNION ALL
SELECT host, project, agent, started, ended, cpu_user_seconds + cpu_system_seconds,
       peak_cores, peak_rss_bytes FROM read_parquet('{runs}', hive_partitioning = true)
ORDER BY started''').fetchall()
""",
}


def devloop_argv(question: str, ws: Path) -> list[str]:
    common = ["--workspace-dir", str(ws), "--format", "json", "--output", "/dev/null"]
    if question == "export-1m":
        return [*DEVLOOP, "workspace", "metrics", "--interval", "1m", *common]
    if question == "health":
        return [*DEVLOOP, "workspace", "health", *common]
    return [*DEVLOOP, "workspace", "analytics", question, *common]


def limits(ws: Path) -> dict[str, str]:
    """The limits in force, as a user would copy them into the query (the store's workspace has
    no time-of-day profile)."""
    from devloop.config import load_workspace
    from devloop.config.allocation import allocate

    allocation = allocate(load_workspace(ws))
    rows = ", ".join(
        f"('{name}', {share.cpu!r}, {share.memory_bytes})"
        for name, share in allocation.projects.items()
    )
    pool = allocation.pool
    return {"limits": rows, "pool_cpu": repr(pool.cpu), "pool_mem": str(pool.memory_bytes)}


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
    tables = {
        name if name != "samples" else "files": str(ws / "metrics" / name / "*" / "*" / "*.parquet")
        for name in ("samples", "system", "events", "processes", "runs")
    }
    values = {**tables, **limits(ws)}
    print(f"store: {ws} ({'source' if args.source else 'compiled bytecode'}), "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(
        "| question | devloop cold | devloop warm (median) | DuckDB (median) | devloop / DuckDB |"
    )
    print("|---|---|---|---|---|")
    for question, code in DUCKDB.items():
        if args.question and question not in args.question:
            continue
        script = [sys.executable, "-c", code.format(**values)]
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
