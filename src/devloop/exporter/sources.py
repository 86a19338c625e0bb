"""What a scrape reads: a snapshot, the collector's interval and whether the collector runs.

:class:`StoreReadings` (``devloop workspace exporter``) reads the store's newest tick, the
spacing of its last ticks and the writer lock file, and nothing else: looking never writes (no
lock is taken, no cache is built). :class:`LiveReadings` (``collect --prometheus``) wraps the
ticks a recorder of this very process hands over: its collector runs by definition.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from devloop.config.models import Workspace
from devloop.dashboard.snapshot import Snapshot, SnapshotSource

#: The median gap between the system rows of the ten minutes before the newest one: the
#: collector's interval as it ran, whatever its ``--interval`` was.
_INTERVAL_SQL = (
    "SELECT median(gap) FROM (SELECT epoch_us(ts) - lag(epoch_us(ts)) OVER "
    "(PARTITION BY host ORDER BY ts) AS gap FROM system "
    "WHERE ts >= (SELECT max(ts) FROM system) - INTERVAL 10 MINUTE) WHERE gap > 0"
)


@dataclass(frozen=True)
class Reading:
    """One scrape's input: the snapshot, the seconds between the collector's ticks (None:
    unknown) and whether that collector runs (None: the store cannot say)."""

    snapshot: Snapshot
    interval: float | None
    collector: bool | None


class ReadingSource(Protocol):
    """Anything that can say, at ``now``, what the workspace looks like and how live that is."""

    def read(self, now: float) -> Reading:
        """The newest reading (reads happen here, on every call)."""
        ...


def collector_running(metrics_dir: Path) -> bool | None:
    """Whether a collector holds the store at ``metrics_dir``: None when the store has no
    writer lock file (no collector ever wrote it), else whether the pid it names is alive."""
    from devloop.runner.launch import recorder_alive
    from devloop.store.layout import LOCK_FILE

    if not (metrics_dir / LOCK_FILE).exists():
        return None
    return recorder_alive(metrics_dir)


class StoreReadings:
    """Readings of a workspace's store: its newest tick, read afresh at every call."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()

    def read(self, now: float) -> Reading:
        """The newest tick (spool tail included), the store's recent interval (else the
        configured checkInterval) and the collector's liveness. Raises StoreError."""
        from devloop.dashboard.snapshot import read_snapshot
        from devloop.store.db import connect, mapped

        metrics_dir = self.workspace.metrics_dir
        collector = collector_running(metrics_dir)
        with self._lock:
            connection = connect(metrics_dir)
            try:
                snapshot = read_snapshot(connection, self.workspace, now=now)
                with mapped(f"cannot read the tick interval of {metrics_dir}"):
                    row = connection.execute(_INTERVAL_SQL).fetchone()
            finally:
                connection.close()
        gap = row[0] if row else None
        if gap is None or math.isnan(gap):  # fewer than two ticks
            interval = self.workspace.config.global_.resource_limits.check_interval
        else:
            interval = float(gap) / 1e6
        return Reading(snapshot, interval, collector)


class LiveReadings:
    """Readings of the ticks a recorder in this process takes (``collect --prometheus``)."""

    def __init__(self, source: SnapshotSource, interval: float) -> None:
        self.source = source
        self.interval = interval

    def read(self, now: float) -> Reading:
        """The recorder's newest tick; its collector is this process, so it runs."""
        return Reading(self.source.snapshot(), self.interval, True)
