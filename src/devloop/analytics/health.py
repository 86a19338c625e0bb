"""``workspace health``: leaks, restart loops, stopped processes, collector and store state.

* **Memory leaks**: for every process life (pid, start time) that lasted at least
  ``min_life`` seconds, the Theil-Sen slope of rss against time (the median of the slopes of all
  pairs of points, robust to the bumps of each run) on at most :data:`MAX_POINTS` evenly spread
  samples, in MB per hour, with Kendall's tau as its fit (1 = rising at every step, 0 = no
  trend). A life is a leak when the slope is at least ``leak_mb_per_hour`` and tau at least
  ``min_tau``.
* **File-handle leaks**: the same with open file handles (per hour, ``fd_per_hour``).
* **Restart loops**: an agent that started ``restart_threshold`` or more processes within one
  UTC hour that each lived less than ``short_life`` seconds.
* **Stopped processes**: lives sampled in state "stopped" for ``stopped_min`` seconds or more
  (paused and never resumed, or paused far more than enforcement should).
* **Collector freshness**: age of the newest ``system`` row; stale beyond 3 tick intervals.
* **Store backlog**: spool segments not yet converted to Parquet (a running collector keeps one).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, Store, iso, open_store, records
from devloop.analytics._series import lives_sql
from devloop.analytics.timerange import TimeRange
from devloop.units import MIB

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl

#: Points per life the trend is fitted on.
MAX_POINTS = 100

#: Spool segments a healthy running collector may have (the open one and one rolling over).
BACKLOG_SEGMENTS = 2

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

    @property
    def healthy(self) -> bool:
        """No finding."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """``{"range", "healthy", "findings", "collector", "store", "memory_leaks", "fd_leaks",
        "restart_loops", "stopped", "memory_trends", "fd_trends"}`` (trends: every life)."""
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
        }


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
    memory, fds = _trends(store, selection, min_life)
    memory = _flag(memory, leak_mb_per_hour, min_tau)
    fds = _flag(fds, fd_per_hour, min_tau)
    restarts = _restarts(store, selection, short_life, restart_threshold)
    stopped = _stopped(store, selection, stopped_min)
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
    )


def _trends(
    store: Store, selection: Selection, min_life: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Theil-Sen trends of rss and fds for every life at least ``min_life`` long."""
    import numpy as np
    import polars as pl

    lives_rel, lives_params = lives_sql(store, selection)
    _, params = store.where(selection)
    s_where, _ = store.where(selection, "s")
    interval_us = max(1, round(selection.interval * 1e6))
    # Thin in SQL first (every k-th tick, so a life of min_life keeps about MAX_POINTS), then
    # evenly to MAX_POINTS per life below.
    every = max(1, int(min_life / selection.interval) // MAX_POINTS)
    lives = store.frame(
        f"""
        SELECT host, pid, start_time, min(first) AS first, max(last) AS last
        FROM {lives_rel} GROUP BY host, pid, start_time
        HAVING epoch_us(max(last)) - epoch_us(min(first)) >= ?
        """,
        [*lives_params, round(min_life * 1e6)],
    )
    # Two parts, so the condition on ``ts`` is applied while the files are read: the thinned
    # ticks, and the first and last tick of each life (not already thinned in), read from
    # the files of the hours holding them only.
    from devloop.store.layout import Partition

    thinned = "(epoch_us(s.ts) // ?) % ? = 0"
    sources = store.sources(selection)
    end_hours = {
        Partition.of_datetime(moment)
        for moment in (*lives["first"].to_list(), *lives["last"].to_list())
    }
    # A life's ends are among the per-hour ends of the cached hours wholly in the range (the
    # ``edges`` rollup); in other hours, among their rows.
    whole: list[Path] = []
    cached = set(sources.partitions)
    raw = [
        path
        for partition, paths in sources.files.items()
        if partition in end_hours and partition not in cached
        for path in paths
    ]
    for partition, entry in zip(sources.partitions, sources.cached["edges"], strict=True):
        if partition not in end_hours:
            continue
        if selection.start <= partition.start and partition.end <= selection.end:
            whole.append(entry)
        else:
            raw.extend(sources.files[partition])
    columns = "s.host, s.project, s.agent, s.pid, s.start_time, s.ts, s.rss_bytes, s.fds"
    keys = "s.host = l.host AND s.pid = l.pid AND s.start_time = l.start_time"
    sql = f"""
        SELECT {columns}, l.first, l.last
        FROM samples s JOIN devloop_lives l ON {keys}
        WHERE {s_where} AND {thinned}
    """
    all_params: list[Any] = [*params, interval_us, every]
    if whole or raw:
        reads = [
            f"SELECT {columns.replace('s.', '')} FROM read_parquet([{_listing(paths)}], "
            "union_by_name = true, hive_partitioning = false)"
            for paths in (whole, raw)
            if paths
        ]
        sql += f"""
        UNION ALL
        SELECT {columns}, l.first, l.last
        FROM ({" UNION ALL ".join(reads)}) s
        JOIN devloop_ends e
          ON s.host = e.host AND s.pid = e.pid AND s.start_time = e.start_time AND s.ts = e.ts
        JOIN devloop_lives l ON {keys}
        WHERE {s_where.replace("s.date", "CAST(s.ts AS DATE)")} AND NOT {thinned}
        """
        all_params += [*params, interval_us, every]
    ends = pl.concat(
        [
            lives.select("host", "pid", "start_time", pl.col(end).alias("ts"))
            for end in ("first", "last")
        ]
    ).unique()
    store.connection.register("devloop_lives", lives.to_arrow())
    store.connection.register("devloop_ends", ends.to_arrow())
    try:
        points = store.frame(f"SELECT * FROM ({sql})", all_params).sort(
            "host", "pid", "start_time", "ts"
        )
    finally:
        store.connection.unregister("devloop_lives")
        store.connection.unregister("devloop_ends")
    memory_rows: list[tuple[Any, ...]] = []
    fd_rows: list[tuple[Any, ...]] = []
    if not points.is_empty():
        for part in points.partition_by("host", "pid", "start_time", maintain_order=True):
            count = part.height
            if count > MAX_POINTS:
                picks = np.unique(np.linspace(0, count - 1, MAX_POINTS).round().astype(np.int64))
                part = part[picks.tolist()]
            hours = (part["ts"].dt.epoch("us").to_numpy() - part["ts"][0].timestamp() * 1e6) / 3.6e9
            first, last = part["first"][0], part["last"][0]
            span = (last - first).total_seconds() / 3600
            head = (
                part["project"][0],
                part["agent"][0],
                int(part["pid"][0]),
                part["start_time"][0],
                first,
                last,
                span,
                part.height,
            )
            rss = part["rss_bytes"].fill_null(0).to_numpy().astype(np.float64)
            slope, tau = theil_sen(hours, rss / MIB)
            memory_rows.append((*head, int(rss[0]), int(rss[-1]), slope, tau))
            handles = part["fds"].fill_null(0).to_numpy().astype(np.float64)
            slope, tau = theil_sen(hours, handles)
            fd_rows.append((*head, int(handles[0]), int(handles[-1]), slope, tau))
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


def _listing(paths: list[Path]) -> str:
    return ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)


