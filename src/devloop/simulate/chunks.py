"""One span of ticks (an hour) of samples, system and processes rows, as Arrow tables.

Every column is computed for all slots x ticks of the chunk at once with numpy; the only Python
loops are over tables and columns. Cumulative counters (cpu_seconds, io bytes) carry over from
chunk to chunk in :class:`Counters`, so chunks must be generated in order; the random noise of a
chunk comes from its own stream (seed, chunk number), so it does not depend on earlier chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from devloop.simulate.model import (
    BACKGROUND_CORES,
    BACKGROUND_MEMORY,
    CORES_JITTER,
    HOST,
    SECOND_US,
    USERNAME,
    activity,
    host_memory_bytes,
)
from devloop.simulate.plan import MARGIN, Plan, RecordedRuns
from devloop.simulate.runs import RunTotals

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_TS = pa.timestamp("us", tz="UTC")
_PAGE = 4096
_STATES = pa.array(["sleeping", "running", "stopped"])
_SLEEPING, _RUNNING, _STOPPED = 0, 1, 2


class Counters:
    """Per-process cumulative counters at the end of the last chunk generated."""

    def __init__(self, plan: Plan) -> None:
        cpu, read, write = plan.initial_counters
        self.cpu_centiseconds = cpu.copy()
        self.read_bytes = read.copy()
        self.write_bytes = write.copy()


@dataclass(frozen=True)
class Chunk:
    """The rows of one chunk, ready for ``write_table``."""

    samples: pa.Table
    system: pa.Table
    processes: pa.Table


def _timestamps(values: I64) -> pa.Array:
    return pa.array(values, type=pa.int64()).cast(_TS)


def _repeat(value: str, count: int) -> pa.Array:
    return pc.take(pa.array([value]), pa.array(np.zeros(count, dtype=np.int32)))


def _cumulative(increments: I64, process: I64, carry: I64) -> I64:
    """Running totals of ``increments`` per process (rows grouped by process, in time order),
    starting from ``carry[process]``; leaves each process's final total in ``carry``."""
    total = np.cumsum(increments)
    first = np.r_[True, process[1:] != process[:-1]]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    within = total - (total[starts] - increments[starts])[group]
    result: I64 = within + carry[process]
    last = np.r_[starts[1:] - 1, len(process) - 1]
    carry[process[last]] = result[last]
    return result


