"""``devloop workspace stress-test``: real load against real enforcement, and what came of it.

:func:`run_stress` starts load agents (:mod:`devloop.runner.load`) in every enabled project,
tagged ``stress-cpu``, ``stress-memory``, ``stress-files`` and ``stress-threads``, records the
workspace with enforcement on (a :class:`~devloop.runner.record.Recorder` whose
:class:`~devloop.core.resource_manager.ResourceManager` checks every tick), then stops the loads
and closes the recorder, which continues anything still paused. :func:`stress_report` then reads
what happened back from the store (``samples``, ``system``, ``events``, ``limits``) and the
enforcement log.

Sizing: CPU aims at ``target_cpu`` % of the *machine* (all cores), memory at ``target_memory`` %
of the *workspace's memory limit* (the pool in force), never more than half of the memory the
machine has available when the test starts. Both are split between projects in proportion to
their shares and reached in four equal steps over the ramp (the first quarter of the run by
default), so the moment a limit is crossed, and the reaction to it, can be seen.

What the report calls *held*, per limit: the usage never went over it; or a reaction (a ``pause``
or ``throttle`` event for that limit) came within ``interval + 1`` s of the first tick over it, and
no stretch of consecutive ticks over it lasted longer than ``interval + 1`` s. Usage counts every
process of the project, paused ones too: pausing cannot give memory back, so a memory overshoot
that a pause did not end is reported as not held.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from devloop.config.models import Workspace
from devloop.errors import UsageError

REPORT_VERSION = 1
AGENTS = {"cpu": "stress-cpu", "memory": "stress-memory", "files": "stress-files",
          "threads": "stress-threads"}  # fmt: skip
STEPS = 4  # the ramp's steps
MAX_MEMORY_SHARE = 0.5  # of the machine's available memory, whatever is asked
REACTIONS = ("pause", "throttle")
STOP_DEADLINE = 10.0  # seconds a load agent gets to exit after its stdin closes


@dataclass(frozen=True)
class StressOptions:
    """What ``devloop workspace stress-test`` was asked to do."""

    duration: float
    target_cpu: float = 80.0  # percent of the machine
    target_memory: float = 90.0  # percent of the workspace's memory limit
    interval: float = 1.0
    ramp: float | None = None  # seconds; default a quarter of the duration
    files: int = 64  # per project
    threads: int = 8  # per project
    profile: str | None = None
    min_pause: float | None = None  # default max(3 x interval, 5 s)

    def check(self) -> None:
        """UsageError for an impossible option."""
        if not math.isfinite(self.duration) or self.duration <= 0:
            raise UsageError(f"--duration must be above 0 seconds, got {self.duration:g}")
        if not 0 <= self.target_cpu <= 100:
            raise UsageError(
                f"--target-cpu must be between 0 and 100 (percent of the machine), got "
                f"{self.target_cpu:g}"
            )
        if not 0 <= self.target_memory <= 1000:
            raise UsageError(
                f"--target-memory must be between 0 and 1000 (percent of the workspace's memory "
                f"limit), got {self.target_memory:g}"
            )
        if not math.isfinite(self.interval) or self.interval <= 0:
            raise UsageError(f"--interval must be above 0 seconds, got {self.interval:g}")
        if self.ramp is not None and not 0 <= self.ramp <= self.duration:
            raise UsageError(f"--ramp must be between 0 and --duration, got {self.ramp:g}")
        if self.files < 0 or self.threads < 0:
            raise UsageError("--files and --threads must not be negative")

    @property
    def ramp_seconds(self) -> float:
        return self.duration / 4 if self.ramp is None else self.ramp

    @property
    def pause_seconds(self) -> float:
        return self.min_pause if self.min_pause is not None else max(3 * self.interval, 5.0)


@dataclass(frozen=True)
class ProjectLoad:
    """The load aimed at one project (at the end of the ramp)."""

    project: str
    cpu_cores: float
    memory_bytes: int
    files: int
    threads: int


@dataclass(frozen=True)
class LoadPlan:
    """Every project's load, and how the totals were reached."""

    projects: tuple[ProjectLoad, ...]
    cores: int
    cpu_cores: float  # the target, all projects
    memory_bytes: int  # the target, all projects (after the cap)
    memory_asked_bytes: int  # target_memory % of the pool
    memory_available_bytes: int  # the machine's, at the start
    memory_capped: bool


