"""The writer lock: one collector per store, freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devloop.errors import StoreLockedError
from devloop.store import StoreWriter, compact
from devloop.store.lock import maintenance_lock

HOLDER = """
import sys, time
from devloop.store import StoreWriter
writer = StoreWriter(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_pid(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root):
        with pytest.raises(StoreLockedError) as caught:
            StoreWriter(root)
        assert (
            str(caught.value) == f"another collector (pid {os.getpid()}) is recording into {root}"
        )
    StoreWriter(root).close()  # freed by close()


def test_lock_is_freed_when_the_holder_is_killed(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreLockedError, match=rf"\(pid {holder.pid}\) is recording into"):
            StoreWriter(root)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    StoreWriter(root).close()


def test_compaction_refused_while_another_maintenance_runs(tmp_path: Path) -> None:
    with (
        maintenance_lock(tmp_path),
        pytest.raises(
            StoreLockedError, match=r"another compaction or retention \(pid \d+\) is running on"
        ),
    ):
        compact(tmp_path)
