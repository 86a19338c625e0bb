"""Collector cost: µs per process-sample and % of one core, against a plain psutil loop.

    python bench/collector.py [--counts 100,1000] [--ticks 20] [--interval-run 5]

For each count N it starts N tagged ``sleep 600`` processes (they die with the bench, even on
SIGKILL: PR_SET_PDEATHSIG), then measures, in the same run:

* ``Collector(source="procfs").tick()`` plus the real spool write of its rows (StoreWriter
  append of samples and system, and the per-tick fdatasync), CPU time per tick
  (``time.process_time``) divided by the rows it produced; "marginal" subtracts the fixed cost of
  a tick that records nothing (listing /proc, checking the host's other processes, host totals).
  The spool's conversion to Parquet (once a minute, by default, in a short-lived child process
  that imports pyarrow) is printed apart: the child's CPU for a 60-tick segment of N processes;
* the same for ``Collector(source="psutil")``;
* a plain psutil loop reading the same four metrics per process (cpu_times, memory_info,
  num_fds, num_threads) over pre-built ``psutil.Process`` objects (psutil's best case);

and prints the ratio. ``% of one core`` is CPU per tick at a 1 s interval, measured twice:
ticking back to back (warm caches), and for real at a 1 s interval for ``--interval-run``
seconds. The collector's memory is measured in a process that runs the real collector, a
``Recorder`` (Collector + StoreWriter) recording the N processes with 1 s segments, so several
segments roll over to Parquet meanwhile: VmRSS at the end and VmHWM, its peak (not ru_maxrss,
which Linux carries over fork+exec from the larger bench). Every tick also pays for the host's
other, unrecorded processes (a cheap liveness check each).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from devloop.collector import Collector  # noqa: E402
from devloop.store import StoreWriter  # noqa: E402

GOALS = "goals: <= 25 us/sample, >= 2.4x cheaper than psutil, <= 1% core @200, RSS <= 60 MB"


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def spawn_sleepers(count: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DEVLOOP_PROJECT="bench", DEVLOOP_AGENT="sleeper")
    return [
        subprocess.Popen(
            ["sleep", "600"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for _ in range(count)
    ]


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
    for child in children:
        child.wait()


def cpu_per_call(call: Callable[[], int], repeats: int) -> tuple[float, int]:
    """CPU seconds per call and the rows the last call produced."""
    call()  # warm up
    rows = 0
    start = time.process_time()
    for _ in range(repeats):
        rows = call()
    return (time.process_time() - start) / repeats, rows


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_collector(source: str, repeats: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder, Collector(source=source) as collector:
        writer = StoreWriter(Path(folder) / "metrics", segment_seconds=1e9, convert_in_child=True)
        collector.tick()

        def tick() -> int:
            result = collector.tick()
            writer.append("samples", result.samples)
            writer.append("system", [result.system])
            writer.flush()
            return len(result.samples)

        try:
            return cpu_per_call(tick, repeats)
        finally:
            writer.close()


def conversion_cost(ticks: int = 60) -> tuple[float, float, int]:
    """CPU seconds of the conversion child for one segment of ``ticks`` ticks (the default
    60 s segment at 1 s), in the collector's process (the roll-over) and in the child, and
    the rows in the segment."""
    with tempfile.TemporaryDirectory() as folder, Collector(source="procfs") as collector:
        writer = StoreWriter(Path(folder) / "metrics", segment_seconds=1e9, convert_in_child=True)
        try:
            rows = 0
            for _ in range(ticks):
                result = collector.tick()
                writer.append("samples", result.samples)
                writer.append("system", [result.system])
                writer.flush()
                rows += len(result.samples)
            parent, child = time.process_time(), children_cpu()
            writer.roll()
            parent = time.process_time() - parent
            writer.wait_for_conversions()
            child = children_cpu() - child
            assert writer.segments_converted == 1
        finally:
            writer.close()
        return parent, child, rows


def bench_psutil_loop(pids: list[int], repeats: int) -> tuple[float, int]:
    processes = [psutil.Process(pid) for pid in pids]

    def loop() -> int:
        rows = 0
        for process in processes:
            try:
                process.cpu_times()
                process.memory_info()
                process.num_fds()
                process.num_threads()
            except psutil.Error:
                continue
            rows += 1
        return rows

    return cpu_per_call(loop, repeats)


def at_interval(seconds: float) -> float:
    """% of one core used by ticking once a second for ``seconds`` seconds."""
    with Collector(source="procfs") as collector:
        collector.tick()
        start = time.process_time()
        ticks = max(1, round(seconds))
        next_at = time.monotonic()
        for _ in range(ticks):
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
            collector.tick()
        return 100 * (time.process_time() - start) / ticks


RSS_PROBE = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {src!r})
from devloop.config import load_workspace
from devloop.runner.record import Recorder

folder = Path(tempfile.mkdtemp()) / ".devloop-workspace"
folder.mkdir()
(folder / "workspace.json").write_text(json.dumps({{"projects": [{{"name": "bench"}}]}}))
with Recorder(load_workspace(folder), interval={interval}, segment_seconds=1.0) as recorder:
    recorder.run(duration=60, until=lambda: recorder.writer.segments_converted >= {rolls})
    status = {{l.split(":")[0]: l.split()[1] for l in open("/proc/self/status")
              if len(l.split()) > 1}}
    heavy = [m for m in ("pyarrow", "duckdb", "polars", "numpy") if m in sys.modules]
    print(json.dumps({{
        "rss": int(status["VmRSS"]) * 1024, "hwm": int(status["VmHWM"]) * 1024,
        "rows": recorder.status().processes, "segments": recorder.writer.segments_converted,
        "heavy": heavy,
    }}))
"""


