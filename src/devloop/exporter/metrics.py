"""The Prometheus metrics of a :class:`~devloop.dashboard.snapshot.Snapshot`, built per scrape.

:class:`SnapshotCollector` is a prometheus_client custom collector: on every scrape it asks its
:class:`~devloop.exporter.sources.ReadingSource` for the newest reading (the store's newest
tick, or the live tick of ``collect --prometheus``), judges how live it is
(:mod:`devloop.exporter.liveness`) and turns both into metric families with
:func:`metric_families`, a pure function. Names follow the Prometheus conventions (base units,
``_total`` for counters); every series of a project carries ``project``, of an agent
``project`` and ``agent``.

Always exported:

=====================================  =====================================================
``devloop_up``                          1 when the tick is live: at most
                                        ``devloop_stale_after_seconds`` old and its collector
                                        runs; else 0 (also when the store cannot be read)
``devloop_tick_timestamp_seconds``      unix time of the newest tick (once there is one)
``devloop_tick_age_seconds``            seconds from that tick to the scrape
``devloop_stale_after_seconds``         the age beyond which the tick is stale
``devloop_collector_running``           1 while a collector holds the store, 0 when it is
                                        gone (absent when the store cannot say)
``devloop_host_cores``                  the host's cores (CPU % is of all of them)
``devloop_enforcement_active``          1 while an enforcement writes its live state file
=====================================  =====================================================

Only while ``devloop_up`` is 1 (a stale tick is not the present: its series stop, and
Prometheus marks them stale, as node_exporter and kube-state-metrics do with what they no
longer see):

=====================================  =====================================================
``devloop_{workspace,project,agent}_``  ``cpu_percent`` (of the machine), ``cpu_cores``,
                                        ``memory_bytes``, ``fds``, ``threads``, ``processes``,
                                        ``cpu_limit_percent``, ``memory_limit_bytes`` (limits
                                        only where one is in force)
``devloop_agent_state``                 1 for the agent's state (label ``state``), 0 for others;
                                        an agent without processes at the tick is never
                                        ``running`` (``idle`` instead)
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
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from devloop.dashboard.snapshot import AGENT_STATES, AgentStatus, Snapshot, Usage
from devloop.errors import DevloopError
from devloop.exporter.liveness import Liveness, judge, stale_bound
from devloop.exporter.sources import ReadingSource

logger = logging.getLogger(__name__)

_UP_HELP = "1 when the newest tick is live (fresh, and its collector runs), else 0"

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


def agent_state(agent: AgentStatus) -> str:
    """The state exported for ``agent``: its own, except that an agent with no process at the
    tick is not running (a state file written at another moment may still say so)."""
    if agent.state == "running" and agent.usage.processes == 0:
        return "idle"
    return agent.state


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def metric_families(snapshot: Snapshot, liveness: Liveness) -> list[Metric]:
    """Every metric of ``snapshot`` judged ``liveness`` (see the module's tables)."""
    out: list[Metric] = [
        _gauge("devloop_up", _UP_HELP, 1.0 if liveness.up else 0.0),
        _gauge("devloop_host_cores", "CPU cores of the host", float(snapshot.cores)),
        _gauge(
            "devloop_stale_after_seconds",
            "Age beyond which the newest tick is stale (devloop_up 0)",
            liveness.stale_after,
        ),
    ]
    if liveness.collector is not None:
        out.append(_gauge(
            "devloop_collector_running", "1 while a collector holds the workspace's store",
            1.0 if liveness.collector else 0.0,
        ))  # fmt: skip
    if snapshot.at is not None and liveness.age is not None:
        out.append(_gauge(
            "devloop_tick_timestamp_seconds", "Unix time of the newest collector tick",
            snapshot.at,
        ))  # fmt: skip
        out.append(_gauge("devloop_tick_age_seconds", "Seconds since that tick", liveness.age))
    out.append(_gauge(
        "devloop_enforcement_active", "1 while an enforcement writes enforcement-state.json",
        1.0 if snapshot.enforcement else 0.0,
    ))  # fmt: skip
    if not liveness.up:
        return out
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
        current = agent_state(agent)
        for name in dict.fromkeys((*AGENT_STATES, current)):
            state.add_metric([*names, name], 1.0 if name == current else 0.0)
        pauses.add_metric(names, float(agent.pauses))
        resumes.add_metric(names, float(agent.resumes))
    total = CounterMetricFamily("devloop_pauses", "Pauses of every agent of the workspace")
    total.add_metric([], float(snapshot.pauses_total))
    queue = GaugeMetricFamily("devloop_queue_length", "Agents waiting in the overflow queue")
    queue.add_metric([], float(len(snapshot.queue)))
    return [*out, priority, project_pauses, state, pauses, resumes, total, queue]


class SnapshotCollector(Collector):
    """A prometheus_client collector that builds every family from a fresh reading per scrape.

    ``stale_after`` replaces the default staleness bound (see
    :func:`~devloop.exporter.liveness.stale_bound`); ``clock`` gives the scrape's time. A
    reading that fails (a store being rewritten, a bad file) is logged and exported as
    ``devloop_up 0``: a scrape never fails.
    """

    def __init__(
        self,
        source: ReadingSource,
        *,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.stale_after = stale_after
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        try:
            reading = self.source.read(now)
        except DevloopError as exc:
            logger.warning("scrape: %s", exc)
            yield _gauge("devloop_up", _UP_HELP, 0.0)
            return
        liveness = judge(
            reading.snapshot.at,
            now=now,
            stale_after=stale_bound(reading.interval, self.stale_after),
            collector=reading.collector,
        )
        yield from metric_families(reading.snapshot, liveness)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the data: nothing to check at registration
