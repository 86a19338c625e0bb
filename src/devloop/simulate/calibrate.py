"""A calibration: what a real recording says about its agents' runs, for the simulator to replay.

:func:`calibrate` reads a store's ``runs`` table (and, for the per-tick CPU of each run, its
``samples`` and ``processes``) and keeps, per recorded project and agent, every run's

* ``seconds``: how long it ran, less the seconds the enforcer held it paused (its demand);
* ``cpu_seconds``: user + system CPU the kernel counted for it;
* ``peak_rss_bytes``: its peak memory (``max_rss_bytes``);
* ``cores``: the cores it used at each collector tick, summed over its processes (ticks where
  the enforcer had it stopped left out; at most :data:`MAX_SHAPE` points, a longer series
  averaged into that many); empty when no tick saw it (a run shorter than a tick);
* ``trigger`` and ``offset``: which trigger of its project queued it, and how many seconds after
  the trigger's first run it was queued.

A project's *triggers* are its runs' queued times grouped: a run queued within
:data:`TRIGGER_WINDOW` seconds of the trigger's first run belongs to it (one save starts the
linter, the formatter and the tests together). They are kept in order, as seconds since the
project's first trigger, so the gaps between them keep the bursts of editing they came in.

The JSON form (:func:`save_calibration`, :func:`load_calibration`) is small, so it can be
committed next to the code that uses it::

    {
      "format": "devloop-simulate-calibration",
      "version": 1,
      "source": {"store": "sample_data/.devloop-watch", "first": "2026-12-03T20:27:07Z",
                 "last": "2026-12-03T21:49:33Z", "interval": 1.0, "runs": 140},
      "trigger_window": 1.0,
      "projects": [
        {"name": "unitconv",
         "triggers": [0.0, 17.3, 49.1],
         "agents": [
           {"name": "test-runner", "process": "pytest", "command": "python3 -m pytest -q",
            "runs": {"trigger": [0, 1, 2], "offset": [0.013, 0.005, 0.01],
                     "seconds": [7.5, 7.1, 0.6], "cpu_seconds": [0.7, 0.5, 0.6],
                     "peak_rss_bytes": [42340352, 42405888, 42397696],
                     "cores": [[0.5, 0.1], [0.2], []]}}]}]
    }

Times are seconds (rounded to the millisecond), cores rounded to a thousandth, ``source.first``
and ``last`` the first and last trigger (UTC). Every list of ``runs`` has one entry per run.
A reader refuses another ``format`` or a newer ``version``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any, Final

from devloop._atomic import atomic_write_text
from devloop.errors import DevloopError, UsageError

FORMAT: Final = "devloop-simulate-calibration"
VERSION: Final = 1
#: Runs of a project queued within this many seconds of a trigger's first run belong to it.
TRIGGER_WINDOW: Final = 1.0
#: Points kept of a run's per-tick cores (a longer series is averaged into this many).
MAX_SHAPE: Final = 60


@dataclass(frozen=True)
class AgentRuns:
    """The recorded runs of one agent of a project, one entry per run in every tuple (see the
    module docstring)."""

    name: str
    process: str  # the process name its runs showed (ruff, pytest, ...)
    command: str
    trigger: tuple[int, ...]
    offset: tuple[float, ...]
    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]
    peak_rss_bytes: tuple[int, ...]
    cores: tuple[tuple[float, ...], ...]

    @property
    def runs(self) -> int:
        return len(self.seconds)

    def mean_cores(self, run: int) -> float:
        """The cores run ``run`` used on average while it ran (its ticks' mean when they saw
        it; else its CPU over its duration)."""
        if self.cores[run]:
            return sum(self.cores[run]) / len(self.cores[run])
        return self.cpu_seconds[run] / self.seconds[run] if self.seconds[run] > 0 else 0.0


@dataclass(frozen=True)
class ProjectCalibration:
    """One recorded project: its triggers (seconds since its first, in order) and agents."""

    name: str
    triggers: tuple[float, ...]
    agents: tuple[AgentRuns, ...]

    @property
    def gaps(self) -> tuple[float, ...]:
        """Seconds between consecutive triggers."""
        return tuple(b - a for a, b in zip(self.triggers, self.triggers[1:], strict=False))


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` read (see the module docstring)."""

    source: str
    first: datetime
    last: datetime
    interval: float
    projects: tuple[ProjectCalibration, ...]
    trigger_window: float = TRIGGER_WINDOW

    @property
    def runs(self) -> int:
        return sum(agent.runs for project in self.projects for agent in project.agents)

    def summary(self) -> list[dict[str, Any]]:
        """Per project and agent: runs, median and p90 duration, mean cores, median peak
        memory; and per project the triggers and their median and mean gap (seconds)."""
        rows: list[dict[str, Any]] = []
        for project in self.projects:
            gaps = project.gaps
            for agent in project.agents:
                rows.append({
                    "project": project.name,
                    "agent": agent.name,
                    "runs": agent.runs,
                    "median_seconds": median(agent.seconds),
                    "p90_seconds": _quantile(agent.seconds, 0.9),
                    "mean_cores": sum(agent.mean_cores(i) for i in range(agent.runs))
                    / agent.runs,
                    "median_peak_rss_bytes": int(median(agent.peak_rss_bytes)),
                    "triggers": len(project.triggers),
                    "median_gap_seconds": median(gaps),
                    "mean_gap_seconds": sum(gaps) / len(gaps),
                })  # fmt: skip
        return rows


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


