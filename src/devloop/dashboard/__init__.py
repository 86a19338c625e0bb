"""The workspace right now: snapshots of the newest tick, and the live terminal dashboard.

    snapshot.py   Snapshot (usage, limits, agent states) from a tick, the store or a recorder
    data.py       DashboardData: a snapshot, sparkline history, the latest events and runs
    screen.py     build_screen: DashboardData -> rich renderable (pure)
    app.py        run_dashboard: the live loop (rich.live, keys in cbreak mode; read-only, or
                  a recorder that enforces with --record)

Only :mod:`snapshot` is imported here: the exporter of a running collector uses it, and that
process stays small (screen and app import rich; data and the store reader DuckDB).
"""

from devloop.dashboard.snapshot import (
    AgentStatus,
    EnforcementState,
    LiveSnapshots,
    ProjectStatus,
    Snapshot,
    SnapshotSource,
    StoreSnapshots,
    Usage,
    attach,
    build_snapshot,
    read_state,
)

__all__ = [
    "AgentStatus",
    "EnforcementState",
    "LiveSnapshots",
    "ProjectStatus",
    "Snapshot",
    "SnapshotSource",
    "StoreSnapshots",
    "Usage",
    "attach",
    "build_snapshot",
    "read_state",
]
