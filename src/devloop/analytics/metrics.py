"""``workspace metrics``: the guide's live view, from the newest tick in the store.

Workspace CPU % and memory against the limits in force at that tick, and each project's usage
against its limits. ``detailed`` adds one row per agent (file handles, threads, processes and
state: running, idle, paused, queued) and the profiles in force over the range (which
time-of-day profile set the limits the collector recorded, and when); ``compare_config`` adds
configured (the current workspace.json) against in-force and used (average and p95 over the
range) per project.
The view says how old its tick is: with no collector running it is the last one recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import (
    Selection,
    Store,
    limits_relation,
    open_store,
    project_series,
    records,
)
from devloop.analytics.timerange import TimeRange
from devloop.store.db import iso
from devloop.units import MIB

if TYPE_CHECKING:
    import polars as pl

#: A tick older than this many intervals is reported as stale.
STALE_INTERVALS = 3


@dataclass(frozen=True)
class WorkspaceMetrics:
    """The live view at tick ``at``.

    ``projects`` columns: project, cpu_percent, cpu_limit_percent, memory_bytes,
    memory_limit_bytes, processes. ``agents`` (``detailed`` only): project, agent, cpu_percent,
    cpu_limit_percent, memory_bytes, memory_limit_bytes, fds, threads, processes, state
    (running, idle, paused or queued: an agent without a process at the tick is idle, as one
    whose processes all sleep). ``profiles`` (``detailed`` only): one row per stretch of the
    range from its start to ``at`` under one profile and pool: profile (null: the base pool),
    start, end, cpu_limit_percent, memory_limit_bytes (the limits the collector recorded for
    the selected projects, summed as the workspace line sums them). ``config``
    (``compare_config`` only): project, configured_cpu_percent, in_force_cpu_percent,
    used_avg_cpu_percent, used_p95_cpu_percent, configured_memory_bytes,
    in_force_memory_bytes, used_avg_memory_bytes, used_p95_memory_bytes.
    """

    selection: Selection
    at: datetime
    age_seconds: float
    stale: bool
    cpu_percent: float
    cpu_limit_percent: float | None
    memory_bytes: int
    memory_limit_bytes: int | None
    projects: pl.DataFrame
    agents: pl.DataFrame | None = None
    config: pl.DataFrame | None = None
    notes: tuple[str, ...] = ()
    profiles: pl.DataFrame | None = None

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (README, "workspace metrics")."""

        def usage(
            cpu: float, cpu_limit: float | None, memory: int, limit: int | None
        ) -> dict[str, Any]:
            return {
                "cpu_percent": round(cpu, 3),
                "memory_mb": round(memory / MIB, 1),
                "cpu_limit": cpu_limit,
                "memory_limit_mb": round(limit / MIB, 1) if limit is not None else None,
                "memory_bytes": memory,
                "memory_limit_bytes": limit,
            }

        data: dict[str, Any] = {
            "at": iso(self.at),
            "age_seconds": round(self.age_seconds, 3),
            "stale": self.stale,
            "workspace": usage(
                self.cpu_percent,
                self.cpu_limit_percent,
                self.memory_bytes,
                self.memory_limit_bytes,
            ),
            "projects": {
                row["project"]: {
                    **usage(
                        row["cpu_percent"],
                        row["cpu_limit_percent"],
                        row["memory_bytes"],
                        row["memory_limit_bytes"],
                    ),
                    "processes": row["processes"],
                }
                for row in self.projects.iter_rows(named=True)
            },
            "notes": list(self.notes),
        }
        if self.agents is not None:
            data["agents"] = records(self.agents)
        if self.profiles is not None:
            data["profiles"] = records(self.profiles)
        if self.config is not None:
            data["config"] = records(self.config)
        return data


