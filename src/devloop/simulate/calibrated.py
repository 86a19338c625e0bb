"""The plan of a calibrated simulation: projects, agents, triggers and runs replayed from a
recording (:mod:`devloop.simulate.calibrate`) instead of drawn from the built-in model.

Projects
    The simulated projects are the recorded ones, in the calibration's order (by name). Asked
    for fewer, the first ones; for more, they are cycled: project ``i`` replays recorded
    project ``i mod R`` (``R`` recorded) and the copies are named ``<name>-2``, ``<name>-3``...
    (each copy draws its own triggers). Each project has the agents its recorded project ran,
    with their recorded commands and no per-agent limits; the workspace's pool, weights and
    priorities are the built-in simulator's.
Triggers
    Per project, a circular block bootstrap of its recorded triggers: from a random recorded
    trigger, :data:`BLOCK` consecutive ones are replayed with the recorded gaps before them
    (wrapping from the last to the second), then another block from another random trigger,
    and so on, starting a random part of a recording before the span. Every simulated gap is a
    recorded gap, bursts of edits stay bursts, and the mean gap converges to the recorded
    mean. The first recorded trigger is never replayed: no gap before it is known (it is often
    the cold start of ``devloop watch``). There is no daily cycle: triggers come at the
    recording's pace around the clock.
Runs
    A replayed trigger starts the very runs its recorded trigger started: each agent's run at
    its recorded offset after the trigger, lasting its recorded duration (pauses left out),
    using its recorded per-tick cores (x U(0.9, 1.1) per tick; a run no tick saw: its CPU over
    its duration) and holding its recorded peak memory (floored to a 4 KiB page) at every tick
    of the run. Every run is one new process (as under ``devloop watch``); between runs the
    process idles at 0.001 cores and half the agent's smallest recorded peak. A run whose slot
    is still busy waits for it (``queued`` before ``started``), so no run is cut short; with
    ``processes_per_agent`` > 1 a run takes the agent's first free process.
Left out
    The built-in model's planted anomalies (leak, file-handle growth, over-limit episode): a
    calibrated history is what the recording did, so its ``events`` hold only start and stop.
    Per-tick CPU is still capped at 95 % of the host's cores, as in the built-in model.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from devloop.config import Workspace
from devloop.config.allocation import Allocation
from devloop.simulate.calibrate import AgentRuns, Calibration, ProjectCalibration
from devloop.simulate.model import SECOND_US, WATCHER, AgentKind
from devloop.simulate.plan import (
    MARGIN,
    Plan,
    RecordedRuns,
    assemble_plan,
    slot_params,
)
from devloop.units import MIB

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

#: Consecutive recorded triggers replayed together (keeps the bursts of editing).
BLOCK: Final = 12
#: An agent's process between its runs.
IDLE_CORES: Final = 0.001
IDLE_RSS_SHARE: Final = 0.5
PAGE: Final = 4096
NO_ANOMALY: Final = (-1, -1)


@dataclass(frozen=True)
class SimulatedProject:
    """A simulated project and the recorded project it replays."""

    name: str
    recorded: ProjectCalibration
    kinds: tuple[tuple[str, AgentKind], ...]  # per recorded agent, in order


def simulated_projects(calibration: Calibration, projects: int) -> list[SimulatedProject]:
    """The simulated projects: the recorded ones, cycled (see the module docstring)."""
    recorded = calibration.projects
    result = []
    for i in range(projects):
        source = recorded[i % len(recorded)]
        copy = i // len(recorded)
        name = source.name if copy == 0 else f"{source.name}-{copy + 1}"
        kinds = tuple((agent.name, agent_kind(agent)) for agent in source.agents)
        result.append(SimulatedProject(name, source, kinds))
    return result


def agent_kind(agent: AgentRuns) -> AgentKind:
    """An :class:`AgentKind` for a recorded agent: its command and process name; what it does
    while running comes from its runs, not from the kind."""
    try:
        command = tuple(shlex.split(agent.command))
    except ValueError:
        command = tuple(agent.command.split())
    mean_cores = sum(agent.mean_cores(i) for i in range(agent.runs)) / agent.runs
    return replace(
        WATCHER,
        name=agent.name,
        process_name=agent.process,
        command=command or (agent.process,),
        restarts=True,
        triggers_per_minute=0.0,
        run_seconds=(min(agent.seconds), max(agent.seconds)),
        idle_cores=IDLE_CORES,
        run_cores=mean_cores,
        rss_mib=min(agent.peak_rss_bytes) * IDLE_RSS_SHARE / MIB,
        run_rss_mib=0.0,
        limits=(),
    )


def trigger_times(
    rng: np.random.Generator, project: ProjectCalibration, span_us: int
) -> tuple[I64, I64]:
    """(time from the span's start in µs, recorded trigger index) of every replayed trigger in
    ``[0, span_us)``, in time order (the block bootstrap of the module docstring)."""
    gaps = np.round(np.diff(np.asarray(project.triggers)) * SECOND_US).astype(np.int64)
    items = len(gaps)  # item k: recorded trigger k + 1 and the gap before it
    whole = int(gaps.sum())
    if whole <= 0:
        raise ValueError(f"{project.name}: its triggers have no time between them")
    at = -int(rng.integers(0, whole, endpoint=True))
    times: list[I64] = []
    index: list[I64] = []
    while at < span_us:
        needed = -(-(span_us - at) * items // whole)  # items to cover the rest, on average
        blocks = -(-needed // BLOCK) + 1
        starts = rng.integers(0, items, size=blocks, dtype=np.int64)
        item = ((starts[:, None] + np.arange(BLOCK, dtype=np.int64)[None, :]) % items).ravel()
        moments = at + np.cumsum(gaps[item])
        times.append(moments)
        index.append(item + 1)
        at = int(moments[-1])
    when, which = np.concatenate(times), np.concatenate(index)
    keep = (when >= 0) & (when < span_us)
    return when[keep], which[keep]


def make_calibrated_plan(
    workspace: Workspace,
    allocation: Allocation,
    projects: list[SimulatedProject],
    *,
    start_us: int,
    span_us: int,
    interval_us: int,
    processes_per_agent: int,
    cores: int,
    seed: int,
) -> Plan:
    """Slots, replayed triggers and runs, process lives and pids of a calibrated simulation."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    stride = span_us + 2 * MARGIN
    agents: list[str] = []
    for project in projects:
        agents += [name for name, _ in project.kinds if name not in agents]

    slot_project: list[int] = []
    slot_agent: list[int] = []
    slot_kind: list[AgentKind] = []
    slot_cmdline: list[str] = []
    # Per run (all projects, in slot order): the slot, queued/start (rel µs), duration (µs),
    # and what it replays.
    run_slot: list[int] = []
    run_queued: list[int] = []
    run_start: list[int] = []
    run_dur: list[int] = []
    run_shape: list[tuple[int, int]] = []
    run_cpu: list[float] = []
    run_rss: list[int] = []
    shapes: list[float] = []
    for p, project in enumerate(projects):
        when, which = trigger_times(
            np.random.default_rng(np.random.SeedSequence([seed, 3, p])), project.recorded, span_us
        )
        for (name, kind), recorded in zip(project.kinds, project.recorded.agents, strict=True):
            first_slot = len(slot_project)
            for _ in range(processes_per_agent):
                slot_project.append(p)
                slot_agent.append(agents.index(name))
                slot_kind.append(kind)
                slot_cmdline.append(recorded.command or recorded.process)
            shape_of_run = []
            for run in range(recorded.runs):
                points = recorded.cores[run] or (recorded.mean_cores(run),)
                shape_of_run.append((len(shapes), len(points)))
                shapes.extend(points)
            _queue(
                recorded, when, which, first_slot, processes_per_agent, span_us, shape_of_run,
                run_slot, run_queued, run_start, run_dur, run_shape, run_cpu, run_rss,
            )  # fmt: skip

    slot = np.asarray(run_slot, dtype=np.int64)
    key = slot * stride + MARGIN + np.asarray(run_start, dtype=np.int64)
    order = np.argsort(key, kind="stable")
    shape = np.asarray(run_shape, dtype=np.int64).reshape(-1, 2)[order]
    recorded_runs = RecordedRuns(
        queued_rel=np.asarray(run_queued, dtype=np.int64)[order],
        shape_start=shape[:, 0].copy(),
        shape_len=shape[:, 1].copy(),
        shape_cores=np.asarray(shapes, dtype=np.float64),
        cpu_seconds=np.asarray(run_cpu, dtype=np.float64)[order],
        peak_rss_bytes=np.asarray(run_rss, dtype=np.int64)[order],
    )
    slot_projects = np.asarray(slot_project, dtype=np.int64)
    slot_agents = np.asarray(slot_agent, dtype=np.int64)
    params = slot_params(slot_kind, slot_projects, slot_agents, NO_ANOMALY, NO_ANOMALY, -1, 0.0)
    return assemble_plan(
        rng,
        workspace,
        allocation,
        start_us=start_us,
        span_us=span_us,
        interval_us=interval_us,
        cores=cores,
        agents=agents,
        slot_project=slot_projects,
        slot_agent=slot_agents,
        slot_kind=slot_kind,
        slot_cmdline=slot_cmdline,
        params=params,
        trig_key=key[order],
        trig_dur=np.asarray(run_dur, dtype=np.int64)[order],
        over_project=-1,
        over_window=(0, 0),
        pauses=[],
        leak=NO_ANOMALY,
        fd_growth=NO_ANOMALY,
        recorded=recorded_runs,
    )


def _queue(
    agent: AgentRuns,
    when: I64,
    which: I64,
    first_slot: int,
    processes: int,
    span_us: int,
    shape_of_run: list[tuple[int, int]],
    run_slot: list[int],
    run_queued: list[int],
    run_start: list[int],
    run_dur: list[int],
    run_shape: list[tuple[int, int]],
    run_cpu: list[float],
    run_rss: list[int],
) -> None:
    """Append the runs of ``agent`` the replayed triggers start, each on the agent's first
    free process (waiting for one when all are busy), those that start within the span."""
    runs_of: dict[int, list[int]] = {}
    for run, trigger in enumerate(agent.trigger):
        runs_of.setdefault(trigger, []).append(run)
    offset_us = [round(o * SECOND_US) for o in agent.offset]
    dur_us = [round(s * SECOND_US) for s in agent.seconds]
    queued = sorted(
        (int(t) + offset_us[run], run)
        for t, trigger in zip(when.tolist(), which.tolist(), strict=True)
        for run in runs_of.get(trigger, ())
    )
    free_at = [-(1 << 62)] * processes
    last_start = [-(1 << 62)] * processes
    for at, run in queued:
        process = min(range(processes), key=lambda i: (max(free_at[i], at), i))
        start = max(at, free_at[process], last_start[process] + 1)
        if start >= span_us:
            continue
        free_at[process] = start + dur_us[run]
        last_start[process] = start
        run_slot.append(first_slot + process)
        run_queued.append(at)
        run_start.append(start)
        run_dur.append(dur_us[run])
        run_shape.append(shape_of_run[run])
        run_cpu.append(agent.cpu_seconds[run])
        run_rss.append(agent.peak_rss_bytes[run] // PAGE * PAGE)
