"""``analytics runs``: one row per agent run, and the runs summarised per project and agent.

Two kinds of run:

* **Launched** runs, the rows of the ``runs`` table: every command devloop started as an agent
  (``devloop run``, ``devloop watch``, stress-test). Exact: the duration is ``ended - started``,
  the CPU and max RSS come from the kernel when the run was reaped (``wait4``).
* **Estimated** runs of agents devloop only saw (attributed by rule, not launched: their
  ``processes`` rows have no ``run_id``): a contiguous span of ticks at which the agent had a
  process, a gap of more than two tick intervals ending it. The interval is the collector's
  typical tick spacing (:attr:`Selection.interval`); a span's CPU is the sum of its per-tick
  ``cpu_cores`` x the interval, it starts one interval before its first tick (the interval that
  tick measures) and ends at its last, and it is cut at the edges of the range. Samples of
  processes that carry a ``run_id`` belong to launched runs and never count here.

A run is in the range when it started in it (``start <= started < end``); an open range is
anchored on the newest tick or run start. A run **failed** when it exited non-zero, a signal
ended it, or it is incomplete (its launcher died); an estimated run never failed (its exit is
unknown).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import Selection, Store, match, open_store
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError
from devloop.store.runs import TRIGGERS

if TYPE_CHECKING:
    import polars as pl

#: The trigger of estimated runs.
RULE = "rule"

#: Triggers a run of :func:`runs` may have.
RUN_TRIGGERS = (*TRIGGERS, RULE)

#: Columns of :func:`runs`, in order.
RUN_COLUMNS = (
    "run_id",
    "host",
    "project",
    "agent",
    "trigger",
    "status",
    "command",
    "started",
    "ended",
    "duration_seconds",
    "exit_code",
    "signal",
    "failed",
    "queue_wait_seconds",
    "paused_seconds",
    "throttled_seconds",
    "cpu_seconds",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "max_rss_bytes",
    "peak_cores",
    "peak_rss_bytes",
    "ticks",
    "log_path",
    "estimated",
)

#: Columns of :func:`run_summary`, in order.
SUMMARY_COLUMNS = (
    "project",
    "agent",
    "runs",
    "failed",
    "estimated",
    "duration_p50_seconds",
    "duration_p95_seconds",
    "cpu_mean_seconds",
    "cpu_p95_seconds",
    "max_rss_bytes",
)

#: A span of an estimated run ends at a gap longer than this many tick intervals.
GAP_INTERVALS = 2


def runs(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    *,
    project: str | Sequence[str] | None = None,
    agent: str | Sequence[str] | None = None,
    trigger: str | None = None,
    failed: bool | None = None,
    slowest: int | None = None,
    estimated: bool = True,
) -> pl.DataFrame:
    """One row per run that started in ``time_range`` (see the module doc), by ``started``.

    Filters: ``project`` and ``agent`` globs (one or several), ``trigger`` (manual, watch,
    stress, or rule for the estimated runs), ``failed`` (True: only failed runs, False: only
    the others), ``slowest`` (the N longest, longest first), ``estimated`` (False leaves the
    estimated runs out). Raises UsageError for a bad filter or a glob that matches no name.

    Columns (:data:`RUN_COLUMNS`):

    * ``run_id``: the run's id; ``est-<project>-<agent>-<started, µs since the epoch>`` for an
      estimated run. ``host``, ``project``, ``agent``; ``trigger``: manual, watch, stress, rule
    * ``status``: complete, incomplete (its launcher died: ``ended`` is the last moment it was
      known) or estimated; ``command``: arguments joined by spaces (null when estimated)
    * ``started``, ``ended`` (UTC); ``duration_seconds``: ``ended - started``
    * ``exit_code``, ``signal`` (the signal that ended it); ``failed`` (bool, see the module doc)
    * ``queue_wait_seconds``, ``paused_seconds``, ``throttled_seconds``: waiting in the queue,
      held paused or throttled by the enforcement
    * ``cpu_seconds`` = ``cpu_user_seconds`` + ``cpu_system_seconds`` (from ``wait4``; null
      when incomplete); for an estimated run, the ticks' CPU (user and system unknown: null)
    * ``max_rss_bytes``: the largest RSS of one process of the run (``wait4``; null when
      estimated); ``peak_cores``, ``peak_rss_bytes``: the largest per-tick sums over the run's
      processes; ``ticks``: ticks that saw a process of the run
    * ``log_path``: where the run's output went (``devloop watch``), if anywhere
    * ``estimated`` (bool): whether the run is estimated from ticks
    """
    import polars as pl

    store = open_store(workspace_dir)
    with _runs_sql(store, time_range, project, agent, trigger, failed, slowest, estimated) as query:
        if query is None:
            return pl.DataFrame(schema=_RUN_TYPES())
        sql, params = query
        frame = store.frame(sql, params)
    return frame.with_columns(pl.col("started", "ended").dt.convert_time_zone("UTC")).select(
        [pl.col(name).cast(kind) for name, kind in _RUN_TYPES().items()]
    )


def run_summary(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    *,
    project: str | Sequence[str] | None = None,
    agent: str | Sequence[str] | None = None,
    trigger: str | None = None,
    failed: bool | None = None,
    slowest: int | None = None,
    estimated: bool = True,
) -> pl.DataFrame:
    """The runs of :func:`runs` (same filters) summarised per project and agent.

    Columns (:data:`SUMMARY_COLUMNS`), sorted by project and agent: ``project``, ``agent``,
    ``runs``, ``failed`` and ``estimated`` (how many of them), ``duration_p50_seconds`` and
    ``duration_p95_seconds``, ``cpu_mean_seconds`` and ``cpu_p95_seconds`` (CPU per run; runs
    of unknown CPU left out), ``max_rss_bytes`` (the largest ``max_rss_bytes``). Percentiles are
    linear between the closest ranks (DuckDB's ``quantile_cont``).
    """
    import polars as pl

    store = open_store(workspace_dir)
    with _runs_sql(store, time_range, project, agent, trigger, failed, slowest, estimated) as query:
        if query is None:
            return pl.DataFrame(schema=_SUMMARY_TYPES())
        sql, params = query
        frame = store.frame(
            f"""
            SELECT project, agent, count(*) AS runs, count(*) FILTER (WHERE failed) AS failed,
                   count(*) FILTER (WHERE estimated) AS estimated,
                   quantile_cont(duration_seconds, 0.5) AS duration_p50_seconds,
                   quantile_cont(duration_seconds, 0.95) AS duration_p95_seconds,
                   avg(cpu_seconds) AS cpu_mean_seconds,
                   quantile_cont(cpu_seconds, 0.95) AS cpu_p95_seconds,
                   max(max_rss_bytes) AS max_rss_bytes
            FROM ({sql}) GROUP BY project, agent ORDER BY project, agent
            """,
            params,
        )
    return frame.select([pl.col(name).cast(kind) for name, kind in _SUMMARY_TYPES().items()])


# --- the query -------------------------------------------------------------------------------


@contextmanager
def _runs_sql(
    store: Store,
    time_range: TimeRange | None,
    project: str | Sequence[str] | None,
    agent: str | Sequence[str] | None,
    trigger: str | None,
    failed: bool | None,
    slowest: int | None,
    estimated: bool,
) -> Iterator[tuple[str, list[Any]] | None]:
    """The SQL (and parameters) of :func:`runs`' rows, to be run inside the block (the
    estimated runs are in a temporary table until it ends); None when there can be none (an
    empty store or range, or only estimated runs asked for and none wanted)."""
    if trigger is not None and trigger not in RUN_TRIGGERS:
        raise UsageError(f"unknown trigger {trigger!r} (use {', '.join(RUN_TRIGGERS)})")
    if slowest is not None and slowest < 1:
        raise UsageError(f"--slowest must be at least 1, not {slowest}")
    selection = _select(store, time_range or TimeRange(), _globs(project), _globs(agent))
    if selection is None:
        yield None
        return
    parts: list[str] = []
    params: list[Any] = []
    if trigger != RULE:
        sql, more = _launched_sql(selection, trigger)
        parts.append(sql)
        params += more
    # an estimated run never failed: asking for failures needs none of them
    with_estimated = estimated and trigger in (None, RULE) and failed is not True
    if with_estimated:
        _estimate(store, selection)
        parts.append(f"SELECT * FROM {_ESTIMATED}")
    try:
        yield _union(parts, params, failed, slowest)
    finally:
        if with_estimated:
            store.db.execute(f"DROP TABLE IF EXISTS {_ESTIMATED}")


def _union(
    parts: list[str], params: list[Any], failed: bool | None, slowest: int | None
) -> tuple[str, list[Any]] | None:
    """The runs of ``parts`` filtered on ``failed``, in order (the ``slowest`` first)."""
    if not parts:  # estimated runs only, yet none wanted
        return None
    union = " UNION ALL BY NAME ".join(f"({part})" for part in parts)
    where = "true" if failed is None else ("failed" if failed else "NOT failed")
    order = "started, run_id, host"
    limit = ""
    if slowest is not None:
        order = "duration_seconds DESC NULLS LAST, started, run_id, host"
        limit = f" LIMIT {int(slowest)}"
    return f"SELECT * FROM ({union}) WHERE {where} ORDER BY {order}{limit}", params


def _globs(names: str | Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _select(
    store: Store, time_range: TimeRange, projects: Sequence[str], agents: Sequence[str]
) -> Selection | None:
    """The range resolved on the ticks and the runs' starts, and the names the globs select
    among those the store knows (runs included); None when there is nothing to select."""
    names: dict[str, set[str]] = {name: set(known) for name, known in store.known().items()}
    for name, agent in store.rows("SELECT DISTINCT project, agent FROM runs"):
        names.setdefault(name, set()).add(agent)
    chosen_projects = match("project", projects, sorted(names))
    pool = sorted({agent for name in chosen_projects for agent in names[name]})
    chosen_agents = match("agent", agents, pool) if agents else pool
    first, last = (None, None) if time_range.bounded else _span(store)
    start, end = time_range.resolve(first, last)
    if start >= end:
        return None
    selection = store.select(TimeRange(start=start, end=end), require_samples=False)
    return replace(
        selection,
        projects=tuple(chosen_projects),
        agents=tuple(chosen_agents),
        project_filter=bool(projects),
        agent_filter=bool(agents),
    )


def _span(store: Store) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest of the ticks and the runs' starts."""
    first, last = store.span()
    ((run_first, run_last),) = store.rows("SELECT min(started), max(started) FROM runs")
    starts = [moment for moment in (first, run_first) if moment is not None]
    ends = [moment for moment in (last, run_last) if moment is not None]
    return (min(starts) if starts else None), (max(ends) if ends else None)


