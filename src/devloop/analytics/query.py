"""The store as the reports see it: a question (range, projects, agents) turned into SQL with
parameters over one :class:`~devloop.store.db.Database`, and the series every report is built
from. Every report reads the store through this module and no other; it reads the files only
through :mod:`devloop.store.db`. In order: the question (:class:`TimeRange`, the range as
given, parsed from text by :mod:`devloop.analytics.timerange`; :class:`Selection`, the range
anchored on the data and the names matched), the :class:`Store`, then the SQL of the series.

Definitions every report shares (README "Reports" repeats them):

* **CPU %** is percent of the whole machine: ``100 * cpu_cores / cores``, with ``cores`` the
  host's core count from the ``system`` table (its newest value; hosts do not change size).
* **A project's series** is the sum over its processes at each tick; the **workspace series**
  the sum over the selected projects at each tick. Percentiles and peaks are taken on these
  per-tick sums, never summed from per-agent figures: the workspace peak is the coincident peak.
* **Ticks** are the collector's ticks (rows of ``system``) in the range. Project and workspace
  series cover every tick, 0 where nothing ran; an agent's figures cover the ticks at which it
  had a process (agents come and go: a linter that ran 2 s a minute has its "while running").
* **Limits in force** at a tick are the newest ``limits`` row at or before it (an ASOF join);
  the workspace limit is the sum of the project limits in force.

DuckDB-specific SQL (ASOF JOIN, quantile_cont, arg_max, time_bucket) lives here and in the
report modules' few queries; everything else is standard SQL, so the same questions can run on
Spark over a fleet's dataset.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.errors import NoSamplesError, UsageError
from devloop.store.db import (
    KINDS,
    ROLLUPS_DIR,
    Database,
    Raw,
    Sources,
    SpoolHour,
    consolidated,
    hours,
    iso,
    json_value,
    one_schema,
    resolve,
    round6,
    sql_string,
)

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from devloop.store.layout import Partition

#: Threads DuckDB may use (the project machine has two cores).
THREADS = 2

NO_SAMPLES_HINT = "record some with `devloop workspace collect`"


_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class TimeRange:
    """What the user asked for, before it is anchored on the data (see the module doc).

    ``start`` and ``end`` are aware UTC datetimes or None; ``period`` is None or positive.
    """

    start: datetime | None = None
    end: datetime | None = None
    period: timedelta | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.period is not None:
            raise UsageError("give at most two of --start, --end and --period")
        if self.period is not None and self.period <= timedelta(0):
            raise UsageError(f"the period must be positive, not {self.period}")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise UsageError(
                f"the start ({format_moment(self.start)}) is not before the end "
                f"({format_moment(self.end)})"
            )

    @property
    def bounded(self) -> bool:
        """Whether both ends follow from the options alone (no need to look at the data)."""
        return (self.start is not None) + (self.end is not None) + (self.period is not None) >= 2

    def resolve(self, first: datetime | None, last: datetime | None) -> tuple[datetime, datetime]:
        """``[start, end)`` for data spanning ``first``..``last`` (both None for no data).

        An open end is closed just past the newest sample (or at ``start`` when there is none);
        an open start at the oldest sample (or at ``end``).
        """
        start, end, period = self.start, self.end, self.period
        if start is not None and period is not None:
            return start, start + period
        if end is not None and period is not None:
            return end - period, end
        after_last = last + _MICROSECOND if last is not None else None
        if period is not None:
            stop = after_last if after_last is not None else datetime.now(UTC)
            return stop - period, stop
        if start is None:
            start = first if first is not None else (end if end is not None else _epoch())
        if end is None:
            end = max(after_last, start) if after_last is not None else start
        return start, end

    def shown(
        self, start: datetime, end: datetime, last: datetime | None
    ) -> tuple[datetime, datetime]:
        """The ends of :meth:`resolve`'s ``[start, end)`` as reports print them: the range as
        given, with an end left open as the newest sample ``last`` (not the microsecond after
        it), and a bare period as that period up to ``last``."""
        if self.bounded or self.end is not None or last is None or end != last + _MICROSECOND:
            return start, end
        if self.period is not None:
            start -= _MICROSECOND
        return start, last


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


def format_moment(moment: datetime) -> str:
    """A UTC moment as ``2026-01-05 09:00:00 UTC`` (microseconds only when present)."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + " UTC"


