"""The tables of the metrics store: names, columns, types and schema versions.

This module is the storage contract shared by the collector, the store, the simulator and the
analytics. Column order here is the order of the tuples the collector hands to the store.

Units: ``ts`` and start times are UTC timestamps in microseconds; ``cpu_cores`` is cores used
over the interval that ends at ``ts`` (1.5 = one and a half cores), so a percent of the machine is
``100 * cpu_cores / system.cores``; sizes are bytes; CPU limits are percent of the whole machine.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

SCHEMA_VERSION_KEY: Final = b"devloop.schema_version"
TABLE_KEY: Final = b"devloop.table"

_TS = pa.timestamp("us", tz="UTC")

#: One row per attributed process per tick.
SAMPLES: Final = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("project", pa.string(), nullable=False),
        pa.field("agent", pa.string(), nullable=False),
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("start_time", _TS, nullable=False),  # process start: (pid, start_time) is identity
        pa.field("ppid", pa.int32()),
        pa.field("name", pa.string()),
        pa.field("cpu_cores", pa.float32()),  # cores used since the previous tick
        pa.field("cpu_seconds", pa.float64()),  # cumulative user+system CPU of the process itself
        pa.field("rss_bytes", pa.int64()),
        pa.field("fds", pa.int32()),
        pa.field("threads", pa.int32()),
        pa.field("io_read_bytes", pa.int64()),  # cumulative
        pa.field("io_write_bytes", pa.int64()),  # cumulative
        pa.field("state", pa.string()),  # running, sleeping, disk-sleep, stopped, zombie, idle
    ]
)

#: One row per process the first time it is seen (command lines are not repeated per sample).
PROCESSES: Final = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),  # first seen
        pa.field("host", pa.string(), nullable=False),
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("start_time", _TS, nullable=False),
        pa.field("project", pa.string(), nullable=False),
        pa.field("agent", pa.string(), nullable=False),
        pa.field("ppid", pa.int32()),
        pa.field("name", pa.string()),
        pa.field("cmdline", pa.string()),  # NUL-free, arguments joined by single spaces
        pa.field("cwd", pa.string()),
        pa.field("username", pa.string()),
    ]
)

#: Host totals, one row per tick.
SYSTEM: Final = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("cores", pa.int16(), nullable=False),
        pa.field("cpu_busy_cores", pa.float32()),
        pa.field("mem_total_bytes", pa.int64()),
        pa.field("mem_used_bytes", pa.int64()),
        pa.field("mem_available_bytes", pa.int64()),
    ]
)

#: Enforcement and collector events: pause, resume, warn, throttle, queue, reject, timeout,
#: limit-change, drop (retention), start, stop.
EVENTS: Final = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("scope", pa.string()),  # agent, project, workspace
        pa.field("project", pa.string()),
        pa.field("agent", pa.string()),
        pa.field("pids", pa.list_(pa.int32())),
        pa.field("metric", pa.string()),  # cpu, memory, fds, threads
        pa.field("value", pa.float64()),
        pa.field("limit", pa.float64()),
        pa.field("message", pa.string()),
    ]
)

#: Effective limits over time: one row per project (agent empty) and per limited agent,
#: written at start and whenever a limit changes, so reports compare usage to the limit in force.
LIMITS: Final = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("project", pa.string(), nullable=False),
        pa.field("agent", pa.string(), nullable=False),  # "" for the project itself
        pa.field("cpu_limit_percent", pa.float64()),  # percent of the whole machine
        pa.field("memory_limit_bytes", pa.int64()),
        pa.field("priority", pa.int8()),
        pa.field("strategy", pa.string()),
        pa.field("profile", pa.string()),
        pa.field("reason", pa.string()),  # start, profile, rebalance, apply-tuning
    ]
)

TABLES: Final[dict[str, pa.Schema]] = {
    "samples": SAMPLES,
    "processes": PROCESSES,
    "system": SYSTEM,
    "events": EVENTS,
    "limits": LIMITS,
}

#: Bumped when a table's columns change; readers use union_by_name, so old files keep working.
SCHEMA_VERSIONS: Final[dict[str, int]] = {name: 1 for name in TABLES}

#: Sort order for compaction: series first, then time.
SORT_KEYS: Final[dict[str, list[str]]] = {
    "samples": ["host", "project", "agent", "pid", "start_time", "ts"],
    "processes": ["host", "pid", "start_time", "ts"],
    "system": ["host", "ts"],
    "events": ["ts"],
    "limits": ["host", "project", "agent", "ts"],
}
