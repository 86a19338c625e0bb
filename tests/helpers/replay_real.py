"""The replay against real enforced runs: agents with a fixed amount of work, run twice.

Shared by ``tests/test_replay_real.py`` (a small case) and ``bench/replay_vs_real.py`` (the full
comparison). One :class:`Experiment` is a temporary folder and two projects with unique names.

1. **Unconstrained** (:meth:`Experiment.record`): a real recorder (``devloop workspace collect
   --interval 1s``, no enforcement) and the schedule's runs, each launched by ``devloop run
   --no-enforce`` at its offset; ``demand_from_store`` reads them back.
2. **Enforced** (:meth:`Experiment.enforce`): the same schedule, same offsets and same position
   on the tick grid, beside ``devloop workspace collect --interval 1s --enforce`` with project
   CPU limits; each run's measured duration is ``ended - started`` of its ``runs`` row (queue
   wait not included, as the replay counts it apart).
3. :func:`compare`: the unconstrained demand replayed under the enforced configuration, run by
   run against what was measured.

The agents are ``replay_agent.py`` (a CPU-bound burner and a mixed agent, bursts of work between
sleeps, some in a forked child), so a limit stretches their duration. As under ``devloop
watch``, one agent's runs never overlap: a run whose agent is still busy starts when the run
before ends (the replay does the same).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devloop.config.load import load_workspace
from devloop.store import connect
from devloop.store import runs as journal
from devloop.tune.replay import Demand, demand_from_store, replay
from tests.helpers.procs import wait_until

AGENT = Path(__file__).with_name("replay_agent.py")
DEADLINE = 90.0  # generous: the machine is shared and may be loaded
INTERVAL = 1.0  # the recorders' tick, seconds (checkInterval too)
# Where in a tick the schedule starts (the same in every phase): late, so that a run triggered
# at a whole offset runs free only briefly before the first check sees it (what it does there
# depends on the machine's load at that moment, not on the limits).
PHASE = 0.75


@dataclass(frozen=True)
class Trigger:
    """One run of the schedule: ``offset`` seconds after the phase starts, ``kind`` ``burn``
    (CPU-bound) or ``mixed`` (bursts and sleeps), ``fork``: every second burst in a child."""

    index: int
    offset: float
    project: int  # 0 or 1: which of the experiment's two projects
    agent: str
    kind: str
    fork: bool = False


@dataclass(frozen=True)
class Work:
    """How much work the agents do: a burner's CPU seconds; a mixed agent's bursts, each
    ``burst`` CPU seconds followed by ``sleep`` seconds asleep (none after the last)."""

    burn: float = 3.0
    bursts: int = 5
    burst: float = 0.6
    sleep: float = 0.4


@dataclass(frozen=True)
class Measured:
    """A run as the ``runs`` table has it (epoch seconds)."""

    index: int
    run_id: str
    queued: float
    started: float
    ended: float
    paused_s: float
    throttled_s: float
    cpu_s: float

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def waited(self) -> float:
        return self.started - self.queued


@dataclass(frozen=True)
class Compared:
    """One run: measured under enforcement against the replay of its unconstrained recording.
    ``error`` is ``(replayed - measured) / measured`` (signed)."""

    trigger: Trigger
    recorded: float
    measured: Measured
    replayed: float
    replayed_paused: float
    replayed_throttled: float
    replayed_waited: float
    outcome: str

    @property
    def error(self) -> float:
        return (self.replayed - self.measured.duration) / self.measured.duration


@dataclass
class Phase:
    """What a phase left: its measured runs by index, the machine's load average before and
    after, and its wall time."""

    runs: dict[int, Measured]
    load: tuple[float, float]
    wall: float
    folder: Path
    failures: list[str] = field(default_factory=list)


def calibrate(repeats: int = 3) -> float:
    """The agents' loop speed, iterations per CPU second (the best of ``repeats``: load only
    slows it)."""
    found = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, str(AGENT), "calibrate"], capture_output=True,
                             text=True, check=True, timeout=DEADLINE)  # fmt: skip
        found.append(float(out.stdout))
    return max(found)


def command(trigger: Trigger, work: Work, rate: float) -> list[str]:
    """The agent's argv for ``trigger`` (``run=K`` names it in the runs table)."""
    tag = f"run={trigger.index}"
    if trigger.kind == "burn":
        return [sys.executable, str(AGENT), "burn", str(round(work.burn * rate)), tag]
    return [sys.executable, str(AGENT), "mixed", str(round(work.burst * rate)), str(work.bursts),
            str(work.sleep), "1" if trigger.fork else "0", tag]  # fmt: skip


