"""What one frame of the dashboard shows, read from the store: :class:`DashboardData`.

The newest tick (a :class:`~devloop.dashboard.snapshot.Snapshot`), each project's CPU and memory
over the last minutes bucketed for a sparkline, the latest enforcement events and the last agent
runs devloop launched. Reading is
separate from drawing (:mod:`devloop.dashboard.screen`), so the screen is a pure function of
this record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devloop.config.models import Workspace
from devloop.dashboard.snapshot import Snapshot, read_snapshot

if TYPE_CHECKING:
    import duckdb

#: Events that are not the enforcement's doing, left out of "latest events".
ROUTINE_EVENTS = ("start", "stop", "agent-start", "agent-exit")


@dataclass(frozen=True)
class Event:
    """One row of the store's ``events`` table (``ts`` in unix seconds)."""

    ts: float
    action: str
    scope: str | None
    project: str | None
    agent: str | None
    metric: str | None
    value: float | None
    limit: float | None
    message: str | None


@dataclass(frozen=True)
class Run:
    """One of the newest rows of the store's ``runs`` table (times in unix seconds)."""

    project: str
    agent: str
    status: str  # complete, incomplete (its launcher died)
    exit_code: int | None
    signal: int | None
    started: float
    ended: float | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None when the end is unknown)."""
        return None if self.ended is None else self.ended - self.started

    @property
    def failed(self) -> bool:
        """A non-zero exit, ended by a signal, or incomplete (as ``analytics runs`` says)."""
        return self.status == "incomplete" or self.signal is not None or bool(self.exit_code)


@dataclass(frozen=True)
class History:
    """A project's usage over the window, one value per bucket (None: no tick in the bucket).

    ``cpu_percent`` is the bucket's average of the per-tick sums (percent of the machine),
    ``memory_bytes`` its maximum.
    """

    cpu_percent: tuple[float | None, ...]
    memory_bytes: tuple[float | None, ...]


@dataclass(frozen=True)
class DashboardData:
    """Everything one frame shows.

    ``collector`` says who records (the status line's "collector:", see
    :func:`devloop.dashboard.app.who_records`; "nobody" for a recording read as it is);
    ``window`` is the sparkline span in seconds.
    """

    name: str
    snapshot: Snapshot
    history: dict[str, History] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    runs: tuple[Run, ...] = ()
    window: float = 300.0
    collector: str = "nobody"
    now: float | None = None
    error: str | None = None


def bucket(
    ticks: Sequence[tuple[float, float, float]], *, start: float, end: float, points: int
) -> History:
    """Bucket ``(ts, cpu_percent, memory_bytes)`` ticks of ``start < ts <= end`` into ``points``
    equal slices: average CPU and peak memory per slice, None where no tick fell."""
    points = max(points, 1)
    width = (end - start) / points if end > start else 1.0
    cpu: list[list[float]] = [[] for _ in range(points)]
    memory: list[list[float]] = [[] for _ in range(points)]
    for ts, cpu_percent, memory_bytes in ticks:
        if not start < ts <= end:
            continue
        index = min(points - 1, max(0, math.ceil((ts - start) / width) - 1))
        cpu[index].append(cpu_percent)
        memory[index].append(memory_bytes)
    return History(
        cpu_percent=tuple(math.fsum(v) / len(v) if v else None for v in cpu),
        memory_bytes=tuple(max(v) if v else None for v in memory),
    )


def load(
    connection: duckdb.DuckDBPyConnection,
    workspace: Workspace,
    *,
    window: float = 300.0,
    points: int = 120,
    events: int = 6,
    runs: int = 5,
    collector: str = "nobody",
    now: float | None = None,
) -> DashboardData:
    """Read one frame: the newest tick, ``points`` buckets of the last ``window`` seconds before
    it per project, the newest ``events`` enforcement events and the ``runs`` newest runs."""
    import time

    from devloop.store.db import mapped

    name = workspace.config.workspace_name or workspace.dir.parent.name
    now = time.time() if now is None else now
    snapshot = read_snapshot(connection, workspace, now=now)
    history: dict[str, History] = {}
    with mapped(f"cannot read {workspace.metrics_dir}"):
        if snapshot.at is not None:
            end_us = int(snapshot.at * 1e6)
            start_us = end_us - int(window * 1e6)
            ticks = [
                row[0] / 1e6
                for row in connection.execute(
                    "SELECT DISTINCT epoch_us(ts) FROM system WHERE ts > make_timestamptz(?) "
                    "AND ts <= make_timestamptz(?)",
                    [start_us, end_us],
                ).fetchall()
            ]
            sums: dict[str, dict[float, tuple[float, float]]] = {}
            for project, ts_us, cpu_cores, rss in connection.execute(
                "SELECT project, epoch_us(ts), sum(cpu_cores), sum(rss_bytes) FROM samples "
                "WHERE ts > make_timestamptz(?) AND ts <= make_timestamptz(?) "
                "GROUP BY project, ts",
                [start_us, end_us],
            ).fetchall():
                sums.setdefault(project, {})[ts_us / 1e6] = (
                    100.0 * float(cpu_cores or 0.0) / snapshot.cores,
                    float(rss or 0),
                )
            for project in snapshot.projects:
                mine = sums.get(project.name, {})
                series = [(ts, *mine.get(ts, (0.0, 0.0))) for ts in ticks]
                history[project.name] = bucket(
                    series, start=start_us / 1e6, end=end_us / 1e6, points=points
                )
        latest = connection.execute(
            'SELECT epoch_us(ts), action, scope, project, agent, metric, value, "limit", '
            "message FROM events WHERE action NOT IN (?, ?, ?, ?) ORDER BY ts DESC LIMIT ?",
            [*ROUTINE_EVENTS, events],
        ).fetchall()
        last_runs = connection.execute(
            "SELECT project, agent, status, exit_code, signal, epoch_us(coalesce(started, ts)), "
            "epoch_us(ended) FROM runs ORDER BY coalesce(started, ts) DESC, run_id DESC LIMIT ?",
            [runs],
        ).fetchall()
    return DashboardData(
        name=name,
        snapshot=snapshot,
        history=history,
        events=tuple(Event(row[0] / 1e6, *row[1:]) for row in latest),
        runs=tuple(
            Run(project, agent, status, code, sig, start / 1e6, None if end is None else end / 1e6)
            for project, agent, status, code, sig, start, end in last_runs
        ),
        window=window,
        collector=collector,
        now=now,
    )
