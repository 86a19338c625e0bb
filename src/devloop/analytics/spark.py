"""The Spark engine: the reports as PySpark jobs over a store or a fleet's dataset.

Each function reads the hive-partitioned Parquet tables (``<root>/<table>/[host=H/]date=D/
hour=H/*.parquet``) with ``spark.read.parquet`` and gives the same records as the DuckDB
engine's report of the same name (``peak_usage``, ``export_metrics``, ``run_summary``), so a
fleet too large for one machine runs on a cluster (``spark_session("spark://...")`` or
``spark-submit``) and gives the figures one machine would. The definitions are
:mod:`devloop.analytics._db`'s: CPU % of the machine from each host's newest core count, project
series at every collector tick with 0 where nothing ran, the workspace peak the coincident one,
percentiles linear between the closest ranks (Spark's exact ``percentile``, as DuckDB's
``quantile_cont``), the earliest tick among equal maxima.

What Spark reads: the Parquet files only. A store's spool (the newest minutes of a running
collector) and its rollups are not read; a fleet's dataset and its mirror have neither. A
shipped dataset is read by its folders, not its manifests: run it when no ship is running (or
read a mirror). pyspark is imported inside the functions (the ``fleet`` extra), so importing
this module costs nothing.

    spark = spark_session()                       # local[2]; or "spark://host:7077", "yarn"
    report = peak_usage_spark(spark, "s3a://fleet-metrics/devloop", TimeRange(...))
    report.to_json()                              # == peak_usage(...).to_json()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Selection, draft_selection, iso, match, no_samples
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    from devloop.analytics.export import MetricsExport
    from devloop.analytics.peaks import PeakUsage
    from devloop.store.columns import Kind

#: The default master: two local threads (the machines the project runs on have two cores).
DEFAULT_MASTER = "local[2]"

#: The tables, as the dataset names its folders.
TABLES = ("samples", "processes", "system", "events", "limits", "runs")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_US = 3_600_000_000
#: An estimated run ends at a gap longer than this many tick intervals (runs.GAP_INTERVALS).
_GAP_INTERVALS = 2


def spark_session(
    master: str | None = DEFAULT_MASTER,
    *,
    driver_memory: str = "1g",
    shuffle_partitions: int = 4,
    app_name: str = "devloop",
    java_options: str = "",
    config: dict[str, str] | None = None,
) -> Any:
    """A SparkSession for the reports: ``master`` (``local[2]``, ``spark://host:7077``,
    ``yarn``...; None under ``spark-submit``: its ``--master`` then), a small driver, no UI, few
    shuffle partitions (the aggregates are small), session time zone UTC. ``config``: more
    settings (``spark.hadoop.fs.s3a.endpoint``, say); ``java_options``: more options of the
    driver's JVM (``-XX:TieredStopAtLevel=1`` starts a short job sooner). Returns the
    existing session when one runs in this process (then the JVM's settings no longer
    apply)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    builder = (
        builder.appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC {java_options}".strip())
    )
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# --- the dataset -------------------------------------------------------------------------------


def dataset_root(root: Path | str) -> str:
    """Where the tables' folders are: a URI (``s3a://bucket/prefix``, ``file:///...``) as it
    is; a local folder holding ``metrics/`` (a workspace) as its ``metrics``; any other local
    folder (a store, a shipped dataset, a fleet mirror's ``metrics``) as it is."""
    text = str(root)
    if "://" in text:
        return text.rstrip("/")
    folder = Path(text).resolve()
    if not folder.is_dir():
        raise UsageError(f"store folder not found: {folder}")
    if (folder / "metrics").is_dir() and not (folder / "samples").is_dir():
        folder = folder / "metrics"
    return folder.as_uri()


def _spark_type(kind: str) -> str:
    return {
        "ts": "TIMESTAMP",
        "str": "STRING",
        "i8": "TINYINT",
        "i16": "SMALLINT",
        "i32": "INT",
        "i64": "BIGINT",
        "f32": "FLOAT",
        "f64": "DOUBLE",
        "list_i32": "ARRAY<INT>",
    }[kind]


