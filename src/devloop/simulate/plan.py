"""Everything decided before the first sample: slots, triggers, process lives, pids, events.

A *slot* is one concurrently running agent process: ``projects x agents x processes_per_agent``
of them, each occupied by exactly one process at every tick (a new process replaces the old
one), so ``samples`` has exactly ``ticks x slots`` rows. The plan is small (one entry per
trigger and per process, not per tick) and drawn from its own random stream, so the per-hour
chunks can be generated in any order and still agree.

Times inside the plan are microseconds relative to the span's start (``rel``); a slot's
timeline is keyed ``slot * stride + MARGIN + rel`` so a single sorted array and one
``searchsorted`` find the process (or trigger) in force at every tick of every slot at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from devloop.config import Workspace
from devloop.config.allocation import Allocation
from devloop.simulate.model import (
    DAEMON_RESTART_HOUR,
    DAEMON_RESTART_JITTER_S,
    DAY_US,
    FD_GROWTH_PER_HOUR,
    HOUR_US,
    LEAK_BYTES_PER_HOUR,
    MINUTE_US,
    OVER_LIMIT_RATIO,
    SECOND_US,
    AgentKind,
    activity,
    agent_command,
    agent_kinds,
    fd_growth_target,
    leak_target,
    over_limit_project,
    over_limit_window,
    pause_windows,
    project_busyness,
)
from devloop.units import MIB

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

#: Room before the span for processes started earlier (daemons live up to a day).
MARGIN: Final = 2 * DAY_US
FIRST_PID: Final = 2000


@dataclass(frozen=True)
class SlotParams:
    """Per-slot behaviour as arrays (one entry per slot), for vectorised generation."""

    idle_cores: F64
    run_cores: F64
    rss_bytes: F64
    run_rss_bytes: F64
    fds: I64
    run_fds: I64
    threads: I64
    run_threads: I64
    read_bps: F64
    write_bps: F64
    leak_bytes_per_us: F64  # 0 except the leaking agent
    fds_per_us: F64  # 0 except the agent whose file handles grow
    over_cores: F64  # target cores during the over-limit episode (0 outside its project)


@dataclass(frozen=True)
class RecordedRuns:
    """Per triggered run of a calibrated plan (in ``Plan.trig_key`` order), the recorded run it
    replays: when it was queued (microseconds from the span's start: it starts later when its
    slot is busy), its per-tick cores (``shape_cores[shape_start : shape_start + shape_len]``,
    at least one point), the CPU the kernel counted and its peak memory."""

    queued_rel: I64
    shape_start: I64
    shape_len: I64
    shape_cores: F64
    cpu_seconds: F64
    peak_rss_bytes: I64


@dataclass(frozen=True)
class Plan:
    """The simulation decided up front; see the module docstring."""

    start_us: int
    span_us: int
    interval_us: int
    ticks: int
    stride: int
    cores: int
    projects: list[str]
    agents: list[str]  # agent names of one project, in order
    slot_project: I64
    slot_agent: I64
    slot_name: list[str]  # process name per slot
    slot_cmdline: list[str]
    project_dirs: list[str]
    runner_pids: I64  # per project: the ``devloop run`` parent of its agents
    params: SlotParams
    trig_key: I64  # sorted
    trig_dur: I64
    inst_key: I64  # sorted; every slot has one process before the span starts
    inst_start: I64  # absolute microseconds
    inst_pid: I64
    inst_first_tick: I64
    inst_sampled: BOOL
    inst_slot: I64
    over_project: int
    over_window: tuple[int, int]
    pauses: list[tuple[int, int]]
    leak: tuple[int, int]
    fd_growth: tuple[int, int]
    allocation: Allocation
    initial_counters: tuple[I64, I64, I64] = field(repr=False)  # cpu centiseconds, read, write
    #: What each triggered run replays of a recording (None: the built-in model's runs).
    recorded: RecordedRuns | None = field(default=None, repr=False)

    @property
    def calibrated(self) -> bool:
        """Whether the runs replay a recording (see :mod:`devloop.simulate.calibrated`)."""
        return self.recorded is not None

    @property
    def slots(self) -> int:
        return len(self.slot_project)

    def tick_keys(self, first: int, stop: int) -> I64:
        """The timeline keys of ticks ``first..stop-1`` of every slot, slot-major (S x T)."""
        rel = np.arange(first, stop, dtype=np.int64) * self.interval_us
        slots = np.arange(self.slots, dtype=np.int64)
        return slots[:, None] * self.stride + MARGIN + rel[None, :]

    def pids_at(self, project: int, rel: int) -> list[int]:
        """The pids of ``project``'s processes alive at ``rel`` (an offset into the span)."""
        slots = np.flatnonzero(self.slot_project == project).astype(np.int64)
        keys = slots * self.stride + MARGIN + rel
        found = np.searchsorted(self.inst_key, keys, side="left") - 1
        return [int(pid) for pid in self.inst_pid[found]]