def theil_sen(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[float, float]:
    """The Theil-Sen slope of ``y`` on ``x`` and Kendall's tau-a of the pair (0, 0 for < 2
    distinct x)."""
    import numpy as np

    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    dy = y[j] - y[i]
    keep = dx != 0
    if not keep.any():
        return 0.0, 0.0
    slope = float(np.median(dy[keep] / dx[keep]))
    signs = np.sign(dx[keep]) * np.sign(dy[keep])
    tau = float(signs.sum() / keep.sum())
    return slope, tau


def _flag(trends: pl.DataFrame, threshold: float, min_tau: float) -> pl.DataFrame:
    import polars as pl

    flagged = trends.with_columns(
        ((pl.col("slope_per_hour") >= threshold) & (pl.col("tau") >= min_tau)).alias("leak")
    )
    return flagged.sort(
        ["leak", "slope_per_hour", "project", "agent", "pid"],
        descending=[True, True, False, False, False],
    ).select(TREND_COLUMNS)


def _restarts(
    store: Store, selection: Selection, short_life: float, threshold: int
) -> pl.DataFrame:
    import polars as pl

    lives_rel, params = lives_sql(store, selection)
    frame = store.frame(
        f"""
        WITH lives AS (SELECT * FROM {lives_rel})
        SELECT project, agent, date_trunc('hour', start_time) AS hour, count(*) AS short_lives
        FROM lives WHERE epoch_us(last) - epoch_us(start_time) < ?
        GROUP BY project, agent, hour
        """,
        [*params, round(short_life * 1e6)],
    )
    return frame.with_columns(
        pl.col("short_lives").cast(pl.Int64),
        (pl.col("short_lives") >= threshold).alias("flagged"),
    ).sort(
        ["flagged", "short_lives", "project", "agent", "hour"],
        descending=[True, True, False, False, False],
    )


def _stopped(store: Store, selection: Selection, stopped_min: float) -> pl.DataFrame:
    import polars as pl

    where, params = store.where(selection)
    s_where, _ = store.where(selection, "s")
    frame = store.frame(
        f"""
        WITH stopped AS (
            SELECT host, project, agent, pid, start_time, min(ts) AS first_stopped,
                   max(ts) AS last_stopped, count(*) AS ticks
            FROM samples WHERE {where} AND state = 'stopped'
            GROUP BY host, project, agent, pid, start_time
        ),
        last_seen AS (
            SELECT s.host, s.pid, s.start_time, max(s.ts) AS last
            FROM samples s SEMI JOIN stopped t
              ON s.host = t.host AND s.pid = t.pid AND s.start_time = t.start_time
            WHERE {s_where} GROUP BY s.host, s.pid, s.start_time
        )
        SELECT t.project, t.agent, t.pid, t.start_time, t.first_stopped, t.last_stopped,
               t.ticks * ? AS stopped_seconds, t.last_stopped = l.last AS still_stopped
        FROM stopped t JOIN last_seen l
          ON t.host = l.host AND t.pid = l.pid AND t.start_time = l.start_time
        """,
        [*params, *params, selection.interval],
    )
    return (
        frame.filter(pl.col("stopped_seconds") >= stopped_min)
        .with_columns(pl.col("pid").cast(pl.Int64), pl.col("stopped_seconds").cast(pl.Float64))
        .sort(
            ["stopped_seconds", "project", "agent", "pid"], descending=[True, False, False, False]
        )
    )