def _schema_ddl(table: str, *, partitions: bool) -> str:
    """The table's columns as a Spark DDL schema (columns stored in another type on disk in
    that type: Spark reads what the files hold), with ``date`` and ``hour`` when asked."""
    from devloop.store.columns import TABLE_COLUMNS
    from devloop.store.files import STORED_AS_NAMES

    stored = {"cpu_seconds": "DECIMAL(18,2)"}  # files.STORED_AS, without pyarrow
    columns = [
        f"`{c.name}` {stored[c.name] if c.name in STORED_AS_NAMES else _spark_type(c.kind)}"
        for c in TABLE_COLUMNS[table]
    ]
    if partitions:
        columns += ["`date` DATE", "`hour` INT"]
    return ", ".join(columns)


class Dataset:
    """The tables of one dataset in one session, read once each (lazily: Spark reads the
    files when a query runs), optionally only some hosts' rows."""

    def __init__(self, spark: Any, root: Path | str, hosts: Sequence[str] = ()) -> None:
        self.spark = spark
        self.root = dataset_root(root)
        self._tables: dict[str, Any] = {}
        self._globs = tuple(hosts)
        self._hosts: tuple[str, ...] | None = None
        self._span: tuple[datetime | None, datetime | None] | None = None

    def table(self, name: str) -> Any:
        """The table as a DataFrame: its columns (older files' missing ones null), then
        ``date`` and ``hour`` from the folders; a table without files is empty."""
        if name not in self._tables:
            frame = self._read(name)
            hosts = self.hosts() if self._globs else None
            if hosts is not None:
                frame = frame.where(frame["host"].isin(list(hosts)))
            self._tables[name] = frame
        return self._tables[name]

    def _read(self, name: str) -> Any:
        from pyspark.errors import AnalysisException

        path = f"{self.root}/{name}"
        schema = _schema_ddl(name, partitions=True)
        try:
            frame = (
                self.spark.read.schema(schema)
                .option("basePath", path)
                .option("recursiveFileLookup", "false")
                .parquet(path)
            )
        except AnalysisException as exc:  # no such folder: a table with no rows yet
            if "PATH_NOT_FOUND" not in str(exc) and "does not exist" not in str(exc):
                raise
            return self.spark.createDataFrame([], schema)
        # A shipped dataset's ``host=`` folders add a partition column named like the rows'
        # own ``host``; the rows' value is the one kept (they are equal by construction).
        columns = [c for c in frame.columns if c not in ("date", "hour")]
        return frame.select(*columns, "date", "hour")

    def hosts(self) -> tuple[str, ...]:
        """The hosts kept: those of ``system`` matching the globs (UsageError for a glob that
        matches none), or every host when there are none."""
        if self._hosts is None:
            self._look()
        assert self._hosts is not None
        return self._hosts

    def span(self) -> tuple[datetime | None, datetime | None]:
        """The oldest and newest tick of the hosts kept (``system``, else ``samples``)."""
        if self._span is None:
            self._look()
        assert self._span is not None
        return self._span

    def _look(self) -> None:
        """Read the hosts and their span of ticks in one pass over ``system``."""
        found = self.sql(
            "SELECT host, min(unix_micros(ts)), max(unix_micros(ts)) FROM {s} GROUP BY host",
            s=self._read("system"),
        ).collect()
        known = sorted(str(row[0]) for row in found)
        self._hosts = tuple(match("host", self._globs, known)) if self._globs else tuple(known)
        kept = [row for row in found if row[0] in self._hosts]
        if kept:
            self._span = (_from_us(min(r[1] for r in kept)), _from_us(max(r[2] for r in kept)))
            return
        ((first, last),) = self.sql(
            "SELECT min(unix_micros(ts)), max(unix_micros(ts)) FROM {t}",
            t=self.table("samples"),
        ).collect()
        self._span = (None, None) if first is None else (_from_us(first), _from_us(last))

    def sql(self, query: str, **frames: Any) -> Any:
        """``spark.sql`` with ``{name}`` replaced by the frames given (PySpark's kwargs)."""
        return self.spark.sql(query, **frames)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_us(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(epoch_us))


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_list(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(_quote(v) for v in values)})" if values else "false"


