"""The simulated agents' runs as rows of the ``runs`` table, as the recorder would write them.

Every triggered run of the plan (one entry of ``Plan.trig_key``) is one ``devloop watch`` run:
trigger ``watch``, status ``complete``, exit code 0, queued when started (nothing waits; in a
calibrated simulation a run waits while its process is busy, see calibrated.py). It
ends after its drawn duration, or earlier when the next run of its slot starts (the samples
then show the next one: see ``in_run`` in chunks.py). Its root process is the process of its
slot in force when it starts: the one it started, for kinds that restart per run; the daemon
that handles it in place, otherwise.

What the collector's ticks saw of a run (``ticks``, ``tick_cpu_seconds``, ``peak_cores``,
``peak_rss_bytes``) is summed from the very samples written, chunk by chunk, in
:class:`RunTotals`. The kernel's count (``cpu_user_seconds`` + ``cpu_system_seconds``, a tenth
of it system time) is the ticks' count, or ``run_cores x duration`` for a run no tick saw;
``max_rss_bytes`` is the largest RSS a tick saw (one process per run). A calibrated run has
the recorded run's kernel CPU and peak memory there, seen or not (its ticks show that peak).
Ticks where the enforcer held the run's process stopped (the planted over-limit episode) are
its ``paused_seconds``.

A run still going at the end of the span is not written: its row would be written when it
ends, after the recording.

``processes.run_id`` stays null: a simulated process outlives its run (it idles until the next
run of its slot replaces it; a daemon serves every run of a day), so tying its samples to one
run would count that idle time, or other runs, as the run's.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from devloop.simulate.model import HOST, SECOND_US
from devloop.simulate.plan import MARGIN, Plan
from devloop.store.schema import TABLES

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

#: The share of a run's CPU counted as system time.
SYSTEM_SHARE: Final = 0.1


class RunTotals:
    """What the ticks saw of each run so far (one entry per trigger of the plan)."""

    def __init__(self, plan: Plan) -> None:
        runs = len(plan.trig_key)
        self.ticks = np.zeros(runs, dtype=np.int64)
        self.paused_ticks = np.zeros(runs, dtype=np.int64)
        self.cpu_centiseconds = np.zeros(runs, dtype=np.int64)
        self.peak_cores = np.zeros(runs, dtype=np.float32)
        self.peak_rss_bytes = np.zeros(runs, dtype=np.int64)

    def add(
        self,
        trigger: I64,
        in_run: BOOL,
        paused: BOOL,
        cpu_cs: I64,
        cpu_cores: npt.NDArray[np.float32],
        rss_bytes: I64,
    ) -> None:
        """Add one chunk's ticks (slots x ticks arrays; ``trigger`` is the run in force)."""
        index = trigger[in_run]  # slot-major, in time order: each run's ticks are contiguous
        if not index.size:
            return
        first = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        runs = index[first]
        self.ticks[runs] += np.diff(np.r_[first, index.size])
        self.paused_ticks[runs] += np.add.reduceat(paused[in_run].astype(np.int64), first)
        self.cpu_centiseconds[runs] += np.add.reduceat(cpu_cs[in_run], first)
        peak = np.maximum.reduceat(cpu_cores[in_run], first)
        self.peak_cores[runs] = np.maximum(self.peak_cores[runs], peak)
        rss = np.maximum.reduceat(rss_bytes[in_run], first)
        self.peak_rss_bytes[runs] = np.maximum(self.peak_rss_bytes[runs], rss)


def run_ends(plan: Plan) -> I64:
    """Each run's end as a timeline key: its drawn duration, cut at the next run of its slot."""
    end = plan.trig_key + plan.trig_dur
    if len(end) > 1:
        same_slot = plan.trig_key[1:] // plan.stride == plan.trig_key[:-1] // plan.stride
        end[:-1] = np.where(same_slot, np.minimum(end[:-1], plan.trig_key[1:]), end[:-1])
    return end


def runs_table(plan: Plan, totals: RunTotals) -> pa.Table:
    """One ``runs`` row per run of ``plan`` that ended within the span."""
    key, end_key = plan.trig_key, run_ends(plan)
    slot = key // plan.stride
    origin = slot * plan.stride + MARGIN - plan.start_us  # key - origin = absolute microseconds
    started, ended = key - origin, end_key - origin
    keep = np.flatnonzero(ended <= plan.start_us + plan.span_us)
    slot, started, ended = slot[keep], started[keep], ended[keep]
    process = np.searchsorted(plan.inst_key, key[keep], side="right") - 1
    project = plan.slot_project[slot]

    ticks = totals.ticks[keep]
    seen = ticks > 0
    interval_s = plan.interval_us / SECOND_US
    recorded = plan.recorded
    if recorded is None:
        unseen_cs = np.round(plan.params.run_cores[slot] * (ended - started) / SECOND_US * 100)
        cpu_cs = np.where(seen, totals.cpu_centiseconds[keep], unseen_cs.astype(np.int64))
        unseen_rss = plan.params.rss_bytes[slot] + plan.params.run_rss_bytes[slot]
        max_rss = np.where(seen, totals.peak_rss_bytes[keep], unseen_rss.astype(np.int64))
        queued = started
    else:  # what the recording's kernel counted for the run replayed, seen or not
        cpu_cs = np.round(recorded.cpu_seconds[keep] * 100).astype(np.int64)
        max_rss = recorded.peak_rss_bytes[keep]
        queued = recorded.queued_rel[keep] + plan.start_us
    system_cs = np.round(cpu_cs * SYSTEM_SHARE).astype(np.int64)

    run_ids = [f"{us:013x}-{i:08x}" for us, i in zip(started.tolist(), keep.tolist(), strict=True)]
    schema = TABLES["runs"]
    return pa.table(
        {
            "ts": ended,
            "host": [HOST] * len(keep),
            "run_id": run_ids,
            "project": [plan.projects[i] for i in project],
            "agent": [plan.agents[i] for i in plan.slot_agent[slot]],
            "trigger": ["watch"] * len(keep),
            "status": ["complete"] * len(keep),
            "command": [plan.slot_cmdline[i] for i in slot],
            "cwd": [plan.project_dirs[i] for i in project],
            "pid": plan.inst_pid[process],
            "start_time": plan.inst_start[process],
            "queued": queued,
            "started": started,
            "ended": ended,
            "exit_code": np.zeros(len(keep), dtype=np.int16),
            "signal": pa.nulls(len(keep), pa.int16()),
            "queue_wait_seconds": (started - queued) / SECOND_US,
            "paused_seconds": totals.paused_ticks[keep] * interval_s,
            "throttled_seconds": np.zeros(len(keep)),
            "cpu_user_seconds": (cpu_cs - system_cs) / 100,
            "cpu_system_seconds": system_cs / 100,
            "max_rss_bytes": max_rss,
            "tick_cpu_seconds": pa.array(totals.cpu_centiseconds[keep] / 100, mask=~seen),
            "ticks": ticks.astype(np.int32),
            "peak_cores": pa.array(totals.peak_cores[keep], mask=~seen),
            "peak_rss_bytes": pa.array(totals.peak_rss_bytes[keep], mask=~seen),
            "log_path": pa.nulls(len(keep), pa.string()),
        },
        schema=schema,
    )