def _split(total: float, weights: Sequence[float]) -> list[float]:
    whole = math.fsum(weights)
    if whole <= 0:
        return [total / len(weights)] * len(weights) if weights else []
    return [total * w / whole for w in weights]


def plan_load(
    workspace: Workspace,
    options: StressOptions,
    *,
    cores: int,
    available_bytes: int,
) -> LoadPlan:
    """Size each enabled project's load from the targets and the shares in force."""
    from devloop.config.allocation import allocate

    allocation = allocate(workspace, profile=options.profile)
    shares = list(allocation.projects.values())
    if not shares:
        raise UsageError(f"{workspace.config.file}: projects: no enabled project to load")
    cpu_total = options.target_cpu / 100 * cores
    asked = round(options.target_memory / 100 * allocation.pool.memory_bytes)
    memory_total = min(asked, int(MAX_MEMORY_SHARE * available_bytes))
    cpu = _split(cpu_total, [s.cpu for s in shares])
    memory = _split(memory_total, [s.memory_bytes for s in shares])
    projects = tuple(
        ProjectLoad(s.name, round(c, 4), int(m), options.files, options.threads)
        for s, c, m in zip(shares, cpu, memory, strict=True)
    )
    return LoadPlan(projects, cores, cpu_total, memory_total, asked, available_bytes,
                    memory_total < asked)  # fmt: skip


def machine() -> dict[str, Any]:
    """The machine's size and load now."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cores": os.cpu_count() or 1,
        "memory_total_bytes": int(memory.total),
        "memory_available_bytes": int(memory.available),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# --- load agents ---------------------------------------------------------------------------


class LoadAgent:
    """One running ``python -m devloop.runner.load KIND AMOUNT``: a run of its project (trigger
    ``stress``) with its own run id and ``runs`` row."""

    def __init__(self, metrics_dir: Path, project: str, kind: str, amount: str,
                 cwd: Path | None) -> None:  # fmt: skip
        from devloop.runner import launch

        self.project = project
        self.kind = kind
        self.agent = AGENTS[kind]
        self.amount = amount
        argv = [sys.executable, "-m", "devloop.runner.load", kind, amount]
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            self.run = launch.start(metrics_dir, project, self.agent, argv, trigger="stress",
                                    cwd=cwd, stdin=read_end, stdout=devnull)  # fmt: skip
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            os.close(devnull)
        self.stdin: IO[bytes] = os.fdopen(write_end, "wb")
        self.pid = self.run.pid

    def set(self, amount: str) -> None:
        """A new amount (a line on its stdin; a paused agent reads it once continued)."""
        if self.stdin.closed or self.run.poll():
            return
        try:
            self.stdin.write(f"{amount}\n".encode())
            self.stdin.flush()
            self.amount = amount
        except OSError:
            pass  # it died; the report shows it

    def close_stdin(self) -> None:
        if not self.stdin.closed:
            try:
                self.stdin.close()
            except OSError:
                pass

    def stop(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for it to exit; then kill it. Reaps it."""
        self.close_stdin()
        while not self.run.poll() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.run.poll():
            self.run.send_signal(signal.SIGKILL)  # ends a stopped process too, burners with it
        self.run.reap()


@dataclass
class _Step:
    at: float  # seconds after the start
    project: str
    kind: str
    amount: str


