"""Deterministic, realistic agent-usage histories, written through the store.

``simulate(out)`` (CLI: ``devloop workspace simulate --out DIR``) writes a workspace folder::

    DIR/workspace.json                        projects proj-1..proj-N, weighted, 60% / 2GB pool
    DIR/projects/proj-N/.devloop/agents.json  agents with per-agent limits
    DIR/metrics/<table>/date=.../hour=H/      samples, system, processes, limits, events, runs

It loads with :func:`devloop.config.load_workspace` and reads with
:func:`devloop.store.connect`. The same arguments and seed give the same rows (only
``processes.cwd`` names ``DIR``); chunks are generated and written one UTC hour at a time, so
memory stays bounded whatever the span.

The model
---------
* **Slots.** ``projects x agents_per_project x processes_per_agent`` processes are alive at
  every tick: when a process ends the next one of its slot starts, so ``samples`` has exactly
  ``ticks x slots`` rows and ``system`` ``ticks`` rows, with ``ticks = ceil(span / interval)``
  and ticks at ``start + k * interval``. A process is first sampled at the first tick after
  it starts; ``processes`` has one row per sampled process (``ts`` = that tick).
* **Agents.** Per project, in order: ``linter`` (ruff), ``formatter`` (ruff format),
  ``test-runner`` (pytest), ``type-checker`` (dmypy), then watchers ``agent-5``, ``agent-6``...
  Numbers per kind are in :data:`devloop.simulate.model.KINDS`.
* **Triggers and runs.** In each minute a slot gets a trigger with probability
  ``triggers_per_minute x activity x busyness / processes_per_agent``, where ``busyness`` is
  1.5 x the project's share of the weights (weights cycle 3, 2, 1), so a project's load follows
  its share of the pool and busy hours peak at roughly a third to three quarters of its limit;
  parallel processes of an agent share its work. A trigger starts ``burst_runs`` runs back to
  back (the test-runner: 2-6 runs of 10-75 s, 3 s apart; the others: one run of a few
  seconds). While running a process uses ``run_cores`` (x U(0.8, 1.2)) and more memory, file
  handles, threads and I/O; otherwise it idles at ``idle_cores`` (lognormal noise). State is
  "running" with probability min(1, cores), else "sleeping". At any tick the processes
  together use at most 95% of the host's cores (scaled down when they would use more).
* **Processes come and go.** linter, formatter and test-runner start a new process (new pid,
  new start_time) for every run; it idles after the run until the next run replaces it.
  type-checker and watchers are daemons restarted daily at 03:00 UTC plus up to 15 minutes.
  Pids grow in start order with gaps of 1-11 and never repeat; ``ppid`` is the project's
  ``devloop run`` process (not itself sampled).
* **Daily cycle.** ``activity`` by UTC hour: 1.0 from 09:00 to 18:00, shoulders 07-09 and
  18-22, 0.03 at night; weekends x 0.2. The default start, 2026-01-05, is a Monday.
* **Counters.** CPU time is counted in 1/100 s ticks: ``cpu_seconds`` is cumulative per
  process and rises by exactly ``cpu_cores x interval`` per sample (by CPU used since the start
  at a process's first sample). ``io_*_bytes`` are cumulative; rss is whole pages.
* **Host.** ``system.cpu_busy_cores`` = the agents' cores plus a background of
  0.05 + 0.25 x activity cores, at most ``cores``; memory 4 GiB per core (at least 8 GiB), used =
  the agents' rss plus 3-4 GiB of background.
* **Runs.** Every triggered run is a ``runs`` row as ``devloop watch`` would leave it (trigger
  ``watch``, exit 0, not queued), with what the ticks saw of it and the seconds the over-limit
  episode held it paused; see :mod:`devloop.simulate.runs`. ``processes.run_id`` stays null (a
  simulated process outlives its run).
* **Limits.** ``limits`` holds :func:`devloop.config.allocation.allocate` of the written
  workspace at the start: one row per project (agent ``""``) and per agent, reason "start".

Planted anomalies (also returned as :class:`Anomaly` records in the summary)
----------------------------------------------------------------------------
* ``memory-leak``: proj-1 / type-checker (its last agent if it has fewer than four): rss grows
  12 MiB per hour of each process's life, all span long (a sawtooth: daily restarts).
* ``fd-growth``: proj-3 (the last project if fewer) / its last agent (the type-checker with
  four agents): open file handles grow by 25 per hour of each process's life.
* ``cpu-over-limit``: proj-2 (proj-1 if alone) from 14:00 to 15:00 UTC on the second day (or,
  for a span too short for that, the middle quarter of the span, at most an hour, starting at
  its midpoint): its processes use 1.3x the project's CPU limit between them, spread evenly
  (x U(0.9, 1.1) each). The enforcer warns one check interval (10 s) in, then pauses the
  project 20 s every 5 min from one minute in (state "stopped", no CPU), with ``pause`` and
  ``resume`` events naming the pids; the pauses are too short to bring it under its limit.
* ``events`` also holds "start" at the first tick and "stop" at the last.

Calibrated from a recording
---------------------------
``simulate(out, calibration=calibration_from(STORE))`` (CLI: ``--calibrate-from STORE``)
replaces the model above by a real recording: the projects, agents, runs (duration, CPU,
per-tick cores, peak memory) and the gaps between triggers are the recorded ones, replayed by
blocks; nothing is planted. See :mod:`devloop.simulate.calibrate` (what is kept, the JSON form)
and :mod:`devloop.simulate.calibrated` (how it is replayed).
"""

from devloop.simulate.generator import (
    DEFAULT_START,
    Anomaly,
    ProgressCallback,
    SimulationSummary,
    simulate,
)

__all__ = ["DEFAULT_START", "Anomaly", "ProgressCallback", "SimulationSummary", "simulate"]