def collector_rss(interval: float = 0.25, rolls: int = 3) -> dict[str, object]:
    """Memory of the real collector (a Recorder) after ``rolls`` segments became Parquet."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE.format(src=src, interval=interval, rolls=rolls)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,200,1000")
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--interval-run", type=float, default=5.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    others = len(psutil.pids())
    print(f"host: {os.cpu_count()} cores, {others} processes before the bench; {GOALS}")
    fixed, _ = bench_collector("procfs", args.ticks)
    print(
        f"fixed cost of a tick recording nothing ({others} other processes): {1e6 * fixed:.0f} us"
    )
    print(
        f"{'N':>5} {'procfs us/sample':>17} {'marginal':>9} {'psutil-src us':>14}"
        f" {'psutil loop us':>15} {'ratio':>6} {'% core @1s':>11} {'rows':>5}"
    )
    for count in counts:
        children = spawn_sleepers(count)
        try:
            pids = [child.pid for child in children]
            fast, rows = bench_collector("procfs", args.ticks)
            portable, _ = bench_collector("psutil", max(3, args.ticks // 4))
            loop, loop_rows = bench_psutil_loop(pids, max(3, args.ticks // 4))
            fast_us = 1e6 * fast / rows
            loop_us = 1e6 * loop / loop_rows
            marginal_us = 1e6 * (fast - fixed) / rows
            print(
                f"{count:>5} {fast_us:>17.1f} {marginal_us:>9.1f} {1e6 * portable / rows:>14.1f}"
                f" {loop_us:>15.1f} {loop_us / fast_us:>5.1f}x {100 * fast:>10.2f}% {rows:>5}"
            )
            parent, child, segment_rows = conversion_cost()
            print(
                f"      spool -> Parquet of a 60-tick segment ({segment_rows} rows) in a child:"
                f" {1e3 * child:.0f} ms CPU ({1e6 * child / max(segment_rows, 1):.1f} us/row),"
                f" roll-over {1e3 * parent:.1f} ms in the collector;"
                f" {100 * (child + parent) / 60:.2f}% of a core at 60 s segments"
            )
            if args.interval_run and count in (200, counts[0]):
                real = at_interval(args.interval_run)
                seconds = f"{args.interval_run:.0f}"
                print(f"      real 1 s interval over {seconds} s: {real:.2f}% of a core")
            if count == max(counts):
                probe = collector_rss()
                rss, peak = float(probe["rss"]), float(probe["hwm"])  # type: ignore[arg-type]
                print(
                    f"      collector (Recorder) with {probe['rows']} processes, after"
                    f" {probe['segments']} roll-overs to Parquet: VmRSS {rss / 2**20:.1f} MB,"
                    f" VmHWM {peak / 2**20:.1f} MB (Python included);"
                    f" heavy modules loaded: {probe['heavy'] or 'none'}"
                )
        finally:
            stop(children)


if __name__ == "__main__":
    main()
