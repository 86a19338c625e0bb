"""The numbers behind the simulated workspace: agent kinds, the daily cycle, planted anomalies.

Everything here is a constant or a pure function of its arguments, so a reader (or a test) can
recompute what the generator does. Rates are per busy minute; CPU is in cores; sizes in MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from devloop.units import MIB

SECOND_US: Final = 1_000_000
MINUTE_US: Final = 60 * SECOND_US
HOUR_US: Final = 3600 * SECOND_US
DAY_US: Final = 24 * HOUR_US

HOST: Final = "sim-host"
USERNAME: Final = "dev"


@dataclass(frozen=True)
class AgentKind:
    """How one kind of agent behaves.

    A *trigger* (a file save, a commit) starts a *run*: a spell of high CPU, memory, file
    handles and I/O. ``restarts`` kinds start a new process per run (the process then waits
    for the next trigger, which replaces it); the others are daemons that live a day and
    handle every run in place. ``burst_runs`` runs follow each trigger back to back.
    """

    name: str
    process_name: str
    command: tuple[str, ...]
    restarts: bool
    triggers_per_minute: float  # probability of a trigger in a busy minute (weekday 09-18 UTC)
    burst_runs: tuple[int, int]  # runs per trigger, inclusive range
    run_seconds: tuple[float, float]  # duration of one run, uniform range
    run_gap_seconds: float  # pause between the runs of a burst
    idle_cores: float
    run_cores: float
    rss_mib: float
    run_rss_mib: float
    fds: int
    run_fds: int
    threads: int
    run_threads: int
    read_bytes_per_s: float  # while running
    write_bytes_per_s: float
    limits: tuple[tuple[str, object], ...]  # the agent's resourceLimits in agents.json


KINDS: Final[tuple[AgentKind, ...]] = (
    AgentKind(
        "linter", "ruff", ("ruff", "check", "."), restarts=True,
        triggers_per_minute=0.4, burst_runs=(1, 1), run_seconds=(2, 15), run_gap_seconds=0,
        idle_cores=0.001, run_cores=0.7, rss_mib=25, run_rss_mib=40, fds=8, run_fds=30,
        threads=1, run_threads=3, read_bytes_per_s=20e6, write_bytes_per_s=50e3,
        limits=(("maxCpu", 25), ("maxMemory", "256MB")),
    ),
    AgentKind(
        "formatter", "ruff", ("ruff", "format", "--check", "."), restarts=True,
        triggers_per_minute=0.25, burst_runs=(1, 1), run_seconds=(1, 6), run_gap_seconds=0,
        idle_cores=0.001, run_cores=0.5, rss_mib=20, run_rss_mib=25, fds=8, run_fds=20,
        threads=1, run_threads=1, read_bytes_per_s=10e6, write_bytes_per_s=500e3,
        limits=(("maxCpu", 15), ("maxMemory", "128MB")),
    ),
    AgentKind(
        "test-runner", "pytest", ("python3", "-m", "pytest", "-q"), restarts=True,
        triggers_per_minute=0.04, burst_runs=(2, 6), run_seconds=(10, 75), run_gap_seconds=3,
        idle_cores=0.002, run_cores=0.55, rss_mib=60, run_rss_mib=140, fds=12, run_fds=60,
        threads=2, run_threads=4, read_bytes_per_s=5e6, write_bytes_per_s=2e6,
        limits=(("maxCpu", 50), ("maxMemory", "1GB")),
    ),
    AgentKind(
        "type-checker", "dmypy", ("dmypy", "run", "--", "src"), restarts=False,
        triggers_per_minute=0.2, burst_runs=(1, 1), run_seconds=(3, 30), run_gap_seconds=0,
        idle_cores=0.003, run_cores=0.8, rss_mib=150, run_rss_mib=120, fds=24, run_fds=16,
        threads=3, run_threads=1, read_bytes_per_s=8e6, write_bytes_per_s=1e6,
        limits=(("maxMemory", "768MB"), ("maxFileHandles", 1024)),
    ),
)  # fmt: skip

#: Agents past the fourth are generic watchers named ``agent-5``, ``agent-6``, ...
WATCHER: Final = AgentKind(
    "agent", "python3", ("python3", "-m", "devloop_agents.watch"), restarts=False,
    triggers_per_minute=0.15, burst_runs=(1, 1), run_seconds=(1, 10), run_gap_seconds=0,
    idle_cores=0.004, run_cores=0.3, rss_mib=45, run_rss_mib=20, fds=16, run_fds=8,
    threads=4, run_threads=2, read_bytes_per_s=1e6, write_bytes_per_s=200e3, limits=(),
)  # fmt: skip


def agent_kinds(agents_per_project: int) -> list[tuple[str, AgentKind]]:
    """The (name, kind) of each agent of a project, in order."""
    named = [(kind.name, kind) for kind in KINDS[:agents_per_project]]
    named += [(f"agent-{i + 1}", WATCHER) for i in range(len(KINDS), agents_per_project)]
    return named


def agent_command(name: str, kind: AgentKind) -> tuple[str, ...]:
    """The agent's command line (a watcher is told which agent it is)."""
    return kind.command + ((name,) if kind is WATCHER else ())