def no_samples(start: datetime | None, end: datetime | None) -> NoSamplesError:
    """The error of an empty store or range, naming the range."""
    first = format_moment(start) if start is not None else "the beginning of the store"
    last = format_moment(end) if end is not None else "now"
    return NoSamplesError(f"no samples between {first} and {last}; {NO_SAMPLES_HINT}")


@dataclass(frozen=True)
class Selection:
    """A question resolved against the store: ``start <= ts < end`` and the names it covers.

    ``projects`` and ``agents`` are the names selected (sorted); ``project_filter`` and
    ``agent_filter`` say whether a glob narrowed them (no filter means no SQL condition).
    ``interval`` is the typical spacing of the collector's ticks in seconds.
    """

    start: datetime
    end: datetime
    projects: tuple[str, ...]
    agents: tuple[str, ...]
    project_filter: bool
    agent_filter: bool
    interval: float
    #: The ends as reports print them (:meth:`TimeRange.shown`: an open end is the newest
    #: sample, not the microsecond after it); None: ``start`` and ``end``.
    shown: tuple[datetime, datetime] | None = None
    #: The hosts whose rows the store holds (after a host filter), sorted.
    hosts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``2026-01-05 00:00:00 UTC .. 2026-01-06 00:00:00 UTC``, the ends as shown."""
        start, end = self.shown or (self.start, self.end)
        return f"{format_moment(start)} .. {format_moment(end)}"

    def to_json(self) -> dict[str, Any]:
        """The ``range`` object every report's JSON carries (the ends as shown), with
        ``hosts`` when the rows are of more than one host."""
        start, end = self.shown or (self.start, self.end)
        return {
            "start": iso(start),
            "end": iso(end),
            "interval_seconds": self.interval,
            "projects": list(self.projects),
            "agents": list(self.agents) if self.agent_filter else None,
        } | ({"hosts": list(self.hosts)} if len(self.hosts) > 1 else {})


@dataclass(frozen=True)
class Reading:
    """Where every :class:`Store` opened inside :func:`reading` reads: another store folder
    than its workspace's (a fleet's mirror), and only some hosts."""

    root: Path | None
    hosts: tuple[str, ...]


_READING: ContextVar[Reading | None] = ContextVar("devloop_reading", default=None)


@contextmanager
def reading(root: Path | str | None = None, hosts: Sequence[str] = ()) -> Iterator[None]:
    """Inside the block, every Store reads the store at ``root`` (a ``metrics`` folder) instead
    of its workspace's, and only the rows of the hosts matching the globs ``hosts``. The CLI's
    ``--store`` and ``--host`` set it once, and every report, ``sql`` and autotune obey it
    without each passing it down (autotune still reads its workspace's configuration)."""
    token = _READING.set(Reading(None if root is None else Path(root), tuple(hosts)))
    try:
        yield
    finally:
        _READING.reset(token)


class Store:
    """A read-only view of one workspace's metrics store (``<workspace-dir>/metrics``)."""

    def __init__(
        self,
        workspace_dir: Path | str,
        *,
        now: datetime | None = None,
        hosts: Sequence[str] = (),
    ) -> None:
        """Open the store; StoreError when the folder does not exist or DuckDB fails.

        Corrupt or foreign files are skipped with a StoreWarning naming each (from
        :func:`devloop.store.connect`). ``now`` is the moment whose hour is still open (no
        rollup is read for it); default: the clock at each look. ``hosts`` (globs): only the
        rows of the matching hosts (UsageError when one matches none); inside :func:`reading`
        the default store and hosts are the block's.
        """

        self.workspace_dir = Path(workspace_dir)
        self.now = now
        if not self.workspace_dir.is_dir():
            raise UsageError(f"workspace folder not found: {self.workspace_dir}")
        context = _READING.get() or Reading(None, ())
        self.root = context.root or self.workspace_dir / "metrics"
        #: The store's DuckDB door (errors mapped to QueryError there).
        self.db = Database.open(self.root, threads=THREADS)
        #: The hosts kept by a host filter (None: no filter).
        self.hosts: tuple[str, ...] | None = None
        globs = tuple(hosts) or context.hosts
        if globs:
            from devloop.store.fleet import narrow

            try:
                self.hosts = narrow(self.db, globs)
            except BaseException:
                self.db.close()
                raise
        self.connection: duckdb.DuckDBPyConnection = self.db.connection
        self.listing = self.db.listing
        #: Whether reports read the per-hour rollups; False reads every hour's rows.
        self.use_rollups = True
        self._sources: dict[tuple[datetime, datetime], Sources] = {}
        #: Per selection, whether every per-tick sum is at a collector tick (``system``) and
        #: every project has one at every tick (set by ``_series.project_series``).
        self.aligned: dict[Selection, bool] = {}
        self._cores: str | None = None
        self._digested: dict[str, list[list[Any]]] | None = None
        self._spooled: frozenset[Partition] | None = None
        self._rows_span: tuple[datetime, datetime] | tuple[()] | None = None

    # --- running SQL -----------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement for its effect."""
        self.db.execute(sql, params)

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """The result of ``sql`` as a polars DataFrame."""
        return self.db.frame(sql, params)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The result of ``sql`` as tuples."""
        return self.db.rows(sql, params)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the store holds ----------------------------------------------------------------

    def span(self) -> tuple[datetime | None, datetime | None]:
        """The oldest and newest tick (``system``, else ``samples``); None, None when empty.

        From the files' footers (their ``ts`` range) and the spool tail, without a scan."""
        for table in ("system", "samples"):
            found = self.ends(table)
            if found is not None:
                return found
        return None, None

    def ends(self, table: str) -> tuple[datetime, datetime] | None:
        """The oldest and newest tick of ``table`` (None when it has no row), from the files'
        footers and the spool tail; by a scan where a footer has no statistics."""
        facts = [fact for fact in self.listing.files[table] if fact.rows]
        if any(fact.ts_min_us is None or fact.ts_max_us is None for fact in facts):
            ((first, last),) = self.rows(f"SELECT min(ts), max(ts) FROM {table}")
            return None if first is None else (_aware(first), _aware(last))
        ends = [
            (fact.ts_min_us, fact.ts_max_us)
            for fact in facts
            if fact.ts_min_us is not None and fact.ts_max_us is not None
        ]
        if table in self.listing.spooled:
            ((first, last),) = self.rows(
                f"SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM _spool_{table}"
            )
            if first is not None:
                ends.append((first, last))
        if not ends:
            return None
        return _from_us(min(e[0] for e in ends)), _from_us(max(e[1] for e in ends))

    def _digests(self) -> dict[str, list[list[Any]]]:
        """The small tables' per-file digests (see :mod:`devloop.store.db`), read once."""
        if self._digested is None:
            from devloop.store.db import digests

            self._digested = digests(self.connection, self.root, self.listing)
        return self._digested

    def newest(self, selection: Selection) -> datetime | None:
        """The newest collector tick (``system``) in ``selection``'s range, None when none.

        From the files' footers when no file straddles the end of the range (the usual case:
        the range ends after the newest tick), else by a query."""
        start, end = _to_us(selection.start), _to_us(selection.end)
        found: int | None = None
        for fact in self.listing.files["system"]:
            if not fact.rows or fact.ts_min_us is None or fact.ts_max_us is None:
                found = None
                break
            if fact.ts_min_us >= end or fact.ts_max_us < start:
                continue
            if fact.ts_max_us >= end:
                found = None  # the file's newest tick is past the range: ask DuckDB
                break
            found = fact.ts_max_us if found is None else max(found, fact.ts_max_us)
        else:
            if "system" in self.listing.spooled:
                ((tail,),) = self.rows(
                    "SELECT epoch_us(max(ts)) FROM _spool_system WHERE ts >= ? AND ts < ?",
                    [selection.start, selection.end],
                )
                if tail is not None:
                    found = tail if found is None else max(found, tail)
            if found is not None:
                return _from_us(found)
        where, params = self.where(selection, names=False)
        ((at,),) = self.rows(f"SELECT max(ts) FROM system WHERE {where}", params)
        return None if at is None else _aware(at)

    def known(self) -> dict[str, tuple[str, ...]]:
        """Every project the store names (``processes`` and ``limits``), with its agents."""
        found = {
            (project, agent)
            for table in ("processes", "limits")
            for project, agent in self._digests()[table]
        }
        names: dict[str, set[str]] = {}
        for project, agent in found:
            agents = names.setdefault(project, set())
            if agent:
                agents.add(agent)
        return {project: tuple(sorted(agents)) for project, agents in sorted(names.items())}

    def host_names(self) -> tuple[str, ...]:
        """The hosts whose ticks (``system``) the store holds, after its host filter."""
        return tuple(sorted({str(row[0]) for row in self._digests()["system"]}))

    def select(
        self,
        time_range: TimeRange | None = None,
        projects: Sequence[str] = (),
        agents: Sequence[str] = (),
        *,
        require_samples: bool = True,
    ) -> Selection:
        """Resolve a question: globs to names, the range to bounds (see timerange).

        Raises UsageError for a glob that matches no known project or agent (listing the known
        ones) and NoSamplesError when no sample matches (unless ``require_samples`` is false).
        """
        selection, shown, asked = draft_selection(
            time_range or TimeRange(), projects, agents, self.known(), self.span, self.host_names()
        )
        if require_samples and not self._has_samples(selection):
            raise no_samples(*asked)
        return replace(selection, interval=self._interval(selection), shown=shown)

    def _has_samples(self, selection: Selection) -> bool:
        """Whether any sample matches ``selection``. Without name filters a file whose first
        or last tick lies in the range answers it from its footer, without a scan."""
        if not selection.project_filter and not selection.agent_filter:
            start = _to_us(selection.start)
            end = _to_us(selection.end)
            for fact in self.listing.files["samples"]:
                ends = (fact.ts_min_us, fact.ts_max_us)
                if fact.rows and any(us is not None and start <= us < end for us in ends):
                    return True
        where, params = self.where(selection)
        return bool(self.rows(f"SELECT 1 FROM samples WHERE {where} LIMIT 1", params))

    def where(
        self, selection: Selection, alias: str = "", *, names: bool = True
    ) -> tuple[str, list[Any]]:
        """The SQL condition (and parameters) picking ``selection``'s rows of a time table.

        The partition column ``date`` is constrained as well as ``ts``, so whole files outside
        the range are never opened. ``names=False`` leaves out the project and agent filters.
        """
        prefix = f"{alias}." if alias else ""
        last_day = (selection.end - timedelta(microseconds=1)).astimezone(UTC).date()
        parts = [
            f"{prefix}ts >= ?",
            f"{prefix}ts < ?",
            f"{prefix}date >= ?",
            f"{prefix}date <= ?",
        ]
        params: list[Any] = [
            selection.start,
            selection.end,
            selection.start.astimezone(UTC).date(),
            last_day,
        ]
        if selection.start.astimezone(UTC).date() == last_day:
            # within one day, the partition column ``hour`` skips the other hours' files too
            last_hour = (selection.end - timedelta(microseconds=1)).astimezone(UTC).hour
            parts += [f"{prefix}hour >= ?", f"{prefix}hour <= ?"]
            params += [selection.start.astimezone(UTC).hour, last_hour]
        if names and selection.project_filter:
            parts.append(f"{prefix}project IN ({_marks(selection.projects)})")
            params.extend(selection.projects)
        if names and selection.agent_filter:
            parts.append(f"{prefix}agent IN ({_marks(selection.agents)})")
            params.extend(selection.agents)
        return " AND ".join(parts), params

    def _interval(self, selection: Selection) -> float:
        # The median gap over the last ten minutes of the range: cheap, and not skewed by
        # the hours a collector was off.
        recent = max(selection.start, selection.end - timedelta(minutes=10))
        where, params = self.where(replace(selection, start=recent), names=False)
        sql = (
            "SELECT median(gap) FROM (SELECT epoch_us(ts) - lag(epoch_us(ts)) OVER "
            f"(PARTITION BY host ORDER BY ts) AS gap FROM system WHERE {where}) "
            "WHERE gap > 0"
        )
        ((gap,),) = self.rows(sql, params)
        return float(gap) / 1e6 if gap is not None and not math.isnan(gap) else 1.0

    def holds_whole(self, selection: Selection, partition: Partition) -> bool:
        """Whether every ``samples`` row of the hour ``partition`` is in ``selection``'s time
        range, so the hour's rollups answer for it: the hour lies inside the range, or the part
        of it holding rows does (the default range starts at the oldest tick and ends just after
        the newest, inside their hours)."""
        start, end = partition.start, partition.end
        if self._rows_span is None:
            found = self.ends("samples")  # from the footers and the spool
            self._rows_span = (found[0], found[1] + timedelta(microseconds=1)) if found else ()
        if self._rows_span:  # the oldest row, and just after the newest
            start, end = max(start, self._rows_span[0]), min(end, self._rows_span[1])
        return selection.start <= start and end <= selection.end

    def spooled_hours(self) -> frozenset[Partition]:
        """The hours holding ``samples`` rows still in the spool (read by the views as their
        spool tail, not yet in Parquet): no rollup covers them."""
        if self._spooled is None:
            from devloop.store.layout import Partition

            found: frozenset[Partition] = frozenset()
            if "samples" in self.listing.spooled:
                found = frozenset(
                    Partition.of_hour_index(hour)
                    for (hour,) in self.rows(
                        f"SELECT DISTINCT epoch_us(ts) // {_HOUR_US} FROM _spool_samples"
                    )
                )
            self._spooled = found
        return self._spooled

    def sources(self, selection: Selection) -> Sources:
        """Where ``selection``'s samples come from: per-hour rollups for the closed hours
        (as compaction wrote them) and raw rows for the rest, files and spool (see
        :mod:`devloop.store.rollups`)."""

        key = (selection.start, selection.end)
        found = self._sources.get(key)
        if found is None:
            chosen = hours(
                self.root,
                selection.start,
                selection.end,
                now=self.now,
                spooled=self.spooled_hours(),
                listed=self.listing.files["samples"],
            )
            if self.use_rollups:
                found = resolve(self.root, chosen)
            else:
                found = Sources(
                    {kind: () for kind in KINDS},
                    (),
                    tuple(path for hour in chosen for path in hour.files),
                    {hour.partition: hour.files for hour in chosen},
                )
            self._sources[key] = found
        return found

    def cores_sql(self) -> str:
        """A relation ``(host, cores)``: each host's newest core count."""
        if self._cores is None:
            newest: dict[str, tuple[int, int]] = {}
            for host, ts_us, cores in self._digests()["system"]:
                if host not in newest or ts_us > newest[host][0]:
                    newest[host] = (ts_us, cores)
            rows = ", ".join(
                f"({sql_string(host)}, CAST({int(cores)} AS SMALLINT))"
                for host, (_, cores) in sorted(newest.items())
            )
            self._cores = (
                f"(SELECT * FROM (VALUES {rows}) AS c(host, cores))"
                if rows
                else "(SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS SMALLINT) AS cores "
                "WHERE false)"
            )
        return self._cores


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_US = 3_600_000_000


def _from_us(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values) if values else "NULL"


def draft_selection(
    time_range: TimeRange,
    projects: Sequence[str],
    agents: Sequence[str],
    known: Mapping[str, Collection[str]],
    span: Callable[[], tuple[datetime | None, datetime | None]],
    hosts: tuple[str, ...],
) -> tuple[Selection, tuple[datetime, datetime], tuple[datetime | None, datetime | None]]:
    """A question resolved against what a store holds (``known`` projects and their agents,
    its ``span`` of ticks, asked only for an open range): the selection (interval 1 s, to be
    measured), the range as shown, and the bounds to name when nothing matches. Shared by the
    engines (:meth:`Store.select`, :mod:`devloop.analytics.spark`)."""
    chosen_projects = match("project", projects, sorted(known))
    pool = sorted({agent for project in chosen_projects for agent in known[project]})
    chosen_agents = match("agent", agents, pool) if agents else pool
    first, last = (None, None) if time_range.bounded else span()
    start, end = time_range.resolve(first, last)
    shown = time_range.shown(start, end, last)
    asked = (
        (time_range.start, time_range.end)
        if first is None and last is None and not time_range.bounded
        else shown
    )
    selection = Selection(
        start=start,
        end=end,
        projects=tuple(chosen_projects),
        agents=tuple(chosen_agents),
        project_filter=bool(projects),
        agent_filter=bool(agents),
        interval=1.0,
        hosts=hosts,
    )
    return selection, shown, asked


def match(kind: str, patterns: Sequence[str], known: Sequence[str]) -> list[str]:
    """The names among ``known`` matched by any glob; UsageError for a glob matching none."""
    if not patterns:
        return list(known)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(known, pattern)
        if not hits:
            listing = ", ".join(known) if known else "none recorded yet"
            raise UsageError(f"unknown {kind} {pattern!r} (known {kind}s: {listing})")
        chosen.update(hits)
    return sorted(chosen)


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """Collect the warnings raised inside (store files skipped) as strings, instead of
    printing them; the CLI shows them as ``Warning: ...`` lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        try:
            yield messages
        finally:
            seen: set[str] = set()
            for item in caught:
                text = str(item.message)
                if text not in seen:
                    seen.add(text)
                    messages.append(text)


def open_store(workspace_dir: Path | str | Store) -> Store:
    """``workspace_dir`` opened as a :class:`Store` (a Store is passed through)."""
    return workspace_dir if isinstance(workspace_dir, Store) else Store(workspace_dir)


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: datetimes as ISO 8601 UTC strings, floats rounded to 6 places
    (CPU is stored as float32: more digits are noise), nested lists and structs likewise."""
    import polars as pl

    names = frame.columns
    # One converter per column, chosen by its type once, not by each value's.
    plain: list[Any] = [
        round6
        if dtype in (pl.Float64, pl.Float32)
        else None
        if dtype.is_integer() or dtype in (pl.String, pl.Boolean, pl.Null)
        else json_value
        for dtype in frame.dtypes
    ]
    if not any(plain):
        return [dict(zip(names, row, strict=True)) for row in frame.iter_rows()]
    return [
        {
            name: value if convert is None or value is None else convert(value)
            for name, convert, value in zip(names, plain, row, strict=True)
        }
        for row in frame.iter_rows()
    ]


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


def relation(paths: Sequence[Raw]) -> str:
    """A relation of the rows at ``paths``: cache entries (one kind: one schema), or the raw
    ``samples`` rows of some hours (store files, and the spool's rows of the hours named by
    a :class:`~devloop.store.db.SpoolHour`)."""

    files = [path for path in paths if isinstance(path, Path)]
    spooled = sorted({path.partition for path in paths if isinstance(path, SpoolHour)})
    if not spooled:
        return _read_files(files)
    # The views' spool tail (store.db registers it as ``_spool_samples``): the rows a
    # running collector has not yet converted, the newest ticks among them.
    hours = ", ".join(str(int(p.start.timestamp()) // 3600) for p in spooled)
    tail = f"SELECT * FROM _spool_samples WHERE epoch_us(ts) // {HOUR_US} IN ({hours})"
    if not files:
        return f"({tail})"
    return f"(SELECT * FROM {_read_files(files)} UNION ALL BY NAME {tail})"


def _read_files(paths: Sequence[Path]) -> str:
    """``read_parquet`` of ``paths``: cache entries (one kind: one schema) or store files.
    ``union_by_name`` (which reads every footer at every bind) only where schemas differ."""

    # <root>/_rollups/<kind>/date=D/hour=H/<key>.parquet
    entries = all(Path(path).parts[-5:-4] == (ROLLUPS_DIR,) for path in paths)
    if entries:
        paths = consolidated(paths)  # whole past days: one file each
    listing = ", ".join(sql_string(str(path)) for path in paths)
    union = "false" if entries or one_schema(paths) else "true"
    return f"read_parquet([{listing}], union_by_name = {union}, hive_partitioning = false)"


def range_conditions(selection: Selection, *, times: bool = True) -> tuple[str, list[Any]]:
    """The condition picking ``selection``'s rows of a relation with ``ts``, ``project`` and
    ``agent`` columns but no ``date`` (a rollup, or files read by name), and its parameters;
    without the time condition when ``times`` is false (``true`` when nothing remains)."""
    parts = ["ts >= ?", "ts < ?"] if times else ["true"]
    params: list[Any] = [selection.start, selection.end] if times else []
    if selection.project_filter:
        parts.append(f"project IN ({', '.join('?' for _ in selection.projects)})")
        params.extend(selection.projects)
    if selection.agent_filter:
        parts.append(f"agent IN ({', '.join('?' for _ in selection.agents)})")
        params.extend(selection.agents)
    return " AND ".join(parts), params


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
    where, params = range_conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if sources.cached[kind]:
        parts.append(
            f"SELECT {keys}, cpu, rss, fds, threads, processes "
            f"FROM {relation(sources.cached[kind])} WHERE {where}"
        )
        all_params += params
    if sources.raw:
        source = f"(SELECT * FROM {relation(sources.raw)} WHERE {where})"
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
    where, params = range_conditions(selection)
    whole: list[Path] = []
    raw: list[Raw] = list(sources.raw)
    for partition, path in zip(sources.partitions, sources.cached["lives"], strict=True):
        if store.holds_whole(selection, partition):
            whole.append(path)
        else:  # an hour cut by the range: its rows, not its rollup
            raw.extend(sources.files[partition])
    parts: list[str] = []
    all_params: list[Any] = []
    names, name_params = range_conditions(selection, times=False)
    if whole:
        parts.append(
            "SELECT host, project, agent, pid, start_time, first, last, rows "
            f"FROM {relation(whole)} WHERE {names}"
        )
        all_params += name_params
    if raw:
        source = f"(SELECT * FROM {relation(raw)} WHERE {where})"
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
    names, params = range_conditions(selection, times=False)
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
        f"cpu_sum AS cpu, rss_sum AS rss FROM {relation(whole)} WHERE {names})"
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
    names, name_params = range_conditions(selection, times=False)
    where, params = range_conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if whole:
        parts.append(f"SELECT {columns} FROM {relation(whole)} WHERE {names}")
        all_params += name_params
    rest: list[str] = []
    if cut:
        rest.append(f"SELECT {ticks} FROM {relation(cut)} WHERE {where}")
        all_params += params
    if raw:
        source = f"(SELECT * FROM {relation(raw)} WHERE {where})"
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
    names, name_params = range_conditions(selection, times=False)
    where, params = range_conditions(selection)
    parts: list[str] = []
    all_params: list[Any] = []
    if whole:
        parts.append(f"SELECT {columns} FROM {relation(whole)} WHERE {names}")
        all_params += name_params
    if cut:
        parts.append(f"SELECT {columns} FROM {relation(cut)} WHERE {where}")
        all_params += params
    if files:
        source = f"(SELECT * FROM {relation(files)} WHERE {where})"
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
