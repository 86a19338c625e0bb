"""The tables of the metrics store as plain Python: names, columns, kinds and schema versions.

This module is the storage contract shared by the collector, the store, the simulator and the
analytics; :mod:`devloop.store.schema` builds the pyarrow schemas from it. It imports nothing
heavy on purpose: the long-running collector encodes its spool from this description alone and
never loads pyarrow. Column order here is the order of the tuples the collector hands to the store.

Units: ``ts`` and start times are UTC timestamps in microseconds; ``cpu_cores`` is cores used
over the interval that ends at ``ts`` (1.5 = one and a half cores), so a percent of the machine is
``100 * cpu_cores / system.cores``; sizes are bytes; CPU limits are percent of the whole machine.

Kinds and their Parquet / Arrow types::

    ts        timestamp[us, tz=UTC]       i8, i16, i32, i64   int8 ... int64
    str       string (UTF-8)              f32, f64            float32, float64
    list_i32  list<int32>

and, in rollups only (sums and maxima as DuckDB computes them)::

    i128      decimal128(38, 0)           (a sum of int64 values: DuckDB's HUGEINT)
    top_f64   struct<v: float64, n: int64>    a value and minus the epoch microseconds of
    top_i64   struct<v: int64, n: int64>      its first tick (the largest is the earliest peak)

The rollups (:mod:`devloop.store.rollups`) are declared here too, one schema per kind
(:data:`ROLLUP_COLUMNS`) with its version (:data:`ROLLUP_VERSIONS`).
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Kind = Literal[
    "ts",
    "str",
    "i8",
    "i16",
    "i32",
    "i64",
    "f32",
    "f64",
    "list_i32",
    "i128",
    "top_f64",
    "top_i64",
    "bool",
]

SCHEMA_VERSION_KEY: Final = b"devloop.schema_version"
TABLE_KEY: Final = b"devloop.table"


class Column(NamedTuple):
    """One column of a table."""

    name: str
    kind: Kind
    nullable: bool = True


#: One row per attributed process per tick.
SAMPLES: Final = (
    Column("ts", "ts", nullable=False),
    Column("host", "str", nullable=False),
    Column("project", "str", nullable=False),
    Column("agent", "str", nullable=False),
    Column("pid", "i32", nullable=False),
    Column("start_time", "ts", nullable=False),  # process start: (pid, start_time) is identity
    Column("ppid", "i32"),
    Column("name", "str"),
    Column("cpu_cores", "f32"),  # cores used since the previous tick
    Column("cpu_seconds", "f64"),  # cumulative user+system CPU of the process itself
    Column("rss_bytes", "i64"),
    Column("fds", "i32"),
    Column("threads", "i32"),
    Column("io_read_bytes", "i64"),  # cumulative
    Column("io_write_bytes", "i64"),  # cumulative
    Column("state", "str"),  # running, sleeping, disk-sleep, stopped, zombie, idle
)

#: One row per process the first time it is seen (command lines are not repeated per sample).
PROCESSES: Final = (
    Column("ts", "ts", nullable=False),  # first seen
    Column("host", "str", nullable=False),
    Column("pid", "i32", nullable=False),
    Column("start_time", "ts", nullable=False),
    Column("project", "str", nullable=False),
    Column("agent", "str", nullable=False),
    Column("ppid", "i32"),
    Column("name", "str"),
    Column("cmdline", "str"),  # NUL-free, arguments joined by single spaces
    Column("cwd", "str"),
    Column("username", "str"),
    Column("run_id", "str"),  # the devloop run it belongs to (DEVLOOP_RUN_ID); null if none
)

#: Host totals, one row per tick.
SYSTEM: Final = (
    Column("ts", "ts", nullable=False),
    Column("host", "str", nullable=False),
    Column("cores", "i16", nullable=False),
    Column("cpu_busy_cores", "f32"),
    Column("mem_total_bytes", "i64"),
    Column("mem_used_bytes", "i64"),
    Column("mem_available_bytes", "i64"),
)

#: Enforcement and collector events: pause, resume, warn, throttle, queue, reject, timeout,
#: limit-change, drop (retention), start, stop.
EVENTS: Final = (
    Column("ts", "ts", nullable=False),
    Column("host", "str", nullable=False),
    Column("action", "str", nullable=False),
    Column("scope", "str"),  # agent, project, workspace
    Column("project", "str"),
    Column("agent", "str"),
    Column("pids", "list_i32"),
    Column("metric", "str"),  # cpu, memory, fds, threads
    Column("value", "f64"),
    Column("limit", "f64"),
    Column("message", "str"),
)

#: Effective limits over time: one row per project (agent empty) and per limited agent,
#: written at start and whenever a limit changes, so reports compare usage to the limit in force.
LIMITS: Final = (
    Column("ts", "ts", nullable=False),
    Column("host", "str", nullable=False),
    Column("project", "str", nullable=False),
    Column("agent", "str", nullable=False),  # "" for the project itself
    Column("cpu_limit_percent", "f64"),  # percent of the whole machine
    Column("memory_limit_bytes", "i64"),
    Column("priority", "i8"),
    Column("strategy", "str"),
    Column("profile", "str"),
    Column("reason", "str"),  # start, profile, rebalance, apply-tuning
)

#: One row per agent run started by devloop (``devloop run``, ``devloop watch``, stress-test),
#: written when the run ends (or, for a run whose launcher died, when that is found). The CPU
#: and max RSS come from the kernel at reap time (``wait4`` of the run's root process: its own
#: use plus every descendant it waited for), so they are exact however short the run; the
#: ``tick_*`` and ``peak_*`` columns are what the collector's ticks saw of the run.
RUNS: Final = (
    Column("ts", "ts", nullable=False),  # when the row was written (the partition it lands in)
    Column("host", "str", nullable=False),
    Column("run_id", "str", nullable=False),  # unique; carried as DEVLOOP_RUN_ID
    Column("project", "str", nullable=False),
    Column("agent", "str", nullable=False),
    Column("trigger", "str", nullable=False),  # manual, watch, stress
    Column("status", "str", nullable=False),  # complete, incomplete (its launcher died)
    Column("command", "str"),  # arguments joined by single spaces
    Column("cwd", "str"),
    Column("pid", "i32"),  # the run's root process (pid, start_time)
    Column("start_time", "ts"),
    Column("queued", "ts"),  # asked to run (equals started when it never waited)
    Column("started", "ts"),
    Column("ended", "ts"),  # reaped; for an incomplete run the last moment it was known
    Column("exit_code", "i16"),  # null when killed by a signal or incomplete
    Column("signal", "i16"),  # the signal that ended it, if one did
    Column("queue_wait_seconds", "f64"),
    Column("paused_seconds", "f64"),  # ticks the enforcer held it paused
    Column("throttled_seconds", "f64"),  # ticks the enforcer held it throttled
    Column("cpu_user_seconds", "f64"),  # from wait4: the root and its waited-for descendants
    Column("cpu_system_seconds", "f64"),
    Column("max_rss_bytes", "i64"),  # from wait4: the largest RSS of one process of the tree
    Column("tick_cpu_seconds", "f64"),  # CPU the ticks counted before the run ended
    Column("ticks", "i32"),  # ticks that saw a process of the run
    Column("peak_cores", "f32"),  # the largest per-tick sum of the run's cpu_cores
    Column("peak_rss_bytes", "i64"),  # the largest per-tick sum of the run's rss_bytes
    Column("log_path", "str"),  # where the run's output went (devloop watch), if anywhere
)

TABLE_COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "samples": SAMPLES,
    "processes": PROCESSES,
    "system": SYSTEM,
    "events": EVENTS,
    "limits": LIMITS,
    "runs": RUNS,
}

#: Bumped when a table's columns change; readers use union_by_name, so old files keep working.
SCHEMA_VERSIONS: Final[dict[str, int]] = {**{name: 1 for name in TABLE_COLUMNS}, "processes": 2}

#: Columns of earlier schema versions, so a spool segment written before an upgrade still
#: decodes: ``(table, version) -> columns``. Version 1 of ``processes`` had no ``run_id``.
PAST_COLUMNS: Final[dict[tuple[str, int], tuple[Column, ...]]] = {
    ("processes", 1): PROCESSES[:-1],
}

#: Sort order for compaction: series first, then time.
SORT_KEYS: Final[dict[str, list[str]]] = {
    "samples": ["host", "project", "agent", "pid", "start_time", "ts"],
    "processes": ["host", "pid", "start_time", "ts"],
    "system": ["host", "ts"],
    "events": ["ts"],
    "limits": ["host", "project", "agent", "ts"],
    "runs": ["host", "started", "run_id"],
}


# --- rollups ----------------------------------------------------------------------------------
#
# Per closed hour of ``samples``, what compaction writes beside the hour's sorted file and the
# reports read instead of its rows (devloop.store.rollups says how each is built). ``cpu`` and
# ``rss`` are sums over processes (cores; bytes, as doubles), ``fds`` and ``threads`` sums too.

#: Footer keys of a rollup file: its kind and the samples files it was built from (its version
#: is under SCHEMA_VERSION_KEY, as a table's).
ROLLUP_KEY: Final = b"devloop.rollup"
ROLLUP_SOURCES_KEY: Final = b"devloop.rollup_sources"

#: Per-tick sums: host, ts, the keys, then the values.
_TICK_VALUES: Final = (
    Column("cpu", "f64"),
    Column("rss", "f64"),
    Column("fds", "i64"),
    Column("threads", "i64"),
)


def _hourly(*keys: str) -> tuple[Column, ...]:
    """An hour's per-tick sums aggregated per ``keys``: first and last tick, ticks, and per
    value its sum, count (of non-null ticks), min, max and ``top`` (the max with its tick)."""
    columns = [
        *(Column(key, "str", nullable=False) for key in keys),
        Column("first", "ts", nullable=False),
        Column("last", "ts", nullable=False),
        Column("ticks", "i64", nullable=False),
    ]
    values: tuple[tuple[str, Kind, Kind, Kind], ...] = (
        ("cpu", "f64", "f64", "top_f64"),
        ("rss", "f64", "f64", "top_f64"),
        ("fds", "i64", "i128", "top_i64"),
        ("threads", "i64", "i128", "top_i64"),
    )
    for value, kind, total, top in values:
        columns += [
            Column(f"{value}_sum", total),
            Column(f"{value}_n", "i64", nullable=False),
            Column(f"{value}_min", kind),
            Column(f"{value}_max", kind),
            Column(f"{value}_top", top),
        ]
    return tuple(columns)


#: The samples of some ticks of one hour, as they are (``edges`` and ``thinned``).
_POINTS: Final = (
    Column("host", "str", nullable=False),
    Column("project", "str", nullable=False),
    Column("agent", "str", nullable=False),
    Column("pid", "i32", nullable=False),
    Column("start_time", "ts", nullable=False),
    Column("ts", "ts", nullable=False),
    Column("rss_bytes", "i64"),
    Column("fds", "i32"),
)

#: Per kind, in the order compaction builds them (``agent_hour`` is built from ``agent``).
ROLLUP_COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    # samples summed per tick and project (processes: the rows summed)
    "project": (
        Column("host", "str", nullable=False),
        Column("ts", "ts", nullable=False),
        Column("project", "str", nullable=False),
        *_TICK_VALUES,
        Column("processes", "i64", nullable=False),
    ),
    # the same per tick, project and agent
    "agent": (
        Column("host", "str", nullable=False),
        Column("ts", "ts", nullable=False),
        Column("project", "str", nullable=False),
        Column("agent", "str", nullable=False),
        *_TICK_VALUES,
        Column("processes", "i64", nullable=False),
    ),
    # one row per process life seen in the hour: its first and last tick, its rows
    "lives": (
        Column("host", "str", nullable=False),
        Column("project", "str", nullable=False),
        Column("agent", "str", nullable=False),
        Column("pid", "i32", nullable=False),
        Column("start_time", "ts", nullable=False),
        Column("first", "ts", nullable=False),
        Column("last", "ts", nullable=False),
        Column("rows", "i64", nullable=False),
    ),
    "agent_hour": _hourly("host", "project", "agent"),
    # the samples at each process life's first and last tick in the hour
    "edges": _POINTS,
    # the samples at the ticks whose epoch second is a multiple of rollups.THINNED_EVERY
    "thinned": _POINTS,
    "project_hour": _hourly("host", "project"),
    # the project sums summed per tick over all projects (projects: how many had a sum)
    "workspace": (
        Column("host", "str", nullable=False),
        Column("ts", "ts", nullable=False),
        *_TICK_VALUES,
        Column("projects", "i64", nullable=False),
    ),
    # how many ticks of the hour each agent's CPU sum had each value
    "agent_cpu": (
        Column("host", "str", nullable=False),
        Column("project", "str", nullable=False),
        Column("agent", "str", nullable=False),
        Column("cpu", "f64", nullable=False),
        Column("n", "i64", nullable=False),
    ),
    # the agent sums ordered by host, project, agent, ts
    "agent_series": (
        Column("host", "str", nullable=False),
        Column("project", "str", nullable=False),
        Column("agent", "str", nullable=False),
        Column("ts", "ts", nullable=False),
        Column("cpu", "f64"),
        Column("rss", "f64"),
    ),
    # as agent_cpu, for memory
    "agent_rss": (
        Column("host", "str", nullable=False),
        Column("project", "str", nullable=False),
        Column("agent", "str", nullable=False),
        Column("rss", "f64", nullable=False),
        Column("n", "i64", nullable=False),
    ),
}

#: Bumped when what a kind holds changes: the hour's rollups are keyed on every kind's version
#: (with the hour's files), so the next compaction rebuilds them and readers meanwhile read the
#: hour's rows.
#: ``agent_hour`` and ``project_hour`` 2: a null value is not an hour's top (a struct with a
#: null ``v`` compared as the largest, so a process's first tick, whose CPU is unknown, was
#: the tick of the hour's CPU peak).
ROLLUP_VERSIONS: Final[dict[str, int]] = {
    **dict.fromkeys(ROLLUP_COLUMNS, 1),
    "agent_hour": 2,
    "project_hour": 2,
}