# --- reading a store -------------------------------------------------------------------------


def metrics_folder(store: Path) -> Path:
    """The metrics folder of ``store``: a workspace folder's ``metrics``, or ``store`` itself."""
    return store / "metrics" if (store / "metrics").is_dir() else store


def calibrate(store: Path | str) -> Calibration:
    """The calibration of the recording in ``store`` (a workspace folder or its ``metrics``
    folder). Raises UsageError when it has no finished runs, or no project with two
    triggers (the gaps need two)."""
    from devloop.store.db import Database

    store = Path(store)
    if not store.is_dir():
        raise UsageError(f"{store} is not a folder: calibration reads a store's runs")
    try:
        with Database.open(metrics_folder(store)) as db:
            runs = db.rows(_RUNS_SQL)
            interval = _interval(db)
            series = _series(db, interval) if runs else {}
            names = dict(db.rows(_PROCESS_NAMES_SQL)) if runs else {}
    except DevloopError as exc:
        raise UsageError(f"cannot read the runs of {store}: {exc}") from exc
    if not runs:
        raise UsageError(f"no runs recorded in {store}: calibration needs runs")

    by_project: dict[str, list[tuple[Any, ...]]] = {}
    for row in runs:
        by_project.setdefault(row[1], []).append(row)
    projects = []
    for name in sorted(by_project):
        project = _project(name, by_project[name], series, names)
        if project is not None:
            projects.append(project)
    if not projects:
        raise UsageError(
            f"no project in {store} has two triggers: calibration needs the gaps between them"
        )
    queued = [row[4] for row in runs]
    return Calibration(
        source=str(store),
        first=_utc(min(queued)),
        last=_utc(max(queued)),
        interval=interval,
        projects=tuple(projects),
    )


#: Finished runs in queued order: id, project, agent, command, queued (µs), duration (s, pauses
#: left out), CPU seconds, peak memory.
_RUNS_SQL: Final = """
    SELECT run_id, project, agent, coalesce(command, ''),
           epoch_us(coalesce(queued, started)),
           greatest((epoch_us(ended) - epoch_us(started)) / 1e6 - coalesce(paused_seconds, 0), 0),
           coalesce(cpu_user_seconds, 0) + coalesce(cpu_system_seconds, 0),
           coalesce(max_rss_bytes, peak_rss_bytes, 0)
    FROM runs
    WHERE started IS NOT NULL AND ended IS NOT NULL AND project IS NOT NULL
      AND agent IS NOT NULL
    ORDER BY 5, 1
"""

#: Each run's processes (those tied to it by ``run_id``, and its root process), their samples
#: from its start to a tick after its end, summed per tick; ticks where all were stopped and
#: used nothing (held by the enforcer) left out.
_SERIES_SQL: Final = """
    WITH r AS (
        SELECT run_id, host, pid, start_time, started, ended FROM runs
        WHERE started IS NOT NULL AND ended IS NOT NULL
    ),
    p AS (
        SELECT DISTINCT p.run_id, p.host, p.pid, p.start_time
        FROM processes p JOIN r ON p.run_id = r.run_id
        UNION
        SELECT run_id, host, pid, start_time FROM r WHERE pid IS NOT NULL
    ),
    t AS (
        SELECT p.run_id, s.ts, sum(s.cpu_cores) AS cores,
               bool_and(coalesce(s.state = 'stopped', false)) AS stopped
        FROM samples s
        JOIN p ON s.host = p.host AND s.pid = p.pid AND s.start_time = p.start_time
        JOIN r ON r.run_id = p.run_id
        WHERE s.ts > r.started AND s.ts <= r.ended + to_microseconds(?::BIGINT)
          AND s.date >= (SELECT min(started)::DATE FROM r)
          AND s.date <= (SELECT max(ended)::DATE FROM r) + 1
        GROUP BY p.run_id, s.ts
    )
    SELECT run_id, list(coalesce(cores, 0) ORDER BY ts) FROM t
    WHERE NOT (stopped AND coalesce(cores, 0) = 0)
    GROUP BY run_id
"""

