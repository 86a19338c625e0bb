"""SIGKILL a real writer at random moments: every file readable, no duplicate, no loss beyond
the tick in flight; SIGTERM loses nothing. Both with in-process conversion and with the
collector's conversion child (killed with its parent, possibly mid-conversion)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from devloop.store import connect, recover
from devloop.store.layout import read_facts
from tests.test_store_support import T0, parquet_files

ROWS_PER_TICK = 20
TICK_US = 100_000  # 0.1 s of simulated time per tick: ticks cross hours, runs never overlap
RUN_TICKS = 100_000

WRITER = f"""
import signal, sys, time
from devloop.store import StoreWriter

root, run, segment_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
in_child = sys.argv[4] == "child"
stop = False

def on_term(signum, frame):
    global stop
    stop = True  # finish the tick in hand, then close

signal.signal(signal.SIGTERM, on_term)
print("starting", flush=True)
writer = StoreWriter(root, segment_seconds=segment_seconds, convert_in_child=in_child)
tick = 0
while not stop:
    ts = {T0} + (run * {RUN_TICKS} + tick) * {TICK_US}
    writer.append("samples", [
        (ts, "devbox", "alpha", "lint", pid, {T0} - 1, 1, "ruff", 0.25, tick / 100, 4096 * pid,
         10, 2, tick, 0, "sleeping")
        for pid in range(100, 100 + {ROWS_PER_TICK})
    ])
    writer.append("system", [(ts, "devbox", 8, 1.0, 1, 1, 1)])
    writer.flush()
    print(tick, flush=True)
    tick += 1
    time.sleep(0.001)
writer.close()
print("closed", flush=True)
"""


class Writer:
    """A writer subprocess whose output lines are collected by a thread."""

    def __init__(self, root: Path, run: int, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(run), "0.02", mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, predicate: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate == "ticks" and len(self.ticks) >= count:
                return
            if predicate in self.lines:
                return
            if self.process.poll() is not None and predicate not in self.lines:
                break
            time.sleep(0.002)
        raise AssertionError(f"writer never printed {predicate} x{count}: {self.lines[-5:]}")

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=60)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code

    @property
    def ticks(self) -> list[int]:
        return [int(line) for line in self.lines if line.isdigit()]


def _present_ticks(root: Path) -> dict[int, dict[int, int]]:
    """Rows per tick per run in the samples view."""
    with connect(root) as connection:
        rows = connection.sql(
            f"SELECT (epoch_us(ts) - {T0}) // {TICK_US} AS n, count(*) FROM samples GROUP BY n"
        ).fetchall()
    present: dict[int, dict[int, int]] = {}
    for number, count in rows:
        present.setdefault(number // RUN_TICKS, {})[number % RUN_TICKS] = count
    return present


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in-process", "child"])
def test_sigkill_at_random_moments_loses_at_most_the_tick_in_flight(
    tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "metrics"
    rng = random.Random(int(os.environ.get("DEVLOOP_KILL_SEED", "20240304")))
    durable: dict[int, list[int]] = {}
    kills = 12
    for run in range(kills):
        writer = Writer(root, run, mode)
        writer.wait_for("starting")
        if run % 4 == 3:  # early: during start-up and recovery of the previous run's segment
            time.sleep(rng.uniform(0.0, 0.15))
        else:  # mid-run: appends, fsyncs and roll-overs every 0.02 s
            writer.wait_for("ticks", rng.randint(1, 40))
            time.sleep(rng.uniform(0.0, 0.05))
        assert writer.stop(signal.SIGKILL) == -signal.SIGKILL
        durable[run] = writer.ticks

    final = Writer(root, kills, mode)
    final.wait_for("ticks", 15)
    assert final.stop(signal.SIGTERM) == 0
    assert final.lines[-1] == "closed"
    durable[kills] = final.ticks

    assert recover(root).segments == ()  # the graceful close left nothing behind
    assert list((root / "_spool").iterdir()) == []
    assert [p for p in root.rglob(".*") if p.name not in (".lock", ".maintenance.lock")] == []
    for path in parquet_files(root):
        assert not isinstance(read_facts(path, path.relative_to(root).parts[0]), str), path
        pq.read_table(path)

    with connect(root) as connection:
        [(total, distinct)] = connection.sql(
            "SELECT count(*), count(DISTINCT (host, pid, start_time, ts)) FROM samples"
        ).fetchall()
        [(system_total, system_distinct)] = connection.sql(
            "SELECT count(*), count(DISTINCT ts) FROM system"
        ).fetchall()
    assert total == distinct
    assert system_total == system_distinct

    present = _present_ticks(root)
    assert set(present) <= set(durable)
    for run, printed in durable.items():
        ticks = present.get(run, {})
        assert set(ticks.values()) <= {ROWS_PER_TICK}, run  # a tick's rows: all or none
        assert sorted(ticks) == list(range(len(ticks))), run  # no hole
        assert set(printed) <= set(ticks), run  # everything acknowledged is there
        if run == kills:
            assert sorted(ticks) == printed  # SIGTERM: nothing lost, nothing extra
        else:
            assert len(ticks) <= len(printed) + 1, run  # at most the tick in flight
    assert sum(len(t) for t in durable.values()) > 100  # the test did exercise the writer