def _names(selection: Selection) -> tuple[list[str], list[Any]]:
    """The project and agent conditions of ``selection`` (none where no glob narrowed it)."""
    parts: list[str] = []
    params: list[Any] = []
    for column, chosen, narrowed in (
        ("project", selection.projects, selection.project_filter),
        ("agent", selection.agents, selection.agent_filter),
    ):
        if narrowed:
            parts.append(f"list_contains(?::VARCHAR[], {column})")
            params.append(list(chosen))
    return parts, params


def _launched_sql(selection: Selection, trigger: str | None) -> tuple[str, list[Any]]:
    """The ``runs`` rows that started in the range."""
    # A row's ``ts`` (its partition) is its run's start, never earlier: it bounds the range
    # from below only, so a row stamped later is still found.
    parts = ["started >= ?", "started < ?", "ts >= ?", "date >= ?"]
    params: list[Any] = [
        selection.start,
        selection.end,
        selection.start,
        selection.start.astimezone(UTC).date(),
    ]
    names, name_params = _names(selection)
    parts += names
    params += name_params
    if trigger is not None:
        parts.append("trigger = ?")
        params.append(trigger)
    sql = f"""
        SELECT run_id, host, project, agent, trigger, status, command, started, ended,
               (epoch_us(ended) - epoch_us(started)) / 1e6 AS duration_seconds,
               CAST(exit_code AS BIGINT) AS exit_code, CAST(signal AS BIGINT) AS signal,
               (coalesce(exit_code <> 0, false) OR signal IS NOT NULL
                OR status = 'incomplete') AS failed,
               queue_wait_seconds, paused_seconds, throttled_seconds,
               cpu_user_seconds + cpu_system_seconds AS cpu_seconds,
               cpu_user_seconds, cpu_system_seconds, CAST(max_rss_bytes AS BIGINT) AS max_rss_bytes,
               CAST(peak_cores AS DOUBLE) AS peak_cores,
               CAST(peak_rss_bytes AS BIGINT) AS peak_rss_bytes, CAST(ticks AS BIGINT) AS ticks,
               log_path, false AS estimated
        FROM runs WHERE {" AND ".join(parts)}
    """
    return sql, params


