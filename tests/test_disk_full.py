"""A full disk (ENOSPC) degrades the collector instead of stopping it: ticks the spool refuses are
held in memory within a bound, retried in order, and written once space returns; a warning says
so once and an ``events`` row records the outage. Injected in-process: the spool's ``os`` is
replaced by one whose ``write`` fails while the test says the disk is full."""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from devloop.config import load_workspace
from devloop.runner import record
from devloop.runner.record import Recorder
from devloop.store import StoreWriter, connect, spool
from devloop.store import lock as store_lock
from devloop.store.layout import spool_dir
from devloop.store.spool import read_segment
from tests.test_store_support import SECOND, T0, FakeClock, read_samples, system_row, tick_rows

pytestmark = pytest.mark.realtime

#: 2024-03-04 10:00:00 UTC, in seconds (the recorder's tick times).
T0_S = T0 // SECOND


class Disk:
    """Stands in for the ``os`` module of one store module: ``write`` (and ``pwrite``) fail
    with ENOSPC while ``full`` is set; everything else is the real ``os``."""

    def __init__(self) -> None:
        self.full = False
        self.refused = 0

    def _refuse(self) -> None:
        self.refused += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, fd: int, data: Any) -> int:
        if self.full:
            self._refuse()
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if self.full:
            self._refuse()
        return os.pwrite(fd, data, offset)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk()
    monkeypatch.setattr(spool, "os", fake)
    return fake


def _spooled_ticks(root: Path, table: str = "samples") -> list[int]:
    """The ``ts`` of every ``table`` row in the spool, in file order (segments by name)."""
    found: list[int] = []
    for path in sorted(spool_dir(root).glob("*.seg")):
        for batch in read_segment(path).batches.get(table, []):
            found += [value.value for value in batch.column("ts")]
    return found


def _tick(writer: StoreWriter, tick: int) -> None:
    writer.append("samples", tick_rows(T0 + tick * SECOND))
    writer.append("system", [system_row(T0 + tick * SECOND)])
    writer.flush()


def test_writer_holds_ticks_while_the_disk_is_full_and_writes_them_in_order(
    tmp_path: Path, disk: Disk
) -> None:
    clock = FakeClock()
    with StoreWriter(tmp_path, segment_seconds=3600, clock=clock) as writer:
        _tick(writer, 0)
        disk.full = True
        for tick in range(1, 6):
            clock.now = tick
            _tick(writer, tick)  # no exception: the collector keeps ticking
            assert writer.held_ticks == tick
        outage = writer.disk_full
        assert outage is not None and outage.started == 1 and outage.ended is None
        assert outage.error.startswith("cannot append to spool segment ")
        assert outage.error.endswith("[Errno 28] No space left on device")
        assert writer.pop_outages() == []
        disk.full = False
        clock.now = 6
        _tick(writer, 6)  # the backlog first, then this tick
        assert writer.disk_full is None and writer.held_ticks == 0
        [ended] = writer.pop_outages()
        assert (ended.seconds, ended.held_ticks, ended.dropped_ticks) == (5, 5, 0)
        assert _spooled_ticks(tmp_path) == [T0 + t * SECOND for t in range(7) for _ in range(3)]
        assert _spooled_ticks(tmp_path, "system") == [T0 + t * SECOND for t in range(7)]
    assert read_samples(tmp_path) == sorted(
        row for t in range(7) for row in tick_rows(T0 + t * SECOND)
    )


def test_beyond_the_bound_the_oldest_ticks_are_dropped_and_counted(
    tmp_path: Path, disk: Disk
) -> None:
    with StoreWriter(tmp_path, segment_seconds=3600, backlog_ticks=3) as writer:
        _tick(writer, 0)
        disk.full = True
        for tick in range(1, 7):
            _tick(writer, tick)
            assert writer.held_ticks == min(tick, 3)
        disk.full = False
        _tick(writer, 7)
        [ended] = writer.pop_outages()
        assert (ended.held_ticks, ended.dropped_ticks, ended.dropped_rows) == (3, 3, 9 + 3)
        kept = [0, 4, 5, 6, 7]  # ticks 1-3 were the oldest held when 4-6 came
        assert _spooled_ticks(tmp_path, "system") == [T0 + t * SECOND for t in kept]


def test_the_byte_bound_keeps_at_least_the_newest_tick(tmp_path: Path, disk: Disk) -> None:
    with StoreWriter(tmp_path, segment_seconds=3600, backlog_bytes=1) as writer:
        disk.full = True
        for tick in range(3):
            _tick(writer, tick)
        assert writer.held_ticks == 1
        disk.full = False
        _tick(writer, 3)
        [ended] = writer.pop_outages()
        assert ended.dropped_ticks == 2
        assert _spooled_ticks(tmp_path, "system") == [T0 + 2 * SECOND, T0 + 3 * SECOND]


def test_the_lock_is_taken_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StoreWriter(tmp_path).close()  # leaves an empty .lock file, as every release does
    fake = Disk()
    fake.full = True
    monkeypatch.setattr(store_lock, "os", fake)
    with store_lock.writer_lock(tmp_path) as held:
        assert held.held and fake.refused == 1
        assert (tmp_path / ".lock").read_bytes() == b""  # no pid: "pid unknown" to a rival


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    # A project no process on this machine is tagged with: ticks hold only the system row.
    project = f"full-{uuid.uuid4().hex[:6]}"
    (folder / "workspace.json").write_text(json.dumps({"projects": [{"name": project}]}))
    return folder


def test_recorder_starts_on_a_full_disk_warns_once_and_records_the_outage(
    tmp_path: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(record, "BACKLOG_SECONDS", 4.0)  # 4 ticks at a 1 s interval
    folder = _workspace(tmp_path)
    workspace = load_workspace(folder)
    metrics = workspace.metrics_dir
    Recorder(workspace, interval=1.0).close()  # a store and its (emptied) lock file exist
    lock_disk = Disk()
    monkeypatch.setattr(store_lock, "os", lock_disk)
    disk.full = lock_disk.full = True
    with Recorder(workspace, interval=1.0) as recorder:
        for tick in range(7):
            recorder.tick(now=T0_S + tick)
        assert recorder.writer.held_ticks == 4
        disk.full = lock_disk.full = False
        for tick in range(7, 9):
            recorder.tick(now=T0_S + tick)
        assert recorder.writer.held_ticks == 0
        spooled = _spooled_ticks(metrics, "system")
    assert spooled == [(T0_S + t) * SECOND for t in range(3, 9)]  # 0-2 dropped, the rest in order
    warnings = [line for line in capsys.readouterr().err.splitlines() if "disk full" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"devloop: disk full, recording into {metrics} continues")
    assert "cannot append to spool segment" in warnings[0]
    with connect(metrics) as db:
        events = db.sql("SELECT action, message FROM events ORDER BY ts").fetchall()
    actions = [action for action, _message in events]
    # The first run's start and stop, then this run's: its start event was in tick 0, dropped.
    assert actions == ["start", "stop", "disk-full", "stop"]
    message = events[2][1]
    assert message.startswith("spool append failed for ")
    assert "(disk full): 4 tick(s) held in memory, 3 dropped" in message
    assert "cannot append to spool segment" in message
