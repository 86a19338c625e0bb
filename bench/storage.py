"""Storage benchmark: a realistic synthetic hour (or more) through StoreWriter, then compaction.

    python bench/storage.py [--hours 1] [--processes 200] [--jitter-ms 0] [--keep DIR]
    python bench/storage.py --store sample_data/.devloop-workspace/metrics   # the real recording
    python bench/storage.py --simulate --hours 24                            # simulated data

Models a workspace of mostly idle agents sampled every second: ~85% of processes sleep (cpu 0,
an occasional 10 ms wake-up, memory that moves a few pages now and then), the rest alternate
busy bursts and idle spells; test runners spawn short-lived workers (new series). ``ts`` is the
tick's time on the sampling grid; ``--jitter-ms`` adds per-tick jitter to show what unaligned
timestamps cost. Prints the spool cost per row (append, and the per-tick fdatasync separately),
then bytes per row per table and per samples column after compaction.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from devloop.store import StoreWriter, compact, store_info

Row = tuple[Any, ...]
START = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
PROJECTS = [f"project-{name}" for name in "alpha beta gamma delta epsilon zeta eta theta".split()]
AGENTS = {
    "linter": "ruff",
    "formatter": "black",
    "test-runner": "pytest",
    "type-checker": "mypy",
    "watcher": "node",
}


@dataclass
class Proc:
    project: str
    agent: str
    pid: int
    start_us: int
    ppid: int
    name: str
    busy_share: float  # fraction of time in busy bursts
    busy: bool = False
    cpu_ticks: int = 0  # cumulative CPU in 0.01 s clock ticks
    rss: int = 0
    fds: int = 12
    threads: int = 1
    read_bytes: int = 0
    write_bytes: int = 0
    end_tick: int | None = None


class Workload:
    def __init__(self, processes: int, seed: int) -> None:
        self.random = random.Random(seed)
        self.next_pid = 2000
        self.procs: list[Proc] = []
        while len(self.procs) < processes:
            self.procs.append(self._spawn(0, worker=len(self.procs) < processes // 20))

    def _spawn(self, tick: int, worker: bool) -> Proc:
        rnd = self.random
        project = rnd.choice(PROJECTS)
        agent = "test-runner" if worker else rnd.choice(list(AGENTS))
        self.next_pid += rnd.randint(1, 40)
        start_us = int((START.timestamp() + tick) * 1e6) - rnd.randint(0, 10**10)
        busy_share = 0.5 if worker else (0.25 if rnd.random() < 0.15 else 0.0)
        proc = Proc(
            project,
            agent,
            self.next_pid,
            start_us,
            1000 + PROJECTS.index(project),
            AGENTS[agent],
            busy_share,
            cpu_ticks=rnd.randint(0, 50_000),
            rss=rnd.randint(20_000, 400_000) * 4096,
            fds=rnd.randint(8, 60),
            threads=rnd.choice([1, 1, 2, 4, 8]),
            read_bytes=rnd.randint(0, 10**9),
            write_bytes=rnd.randint(0, 10**8),
            end_tick=tick + rnd.randint(30, 180) if worker else None,
        )
        return proc

    def tick(self, tick: int, ts_us: int, host: str) -> tuple[list[Row], list[Row]]:
        """Sample rows and first-seen process rows for one tick."""
        rnd = self.random
        new: list[Proc] = []
        for index, proc in enumerate(self.procs):
            if proc.end_tick is not None and tick >= proc.end_tick:
                self.procs[index] = self._spawn(tick, worker=True)
                new.append(self.procs[index])
        if tick == 0:
            new = list(self.procs)
        if rnd.random() < 0.02:  # a test run starts a worker
            worker = self._spawn(tick, worker=True)
            victim = rnd.randrange(len(self.procs))
            if self.procs[victim].end_tick is not None:
                self.procs[victim] = worker
                new.append(worker)
        rows: list[Row] = []
        for proc in self.procs:
            if proc.busy_share:
                if rnd.random() < (0.05 if proc.busy else 0.05 * proc.busy_share):
                    proc.busy = not proc.busy
            used = 0
            if proc.busy:
                used = rnd.randint(30, 100)
                proc.rss += rnd.randint(-64, 64) * 4096
                proc.read_bytes += rnd.randint(0, 400) * 4096
                proc.write_bytes += rnd.randint(0, 40) * 4096
            elif rnd.random() < 0.03:  # a timer wake-up
                used = 1
            if not proc.busy and rnd.random() < 0.01:
                proc.rss += rnd.randint(-4, 8) * 4096
            proc.cpu_ticks += used
            rows.append(
                (
                    ts_us, host, proc.project, proc.agent, proc.pid, proc.start_us, proc.ppid,
                    proc.name, used / 100, proc.cpu_ticks / 100, proc.rss, proc.fds,
                    proc.threads, proc.read_bytes, proc.write_bytes,
                    "running" if used > 50 else "sleeping",
                )
            )  # fmt: skip
        processes = [
            (
                ts_us, host, p.pid, p.start_us, p.project, p.agent, p.ppid, p.name,
                f"{p.name} --watch /home/dev/src/{p.project}", f"/home/dev/src/{p.project}", "dev",
            )
            for p in new
        ]  # fmt: skip
        return rows, processes


class FakeClock:
    """Advances with the simulated ticks, so segments roll every 60 simulated seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(hours: float, processes: int, jitter_ms: float, root: Path) -> None:
    host = "devbox"
    workload = Workload(processes, seed=7)
    clock = FakeClock()
    writer = StoreWriter(root, host=host, segment_seconds=60, clock=clock)
    rnd = random.Random(11)
    ticks = int(hours * 3600)
    append_seconds = flush_seconds = 0.0
    sample_rows = appended_rows = 0
    roll_seconds = 0.0
    base_us = int(START.timestamp() * 1e6)
    mem_total = 32 * 1024**3
    for tick in range(ticks):
        ts_us = base_us + tick * 1_000_000 + int(rnd.uniform(0, jitter_ms) * 1000)
        rows, new = workload.tick(tick, ts_us, host)
        busy = sum(row[8] for row in rows)
        system = [(ts_us, host, 8, busy + 0.3, mem_total, 9 * 1024**3, 23 * 1024**3)]
        clock.now = float(tick)
        rolls = writer.segments_converted
        started = time.perf_counter()
        writer.append("samples", rows)
        middle = time.perf_counter()
        writer.append("system", system)
        writer.append("processes", new)
        before_flush = time.perf_counter()
        writer.flush()
        done = time.perf_counter()
        if writer.segments_converted != rolls:  # this tick closed a segment: count it apart
            roll_seconds += done - started
        else:
            flush_seconds += done - before_flush
            append_seconds += middle - started
            appended_rows += len(rows)
        sample_rows += len(rows)
    started = time.perf_counter()
    writer.close()
    roll_seconds += time.perf_counter() - started
    segments = writer.segments_converted
    print(f"simulated {hours:g} h, {processes} processes at 1 s: {sample_rows} sample rows")
    print(f"spool append (samples): {append_seconds / appended_rows * 1e6:.2f} us/row")
    print(f"spool fdatasync per tick: {flush_seconds / max(1, ticks - segments) * 1e3:.3f} ms")
    print(f"segment roll-over to Parquet: {roll_seconds / max(1, segments) * 1e3:.1f} ms each")

    started = time.perf_counter()
    report = compact(root, now=START + timedelta(hours=hours + 1))
    elapsed = time.perf_counter() - started
    print(
        f"compaction: {report.files_in} files -> {report.partitions} in {elapsed:.2f} s "
        f"({report.bytes_in} -> {report.bytes_out} bytes)"
    )
    report_store(root)