#: The temporary table the estimated runs are written to while a report runs.
_ESTIMATED = "devloop_estimated_runs"

#: Ticks windowed together at most when estimating runs: the agents are taken in batches of
#: about this many samples (each batch's window holds its ticks in memory; one agent's ticks
#: are never split).
BATCH_SAMPLES = 4_000_000


def _estimate(store: Store, selection: Selection) -> None:
    """Write the estimated runs (gaps and islands of each agent's ticks, see the module doc)
    into the temporary table :data:`_ESTIMATED`.

    An agent's ticks are its per-tick sums of the samples no launched run owns: the hours'
    ``agent`` rollups where no launched process was sampled in the hour, the raw samples
    less the launched processes' elsewhere. The agents are windowed a batch at a time
    (:data:`BATCH_SAMPLES`), so memory follows the largest batch, not the range."""
    from devloop.analytics.query import lives_sql, range_conditions, relation
    from devloop.store.layout import Partition

    interval_us = max(1, round(selection.interval * 1e6))
    gap_us = GAP_INTERVALS * interval_us
    last_day = (selection.end - timedelta(microseconds=1)).astimezone(UTC).date()
    lives, lives_params = lives_sql(store, selection)
    launched_sql = (
        "SELECT DISTINCT host, pid, start_time FROM processes "
        "WHERE run_id IS NOT NULL AND ts < ? AND date <= ?"
    )
    launched_params = [selection.end, last_day]
    # the hours where a launched process was sampled: read raw there, to leave its rows out
    spans = store.rows(
        f"""
        SELECT min(l.first), max(l.last) FROM {lives} l SEMI JOIN ({launched_sql}) p
          ON l.host = p.host AND l.pid = p.pid AND l.start_time = p.start_time
        GROUP BY l.host, l.pid, l.start_time
        """,
        [*lives_params, *launched_params],
    )
    launched_hours: set[Partition] = set()
    for first, last in spans:
        hour = first.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour <= last:
            launched_hours.add(Partition.of_datetime(hour))
            hour += timedelta(hours=1)
    sources = store.sources(selection)
    entries: list[Path] = []
    raw = list(sources.raw)
    for partition, entry in zip(sources.partitions, sources.cached["agent"], strict=True):
        if partition in launched_hours:
            raw.extend(sources.files[partition])
        else:
            entries.append(entry)
    where, where_params = range_conditions(selection)
    # each part of the ticks: its SQL (the range's condition, then {keys}, the batch's
    # agents) and the parameters after the batch's
    ticks: list[tuple[str, list[Any]]] = []
    if entries:
        ticks.append((
            f"SELECT host, project, agent, ts, cpu AS cores, rss FROM {relation(entries)} "
            f"WHERE {where} AND {{keys}}",
            [],
        ))  # fmt: skip
    if raw:
        ticks.append((
            f"""
            SELECT s.host, s.project, s.agent, s.ts, sum(s.cpu_cores) AS cores,
                   sum(s.rss_bytes) AS rss
            FROM {relation(raw)} s
            WHERE {where} AND {{keys}} AND NOT EXISTS (
                SELECT 1 FROM ({launched_sql}) l
                WHERE l.host = s.host AND l.pid = s.pid AND l.start_time = s.start_time
            )
            GROUP BY s.host, s.project, s.agent, s.ts
            """,
            launched_params,
        ))  # fmt: skip
    # the agents with samples in the range, in batches of about BATCH_SAMPLES samples
    agents = store.rows(
        f"SELECT host, project, agent, sum(rows) FROM {lives} GROUP BY ALL ORDER BY ALL",
        lives_params,
    )
    batches: list[list[tuple[str, str, str]]] = [[]]
    size = 0
    for host, project, agent, count in agents:
        if batches[-1] and size + count > BATCH_SAMPLES:
            batches.append([])
            size = 0
        batches[-1].append((host, project, agent))
        size += count
    for number, batch in enumerate(batches):
        # the batch's agents as a condition too, which the Parquet reads can skip rows on
        keys = " OR ".join("(host = ? AND project = ? AND agent = ?)" for _ in batch)
        key_params = [value for key in batch for value in key]
        parts: list[str] = []
        params: list[Any] = []
        for sql, after in ticks if batch else []:
            parts.append(sql.format(keys=f"({keys})"))
            params += [*where_params, *key_params, *after]
        if not parts:  # no agent, or no hour: no tick
            parts.append(
                "SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS VARCHAR) AS project, "
                "CAST(NULL AS VARCHAR) AS agent, CAST(NULL AS TIMESTAMPTZ) AS ts, "
                "CAST(NULL AS DOUBLE) AS cores, CAST(NULL AS DOUBLE) AS rss WHERE false"
            )
        verb = f"INSERT INTO {_ESTIMATED}"
        if number == 0:
            verb = f"CREATE OR REPLACE TEMP TABLE {_ESTIMATED} AS"
        source = " UNION ALL ".join(parts)
        numbered = [value for key, names in enumerate(batch) for value in (key, *names)]
        sql = _estimated_sql(source, len(batch) or 1, interval_us, gap_us)
        store.db.execute(f"{verb} {sql}", [*(numbered or [0, "", "", ""]), *params])