# --- the question resolved (Store.select) ------------------------------------------------------


def _known(data: Dataset, *, runs: bool = False) -> dict[str, set[str]]:
    """Every project named by ``processes`` and ``limits`` (and ``runs``), with its agents."""
    parts = ["SELECT DISTINCT project, agent FROM {processes}", "SELECT project, agent FROM {l}"]
    frames = {"processes": data.table("processes"), "l": data.table("limits")}
    if runs:
        parts.append("SELECT project, agent FROM {r}")
        frames["r"] = data.table("runs")
    rows = data.sql(f"SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)})", **frames).collect()
    names: dict[str, set[str]] = {}
    for project, agent in rows:
        agents = names.setdefault(str(project), set())
        if agent:
            agents.add(str(agent))
    return dict(sorted(names.items()))


def _where(selection: Selection, alias: str = "", *, names: bool = True) -> str:
    """Store.where's condition as Spark SQL literals (``date`` prunes the folders)."""
    prefix = f"{alias}." if alias else ""
    last_day = (selection.end - timedelta(microseconds=1)).astimezone(UTC).date()
    first_day = selection.start.astimezone(UTC).date()
    parts = [
        f"unix_micros({prefix}ts) >= {_us(selection.start)}",
        f"unix_micros({prefix}ts) < {_us(selection.end)}",
        f"{prefix}date >= DATE'{first_day.isoformat()}'",
        f"{prefix}date <= DATE'{last_day.isoformat()}'",
    ]
    if names and selection.project_filter:
        parts.append(_in_list(f"{prefix}project", selection.projects))
    if names and selection.agent_filter:
        parts.append(_in_list(f"{prefix}agent", selection.agents))
    return " AND ".join(parts)


def _interval(data: Dataset, selection: Selection) -> float:
    """The median gap between ticks over the last ten minutes of the range (Store._interval)."""
    recent = max(selection.start, selection.end - timedelta(minutes=10))
    where = _where(
        Selection(recent, selection.end, (), (), False, False, 1.0), names=False
    )  # only the times matter
    ((gap,),) = data.sql(
        "SELECT percentile(gap, 0.5) FROM (SELECT unix_micros(ts) - lag(unix_micros(ts)) "
        f"OVER (PARTITION BY host ORDER BY ts) AS gap FROM {{s}} WHERE {where}) WHERE gap > 0",
        s=data.table("system"),
    ).collect()
    return float(gap) / 1e6 if gap is not None and not math.isnan(gap) else 1.0


def _select(
    data: Dataset,
    time_range: TimeRange | None,
    projects: Sequence[str],
    agents: Sequence[str],
    *,
    require_samples: bool = True,
    known: dict[str, set[str]] | None = None,
    span: tuple[datetime | None, datetime | None] | None = None,
) -> Selection:
    """:meth:`Store.select` on the dataset: globs to names, the range to bounds."""
    selection, shown, asked = draft_selection(
        time_range or TimeRange(),
        projects,
        agents,
        _known(data) if known is None else known,
        (lambda: span) if span is not None else data.span,
        data.hosts(),
    )
    start, end = selection.start, selection.end
    if require_samples:
        found = data.sql(
            f"SELECT 1 FROM {{s}} WHERE {_where(selection)} LIMIT 1", s=data.table("samples")
        ).collect()
        if not found:
            raise no_samples(*asked)
    return Selection(
        start=start,
        end=end,
        projects=selection.projects,
        agents=selection.agents,
        project_filter=selection.project_filter,
        agent_filter=selection.agent_filter,
        interval=_interval(data, selection),
        shown=shown,
        hosts=selection.hosts,
    )


