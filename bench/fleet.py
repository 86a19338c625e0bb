"""Fleet benchmark (issue 16): ship throughput to a local S3-compatible server, what shipping
adds to the collector, and reports over the fleet against a local copy.

    python bench/fleet.py [--days 1] [--jobs 8] [--keep DIR] [--read-days 1] [--projects 3]
    python bench/fleet.py --engine spark [--spark-hosts 3] [--spark-hours 6] [--repeat 2]

The issue's size, 3 hosts x 7 days of 4 projects (29M samples rows): ``--read-days 7
--projects 4`` and ``--engine spark --spark-hours 168 --projects 4 --repeat 1``.

Simulates ``--days`` of the default workspace (12 processes at 1 s), compacts it, starts moto's
S3 server on 127.0.0.1 (the ``fleet`` extra) and times, in one run:

* a full ship of every hour to ``s3://bench/fleet`` (hours/s, MB/s), and to a local folder;
* a second ship that finds everything published (the cost of a no-op, what every hourly
  compaction child pays when there is nothing new);
* the hourly case: a child process (as the collector's compaction child) shipping the one hour
  the fleet lacks, its CPU time from ``getrusage``, as a share of a core over the hour;
* reading (``--read-days``, 0 to skip): three simulated hosts shipped to the server, then each
  report as a whole ``devloop`` process over ``--store s3://…`` with a cold mirror (everything
  fetched, each host's rollups combined) and a warm one (one listing), against the same report
  over a local copy of the same files (one store holding the three hosts, no rollups: read
  from its rows) and over that copy with its rollups (as a machine's own store has them), as
  ratios (goal: at most 3x). The outputs are asserted equal.

``--engine spark`` times the Spark engine instead (nothing above): peak-usage, the runs summary,
the 1m export, bottlenecks, efficiency and autotune's run demand on Spark ``--spark-master``
(default ``local[2]``) against DuckDB on the same store (its rows: no rollups, as Spark reads
it), at 1x, 2x and 4x the data (``--spark-hosts`` simulated hosts of ``--spark-hours`` each,
then copies of them under other host names: the fleet grows by hosts), both in-process with a
warm engine (the Spark session and its JIT warmed on the 1x data; the session's start is
printed apart), and from a straight-line fit of each engine's time against the rows, the
fleet size at which Spark would overtake DuckDB on this machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devloop.simulate import simulate
from devloop.store import compact
from devloop.store.ship import local_hours, parse_target, ship

START = datetime(2026, 1, 5, tzinfo=UTC)
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "moto's server did not start (pip install -e '.[fleet]')"
                ) from None
            time.sleep(0.05)


def _bucket(endpoint: str, name: str) -> None:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                           region="us-east-1", allow_bucket_creation=True)  # fmt: skip
    fs.create_dir(name)


def _child_cpu(argv: list[str]) -> tuple[float, float]:
    """Run ``argv`` to its end; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="Keep the simulated workspace here.")
    parser.add_argument("--read-days", type=float, default=1.0, help="Days per host to read.")
    parser.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-hosts", type=int, default=3)
    parser.add_argument("--spark-hours", type=float, default=6.0)
    parser.add_argument(
        "--projects", type=int, default=3,
        help="Projects per simulated host (4 agents each, one process per agent at 1 s).",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=2, help="Spark part: the best of this many runs."
    )
    args = parser.parse_args()
    if args.engine == "spark":
        _spark(args.spark_master, args.spark_hosts, args.spark_hours, args.projects, args.repeat)
        return
    os.environ.update(CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    work = Path(tempfile.mkdtemp(prefix="devloop-fleet-"))
    out = args.keep or work / "sim" / ".devloop-workspace"
    try:
        began = time.perf_counter()
        summary = simulate(out, days=args.days, seed=0, overwrite=True)
        compact(out / "metrics")
        root = out / "metrics"
        ready, waiting = local_hours(root, "sim-host")
        size = sum(hour.bytes for hour in ready)
        files = sum(len(hour.files) for hour in ready)
        print(f"store: {args.days:g} days simulated and compacted in "
              f"{time.perf_counter() - began:.1f}s; {summary.rows['samples']:,} samples rows; "
              f"{len(ready)} hours to ship ({len(waiting)} waiting), {files} files, "
              f"{size / 1e6:.2f} MB")  # fmt: skip
        server, endpoint = _start_server(work / "moto.log")
        try:
            _bucket(endpoint, "bench")
            target = parse_target("s3://bench/fleet", endpoint)
            for jobs in sorted({1, args.jobs}):
                where = parse_target(f"s3://bench/jobs-{jobs}", endpoint)
                report = ship(root, where, jobs=jobs)
                hours, mb, seconds = len(report.shipped), report.bytes / 1e6, report.seconds
                print(f"ship to S3 (moto on 127.0.0.1, --jobs {jobs}): {hours} hours, "
                      f"{mb:.2f} MB in {seconds:.2f}s: {hours / seconds:.1f} hours/s, "
                      f"{mb / seconds:.2f} MB/s, {report.files / seconds:.0f} files/s")  # fmt: skip
            target = parse_target(f"s3://bench/jobs-{args.jobs}", endpoint)
            again = ship(root, target, jobs=args.jobs)
            print(f"second ship (all {again.unchanged} hours published): {again.seconds:.2f}s")
            local = ship(root, f"file://{work / 'fleet'}", jobs=args.jobs)
            print(f"ship to a local folder: {len(local.shipped) / local.seconds:.1f} hours/s, "
                  f"{local.bytes / 1e6 / local.seconds:.2f} MB/s")  # fmt: skip

            # The hourly case: the fleet has every hour but the last; a child ships that one.
            last = ready[-1].partition
            hourly = parse_target("s3://bench/hourly", endpoint)
            ship(root, hourly, now=last.start)
            code = (
                "import sys; from datetime import datetime; from devloop.store.ship import "
                "parse_target, ship; a = sys.argv; r = ship(a[1], parse_target(a[2], a[3]), "
                "now=datetime.fromisoformat(a[4])); assert len(r.shipped) == int(a[5])"
            )
            now = (last.end + timedelta(minutes=1)).isoformat()
            argv = [sys.executable, "-c", code, str(root), hourly.uri, endpoint, now]
            wall, cpu = _child_cpu([*argv, "1"])
            idle_wall, idle_cpu = _child_cpu([*argv, "0"])  # nothing left: a no-op ship
            baseline = _child_cpu([sys.executable, "-c", "import pyarrow.fs, devloop.store.ship"])
            added = 100 * (cpu - baseline[1]) / 3600
            print(f"hourly ship in a child (1 hour, {ready[-1].bytes / 1e6:.2f} MB): {wall:.2f}s "
                  f"wall, {cpu:.2f}s CPU = {100 * cpu / 3600:.3f} % of a core over the hour; "
                  f"of which interpreter + pyarrow import {baseline[1]:.2f}s (the compaction "
                  f"child pays it anyway): {added:.3f} % added")  # fmt: skip
            print(f"  (a child with nothing to ship: {idle_cpu:.2f}s CPU, {idle_wall:.2f}s wall)")
            if args.read_days > 0:
                _read(work, endpoint, args.read_days, args.projects)
        finally:
            server.kill()
            server.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: The reports the read part times (whole processes), JSON output.
READ_REPORTS = {
    "peak-usage": ["analytics", "peak-usage"],
    "bottlenecks": ["analytics", "bottlenecks"],
    "efficiency": ["analytics", "efficiency"],
    "runs": ["analytics", "runs"],
    "runs --summary": ["analytics", "runs", "--summary"],
    "export 1m": ["metrics", "--interval", "1m"],
    "autotune": ["autotune"],
}


def _comparable(output: bytes) -> bytes:
    """A report's JSON without what differs run to run (autotune's ``generated_at``)."""
    import json

    data = json.loads(output)
    if isinstance(data, dict):
        data.pop("generated_at", None)
    return json.dumps(data, sort_keys=True).encode()


def _read(work: Path, endpoint: str, days: float, projects: int) -> None:
    """Three hosts shipped to ``s3://bench/read``; each report over it (cold and warm mirror)
    against the same report over one local store holding the same files."""
    import pyarrow as pa

    from devloop.store.files import read_rows, write_table
    from devloop.store.layout import data_files, iter_partitions

    hosts = ("host-a", "host-b", "host-c")
    merged = work / "merged" / ".devloop-workspace"
    target = parse_target("s3://bench/read", endpoint)
    began = time.perf_counter()
    rows = shipped = 0
    for seed, host in enumerate(hosts, start=1):
        out = work / host / ".devloop-workspace"
        rows += simulate(out, days=days, seed=seed, projects=projects).rows["samples"]
        root = out / "metrics"
        for table in ("samples", "system", "processes", "events", "limits", "runs"):
            for _, directory in iter_partitions(root, table):
                for path in data_files(directory):
                    data = read_rows(path, table)
                    index = data.schema.get_field_index("host")
                    field = data.schema.field("host")
                    path.unlink()
                    write_table(root, table, data.set_column(
                        index, field, pa.array([host] * data.num_rows, field.type)))  # fmt: skip
        shutil.rmtree(root / "_rollups", ignore_errors=True)
        (root / "_facts.json").unlink(missing_ok=True)
        compact(root)
        shipped += ship(root, target).bytes
        for table in ("samples", "system", "processes", "events", "limits", "runs"):
            for _, directory in iter_partitions(root, table):
                into = merged / "metrics" / directory.relative_to(root)
                into.mkdir(parents=True, exist_ok=True)
                for path in data_files(directory):
                    shutil.copy2(path, into / f"{host}--{path.name}")
    print(f"read: {len(hosts)} hosts x {days:g} days ({rows:,} samples rows) simulated, "
          f"compacted and shipped ({shipped / 1e6:.0f} MB with the rollups) in "
          f"{time.perf_counter() - began:.0f}s")  # fmt: skip
    # the same local copy with its rollups, as a machine's own store has them
    rolled = work / "rolled" / ".devloop-workspace"
    began = time.perf_counter()
    shutil.copytree(merged, rolled)
    from devloop.store import write_rollups

    write_rollups(rolled / "metrics")
    print(f"local copy with rollups made in {time.perf_counter() - began:.0f}s")
    # What a cold read cannot beat: the download itself, devloop's sync against a plain copy of
    # the same objects through pyarrow (no manifest, no checks), from the same server.
    import pyarrow.fs as pafs

    from devloop.store.fleet import sync

    began = time.perf_counter()
    mirror = sync(target, cache=work / "sync-only")
    synced = time.perf_counter() - began
    fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                           region="us-east-1")  # fmt: skip
    began = time.perf_counter()
    pafs.copy_files("bench/read", str(work / "plain-copy"), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem(), use_threads=True)  # fmt: skip
    plain = time.perf_counter() - began
    size = sum(p.stat().st_size for p in (work / "plain-copy").rglob("*") if p.is_file())
    print(f"cold download: devloop's sync {mirror.bytes / 1e6:.0f} MB in {synced:.1f} s "
          f"({mirror.bytes / 1e6 / synced:.1f} MB/s, {mirror.files} files, the rollups combined "
          f"included); a plain pyarrow copy of the prefix {size / 1e6:.0f} MB in {plain:.1f} s "
          f"({size / 1e6 / plain:.1f} MB/s)")  # fmt: skip
    devloop = [sys.executable, "-m", "devloop", "workspace"]
    store = ["--store", target.uri, "--endpoint-url", endpoint]
    env = {**os.environ, "DEVLOOP_FLEET_CACHE": str(work / "cache")}

    def timed(argv: list[str]) -> tuple[float, bytes]:
        began = time.perf_counter()
        done = subprocess.run(argv, check=True, capture_output=True, env=env)
        return time.perf_counter() - began, done.stdout

    print("| report | local copy | with rollups | S3 cold | S3 warm | cold / local | "
          "warm / local | warm / with rollups |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    # autotune needs a configuration: the first host's workspace, over the store read
    configured = work / hosts[0] / ".devloop-workspace"
    for name, command in READ_REPORTS.items():
        shutil.rmtree(work / "cache", ignore_errors=True)
        argv = [*devloop, *command, "--format", "json"]
        if command[0] == "autotune":
            argv += ["--workspace-dir", str(configured)]
            local, expected = timed([*argv, "--store", str(merged)])
            with_rollups, got_rolled = timed([*argv, "--store", str(rolled)])
        else:
            local, expected = timed([*argv, "--workspace-dir", str(merged)])
            with_rollups, got_rolled = timed([*argv, "--workspace-dir", str(rolled)])
        cold, got_cold = timed([*argv, *store])
        warm, got_warm = timed([*argv, *store])
        same = {_comparable(out) for out in (expected, got_rolled, got_cold, got_warm)}
        assert len(same) == 1, f"{name}: the fleet's report differs"
        print(f"| {name} | {local:.2f} s | {with_rollups:.2f} s | {cold:.2f} s | {warm:.2f} s | "
              f"{cold / local:.2f}x | {warm / local:.2f}x | "
              f"{warm / with_rollups:.2f}x |")  # fmt: skip


def _spark(master: str, hosts: int, hours: float, projects: int, repeat: int) -> None:
    """Spark against DuckDB on one store of ``hosts`` x ``hours``, then 2x and 4x the hosts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from devloop.analytics import (
        bottlenecks,
        efficiency,
        export_metrics,
        peak_usage,
        records,
        run_summary,
    )
    from devloop.analytics.spark import (
        bottlenecks_spark,
        efficiency_spark,
        export_spark,
        peak_usage_spark,
        run_demand_spark,
        run_summary_spark,
        spark_session,
    )
    from devloop.store.layout import data_files, iter_partitions
    from devloop.tune.replay import demand_from_rows, demand_from_store

    tables = ("samples", "system", "processes", "events", "limits", "runs")
    work = Path(tempfile.mkdtemp(prefix="devloop-spark-"))
    try:
        began = time.perf_counter()
        sources = []
        for seed in range(hosts):
            out = work / f"sim-{seed}" / ".devloop-workspace"
            simulate(out, hours=hours, seed=seed + 1, projects=projects)
            sources.append(out / "metrics")
        print(f"spark: {hosts} hosts x {hours:g} h simulated in "
              f"{time.perf_counter() - began:.0f}s")  # fmt: skip

        def store(copies: int) -> tuple[Path, int]:
            """One store (a mirror's layout) of ``copies`` x the hosts; its samples rows."""
            workspace = work / f"x{copies}" / ".devloop-workspace"
            rows = 0
            for copy in range(copies):
                for index, root in enumerate(sources):
                    host = f"host-{copy}-{index}"
                    for table in tables:
                        for _, directory in iter_partitions(root, table):
                            into = workspace / "metrics" / directory.relative_to(root)
                            into.mkdir(parents=True, exist_ok=True)
                            for path in data_files(directory):
                                data = pq.read_table(path)
                                at = data.schema.get_field_index("host")
                                named = pa.array([host] * data.num_rows, data.schema.field(at).type)
                                data = data.set_column(at, data.schema.field(at), named)
                                pq.write_table(data, into / f"{host}--{path.name}")
                                rows += data.num_rows if table == "samples" else 0
            return workspace, rows

        began = time.perf_counter()
        spark = spark_session(master)
        print(f"Spark session ({master}) started in {time.perf_counter() - began:.1f}s "
              "(a whole `--engine spark` process pays it once)")  # fmt: skip
        reports = {
            "peak-usage": (
                lambda ws: peak_usage(ws).to_json(),
                lambda ws: peak_usage_spark(spark, ws).to_json(),
            ),
            "runs --summary": (
                lambda ws: records(run_summary(ws)),
                lambda ws: records(run_summary_spark(spark, ws)),
            ),
            "export 1m": (
                lambda ws: export_metrics(ws).to_json(),
                lambda ws: export_spark(spark, ws).to_json(),
            ),
            "bottlenecks": (
                lambda ws: bottlenecks(ws).to_json(),
                lambda ws: bottlenecks_spark(spark, ws).to_json(),
            ),
            "efficiency": (
                lambda ws: efficiency(ws).to_json(),
                lambda ws: efficiency_spark(spark, ws).to_json(),
            ),
            "autotune's run demand": (
                lambda ws: demand_from_store(ws),
                lambda ws: (lambda r: demand_from_rows(r.found, r.series, r.machines, r.interval))(
                    run_demand_spark(spark, ws)
                ),
            ),
        }

        def best(run: object, workspace: Path) -> float:
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                run(workspace)  # type: ignore[operator]
                times.append(time.perf_counter() - began)
            return min(times)

        figures: dict[str, list[tuple[int, float, float]]] = {name: [] for name in reports}
        print("| data | samples rows | report | DuckDB | Spark | Spark / DuckDB |")
        print("|---|---|---|---|---|---|")
        for copies in (1, 2, 4):
            workspace, rows = store(copies)
            for name, (duck, spk) in reports.items():
                if copies == 1:
                    spk(workspace)  # warm the JIT and the planner
                d, k = best(duck, workspace), best(spk, workspace)
                figures[name].append((rows, d, k))
                print(f"| {copies}x ({copies * hosts} hosts) | {rows:,} | {name} | {d:.2f} s | "
                      f"{k:.2f} s | {k / d:.1f}x |")  # fmt: skip
        spark.stop()
        print()
        for name, points in figures.items():
            (dd, da), (kd, ka) = _fit(points, 1), _fit(points, 2)
            per_host = points[0][0] / hosts
            if kd >= dd:
                verdict = "never on this machine (Spark's time per row is not lower)"
            else:
                rows_at = (ka - da) / (dd - kd)
                verdict = f"from ~{rows_at:,.0f} samples rows (~{rows_at / per_host:,.0f} hosts)"
            print(f"{name}: DuckDB {da:.2f} s + {dd * 1e6:.3f} s per M rows, Spark {ka:.2f} s + "
                  f"{kd * 1e6:.3f} s per M rows: Spark overtakes {verdict}")  # fmt: skip
        print(
            f"(in-process, warm; hosts of {per_host:,.0f} samples rows ({hours:g} h); a "
            "straight-line fit of 3 points; one machine, the same cores for both engines)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fit(points: list[tuple[int, float, float]], column: int) -> tuple[float, float]:
    """Least squares ``time = a + b * rows`` of ``points[column]``: (b, a)."""
    xs = [p[0] for p in points]
    ys = [p[column] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return b, my - b * mx


if __name__ == "__main__":
    main()