def quantile(values: Sequence[float], q: float) -> float:
    """Linear between the closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Experiment:
    """Two projects with unique names in a temporary folder; one workspace folder per phase.
    Every process it starts is gone when :meth:`close` returns."""

    def __init__(self, work: Work, rate: float, root: Path | None = None) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.projects = (f"rr-a-{suffix}", f"rr-b-{suffix}")
        self.work = work
        self.rate = rate
        self._own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="replay-real-"))
        for name in ("a", "b"):
            (self.root / name).mkdir(exist_ok=True)
        self._phases = 0
        self._collector: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        self._stop_collector()
        self.kill_agents()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- configurations ---------------------------------------------------------------------

    def config(self, action: str | None, limits: tuple[float, float] | None) -> dict[str, Any]:
        """workspace.json: the whole machine as the pool, project CPU ``limits`` (percent of
        the machine; None: half each, and nothing enforces them) and ``action``; overflow
        queueing, so a run of a project over its limit waits instead of being refused."""
        cpu = limits if limits is not None else (50.0, 50.0)
        return {
            "workspace_name": "replay-real",
            "projects": [
                {"name": self.projects[0], "path": "a", "priority": 1},
                {"name": self.projects[1], "path": "b", "priority": 2},
            ],
            "global": {"resourceLimits": {
                "maxCpu": 100, "maxMemory": "64GB", "checkInterval": INTERVAL,
                "enforcementAction": action or "warn", "resumeThreshold": 0.8,
                "overflow": {"enabled": True, "queueing": True, "maxQueueSize": 50,
                             "maxWaitTime": 900},
            }},
            "resource_sharing": {"strategy": "custom", "perProjectLimits": {
                self.projects[0]: {"maxCpu": cpu[0], "maxMemory": "16GB"},
                self.projects[1]: {"maxCpu": cpu[1], "maxMemory": "16GB"},
            }},
        }  # fmt: skip

    def _folder(self, data: dict[str, Any]) -> Path:
        self._phases += 1
        folder = self.root / f"phase-{self._phases}" / ".devloop-workspace"
        folder.mkdir(parents=True)
        for name in ("a", "b"):
            (folder.parent / name).mkdir()
        (folder / "workspace.json").write_text(json.dumps(data, indent=2))
        return folder

    # --- the phases -------------------------------------------------------------------------

    def record(self, schedule: Sequence[Trigger]) -> tuple[Phase, Demand]:
        """Phase 1: the schedule unconstrained, and its demand as the store has it."""
        phase = self._phase(self._folder(self.config(None, None)), schedule, enforce=False)
        return phase, demand_from_store(phase.folder)

    def enforce(
        self, schedule: Sequence[Trigger], action: str, limits: tuple[float, float]
    ) -> Phase:
        """Phase 2: the schedule under ``action`` at project CPU ``limits`` (% of machine)."""
        return self._phase(self._folder(self.config(action, limits)), schedule, enforce=True)

    def _phase(self, folder: Path, schedule: Sequence[Trigger], *, enforce: bool) -> Phase:
        load = os.getloadavg()[0]
        began = time.monotonic()
        errors = folder / "collector.err"
        with errors.open("wb") as err:
            self._collector = subprocess.Popen(
                [sys.executable, "-m", "devloop", "workspace", "collect", "--workspace-dir",
                 str(folder), "--interval", f"{INTERVAL:g}s", *(["--enforce"] if enforce else [])],
                stdout=subprocess.DEVNULL, stderr=err, env=_clean_env(),
            )  # fmt: skip
        failures: list[str] = []
        try:
            wait_until(lambda: _fresh_admission(folder), DEADLINE)
            failures = self._launch(folder, schedule, enforce=enforce)
            wait_until(lambda: not os.listdir(folder / "metrics" / journal.RUNS_DIR), DEADLINE)
        finally:
            self._stop_collector()
            self.kill_agents()
        runs = _measured(folder)
        missing = sorted({t.index for t in schedule} - set(runs))
        if missing:
            failures.append(f"runs without a row: {missing}")
        return Phase(runs, (load, os.getloadavg()[0]), time.monotonic() - began, folder, failures)

    def _launch(self, folder: Path, schedule: Sequence[Trigger], *, enforce: bool) -> list[str]:
        """Each agent's runs in order, in a thread of its own: a run starts at its offset, or
        when its agent's run before it ends. Returns what went wrong."""
        start = math.ceil(time.time() / INTERVAL + 1) * INTERVAL + PHASE * INTERVAL
        agents: dict[tuple[int, str], list[Trigger]] = {}
        for trigger in sorted(schedule, key=lambda t: t.offset):
            agents.setdefault((trigger.project, trigger.agent), []).append(trigger)
        failures: list[str] = []
        longest = DEADLINE + 60 * self.work.burn

        def run_agent(triggers: list[Trigger]) -> None:
            for trigger in triggers:
                time.sleep(max(0.0, start + trigger.offset - time.time()))  # the schedule
                argv = [sys.executable, "-m", "devloop", "run", "--workspace-dir", str(folder),
                        "-p", self.projects[trigger.project], "-a", trigger.agent,
                        *([] if enforce else ["--no-enforce"]), "--",
                        *command(trigger, self.work, self.rate)]  # fmt: skip
                try:
                    done = subprocess.run(argv, capture_output=True, text=True, env=_clean_env(),
                                          timeout=longest)  # fmt: skip
                except subprocess.TimeoutExpired:
                    failures.append(f"run {trigger.index} took over {longest:.0f}s")
                    return
                if done.returncode != 0:
                    failures.append(f"run {trigger.index}: exit {done.returncode}: "
                                    f"{done.stderr.strip()}")  # fmt: skip

        threads = [threading.Thread(target=run_agent, args=(t,)) for t in agents.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return failures

    def _stop_collector(self) -> None:
        collector, self._collector = self._collector, None
        if collector is None:
            return
        if collector.poll() is None:
            collector.send_signal(signal.SIGINT)
        try:
            collector.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()

    def kill_agents(self) -> None:
        """SIGKILL every process tagged with one of this experiment's projects (a launcher that
        timed out leaves its agent behind)."""
        tags = {f"DEVLOOP_PROJECT={name}".encode() for name in self.projects}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = set(f.read().split(b"\0"))
            except OSError:
                continue
            if env & tags:
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass


def _clean_env() -> dict[str, str]:
    keep = ("DEVLOOP_TEST_SESSION",)
    return {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_") or k in keep}


def _fresh_admission(folder: Path) -> bool:
    try:
        text = (folder / ".admission").read_text()
    except OSError:
        return False
    entries = dict(line.rsplit(" ", 1) for line in text.splitlines()[1:])
    return abs(time.time() - float(entries.get("ts", "0"))) < 3


def _measured(folder: Path) -> dict[int, Measured]:
    """The phase's runs by schedule index (the ``run=K`` of their command)."""
    rows = (
        connect(folder / "metrics")
        .execute(
            "SELECT run_id, command, epoch_us(queued) / 1e6, epoch_us(started) / 1e6, "
            "epoch_us(ended) / 1e6, coalesce(paused_seconds, 0), coalesce(throttled_seconds, 0), "
            "coalesce(cpu_user_seconds + cpu_system_seconds, 0) FROM runs WHERE status = 'complete'"
        )
        .fetchall()
    )
    found = {}
    for run_id, argv, queued, started, ended, paused, throttled, cpu in rows:
        index = int(argv.rsplit("run=", 1)[1])
        found[index] = Measured(index, run_id, queued, started, ended, paused, throttled, cpu)
    return found


def level_limits(demand: Demand, recorded: Phase, schedule: Sequence[Trigger],
                 level: float) -> tuple[float, float]:  # fmt: skip
    """Project CPU limits (percent of the machine) holding each project at ``level`` of what
    it used while it ran unconstrained: the median over its runs' ticks of their cores."""
    project_of = {recorded.runs[t.index].run_id: t.project for t in schedule if
                  t.index in recorded.runs}  # fmt: skip
    ticks: tuple[list[float], list[float]] = ([], [])
    for run in demand.runs:
        if run.run_id in project_of:
            ticks[project_of[run.run_id]].extend(c for c in run.cores if c > 0.1)
    cores = demand.cores or os.cpu_count() or 1
    found = [round(level * quantile(t, 0.5) * 100 / cores, 1) if t else 50.0 for t in ticks]
    return found[0], found[1]


def compare(
    experiment: Experiment,
    schedule: Sequence[Trigger],
    demand: Demand,
    recorded: Phase,
    enforced: Phase,
) -> list[Compared]:
    """The recorded demand replayed under the enforced phase's configuration, run by run
    against the enforced phase's measured durations (runs missing from either are left out)."""
    workspace = load_workspace(enforced.folder)
    cores = demand.cores or os.cpu_count() or 1
    result = replay(demand.runs, workspace, cores=cores, interval=demand.interval)
    by_id = {run.run_id: run for run in result.runs}
    compared = []
    for trigger in schedule:
        before, after = recorded.runs.get(trigger.index), enforced.runs.get(trigger.index)
        if before is None or after is None or before.run_id not in by_id:
            continue
        replayed = by_id[before.run_id]
        compared.append(Compared(trigger, replayed.recorded_duration, after,
                                 replayed.replayed_duration, replayed.paused_s,
                                 replayed.throttled_s, replayed.waited_s,
                                 replayed.outcome))  # fmt: skip
    return compared
