"""The per-tick series the reports are built from (definitions in :mod:`devloop.analytics._db`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store

if TYPE_CHECKING:
    import polars as pl

    from devloop.store.db import Raw

#: The project series' columns, in order (see :func:`project_series`).
PROJECT_SERIES_COLUMNS = (
    "host",
    "ts",
    "project",
    "cpu_percent",
    "rss_bytes",
    "fds",
    "threads",
    "processes",
)


#: Tie-break for arg_max: the earliest tick among equal peaks, so "when" is deterministic.
def arg_max_ts(value: str, ts: str = "ts") -> str:
    """``arg_max(ts, value)`` that picks the earliest tick among equal maxima and passes over
    ticks where ``value`` is null (a struct with a null ``v`` compares as the largest)."""
    top = f"{{'v': {value}, 'n': -epoch_us({ts})}}"
    return f"arg_max({ts}, CASE WHEN {value} IS NOT NULL THEN {top} END)"


def ticks_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """``(host, ts)`` of every collector tick in the range."""
    where, params = store.where(selection, names=False)
    return f"SELECT DISTINCT host, ts FROM system WHERE {where}", params


def _read(paths: Sequence[Raw]) -> str:
    """A relation of the rows at ``paths``: cache entries (one kind: one schema), or the raw
    ``samples`` rows of some hours (store files, and the spool's rows of the hours named by
    a :class:`~devloop.store.rollups.SpoolHour`)."""
    from devloop.store.db import SpoolHour

    files = [path for path in paths if isinstance(path, Path)]
    spooled = sorted({path.partition for path in paths if isinstance(path, SpoolHour)})
    if not spooled:
        return _read_files(files)
    # The views' spool tail (store.query registers it as ``_spool_samples``): the rows a
    # running collector has not yet converted, the newest ticks among them.
    hours = ", ".join(str(int(p.start.timestamp()) // 3600) for p in spooled)
    tail = f"SELECT * FROM _spool_samples WHERE epoch_us(ts) // {HOUR_US} IN ({hours})"
    if not files:
        return f"({tail})"
    return f"(SELECT * FROM {_read_files(files)} UNION ALL BY NAME {tail})"


def _read_files(paths: Sequence[Path]) -> str:
    """``read_parquet`` of ``paths``: cache entries (one kind: one schema) or store files.
    ``union_by_name`` (which reads every footer at every bind) only where schemas differ."""
    from devloop.store.db import ROLLUPS_DIR, consolidated, one_schema

    # <root>/_rollups/<kind>/date=D/hour=H/<key>.parquet
    entries = all(Path(path).parts[-5:-4] == (ROLLUPS_DIR,) for path in paths)
    if entries:
        paths = consolidated(paths)  # whole past days: one file each
    listing = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    union = "false" if entries or one_schema(paths) else "true"
    return f"read_parquet([{listing}], union_by_name = {union}, hive_partitioning = false)"


def _conditions(selection: Selection, *, times: bool = True) -> tuple[str, list[Any]]:
    parts = ["ts >= ?", "ts < ?"] if times else ["true"]
    params: list[Any] = [selection.start, selection.end] if times else []
    if selection.project_filter:
        parts.append(f"project IN ({', '.join('?' for _ in selection.projects)})")
        params.extend(selection.projects)
    if selection.agent_filter:
        parts.append(f"agent IN ({', '.join('?' for _ in selection.agents)})")
        params.extend(selection.agents)
    return " AND ".join(parts), params


def range_conditions(selection: Selection, *, times: bool = True) -> tuple[str, list[Any]]:
    """The condition picking ``selection``'s rows of a relation with ``ts``, ``project`` and
    ``agent`` columns but no ``date`` (a rollup, or files read by name), and its parameters;
    without the time condition when ``times`` is false (``true`` when nothing remains)."""
    return _conditions(selection, times=times)


def tick_sums_sql(store: Store, selection: Selection, *, by_agent: bool) -> tuple[str, list[Any]]:
    """A relation ``(host, ts, project[, agent], cpu, rss, fds, threads, processes)``: the
    selected samples summed per tick and project (and agent), only where a process was
    sampled; cpu is cores, rss bytes as a double. Read from the per-hour rollups where they
    exist (:mod:`devloop.store.rollups`), from raw rows elsewhere: the hours' files and
    their rows still in the spool, so the newest tick counts."""
    if not by_agent and selection.agent_filter:
        # Only some agents: the project sums are the sums of those agents' sums.
        agents, params = tick_sums_sql(store, selection, by_agent=True)
        sql = (
            "(SELECT host, ts, project, sum(cpu) AS cpu, sum(rss) AS rss, "
            "CAST(sum(fds) AS BIGINT) AS fds, CAST(sum(threads) AS BIGINT) AS threads, "
            f"CAST(sum(processes) AS BIGINT) AS processes FROM {agents} a "
            "GROUP BY host, ts, project)"
        )
        return sql, params
    from devloop.store.rollups import BUILD_SQL

    sources = store.sources(selection)
    kind = "agent" if by_agent else "project"
    keys = "host, ts, project, agent" if by_agent else "host, ts, project"
    where, params = _conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if sources.cached[kind]:
        parts.append(
            f"SELECT {keys}, cpu, rss, fds, threads, processes "
            f"FROM {_read(sources.cached[kind])} WHERE {where}"
        )
        all_params += params
    if sources.raw:
        source = f"(SELECT * FROM {_read(sources.raw)} WHERE {where})"
        parts.append(BUILD_SQL[kind].format(source=source))
        all_params += params
    if not parts:
        names = ", CAST(NULL AS VARCHAR) AS agent" if by_agent else ""
        parts.append(
            "SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS TIMESTAMPTZ) AS ts, "
            f"CAST(NULL AS VARCHAR) AS project{names}, CAST(NULL AS DOUBLE) AS cpu, "
            "CAST(NULL AS DOUBLE) AS rss, CAST(NULL AS BIGINT) AS fds, "
            "CAST(NULL AS BIGINT) AS threads, CAST(NULL AS BIGINT) AS processes WHERE false"
        )
    return "(" + " UNION ALL ".join(parts) + ")", all_params


def lives_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """A relation ``(host, project, agent, pid, start_time, first, last, rows)``: every
    process life with a selected sample in the range, its first and last sampled tick and
    its sample count within the range."""
    from devloop.store.rollups import BUILD_SQL

    sources = store.sources(selection)
    where, params = _conditions(selection)
    whole: list[Path] = []
    raw: list[Raw] = list(sources.raw)
    for partition, path in zip(sources.partitions, sources.cached["lives"], strict=True):
        if store.holds_whole(selection, partition):
            whole.append(path)
        else:  # an hour cut by the range: its rows, not its rollup
            raw.extend(sources.files[partition])
    parts: list[str] = []
    all_params: list[Any] = []
    names, name_params = _conditions(selection, times=False)
    if whole:
        parts.append(
            "SELECT host, project, agent, pid, start_time, first, last, rows "
            f"FROM {_read(whole)} WHERE {names}"
        )
        all_params += name_params
    if raw:
        source = f"(SELECT * FROM {_read(raw)} WHERE {where})"
        parts.append(BUILD_SQL["lives"].format(source=source))
        all_params += params
    if not parts:
        return (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            "CAST(NULL AS VARCHAR) AS agent, CAST(NULL AS INTEGER) AS pid, "
            "CAST(NULL AS TIMESTAMPTZ) AS start_time, CAST(NULL AS TIMESTAMPTZ) AS first, "
            "CAST(NULL AS TIMESTAMPTZ) AS last, CAST(NULL AS BIGINT) AS rows WHERE false)",
            [],
        )
    union = " UNION ALL ".join(parts)
    sql = (
        "(SELECT host, project, agent, pid, start_time, min(first) AS first, "
        f"max(last) AS last, CAST(sum(rows) AS BIGINT) AS rows FROM ({union}) "
        "GROUP BY host, project, agent, pid, start_time)"
    )
    return sql, all_params


#: Microseconds in an hour (the rollups' unit of time).
HOUR_US = 3_600_000_000

#: The values :func:`agent_hours_sql` aggregates.
HOUR_VALUES = ("cpu", "rss", "fds", "threads")


def _hour_split(
    store: Store, selection: Selection
) -> tuple[list[Path], list[Path], list[Raw], set[int]]:
    """The hours of ``selection`` as: ``agent_hour`` entries of the cached hours wholly inside
    the range, ``agent`` entries of the cached hours it cuts, raw rows of the rest, and the
    whole hours (epoch_us of their start // :data:`HOUR_US`)."""
    whole, cut, raw = _split(store, selection, "agent_hour", "agent")
    sources = store.sources(selection)
    partitions = {
        int(partition.start.timestamp()) * 1_000_000 // HOUR_US
        for partition in sources.partitions
        if store.holds_whole(selection, partition)
    }
    return whole, cut, raw, partitions


def whole_hours(store: Store, selection: Selection) -> tuple[str, list[Any], list[int]]:
    """A relation ``(host, project, agent, hour, cpu, rss)`` of the per-hour sums of the
    selected agents over the cached hours wholly inside the range (``hour`` = epoch_us of
    its start // :data:`HOUR_US`), its parameters, and those hours."""
    whole, _, _, partitions = _hour_split(store, selection)
    names, params = _conditions(selection, times=False)
    if not whole:
        return (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            "CAST(NULL AS VARCHAR) AS agent, CAST(NULL AS BIGINT) AS hour, "
            "CAST(NULL AS DOUBLE) AS cpu, CAST(NULL AS DOUBLE) AS rss WHERE false)",
            [],
            [],
        )
    hours = sorted(partitions)
    sql = (
        f"(SELECT host, project, agent, epoch_us(first) // {HOUR_US} AS hour, "
        f"cpu_sum AS cpu, rss_sum AS rss FROM {_read(whole)} WHERE {names})"
    )
    return sql, params, hours


def agent_hours_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """A relation of the selected agents' per-tick sums (:func:`tick_sums_sql`) aggregated per
    host, project, agent and part of the range: one row per cached hour wholly inside the
    range (from the ``agent_hour`` rollups) and one for all other ticks. Columns: host,
    project, agent, first, last, ticks, and for v in cpu, rss, fds, threads: ``v_sum``,
    ``v_n`` (non-null ticks), ``v_min``, ``v_max``, ``v_top`` (the largest
    ``{v: value, n: -epoch_us(ts)}``, the same order ``arg_max_ts`` uses)."""
    columns = "host, project, agent, first, last, ticks, " + ", ".join(
        f"{v}_sum, {v}_n, {v}_min, {v}_max, {v}_top" for v in HOUR_VALUES
    )
    ticks = "host, ts, project, agent, cpu, rss, fds, threads"
    found = _rollup_sql(store, selection, "agent_hour", "agent", columns, ticks)
    if found is None:
        empty = ", ".join(
            f"CAST(NULL AS DOUBLE) AS {v}_sum, CAST(NULL AS BIGINT) AS {v}_n, "
            f"CAST(NULL AS DOUBLE) AS {v}_min, CAST(NULL AS DOUBLE) AS {v}_max, "
            f"CAST(NULL AS STRUCT(v DOUBLE, n BIGINT)) AS {v}_top"
            for v in HOUR_VALUES
        )
        return (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            "CAST(NULL AS VARCHAR) AS agent, CAST(NULL AS TIMESTAMPTZ) AS first, "
            f"CAST(NULL AS TIMESTAMPTZ) AS last, CAST(NULL AS BIGINT) AS ticks, {empty} "
            "WHERE false)",
            [],
        )
    return found


def top_at(column: str, cores: str = "") -> str:
    """The tick of the combined maximum of ``v_top`` structs (the earliest among equal maxima).
    With ``cores`` (a column), values compare as CPU % of each host (``100.0 * v / cores``), so
    hosts compare as the reports compare them."""
    value = f"100.0 * {column}.v / {cores}" if cores else f"{column}.v"
    top = f"CASE WHEN {column}.v IS NOT NULL THEN {{'v': {value}, 'n': {column}.n}} END"
    return f"make_timestamptz(-max({top}).n)"


def project_series_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """SQL for :func:`project_series` (no ORDER BY), and its parameters."""
    ticks, tick_params = ticks_sql(store, selection)
    used_sql, params = tick_sums_sql(store, selection, by_agent=False)
    sql = f"""
        WITH ticks AS ({ticks}),
        names AS (SELECT unnest(?::VARCHAR[]) AS project),
        used AS {used_sql},
        cores AS {store.cores_sql()}
        SELECT t.host, t.ts, n.project,
               CASE WHEN u.host IS NULL THEN 0.0 ELSE 100.0 * u.cpu / c.cores END
                   AS cpu_percent,
               CAST(coalesce(u.rss, 0) AS BIGINT) AS rss_bytes,
               CAST(coalesce(u.fds, 0) AS BIGINT) AS fds,
               CAST(coalesce(u.threads, 0) AS BIGINT) AS threads,
               coalesce(u.processes, 0) AS processes
        FROM ticks t CROSS JOIN names n
        JOIN cores c ON c.host = t.host
        LEFT JOIN used u ON u.host = t.host AND u.ts = t.ts AND u.project = n.project
    """
    return sql, [*tick_params, list(selection.projects), *params]


def project_series(store: Store, selection: Selection, *, ordered: bool = True) -> pl.DataFrame:
    """Every selected project at every tick, 0 where nothing of it ran (``project_series_sql``;
    ``cpu_percent`` is null at a tick whose processes have no CPU reading yet, their first).

    Columns: host, ts (UTC), project, cpu_percent (of the machine), rss_bytes, fds, threads
    (sums over the project's processes), processes (how many were sampled). Sorted by
    project, host, ts (unless ``ordered`` is false: then in no particular order).
    """
    sql, params = project_series_sql(store, selection)
    order = " ORDER BY project, host, ts" if ordered else ""
    return store.frame(f"SELECT * FROM ({sql}){order}", params)


def workspace_series(series: pl.DataFrame) -> pl.DataFrame:
    """The sum of ``project_series`` over projects per tick: host, ts, cpu_percent,
    rss_bytes, fds, threads, processes; sorted by host, ts."""
    import polars as pl

    return (
        series.group_by("host", "ts")
        .agg(pl.col("cpu_percent", "rss_bytes", "fds", "threads", "processes").sum())
        .sort("host", "ts")
    )


def limits_relation(store: Store) -> tuple[str, list[Any], str | None]:
    """A relation ``(host, project, ts, cpu_limit_percent, memory_limit_bytes)`` of project
    limits over time, its parameters, and a note when it is not the store's own.

    It is the store's ``limits`` rows (agent ``""``). When the store has none (a store written
    before limits were recorded), the limits of the current workspace.json, in force since
    forever, stand in and the note says so.
    """
    ((count,),) = store.rows("SELECT count(*) FROM limits WHERE agent = ''")
    if count:
        sql = (
            "(SELECT host, project, ts, cpu_limit_percent, memory_limit_bytes "
            "FROM limits WHERE agent = '')"
        )
        return sql, [], None
    from devloop.config import load_workspace
    from devloop.config.allocation import allocate
    from devloop.errors import DevloopError

    try:
        allocation = allocate(load_workspace(store.workspace_dir))
    except DevloopError as exc:
        empty = (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            "CAST(NULL AS TIMESTAMPTZ) AS ts, CAST(NULL AS DOUBLE) AS cpu_limit_percent, "
            "CAST(NULL AS BIGINT) AS memory_limit_bytes WHERE false)"
        )
        return empty, [], f"the store holds no limits and workspace.json cannot be read ({exc})"
    names = [p.name for p in allocation.projects.values()]
    cpus = [float(p.cpu) for p in allocation.projects.values()]
    memories = [int(p.memory_bytes) for p in allocation.projects.values()]
    sql = (
        "(SELECT h.host, v.project, TIMESTAMPTZ '1970-01-01 00:00:00+00' AS ts, "
        "v.cpu_limit_percent, v.memory_limit_bytes FROM (SELECT DISTINCT host FROM system) h "
        "CROSS JOIN (SELECT unnest(?::VARCHAR[]) AS project, unnest(?::DOUBLE[]) AS "
        "cpu_limit_percent, unnest(?::BIGINT[]) AS memory_limit_bytes) v)"
    )
    note = "the store holds no limits: using the limits of the current workspace.json"
    return sql, [names, cpus, memories], note


def project_series_with_limits(
    store: Store, selection: Selection, *, ordered: bool = True
) -> tuple[pl.DataFrame, str | None]:
    """:func:`project_series` plus ``cpu_limit_percent`` and ``memory_limit_bytes``: the
    project's limits in force at each tick (null before its first limit), and a note when the
    limits come from workspace.json (see :func:`limits_relation`)."""
    import polars as pl

    series = project_series(store, selection, ordered=False)
    limits, limit_params, note = limits_relation(store)
    table = store.frame(
        f"SELECT host, project, ts, CAST(cpu_limit_percent AS DOUBLE) AS cpu_limit_percent, "
        f"CAST(memory_limit_bytes AS BIGINT) AS memory_limit_bytes FROM {limits} l "
        "ORDER BY ts, host, project",
        limit_params,
    ).with_columns(pl.col("ts").cast(series.schema["ts"]))
    joined = series.sort("ts").join_asof(
        table, on="ts", by=["host", "project"], strategy="backward", check_sortedness=False
    )
    return (joined.sort("project", "host", "ts") if ordered else joined), note


# --- rollups by project, of the workspace, and CPU value counts --------------------------------


def _split(
    store: Store, selection: Selection, hourly: str, ticks: str
) -> tuple[list[Path], list[Path], list[Raw]]:
    """Like :func:`_hour_split` for any pair of kinds: ``hourly`` entries of the cached hours
    wholly inside the range, ``ticks`` entries of the cached hours it cuts, raw rows (files
    and spool)."""
    sources = store.sources(selection)
    whole: list[Path] = []
    cut: list[Path] = []
    for partition, entry, tick_entry in zip(
        sources.partitions, sources.cached[hourly], sources.cached[ticks], strict=True
    ):
        if store.holds_whole(selection, partition):
            whole.append(entry)
        else:
            cut.append(tick_entry)
    return whole, cut, list(sources.raw)


def _rollup_sql(
    store: Store, selection: Selection, rollup: str, per_tick: str, columns: str, ticks: str
) -> tuple[str, list[Any]] | None:
    """``SELECT columns`` of the selected rows of the ``rollup`` entries of the cached hours
    wholly inside the range, and of the ``rollup`` aggregation of the other ticks' ``ticks``
    columns (from the ``per_tick`` entries of the hours the range cuts and from the raw rows
    of the hours without entries); None when the range has no hour."""
    from devloop.store.rollups import BUILD_SQL

    whole, cut, raw = _split(store, selection, rollup, per_tick)
    names, name_params = _conditions(selection, times=False)
    where, params = _conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if whole:
        parts.append(f"SELECT {columns} FROM {_read(whole)} WHERE {names}")
        all_params += name_params
    rest: list[str] = []
    if cut:
        rest.append(f"SELECT {ticks} FROM {_read(cut)} WHERE {where}")
        all_params += params
    if raw:
        source = f"(SELECT * FROM {_read(raw)} WHERE {where})"
        rest.append(f"SELECT {ticks} FROM (" + BUILD_SQL[per_tick].format(source=source) + ")")
        all_params += params
    if rest:
        source = "(" + " UNION ALL ".join(rest) + ")"
        parts.append(f"SELECT {columns} FROM (" + BUILD_SQL[rollup].format(source=source) + ")")
    if not parts:
        return None
    return "(" + " UNION ALL ".join(parts) + ")", all_params


def project_hours_sql(store: Store, selection: Selection) -> tuple[str, list[Any]] | None:
    """:func:`agent_hours_sql` per host and project (columns without ``agent``), from the
    ``project_hour`` rollups; None when only some agents are selected (the project rollups
    sum every agent)."""
    if selection.agent_filter:
        return None
    columns = "host, project, first, last, ticks, " + ", ".join(
        f"{v}_sum, {v}_n, {v}_min, {v}_max, {v}_top" for v in HOUR_VALUES
    )
    ticks = "host, ts, project, cpu, rss, fds, threads"
    return _rollup_sql(store, selection, "project_hour", "project", columns, ticks)


def agent_counts_sql(store: Store, selection: Selection, value: str) -> tuple[str, list[Any]]:
    """A relation ``(host, project, agent, <value>, n)``: how many ticks each selected agent's
    per-tick sum of ``value`` ("cpu": cores, or "rss": bytes; non-null) had each value, from
    the ``agent_<value>`` rollups of the hours wholly inside the range and the per-tick sums
    of the rest."""
    kind = {"cpu": "agent_cpu", "rss": "agent_rss"}[value]
    columns = f"host, project, agent, {value}, n"
    found = _rollup_sql(
        store, selection, kind, "agent", columns, f"host, ts, project, agent, {value}"
    )
    if found is None:
        return (
            "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
            f"CAST(NULL AS VARCHAR) AS agent, CAST(NULL AS DOUBLE) AS {value}, "
            "CAST(NULL AS BIGINT) AS n WHERE false)",
            [],
        )
    return found


def quantiles_from_counts_sql(counts: str, keys: str, quantiles: Sequence[float]) -> str:
    """Per ``keys``, ``quantile_cont`` of the values of ``counts`` (a relation with ``keys``,
    ``v`` and ``n``, the number of times ``v`` occurs), exactly as DuckDB computes it over the
    values themselves: with ``r = (N - 1) * q``, the values at ranks ``floor(r)`` and
    ``ceil(r)`` (0-based, ascending) interpolated as ``lo + (r - floor(r)) * (hi - lo)``.
    Columns: ``keys`` and ``q0``, ``q1``, ... in the order of ``quantiles``."""
    picks = []
    for i, q in enumerate(quantiles):
        rank = f"(CAST(total - 1 AS DOUBLE) * CAST({float(q)!r} AS DOUBLE))"
        lo = f"min(v) FILTER (WHERE upto > floor({rank}))"
        hi = f"min(v) FILTER (WHERE upto > ceil({rank}))"
        picks.append(
            f"CASE WHEN ceil(any_value({rank})) = floor(any_value({rank})) THEN {lo} "
            f"ELSE {lo} + (any_value({rank}) - floor(any_value({rank}))) * ({hi} - {lo}) "
            f"END AS q{i}"
        )
    return f"""(
        SELECT {keys}, {", ".join(picks)} FROM (
            SELECT {keys}, v,
                   sum(n) OVER (PARTITION BY {keys} ORDER BY v
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto,
                   sum(n) OVER (PARTITION BY {keys}) AS total
            FROM (SELECT {keys}, v, sum(n) AS n FROM {counts} GROUP BY {keys}, v)
        ) GROUP BY {keys}
    )"""


# --- per-tick rollups without a condition on ts where the range holds their hour --------------


def _entries_sql(
    store: Store, selection: Selection, kind: str, columns: str, raw: str
) -> tuple[list[str], list[Any]]:
    """``SELECT columns`` of the selected rows of the ``kind`` entries (the hours wholly
    inside the range without a condition on ``ts``) and of ``raw`` (a query with ``{source}``)
    over the raw rows."""
    whole, cut, files = _split(store, selection, kind, kind)
    names, name_params = _conditions(selection, times=False)
    where, params = _conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if whole:
        parts.append(f"SELECT {columns} FROM {_read(whole)} WHERE {names}")
        all_params += name_params
    if cut:
        parts.append(f"SELECT {columns} FROM {_read(cut)} WHERE {where}")
        all_params += params
    if files:
        source = f"(SELECT * FROM {_read(files)} WHERE {where})"
        parts.append(f"SELECT {columns} FROM (" + raw.format(source=source) + ")")
        all_params += params
    return parts, all_params


def project_sums_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """The relation of :func:`tick_sums_sql` by project, with the ``project`` entries of the
    hours wholly inside the range read without a condition on ``ts``: a query that does not
    use ``ts`` then does not read it."""
    if selection.agent_filter:
        return tick_sums_sql(store, selection, by_agent=False)
    from devloop.store.rollups import BUILD_SQL

    columns = "host, ts, project, cpu, rss, fds, threads, processes"
    parts, params = _entries_sql(store, selection, "project", columns, BUILD_SQL["project"])
    if not parts:
        return tick_sums_sql(store, selection, by_agent=False)
    return "(" + " UNION ALL ".join(parts) + ")", params


def workspace_sums_sql(store: Store, selection: Selection) -> tuple[str, list[Any]] | None:
    """A relation ``(host, ts, cpu, rss, fds, threads, projects)``: every project's per-tick
    sums summed per tick (``projects``: how many had a sum), from the ``workspace`` rollups (of
    the hours wholly inside the range, read without a condition on ``ts``, so a query that
    does not use ``ts`` does not read it); None when the selection names projects or agents
    (the rollups sum them all)."""
    if selection.project_filter or selection.agent_filter:
        return None
    from devloop.store.rollups import BUILD_SQL

    raw = BUILD_SQL["workspace"].format(source="(" + BUILD_SQL["project"] + ")")
    columns = "host, ts, cpu, rss, fds, threads, projects"
    parts, params = _entries_sql(store, selection, "workspace", columns, raw)
    if not parts:
        return None
    return "(" + " UNION ALL ".join(parts) + ")", params


def series_aligned(store: Store, selection: Selection) -> bool | None:
    """Whether every selected project has a per-tick sum at every collector tick of the range
    and at no other tick (then the sums are the whole project series: no idle tick to fill
    in), checked on the ``workspace`` rollups (one row per tick); None when the selection
    names projects or agents (the rollups sum them all). Kept in ``store.aligned``."""
    if selection in store.aligned:
        return store.aligned[selection]
    whole = workspace_sums_sql(store, selection)
    if whole is None:
        return None
    whole_sql, whole_params = whole
    where, params = store.where(selection, names=False)
    # One pass: the collector's ticks (``system``, a repeated row matching as one) against
    # the workspace sums (one row per tick), outer-joined: a tick without a sum is an idle
    # tick to fill in, a sum without a tick is outside the series.
    ((total, idle, outside, fewest, most, no_cores),) = store.rows(
        f"""
        SELECT count(t.ts), count(*) FILTER (WHERE t.ts IS NOT NULL AND w.ts IS NULL),
               count(*) FILTER (WHERE t.ts IS NULL), min(w.projects), max(w.projects),
               count(*) FILTER (WHERE t.ts IS NOT NULL AND c.cores IS NULL)
        FROM (SELECT host, ts FROM system WHERE {where}) t
        FULL JOIN (SELECT host, ts, projects FROM {whole_sql}) w
            ON w.host = t.host AND w.ts = t.ts
        LEFT JOIN {store.cores_sql()} c ON c.host = t.host
        """,
        [*params, *whole_params],
    )
    names = len(selection.projects)
    aligned = bool(total and not idle and not outside and fewest == most == names and not no_cores)
    store.aligned[selection] = aligned
    return aligned
