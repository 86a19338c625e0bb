"""What autotune reads from the store: per entity (project, or project/agent) and UTC hour, the
per-tick statistics and a histogram of CPU, in one pass over the per-tick sums.

An entity's series is the analytics definition (``devloop.analytics.query``): a project's is
the sum over its processes at every collector tick, 0 where none ran; an agent's the sum over
its processes at the ticks where it had one. Per hour ``h`` (hours since ``origin``) we keep
ticks, CPU sum and max, rss max, min and sum, censored ticks, and against the limits in force
(the store's ``limits`` rows, newest at or before each tick): ticks over the CPU limit, over the
memory limit, over either, and the sums of the limits (for slack). The CPU histogram holds every
tick's CPU, censored ticks raised (see :class:`~devloop.tune.params.TuneParameters`), in bins
of :data:`~devloop.tune.params.CPU_BIN` points; and the joint histogram of the observed CPU and
memory (bins of a MiB), from which the backtest counts ticks over any limit on those grids
exactly, without reading the store again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from devloop.tune.params import CPU_BIN, MEMORY_BIN, TuneParameters

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl

    from devloop.analytics import Selection, Store
    from devloop.config import Workspace

HOUR_US = 3_600_000_000
#: CPU is stored as float32 cores: within a millionth of the limit is at the limit.
TOLERANCE = 1e-6
#: Upper end of the "at the limit" band, as a multiple of the limit.
AT_LIMIT_TOP = 1.02

Key = tuple[str, str]  # (project, agent); agent "" for the project itself

STAT_COLUMNS = (
    "ticks",
    "cpu_sum",
    "cpu_max",
    "rss_max",
    "rss_min",
    "rss_sum",
    "cens_cpu",
    "cens_mem",
    "paused",
    "cpu_over",
    "mem_over",
    "any_over",
    "cpu_limit_sum",
    "mem_limit_sum",
    "limit_ticks",
)


#: The columns of the fine frame (per entity, hour since the epoch ``ah``, CPU bin ``b`` and
#: joint bins ``cb``/``mb``) that :func:`_read_level` aggregates, with their types.
FINE_COLUMNS: Final = {
    "project": "str",
    "agent": "str",
    "ah": "int",
    "b": "int",
    "cb": "int",
    "mb": "int",
    "ticks": "int",
    "cpu_sum": "float",
    "cpu_max": "float",
    "rss_max": "float",
    "rss_min": "float",
    "rss_sum": "float",
    "cens_cpu": "int",
    "cens_mem": "int",
    "paused": "int",
    "cpu_over": "int",
    "mem_over": "int",
    "any_over": "int",
    "cpu_limit_sum": "float",
    "mem_limit_sum": "float",
    "limit_ticks": "int",
}


@dataclass
class EntityHistory:
    """One project's or agent's hours (arrays of length ``n_hours``) and CPU histogram."""

    key: Key
    stats: dict[str, npt.NDArray[np.float64]]
    hist_hour: npt.NDArray[np.int64]
    hist_bin: npt.NDArray[np.int64]
    hist_count: npt.NDArray[np.float64]
    #: Joint bins of the observed CPU and memory per hour (for the backtest).
    joint_hour: npt.NDArray[np.int64]
    joint_cpu: npt.NDArray[np.int64]
    joint_memory: npt.NDArray[np.int64]
    joint_count: npt.NDArray[np.float64]
    limit_changes: list[datetime] = field(default_factory=list)
    pause_events: int = 0

    @property
    def name(self) -> str:
        project, agent = self.key
        return f"{project}/{agent}" if agent else project


@dataclass
class History:
    """Everything the fit and the backtest need, per entity, by hour since ``origin``."""

    origin: datetime
    n_hours: int
    start: datetime
    end: datetime
    interval: float
    system_ticks: npt.NDArray[np.float64]
    cores: float
    memory_total: int
    entities: dict[Key, EntityHistory]
    limits_note: str | None = None

    def hour_start(self, hour: int) -> datetime:
        return self.origin + timedelta(hours=hour)


def cpu_bin_sql(value: str) -> str:
    """SQL for the bin of a CPU percent (bin k holds ((k-1)/10, k/10]; CPU is stored as float32,
    so a value within 1e-5 points above an edge counts as on it)."""
    return f"greatest(CAST(ceil({value} / {CPU_BIN} - 1e-4) AS BIGINT), 0)"


def memory_bin_sql(value: str) -> str:
    """SQL for the bin of a size in bytes (bin k holds (k-1, k] MiB)."""
    return f"greatest(CAST(ceil({value} / {MEMORY_BIN}) AS BIGINT), 0)"


def bin_upper(bins: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The upper edge (CPU percent) of each bin."""
    import numpy as np

    edges: npt.NDArray[np.float64] = bins.astype(np.float64) * CPU_BIN
    return edges