def _estimated_sql(source: str, agents: int, interval_us: int, gap_us: int) -> str:
    """The estimated runs of the per-tick sums ``source`` (host, project, agent, ts, cores,
    rss) of ``agents`` agents, numbered by the relation ``batch(key, host, project, agent)``
    whose rows are the first parameters: each agent's ticks split where a gap is longer than
    ``gap_us``. The windows see the number and the tick's microseconds, not the names."""
    batch = ", ".join("(?, ?, ?, ?)" for _ in range(agents))
    return f"""
        WITH batch(key, host, project, agent) AS (VALUES {batch}),
        ticks AS (
            SELECT b.key, epoch_us(t.ts) AS us, t.cores, t.rss
            FROM ({source}) t JOIN batch b
              ON t.host = b.host AND t.project = b.project AND t.agent = b.agent
        ),
        marked AS (
            SELECT *, CASE WHEN us - lag(us) OVER w <= {gap_us} THEN 0 ELSE 1 END AS opens
            FROM ticks WINDOW w AS (PARTITION BY key ORDER BY us)
        ),
        spans AS (
            SELECT *, sum(opens) OVER (PARTITION BY key ORDER BY us
                                       ROWS UNBOUNDED PRECEDING) AS span
            FROM marked
        ),
        runs AS (
            SELECT b.host, b.project, b.agent, r.*
            FROM (SELECT key, make_timestamptz(min(us) - {interval_us}) AS started,
                         make_timestamptz(max(us)) AS ended, count(*) AS ticks,
                         sum(cores) * {interval_us / 1e6!r} AS cpu_seconds,
                         max(cores) AS peak_cores, max(rss) AS peak_rss_bytes
                  FROM spans GROUP BY key, span) r JOIN batch b USING (key)
        )
        SELECT 'est-' || project || '-' || agent || '-' || CAST(epoch_us(started) AS VARCHAR)
                   AS run_id,
               host, project, agent, '{RULE}' AS trigger, 'estimated' AS status,
               CAST(NULL AS VARCHAR) AS command, started, ended,
               (epoch_us(ended) - epoch_us(started)) / 1e6 AS duration_seconds,
               CAST(NULL AS BIGINT) AS exit_code, CAST(NULL AS BIGINT) AS signal,
               false AS failed, CAST(NULL AS DOUBLE) AS queue_wait_seconds,
               CAST(NULL AS DOUBLE) AS paused_seconds, CAST(NULL AS DOUBLE) AS throttled_seconds,
               CAST(cpu_seconds AS DOUBLE) AS cpu_seconds, CAST(NULL AS DOUBLE) AS cpu_user_seconds,
               CAST(NULL AS DOUBLE) AS cpu_system_seconds, CAST(NULL AS BIGINT) AS max_rss_bytes,
               CAST(peak_cores AS DOUBLE) AS peak_cores,
               CAST(peak_rss_bytes AS BIGINT) AS peak_rss_bytes, CAST(ticks AS BIGINT) AS ticks,
               CAST(NULL AS VARCHAR) AS log_path, true AS estimated
        FROM runs
    """