def project_names(projects: int) -> list[str]:
    """``proj-1``, ``proj-2``, ..."""
    return [f"proj-{i + 1}" for i in range(projects)]


#: Weights and priorities cycle over the projects, so every strategy has something to split.
PROJECT_WEIGHTS: Final = (3.0, 2.0, 1.0)
PROJECT_PRIORITIES: Final = (1, 2, 3, 0)


def project_busyness(index: int, projects: int) -> float:
    """How much work project ``index`` gets: in proportion to its share of the pool (its
    weight), so every project keeps to a similar fraction of its limit however many there are:
    busy hours peak at about half of it (0.75 for proj-1 of the default three projects)."""
    weights = [PROJECT_WEIGHTS[i % len(PROJECT_WEIGHTS)] for i in range(projects)]
    return 1.5 * weights[index] / sum(weights)


#: Activity by UTC hour of day (1.0 = busy), weekdays; weekends are quieter still.
HOURLY_ACTIVITY: Final = (
    0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.05, 0.25, 0.6,  # 00-08
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,  # 09-17
    0.6, 0.35, 0.2, 0.1, 0.05, 0.03,  # 18-23
)  # fmt: skip
WEEKEND_FACTOR: Final = 0.2

#: Daemons (restarts=False) are restarted every day at this UTC hour plus a per-process offset
#: of up to DAEMON_RESTART_JITTER_S, which is what makes a leak a sawtooth rather than a ramp.
DAEMON_RESTART_HOUR: Final = 3
DAEMON_RESTART_JITTER_S: Final = 900

#: Load that is not the agents' (editor, browser, the OS), in cores and bytes.
BACKGROUND_CORES: Final = (0.05, 0.25)  # idle, plus this much times the activity
BACKGROUND_MEMORY: Final = (3 * 1024 * MIB, 1024 * MIB)


def host_memory_bytes(cores: int) -> int:
    """The simulated host's RAM: 4 GiB per core, at least 8 GiB."""
    return max(8 * 1024 * MIB, cores * 4 * 1024 * MIB)


#: A calibrated run's cores per tick are its recorded ones x U(1 - CORES_JITTER, 1 + CORES_JITTER)
#: (see calibrated.py).
CORES_JITTER: Final = 0.1


# --- planted anomalies ---------------------------------------------------------------------

LEAK_BYTES_PER_HOUR: Final = 12 * MIB
FD_GROWTH_PER_HOUR: Final = 25
OVER_LIMIT_RATIO: Final = 1.3
OVER_LIMIT_HOUR_UTC: Final = 14  # on the second day, when the span has one
PAUSE_FIRST_S: Final = 60  # the first pause, seconds into the episode
PAUSE_EVERY_S: Final = 300
PAUSE_SECONDS: Final = 20


def activity(ts_us: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The activity factor (0-1) at each UTC timestamp in microseconds."""
    hours = (ts_us // HOUR_US) % 24
    # 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
    weekday = (ts_us // DAY_US + 3) % 7
    table = np.asarray(HOURLY_ACTIVITY, dtype=np.float64)
    return table[hours] * np.where(weekday >= 5, WEEKEND_FACTOR, 1.0)


def leak_target(agents_per_project: int) -> tuple[int, int]:
    """(project index, agent index) of the leaking agent: proj-1's type-checker daemon (its
    last agent when it has fewer than four)."""
    return 0, min(3, agents_per_project - 1)


def fd_growth_target(projects: int, agents_per_project: int) -> tuple[int, int]:
    """(project index, agent index) of the agent whose file handles grow: the last agent of the
    third project (or the last project when there are fewer)."""
    return min(3, projects) - 1, agents_per_project - 1


def over_limit_project(projects: int) -> int:
    """Index of the project that runs over its CPU limit: proj-2 (proj-1 when alone)."""
    return min(1, projects - 1)


def over_limit_window(start_us: int, span_us: int) -> tuple[int, int]:
    """The over-limit episode as (start, end) offsets from the span's start, in microseconds.

    An hour from 14:00 UTC on the second day when the span reaches that far; otherwise the
    middle of the span, lasting a quarter of it (at most an hour), in whole seconds.
    """
    day_start = start_us - start_us % DAY_US
    begin = day_start + DAY_US + OVER_LIMIT_HOUR_UTC * HOUR_US - start_us
    if begin >= 0 and begin + HOUR_US <= span_us:
        return begin, begin + HOUR_US
    length = min(HOUR_US, span_us // 4) // SECOND_US * SECOND_US
    begin = span_us // 2 // SECOND_US * SECOND_US
    return begin, begin + length


def pause_windows(window: tuple[int, int]) -> list[tuple[int, int]]:
    """The enforcer's pauses inside the episode: PAUSE_SECONDS every PAUSE_EVERY_S, from
    PAUSE_FIRST_S in; each ends before the episode does."""
    begin, end = window
    pauses = []
    at = begin + PAUSE_FIRST_S * SECOND_US
    while at + PAUSE_SECONDS * SECOND_US <= end:
        pauses.append((at, at + PAUSE_SECONDS * SECOND_US))
        at += PAUSE_EVERY_S * SECOND_US
    return pauses
