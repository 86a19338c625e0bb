"""The resource manager: usage against limits, and the enforcement that keeps agents inside them.

The guide's API::

    from devloop.core.resource_manager import ResourceManager

    manager = ResourceManager(workspace)            # a Workspace, or a workspace folder
    manager.get_workspace_usage()   # {"cpu_percent", "memory_mb", "cpu_limit", "memory_limit_mb"}
    manager.get_project_usage("auth-service")
    manager.can_run_agent("linter")
    manager.wait_for_resources("linter", timeout=60)
    manager.resume_paused_agents()

Usage comes from the collector's latest tick: a :class:`~devloop.runner.record.Recorder` feeds
every tick it records to :meth:`ResourceManager.observe` and runs :meth:`ResourceManager.check`;
a manager used on its own samples with a collector of its own when asked for usage.

The manager is the shell around two pure parts: :class:`~devloop.core.limits.LimitsInForce`
(the profile of the moment, the ``dynamic`` rebalancing) and :class:`~devloop.core.policy.Policy`
(whom to pause, resume, warn about or throttle; whether an agent may start). It feeds them the
usage and the time, then carries their decisions out: signals and the pause journal
(:mod:`devloop.core.signals`), duty cycling (:mod:`devloop.core.throttle`), one JSON line per
action in ``<workspace-dir>/resource-enforcement.log`` and one row of the store's ``events``
table (through ``on_event``), the live state file (:mod:`devloop.core.state`) and the admission
file (:mod:`devloop.core.admit`). The rules themselves are in :mod:`devloop.core.policy`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.config.allocation import Allocation, ProjectAllocation
from devloop.config.models import Workspace, WorkspaceConfig
from devloop.core import admit, signals, state
from devloop.core.limits import LimitsInForce
from devloop.core.policy import (
    MB,
    Action,
    AgentKey,
    AgentUsage,
    Decision,
    Hold,
    Policy,
    Release,
    Rules,
    Usage,
)
from devloop.core.signals import PauseJournal, ProcessRef
from devloop.core.watchdog import Guard
from devloop.errors import UsageError

if TYPE_CHECKING:
    from devloop.collector.model import Tick
    from devloop.core.throttle import Throttler

__all__ = ["Action", "AgentUsage", "ResourceManager", "Usage"]

logger = logging.getLogger(__name__)

LOG_NAME = "resource-enforcement.log"
JOURNAL_NAME = ".paused-processes.json"

EventSink = Callable[[dict[str, Any]], None]
LimitsSink = Callable[[Allocation, str], None]


def _workspace(source: Workspace | WorkspaceConfig | str | os.PathLike[str]) -> Workspace:
    if isinstance(source, Workspace):
        return source
    if isinstance(source, WorkspaceConfig):
        return Workspace(dir=source.file.parent, config=source, agents={})
    from devloop.config.load import load_workspace

    return load_workspace(Path(source))


class ResourceManager:
    """Usage against limits for one workspace, and the enforcement of those limits."""

    def __init__(
        self,
        workspace_config: Workspace | WorkspaceConfig | str | os.PathLike[str],
        *,
        profile: str | None = None,
        on_event: EventSink | None = None,
        on_limits: LimitsSink | None = None,
        min_pause: float | None = None,
        enforce: bool = True,
        source: str = "auto",
    ) -> None:
        """``workspace_config``: a loaded :class:`Workspace` (config and agents), a
        ``WorkspaceConfig``, or the path of a workspace folder.

        ``enforce=False`` observes and answers questions but never signals (nor warns).
        ``min_pause`` is the shortest pause, against flapping (default ``max(3 x
        checkInterval, 5 s)``). Events go to the log file and to ``on_event``; limit changes
        to ``on_limits``.
        """
        self.workspace = _workspace(workspace_config)
        config = self.workspace.config
        self.profile = profile or os.environ.get("DEVLOOP_RESOURCE_PROFILE") or None
        self.interval = config.global_.resource_limits.check_interval
        self.min_pause = min_pause if min_pause is not None else max(3 * self.interval, 5.0)
        self.enforce = enforce
        self.on_event = on_event
        self.on_limits = on_limits
        self._source = source
        self._lock = threading.RLock()
        self._usage: Usage | None = None
        self._observed_at = -math.inf
        self._fed = False
        self._own_collector: Any = None
        self._started: set[ProcessRef] = set()
        self._stopped: dict[AgentKey, list[ProcessRef]] = {}  # what devloop stopped, per agent
        self._unsignallable: dict[AgentKey, frozenset[int]] = {}
        self._queue: Callable[[], list[dict[str, Any]]] = list
        self._throttler: Throttler | None = None
        self._projects = {p.name for p in config.projects}
        self.limits = LimitsInForce(self.workspace, self.profile)
        self.policy = Policy(
            self.limits.allocation, Rules.of(self.workspace, min_pause=self.min_pause)
        )
        folder = self.workspace.dir
        self.log_path = folder / LOG_NAME
        self.state_path = folder / state.STATE_NAME
        self.guard = Guard(folder / JOURNAL_NAME, self.log_path)
        self.journal = PauseJournal(folder / JOURNAL_NAME, arm=self._arm, disarm=self.guard.disarm)

    # --- limits ----------------------------------------------------------------------------

    @property
    def allocation(self) -> Allocation:
        """The limits in force."""
        return self.policy.allocation

    def action_for(self, project: str | None) -> str:
        """The enforcement action in force for a project (its agents.json may override)."""
        return self.policy.rules.action_for(project)

    def resume_threshold(self, project: str | None) -> float:
        return self.policy.rules.threshold_for(project)

    def _refresh_limits(self, now: float) -> list[Action]:
        change = self.limits.update(now, self._usage)
        self.policy.allocation = self.limits.allocation
        if self.on_limits is not None:
            for allocation, reason in change.allocations:
                self.on_limits(allocation, reason)
        return change.actions

    # --- usage -----------------------------------------------------------------------------

    def observe(self, tick: Tick) -> None:
        """Take the collector's latest tick as the current usage (from then on the manager
        is fed: it never samples on its own again)."""
        with self._lock:
            self._fed = True
            self._take(tick)

    def _take(self, tick: Tick) -> None:
        self._usage = Usage.from_tick(tick, self._projects)
        self._observed_at = time.monotonic()

    def refresh(self) -> Usage:
        """The current usage: the latest tick a recorder fed, or else a sample taken now with a
        collector of our own (at most once per check interval)."""
        with self._lock:
            fresh = time.monotonic() - self._observed_at < self.interval
            if self._usage is not None and (self._fed or fresh):
                return self._usage
            from devloop.collector import Collector, rules_for

            if self._own_collector is None:
                self._own_collector = Collector(rules_for(self.workspace), source=self._source)
                self._own_collector.tick()  # CPU rates need two readings
                time.sleep(0.25)
            self._take(self._own_collector.tick())
            assert self._usage is not None
            return self._usage

    def _shape(
        self, cpu: float, memory: int, cpu_limit: float, memory_limit: int
    ) -> dict[str, Any]:
        return {
            "cpu_percent": round(cpu, 1),
            "memory_mb": round(memory / MB, 1),
            "cpu_limit": round(cpu_limit, 2),
            "memory_limit_mb": round(memory_limit / MB, 1),
        }

    def get_workspace_usage(self) -> dict[str, Any]:
        """The workspace's CPU (% of the machine) and memory (MB) against the pool in force."""
        usage = self.refresh()
        cpu, memory = self.policy.totals(usage)
        pool = self.allocation.pool
        return self._shape(cpu, memory, pool.cpu, pool.memory_bytes)

    def get_project_usage(self, name: str) -> dict[str, Any]:
        """One project's usage against its share (same keys as the workspace's)."""
        share = self._project(name)
        cpu, memory = self.policy.totals(self.refresh(), name)
        return self._shape(cpu, memory, share.cpu, share.memory_bytes)

    def get_agent_usage(self, project: str, agent: str) -> dict[str, Any]:
        """One agent's usage against its own limits (its project's when it has none), with
        ``fds``, ``threads``, ``pids`` and ``state`` (running, paused, throttled or idle)."""
        share = self._project(project)
        usage = self.refresh()
        found = usage.agents.get((project, agent), AgentUsage(project, agent))
        limits = self.policy.agent_limits(project, agent) or (share.cpu, share.memory_bytes)
        shape = self._shape(found.cores / usage.cores * 100, found.memory_bytes, *limits)
        shape.update(
            fds=found.fds,
            threads=found.threads,
            pids=[p[0] for p in found.processes],
            state=self.policy.state_of((project, agent), found),
        )
        return shape

    def _project(self, name: str) -> ProjectAllocation:
        share = self.allocation.projects.get(name)
        if share is None:
            known = ", ".join(sorted(self.allocation.projects)) or "none"
            raise UsageError(f"unknown project {name!r} (enabled projects: {known})")
        return share

    def held(self, project: str, agent: str) -> str | None:
        """``"paused"`` or ``"throttled"`` when the enforcer holds the agent so; else None."""
        with self._lock:
            held = self.policy.state_of((project, agent), None)
        return held if held in ("paused", "throttled") else None

    # --- admission ---------------------------------------------------------------------------

    def running_agents(self) -> int:
        """How many agents have processes now (paused ones count: they hold their slot)."""
        usage = self.refresh()
        return sum(1 for a in usage.agents.values() if a.processes)

    def _resolve_agent(self, agent: str, project: str | None) -> list[str]:
        if project is None and "/" in agent:
            project, agent = agent.split("/", 1)
        if project is not None:
            self._project(project)
            return [project]
        return [name for name, agents in self.workspace.agents.items() if agent in agents.agents]

    def can_run_agent(self, agent: str, project: str | None = None) -> bool:
        """May ``agent`` (of ``project``, or ``"project/agent"``) start now?

        Yes when the workspace and the agent's project are under their CPU and memory limits,
        the project was granted something, and the agent is neither paused nor over limits of
        its own. An agent name found in several projects must be under all of them.
        """
        usage = self.refresh()
        projects = self._resolve_agent(agent, project)
        name = agent.split("/", 1)[1] if project is None and "/" in agent else agent
        return self.policy.can_run(usage, name, projects)

    def wait_for_resources(
        self,
        agent: str,
        project: str | None = None,
        *,
        timeout: float | None = None,
        poll: float | None = None,
    ) -> bool:
        """Block until :meth:`can_run_agent` is true (True) or ``timeout`` seconds pass
        (False). Usage is re-read every ``poll`` seconds (default: the check interval)."""
        deadline = time.monotonic() + timeout if timeout is not None else math.inf
        every = poll if poll is not None else self.interval
        while True:
            if self.can_run_agent(agent, project):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(every, left))

    # --- processes devloop may signal ------------------------------------------------------

    def started(self, pid: int) -> None:
        """Mark a process this devloop started (it may be signalled even without a tag)."""
        process = signals.ref(pid)
        if process is not None:
            self._started.add(process)

    def _refs(self, usage: AgentUsage) -> list[ProcessRef]:
        refs = []
        for pid, start_us, _ppid in usage.processes:
            process = signals.ref_at(pid, start_us)
            if process is not None:
                refs.append(process)
        return refs

    def _pausable(self, agent: AgentUsage) -> bool:
        """May devloop stop any process of ``agent`` (the policy's question before a pause)?"""
        pids = frozenset(p[0] for p in agent.processes)
        if self._unsignallable.get(agent.key) == pids:
            return False  # found to hold nothing devloop may signal, and unchanged since
        tree = signals.tree(self._refs(agent))
        if any(signals.verify(p, project=agent.project, started=self._started) for p in tree):
            return True
        self._unsignallable[agent.key] = pids
        return False

    # --- the check ---------------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[Action]:
        """Compare the latest usage with the limits and act. Returns what was done."""
        queue = self._queue()  # outside our lock: the queue's own lock calls can_run_agent
        with self._lock:
            now = time.time() if now is None else now
            actions = self._refresh_limits(now)
            usage = self._usage
            if self._throttler is not None and self._throttler.error is not None:
                error, self._throttler = self._throttler.error, None  # it continued everything
                self.policy.throttled.clear()
                message = f"throttling stopped: {error}; restarting it"
                actions.append(Action("warn", "workspace", None, None, message=message))
            if usage is not None and self.enforce:
                gone = self._prune_stopped()
                self._keep_paused(usage, gone)
                decisions = self.policy.check(
                    usage, time.monotonic(), gone=gone, pausable=self._pausable
                )
                actions += self._carry_out(decisions, usage, gone)
                self._keep_held(usage)
            for action in actions:
                self._record(action, now)
            if self.enforce:  # the live state is the enforcer's; an observer only admits
                self._write_state(now, queue)
            self._write_admission(now)
            return actions

    def _prune_stopped(self) -> set[AgentKey]:
        """Forget stopped processes that exited; returns the agents none of whose are left."""
        gone: set[AgentKey] = set()
        for key, processes in self._stopped.items():
            alive = [p for p in processes if signals.process_start(p.pid) == p.start]
            exited = [p for p in processes if p not in alive]
            if exited:
                self.journal.remove(exited)
            processes[:] = alive
            if not alive:
                gone.add(key)
        return gone

    def _keep_paused(self, usage: Usage, gone: set[AgentKey]) -> None:
        """Stop processes a paused agent started since (forked before the stop, or run anew)."""
        for key, processes in self._stopped.items():
            found = usage.agents.get(key)
            if found is None or key in gone:
                continue
            new = [p for p in self._refs(found) if p not in processes]
            if new:
                self._stop(key, new)

    def _keep_held(self, usage: Usage) -> None:
        """Hold the processes a throttled agent started since its hold, outside the trees held
        (a run begun as its held run ended, the agent never without processes at a check: the
        policy sees it held all along and decides no new hold, so its new run ran free), at the
        same cap: the hold is the agent's."""
        throttler = self._throttler
        if throttler is None:
            return
        from devloop.core.throttle import live_tree

        for key in sorted(self.policy.throttled):
            found = usage.agents.get(key)
            name = f"{key[0]}/{key[1]}"
            held = throttler.holding(name) if found is not None else None
            if found is None or held is None:
                continue
            roots, target = held
            refs = self._refs(found)
            if all(p in roots for p in refs):
                continue
            tree = set(live_tree(roots))
            if any(p not in tree for p in refs):
                throttler.hold(name, project=key[0], agent=key[1], roots=refs,
                               target_cores=target, started=self._started)  # fmt: skip

    def _stop(self, key: AgentKey, roots: list[ProcessRef]) -> list[ProcessRef]:
        project, agent = key
        members = signals.tree(roots)
        self.journal.add(project, agent, members)
        stopped = signals.stop_tree(roots, project=project, started=self._started)
        self.journal.add(project, agent, stopped)
        self.journal.remove(p for p in members if p not in stopped)
        held = self._stopped.setdefault(key, [])
        held.extend(p for p in stopped if p not in held)
        return stopped

    def _continue(self, key: AgentKey) -> tuple[int, ...]:
        processes = self._stopped.pop(key, [])
        continued = signals.continue_all(processes)
        self.journal.remove(processes)
        return tuple(p.pid for p in continued)

    def _carry_out(
        self, decisions: Iterable[Decision], usage: Usage, gone: Collection[AgentKey] = ()
    ) -> list[Action]:
        """Do what the policy decided; returns the actions done (pids: those signalled)."""
        done: list[Action] = []
        for decision in decisions:
            if isinstance(decision, Hold):
                self._hold(decision, usage)
                continue
            if isinstance(decision, Release):
                name = f"{decision.project}/{decision.agent}"
                if self._throttler is not None and name in self._throttler.keys():
                    self._throttler.release(name)
                continue
            key = (decision.project or "", decision.agent or "")
            if decision.action == "pause":
                found = usage.agents[key]
                stopped = self._stop(key, self._refs(found))
                if not stopped:  # its processes went since the policy asked
                    self.policy.cancel_pause(key)
                    self._stopped.pop(key, None)
                    continue
                decision = replace(decision, pids=tuple(p.pid for p in stopped))
            elif decision.action == "resume" and decision.agent is not None:
                if key in gone:
                    self._stopped.pop(key, None)
                else:
                    decision = replace(decision, pids=self._continue(key))
            done.append(decision)
        return done

    def _hold(self, hold: Hold, usage: Usage) -> None:
        from devloop.core.throttle import Throttler

        if self._throttler is None:
            self._throttler = Throttler(
                cores=usage.cores, journal=self.journal, on_event=self._throttle_event
            )
        self._throttler.hold(
            f"{hold.project}/{hold.agent}", project=hold.project, agent=hold.agent,
            roots=self._refs(usage.agents[(hold.project, hold.agent)]),
            target_cores=hold.cores, started=self._started,
        )  # fmt: skip

    def _throttle_event(self, action: str, **fields: Any) -> None:
        self._record(
            Action(action, "agent", fields.get("project"), fields.get("agent"),
                   tuple(fields.get("pids") or ()), "cpu", fields.get("value"),
                   fields.get("limit"), str(fields.get("message", ""))),
            time.time(),
        )  # fmt: skip

    # --- resuming on demand and on exit --------------------------------------------------

    def paused_agents(self) -> list[AgentKey]:
        return list(self.policy.paused)

    def resume_paused_agents(self, *, force: bool = False) -> list[AgentKey]:
        """Resume the paused agents that fit again (all of them with ``force``); returns them.

        Without ``force`` this is the check's own resume rule, run now (the minimum pause time
        is not waited for)."""
        with self._lock:
            now = time.time()
            decisions = self.policy.resume_now(
                self._usage, time.monotonic(), "resumed on request", force=force
            )
            resumed: list[AgentKey] = []
            for action in self._carry_out(decisions, self._usage or Usage(now, 1, {})):
                self._record(action, now)
                resumed.append((action.project or "", action.agent or ""))
            return resumed

    def _arm(self) -> None:
        """Before the journal lists a process to stop: hold the enforcer lock, and make sure a
        watchdog continues what we stop should we die (:mod:`devloop.core.watchdog`)."""
        try:
            self.guard.arm()
        except OSError as exc:  # the journal is still written: the next start recovers it
            logger.warning("no watchdog for %s: %s", self.workspace.dir, exc)

    def recover(self) -> list[signals.JournalEntry]:
        """Continue what a previous devloop, killed with SIGKILL, left stopped, unless its
        watchdog does it or an enforcer alive owns the journal (then it is not left over).

        What is continued runs unenforced from then on unless this devloop enforces: said on
        stderr, since the alternative, an agent stopped for good, is worse."""
        with self._lock:
            if not self.journal.path.exists():
                return []  # nothing to recover: touch no lock
            with self.guard.alone() as alone:
                entries = self.journal.recover() if alone else []
            now = time.time()
            by_agent: dict[AgentKey, list[int]] = {}
            for entry in entries:
                by_agent.setdefault((entry.project, entry.agent), []).append(entry.pid)
            for (project, agent), pids in by_agent.items():
                self._record(Action("recover", "agent", project, agent, tuple(pids),
                                    message="left stopped by a devloop that was killed; "
                                            "continued"), now)  # fmt: skip
                logger.warning(
                    "continued %s/%s (pids %s), left stopped by a devloop that was killed; "
                    "its limits are enforced only while a devloop enforces the workspace",
                    project, agent, " ".join(map(str, pids)),
                )  # fmt: skip
            return entries

    def close(self) -> None:
        """Continue every process devloop holds stopped or throttled; remove the state file (an
        enforcer's) and the admission file (a recorder's)."""
        with self._lock:
            try:
                if self._throttler is not None:
                    self._throttler.close()
                    self._throttler = None
                self.policy.release_all()
                now = time.time()
                decisions = self.policy.resume_now(
                    None, time.monotonic(), "devloop is stopping", force=True
                )
                for action in self._carry_out(decisions, Usage(now, 1, {})):
                    self._record(action, now)
            finally:
                # whatever is still journaled now, the watchdog continues once we let go
                self.guard.disarm()
                if self.enforce:
                    state.remove(self.workspace.dir)
                if self._fed:
                    (self.workspace.dir / admit.ADMISSION_NAME).unlink(missing_ok=True)
                if self._own_collector is not None:
                    self._own_collector.close()
                    self._own_collector = None

    def __enter__(self) -> ResourceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the record of what was done --------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        scope: str | None = None,
        project: str | None = None,
        agent: str | None = None,
        pids: Iterable[int] = (),
        metric: str | None = None,
        value: float | None = None,
        limit: float | None = None,
        message: str = "",
    ) -> None:
        """Log an action of someone else's (the runner's queue) as the manager logs its own:
        a line of the enforcement log and an ``events`` row."""
        with self._lock:
            self._record(
                Action(action, scope, project, agent, tuple(pids), metric, value, limit, message),
                time.time(),
            )

    def _record(self, action: Action, ts: float) -> None:
        entry = action.to_json(ts)
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.log_path, exc)
        logger.info("%s %s", action.action, action.message)
        if self.on_event is not None:
            self.on_event({**entry, "ts": ts})

    def set_queue_source(self, waiting: Callable[[], list[dict[str, Any]]]) -> None:
        """Where the state file reads the overflow queue from (the runner's queue)."""
        self._queue = waiting

    def state(
        self, now: float | None = None, queue: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The live state (the documented shape of ``enforcement-state.json``, built by
        :func:`devloop.core.state.build`)."""
        if queue is None:
            queue = self._queue()  # outside our lock, as in check()
        with self._lock:
            now = time.time() if now is None else now
            enabled = [
                (project, a.name)
                for project, agents in self.workspace.agents.items()
                for a in agents.enabled_agents
            ]
            return state.build(
                self.policy, self._usage or Usage(now, os.cpu_count() or 1, {}), now=now,
                interval=self.interval,
                enforcement=self.workspace.config.global_.resource_limits.enforcement_action,
                agents=enabled, queue=queue,
            )  # fmt: skip

    def _write_admission(self, now: float) -> None:
        """What :meth:`can_run_agent` says now for every agent (``"project/*"``: an agent not in
        agents.json), so a launcher decides from one small file (:mod:`devloop.core.admit`)."""
        with self._lock:
            usage = self._usage
            if usage is None or not self._fed:
                return  # only a recorder's manager knows the usage without sampling itself
            verdicts = {}
            for project, share in self.allocation.projects.items():
                own = self.workspace.agents.get(project)
                names = [a.name for a in own.enabled_agents] if own is not None else []
                for name in (*names, "*"):
                    verdicts[f"{project}/{name}"] = share.granted and self.can_run_agent(
                        name, project
                    )
            running = sum(1 for a in usage.agents.values() if a.processes)
        try:
            admit.write(self.workspace.dir, now, self.interval, running,
                        self.workspace.config.global_.max_concurrent_agents, verdicts)  # fmt: skip
        except OSError as exc:
            logger.warning("cannot write the admission file in %s: %s", self.workspace.dir, exc)

    def _write_state(self, now: float, queue: list[dict[str, Any]]) -> None:
        try:
            state.write(self.workspace.dir, self.state(now, queue))
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.state_path, exc)