# --- the series (_series) ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Frames:
    """The relations the reports share, as lazy DataFrames."""

    cores: Any  # host, cores: each host's newest core count
    agent_sums: Any  # host, ts, project, agent, cpu, rss, fds, threads (per tick with a process)
    series: Any  # host, ts, project, cpu_percent, rss_bytes, fds, threads (every tick)


def _frames(data: Dataset, selection: Selection) -> _Frames:
    cores = data.sql(
        "SELECT host, max_by(cores, ts) AS cores FROM {system} GROUP BY host",
        system=data.table("system"),
    )
    # The per-tick sums as the rollups build them (rollups.BUILD_SQL): float32 CPU summed in
    # double, memory summed as a double.
    agent_sums = data.sql(
        "SELECT host, ts, project, agent, sum(CAST(cpu_cores AS DOUBLE)) AS cpu, "
        "sum(CAST(rss_bytes AS DOUBLE)) AS rss, sum(fds) AS fds, sum(threads) AS threads, "
        f"count(*) AS processes FROM {{samples}} WHERE {_where(selection)} "
        "GROUP BY host, ts, project, agent",
        samples=data.table("samples"),
    )
    names = data.spark.createDataFrame([(name,) for name in selection.projects], "project STRING")
    series = data.sql(
        f"""
        WITH ticks AS (
            SELECT DISTINCT host, ts FROM {{system}} WHERE {_where(selection, names=False)}
        ),
        used AS (
            SELECT host, ts, project, sum(cpu) AS cpu, sum(rss) AS rss, sum(fds) AS fds,
                   sum(threads) AS threads
            FROM {{agent_sums}} GROUP BY host, ts, project
        )
        SELECT t.host, t.ts, n.project,
               CASE WHEN u.host IS NULL THEN 0.0D ELSE 100.0D * u.cpu / c.cores END
                   AS cpu_percent,
               CAST(round(coalesce(u.rss, 0.0D)) AS BIGINT) AS rss_bytes,
               CAST(coalesce(u.fds, 0) AS BIGINT) AS fds,
               CAST(coalesce(u.threads, 0) AS BIGINT) AS threads
        FROM ticks t CROSS JOIN {{names}} n
        JOIN {{cores}} c ON c.host = t.host
        LEFT JOIN used u ON u.host = t.host AND u.ts = t.ts AND u.project = n.project
        """,
        system=data.table("system"),
        agent_sums=agent_sums,
        names=names,
        cores=cores,
    )
    return _Frames(cores, agent_sums, series)


def _top_at(value: str) -> str:
    """The epoch microseconds of the earliest tick at the maximum of ``value`` (nulls never
    count)."""
    return (
        f"-max(CASE WHEN {value} IS NOT NULL THEN named_struct('v', {value}, "
        "'n', -unix_micros(ts)) END).n"
    )


_AGGREGATES = f"""
    count(*) AS ticks, max(cpu_percent) AS cpu_peak_percent,
    {_top_at("cpu_percent")} AS cpu_peak_at,
    percentile(cpu_percent, 0.95) AS cpu_p95_percent,
    avg(cpu_percent) AS cpu_avg_percent, max(rss_bytes) AS memory_peak_bytes,
    {_top_at("rss_bytes")} AS memory_peak_at, max(fds) AS fds_peak,
    max(threads) AS threads_peak
"""


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
    from devloop.analytics.rows import Rows

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


