"""The Prometheus metrics of a :class:`~devloop.dashboard.snapshot.Snapshot`, built per scrape.

:class:`SnapshotCollector` is a prometheus_client custom collector: on every scrape it asks its
:class:`~devloop.dashboard.snapshot.SnapshotSource` for the newest snapshot (the store's newest
tick, or the live tick of ``collect --prometheus``) and turns it into metric families with
:func:`metric_families`, a pure function. Names follow the Prometheus conventions (base units,
``_total`` for counters); every series of a project carries ``project``, of an agent
``project`` and ``agent``.

=====================================  =====================================================
``devloop_up``                          1 when the snapshot was read, 0 when it failed
``devloop_tick_timestamp_seconds``      unix time of the tick the values come from
``devloop_host_cores``                  the host's cores (CPU % is of all of them)
``devloop_enforcement_active``          1 while an enforcement writes its live state file
``devloop_{workspace,project,agent}_``  ``cpu_percent`` (of the machine), ``cpu_cores``,
                                        ``memory_bytes``, ``fds``, ``threads``, ``processes``,
                                        ``cpu_limit_percent``, ``memory_limit_bytes`` (limits
                                        only where one is in force)
``devloop_agent_state``                 1 for the agent's state (label ``state``), 0 for others
``devloop_{project,agent}_pauses_total``  pauses (state file: since its writer started; else
                                        the store's pause events)
``devloop_agent_resumes_total``         resumes (state file only)
``devloop_pauses_total``                every pause of the workspace
``devloop_queue_length``                agents waiting in the overflow queue
``devloop_project_priority``            the project's priority (0 critical)
=====================================  =====================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from devloop.dashboard.snapshot import AGENT_STATES, Snapshot, SnapshotSource, Usage
from devloop.errors import DevloopError

logger = logging.getLogger(__name__)

_USAGE = (
    ("cpu_percent", "CPU used, percent of the whole machine"),
    ("cpu_cores", "CPU used, cores (1.0 = one core busy)"),
    ("memory_bytes", "Resident memory, bytes"),
    ("fds", "Open file handles"),
    ("threads", "Threads"),
    ("processes", "Processes sampled at the tick"),
)


def _usage_families(
    scope: str, labels: list[str], rows: Iterable[tuple[list[str], Usage]]
) -> list[Metric]:
    what = {"workspace": "the workspace", "project": "a project", "agent": "an agent"}[scope]
    families: dict[str, GaugeMetricFamily] = {
        name: GaugeMetricFamily(f"devloop_{scope}_{name}", f"{text} by {what}", labels=labels)
        for name, text in _USAGE
    }
    cpu_limit = GaugeMetricFamily(
        f"devloop_{scope}_cpu_limit_percent",
        f"CPU limit in force for {what}, percent of the whole machine",
        labels=labels,
    )
    memory_limit = GaugeMetricFamily(
        f"devloop_{scope}_memory_limit_bytes", f"Memory limit in force for {what}, bytes",
        labels=labels,
    )  # fmt: skip
    for values, usage in rows:
        for name, _ in _USAGE:
            families[name].add_metric(values, float(getattr(usage, name)))
        if usage.cpu_limit is not None:
            cpu_limit.add_metric(values, usage.cpu_limit)
        if usage.memory_limit_bytes is not None:
            memory_limit.add_metric(values, float(usage.memory_limit_bytes))
    return [*families.values(), cpu_limit, memory_limit]


def metric_families(snapshot: Snapshot, *, now: float | None = None) -> list[Metric]:
    """Every metric of ``snapshot`` (see the module's table)."""
    up = GaugeMetricFamily("devloop_up", "1 when devloop read the workspace's newest tick")
    up.add_metric([], 1.0 if snapshot.at is not None else 0.0)
    out: list[Metric] = [up]
    cores = GaugeMetricFamily("devloop_host_cores", "CPU cores of the host")
    cores.add_metric([], float(snapshot.cores))
    out.append(cores)
    if snapshot.at is not None:
        tick = GaugeMetricFamily(
            "devloop_tick_timestamp_seconds", "Unix time of the collector tick exported"
        )
        tick.add_metric([], snapshot.at)
        age = GaugeMetricFamily("devloop_tick_age_seconds", "Seconds since that tick")
        age.add_metric([], max((time.time() if now is None else now) - snapshot.at, 0.0))
        out += [tick, age]
    active = GaugeMetricFamily(
        "devloop_enforcement_active", "1 while an enforcement writes enforcement-state.json"
    )
    active.add_metric([], 1.0 if snapshot.enforcement else 0.0)
    out.append(active)
    out += _usage_families("workspace", [], [([], snapshot.workspace)])
    out += _usage_families("project", ["project"], [([p.name], p.usage) for p in snapshot.projects])
    out += _usage_families(
        "agent", ["project", "agent"], [([a.project, a.agent], a.usage) for a in snapshot.agents]
    )
    priority = GaugeMetricFamily(
        "devloop_project_priority", "Project priority (0 critical, 3 lowest)", labels=["project"]
    )
    project_pauses = CounterMetricFamily(
        "devloop_project_pauses", "Pauses of the project's agents", labels=["project"]
    )
    for project in snapshot.projects:
        if project.priority is not None:
            priority.add_metric([project.name], float(project.priority))
        project_pauses.add_metric([project.name], float(project.pauses))
    state = GaugeMetricFamily(
        "devloop_agent_state",
        "1 for the agent's current state (running, paused, throttled, queued, idle), else 0",
        labels=["project", "agent", "state"],
    )
    pauses = CounterMetricFamily(
        "devloop_agent_pauses", "Pauses of the agent", labels=["project", "agent"]
    )
    resumes = CounterMetricFamily(
        "devloop_agent_resumes", "Resumes of the agent", labels=["project", "agent"]
    )
    for agent in snapshot.agents:
        names = [agent.project, agent.agent]
        for name in dict.fromkeys((*AGENT_STATES, agent.state)):
            state.add_metric([*names, name], 1.0 if name == agent.state else 0.0)
        pauses.add_metric(names, float(agent.pauses))
        resumes.add_metric(names, float(agent.resumes))
    total = CounterMetricFamily("devloop_pauses", "Pauses of every agent of the workspace")
    total.add_metric([], float(snapshot.pauses_total))
    queue = GaugeMetricFamily("devloop_queue_length", "Agents waiting in the overflow queue")
    queue.add_metric([], float(len(snapshot.queue)))
    return [*out, priority, project_pauses, state, pauses, resumes, total, queue]


class SnapshotCollector(Collector):
    """A prometheus_client collector that builds every family from a fresh snapshot per scrape.

    A snapshot that cannot be read (a store being rewritten, a bad file) is logged and exported
    as ``devloop_up 0``: a scrape never fails.
    """

    def __init__(self, source: SnapshotSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self.source.snapshot()
        except DevloopError as exc:
            logger.warning("scrape: %s", exc)
            up = GaugeMetricFamily("devloop_up", "1 when devloop read the workspace's newest tick")
            up.add_metric([], 0.0)
            yield up
            return
        yield from metric_families(snapshot)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the data: nothing to check at registration
