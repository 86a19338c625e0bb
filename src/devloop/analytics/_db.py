"""The store as the reports see it: one DuckDB connection, a question (range, projects, agents)
turned into SQL with parameters, and the series every report is built from.

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

from devloop.analytics.timerange import TimeRange, format_moment
from devloop.errors import NoSamplesError, UsageError
from devloop.store.db import Sources, iso, json_value, round6

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from devloop.store.layout import Partition

#: Threads DuckDB may use (the project machine has two cores).
THREADS = 2

NO_SAMPLES_HINT = "record some with `devloop workspace collect`"


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
        from devloop.store.db import Database

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
        """The small tables' per-file digests (see :mod:`devloop.store.digests`), read once."""
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
        from devloop.store.db import KINDS, hours, resolve

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
                f"({_quote(host)}, CAST({int(cores)} AS SMALLINT))"
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


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