def generate_chunk(
    plan: Plan,
    counters: Counters,
    first: int,
    stop: int,
    seed: int,
    runs: RunTotals | None = None,
) -> Chunk:
    """Ticks ``first..stop-1`` (indexes into the span) of every slot; adds what they saw of
    each run to ``runs`` when given."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, first]))
    p = plan.params
    n_slots, n_ticks = plan.slots, stop - first
    shape = (n_slots, n_ticks)
    keys = plan.tick_keys(first, stop)
    rel = keys - np.arange(n_slots, dtype=np.int64)[:, None] * plan.stride - MARGIN
    ts = plan.start_us + rel
    slot = np.broadcast_to(np.arange(n_slots)[:, None], shape)

    process = np.searchsorted(plan.inst_key, keys, side="left") - 1
    age = ts - plan.inst_start[process]  # > 0: a process is first seen after it starts
    elapsed = np.minimum(age, plan.interval_us)

    if len(plan.trig_key):
        trigger = np.searchsorted(plan.trig_key, keys, side="left") - 1
        valid = trigger >= 0
        trigger_key = plan.trig_key[np.maximum(trigger, 0)]
        in_run = valid & (trigger_key // plan.stride == slot)
        in_run &= keys - trigger_key < plan.trig_dur[np.maximum(trigger, 0)]
    else:  # a span too short for any triggered run
        trigger = np.zeros(shape, dtype=np.int64)
        in_run = np.zeros(shape, dtype=bool)

    cores = p.idle_cores[:, None] * rng.lognormal(0.0, 0.5, shape)
    recorded = plan.recorded
    if recorded is None:
        cores += np.where(in_run, p.run_cores[:, None] * rng.uniform(0.8, 1.2, shape), 0.0)
    else:  # the recorded run's cores at this point of it (see calibrated.py)
        jitter = rng.uniform(1 - CORES_JITTER, 1 + CORES_JITTER, shape)
        cores += np.where(in_run, _recorded_cores(plan, recorded, keys, trigger) * jitter, 0.0)

    # The over-limit episode: the project's processes hold OVER_LIMIT_RATIO x its limit
    # between them, except while the enforcer has them paused.
    begin, end = plan.over_window
    over = (p.over_cores[:, None] > 0) & (rel >= begin) & (rel < end)
    paused = np.zeros(shape, dtype=bool)
    for pause_begin, pause_end in plan.pauses:
        paused |= (rel >= pause_begin) & (rel < pause_end)
    paused &= over
    cores = np.where(over, p.over_cores[:, None] * rng.uniform(0.9, 1.1, shape), cores)
    cores = np.where(paused, 0.0, cores)
    # Processes cannot use more than the machine has (less a sliver for the background).
    total = cores.sum(axis=0)
    cores *= np.minimum(1.0, 0.95 * plan.cores / np.maximum(total, 1e-9))[None, :]
    busy = in_run | over

    # CPU time is counted in clock ticks (1/100 s) as the kernel does; rounding at random
    # keeps the mean of a rate that is a fraction of a tick per interval.
    cpu_cs = np.floor(cores * elapsed / SECOND_US * 100 + rng.random(shape)).astype(np.int64)
    flat_process = process.ravel()
    cpu_total = _cumulative(cpu_cs.ravel(), flat_process, counters.cpu_centiseconds)
    cpu_cores = (cpu_cs / 100 / (plan.interval_us / SECOND_US)).astype(np.float32)

    io_scale = np.where(busy, elapsed / SECOND_US * rng.uniform(0.5, 1.5, shape), 0.0)
    idle_io = (rng.random(shape) < 0.01) * _PAGE
    read = (p.read_bps[:, None] * io_scale).astype(np.int64) + idle_io
    write = (p.write_bps[:, None] * io_scale).astype(np.int64)
    read_total = _cumulative(read.ravel(), flat_process, counters.read_bytes)
    write_total = _cumulative(write.ravel(), flat_process, counters.write_bytes)

    # An idle process's RSS does not move (as on a real machine, where it is what compresses
    # a store): a level fixed per process instance, plus the working set of a run while busy.
    level = 0.97 + 0.06 * ((process * 2654435761) % 1000) / 1000
    rss = p.rss_bytes[:, None] * level
    if recorded is None:
        rss += np.where(busy, p.run_rss_bytes[:, None] * rng.uniform(0.7, 1.3, shape), 0.0)
    else:  # the recorded run's peak, all run long
        peak = recorded.peak_rss_bytes[np.maximum(trigger, 0)] if len(plan.trig_key) else 0
        rss = np.where(in_run, peak, rss)
    rss += p.leak_bytes_per_us[:, None] * age
    rss_bytes = (rss // _PAGE).astype(np.int64) * _PAGE
    fds = p.fds[:, None] + np.where(busy, p.run_fds[:, None], 0)
    fds = fds + (p.fds_per_us[:, None] * age).astype(np.int64)
    fds += np.where(busy, rng.integers(0, 2, shape), 0)  # a run opens and closes files
    threads = p.threads[:, None] + np.where(busy, p.run_threads[:, None], 0)

    state = np.where(rng.random(shape) < np.minimum(cores, 1.0), _RUNNING, _SLEEPING)
    state = np.where(paused, _STOPPED, state).astype(np.int8)
    if runs is not None:
        runs.add(trigger, in_run, paused, cpu_cs, cpu_cores, rss_bytes)

    slot_of_row = pa.array(slot.ravel().astype(np.int32))
    project_of_slot = pa.array([plan.projects[i] for i in plan.slot_project])
    agent_of_slot = pa.array([plan.agents[i] for i in plan.slot_agent])
    ppid_of_slot = plan.runner_pids[plan.slot_project]
    samples = pa.table(
        {
            "ts": _timestamps(ts.ravel()),
            "host": _repeat(HOST, ts.size),
            "project": pc.take(project_of_slot, slot_of_row),
            "agent": pc.take(agent_of_slot, slot_of_row),
            "pid": pa.array(plan.inst_pid[flat_process].astype(np.int32)),
            "start_time": _timestamps(plan.inst_start[flat_process]),
            "ppid": pa.array(np.repeat(ppid_of_slot, n_ticks).astype(np.int32)),
            "name": pc.take(pa.array(plan.slot_name), slot_of_row),
            "cpu_cores": pa.array(cpu_cores.ravel()),
            "cpu_seconds": pa.array(cpu_total / 100),
            "rss_bytes": pa.array(rss_bytes.ravel()),
            "fds": pa.array(fds.ravel().astype(np.int32)),
            "threads": pa.array(threads.ravel().astype(np.int32)),
            "io_read_bytes": pa.array(read_total),
            "io_write_bytes": pa.array(write_total),
            "state": pc.take(_STATES, pa.array(state.ravel())),
        }
    )
    return Chunk(
        samples=samples,
        system=_system(plan, rng, ts[0], cpu_cores, rss_bytes),
        processes=_processes(plan, first, stop),
    )


def _recorded_cores(plan: Plan, recorded: RecordedRuns, keys: I64, trigger: I64) -> F64:
    """For each tick (slots x ticks), the cores of the recorded run in force at its point of
    the run: a run of ``n`` recorded ticks is cut into ``n`` equal stretches of its duration.
    Ticks outside a run get values that the caller ignores."""
    if not len(plan.trig_key):
        return np.zeros(keys.shape)
    run = np.maximum(trigger, 0)
    into = keys - plan.trig_key[run]
    points = recorded.shape_len[run]
    at = into * points // np.maximum(plan.trig_dur[run], 1)
    at = np.clip(at, 0, points - 1)
    values: F64 = recorded.shape_cores[recorded.shape_start[run] + at]
    return values


def _system(
    plan: Plan,
    rng: np.random.Generator,
    ts: I64,
    cpu_cores: npt.NDArray[np.float32],
    rss_bytes: I64,
) -> pa.Table:
    """Host totals per tick: the agents' use plus a background load that follows the day."""
    cores = plan.cores
    level = activity(ts)
    background = BACKGROUND_CORES[0] + BACKGROUND_CORES[1] * level
    background *= rng.uniform(0.7, 1.3, len(ts))
    busy = np.minimum(cpu_cores.sum(axis=0, dtype=np.float64) + background, cores)
    total = host_memory_bytes(cores)
    other = BACKGROUND_MEMORY[0] + BACKGROUND_MEMORY[1] * level * rng.uniform(0.9, 1.1, len(ts))
    used = np.minimum(rss_bytes.sum(axis=0) + other.astype(np.int64), total - 256 * 2**20)
    return pa.table(
        {
            "ts": _timestamps(ts),
            "host": _repeat(HOST, len(ts)),
            "cores": pa.array(np.full(len(ts), cores, dtype=np.int16)),
            "cpu_busy_cores": pa.array(busy.astype(np.float32)),
            "mem_total_bytes": pa.array(np.full(len(ts), total, dtype=np.int64)),
            "mem_used_bytes": pa.array(used.astype(np.int64)),
            "mem_available_bytes": pa.array((total - used).astype(np.int64)),
        }
    )