def _typed(row: tuple[Any, ...], kinds: dict[str, Kind]) -> tuple[Any, ...]:
    """A row of Spark values as DuckDB returns them: timestamps (epoch µs here) as aware UTC
    datetimes, integers as int, floats as float."""
    out: list[Any] = []
    for value, kind in zip(row, kinds.values(), strict=True):
        if value is None:
            out.append(None)
        elif kind == "ts":
            out.append(_from_us(value))
        elif kind == "f64":
            out.append(float(value))
        elif kind in ("i64", "i32"):
            out.append(int(value))
        else:
            out.append(value)
    return tuple(out)


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
    from devloop.analytics.rows import Rows

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


# --- runs --summary -----------------------------------------------------------------------------


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

_RUN_TRIGGERS = ("manual", "watch", "stress", "rule")


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
) -> list[dict[str, Any]]:
    """:func:`devloop.analytics.run_summary` on Spark, as its JSON records
    (``records(run_summary(...))``, what ``analytics runs --summary --format json`` lists):
    per project and agent, the runs launched and estimated that started in the range."""
    from devloop.store.runs import TRIGGERS

    if trigger is not None and trigger not in (*TRIGGERS, "rule"):
        raise UsageError(f"unknown trigger {trigger!r} (use {', '.join((*TRIGGERS, 'rule'))})")
    if slowest is not None and slowest < 1:
        raise UsageError(f"--slowest must be at least 1, not {slowest}")
    data = Dataset(spark, root, hosts)
    runs = _runs_frame(data, time_range, _globs(project), _globs(agent), trigger, failed,
                       slowest, estimated)  # fmt: skip
    if runs is None:
        return []
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
    return [
        {
            name: _json_value(value, kind)
            for (name, kind), value in zip(SUMMARY_KINDS.items(), row, strict=True)
        }
        for row in rows
    ]


def _json_value(value: Any, kind: str) -> Any:
    """A value as :func:`devloop.analytics.records` writes it (floats to 6 places)."""
    if value is None:
        return None
    if kind == "f64":
        return round(value, 6) + 0.0 if math.isfinite(value) else None
    if kind == "ts":
        return iso(value)
    return value


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
    """The runs of :func:`devloop.analytics.runs` as a DataFrame (the columns the summary
    needs: project, agent, started, run_id, host, failed, estimated, duration_seconds,
    cpu_seconds, max_rss_bytes); None when there can be none."""
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
    columns = (
        "project, agent, started, run_id, host, failed, estimated, duration_seconds, "
        "cpu_seconds, max_rss_bytes"
    )
    parts: list[Any] = []
    if trigger != "rule":
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
                SELECT project, agent, started, run_id, host,
                       (coalesce(exit_code <> 0, false) OR signal IS NOT NULL
                        OR status = 'incomplete') AS failed,
                       false AS estimated,
                       (unix_micros(ended) - unix_micros(started)) / 1e6 AS duration_seconds,
                       cpu_user_seconds + cpu_system_seconds AS cpu_seconds,
                       max_rss_bytes
                FROM {{runs}} WHERE {" AND ".join(conditions)}
                """,
                runs=data.table("runs"),
            )
        )
    if estimated and trigger in (None, "rule") and failed is not True:
        parts.append(_estimated(data, selection).select(*columns.split(", ")))
    if not parts:
        return None
    union = parts[0]
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
    a span of ticks with a process, a gap of more than two intervals ending it)."""
    interval_us = max(1, round(selection.interval * 1e6))
    gap_us = _GAP_INTERVALS * interval_us
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
                   max(us) AS ended_us, sum(cores) * CAST({interval_us / 1e6!r} AS DOUBLE)
                   AS cpu_seconds
            FROM spans GROUP BY host, project, agent, span
        )
        SELECT project, agent, timestamp_micros(started_us) AS started,
               concat('est-', project, '-', agent, '-', CAST(started_us AS STRING)) AS run_id,
               host, false AS failed, true AS estimated,
               (ended_us - started_us) / 1e6 AS duration_seconds, cpu_seconds,
               CAST(NULL AS BIGINT) AS max_rss_bytes
        FROM runs
        """,
        processes=data.table("processes"),
        samples=data.table("samples"),
    )