#: The commonest process name of each run's processes, per (project, agent).
_PROCESS_NAMES_SQL: Final = """
    SELECT key, mode(name) FROM (
        SELECT r.project || '/' || r.agent AS key, p.name
        FROM processes p JOIN runs r ON p.run_id = r.run_id
        WHERE p.name IS NOT NULL
    ) GROUP BY key
"""


def _interval(db: Any) -> float:
    """The collector's tick interval: the median step between ``system`` rows (1 s if none)."""
    row = db.one(
        """
        SELECT median(step) FROM (
            SELECT (epoch_us(ts) - epoch_us(lag(ts) OVER (PARTITION BY host ORDER BY ts)))
                   / 1e6 AS step
            FROM system
        ) WHERE step > 0
        """
    )
    value = row[0] if row else None
    return round(float(value), 3) if value else 1.0


def _series(db: Any, interval: float) -> dict[str, list[float]]:
    micros = round(interval * 1_000_000)
    return {run_id: [float(c) for c in cores] for run_id, cores in db.rows(_SERIES_SQL, [micros])}


def _project(
    name: str,
    rows: list[tuple[Any, ...]],
    series: dict[str, list[float]],
    names: dict[str, str],
) -> ProjectCalibration | None:
    """A project's triggers and agents from its runs (in queued order); None with fewer than
    two triggers."""
    window = round(TRIGGER_WINDOW * 1_000_000)
    trigger_us: list[int] = []
    trigger_of: list[int] = []
    for row in rows:
        if not trigger_us or row[4] - trigger_us[-1] > window:
            trigger_us.append(row[4])
        trigger_of.append(len(trigger_us) - 1)
    if len(trigger_us) < 2:
        return None
    agents: dict[str, list[tuple[tuple[Any, ...], int]]] = {}
    for row, trigger in zip(rows, trigger_of, strict=True):
        agents.setdefault(row[2], []).append((row, trigger))
    built = []
    for agent in sorted(agents):
        runs = agents[agent]
        command = Counter(row[3] for row, _ in runs).most_common(1)[0][0]
        built.append(
            AgentRuns(
                name=agent,
                process=names.get(f"{name}/{agent}") or _process_name(command, agent),
                command=command,
                trigger=tuple(trigger for _, trigger in runs),
                offset=tuple(_ms((row[4] - trigger_us[t]) / 1e6) for row, t in runs),
                seconds=tuple(_ms(row[5]) for row, _ in runs),
                cpu_seconds=tuple(_ms(row[6]) for row, _ in runs),
                peak_rss_bytes=tuple(int(row[7]) for row, _ in runs),
                cores=tuple(_shape(series.get(row[0], [])) for row, _ in runs),
            )
        )
    first = trigger_us[0]
    return ProjectCalibration(
        name=name,
        triggers=tuple(_ms((t - first) / 1e6) for t in trigger_us),
        agents=tuple(built),
    )