def _register(store: Store, name: str, rows: list[dict[str, Any]], schema: Any) -> None:
    import pyarrow as pa

    store.db.register(name, pa.Table.from_pylist(rows, schema=schema))


_FAR = datetime(9999, 1, 1, tzinfo=UTC)


def limit_intervals(
    store: Store, workspace: Workspace, keys: list[Key]
) -> tuple[list[dict[str, Any]], dict[Key, list[datetime]], str | None]:
    """Limit intervals ``(host, project, agent, start, stop, cpu, mem)`` per entity from the
    store's ``limits`` rows (an agent without rows of its own takes its project's), the change
    times per entity, and a note when the store has no limits (then workspace.json's limits,
    in force since forever, stand in)."""
    rows = store.rows(
        "SELECT host, project, agent, ts, cpu_limit_percent, memory_limit_bytes FROM limits "
        "ORDER BY host, project, agent, ts"
    )
    note = None
    if not rows:
        from devloop.config.allocation import allocate

        allocation = allocate(workspace)
        hosts = [host for (host,) in store.rows("SELECT DISTINCT host FROM system")]
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        for host in hosts:
            for name, p in allocation.projects.items():
                rows.append((host, name, "", epoch, p.cpu, p.memory_bytes))
            for a in allocation.agents.values():
                rows.append((host, a.project, a.agent, epoch, a.cpu, a.memory_bytes))
        note = "the store holds no limits: the current limits are those of workspace.json"
    by_key: dict[tuple[str, str, str], list[tuple[datetime, float | None, float | None]]] = {}
    for host, project, agent, ts, cpu, mem in rows:
        by_key.setdefault((host, project, agent), []).append((ts, cpu, mem))
    hosts = sorted(
        {host for host, _, _ in by_key}
        | {host for (host,) in store.rows("SELECT DISTINCT host FROM system")}
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    changes: dict[Key, list[datetime]] = {}
    for host in hosts:
        for entity, (project, agent) in enumerate(keys):
            own = by_key.get((host, project, agent)) or by_key.get((host, project, ""), [])
            # Every tick joins exactly one interval: no limit (null) before the first row.
            chain = [(epoch, None, None), *own] if not own or own[0][0] > epoch else own
            previous: tuple[float | None, float | None] | None = None
            for index, (ts, cpu, mem) in enumerate(chain):
                stop = chain[index + 1][0] if index + 1 < len(chain) else _FAR
                out.append({"e": entity, "host": host, "project": project, "agent": agent,
                            "start": ts, "stop": stop, "cpu": cpu, "mem": mem})  # fmt: skip
                if previous is not None and previous != (cpu, mem) and previous[0] is not None:
                    changes.setdefault((project, agent), []).append(ts)
                previous = (cpu, mem)
    return out, changes, note


def pause_intervals(
    store: Store, selection: Selection, keys: list[Key]
) -> tuple[list[dict[str, Any]], dict[Key, int]]:
    """Intervals during which an entity (or its project, or the workspace) was paused or
    throttled, merged per entity, and the pause/throttle events per entity."""
    where, params = store.where(selection, names=False)
    events = store.rows(
        "SELECT ts, action, scope, project, agent FROM events WHERE action IN "
        f"('pause', 'resume', 'throttle', 'unthrottle') AND {where} ORDER BY ts",
        params,
    )
    open_: dict[tuple[str, str | None, str | None], datetime] = {}
    spans: list[tuple[str, str | None, str | None, datetime, datetime]] = []
    for ts, action, scope, project, agent in events:
        target = (scope or "", project, agent if scope == "agent" else None)
        if action in ("pause", "throttle"):
            open_.setdefault(target, ts)
        elif target in open_:
            spans.append((*target, open_.pop(target), ts))
    for target, begun in open_.items():
        spans.append((*target, begun, selection.end))
    counts: dict[Key, int] = {}
    merged: list[dict[str, Any]] = []
    for entity, key in enumerate(keys):
        project, agent = key
        mine = sorted(
            (begin, stop)
            for scope, p, a, begin, stop in spans
            if scope == "workspace" or (p == project and (a is None or agent == "" or a == agent))
        )
        counts[key] = len(mine)
        for begin, stop in _merge(mine):
            merged.append({"e": entity, "start": begin, "stop": stop})
    return merged, counts


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for begin, stop in spans:
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((begin, stop))
    return out


def _series_sql(store: Store, selection: Selection, *, by_agent: bool) -> tuple[str, list[Any]]:
    from devloop.analytics.query import tick_sums_sql

    sums, params = tick_sums_sql(store, selection, by_agent=by_agent)
    agent = "t.agent" if by_agent else "''"
    sql = (
        f"(SELECT t.host, t.ts, t.project, {agent} AS agent, 100.0 * t.cpu / c.cores AS cpu, "
        f"t.rss FROM {sums} t JOIN {store.cores_sql()} c ON c.host = t.host)"
    )
    return sql, params


def read_history(
    store: Store, selection: Selection, workspace: Workspace, params: TuneParameters
) -> History:
    """Read the hours of every project and agent of ``selection`` (see the module doc)."""
    import numpy as np
    import pyarrow as pa

    # The hours start at the range's, or at the oldest tick when the range starts before the
    # data: a range larger than the store costs what the store costs (no empty hours).
    oldest, _ = store.span()
    first = max(selection.start, oldest) if oldest is not None else selection.start
    origin = first.replace(minute=0, second=0, microsecond=0)
    origin_us = int((origin - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    n_hours = max(1, math.ceil((selection.end - origin) / timedelta(hours=1)))
    known = store.known()
    project_keys: list[Key] = [(p, "") for p in selection.projects]
    agent_keys: list[Key] = [
        (p, a) for p in selection.projects for a in known.get(p, ()) if a in selection.agents
    ]
    keys = project_keys + agent_keys
    limits, changes, note = limit_intervals(store, workspace, keys)
    pauses, pause_counts = pause_intervals(store, selection, keys)
    ts_type = pa.timestamp("us", tz="UTC")
    _register(
        store,
        "_tune_limits",
        limits,
        pa.schema(
            [
                ("e", pa.int32()),
                ("host", pa.string()),
                ("project", pa.string()),
                ("agent", pa.string()),
                ("start", ts_type),
                ("stop", ts_type),
                ("cpu", pa.float64()),
                ("mem", pa.float64()),
            ]
        ),
    )
    _register(
        store,
        "_tune_pauses",
        pauses,
        pa.schema(
            [
                ("e", pa.int32()),
                ("start", ts_type),
                ("stop", ts_type),
            ]
        ),
    )

    where, where_params = store.where(selection, names=False)
    tick_rows = store.rows(
        f"SELECT (epoch_us(ts) - ?) // {HOUR_US} AS h, count(*) FROM system WHERE {where} "
        "GROUP BY h",
        [origin_us, *where_params],
    )
    system_ticks = np.zeros(n_hours)
    for hour, count in tick_rows:
        if 0 <= hour < n_hours:
            system_ticks[hour] += count
    ((cores, memory_total),) = store.rows(
        "SELECT coalesce(max(cores), 1), coalesce(max(mem_total_bytes), 0) FROM system"
    )

    entities: dict[Key, EntityHistory] = {}
    for by_agent, chosen in ((False, project_keys), (True, agent_keys)):
        if not chosen:
            continue
        found = _read_level(store, selection, params, origin_us, keys, by_agent=by_agent)
        for key in chosen:
            entities[key] = _entity(key, found.get(key, {}), n_hours)
    _fill_project_idle(store, selection, entities, project_keys, system_ticks, origin_us)
    for key, entity in entities.items():
        entity.limit_changes = [ts for ts in changes.get(key, []) if ts >= selection.start]
        entity.pause_events = pause_counts.get(key, 0)
    return History(
        origin=origin,
        n_hours=n_hours,
        start=selection.start,
        end=selection.end,
        interval=selection.interval,
        system_ticks=system_ticks,
        cores=float(cores),
        memory_total=int(memory_total),
        entities=entities,
        limits_note=note,
    )


def _read_level(
    store: Store,
    selection: Selection,
    params: TuneParameters,
    origin_us: int,
    keys: list[Key],
    *,
    by_agent: bool,
) -> dict[Key, dict[str, Any]]:
    import numpy as np
    import polars as pl

    fine = _fine_sql(store, selection, params, by_agent=by_agent)
    # Entity ids and hours since origin; a fixed row order, so every sum below adds its
    # terms in the same order whatever order the query gave the rows in.
    ids = pl.DataFrame(
        {"project": [k[0] for k in keys], "agent": [k[1] for k in keys],
         "e": list(range(len(keys)))},
        schema={"project": pl.String, "agent": pl.String, "e": pl.Int64},
    )  # fmt: skip
    fine = (
        fine.join(ids, on=["project", "agent"], how="inner")
        .with_columns(h=pl.col("ah") - origin_us // HOUR_US)
        .sort("e", "h", "b", "cb", "mb")
    )
    maxima = {"cpu_max", "rss_max"}
    hourly = fine.group_by("e", "h", maintain_order=True).agg(
        [
            pl.col(c).max()
            if c in maxima
            else pl.col(c).min()
            if c == "rss_min"
            else pl.col(c).sum()
            for c in STAT_COLUMNS
        ]
    )
    binned = fine.group_by("e", "h", "b", maintain_order=True).agg(pl.col("ticks").sum())
    out: dict[Key, dict[str, Any]] = {}
    for (entity,), part in hourly.group_by("e", maintain_order=True):
        out.setdefault(keys[int(entity)], {})["stats"] = {"h": part["h"].to_numpy()} | {
            column: part[column].fill_null(0).to_numpy().astype(np.float64)
            for column in STAT_COLUMNS
        }
    for (entity,), part in binned.group_by("e", maintain_order=True):
        out.setdefault(keys[int(entity)], {})["hist"] = tuple(
            part[c].to_numpy().astype(np.float64 if c == "ticks" else np.int64)
            for c in ("h", "b", "ticks")
        )
    for (entity,), part in fine.group_by("e", maintain_order=True):
        out.setdefault(keys[int(entity)], {})["joint"] = tuple(
            part[c].to_numpy().astype(np.float64 if c == "ticks" else np.int64)
            for c in ("h", "cb", "mb", "ticks")
        )
    return out


def _fine_sql(
    store: Store, selection: Selection, params: TuneParameters, *, by_agent: bool
) -> pl.DataFrame:
    """The fine bins of ``selection`` from the store: per entity (project, agent), hour since
    the epoch (``ah``) and CPU/memory bin, the counts and sums of
    :data:`FINE_COLUMNS`."""
    series, series_params = _series_sql(store, selection, by_agent=by_agent)
    raised = f"greatest(cpu, coalesce(cpu_limit, cpu)) * {1 + params.censor_raise}"
    sql = f"""
        WITH s AS {series},
        x AS (
            SELECT l.project, l.agent, s.cpu, s.rss, epoch_us(s.ts) // {HOUR_US} AS ah,
                   l.cpu AS cpu_limit, l.mem AS mem_limit, p.start IS NOT NULL AS paused
            FROM s
            JOIN _tune_limits l ON l.host = s.host AND l.project = s.project
                 AND l.agent = s.agent AND s.ts >= l.start AND s.ts < l.stop
            LEFT JOIN _tune_pauses p ON p.e = l.e AND s.ts >= p.start AND s.ts < p.stop
        ),
        y AS (
            SELECT *,
                   paused OR (cpu >= ? * cpu_limit AND cpu <= {AT_LIMIT_TOP} * cpu_limit)
                       AS cens_cpu,
                   coalesce(rss >= ? * mem_limit AND rss <= {AT_LIMIT_TOP} * mem_limit, false)
                       AS cens_mem,
                   coalesce(cpu > cpu_limit * {1 + TOLERANCE}, false) AS cpu_over,
                   coalesce(rss > mem_limit, false) AS mem_over
            FROM x
        )
        SELECT project, agent, ah,
               CASE WHEN cens_cpu THEN {cpu_bin_sql(raised)} ELSE {cpu_bin_sql("cpu")} END AS b,
               {cpu_bin_sql("cpu")} AS cb, {memory_bin_sql("rss")} AS mb,
               count(*) AS ticks, sum(cpu) AS cpu_sum, max(cpu) AS cpu_max,
               max(rss) AS rss_max, min(rss) AS rss_min, sum(rss) AS rss_sum,
               count(*) FILTER (WHERE cens_cpu) AS cens_cpu,
               count(*) FILTER (WHERE cens_mem) AS cens_mem,
               count(*) FILTER (WHERE paused) AS paused,
               count(*) FILTER (WHERE cpu_over) AS cpu_over,
               count(*) FILTER (WHERE mem_over) AS mem_over,
               count(*) FILTER (WHERE cpu_over OR mem_over) AS any_over,
               sum(cpu_limit) AS cpu_limit_sum, sum(mem_limit) AS mem_limit_sum,
               count(cpu_limit) AS limit_ticks
        FROM y
        GROUP BY ALL
    """
    import polars as pl

    frame = store.frame(sql, [*series_params, params.censor_at, params.censor_at])
    types = {"str": pl.String, "int": pl.Int64, "float": pl.Float64}
    return frame.select(pl.col(name).cast(types[kind]) for name, kind in FINE_COLUMNS.items())


def _entity(key: Key, found: dict[str, Any], n_hours: int) -> EntityHistory:
    import numpy as np

    arrays = {column: np.zeros(n_hours) for column in STAT_COLUMNS}
    arrays["rss_min"] = np.full(n_hours, np.nan)
    stats = found.get("stats")
    if stats:
        hours = stats["h"].astype(np.int64)
        inside = (hours >= 0) & (hours < n_hours)
        for column in STAT_COLUMNS:
            arrays[column][hours[inside]] = stats[column][inside]
    empty = np.zeros(0, dtype=np.int64)
    hist = found.get("hist", (empty, empty, np.zeros(0)))
    joint = found.get("joint", (empty, empty, empty, np.zeros(0)))
    keep_hist = (hist[0] >= 0) & (hist[0] < n_hours)
    keep_joint = (joint[0] >= 0) & (joint[0] < n_hours)
    return EntityHistory(
        key,
        arrays,
        *(column[keep_hist] for column in hist),
        *(column[keep_joint] for column in joint),
    )


def _fill_project_idle(
    store: Store,
    selection: Selection,
    entities: dict[Key, EntityHistory],
    keys: list[Key],
    system_ticks: npt.NDArray[np.float64],
    origin_us: int,
) -> None:
    """A project's series is 0 at ticks where none of its processes ran: count those ticks
    (bin 0, rss min 0) and the limits in force at every tick (for slack)."""
    import numpy as np

    where, params = store.where(selection, names=False)
    # Per host and hour: ticks and their span. An hour inside one limit interval adds
    # ticks x limit; only an hour in which a limit changed is read tick by tick.
    spans = store.rows(
        f"SELECT host, (epoch_us(ts) - ?) // {HOUR_US} AS h, count(*), min(ts), max(ts) "
        f"FROM system WHERE {where} GROUP BY ALL",
        [origin_us, *params],
    )
    intervals: dict[tuple[str, str], list[tuple[datetime, datetime, float, float]]] = {}
    for host, project, begin, stop, cpu, mem in store.rows(
        "SELECT host, project, start, stop, cpu, mem FROM _tune_limits WHERE agent = ''"
    ):
        intervals.setdefault((host, project), []).append((begin, stop, cpu, mem))
    n_hours = len(system_ticks)
    sums = {key: np.zeros((3, n_hours)) for key in keys}
    mixed: list[tuple[str, int]] = []
    for host, hour, count, first, last in spans:
        if not 0 <= hour < n_hours:
            continue
        for key in keys:
            found = intervals.get((host, key[0]), [])
            covering = [i for i in found if i[0] <= first and last < i[1]]
            if covering:
                _, _, cpu, mem = covering[0]
                if cpu is not None and mem is not None:
                    sums[key][:, hour] += (count * cpu, count * mem, count)
            elif any(i[0] <= last and first < i[1] for i in found):
                mixed.append((host, hour))
    if mixed:
        frame = store.frame(
            f"""
            WITH t AS (SELECT host, ts, (epoch_us(ts) - ?) // {HOUR_US} AS h FROM system
                       WHERE {where}),
            m AS (SELECT unnest(?::VARCHAR[]) AS host, unnest(?::BIGINT[]) AS h)
            SELECT l.project, t.h, sum(l.cpu) AS c, sum(l.mem) AS m, count(l.cpu) AS n
            FROM t SEMI JOIN m ON m.host = t.host AND m.h = t.h
            JOIN _tune_limits l ON l.host = t.host AND l.agent = '' AND t.ts >= l.start
                 AND t.ts < l.stop
            GROUP BY ALL
            """,
            [origin_us, *params, [m[0] for m in set(mixed)], [m[1] for m in set(mixed)]],
        )
        for project, hour, cpu, mem, count in frame.iter_rows():
            key = (str(project), "")
            if key in sums:
                sums[key][:, int(hour)] += (cpu, mem, count)
    for key in keys:
        entity = entities[key]
        stats = entity.stats
        idle = np.maximum(system_ticks - stats["ticks"], 0)
        stats["ticks"] = stats["ticks"] + idle
        stats["rss_min"] = np.where(idle > 0, 0.0, stats["rss_min"])
        hours = np.nonzero(idle)[0]
        if len(hours):
            entity.hist_hour = np.concatenate([entity.hist_hour, hours.astype(np.int64)])
            entity.hist_bin = np.concatenate([entity.hist_bin, np.zeros(len(hours), np.int64)])
            entity.hist_count = np.concatenate([entity.hist_count, idle[hours]])
            zeros = np.zeros(len(hours), np.int64)
            entity.joint_hour = np.concatenate([entity.joint_hour, hours.astype(np.int64)])
            entity.joint_cpu = np.concatenate([entity.joint_cpu, zeros])
            entity.joint_memory = np.concatenate([entity.joint_memory, zeros])
            entity.joint_count = np.concatenate([entity.joint_count, idle[hours]])
        stats["cpu_limit_sum"], stats["mem_limit_sum"], stats["limit_ticks"] = sums[key]


def held_seconds(store: Store, selection: Selection) -> dict[Key, float]:
    """Per project (agent "") and agent, the seconds its runs that started in ``selection``
    were recorded paused or throttled by the enforcement (the ``runs`` table)."""
    rows = store.rows(
        "SELECT project, agent, sum(coalesce(paused_seconds, 0) + coalesce(throttled_seconds, 0))"
        " FROM runs WHERE started >= ? AND started < ? GROUP BY ALL",
        [selection.start, selection.end],
    )
    held: dict[Key, float] = {}
    for project, agent, seconds in rows:
        held[(project, agent)] = float(seconds or 0.0)
        held[(project, "")] = held.get((project, ""), 0.0) + float(seconds or 0.0)
    return held