def _processes(plan: Plan, first: int, stop: int) -> pa.Table:
    """One row per process first seen in ticks ``first..stop-1``."""
    seen = plan.inst_sampled & (plan.inst_first_tick >= first) & (plan.inst_first_tick < stop)
    index = np.flatnonzero(seen)
    slot = plan.inst_slot[index]
    project = plan.slot_project[slot]
    slot_of_row = pa.array(slot.astype(np.int32))
    project_of_row = pa.array(project.astype(np.int32))
    return pa.table(
        {
            "ts": _timestamps(plan.start_us + plan.inst_first_tick[index] * plan.interval_us),
            "host": _repeat(HOST, len(index)),
            "pid": pa.array(plan.inst_pid[index].astype(np.int32)),
            "start_time": _timestamps(plan.inst_start[index]),
            "project": pc.take(pa.array(plan.projects), project_of_row),
            "agent": pc.take(pa.array(plan.agents), pa.array(plan.slot_agent[slot])),
            "ppid": pa.array(plan.runner_pids[project].astype(np.int32)),
            "name": pc.take(pa.array(plan.slot_name), slot_of_row),
            "cmdline": pc.take(pa.array(plan.slot_cmdline), slot_of_row),
            "cwd": pc.take(pa.array(plan.project_dirs), project_of_row),
            "username": _repeat(USERNAME, len(index)),
        }
    )
