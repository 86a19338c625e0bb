"""``workspace health``: leaks, restart loops, stopped processes, collector and store state.

* **Memory leaks**: for every process life (pid, start time) that lasted at least
  ``min_life`` seconds, the Theil-Sen slope of rss against time (the median of the slopes of all
  pairs of points, robust to the bumps of each run) on at most :data:`MAX_POINTS` evenly spread
  samples, in MB per hour, with Kendall's tau as its fit (1 = rising at every step, 0 = no
  trend). A life is a leak when the slope is at least ``leak_mb_per_hour`` and tau at least
  ``min_tau``.
* **File-handle leaks**: the same with open file handles (per hour, ``fd_per_hour``).
  Shorter lives are not analysed, and counted (``short_lives``), so an empty trend table says
  why it is empty.
* **Restart loops**: an agent that started ``restart_threshold`` or more processes within one
  UTC hour that each lived less than ``short_life`` seconds.
* **Stopped processes**: lives sampled in state "stopped" for ``stopped_min`` seconds or more
  (paused and never resumed, or paused far more than enforcement should).
* **Collector freshness**: age of the newest ``system`` row; stale beyond 3 tick intervals.
* **Store backlog**: spool segments not yet converted to Parquet (a running collector keeps one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import Selection, Store, lives_sql, open_store, relation
from devloop.analytics.stats import theil_sen_rows
from devloop.analytics.timerange import TimeRange
from devloop.store.db import Rows, fetch, iso
from devloop.units import MIB

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl

    from devloop.store.columns import Kind
    from devloop.store.db import Raw
    from devloop.store.layout import Partition

#: Points per life the trend is fitted on.
MAX_POINTS = 100

#: Spool segments a healthy running collector may have (the open one and one rolling over).
BACKLOG_SEGMENTS = 2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Columns of :attr:`Health.memory` and :attr:`Health.fds`.
TREND_COLUMNS = (
    "project",
    "agent",
    "pid",
    "start_time",
    "first",
    "last",
    "hours",
    "points",
    "start_value",
    "end_value",
    "slope_per_hour",
    "tau",
    "leak",
)


#: The kinds of the trend rows' columns (:data:`TREND_COLUMNS`).
TREND_KINDS: dict[str, Kind] = {
    "project": "str",
    "agent": "str",
    "pid": "i64",
    "start_time": "ts",
    "first": "ts",
    "last": "ts",
    "hours": "f64",
    "points": "i64",
    "start_value": "i64",
    "end_value": "i64",
    "slope_per_hour": "f64",
    "tau": "f64",
    "leak": "bool",
}
RESTART_KINDS: dict[str, Kind] = {
    "project": "str",
    "agent": "str",
    "hour": "ts",
    "short_lives": "i64",
    "flagged": "bool",
}
STOPPED_KINDS: dict[str, Kind] = {
    "project": "str",
    "agent": "str",
    "pid": "i64",
    "start_time": "ts",
    "first_stopped": "ts",
    "last_stopped": "ts",
    "stopped_seconds": "f64",
    "still_stopped": "bool",
}


@dataclass(frozen=True)
class Health:
    """The health report.

    * ``memory`` / ``fds``: one row per life analysed (:data:`TREND_COLUMNS`): project, agent,
      pid, start_time, first/last sample, hours, points fitted, start_value/end_value (first
      and last sample: bytes for memory, handles for fds), slope_per_hour (MB/hour for memory,
      handles/hour for fds), tau, leak (bool); leaks first, steepest first
    * ``restarts``: project, agent, hour, short_lives, flagged
    * ``stopped``: project, agent, pid, start_time, first_stopped, last_stopped,
      stopped_seconds, still_stopped
    * ``newest_tick``, ``collector_age_seconds``, ``collector_fresh``; ``spool_segments``,
      ``spool_bytes``; ``findings``: one line per problem found (empty when healthy)
    * ``min_life``: the shortest life analysed for leaks (seconds); ``short_lives``: how many
      process lives in the range were shorter, so not analysed (in no trend table)

    The four tables are DataFrames made when first asked for, from their rows as DuckDB and
    the fit returned them (``memory_rows`` and so on: what the CLI renders, without polars).
    """

    selection: Selection
    memory_rows: Rows
    fds_rows: Rows
    restart_rows: Rows
    stopped_rows: Rows
    newest_tick: datetime | None
    collector_age_seconds: float | None
    collector_fresh: bool
    spool_segments: int
    spool_bytes: int
    findings: tuple[str, ...]
    min_life: float = 3600.0
    short_lives: int = 0

    @cached_property
    def memory(self) -> pl.DataFrame:
        return self.memory_rows.frame()

    @cached_property
    def fds(self) -> pl.DataFrame:
        return self.fds_rows.frame()

    @cached_property
    def restarts(self) -> pl.DataFrame:
        return self.restart_rows.frame()

    @cached_property
    def stopped(self) -> pl.DataFrame:
        return self.stopped_rows.frame()

    @property
    def short_lives_note(self) -> str | None:
        """``12 processes lived under 1h (min_life) and are not analysed for leaks``, or None
        when every life was analysed."""
        if not self.short_lives:
            return None
        count = f"{self.short_lives} process{'es' if self.short_lives != 1 else ''}"
        return (
            f"{count} lived under {_duration(self.min_life)} (min_life) and "
            f"{'are' if self.short_lives != 1 else 'is'} not analysed for leaks"
        )

    @property
    def healthy(self) -> bool:
        """No finding."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """``{"range", "healthy", "findings", "collector", "store", "memory_leaks", "fd_leaks",
        "restart_loops", "stopped", "memory_trends", "fd_trends", "short_lives"}`` (trends:
        every life analysed; ``short_lives``: ``{"min_life_seconds", "skipped", "note"}``, the
        lives too short to analyse)."""
        return {
            "range": self.selection.to_json(),
            "healthy": self.healthy,
            "findings": list(self.findings),
            "collector": {
                "newest_tick": iso(self.newest_tick),
                "age_seconds": self.collector_age_seconds,
                "fresh": self.collector_fresh,
            },
            "store": {"spool_segments": self.spool_segments, "spool_bytes": self.spool_bytes},
            "memory_leaks": _flagged(self.memory_rows, "leak").records(),
            "fd_leaks": _flagged(self.fds_rows, "leak").records(),
            "restart_loops": _flagged(self.restart_rows, "flagged").records(),
            "stopped": self.stopped_rows.records(),
            "memory_trends": self.memory_rows.records(),
            "fd_trends": self.fds_rows.records(),
            "short_lives": {
                "min_life_seconds": self.min_life,
                "skipped": self.short_lives,
                "note": self.short_lives_note,
            },
        }


def _flagged(rows: Rows, column: str) -> Rows:
    """The rows whose boolean ``column`` is true."""
    index = rows.columns.index(column)
    return replace(rows, rows=[row for row in rows.rows if row[index]])


def _duration(seconds: float) -> str:
    """``1h``, ``1h 30m``, ``90s``: a duration as the options take it."""
    if seconds % 60 or seconds < 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(int(seconds) // 60, 60)
    return " ".join(part for part in (f"{hours}h" if hours else "",
                                      f"{minutes}m" if minutes else "") if part)  # fmt: skip


#: The temporary tables a report's lives and trends are kept in while it runs.
_LIVES, _TREND_LIVES, _ENDS = "devloop_health_lives", "devloop_lives", "devloop_ends"


def health(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    leak_mb_per_hour: float = 5.0,
    fd_per_hour: float = 10.0,
    min_tau: float = 0.5,
    min_life: float = 3600.0,
    restart_threshold: int = 30,
    short_life: float = 60.0,
    stopped_min: float = 300.0,
    now: datetime | None = None,
) -> Health:
    """Run every check over ``time_range`` (see the module doc for the thresholds)."""
    from devloop.store.layout import spool_backlog

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    lives_rel, params = lives_sql(store, selection)
    store.db.execute(f"CREATE OR REPLACE TEMP TABLE {_LIVES} AS SELECT * FROM {lives_rel}", params)
    try:
        memory, fds = _trends(store, selection, min_life)
        ((short_lives,),) = store.rows(
            f"""
            SELECT count(*) FROM (
                SELECT min(first) AS first, max(last) AS last FROM {_LIVES}
                GROUP BY host, pid, start_time)
            WHERE epoch_us(last) - epoch_us(first) < ?
            """,
            [round(min_life * 1e6)],
        )
        restarts = _restarts(store, short_life, restart_threshold)
        stopped = _stopped(store, selection, stopped_min)
    finally:
        store.db.execute(f"DROP TABLE IF EXISTS {_LIVES}")
    memory = _flag(memory, leak_mb_per_hour, min_tau)
    fds = _flag(fds, fd_per_hour, min_tau)
    ends = store.ends("system")
    newest = ends[1] if ends is not None else None
    now = now or datetime.now(UTC)
    age = (now - newest).total_seconds() if newest is not None else None
    fresh = age is not None and age <= 3 * selection.interval
    spool_segments, spool_bytes = spool_backlog(store.root)
    findings: list[str] = []
    for row in _flagged(memory, "leak").records():
        findings.append(
            f"memory leak: {row['project']}/{row['agent']} pid {row['pid']} grows "
            f"{row['slope_per_hour']:.1f}MB/hour over {row['hours']:.1f}h (tau {row['tau']:.2f})"
        )
    for row in _flagged(fds, "leak").records():
        findings.append(
            f"file-handle leak: {row['project']}/{row['agent']} pid {row['pid']} opens "
            f"{row['slope_per_hour']:.1f} more per hour over {row['hours']:.1f}h "
            f"(tau {row['tau']:.2f})"
        )
    for project, agent, hour, count, _ in _flagged(restarts, "flagged").rows:
        findings.append(
            f"restart loop: {project}/{agent} started {count} "
            f"processes that lived under {short_life:g}s in the hour from {iso(hour)}"
        )
    for project, agent, pid, _, _, last_stopped, seconds, still in stopped.rows:
        state = "still stopped" if still else "stopped"
        findings.append(
            f"stopped process: {project}/{agent} pid {pid} {state} "
            f"for {seconds:g}s (last at {iso(last_stopped)})"
        )
    if not fresh:
        shown = f"{age:.0f}s ago" if age is not None else "never"
        findings.append(
            f"collector: the newest tick is {shown}; is `devloop workspace collect` running?"
        )
    if spool_segments > BACKLOG_SEGMENTS:
        findings.append(
            f"store backlog: {spool_segments} spool segments await conversion to Parquet"
        )
    return Health(
        selection=selection,
        memory_rows=memory,
        fds_rows=fds,
        restart_rows=restarts,
        stopped_rows=stopped,
        newest_tick=newest.astimezone(UTC) if newest is not None else None,
        collector_age_seconds=age,
        collector_fresh=fresh,
        spool_segments=spool_segments,
        spool_bytes=spool_bytes,
        findings=tuple(findings),
        min_life=min_life,
        short_lives=short_lives,
    )


def _trends(store: Store, selection: Selection, min_life: float) -> tuple[Rows, Rows]:
    """Theil-Sen trends of rss and fds for every life at least ``min_life`` long (of the lives
    in the temporary table ``_LIVES``), not yet flagged (``leak`` None)."""
    import numpy as np

    from devloop.store.layout import Partition
    from devloop.store.rollups import THINNED_EVERY, THINNED_TICK_US

    interval_us = max(1, round(selection.interval * 1e6))
    # Thin in SQL first (every k-th tick, so a life of min_life keeps about MAX_POINTS), then
    # evenly to MAX_POINTS per life below.
    every = max(1, int(min_life / selection.interval) // MAX_POINTS)
    # A life's project and agent are those of its first rows (a pid seen under two names).
    store.db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {_TREND_LIVES} AS
        SELECT CAST(row_number() OVER (ORDER BY host, pid, start_time) - 1 AS BIGINT) AS life,
               host, pid, start_time, project, agent, first, last
        FROM (SELECT host, pid, start_time, arg_min(project, first) AS project,
                     arg_min(agent, first) AS agent, min(first) AS first, max(last) AS last
              FROM {_LIVES} GROUP BY host, pid, start_time)
        WHERE epoch_us(last) - epoch_us(first) >= ?
        """,
        [round(min_life * 1e6)],
    )
    try:
        lives = store.rows(
            f"SELECT project, agent, pid, start_time, first, last FROM {_TREND_LIVES} ORDER BY life"
        )
        store.db.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {_ENDS} AS
            SELECT host, pid, start_time, first AS ts FROM {_TREND_LIVES}
            UNION SELECT host, pid, start_time, last FROM {_TREND_LIVES}
            """
        )
        # The thinned ticks of a grid that is a multiple of the ``thinned`` rollup's are all in
        # it (a tick t with (t // I) % E = 0 has t mod I*E < I <= the rollup's tick, and I*E is
        # a multiple of the rollup's grid), so the cached hours read it and filter it further.
        rollup = (
            interval_us <= THINNED_TICK_US
            and (interval_us * every) % (THINNED_TICK_US * THINNED_EVERY) == 0
            and selection.start >= _EPOCH
        )
        end_hours = {
            Partition.of_datetime(moment) for *_, first, last in lives for moment in (first, last)
        }
        sql, params = _points_sql(store, selection, interval_us, every, end_hours, rollup=rollup)
        points = store.db.numpy(
            f"""
            SELECT l.life, epoch_us(p.ts) AS ts, CAST(coalesce(p.rss_bytes, 0) AS DOUBLE) AS rss,
                   CAST(coalesce(p.fds, 0) AS DOUBLE) AS fds
            FROM ({sql}) p JOIN {_TREND_LIVES} l
              ON p.host = l.host AND p.pid = l.pid AND p.start_time = l.start_time
            ORDER BY l.life, ts
            """,
            params,
        )
    finally:
        store.db.execute(f"DROP TABLE IF EXISTS {_TREND_LIVES}")
        store.db.execute(f"DROP TABLE IF EXISTS {_ENDS}")
    life, ts, rss, handles = (np.asarray(points[name]) for name in ("life", "ts", "rss", "fds"))
    # Per life (in order): the rows fitted, evenly spread to at most MAX_POINTS.
    cuts = (np.flatnonzero(np.diff(life)) + 1).tolist()
    fitted: list[tuple[int, npt.NDArray[np.int64]]] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(life)], strict=True):
        count = hi - lo
        if count > MAX_POINTS:
            # more rows than points: steps over 1, so the rounded picks are distinct and rising
            # (np.unique would give the same, and import numpy.ma to do it)
            picks = np.linspace(0, count - 1, MAX_POINTS).round().astype(np.int64)
            fitted.append((int(life[lo]), lo + picks))
        elif count:
            fitted.append((int(life[lo]), np.arange(lo, hi, dtype=np.int64)))
    # Lives with as many points are fitted at once: per life, memory slope and tau, then fds.
    by_count: dict[int, list[int]] = {}
    for k, (_, rows) in enumerate(fitted):
        by_count.setdefault(len(rows), []).append(k)
    fits = np.zeros((len(fitted), 4))
    for members in by_count.values():
        index = np.stack([fitted[k][1] for k in members])
        times = ts[index]
        # (ts - first.timestamp() * 1e6) / 3.6e9, as Python's datetime arithmetic gives it
        hours = (times - (times[:, :1] / 1e6) * 1e6) / 3.6e9
        slopes, taus = theil_sen_rows(hours, np.stack([rss[index] / MIB, handles[index]]))
        fits[members, 0], fits[members, 2] = slopes
        fits[members, 1], fits[members, 3] = taus
    values: list[list[float]] = fits.tolist()
    memory_rows: list[tuple[Any, ...]] = []
    fd_rows: list[tuple[Any, ...]] = []
    for k, (number, rows) in enumerate(fitted):
        project, agent, pid, start_time, first, last = lives[number]
        head = (
            project,
            agent,
            int(pid),
            start_time,
            first,
            last,
            (last - first).total_seconds() / 3600,
            len(rows),
        )
        lo, hi = rows[0], rows[-1]
        memory_rows.append((*head, int(rss[lo]), int(rss[hi]), *values[k][:2], None))
        fd_rows.append((*head, int(handles[lo]), int(handles[hi]), *values[k][2:], None))
    kinds = tuple(TREND_KINDS.values())
    return Rows(TREND_COLUMNS, kinds, memory_rows), Rows(TREND_COLUMNS, kinds, fd_rows)


def _points_sql(
    store: Store,
    selection: Selection,
    interval_us: int,
    every: int,
    end_hours: set[Partition],
    *,
    rollup: bool,
) -> tuple[str, list[Any]]:
    """A relation ``(host, pid, start_time, ts, rss_bytes, fds)`` of the selected samples the
    trends are fitted on: those at the thinned ticks (``(epoch_us(ts) // interval_us) % every
    = 0``) and those at each life's first and last tick in the range (``devloop_ends``; their
    hours are ``end_hours``) not thinned in. With ``rollup``, the thinned ticks of the cached
    hours come from their ``thinned`` rollups, the others from ``samples``; else all from
    ``samples``."""
    from devloop.analytics.query import range_conditions

    sources = store.sources(selection)
    cached = set(sources.partitions)
    where, where_params = range_conditions(selection)
    thinned = "(epoch_us(ts) // ?) % ? = 0"
    columns = "host, pid, start_time, ts, rss_bytes, fds"
    parts: list[str] = []
    params: list[Any] = []
    spans_sql, spans_params = _samples_outside(
        store, selection, cached if rollup else set(), columns
    )
    if spans_sql:
        parts.append(f"SELECT * FROM ({spans_sql}) WHERE {thinned}")
        params += [*spans_params, interval_us, every]
    if rollup and cached:
        from devloop.store.rollups import THINNED_EVERY, THINNED_TICK_US

        # the rollup's own thinning needs no further filter, a whole hour no time condition
        same = (interval_us, every) == (THINNED_TICK_US, THINNED_EVERY)
        names, names_params = range_conditions(selection, times=False)
        whole_hours: list[Path] = []
        cut_hours: list[Path] = []
        for partition, entry in zip(sources.partitions, sources.cached["thinned"], strict=True):
            (whole_hours if store.holds_whole(selection, partition) else cut_hours).append(entry)
        for paths, condition, condition_params in (
            (whole_hours, names, names_params),
            (cut_hours, where, where_params),
        ):
            if not paths:
                continue
            sql = f"SELECT {columns} FROM {relation(paths)} WHERE {condition}"
            parts.append(sql if same else f"{sql} AND {thinned}")
            params += condition_params if same else [*condition_params, interval_us, every]
    # The ends: among the per-hour ends of the cached hours wholly in the range (the ``edges``
    # rollup) and the rows of the other hours holding one. Every whole hour's edges are read,
    # not only those of the hours holding an end: a whole past day is then one file instead of
    # one per hour (the edges are two rows per life and hour; the join keeps the ends).
    whole: list[Path] = []
    raw: list[Raw] = [
        path
        for partition, paths in sources.files.items()
        if partition in end_hours and partition not in cached
        for path in paths
    ]
    for partition, entry in zip(sources.partitions, sources.cached["edges"], strict=True):
        if store.holds_whole(selection, partition):
            whole.append(entry)
        elif partition in end_hours:
            raw.extend(sources.files[partition])
    reads = [
        f"SELECT {columns} FROM {relation(paths)} WHERE {where} AND NOT {thinned}"
        for paths in (whole, raw)
        if paths
    ]
    if reads:
        parts.append(
            f"""
            SELECT s.host, s.pid, s.start_time, s.ts, s.rss_bytes, s.fds
            FROM ({" UNION ALL ".join(reads)}) s
            JOIN devloop_ends e
              ON s.host = e.host AND s.pid = e.pid AND s.start_time = e.start_time
             AND s.ts = e.ts
            """
        )
        params += [*where_params, interval_us, every] * len(reads)
    if not parts:
        parts.append(f"SELECT {columns} FROM samples WHERE false")
    return " UNION ALL ".join(parts), params


def _samples_outside(
    store: Store, selection: Selection, hours: set[Partition], columns: str
) -> tuple[str, list[Any]]:
    """SQL reading ``columns`` of the selected ``samples`` rows outside ``hours`` (``""``
    when the range lies within them), and its parameters. ``samples`` also holds the spool's
    rows not yet in Parquet."""
    hour = timedelta(hours=1)
    spans: list[tuple[datetime, datetime]] = []
    cursor = selection.start
    for begins in sorted(partition.start for partition in hours):
        if begins + hour <= cursor or begins >= selection.end:
            continue
        if begins > cursor:
            spans.append((cursor, begins))
        cursor = begins + hour
    if cursor < selection.end:
        spans.append((cursor, selection.end))
    if not spans:
        return "", []
    # the range narrowed to the spans, so the ``date`` condition skips the other days' files
    where, params = store.where(replace(selection, start=spans[0][0], end=spans[-1][1]))
    pieces = " OR ".join("(ts >= ? AND ts < ?)" for _ in spans)
    sql = f"SELECT {columns} FROM samples WHERE {where} AND ({pieces})"
    return sql, [*params, *(moment for span in spans for moment in span)]


def _flag(trends: Rows, threshold: float, min_tau: float) -> Rows:
    """The trends with ``leak`` set, leaks first, steepest first (a NaN slope counts as the
    steepest, as polars sorts it), then by project, agent and pid."""

    def steepest(slope: float) -> float:
        return -math.inf if math.isnan(slope) else -slope

    flagged = [(*row[:-1], row[-3] >= threshold and row[-2] >= min_tau) for row in trends.rows]
    flagged.sort(key=lambda row: (not row[-1], steepest(row[-3]), row[0], row[1], row[2]))
    return replace(trends, rows=flagged)


def _restarts(store: Store, short_life: float, threshold: int) -> Rows:
    """Per agent and UTC hour of their start, the lives shorter than ``short_life``."""
    return fetch(
        store.db,
        f"""
        SELECT project, agent, hour, short_lives, short_lives >= ? AS flagged
        FROM (SELECT project, agent, time_bucket(INTERVAL 1 hour, start_time) AS hour,
                     CAST(count(*) AS BIGINT) AS short_lives
              FROM {_LIVES} WHERE epoch_us(last) - epoch_us(start_time) < ?
              GROUP BY ALL)
        ORDER BY flagged DESC, short_lives DESC, project, agent, hour
        """,
        [threshold, round(short_life * 1e6)],
        RESTART_KINDS,
    )


def _stopped(store: Store, selection: Selection, stopped_min: float) -> Rows:
    """Lives sampled stopped for ``stopped_min`` seconds or more, and whether their last
    sample in the range is a stopped one."""
    where, params = store.where(selection)
    store.db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE devloop_stopped AS
        SELECT host, project, agent, pid, start_time, min(ts) AS first_stopped,
               max(ts) AS last_stopped, count(*) AS ticks
        FROM samples WHERE {where} AND state = 'stopped'
        GROUP BY host, project, agent, pid, start_time
        """,
        params,
    )
    try:
        # A life's last tick in the range: the newest of its files' rows (the lives) and of
        # the spool's rows of the hours without a rollup (``samples`` there).
        seen = [f"SELECT host, pid, start_time, last FROM {_LIVES}"]
        seen_params: list[Any] = []
        rest, rest_params = _samples_outside(
            store, selection, set(store.sources(selection).partitions),
            "host, pid, start_time, ts AS last",
        )  # fmt: skip
        if rest and store.rows("SELECT count(*) FROM devloop_stopped")[0][0]:
            seen.append(
                f"""
                SELECT r.host, r.pid, r.start_time, max(r.last) AS last
                FROM ({rest}) r SEMI JOIN devloop_stopped t
                  ON r.host = t.host AND r.pid = t.pid AND r.start_time = t.start_time
                GROUP BY r.host, r.pid, r.start_time
                """
            )
            seen_params = rest_params
        return fetch(
            store.db,
            f"""
            SELECT s.project, s.agent, CAST(s.pid AS BIGINT) AS pid, s.start_time,
                   s.first_stopped, s.last_stopped, s.ticks * ? AS stopped_seconds,
                   s.last_stopped = l.last AS still_stopped
            FROM devloop_stopped s JOIN (
                SELECT host, pid, start_time, max(last) AS last
                FROM ({" UNION ALL ".join(seen)}) GROUP BY host, pid, start_time) l
              ON s.host = l.host AND s.pid = l.pid AND s.start_time = l.start_time
            WHERE s.ticks * ? >= ?
            ORDER BY stopped_seconds DESC, project, agent, pid
            """,
            [selection.interval, *seen_params, selection.interval, stopped_min],
            STOPPED_KINDS,
        )
    finally:
        store.db.execute("DROP TABLE IF EXISTS devloop_stopped")
