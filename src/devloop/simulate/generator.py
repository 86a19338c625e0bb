"""``simulate()``: check the arguments, write the workspace, plan, then write hour by hour."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from devloop.config import WORKSPACE_FILE
from devloop.config.allocation import allocate
from devloop.errors import UsageError
from devloop.simulate.calibrate import Calibration
from devloop.simulate.calibrated import make_calibrated_plan, simulated_projects
from devloop.simulate.chunks import Counters, generate_chunk
from devloop.simulate.model import (
    FD_GROWTH_PER_HOUR,
    HOST,
    HOUR_US,
    LEAK_BYTES_PER_HOUR,
    OVER_LIMIT_RATIO,
    PAUSE_EVERY_S,
    PAUSE_SECONDS,
    SECOND_US,
)
from devloop.simulate.plan import Plan, make_plan
from devloop.simulate.runs import RunTotals, runs_table
from devloop.simulate.workspace import write_projects, write_workspace
from devloop.store import write_rollups, write_table
from devloop.store.schema import EVENTS, LIMITS
from devloop.units import MIB

#: A Monday, so a 7-day run holds five working days and a weekend.
DEFAULT_START: Final = date(2026, 1, 5)
MIN_INTERVAL: Final = 0.01
MAX_INTERVAL: Final = 3600.0
MAX_CORES: Final = 1024

#: ``progress(ticks_done, ticks_total, rows_written)``, called after every chunk.
ProgressCallback = Callable[[int, int, int], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Anomaly:
    """A pattern planted in the data on purpose, for analytics and autotune tests to find.

    ``kind`` is ``memory-leak``, ``fd-growth`` or ``cpu-over-limit``; ``agent`` is ``""`` when
    the whole project is concerned; ``magnitude`` is bytes per hour of process life, file
    handles per hour of process life, or the ratio of CPU used to the project's limit while
    its processes run (they are paused part of the time, see the description).
    """

    kind: str
    project: str
    agent: str
    start: datetime
    end: datetime
    description: str
    magnitude: float


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote."""

    out: Path
    workspace_file: Path
    metrics_dir: Path
    start: datetime  # first tick
    end: datetime  # end of the span (exclusive)
    interval: float  # seconds between ticks
    ticks: int
    processes_concurrent: int  # slots: processes alive at every tick
    rows: Mapping[str, int]  # per table
    files: int
    bytes: int  # Parquet bytes on disk
    seconds: float  # wall time
    anomalies: tuple[Anomaly, ...]
    calibrated_from: str | None = None  # the recording a calibrated simulation replays

    @property
    def total_rows(self) -> int:
        """Rows over all tables."""
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        """Throughput of the whole run (all tables, writing included)."""
        return self.total_rows / self.seconds if self.seconds > 0 else math.inf