def workspace_metrics(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
    *,
    detailed: bool = False,
    compare_config: bool = False,
    now: datetime | None = None,
) -> WorkspaceMetrics:
    """The live view at the newest tick of ``time_range`` (default: the newest in the store)."""
    import polars as pl

    store = open_store(workspace_dir)
    selection = store.select(time_range, projects, agents)
    at = store.newest(selection)
    if at is None:  # samples without system rows: fall back to the newest sample
        sample_where, sample_params = store.where(selection)
        ((at,),) = store.rows(f"SELECT max(ts) FROM samples WHERE {sample_where}", sample_params)
    at = at.astimezone(UTC)
    tick = Selection(
        start=at,
        end=at + _US,
        projects=selection.projects,
        agents=selection.agents,
        project_filter=selection.project_filter,
        agent_filter=selection.agent_filter,
        interval=selection.interval,
    )
    now = now or datetime.now(UTC)
    age = (now - at).total_seconds()
    limits, limit_params, note = limits_relation(store)
    notes = [note] if note else []
    tick_where, tick_params = store.where(tick, "s")
    agent_rows = store.frame(
        f"""
        WITH s AS (
            SELECT s.host, s.project, s.agent, s.cpu_cores, s.rss_bytes, s.fds, s.threads, s.state
            FROM samples s WHERE {tick_where}
        )
        SELECT s.project, s.agent,
               100.0 * sum(s.cpu_cores) / max(c.cores) AS cpu_percent,
               CAST(sum(s.rss_bytes) AS BIGINT) AS memory_bytes,
               CAST(sum(s.fds) AS BIGINT) AS fds, CAST(sum(s.threads) AS BIGINT) AS threads,
               count(*) AS processes,
               bool_or(s.state = 'stopped') AS stopped, bool_or(s.state = 'running') AS running
        FROM s JOIN {store.cores_sql()} c ON c.host = s.host
        GROUP BY s.project, s.agent
        """,
        tick_params,
    )
    in_force = store.frame(
        f"SELECT project, arg_max(cpu_limit_percent, ts) AS cpu_limit_percent, "
        f"arg_max(memory_limit_bytes, ts) AS memory_limit_bytes FROM {limits} l "
        f"WHERE ts <= ? GROUP BY project",
        [*limit_params, at],
    )
    names = pl.DataFrame({"project": list(selection.projects)}, schema={"project": pl.String})
    per_project = (
        names.join(
            agent_rows.group_by("project").agg(
                pl.col("cpu_percent").sum(),
                pl.col("memory_bytes").sum(),
                pl.col("processes").sum(),
            ),
            on="project",
            how="left",
        )
        .join(in_force, on="project", how="left")
        .with_columns(
            pl.col("cpu_percent").fill_null(0.0),
            pl.col("memory_bytes").fill_null(0).cast(pl.Int64),
            pl.col("processes").fill_null(0).cast(pl.Int64),
            pl.col("memory_limit_bytes").cast(pl.Int64),
        )
        .select(
            "project",
            "cpu_percent",
            "cpu_limit_percent",
            "memory_bytes",
            "memory_limit_bytes",
            "processes",
        )
        .sort("project")
    )
    cpu_limits = per_project["cpu_limit_percent"]
    memory_limits = per_project["memory_limit_bytes"]
    agents_frame = profiles = None
    if detailed:
        agents_frame = _agents(store, agent_rows, at, tick_where, tick_params)
        profiles = _profiles(store, selection, at)
    config = None
    if compare_config:
        config, config_note = _compare_config(store, selection, per_project)
        notes += [config_note] if config_note else []
    return WorkspaceMetrics(
        selection=selection,
        at=at,
        age_seconds=age,
        stale=age > STALE_INTERVALS * selection.interval,
        cpu_percent=float(per_project["cpu_percent"].sum()),
        cpu_limit_percent=float(cpu_limits.sum()) if cpu_limits.null_count() == 0 else None,
        memory_bytes=int(per_project["memory_bytes"].sum()),
        memory_limit_bytes=int(memory_limits.sum()) if memory_limits.null_count() == 0 else None,
        projects=per_project,
        agents=agents_frame,
        config=config,
        notes=tuple(notes),
        profiles=profiles,
    )


_US = timedelta(microseconds=1)


def _agents(
    store: Store, rows: pl.DataFrame, at: datetime, tick_where: str, tick_params: list[Any]
) -> pl.DataFrame:
    import polars as pl

    limits = store.frame(
        "SELECT project, agent, arg_max(cpu_limit_percent, ts) AS cpu_limit_percent, "
        "arg_max(memory_limit_bytes, ts) AS memory_limit_bytes FROM limits "
        "WHERE agent <> '' AND ts <= ? GROUP BY project, agent",
        [at],
    )
    # The newest queue-related event of each agent says whether it waits for capacity.
    queued = store.frame(
        "SELECT project, agent, arg_max(action, ts) AS last_action FROM events "
        "WHERE action IN ('queue', 'start', 'reject', 'timeout', 'resume') AND agent IS NOT NULL "
        "AND ts <= ? GROUP BY project, agent",
        [at],
    )
    frame = (
        rows.join(limits, on=["project", "agent"], how="full", coalesce=True)
        .join(queued, on=["project", "agent"], how="left")
        .with_columns(
            pl.col("cpu_percent").fill_null(0.0),
            pl.col("memory_bytes").fill_null(0).cast(pl.Int64),
            pl.col("fds").fill_null(0).cast(pl.Int64),
            pl.col("threads").fill_null(0).cast(pl.Int64),
            pl.col("processes").fill_null(0).cast(pl.Int64),
            pl.col("memory_limit_bytes").cast(pl.Int64),
            pl.when(pl.col("stopped").fill_null(False))
            .then(pl.lit("paused"))
            .when(pl.col("last_action") == "queue")
            .then(pl.lit("queued"))
            .when(pl.col("running").fill_null(False))
            .then(pl.lit("running"))
            .otherwise(pl.lit("idle"))
            .alias("state"),
        )
    )
    return frame.select(
        "project",
        "agent",
        "cpu_percent",
        "cpu_limit_percent",
        "memory_bytes",
        "memory_limit_bytes",
        "fds",
        "threads",
        "processes",
        "state",
    ).sort("project", "agent")


