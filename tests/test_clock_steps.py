"""A wall clock that steps during collection (issue 15): back one hour, then forward two.

The recorder records a real busy process while the wall clock it reads (``time.time`` and
``time.time_ns`` of the recorder and the collector) is stepped between two ticks; the monotonic
clock is the real one. Rates come from kernel counters over the monotonic clock, so they stay
exact and non-negative; the stamps never go back (after the step back each tick is one
interval after the one before), follow the clock after the step forward, and every row the
recorder writes, events included, comes in time order, so no hour is written after a later one.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from devloop.collector import collector as collector_module
from devloop.config import load_workspace
from devloop.runner import record
from devloop.runner.record import Recorder
from devloop.store import connect
from tests.helpers.procs import helpers

pytestmark = pytest.mark.realtime

INTERVAL = 0.25
INTERVAL_US = 250_000
HOUR = 3600.0
#: (first tick of the phase, wall clock offset from then on, in seconds)
STEPS = ((6, -HOUR), (12, +HOUR))
TICKS = 18


class SteppedClock:
    """The ``time`` module as the recorder sees it: the real one, the wall clock ``offset``
    seconds off."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def time_ns(self) -> int:
        return time.time_ns() + round(self.offset * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_clock_step_back_and_forward_gives_exact_rates_and_ordered_stamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = f"clock-{uuid.uuid4().hex[:6]}"
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({"projects": [{"name": project}]}))
    clock = SteppedClock()
    monkeypatch.setattr(record, "time", clock)
    monkeypatch.setattr(collector_module, "time", clock)

    appended: list[tuple[str, tuple[Any, ...]]] = []  # every row, in the order written
    ticks: list[tuple[int, float, float]] = []  # stamp, measured interval, wall clock after
    with helpers() as start:
        burner = start("busy", tags=(project, "burn"))
        with Recorder(load_workspace(folder), interval=INTERVAL) as recorder:
            write = recorder.writer.append

            def spy(table: str, rows: list[Any]) -> None:
                appended.extend((table, tuple(row)) for row in rows)
                write(table, rows)

            monkeypatch.setattr(recorder.writer, "append", spy)

            def on_tick(_status: Any) -> None:
                stamp = next(row[0] for table, row in reversed(appended) if table == "system")
                ticks.append((stamp, recorder.collector.last_interval, clock.time()))
                for first, offset in STEPS:
                    if len(ticks) == first - 1:
                        clock.offset = offset  # between this tick and the next
                if len(ticks) == 9:  # an event while the clock is an hour behind the ticks
                    recorder.event("agent-start", message="an agent started meanwhile")

            # a generous bound on a loaded machine; the ticks end it
            recorder.run(duration=120, until=lambda: len(ticks) >= TICKS, on_tick=on_tick)
        pid = burner.pid
    assert len(ticks) == TICKS

    # Rates: kernel CPU over the monotonic interval, exact, never negative, at most one core.
    rows = [row for table, row in appended if table == "samples" and row[4] == pid]
    assert len(rows) == TICKS
    by_ts = {stamp: interval for stamp, interval, _ in ticks}
    for before, row in zip(rows, rows[1:], strict=False):
        cores, own = row[8], row[9]
        assert cores is not None and 0.0 <= cores <= 1.1, row
        assert cores * by_ts[row[0]] == pytest.approx(own - before[9], abs=1e-9)
    busy = [row[3] for table, row in appended if table == "system"]
    assert all(value is None or value >= 0.0 for value in busy)

    # Stamps: strictly increasing; one interval apart while the clock is behind; with the
    # clock again after it steps forward (the step back ran the ticks an hour ahead of it, so
    # the step forward leaves a gap of about an hour).
    stamps = [stamp for stamp, _, _ in ticks]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    back, forward = STEPS[0][0] - 1, STEPS[1][0] - 1  # indices of the first tick of each phase
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # gaps[i]: into tick i+1
    assert gaps[back - 1 : forward - 1] == [INTERVAL_US] * (forward - back)
    for stamp, _, wall in ticks[forward:] + ticks[:back]:
        assert wall * 1e6 - 30e6 <= stamp <= wall * 1e6  # on the clock (30 s: a loaded tick)
    assert 0.9 * HOUR * 1e6 <= stamps[forward] - stamps[forward - 1] <= 1.1 * HOUR * 1e6

    # Every row in time order, whatever table: no hour is written after a later one.
    written = [row[0] for _, row in appended]
    assert written == sorted(written)
    events = [row for table, row in appended if table == "events"]
    steps = [row[10] for row in events if row[2] == "clock-step"]
    assert len(steps) == 2
    amounts = [float(re.findall(r"stepped (?:back|forward) ([\d.]+)s", m)[0]) for m in steps]
    assert steps[0].startswith("the wall clock stepped back ")
    assert steps[1].startswith("the wall clock stepped forward ")
    assert amounts == [pytest.approx(HOUR, abs=0.5), pytest.approx(2 * HOUR, abs=0.5)]
    assert [row[0] for row in events if row[2] == "clock-step"] == [stamps[back], stamps[forward]]

    # And the store holds each tick once, in the hours of its stamps.
    with connect(folder / "metrics") as db:
        stored = db.sql("SELECT epoch_us(ts) FROM system ORDER BY ts").fetchall()
        hours = db.sql("SELECT DISTINCT date_trunc('hour', ts) FROM samples ORDER BY 1").fetchall()
    assert [value for (value,) in stored] == stamps
    assert len(hours) in (2, 3)  # the recording's hour(s) and the one after the gap