def simulate(
    out: Path | str,
    *,
    days: float = 7,
    hours: float | None = None,
    projects: int | None = None,
    agents_per_project: int | None = None,
    processes_per_agent: int = 1,
    interval: float = 1.0,
    seed: int = 0,
    start: date | datetime = DEFAULT_START,
    cores: int = 2,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    calibration: Calibration | None = None,
) -> SimulationSummary:
    """Write a simulated workspace and its metrics history into the workspace folder ``out``.

    ``hours`` replaces ``days`` when given. ``start`` is a UTC date (midnight) or datetime
    (a naive one is taken as UTC). The same arguments and ``seed`` give the same rows. Raises
    UsageError for a bad argument, or when ``out/metrics`` is not empty or ``out`` already
    holds a workspace.json, unless ``overwrite`` (which deletes ``out/metrics`` first).
    See :mod:`devloop.simulate` for the model and the planted anomalies.

    ``projects`` defaults to 3 and ``agents_per_project`` to 4. With a ``calibration``
    (:func:`devloop.simulate.calibrate.calibration_from`) the projects, agents, runs and
    triggers replay the recording instead (:mod:`devloop.simulate.calibrated`): ``projects``
    defaults to the recorded ones, the agents are the recorded ones (``agents_per_project``
    is refused), and nothing is planted.
    """
    out = Path(out)
    span_us = _span_us(days, hours)
    interval_us = _interval_us(interval)
    start_us = _start_us(start)
    if calibration is not None and agents_per_project is not None:
        raise UsageError("a calibrated simulation has the recorded agents: drop agents_per_project")
    if projects is None:
        projects = len(calibration.projects) if calibration is not None else 3
    agents_per_project = 4 if agents_per_project is None else agents_per_project
    _check_counts(projects, agents_per_project, processes_per_agent, cores, seed)
    _prepare(out, overwrite)
    began = time.perf_counter()

    if calibration is None:
        workspace = write_workspace(out, projects, agents_per_project)
    else:
        mapped = simulated_projects(calibration, projects)
        workspace = write_projects(out, [(p.name, list(p.kinds)) for p in mapped])
    start_time = datetime.fromtimestamp(start_us / SECOND_US, tz=UTC).time()
    allocation = allocate(workspace, at=start_time)
    if calibration is None:
        plan = make_plan(
            workspace,
            allocation,
            start_us=start_us,
            span_us=span_us,
            interval_us=interval_us,
            processes_per_agent=processes_per_agent,
            cores=cores,
            seed=seed,
        )
    else:
        plan = make_calibrated_plan(
            workspace,
            allocation,
            mapped,
            start_us=start_us,
            span_us=span_us,
            interval_us=interval_us,
            processes_per_agent=processes_per_agent,
            cores=cores,
            seed=seed,
        )
    metrics = workspace.metrics_dir
    rows = dict.fromkeys(("samples", "system", "processes", "events", "limits", "runs"), 0)
    written: list[Path] = []

    def write(table: str, data: pa.Table) -> None:
        if data.num_rows:
            written.extend(write_table(metrics, table, data))
            rows[table] += data.num_rows

    write("limits", _limits_table(plan))
    write("events", _events_table(plan, workspace.config.global_.resource_limits.check_interval))
    counters = Counters(plan)
    totals = RunTotals(plan)
    bounds = _chunk_bounds(plan)
    for first, stop in zip(bounds, bounds[1:], strict=False):
        chunk = generate_chunk(plan, counters, first, stop, seed, totals)
        write("samples", chunk.samples)
        write("system", chunk.system)
        write("processes", chunk.processes)
        if stop == plan.ticks:  # every run's ticks are in: the runs rows can be written
            write("runs", runs_table(plan, totals))
        if progress is not None:
            progress(stop, plan.ticks, sum(rows.values()))
    # A writer of whole hours writes their rollups (DESIGN.md, "Storage contract"), with the
    # files' facts and digests, so the first report only reads.
    write_rollups(metrics)

    return SimulationSummary(
        out=out,
        workspace_file=out / WORKSPACE_FILE,
        metrics_dir=metrics,
        start=_datetime(start_us),
        end=_datetime(start_us + span_us),
        interval=interval_us / SECOND_US,
        ticks=plan.ticks,
        processes_concurrent=plan.slots,
        rows=rows,
        files=len(written),
        bytes=sum(path.stat().st_size for path in written),
        seconds=time.perf_counter() - began,
        anomalies=anomalies(plan),
        calibrated_from=calibration.source if calibration is not None else None,
    )


def anomalies(plan: Plan) -> tuple[Anomaly, ...]:
    """The planted anomalies of ``plan``, with their names and time windows (none when it
    replays a recording)."""
    if plan.calibrated:
        return ()
    whole = (_datetime(plan.start_us), _datetime(plan.start_us + plan.span_us))
    leak_project, leak_agent = plan.leak
    fd_project, fd_agent = plan.fd_growth
    over = plan.projects[plan.over_project]
    limit = plan.allocation.projects[over].cpu
    begin, end = plan.over_window
    return (
        Anomaly(
            "memory-leak", plan.projects[leak_project], plan.agents[leak_agent], *whole,
            f"rss grows {LEAK_BYTES_PER_HOUR // MIB} MiB per hour of each process's life "
            "(daemons restart daily around 03:00 UTC, so it is a sawtooth)",
            float(LEAK_BYTES_PER_HOUR),
        ),
        Anomaly(
            "fd-growth", plan.projects[fd_project], plan.agents[fd_agent], *whole,
            f"open file handles grow by {FD_GROWTH_PER_HOUR} per hour of each process's life",
            float(FD_GROWTH_PER_HOUR),
        ),
        Anomaly(
            "cpu-over-limit", over, "", _datetime(plan.start_us + begin),
            _datetime(plan.start_us + end),
            f"{over} uses {OVER_LIMIT_RATIO:g}x its CPU limit of {limit:.4g}% "
            f"({limit / 100 * plan.cores:.3g} cores) while running; the enforcer pauses it "
            f"for {PAUSE_SECONDS} s every {PAUSE_EVERY_S} s ({len(plan.pauses)} pauses), too "
            "briefly to bring it under",
            OVER_LIMIT_RATIO,
        ),
    )  # fmt: skip


# --- argument checks -------------------------------------------------------------------------


def _span_us(days: float, hours: float | None) -> int:
    if hours is not None:
        if not math.isfinite(hours) or hours <= 0:
            raise UsageError(f"hours must be positive, not {hours}")
        return round(hours * HOUR_US)
    if not math.isfinite(days) or days <= 0:
        raise UsageError(f"days must be positive, not {days}")
    return round(days * 24 * HOUR_US)


def _interval_us(interval: float) -> int:
    if not math.isfinite(interval) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise UsageError(
            f"interval must be between {MIN_INTERVAL:g} s and {MAX_INTERVAL:g} s, not {interval}"
        )
    return round(interval * SECOND_US)


