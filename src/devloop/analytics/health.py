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

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, iso, open_store, records
from devloop.analytics._series import lives_sql
from devloop.analytics.stats import theil_sen_rows
from devloop.analytics.timerange import TimeRange
from devloop.units import MIB

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl

    from devloop.store.layout import Partition
    from devloop.store.rollups import Raw

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
    """

    selection: Selection
    memory: pl.DataFrame
    fds: pl.DataFrame
    restarts: pl.DataFrame
    stopped: pl.DataFrame
    newest_tick: datetime | None
    collector_age_seconds: float | None
    collector_fresh: bool
    spool_segments: int
    spool_bytes: int
    findings: tuple[str, ...]
    min_life: float = 3600.0
    short_lives: int = 0

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
        import polars as pl

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
            "memory_leaks": records(self.memory.filter(pl.col("leak"))),
            "fd_leaks": records(self.fds.filter(pl.col("leak"))),
            "restart_loops": records(self.restarts.filter(pl.col("flagged"))),
            "stopped": records(self.stopped),
            "memory_trends": records(self.memory),
            "fd_trends": records(self.fds),
            "short_lives": {
                "min_life_seconds": self.min_life,
                "skipped": self.short_lives,
                "note": self.short_lives_note,
            },
        }


def _duration(seconds: float) -> str:
    """``1h``, ``1h 30m``, ``90s``: a duration as the options take it."""
    if seconds % 60 or seconds < 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(int(seconds) // 60, 60)
    return " ".join(part for part in (f"{hours}h" if hours else "",
                                      f"{minutes}m" if minutes else "") if part)  # fmt: skip


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
    import polars as pl

    from devloop.store import StoreWarning, store_info

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    lives = _lives(store, selection)
    memory, fds = _trends(store, selection, lives, min_life)
    short_lives = _short_lives(lives, min_life)
    memory = _flag(memory, leak_mb_per_hour, min_tau)
    fds = _flag(fds, fd_per_hour, min_tau)
    restarts = _restarts(lives, short_life, restart_threshold)
    stopped = _stopped(store, selection, lives, stopped_min)
    ((newest,),) = store.rows("SELECT max(ts) FROM system")
    now = now or datetime.now(UTC)
    age = (now - newest).total_seconds() if newest is not None else None
    fresh = age is not None and age <= 3 * selection.interval
    with warnings.catch_warnings():  # connect() already warned about skipped files
        warnings.simplefilter("ignore", StoreWarning)
        info = store_info(store.root)
    findings: list[str] = []
    for row in memory.filter(pl.col("leak")).iter_rows(named=True):
        findings.append(
            f"memory leak: {row['project']}/{row['agent']} pid {row['pid']} grows "
            f"{row['slope_per_hour']:.1f}MB/hour over {row['hours']:.1f}h (tau {row['tau']:.2f})"
        )
    for row in fds.filter(pl.col("leak")).iter_rows(named=True):
        findings.append(
            f"file-handle leak: {row['project']}/{row['agent']} pid {row['pid']} opens "
            f"{row['slope_per_hour']:.1f} more per hour over {row['hours']:.1f}h "
            f"(tau {row['tau']:.2f})"
        )
    for row in restarts.filter(pl.col("flagged")).iter_rows(named=True):
        findings.append(
            f"restart loop: {row['project']}/{row['agent']} started {row['short_lives']} "
            f"processes that lived under {short_life:g}s in the hour from {iso(row['hour'])}"
        )
    for row in stopped.iter_rows(named=True):
        state = "still stopped" if row["still_stopped"] else "stopped"
        findings.append(
            f"stopped process: {row['project']}/{row['agent']} pid {row['pid']} {state} "
            f"for {row['stopped_seconds']:g}s (last at {iso(row['last_stopped'])})"
        )
    if not fresh:
        shown = f"{age:.0f}s ago" if age is not None else "never"
        findings.append(
            f"collector: the newest tick is {shown}; is `devloop workspace collect` running?"
        )
    if info.spool_segments > BACKLOG_SEGMENTS:
        findings.append(
            f"store backlog: {info.spool_segments} spool segments await conversion to Parquet"
        )
    return Health(
        selection=selection,
        memory=memory,
        fds=fds,
        restarts=restarts,
        stopped=stopped,
        newest_tick=newest.astimezone(UTC) if newest is not None else None,
        collector_age_seconds=age,
        collector_fresh=fresh,
        spool_segments=info.spool_segments,
        spool_bytes=info.spool_bytes,
        findings=tuple(findings),
        min_life=min_life,
        short_lives=short_lives,
    )


def _lives(store: Store, selection: Selection) -> pl.DataFrame:
    """:func:`lives_sql` as a frame (what the trends and the restart loops start from)."""
    lives_rel, params = lives_sql(store, selection)
    return store.frame(f"SELECT * FROM {lives_rel}", params)


def _short_lives(all_lives: pl.DataFrame, min_life: float) -> int:
    """How many lives (as :func:`_trends` joins them) lasted under ``min_life`` in the range."""
    import polars as pl

    spans = all_lives.group_by("host", "pid", "start_time").agg(
        pl.col("first").min(), pl.col("last").max()
    )
    return spans.filter(
        pl.col("last").dt.epoch("us") - pl.col("first").dt.epoch("us") < round(min_life * 1e6)
    ).height


def _trends(
    store: Store, selection: Selection, all_lives: pl.DataFrame, min_life: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Theil-Sen trends of rss and fds for every life at least ``min_life`` long."""
    import numpy as np
    import polars as pl

    from devloop.store.layout import Partition
    from devloop.store.rollups import THINNED_EVERY, THINNED_TICK_US

    interval_us = max(1, round(selection.interval * 1e6))
    # Thin in SQL first (every k-th tick, so a life of min_life keeps about MAX_POINTS), then
    # evenly to MAX_POINTS per life below.
    every = max(1, int(min_life / selection.interval) // MAX_POINTS)
    lives = (
        all_lives.group_by("host", "pid", "start_time")
        .agg(
            pl.col("project").sort_by("first").first(),
            pl.col("agent").sort_by("first").first(),
            pl.col("first").min(),
            pl.col("last").max(),
        )
        .filter(
            pl.col("last").dt.epoch("us") - pl.col("first").dt.epoch("us") >= round(min_life * 1e6)
        )
        .sort("host", "pid", "start_time")
        .with_row_index("life")
    )
    # The thinned ticks of a grid that is a multiple of the ``thinned`` rollup's are all in
    # it (a tick t with (t // I) % E = 0 has t mod I*E < I <= the rollup's tick, and I*E is a
    # multiple of the rollup's grid), so the cached hours read it and filter it further.
    rollup = (
        interval_us <= THINNED_TICK_US
        and (interval_us * every) % (THINNED_TICK_US * THINNED_EVERY) == 0
        and selection.start >= _EPOCH
    )
    end_hours = {
        Partition.of_datetime(moment)
        for moment in (*lives["first"].to_list(), *lives["last"].to_list())
    }
    sql, params = _points_sql(store, selection, interval_us, every, end_hours, rollup=rollup)
    ends = pl.concat(
        [
            lives.select("host", "pid", "start_time", pl.col(end).alias("ts"))
            for end in ("first", "last")
        ]
    ).unique()
    registered = {
        "devloop_lives": lives.select("life", "host", "pid", "start_time").to_arrow(),
        "devloop_ends": ends.to_arrow(),
    }
    with store.db.registered(registered):
        points = store.frame(
            f"""
            SELECT l.life, epoch_us(p.ts) AS ts, coalesce(p.rss_bytes, 0) AS rss,
                   coalesce(p.fds, 0) AS fds
            FROM ({sql}) p JOIN devloop_lives l
              ON p.host = l.host AND p.pid = l.pid AND p.start_time = l.start_time
            ORDER BY l.life, ts
            """,
            params,
        )
    life = points["life"].to_numpy()
    ts = points["ts"].to_numpy()
    rss = points["rss"].to_numpy().astype(np.float64)
    handles = points["fds"].to_numpy().astype(np.float64)
    # Per life (in order): the rows fitted, evenly spread to at most MAX_POINTS.
    cuts = (np.flatnonzero(np.diff(life)) + 1).tolist()
    fitted: list[tuple[int, npt.NDArray[np.int64]]] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(life)], strict=True):
        count = hi - lo
        if count > MAX_POINTS:
            picks = np.unique(np.linspace(0, count - 1, MAX_POINTS).round().astype(np.int64))
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
        row = lives.row(number, named=True)
        first, last = row["first"], row["last"]
        head = (
            row["project"],
            row["agent"],
            int(row["pid"]),
            row["start_time"],
            first,
            last,
            (last - first).total_seconds() / 3600,
            len(rows),
        )
        lo, hi = rows[0], rows[-1]
        memory_rows.append((*head, int(rss[lo]), int(rss[hi]), *values[k][:2]))
        fd_rows.append((*head, int(handles[lo]), int(handles[hi]), *values[k][2:]))
    schema: Any = {
        "project": pl.String,
        "agent": pl.String,
        "pid": pl.Int64,
        "start_time": pl.Datetime("us", "UTC"),
        "first": pl.Datetime("us", "UTC"),
        "last": pl.Datetime("us", "UTC"),
        "hours": pl.Float64,
        "points": pl.Int64,
        "start_value": pl.Int64,
        "end_value": pl.Int64,
        "slope_per_hour": pl.Float64,
        "tau": pl.Float64,
    }
    return (
        pl.DataFrame(memory_rows, schema=schema, orient="row"),
        pl.DataFrame(fd_rows, schema=schema, orient="row"),
    )


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
    from devloop.analytics._series import range_conditions

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
            begins = _hour_start(partition)
            inside = selection.start <= begins and begins + timedelta(hours=1) <= selection.end
            (whole_hours if inside else cut_hours).append(entry)
        for paths, condition, condition_params in (
            (whole_hours, names, names_params),
            (cut_hours, where, where_params),
        ):
            if not paths:
                continue
            sql = f"SELECT {columns} FROM {_read(paths)} WHERE {condition}"
            parts.append(sql if same else f"{sql} AND {thinned}")
            params += condition_params if same else [*condition_params, interval_us, every]
    # The ends: among the per-hour ends of the cached hours wholly in the range (the ``edges``
    # rollup) and the rows of the other hours holding one.
    whole: list[Path] = []
    raw: list[Raw] = [
        path
        for partition, paths in sources.files.items()
        if partition in end_hours and partition not in cached
        for path in paths
    ]
    for partition, entry in zip(sources.partitions, sources.cached["edges"], strict=True):
        if partition not in end_hours:
            continue
        begins = _hour_start(partition)
        if selection.start <= begins and begins + timedelta(hours=1) <= selection.end:
            whole.append(entry)
        else:
            raw.extend(sources.files[partition])
    reads = [
        f"SELECT {columns} FROM {_read(paths)} WHERE {where} AND NOT {thinned}"
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
    for begins in sorted(_hour_start(partition) for partition in hours):
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


def _hour_start(partition: Partition) -> datetime:
    """``partition.start``, without its slow strptime."""
    return datetime.fromisoformat(partition.date).replace(tzinfo=UTC) + timedelta(
        hours=partition.hour
    )


def _read(paths: Sequence[Raw]) -> str:
    """The rows at ``paths``: cache entries (a whole past day's as one file), or raw rows
    (files and the spool's rows of an hour, see ``_series._read``)."""
    from devloop.analytics import _series

    return _series._read(paths)


def _flag(trends: pl.DataFrame, threshold: float, min_tau: float) -> pl.DataFrame:
    import polars as pl

    flagged = trends.with_columns(
        ((pl.col("slope_per_hour") >= threshold) & (pl.col("tau") >= min_tau)).alias("leak")
    )
    return flagged.sort(
        ["leak", "slope_per_hour", "project", "agent", "pid"],
        descending=[True, True, False, False, False],
    ).select(TREND_COLUMNS)


def _restarts(all_lives: pl.DataFrame, short_life: float, threshold: int) -> pl.DataFrame:
    import polars as pl

    frame = (
        all_lives.filter(
            pl.col("last").dt.epoch("us") - pl.col("start_time").dt.epoch("us")
            < round(short_life * 1e6)
        )
        .group_by("project", "agent", pl.col("start_time").dt.truncate("1h").alias("hour"))
        .agg(pl.len().cast(pl.Int64).alias("short_lives"))
    )
    return frame.with_columns((pl.col("short_lives") >= threshold).alias("flagged")).sort(
        ["flagged", "short_lives", "project", "agent", "hour"],
        descending=[True, True, False, False, False],
    )


def _stopped(
    store: Store, selection: Selection, all_lives: pl.DataFrame, stopped_min: float
) -> pl.DataFrame:
    import polars as pl

    where, params = store.where(selection)
    stopped = store.frame(
        f"""
        SELECT host, project, agent, pid, start_time, min(ts) AS first_stopped,
               max(ts) AS last_stopped, count(*) AS ticks
        FROM samples WHERE {where} AND state = 'stopped'
        GROUP BY host, project, agent, pid, start_time
        """,
        params,
    )
    keys = ["host", "pid", "start_time"]
    # A life's last tick in the range: the newest of its files' rows (``all_lives``) and of
    # the spool's rows of the hours without a rollup (``samples`` there).
    seen = [all_lives.select(*keys, "last")]
    sources = store.sources(selection)
    rest, rest_params = _samples_outside(
        store, selection, set(sources.partitions), "host, pid, start_time, ts AS last"
    )
    if rest and not stopped.is_empty():
        with store.db.registered({"devloop_stopped": stopped.select(keys).to_arrow()}):
            newest = store.frame(
                f"""
                SELECT r.host, r.pid, r.start_time, max(r.last) AS last
                FROM ({rest}) r SEMI JOIN devloop_stopped t
                  ON r.host = t.host AND r.pid = t.pid AND r.start_time = t.start_time
                GROUP BY r.host, r.pid, r.start_time
                """,
                rest_params,
            )
        seen.append(newest.cast(seen[0].schema))
    last_seen = pl.concat(seen).group_by(keys).agg(pl.col("last").max())
    frame = stopped.join(last_seen, on=keys).select(
        "project",
        "agent",
        pl.col("pid").cast(pl.Int64),
        "start_time",
        "first_stopped",
        "last_stopped",
        (pl.col("ticks") * selection.interval).alias("stopped_seconds"),
        (pl.col("last_stopped") == pl.col("last")).alias("still_stopped"),
    )
    return frame.filter(pl.col("stopped_seconds") >= stopped_min).sort(
        ["stopped_seconds", "project", "agent", "pid"], descending=[True, False, False, False]
    )
