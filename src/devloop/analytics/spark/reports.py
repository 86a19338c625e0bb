"""peak-usage, the export, the runs and their summary on Spark."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import Selection, match
from devloop.analytics.runs import (
    _RUN_TYPES,
    _SUMMARY_TYPES,
    GAP_INTERVALS,
    RULE,
    RUN_COLUMNS,
    RUN_TRIGGERS,
)
from devloop.analytics.spark.dataset import (
    _AGGREGATES,
    Dataset,
    _frames,
    _from_us,
    _in_list,
    _known,
    _quote,
    _select,
    _typed,
    _us,
    _where,
)
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics.export import MetricsExport
    from devloop.analytics.peaks import PeakUsage
    from devloop.store.columns import Kind


# --- peak-usage ----------------------------------------------------------------------------------


def peak_usage_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    projects: Sequence[str] = (),
    agents: Sequence[str] = (),
    *,
    hosts: Sequence[str] = (),
) -> PeakUsage:
    """:func:`devloop.analytics.peak_usage` on Spark over the dataset at ``root`` (a store, a
    workspace, a shipped dataset or a mirror; a ``s3a://`` or ``file://`` URI): the same
    report, rows and JSON. ``hosts``: globs of the hosts whose rows count."""
    from devloop.analytics.peaks import PEAK_KINDS, PeakUsage
    from devloop.store.db import Rows

    data = Dataset(spark, root, hosts)
    selection = _select(data, time_range, projects, agents)
    frames = _frames(data, selection)
    peaks = data.sql(
        f"""
        WITH w AS (
            SELECT host, ts, sum(cpu_percent) AS cpu_percent, sum(rss_bytes) AS rss_bytes,
                   sum(fds) AS fds, sum(threads) AS threads
            FROM {{series}} GROUP BY host, ts
        ),
        a AS (
            SELECT s.project, s.agent, s.ts, 100.0D * s.cpu / c.cores AS cpu_percent,
                   CAST(round(s.rss) AS BIGINT) AS rss_bytes, s.fds, s.threads
            FROM {{agent_sums}} s JOIN {{cores}} c ON c.host = s.host
        )
        SELECT 'workspace' AS scope, CAST(NULL AS STRING) AS project,
               CAST(NULL AS STRING) AS agent, {_AGGREGATES}
        FROM w
        UNION ALL
        SELECT 'project' AS scope, project, CAST(NULL AS STRING) AS agent, {_AGGREGATES}
        FROM {{series}} GROUP BY project
        UNION ALL
        SELECT 'agent' AS scope, project, agent, {_AGGREGATES} FROM a GROUP BY project, agent
        """,
        series=frames.series,
        agent_sums=frames.agent_sums,
        cores=frames.cores,
    ).collect()
    rows = [_typed(tuple(row), PEAK_KINDS) for row in peaks]
    # The workspace first, then per project its row followed by its agents'.
    rows.sort(key=lambda r: (r[0] != "workspace", r[1] is not None, r[1] or "", r[2] is not None,
                             r[2] or ""))  # fmt: skip
    return PeakUsage(selection, Rows(tuple(PEAK_KINDS), tuple(PEAK_KINDS.values()), rows))


# --- export ------------------------------------------------------------------------------------


def export_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    projects: Sequence[str] = (),
    agents: Sequence[str] = (),
    *,
    interval: float = 60.0,
    detailed: bool = False,
    hosts: Sequence[str] = (),
) -> MetricsExport:
    """:func:`devloop.analytics.export_metrics` on Spark: one row per ``interval`` seconds
    and project (agent when ``detailed``), the same rows and JSON (and so the same CSV)."""
    from devloop.analytics.export import EXPORT_KINDS, MetricsExport
    from devloop.store.db import Rows

    if not interval >= 1e-6:
        raise UsageError(f"the interval must be positive, not {interval:g}s")
    bucket_us = max(1, round(interval * 1e6))
    data = Dataset(spark, root, hosts)
    selection = _select(data, time_range, projects, agents)
    frames = _frames(data, selection)
    values = """
        count(*) AS ticks, avg(cpu_percent) AS cpu_avg_percent,
        max(cpu_percent) AS cpu_max_percent, max(rss_bytes) AS memory_max_bytes,
        max(fds) AS fds_max, max(threads) AS threads_max
    """
    if detailed:
        kinds = EXPORT_KINDS
        found = data.sql(
            f"""
            SELECT (unix_micros(s.ts) DIV {bucket_us}) * {bucket_us} AS interval_start,
                   s.project, s.agent, {values}
            FROM (
                SELECT s.ts, s.project, s.agent, 100.0D * s.cpu / c.cores AS cpu_percent,
                       CAST(round(s.rss) AS BIGINT) AS rss_bytes, s.fds, s.threads
                FROM {{agent_sums}} s JOIN {{cores}} c ON c.host = s.host
            ) s
            GROUP BY 1, s.project, s.agent
            """,
            agent_sums=frames.agent_sums,
            cores=frames.cores,
        ).collect()
    else:
        kinds = {name: kind for name, kind in EXPORT_KINDS.items() if name != "agent"}
        found = data.sql(
            f"""
            SELECT (unix_micros(ts) DIV {bucket_us}) * {bucket_us} AS interval_start,
                   project, {values}
            FROM {{series}} GROUP BY 1, project
            """,
            series=frames.series,
        ).collect()
    rows = sorted((_typed(tuple(row), kinds) for row in found), key=lambda r: r[:3])
    return MetricsExport(
        selection, bucket_us / 1e6, detailed, Rows(tuple(kinds), tuple(kinds.values()), rows)
    )


# --- runs, runs --summary ----------------------------------------------------------------------


#: Columns of :func:`run_summary_spark`'s records (runs.SUMMARY_COLUMNS), with their kinds.
SUMMARY_KINDS: dict[str, Kind] = {
    "project": "str",
    "agent": "str",
    "runs": "i64",
    "failed": "i64",
    "estimated": "i64",
    "duration_p50_seconds": "f64",
    "duration_p95_seconds": "f64",
    "cpu_mean_seconds": "f64",
    "cpu_p95_seconds": "f64",
    "max_rss_bytes": "i64",
}


def run_summary_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    *,
    project: str | Sequence[str] | None = None,
    agent: str | Sequence[str] | None = None,
    trigger: str | None = None,
    failed: bool | None = None,
    slowest: int | None = None,
    estimated: bool = True,
    hosts: Sequence[str] = (),
) -> pl.DataFrame:
    """:func:`devloop.analytics.run_summary` on Spark: the same frame (columns, types, rows;
    ``records()`` of it is what ``analytics runs --summary --format json`` lists), per project
    and agent, of the runs launched and estimated that started in the range."""
    import polars as pl

    _check(trigger, slowest)
    data = Dataset(spark, root, hosts)
    runs = _runs_frame(data, time_range, _globs(project), _globs(agent), trigger, failed,
                       slowest, estimated)  # fmt: skip
    if runs is None:
        return pl.DataFrame(schema=_SUMMARY_TYPES())
    found = data.sql(
        """
        SELECT project, agent, count(*) AS runs, count_if(failed) AS failed,
               count_if(estimated) AS estimated,
               percentile(duration_seconds, 0.5) AS duration_p50_seconds,
               percentile(duration_seconds, 0.95) AS duration_p95_seconds,
               avg(cpu_seconds) AS cpu_mean_seconds,
               percentile(cpu_seconds, 0.95) AS cpu_p95_seconds,
               max(max_rss_bytes) AS max_rss_bytes
        FROM {runs} GROUP BY project, agent
        """,
        runs=runs,
    ).collect()
    rows = sorted((_typed(tuple(row), SUMMARY_KINDS) for row in found), key=lambda r: r[:2])
    return pl.DataFrame(rows, schema=_SUMMARY_TYPES(), orient="row")


def runs_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    *,
    project: str | Sequence[str] | None = None,
    agent: str | Sequence[str] | None = None,
    trigger: str | None = None,
    failed: bool | None = None,
    slowest: int | None = None,
    estimated: bool = True,
    hosts: Sequence[str] = (),
) -> pl.DataFrame:
    """:func:`devloop.analytics.runs` on Spark: the same frame (columns, types, rows in the
    same order; ``records()`` of it is what ``analytics runs --format json`` lists), one row per
    run launched or estimated that started in the range, with the same filters. ``hosts``:
    globs of the hosts whose rows count."""
    import polars as pl

    _check(trigger, slowest)
    data = Dataset(spark, root, hosts)
    runs = _runs_frame(data, time_range, _globs(project), _globs(agent), trigger, failed,
                       slowest, estimated)  # fmt: skip
    if runs is None:
        return pl.DataFrame(schema=_RUN_TYPES())
    order: list[Any] = ["started", "run_id", "host"]
    if slowest is not None:
        order.insert(0, runs["duration_seconds"].desc_nulls_last())
    # Moments as epoch microseconds: the frame's UTC datetimes, whatever the session's zone.
    columns = [f"unix_micros({c}) AS {c}" if c in ("started", "ended") else c for c in RUN_COLUMNS]
    found = pl.DataFrame(runs.orderBy(*order).selectExpr(*columns).toArrow())
    return found.select([pl.col(name).cast(kind) for name, kind in _RUN_TYPES().items()])


def _check(trigger: str | None, slowest: int | None) -> None:
    """UsageError for a filter :func:`devloop.analytics.runs` refuses."""
    if trigger is not None and trigger not in RUN_TRIGGERS:
        raise UsageError(f"unknown trigger {trigger!r} (use {', '.join(RUN_TRIGGERS)})")
    if slowest is not None and slowest < 1:
        raise UsageError(f"--slowest must be at least 1, not {slowest}")


def _globs(names: str | Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _runs_frame(
    data: Dataset,
    time_range: TimeRange | None,
    projects: Sequence[str],
    agents: Sequence[str],
    trigger: str | None,
    failed: bool | None,
    slowest: int | None,
    estimated: bool,
) -> Any | None:
    """The runs of :func:`devloop.analytics.runs` as a DataFrame (its columns, ``started``
    and ``ended`` as timestamps; the N slowest when ``slowest``, else in no order); None when
    there can be none."""
    time_range = time_range or TimeRange()
    known = _known(data, runs=True)
    if not time_range.bounded:
        first, last = data.span()
        ((run_first, run_last),) = data.sql(
            "SELECT min(unix_micros(started)), max(unix_micros(started)) FROM {r}",
            r=data.table("runs"),
        ).collect()
        starts = [m for m in (first, None if run_first is None else _from_us(run_first)) if m]
        ends = [m for m in (last, None if run_last is None else _from_us(run_last)) if m]
        span = (min(starts) if starts else None, max(ends) if ends else None)
        start, end = time_range.resolve(*span)
    else:
        start, end = time_range.resolve(None, None)
    if start >= end:
        return None
    base = _select(data, TimeRange(start=start, end=end), (), (), require_samples=False,
                   known=known)  # fmt: skip
    chosen_projects = match("project", projects, sorted(known))
    pool = sorted({name for p in chosen_projects for name in known[p]})
    chosen_agents = match("agent", agents, pool) if agents else pool
    selection = Selection(
        start=base.start,
        end=base.end,
        projects=tuple(chosen_projects),
        agents=tuple(chosen_agents),
        project_filter=bool(projects),
        agent_filter=bool(agents),
        interval=base.interval,
        hosts=base.hosts,
    )
    names = []
    if selection.project_filter:
        names.append(_in_list("project", selection.projects))
    if selection.agent_filter:
        names.append(_in_list("agent", selection.agents))
    parts: list[Any] = []
    if trigger != RULE:
        conditions = [
            f"unix_micros(started) >= {_us(start)}",
            f"unix_micros(started) < {_us(end)}",
            f"unix_micros(ts) >= {_us(start)}",
            f"date >= DATE'{start.astimezone(UTC).date().isoformat()}'",
            *names,
        ]
        if trigger is not None:
            conditions.append(f"trigger = {_quote(trigger)}")
        parts.append(
            data.sql(
                f"""
                SELECT run_id, host, project, agent, trigger, status, command, started, ended,
                       (unix_micros(ended) - unix_micros(started)) / 1e6 AS duration_seconds,
                       CAST(exit_code AS BIGINT) AS exit_code, CAST(signal AS BIGINT) AS signal,
                       (coalesce(exit_code <> 0, false) OR signal IS NOT NULL
                        OR status = 'incomplete') AS failed,
                       queue_wait_seconds, paused_seconds, throttled_seconds,
                       cpu_user_seconds + cpu_system_seconds AS cpu_seconds,
                       cpu_user_seconds, cpu_system_seconds, max_rss_bytes,
                       CAST(peak_cores AS DOUBLE) AS peak_cores, peak_rss_bytes,
                       CAST(ticks AS BIGINT) AS ticks, log_path, false AS estimated
                FROM {{runs}} WHERE {" AND ".join(conditions)}
                """,
                runs=data.table("runs"),
            )
        )
    if estimated and trigger in (None, RULE) and failed is not True:
        parts.append(_estimated(data, selection))
    if not parts:
        return None
    union = parts[0].select(*RUN_COLUMNS)
    for part in parts[1:]:
        union = union.unionByName(part)
    if failed is not None:
        union = union.where("failed" if failed else "NOT failed")
    if slowest is not None:
        union = union.orderBy(
            union["duration_seconds"].desc_nulls_last(), "started", "run_id", "host"
        ).limit(int(slowest))
    return union


def _estimated(data: Dataset, selection: Selection) -> Any:
    """The runs estimated from the ticks of agents devloop did not launch (runs._estimated_sql:
    a span of ticks with a process, a gap of more than two intervals ending it), with the
    columns of :func:`devloop.analytics.runs`."""
    interval_us = max(1, round(selection.interval * 1e6))
    gap_us = GAP_INTERVALS * interval_us
    last_day = (selection.end - timedelta(microseconds=1)).astimezone(UTC).date()
    return data.sql(
        f"""
        WITH launched AS (
            SELECT DISTINCT host, pid, start_time FROM {{processes}}
            WHERE run_id IS NOT NULL AND unix_micros(ts) < {_us(selection.end)}
              AND date <= DATE'{last_day.isoformat()}'
        ),
        ticks AS (
            SELECT s.host, s.project, s.agent, unix_micros(s.ts) AS us,
                   sum(CAST(s.cpu_cores AS DOUBLE)) AS cores, sum(s.rss_bytes) AS rss
            FROM {{samples}} s LEFT ANTI JOIN launched l
                ON l.host = s.host AND l.pid = s.pid AND l.start_time = s.start_time
            WHERE {_where(selection, "s")}
            GROUP BY s.host, s.project, s.agent, s.ts
        ),
        marked AS (
            SELECT *, CASE WHEN us - lag(us) OVER w <= {gap_us} THEN 0 ELSE 1 END AS opens
            FROM ticks WINDOW w AS (PARTITION BY host, project, agent ORDER BY us)
        ),
        spans AS (
            SELECT *, sum(opens) OVER (PARTITION BY host, project, agent ORDER BY us
                                       ROWS UNBOUNDED PRECEDING) AS span
            FROM marked
        ),
        runs AS (
            SELECT host, project, agent, min(us) - {interval_us} AS started_us,
                   max(us) AS ended_us, count(*) AS ticks,
                   sum(cores) * CAST({interval_us / 1e6!r} AS DOUBLE) AS cpu_seconds,
                   max(cores) AS peak_cores, max(rss) AS peak_rss_bytes
            FROM spans GROUP BY host, project, agent, span
        )
        SELECT concat('est-', project, '-', agent, '-', CAST(started_us AS STRING)) AS run_id,
               host, project, agent, '{RULE}' AS trigger, 'estimated' AS status,
               CAST(NULL AS STRING) AS command, timestamp_micros(started_us) AS started,
               timestamp_micros(ended_us) AS ended,
               (ended_us - started_us) / 1e6 AS duration_seconds,
               CAST(NULL AS BIGINT) AS exit_code, CAST(NULL AS BIGINT) AS signal,
               false AS failed, CAST(NULL AS DOUBLE) AS queue_wait_seconds,
               CAST(NULL AS DOUBLE) AS paused_seconds, CAST(NULL AS DOUBLE) AS throttled_seconds,
               cpu_seconds, CAST(NULL AS DOUBLE) AS cpu_user_seconds,
               CAST(NULL AS DOUBLE) AS cpu_system_seconds, CAST(NULL AS BIGINT) AS max_rss_bytes,
               peak_cores, CAST(peak_rss_bytes AS BIGINT) AS peak_rss_bytes, ticks,
               CAST(NULL AS STRING) AS log_path, true AS estimated
        FROM runs
        """,
        processes=data.table("processes"),
        samples=data.table("samples"),
    )