def _schedule(plan: LoadPlan, ramp: float) -> list[_Step]:
    steps: list[_Step] = []
    for load in plan.projects:
        for k in range(1, STEPS + 1):
            at = ramp * (k - 1) / (STEPS - 1)
            steps.append(_Step(at, load.project, "cpu", f"{load.cpu_cores * k / STEPS:.4f}"))
            steps.append(_Step(at, load.project, "memory", str(load.memory_bytes * k // STEPS)))
        steps.append(_Step(0.0, load.project, "files", str(load.files)))
        steps.append(_Step(0.0, load.project, "threads", str(load.threads)))
    steps.sort(key=lambda s: s.at)
    return steps


class LoadSet:
    """The stress test's load agents: started and ramped on schedule, always stopped."""

    def __init__(self, workspace: Workspace, plan: LoadPlan, ramp: float) -> None:
        self.workspace = workspace
        self.pending = _schedule(plan, ramp)
        self.agents: dict[tuple[str, str], LoadAgent] = {}
        self.started = math.nan

    def advance(
        self,
        elapsed: float,
        on_start: Callable[[LoadAgent], None] | None = None,
        project_memory: Callable[[str], int | None] | None = None,
    ) -> None:
        """Start or raise every load due by ``elapsed`` seconds.

        A memory step aims at the *project's* memory: what its other processes hold (the
        interpreters of the load agents, its real agents), read from ``project_memory``, is
        taken off the allocation, so 90 % of the limit means 90 % of it in use."""
        config = self.workspace.config
        while self.pending and self.pending[0].at <= elapsed:
            step = self.pending.pop(0)
            key = (step.project, step.kind)
            agent = self.agents.get(key)
            amount = step.amount
            if step.kind == "memory" and agent is not None and project_memory is not None:
                now = project_memory(step.project)
                if now is not None:
                    others = max(now - int(agent.amount), 0)
                    amount = str(max(int(step.amount) - others, 0))
            if agent is not None:
                agent.set(amount)
                continue
            folder = config.project_dir(config.project(step.project))
            agent = LoadAgent(self.workspace.metrics_dir, step.project, step.kind, amount,
                              folder if folder.is_dir() else None)  # fmt: skip
            self.agents[key] = agent
            if on_start is not None:
                on_start(agent)

    def stop(self) -> None:
        """Close every agent's stdin, give them STOP_DEADLINE seconds, kill what is left."""
        for agent in self.agents.values():
            agent.close_stdin()
        deadline = time.monotonic() + STOP_DEADLINE
        for agent in self.agents.values():
            agent.stop(deadline)

    def pids(self) -> list[int]:
        return [a.pid for a in self.agents.values()]


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What the progress display shows after each tick."""

    elapsed: float
    duration: float
    workspace_cpu_percent: float
    workspace_memory_bytes: int
    paused: int  # agents paused now
    pauses: int  # pauses so far


@dataclass
class StressRun:
    """What :func:`run_stress` hands to :func:`stress_report`."""

    workspace: Workspace
    options: StressOptions
    plan: LoadPlan
    machine: dict[str, Any]
    machine_after: dict[str, Any]
    host: str
    enforcement: str
    started: float  # unix seconds
    ended: float
    load_pids: list[int] = field(default_factory=list)


def run_stress(
    workspace: Workspace,
    options: StressOptions,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> StressRun:
    """Load the workspace's projects for ``options.duration`` seconds under enforcement.

    Every load agent is stopped, and every paused process continued, before this returns,
    whatever happens (an error, ``stop`` set by a signal handler).
    """
    from devloop.runner.record import Recorder

    options.check()
    before = machine()
    plan = plan_load(workspace, options, cores=before["cores"],
                     available_bytes=before["memory_available_bytes"])  # fmt: skip
    stop = stop or threading.Event()
    started = time.time()
    recorder = Recorder(workspace, interval=options.interval, enforce=True,
                        profile=options.profile, min_pause=options.pause_seconds)  # fmt: skip
    manager = recorder.manager
    assert manager is not None
    loads = LoadSet(workspace, plan, options.ramp_seconds)
    recorder.event("start", message=_describe(options, plan))
    try:
        try:
            mono0 = time.monotonic()

            def started_agent(agent: LoadAgent) -> None:
                manager.started(agent.pid)
                recorder.event("agent-start", scope="agent", project=agent.project,
                               agent=agent.agent, message=f"pid {agent.pid}: stress load "
                               f"{agent.kind} {agent.amount}")  # fmt: skip

            loads.advance(0.0, started_agent)

            def on_tick(_status: object) -> None:
                elapsed = time.monotonic() - mono0
                state = manager.state()
                projects = state["projects"]

                def project_memory(project: str) -> int | None:
                    found = projects.get(project)
                    return int(found["memory_bytes"]) if found is not None else None

                loads.advance(elapsed, started_agent, project_memory)
                if on_progress is not None:
                    on_progress(
                        Progress(
                            elapsed=min(elapsed, options.duration),
                            duration=options.duration,
                            workspace_cpu_percent=state["workspace"]["cpu_percent"],
                            workspace_memory_bytes=state["workspace"]["memory_bytes"],
                            paused=len(manager.paused_agents()),
                            pauses=state["pauses_total"],
                        )
                    )

            recorder.run(duration=options.duration, stop=stop, on_tick=on_tick)
        finally:
            try:
                for agent in loads.agents.values():
                    agent.close_stdin()
                manager.close()  # continues whatever is paused: the loads then read EOF
                loads.stop()
                recorder.record_runs()  # the loads' runs rows
            finally:
                recorder.close()
    finally:
        loads.stop()
    return StressRun(
        workspace=workspace, options=options, plan=plan, machine=before, machine_after=machine(),
        host=recorder.writer.host,
        enforcement=workspace.config.global_.resource_limits.enforcement_action,
        started=started, ended=time.time(), load_pids=loads.pids(),
    )  # fmt: skip


def _describe(options: StressOptions, plan: LoadPlan) -> str:
    return (
        f"stress test: {options.duration:g}s, CPU {options.target_cpu:g}% of the machine "
        f"({plan.cpu_cores:.2f} cores), memory {options.target_memory:g}% of the workspace "
        f"limit ({plan.memory_bytes / (1 << 20):.0f}MB{', capped' if plan.memory_capped else ''})"
    )


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Per-tick usage: unix seconds, CPU % of the machine, memory bytes."""

    ts: tuple[float, ...]
    cpu: tuple[float, ...]
    memory: tuple[int, ...]


def _stretches(ts: Sequence[float], over: Sequence[bool], interval: float) -> list[list[float]]:
    """Each run of consecutive ticks over the limit as [start of its first interval, end,
    seconds]; a tick stands for the interval that ends at it."""
    runs: list[list[float]] = []
    previous = None
    for t, is_over in zip(ts, over, strict=True):
        span = interval if previous is None else min(t - previous, interval)
        if is_over:
            if runs and runs[-1][1] == previous:
                runs[-1][1] = t
                runs[-1][2] += span
            else:
                runs.append([t - span, t, span])
        previous = t
    return runs


def limit_result(
    ts: Sequence[float],
    usage: Sequence[float],
    limits: Sequence[float],
    reactions: Sequence[float],
    interval: float,
) -> dict[str, Any]:
    """How one usage series fared against its limit (see the module doc for *held*).

    ``reactions`` are the unix times of the pause/throttle events for this limit."""
    over = [u > lim for u, lim in zip(usage, limits, strict=True)]
    runs = _stretches(ts, over, interval)
    excess = [u - lim for u, lim in zip(usage, limits, strict=True)]
    first_over = next((t for t, o in zip(ts, over, strict=True) if o), None)
    react = None
    if first_over is not None:
        later = [r for r in reactions if r >= first_over - interval]
        react = round(min(later) - first_over, 3) if later else None
    longest = max((r[2] for r in runs), default=0.0)
    bound = interval + 1.0
    held = first_over is None or (react is not None and react <= bound and longest <= bound)
    return {
        "limit": limits[0] if limits else None,
        "max": max(usage, default=0),
        "max_overshoot": max(excess) if excess else None,
        "seconds_over": round(sum(r[2] for r in runs), 3),
        "stretches_over": len(runs),
        "longest_stretch_seconds": round(longest, 3),
        "first_over": _iso(first_over) if first_over is not None else None,
        "seconds_to_react": max(react, 0.0) if react is not None else None,
        "held": held,
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def stress_report(run: StressRun) -> dict[str, Any]:
    """The report of a finished run, computed from the store and the enforcement log."""
    from devloop.store.db import connect, mapped

    workspace = run.workspace
    interval = run.options.interval
    db = connect(workspace.metrics_dir)
    try:
        with mapped(f"cannot read the stress test's rows from {workspace.metrics_dir}"):
            window = (
                datetime.fromtimestamp(run.started, UTC),
                datetime.fromtimestamp(run.ended, UTC),
            )
            ticks = db.execute(
                "SELECT ts, max(cores) FROM system WHERE host = ? AND ts BETWEEN ? AND ? "
                "GROUP BY ts ORDER BY ts",
                [run.host, *window],
            ).fetchall()
            ts = [row[0].timestamp() for row in ticks]
            cores = {row[0].timestamp(): int(row[1]) for row in ticks}
            usage: dict[tuple[str, float], tuple[float, int]] = {}
            for project, t, cpu_cores, rss in db.execute(
                "SELECT project, ts, sum(cpu_cores), sum(rss_bytes) FROM samples "
                "WHERE host = ? AND ts BETWEEN ? AND ? GROUP BY project, ts",
                [run.host, *window],
            ).fetchall():
                usage[(project, t.timestamp())] = (float(cpu_cores or 0.0), int(rss or 0))
            limit_rows = db.execute(
                "SELECT ts, project, cpu_limit_percent, memory_limit_bytes FROM limits "
                "WHERE host = ? AND agent = '' AND ts BETWEEN ? AND ? ORDER BY ts",
                [run.host, *window],
            ).fetchall()
            events = db.execute(
                'SELECT ts, action, scope, project, agent, metric, value, "limit" FROM events '
                "WHERE host = ? AND ts BETWEEN ? AND ? ORDER BY ts",
                [run.host, *window],
            ).fetchall()
    finally:
        db.close()

    from devloop.config.allocation import allocate

    allocation = allocate(workspace, profile=run.options.profile)
    base = allocation.projects  # the limits in force, where the store has none

    def limits_at(project: str) -> tuple[list[float], list[int]]:
        cpu_limits: list[float] = []
        memory_limits: list[int] = []
        current: tuple[float, int] | None = None
        rows = [r for r in limit_rows if r[1] == project]
        index = 0
        for t in ts:
            while index < len(rows) and rows[index][0].timestamp() <= t:
                current = (float(rows[index][2]), int(rows[index][3]))
                index += 1
            if current is None and rows:
                current = (float(rows[0][2]), int(rows[0][3]))
            cpu_limits.append(current[0] if current else base[project].cpu)
            memory_limits.append(current[1] if current else base[project].memory_bytes)
        return cpu_limits, memory_limits

    def counts(project: str | None) -> dict[str, int]:
        found: dict[str, int] = {}
        for e in events:
            if project is None or e[3] == project:
                found[e[1]] = found.get(e[1], 0) + 1
        return found

    def reactions(project: str | None, metric: str) -> list[float]:
        return [
            e[0].timestamp() for e in events
            if e[1] in REACTIONS and e[5] == metric
            and (project is None or (e[3] == project and e[2] in ("project", "agent")))
        ]  # fmt: skip

    result_projects: dict[str, Any] = {}
    totals_cpu = [0.0] * len(ts)
    totals_memory = [0] * len(ts)
    for load in run.plan.projects:
        name = load.project
        cpu_series = []
        memory_series = []
        for i, t in enumerate(ts):
            cpu_cores, rss = usage.get((name, t), (0.0, 0))
            cpu_series.append(round(cpu_cores / cores[t] * 100, 3))
            memory_series.append(rss)
            totals_cpu[i] += cpu_cores / cores[t] * 100
            totals_memory[i] += rss
        cpu_limits, memory_limits = limits_at(name)
        cpu = limit_result(ts, cpu_series, cpu_limits, reactions(name, "cpu"), interval)
        memory = limit_result(ts, memory_series, [float(m) for m in memory_limits],
                              reactions(name, "memory"), interval)  # fmt: skip
        memory["limit"] = int(memory["limit"]) if memory["limit"] is not None else None
        actions = counts(name)
        result_projects[name] = {
            "cpu_limit": cpu["limit"],
            "memory_limit_bytes": memory["limit"],
            "load": {
                "cpu_cores": load.cpu_cores,
                "memory_bytes": load.memory_bytes,
                "files": load.files,
                "threads": load.threads,
            },  # fmt: skip
            "cpu": cpu,
            "memory": memory,
            "pauses": actions.get("pause", 0),
            "resumes": actions.get("resume", 0),
            "throttles": actions.get("throttle", 0),
            "warnings": actions.get("warn", 0),
            "held": cpu["held"] and memory["held"],
            "series": [
                {"ts": _iso(t), "t": round(t - run.started, 3), "cpu_percent": c, "memory_bytes": m}
                for t, c, m in zip(ts, cpu_series, memory_series, strict=True)
            ],  # fmt: skip
        }
    pool = allocation.pool
    ws_cpu = limit_result(ts, [round(c, 3) for c in totals_cpu], [pool.cpu] * len(ts),
                          reactions(None, "cpu"), interval)  # fmt: skip
    ws_memory = limit_result(ts, totals_memory, [float(pool.memory_bytes)] * len(ts),
                             reactions(None, "memory"), interval)  # fmt: skip
    ws_memory["limit"] = pool.memory_bytes
    actions = counts(None)
    log = _log_lines(workspace.dir / "resource-enforcement.log", run.started, run.ended)
    options = run.options
    return {
        "version": REPORT_VERSION,
        "workspace": str(workspace.dir),
        "started": _iso(run.started),
        "ended": _iso(run.ended),
        "parameters": {
            "duration_seconds": options.duration,
            "target_cpu_percent_of_machine": options.target_cpu,
            "target_memory_percent_of_workspace_limit": options.target_memory,
            "interval_seconds": interval,
            "ramp_seconds": options.ramp_seconds,
            "min_pause_seconds": options.pause_seconds,
            "files_per_project": options.files,
            "threads_per_project": options.threads,
            "profile": options.profile,
            "target_cpu_cores": round(run.plan.cpu_cores, 4),
            "target_memory_bytes": run.plan.memory_bytes,
            "asked_memory_bytes": run.plan.memory_asked_bytes,
            "memory_capped": run.plan.memory_capped,
        },
        "machine": {**run.machine, "load_average_after": run.machine_after["load_average"]},
        "enforcement": {
            "action": run.enforcement,
            "resume_threshold": workspace.config.global_.resource_limits.resume_threshold,
            "log": str(workspace.dir / "resource-enforcement.log"),
            "log_lines": len(log),
            "events": actions,
        },
        "ticks": len(ts),
        "workspace_totals": {
            "cpu_limit": pool.cpu,
            "memory_limit_bytes": pool.memory_bytes,
            "cpu": ws_cpu,
            "memory": ws_memory,
            "pauses": actions.get("pause", 0),
            "resumes": actions.get("resume", 0),
            "held": ws_cpu["held"] and ws_memory["held"],
        },
        "projects": result_projects,
    }


def _log_lines(path: Path, start: float, end: float) -> list[dict[str, Any]]:
    """The enforcement log's entries between ``start`` and ``end`` (unix seconds)."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(text)
            when = datetime.fromisoformat(entry["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if start <= when <= end:
            lines.append(entry)
    return lines


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Two rows (CPU, memory) per project and for the workspace, for the terminal table."""

    def mb(n: float) -> str:
        return f"{n / (1 << 20):.0f}MB"

    def seconds(s: float | None) -> str:
        return "-" if s is None else f"{s:.2f}"

    rows = []
    named = [*report["projects"].items(), ("(workspace)", report["workspace_totals"])]
    for name, p in named:
        cpu, memory = p["cpu"], p["memory"]
        over = cpu["max_overshoot"]
        rows.append([
            name, "cpu", f"{cpu['limit']:g}%", f"{cpu['max']:.1f}%",
            "-" if over is None else f"{over:+.1f} pts", f"{cpu['seconds_over']:g}",
            seconds(cpu["seconds_to_react"]), str(p["pauses"]), str(p["resumes"]),
            "yes" if cpu["held"] else "no",
        ])  # fmt: skip
        over = memory["max_overshoot"]
        rows.append([
            "", "memory", mb(memory["limit"]), mb(memory["max"]),
            "-" if over is None else f"{over / (1 << 20):+.0f}MB", f"{memory['seconds_over']:g}",
            seconds(memory["seconds_to_react"]), "", "", "yes" if memory["held"] else "no",
        ])  # fmt: skip
    return rows


SUMMARY_COLUMNS = (
    "project", "metric", "limit", "max", "max overshoot", "s over", "s to react", "pauses",
    "resumes", "held",
)  # fmt: skip