def report_store(root: Path) -> None:
    """Bytes per row per table, and per samples column, of a (compacted) store."""
    info = store_info(root)
    print("\ntable        rows      bytes   bytes/row")
    for table in info.tables:
        per_row = f"{table.bytes_per_row:.3f}" if table.bytes_per_row else "-"
        print(f"{table.name:<10} {table.rows:>8} {table.bytes:>10} {per_row:>10}")
    column_bytes: dict[str, int] = {}
    total_rows = 0
    for path in sorted((root / "samples").rglob("*.parquet")):
        metadata = pq.read_metadata(path)
        total_rows += metadata.num_rows
        for group_index in range(metadata.num_row_groups):
            group = metadata.row_group(group_index)
            for column_index in range(group.num_columns):
                column = group.column(column_index)
                name = column.path_in_schema
                column_bytes[name] = column_bytes.get(name, 0) + column.total_compressed_size
    print("\nsamples column     bytes/row   encodings")
    first = pq.read_metadata(next(iter(sorted((root / "samples").rglob("*.parquet")))))
    encodings = {
        first.row_group(0).column(i).path_in_schema: first.row_group(0).column(i).encodings
        for i in range(first.num_columns)
    }
    for name, size in column_bytes.items():
        print(f"{name:<18} {size / total_rows:>9.4f}   {','.join(encodings[name])}")
    print(f"{'(all columns)':<18} {sum(column_bytes.values()) / total_rows:>9.4f}")
    whole = info.table("samples").bytes_per_row
    print(f"{'(whole file)':<18} {whole:>9.4f}" if whole else "")


def measure_existing(store: Path) -> None:
    """Copy a recorded store, compact every hour of the copy, report it."""
    folder = Path(tempfile.mkdtemp(prefix="devloop-bench-"))
    try:
        root = folder / "metrics"
        shutil.copytree(store, root, ignore=shutil.ignore_patterns(".lock", ".maintenance.lock"))
        report = compact(root, now=datetime.now(UTC) + timedelta(hours=2))
        print(
            f"recorded store {store}: compaction {report.files_in} files -> "
            f"{report.partitions} ({report.bytes_in} -> {report.bytes_out} bytes)"
        )
        report_store(root)
    finally:
        shutil.rmtree(folder)


def measure_simulated(hours: float, projects: int, agents: int) -> None:
    """A simulated history (devloop workspace simulate), compacted, reported."""
    from devloop.simulate import simulate

    folder = Path(tempfile.mkdtemp(prefix="devloop-bench-"))
    try:
        summary = simulate(folder / "sim", hours=hours, projects=projects,
                           agents_per_project=agents, seed=0)  # fmt: skip
        root = summary.metrics_dir
        report = compact(root, now=summary.end + timedelta(hours=2))
        print(
            f"simulated {hours:g} h x {projects * agents} processes: compaction "
            f"{report.files_in} files -> {report.partitions}"
        )
        report_store(root)
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=200)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--keep", type=Path, help="write the store here and keep it")
    parser.add_argument("--store", type=Path, help="measure this recorded store (a copy of it)")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="measure a simulated history (--hours, 3 projects x 4 agents)",
    )
    args = parser.parse_args()
    if args.store:
        measure_existing(args.store)
        return
    if args.simulate:
        measure_simulated(args.hours, 3, 4)
        return
    if args.keep:
        run(args.hours, args.processes, args.jitter_ms, args.keep)
        return
    folder = Path(tempfile.mkdtemp(prefix="devloop-bench-"))
    try:
        run(args.hours, args.processes, args.jitter_ms, folder / "metrics")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