def _start_us(start: date | datetime) -> int:
    if isinstance(start, datetime):
        moment = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
    else:
        moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
    if moment < _EPOCH:
        raise UsageError(f"start must not be before 1970: {start}")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _check_counts(projects: int, agents: int, processes: int, cores: int, seed: int) -> None:
    for name, value in (
        ("projects", projects),
        ("agents_per_project", agents),
        ("processes_per_agent", processes),
    ):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, not {value}")
    if not 1 <= cores <= MAX_CORES:
        raise UsageError(f"cores must be between 1 and {MAX_CORES}, not {cores}")
    if seed < 0:
        raise UsageError(f"seed must not be negative, not {seed}")


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to mix simulated rows into existing data; clear it when asked to."""
    metrics = out / "metrics"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if not overwrite:
        if (out / WORKSPACE_FILE).exists():
            raise UsageError(
                f"{out / WORKSPACE_FILE} already exists: simulate into a new folder, "
                "or pass --overwrite to replace it and its metrics"
            )
        if metrics.is_dir() and any(metrics.iterdir()):
            raise UsageError(
                f"{metrics} is not empty: simulate into a new folder, "
                "or pass --overwrite to delete its metrics first"
            )
    elif metrics.exists():
        try:
            shutil.rmtree(metrics)
        except OSError as exc:
            raise UsageError(f"cannot delete {metrics}: {exc}") from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc}") from exc


# --- tables written once ---------------------------------------------------------------------


def _chunk_bounds(plan: Plan) -> list[int]:
    """Tick indexes where UTC hours begin, so every chunk is one hour (one partition)."""
    bounds = [0]
    hour = plan.start_us // HOUR_US * HOUR_US + HOUR_US
    while hour < plan.start_us + plan.span_us:
        first = -(-(hour - plan.start_us) // plan.interval_us)
        if bounds[-1] < first < plan.ticks:
            bounds.append(first)
        hour += HOUR_US
    bounds.append(plan.ticks)
    return bounds


def _limits_table(plan: Plan) -> pa.Table:
    """The effective limits at the start: one row per project (agent "") and per agent."""
    allocation = plan.allocation
    rows: list[dict[str, Any]] = []
    for name, project in allocation.projects.items():
        rows.append(_limit_row(plan, name, "", project.cpu, project.memory_bytes, project.priority))
        for agent in plan.agents:
            own = allocation.agents.get(f"{name}/{agent}")
            if own is None:  # a calibrated project without this recorded agent
                continue
            rows.append(_limit_row(plan, name, agent, own.cpu, own.memory_bytes, project.priority))
    return pa.Table.from_pylist(rows, schema=LIMITS)


def _limit_row(
    plan: Plan, project: str, agent: str, cpu: float, memory: int, priority: int
) -> dict[str, Any]:
    return {
        "ts": plan.start_us,
        "host": HOST,
        "project": project,
        "agent": agent,
        "cpu_limit_percent": cpu,
        "memory_limit_bytes": memory,
        "priority": priority,
        "strategy": plan.allocation.strategy,
        "profile": plan.allocation.profile,
        "reason": "start",
    }


def _events_table(plan: Plan, check_interval: float) -> pa.Table:
    """Collector start and stop, and the enforcer's warn, pause and resume in the episode."""
    over = plan.projects[plan.over_project]
    limit = plan.allocation.projects[over].cpu
    used = OVER_LIMIT_RATIO * limit
    begin, end = plan.over_window
    last_tick = plan.start_us + (plan.ticks - 1) * plan.interval_us

    def event(rel: int, action: str, scope: str, **extra: Any) -> dict[str, Any]:
        return {"ts": plan.start_us + rel, "host": HOST, "action": action, "scope": scope,
                **extra}  # fmt: skip

    rows = [event(0, "start", "workspace", message="simulated collector started")]
    warn_at = begin + round(check_interval * SECOND_US)
    if warn_at < end and not plan.calibrated:
        rows.append(
            event(warn_at, "warn", "project", project=over, metric="cpu", value=used,
                  limit=limit, message=f"{over} uses {used:.3g}% CPU, over its {limit:.3g}%")
        )  # fmt: skip
    for pause_begin, pause_end in plan.pauses:
        pids = plan.pids_at(plan.over_project, pause_begin)
        rows.append(
            event(pause_begin, "pause", "project", project=over, pids=pids, metric="cpu",
                  value=used, limit=limit,
                  message=f"paused {len(pids)} processes of {over}: {used:.3g}% CPU of "
                  f"{limit:.3g}%")
        )  # fmt: skip
        rows.append(
            event(pause_end, "resume", "project", project=over, pids=pids, metric="cpu",
                  value=0.0, limit=limit, message=f"resumed {len(pids)} processes of {over}")
        )  # fmt: skip
    rows.append(event(last_tick - plan.start_us, "stop", "workspace",
                      message="simulated collector stopped"))  # fmt: skip
    return pa.Table.from_pylist(rows, schema=EVENTS)


def _datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