def _process_name(command: str, agent: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return Path(words[0]).name if words else agent


def _ms(value: float) -> float:
    return round(float(value), 3)


def _shape(cores: list[float]) -> tuple[float, ...]:
    """At most MAX_SHAPE points: a longer series averaged over that many equal stretches."""
    if len(cores) > MAX_SHAPE:
        bounds = [round(i * len(cores) / MAX_SHAPE) for i in range(MAX_SHAPE + 1)]
        cores = [sum(cores[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    return tuple(round(max(c, 0.0), 3) for c in cores)


def _utc(micros: int) -> datetime:
    """The moment, to the millisecond (as the JSON keeps it)."""
    return datetime.fromtimestamp(micros // 1000 / 1000, tz=UTC)


# --- the JSON form ---------------------------------------------------------------------------


def to_json(calibration: Calibration) -> dict[str, Any]:
    """The calibration as the JSON object of the module docstring."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": {
            "store": calibration.source,
            "first": _iso(calibration.first),
            "last": _iso(calibration.last),
            "interval": calibration.interval,
            "runs": calibration.runs,
        },
        "trigger_window": calibration.trigger_window,
        "projects": [
            {
                "name": project.name,
                "triggers": list(project.triggers),
                "agents": [
                    {
                        "name": agent.name,
                        "process": agent.process,
                        "command": agent.command,
                        "runs": {
                            "trigger": list(agent.trigger),
                            "offset": list(agent.offset),
                            "seconds": list(agent.seconds),
                            "cpu_seconds": list(agent.cpu_seconds),
                            "peak_rss_bytes": list(agent.peak_rss_bytes),
                            "cores": [list(c) for c in agent.cores],
                        },
                    }
                    for agent in project.agents
                ],
            }
            for project in calibration.projects
        ],
    }


def dumps(calibration: Calibration) -> str:
    """The JSON text: indented, with every list of numbers on one line."""
    text = json.dumps(to_json(calibration), indent=2)

    def one_line(match: re.Match[str]) -> str:
        return "[" + re.sub(r"\s+", "", match.group(1)).replace(",", ", ") + "]"

    return _NUMBER_LIST.sub(one_line, text) + "\n"


_NUMBER_LIST: Final = re.compile(r"\[([-0-9.eE+,\s]*)\]")


def save_calibration(calibration: Calibration, path: Path | str) -> Path:
    """Write the calibration's JSON to ``path`` (atomically); UsageError when it cannot."""
    path = Path(path)
    try:
        atomic_write_text(path, dumps(calibration))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    return path


def load_calibration(path: Path | str) -> Calibration:
    """The calibration saved in ``path``; UsageError naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from exc
    try:
        return from_json(data, str(path))
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"{path} is not a valid calibration: {detail}") from exc


def calibration_from(source: Path | str) -> Calibration:
    """A calibration from a store folder (read with :func:`calibrate`) or a saved JSON file."""
    source = Path(source)
    if source.is_file():
        return load_calibration(source)
    if not source.exists():
        raise UsageError(f"{source} does not exist: give a store folder or a calibration JSON")
    return calibrate(source)


def from_json(data: Any, source: str = "") -> Calibration:
    """The calibration of a JSON object; ValueError/KeyError/TypeError when it is not one."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f'"format" is not "{FORMAT}"')
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(f"version {version!r} is not one this devloop reads (1 to {VERSION})")
    meta = data["source"]
    projects = tuple(_project_from_json(p) for p in data["projects"])
    if not projects:
        raise ValueError("it has no projects")
    return Calibration(
        source=str(meta.get("store", source)),
        first=_parse_time(meta["first"]),
        last=_parse_time(meta["last"]),
        interval=_positive(meta["interval"], "source.interval"),
        projects=projects,
        trigger_window=float(data.get("trigger_window", TRIGGER_WINDOW)),
    )


def _project_from_json(data: dict[str, Any]) -> ProjectCalibration:
    name = str(data["name"])
    triggers = tuple(_number(t, f"{name}: triggers") for t in data["triggers"])
    if len(triggers) < 2 or any(b < a for a, b in zip(triggers, triggers[1:], strict=False)):
        raise ValueError(f"{name}: triggers must be at least two, in order")
    if triggers[-1] <= triggers[0]:
        raise ValueError(f"{name}: triggers must not all be at the same time")
    agents = tuple(_agent_from_json(name, a, len(triggers)) for a in data["agents"])
    if not agents:
        raise ValueError(f"{name}: no agents")
    return ProjectCalibration(name=name, triggers=triggers, agents=agents)


def _agent_from_json(project: str, data: dict[str, Any], triggers: int) -> AgentRuns:
    where = f"{project}/{data['name']}"
    runs = data["runs"]
    columns = ("trigger", "offset", "seconds", "cpu_seconds", "peak_rss_bytes", "cores")
    lengths = {len(runs[c]) for c in columns}
    if len(lengths) != 1 or lengths == {0}:
        raise ValueError(f"{where}: the lists of runs must have one entry per run, and runs")
    trigger = tuple(int(t) for t in runs["trigger"])
    if any(not 0 <= t < triggers for t in trigger):
        raise ValueError(f"{where}: a run names a trigger that is not there")
    return AgentRuns(
        name=str(data["name"]),
        process=str(data.get("process") or data["name"]),
        command=str(data.get("command", "")),
        trigger=trigger,
        offset=tuple(_number(v, f"{where}: offset") for v in runs["offset"]),
        seconds=tuple(_number(v, f"{where}: seconds") for v in runs["seconds"]),
        cpu_seconds=tuple(_number(v, f"{where}: cpu_seconds") for v in runs["cpu_seconds"]),
        peak_rss_bytes=tuple(
            int(_number(v, f"{where}: peak_rss_bytes")) for v in runs["peak_rss_bytes"]
        ),
        cores=tuple(
            tuple(_number(c, f"{where}: cores") for c in series) for series in runs["cores"]
        ),
    )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what}: {value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: {value!r} is not a finite number >= 0")
    return float(value)


def _positive(value: Any, what: str) -> float:
    number = _number(value, what)
    if number <= 0:
        raise ValueError(f"{what} must be positive")
    return number


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime:
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