def _profiles(store: Store, selection: Selection, at: datetime) -> pl.DataFrame:
    """:attr:`WorkspaceMetrics.profiles`: the ``limits`` rows of the selected projects (each
    write holds every project's) read as a sequence of pools, from the one in force at the
    range's start to ``at``; a write that changed neither the profile nor the sums (a
    rebalance within the pool) continues the stretch before it."""
    import polars as pl

    start = (selection.shown or (selection.start, selection.end))[0]
    selected = set(selection.projects)
    rows = store.rows(
        "SELECT ts, project, profile, cpu_limit_percent, memory_limit_bytes FROM limits "
        "WHERE agent = '' AND ts <= ? ORDER BY ts, project",
        [at],
    )
    limits: dict[str, tuple[float | None, int | None]] = {}
    stretches: list[list[Any]] = []  # profile, start, cpu, memory
    for index, (ts, project, profile, cpu, memory) in enumerate(rows):
        if project in selected:
            limits[project] = (cpu, memory)
        if index + 1 < len(rows) and rows[index + 1][0] == ts:
            continue  # the rest of this write
        cpus = [limits.get(name, (None, None))[0] for name in selected]
        memories = [limits.get(name, (None, None))[1] for name in selected]
        pool = [
            None if None in cpus else float(sum(c for c in cpus if c is not None)),
            None if None in memories else int(sum(m for m in memories if m is not None)),
        ]
        since = max(ts.astimezone(UTC), start)
        if stretches and [stretches[-1][0], *stretches[-1][2:]] == [profile, *pool]:
            continue
        if stretches and stretches[-1][1] >= since:
            stretches.pop()  # in force before the range: only the last one counts
        stretches.append([profile, since, *pool])
    ends = [stretch[1] for stretch in stretches[1:]] + [at]
    return pl.DataFrame(
        [
            (p, since, end, cpu, memory)
            for (p, since, cpu, memory), end in zip(stretches, ends, strict=True)
        ],
        schema={
            "profile": pl.String,
            "start": pl.Datetime("us", "UTC"),
            "end": pl.Datetime("us", "UTC"),
            "cpu_limit_percent": pl.Float64,
            "memory_limit_bytes": pl.Int64,
        },
        orient="row",
    )


def _compare_config(
    store: Store, selection: Selection, per_project: pl.DataFrame
) -> tuple[pl.DataFrame, str | None]:
    import polars as pl

    from devloop.config import load_workspace
    from devloop.config.allocation import allocate
    from devloop.errors import DevloopError

    note = None
    try:
        allocation = allocate(load_workspace(store.workspace_dir))
        configured = pl.DataFrame(
            {
                "project": list(allocation.projects),
                "configured_cpu_percent": [p.cpu for p in allocation.projects.values()],
                "configured_memory_bytes": [p.memory_bytes for p in allocation.projects.values()],
            },
            schema={
                "project": pl.String,
                "configured_cpu_percent": pl.Float64,
                "configured_memory_bytes": pl.Int64,
            },
        )
    except DevloopError as exc:
        note = f"cannot read workspace.json to compare ({exc})"
        configured = pl.DataFrame(
            schema={
                "project": pl.String,
                "configured_cpu_percent": pl.Float64,
                "configured_memory_bytes": pl.Int64,
            }
        )
    used = (
        project_series(store, selection)
        .group_by("project")
        .agg(
            pl.col("cpu_percent").mean().alias("used_avg_cpu_percent"),
            pl.col("cpu_percent")
            .quantile(0.95, interpolation="linear")
            .alias("used_p95_cpu_percent"),
            pl.col("rss_bytes").mean().alias("used_avg_memory_bytes"),
            pl.col("rss_bytes")
            .quantile(0.95, interpolation="linear")
            .alias("used_p95_memory_bytes"),
        )
    )
    frame = (
        per_project.select(
            "project",
            pl.col("cpu_limit_percent").alias("in_force_cpu_percent"),
            pl.col("memory_limit_bytes").alias("in_force_memory_bytes"),
        )
        .join(configured, on="project", how="full", coalesce=True)
        .join(used, on="project", how="left")
        .select(
            "project",
            "configured_cpu_percent",
            "in_force_cpu_percent",
            "used_avg_cpu_percent",
            "used_p95_cpu_percent",
            "configured_memory_bytes",
            "in_force_memory_bytes",
            "used_avg_memory_bytes",
            "used_p95_memory_bytes",
        )
        .sort("project")
    )
    return frame, note