def _RUN_TYPES() -> dict[str, Any]:  # noqa: N802 - a constant that needs polars imported
    import polars as pl

    text, number, count = pl.String, pl.Float64, pl.Int64
    moment = pl.Datetime("us", "UTC")
    kinds: dict[str, Any] = {
        "started": moment,
        "ended": moment,
        "duration_seconds": number,
        "exit_code": count,
        "signal": count,
        "failed": pl.Boolean,
        "queue_wait_seconds": number,
        "paused_seconds": number,
        "throttled_seconds": number,
        "cpu_seconds": number,
        "cpu_user_seconds": number,
        "cpu_system_seconds": number,
        "max_rss_bytes": count,
        "peak_cores": number,
        "peak_rss_bytes": count,
        "ticks": count,
        "estimated": pl.Boolean,
    }
    return {name: kinds.get(name, text) for name in RUN_COLUMNS}


def _SUMMARY_TYPES() -> dict[str, Any]:  # noqa: N802 - a constant that needs polars imported
    import polars as pl

    kinds: dict[str, Any] = {"project": pl.String, "agent": pl.String}
    kinds.update(dict.fromkeys(("runs", "failed", "estimated", "max_rss_bytes"), pl.Int64))
    return {name: kinds.get(name, pl.Float64) for name in SUMMARY_COLUMNS}