def make_plan(
    workspace: Workspace,
    allocation: Allocation,
    *,
    start_us: int,
    span_us: int,
    interval_us: int,
    processes_per_agent: int,
    cores: int,
    seed: int,
) -> Plan:
    """Draw the triggers, process lives and pids of a simulation (see the module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    projects = [p.name for p in workspace.config.projects]
    named = agent_kinds(len(workspace.agents[projects[0]].agents))
    kinds = [kind for _, kind in named]
    per_project = len(named) * processes_per_agent
    slot_project = np.repeat(np.arange(len(projects), dtype=np.int64), per_project)
    slot_agent = np.tile(
        np.repeat(np.arange(len(named), dtype=np.int64), processes_per_agent), len(projects)
    )
    slot_kind = [kinds[a] for a in slot_agent]
    stride = span_us + 2 * MARGIN

    over_project = over_limit_project(len(projects))
    window = over_limit_window(start_us, span_us)
    limit_cores = allocation.projects[projects[over_project]].cpu / 100 * cores
    leak = leak_target(len(named))
    fd_growth = fd_growth_target(len(projects), len(named))
    params = slot_params(slot_kind, slot_project, slot_agent, leak, fd_growth, over_project,
                     OVER_LIMIT_RATIO * limit_cores / per_project)  # fmt: skip

    # Parallel processes of an agent share its work rather than multiply it, so a project's
    # load does not depend on processes_per_agent.
    busyness = np.asarray([project_busyness(i, len(projects)) for i in range(len(projects))])
    trigger_scale = busyness[slot_project] / processes_per_agent
    trig_key, trig_dur = _triggers(rng, slot_kind, trigger_scale, start_us, span_us, stride)
    return assemble_plan(
        rng,
        workspace,
        allocation,
        start_us=start_us,
        span_us=span_us,
        interval_us=interval_us,
        cores=cores,
        agents=[name for name, _ in named],
        slot_project=slot_project,
        slot_agent=slot_agent,
        slot_kind=slot_kind,
        slot_cmdline=[" ".join(agent_command(named[a][0], named[a][1])) for a in slot_agent],
        params=params,
        trig_key=trig_key,
        trig_dur=trig_dur,
        over_project=over_project,
        over_window=window,
        pauses=pause_windows(window),
        leak=leak,
        fd_growth=fd_growth,
    )


def assemble_plan(
    rng: np.random.Generator,
    workspace: Workspace,
    allocation: Allocation,
    *,
    start_us: int,
    span_us: int,
    interval_us: int,
    cores: int,
    agents: list[str],
    slot_project: I64,
    slot_agent: I64,
    slot_kind: list[AgentKind],
    slot_cmdline: list[str],
    params: SlotParams,
    trig_key: I64,
    trig_dur: I64,
    over_project: int,
    over_window: tuple[int, int],
    pauses: list[tuple[int, int]],
    leak: tuple[int, int],
    fd_growth: tuple[int, int],
    recorded: RecordedRuns | None = None,
) -> Plan:
    """The rest of a plan once its slots and triggers are drawn: process lives (from ``rng``,
    after the triggers), pids, counters. ``trig_key`` is sorted (see the module docstring)."""
    projects = [p.name for p in workspace.config.projects]
    stride = span_us + 2 * MARGIN
    ticks = -(-span_us // interval_us)
    inst_slot, inst_rel = _processes(rng, slot_kind, trig_key, start_us, span_us, stride)
    inst_key = inst_slot * stride + MARGIN + inst_rel
    order = np.argsort(inst_key, kind="stable")
    inst_slot, inst_rel, inst_key = inst_slot[order], inst_rel[order], inst_key[order]

    # Pids are handed out in start order with small gaps (other processes take some), the
    # runners first; they never wrap, so (pid) alone is unique within a simulation.
    gaps = rng.integers(1, 12, size=len(projects) + len(inst_key), dtype=np.int64)
    pids_in_order = FIRST_PID + np.cumsum(gaps)
    runner_pids = pids_in_order[: len(projects)]
    by_start = np.lexsort((inst_slot, inst_rel))
    inst_pid = np.empty(len(inst_key), dtype=np.int64)
    inst_pid[by_start] = pids_in_order[len(projects) :]
    if len(inst_pid) and int(inst_pid.max()) >= 2**31:
        raise OverflowError("too many processes for 32-bit pids")

    first_tick = np.where(inst_rel < 0, 0, inst_rel // interval_us + 1)
    same_slot_next = np.r_[inst_slot[1:] == inst_slot[:-1], False]
    next_first = np.where(same_slot_next, np.r_[first_tick[1:], ticks], ticks)
    sampled = first_tick < np.minimum(next_first, ticks)

    # Processes already running when the span starts have used some CPU and I/O before it.
    age_s = np.maximum(-inst_rel, 0) / SECOND_US
    idle = params.idle_cores[inst_slot]
    cpu_cs = np.round(age_s * idle * 100 * rng.uniform(1, 3, len(age_s))).astype(np.int64)
    read = (age_s * rng.uniform(0, 2000, len(age_s))).astype(np.int64)
    write = (age_s * rng.uniform(0, 500, len(age_s))).astype(np.int64)

    root = workspace.config
    return Plan(
        start_us=start_us,
        span_us=span_us,
        interval_us=interval_us,
        ticks=ticks,
        stride=stride,
        cores=cores,
        projects=projects,
        agents=agents,
        slot_project=slot_project,
        slot_agent=slot_agent,
        slot_name=[kind.process_name for kind in slot_kind],
        slot_cmdline=slot_cmdline,
        project_dirs=[str(root.project_dir(p)) for p in root.projects],
        runner_pids=runner_pids,
        params=params,
        trig_key=trig_key,
        trig_dur=trig_dur,
        inst_key=inst_key,
        inst_start=start_us + inst_rel,
        inst_pid=inst_pid,
        inst_first_tick=first_tick,
        inst_sampled=sampled,
        inst_slot=inst_slot,
        over_project=over_project,
        over_window=over_window,
        pauses=pauses,
        leak=leak,
        fd_growth=fd_growth,
        allocation=allocation,
        initial_counters=(cpu_cs, read, write),
        recorded=recorded,
    )


def slot_params(
    slot_kind: list[AgentKind],
    slot_project: I64,
    slot_agent: I64,
    leak: tuple[int, int],
    fd_growth: tuple[int, int],
    over_project: int,
    over_cores_per_slot: float,
) -> SlotParams:
    def floats(values: list[float]) -> F64:
        return np.asarray(values, dtype=np.float64)

    def ints(values: list[int]) -> I64:
        return np.asarray(values, dtype=np.int64)

    is_leak = (slot_project == leak[0]) & (slot_agent == leak[1])
    is_fd = (slot_project == fd_growth[0]) & (slot_agent == fd_growth[1])
    return SlotParams(
        idle_cores=floats([k.idle_cores for k in slot_kind]),
        run_cores=floats([k.run_cores for k in slot_kind]),
        rss_bytes=floats([k.rss_mib * MIB for k in slot_kind]),
        run_rss_bytes=floats([k.run_rss_mib * MIB for k in slot_kind]),
        fds=ints([k.fds for k in slot_kind]),
        run_fds=ints([k.run_fds for k in slot_kind]),
        threads=ints([k.threads for k in slot_kind]),
        run_threads=ints([k.run_threads for k in slot_kind]),
        read_bps=floats([k.read_bytes_per_s for k in slot_kind]),
        write_bps=floats([k.write_bytes_per_s for k in slot_kind]),
        leak_bytes_per_us=np.where(is_leak, LEAK_BYTES_PER_HOUR / HOUR_US, 0.0),
        fds_per_us=np.where(is_fd, FD_GROWTH_PER_HOUR / HOUR_US, 0.0),
        over_cores=np.where(slot_project == over_project, over_cores_per_slot, 0.0),
    )


def _triggers(
    rng: np.random.Generator,
    slot_kind: list[AgentKind],
    scale: F64,
    start_us: int,
    span_us: int,
    stride: int,
) -> tuple[I64, I64]:
    """Run starts as sorted timeline keys, and each run's duration (microseconds).

    A trigger falls in a minute with probability ``triggers_per_minute x scale x activity``
    (``scale``: per slot, see make_plan); it starts
    a burst of ``burst_runs`` runs, back to back with ``run_gap_seconds`` between them.
    """
    minutes = -(-span_us // MINUTE_US)
    middle = start_us + np.arange(minutes, dtype=np.int64) * MINUTE_US + MINUTE_US // 2
    rate = np.asarray([k.triggers_per_minute for k in slot_kind]) * scale
    hits = rng.random((len(slot_kind), minutes)) < rate[:, None] * activity(middle)[None, :]
    slot, minute = np.nonzero(hits)
    slot = slot.astype(np.int64)
    first = minute * MINUTE_US + rng.integers(0, MINUTE_US, size=len(slot), dtype=np.int64)

    low = np.asarray([k.burst_runs[0] for k in slot_kind], dtype=np.int64)[slot]
    high = np.asarray([k.burst_runs[1] for k in slot_kind], dtype=np.int64)[slot]
    runs = rng.integers(low, high + 1, dtype=np.int64) if len(slot) else low
    burst = np.repeat(np.arange(len(slot)), runs)
    run_slot = slot[burst]
    shortest = np.asarray([k.run_seconds[0] for k in slot_kind])[run_slot]
    longest = np.asarray([k.run_seconds[1] for k in slot_kind])[run_slot]
    duration = (rng.uniform(shortest, longest) * SECOND_US).astype(np.int64)
    gap = (np.asarray([k.run_gap_seconds for k in slot_kind])[run_slot] * SECOND_US).astype(
        np.int64
    )
    step = duration + gap
    before = np.cumsum(step) - step  # sum of the steps of all earlier runs
    burst_first = np.cumsum(runs) - runs
    offset = before - before[burst_first][burst] if len(burst) else before
    rel = first[burst] + offset
    keep = rel < span_us
    key = run_slot[keep] * stride + MARGIN + rel[keep]
    duration = duration[keep]
    order = np.argsort(key, kind="stable")
    return key[order], duration[order]


def _processes(
    rng: np.random.Generator,
    slot_kind: list[AgentKind],
    trig_key: I64,
    start_us: int,
    span_us: int,
    stride: int,
) -> tuple[I64, I64]:
    """(slot, start rel) of every process: one per run for ``restarts`` kinds, plus one
    already running at the start; one per daily restart for daemons."""
    slots: list[I64] = []
    starts: list[I64] = []
    restarts = np.asarray([k.restarts for k in slot_kind], dtype=bool)
    trig_slot = (trig_key // stride).astype(np.int64)
    run_per_process = restarts[trig_slot]
    slots.append(trig_slot[run_per_process])
    starts.append(trig_key[run_per_process] - trig_slot[run_per_process] * stride - MARGIN)
    restart_slots = np.flatnonzero(restarts).astype(np.int64)
    slots.append(restart_slots)
    starts.append(-rng.integers(SECOND_US, 600 * SECOND_US, size=len(restart_slots)))
    for slot in np.flatnonzero(~restarts):
        jitter = int(rng.integers(0, DAEMON_RESTART_JITTER_S)) * SECOND_US
        # The last daily restart before the start (every slot needs a process at tick 0),
        # then every day until the end.
        anchor = DAEMON_RESTART_HOUR * HOUR_US + jitter
        first = (start_us - 1 - anchor) // DAY_US * DAY_US + anchor
        absolute = np.arange(first, start_us + span_us, DAY_US, dtype=np.int64)
        slots.append(np.full(len(absolute), slot, dtype=np.int64))
        starts.append(absolute - start_us)
    return np.concatenate(slots), np.concatenate(starts).astype(np.int64)
