"""The Spark engine's shared parts: the session, the dataset's tables as DataFrames, the
question resolved as :meth:`Store.select` resolves it, and the per-tick series the reports
are built from (the definitions of :mod:`devloop.analytics.query`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import Selection, draft_selection, match, no_samples
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError

if TYPE_CHECKING:
    from devloop.store.columns import Kind

#: The tables, as the dataset names its folders.
TABLES = ("samples", "processes", "system", "events", "limits", "runs")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
