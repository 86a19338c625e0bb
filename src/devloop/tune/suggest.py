"""``autotune``: suggested limits per project and agent from the recorded history, backtested.

The method is in docs/autotune.md; the pieces are :mod:`.history` (one pass over the store),
:mod:`.fit` (one entity's limits), :mod:`.backtest` (walk-forward), :mod:`.suggestions` (the
records it returns, and their JSON) and :mod:`.patch` (the workspace.json and agents.json merge
patches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.tune.backtest import EntityBacktest, Fold, Side, blocks
from devloop.tune.fit import Fit, confidence, find_leak, fit, weighted_percentile, window_peaks
from devloop.tune.history import History, Key, held_seconds, read_history
from devloop.tune.objective import (
    Search,
    alone,
    decay_weights,
    peak_demand,
    slowdowns,
    smallest_cpu,
)
from devloop.tune.params import TuneParameters
from devloop.tune.patch import json_number
from devloop.tune.suggestions import (
    POOL_MODES,
    EntitySuggestion,
    PoolFit,
    PoolMode,
    Suggestions,
    sha256_file,
)
from devloop.tune.workers import fork_map
from devloop.units import MIB, format_size

if TYPE_CHECKING:
    from devloop.analytics import Store, TimeRange
    from devloop.config import Workspace
    from devloop.config.allocation import Allocation
    from devloop.tune.profiles import LearnedProfile
    from devloop.tune.replay import Demand, Replay, ReplayedRun, RunDemand


def round_cpu(value: float) -> float:
    """CPU percent rounded up to a tenth (a limit is never rounded below the fit)."""
    return min(100.0, math.ceil(value * 10 - 1e-9) / 10)


def round_memory(value: float) -> int:
    """Bytes rounded up to a whole MiB."""
    return math.ceil(value / MIB - 1e-9) * MIB


def autotune(
    workspace_dir: Path | str | Store,
    time_range: TimeRange | None = None,
    params: TuneParameters | None = None,
    *,
    now: datetime | None = None,
    demand: Demand | None = None,
    progress: Callable[[str], None] | None = None,
) -> Suggestions:
    """Suggested limits for every project and agent of the workspace, from the history in
    ``time_range`` (all of it by default), with a walk-forward backtest and the patches.

    ``demand``: the recorded runs to replay, read elsewhere (the Spark engine's, made with
    :func:`~devloop.tune.replay.demand_from_rows`) for the same range; default: read from the
    store (:func:`~devloop.tune.replay.demand_from_store`). ``progress``: called with a line
    saying what is being done as each step begins (a long history takes minutes)."""
    from devloop.analytics.query import open_store
    from devloop.config import WORKSPACE_FILE, load_workspace
    from devloop.config.allocation import allocate
    from devloop.tune.patch import build_patches
    from devloop.tune.replay import demand_from_store

    params = params or TuneParameters()
    say = progress or (lambda line: None)
    say("reading the history")
    store = open_store(workspace_dir)
    workspace = load_workspace(store.workspace_dir)
    workspace_file = store.workspace_dir / WORKSPACE_FILE
    digest = sha256_file(workspace_file)
    agents_files = {
        name: (config.file, sha256_file(config.file))
        for name, config in workspace.agents.items()
        if config.file is not None
    }
    allocation = allocate(workspace)
    selection = store.select(time_range)
    history = read_history(store, selection, workspace, params)
    held = held_seconds(store, selection)
    if demand is None:
        demand = demand_from_store(store, selection.start, selection.end)
    notes = [history.limits_note] if history.limits_note else []
    priorities = {p.name: p.priority for p in workspace.config.projects}
    runs = _runs_by_entity(demand, history)
    cores = demand.cores or max(int(history.cores), 1)
    objective = _Objective(workspace, allocation, params, demand, cores, runs)

    end = history.end.timestamp()
    counts = {key: len(found) for key, found in runs.items()}
    if demand.runs:
        say(
            f"replaying {len(demand.runs):,} runs of {history.n_hours:,} hours: the smallest "
            "limits that keep them within --max-slowdown"
        )
    entities = _fit_all(
        history, allocation, params, history.end, range(history.n_hours), held, counts
    )
    searches: dict[Key, Search] = {}
    for key, (result, leak) in list(entities.items()):
        found = objective.fit(key, result, end, float("inf"))
        if found is not None:
            entities[key] = (found[0], leak)
            searches[key] = found[1]
    _cap_agents(entities)

    unit, count = blocks(history)
    say("walk-forward backtest: current and suggested limits side by side")
    backtests = {key: objective.backtest(key, history, held, unit, count) for key in entities}

    suggestions: dict[Key, EntitySuggestion] = {}
    for key, (result, leak) in entities.items():
        backtest = backtests[key]
        kept = backtest.worse(params.max_slowdown) if backtest is not None else None
        if kept is not None:
            current_cpu, current_memory = _current(allocation, key)
            result = Fit(
                current_cpu,
                current_memory,
                result.ticks,
                result.seconds,
                result.censored_cpu,
                result.censored_memory,
                result.leak,
                f"it keeps no limit of its own, as now ({kept})",
            )
        suggestions[key] = _suggestion(
            history, key, result, leak, allocation, params, backtest, priorities, counts[key]
        )
        suggestions[key].objective = objective.describe(key, searches.get(key), kept)
        suggestions[key].rationale = _why(suggestions[key], params)
    governing = profiles_at(workspace, [run.queued_at for run in demand.runs])
    say("the pool: every run replayed together under the suggested limits")
    suggestions, pool, totals = _choose_pool(
        suggestions, workspace, allocation, history, params, priorities, governing, objective,
        say,
    )  # fmt: skip
    say("a time-of-day profile from the daily pattern")
    pool.learned = _learn_profile(suggestions, pool, totals, workspace, allocation, history,
                                  params, objective)  # fmt: skip
    if pool.note:
        notes.append(pool.note)
    if pool.learned is not None and pool.learned.suggested:
        notes.append(pool.learned.why)
    for entry in suggestions.values():
        if entry.scaled or pool.overcommit or pool.dynamic:
            entry.rationale = _why(entry, params, pool=pool)
    if count < 2:
        notes.append("history too short for a backtest (it needs two hours)")
    if not demand.runs:
        notes.append(
            "no runs recorded: every limit comes from the per-tick percentile (record with "
            "devloop run or devloop watch for limits by run slowdown)"
        )
    result_record = Suggestions(
        generated_at=now or datetime.now(UTC),
        selection=selection,
        params=params,
        workspace_file=workspace_file,
        workspace_sha256=digest,
        agents_files=agents_files,
        strategy=workspace.config.resource_sharing.strategy,
        projects={s.project: s for key, s in suggestions.items() if not key[1]},
        agents={s.name: s for key, s in suggestions.items() if key[1]},
        pool=pool,
        totals=totals,
        block_hours=unit,
        history=history,
        notes=notes,
    )
    build_patches(result_record, workspace)
    _pool_patch(result_record, workspace)
    return result_record


def _runs_by_entity(demand: Demand, history: History) -> dict[Key, list[RunDemand]]:
    found: dict[Key, list[RunDemand]] = {key: [] for key in history.entities}
    for run in demand.runs:
        for key in ((run.project, ""), (run.project, run.agent)):
            if key in found:
                found[key].append(run)
    return found


class _Objective:
    """The run-slowdown objective over one workspace's recorded demand."""

    def __init__(
        self,
        workspace: Workspace,
        allocation: Allocation,
        params: TuneParameters,
        demand: Demand,
        cores: int,
        runs: dict[Key, list[RunDemand]],
    ) -> None:
        self.workspace = workspace
        self.allocation = allocation
        self.params = params
        self.demand = demand
        self.cores = cores
        self.runs = runs
        # group replays of the searches, shared by the final fit and the backtest's folds
        self.replays: dict[Any, tuple[float, ...]] = {}
        # every run replayed together under the current configuration (totals)
        self.current: Any = None
        # every entity's search on all its runs, and every backtest: each entity's work is
        # independent of the others', so it is done for all at once on the cores (workers.py)
        self.final: tuple[float, dict[Key, Search]] | None = None
        self.backtests: tuple[tuple[Any, ...], dict[Key, EntityBacktest | None]] | None = None

    def fit(
        self, key: Key, result: Fit, reference: float, before: float
    ) -> tuple[Fit, Search] | None:
        """``result`` with its CPU from the runs triggered before ``before`` (the smallest
        limit meeting the slowdown target, weighted from ``reference``) and its memory at
        least their peak plus the memory margin; None without such runs or without a fit."""
        runs = [run for run in self.runs.get(key, []) if run.queued_at < before]
        if not runs or result.cpu is None or result.memory_bytes is None:
            return None
        params = self.params
        if math.isinf(before):  # the final fits: every entity's search at once
            if self.final is None or self.final[0] != reference:
                keys = [k for k, found in self.runs.items() if found]
                done = fork_map(lambda k: self._search(k, self.runs[k], reference, {}), keys,
                                costs=[len(self.runs[k]) for k in keys])  # fmt: skip
                for _, cache in done:
                    self.replays.update(cache)
                self.final = (reference, {k: s for k, (s, _) in zip(keys, done, strict=True)})
            search = self.final[1][key]
        else:
            search = self._search(key, runs, reference, self.replays)[0]
        peak = peak_demand(runs, self.demand.interval)[1]
        memory = result.memory_bytes
        if not result.leak:
            memory = max(memory, round_memory(peak * (1 + params.memory_margin)))
        fitted = Fit(
            search.cpu,
            memory,
            result.ticks,
            result.seconds,
            result.censored_cpu,
            result.censored_memory,
            result.leak,
        )
        return fitted, search

    def _search(
        self, key: Key, runs: list[RunDemand], reference: float, cache: dict[Any, Any]
    ) -> tuple[Search, dict[Any, Any]]:
        """The smallest CPU limit for ``key`` on ``runs``, and ``cache`` with its group
        replays."""
        params = self.params
        search = smallest_cpu(
            runs,
            self.workspace,
            *key,
            cores=self.cores,
            interval=self.demand.interval,
            max_slowdown=params.max_slowdown,
            weights=decay_weights(runs, reference, params.half_life),
            floor=params.min_cpu,
            cache=cache,
            host_cores=self.demand.host_cores,
        )
        return search, cache

    def backtest(
        self, key: Key, history: History, held: dict[Key, float], unit: int, count: int
    ) -> EntityBacktest | None:
        """Walk-forward: for each block k+1, the limits fitted on blocks 1..k and the limit in
        force now, each replayed on the runs of block k+1 (the entity's runs alone). Every
        entity's at the first call, on the cores, beside the in-sample replay of every run
        under the current configuration (:meth:`totals`: it does not depend on the
        suggestions)."""
        asked = (id(history), id(held), unit, count)
        if self.backtests is None or self.backtests[0] != asked:
            keys = [k for k, found in self.runs.items() if found]
            items: list[Key | None] = [*keys]
            costs = [len(self.runs[k]) for k in keys]
            if self.current is None and self.demand.runs:
                items.append(None)  # the current configuration's in-sample replay
                costs.append(len(self.demand.runs))
            done: list[Any] = fork_map(
                lambda k: (
                    self._replay_all(self.workspace)
                    if k is None
                    else self._backtest(k, history, held, unit, count)
                ),
                items,
                costs=costs,
            )
            if len(done) > len(keys):
                self.current = done.pop()
            self.backtests = (asked, dict(zip(keys, done, strict=True)))
        if key in self.backtests[1]:
            return self.backtests[1][key]
        return self._backtest(key, history, held, unit, count)

    def _replay_all(self, config: Workspace) -> Replay:
        """Every recorded run replayed together under ``config``."""
        from devloop.tune.replay import replay

        return replay(
            list(self.demand.runs),
            config,
            cores=self.cores,
            interval=self.demand.interval,
            host_cores=self.demand.host_cores,
        )

    def _backtest(
        self, key: Key, history: History, held: dict[Key, float], unit: int, count: int
    ) -> EntityBacktest | None:
        from devloop.tune.replay import replay

        runs = self.runs.get(key, [])
        if not runs:
            return None
        current_cpu, current_memory = _current(self.allocation, key)
        bt = EntityBacktest(Side(), Side(), [])
        for k in range(1, count):
            start = history.hour_start(k * unit).timestamp()
            hours = min(unit, history.n_hours - k * unit)
            stop = history.hour_start(k * unit + hours).timestamp()
            block = [run for run in runs if start <= run.queued_at < stop]
            if not block:
                continue
            mask = _mask(history, range(k * unit))
            entity = history.entities[key]
            before = sum(1 for run in runs if run.queued_at < start)
            base = fit(history, entity, mask, history.hour_start(k * unit), self.params,
                       current_memory=current_memory, held_seconds=held.get(key, 0.0),
                       runs=before)  # fmt: skip
            if base.memory_bytes is not None:
                base = Fit(round_cpu(base.cpu or 0.0), round_memory(base.memory_bytes),
                           base.ticks, base.seconds, base.censored_cpu, base.censored_memory,
                           base.leak)  # fmt: skip
            found = self.fit(key, base, start, start)
            if found is None:
                continue
            fitted = found[0]
            assert fitted.cpu is not None and fitted.memory_bytes is not None
            for side, cpu, memory in (
                (bt.suggested, fitted.cpu, fitted.memory_bytes),
                (bt.current, current_cpu, current_memory),
            ):
                config = alone(self.workspace, *key, cpu, memory)
                replayed = replay(block, config, cores=self.cores, interval=self.demand.interval,
                                  host_cores=self.demand.host_cores)  # fmt: skip
                side.add(list(replayed.runs), cpu, memory, hours)
            bt.folds.append(Fold(k * unit, hours, fitted.cpu, fitted.memory_bytes, len(block)))
        if not bt.folds:
            bt.reason = (
                "too little history for a backtest: no block after the first with runs and a "
                "fit before it"
                if count > 1
                else "too little history for a backtest (it needs two blocks)"
            )
        return bt

    def describe(self, key: Key, search: Search | None, kept: str | None) -> dict[str, Any]:
        """The objective's record for one entity (suggestions.json ``objective``)."""
        runs = self.runs.get(key, [])
        peak_cores, peak_memory = peak_demand(runs, self.demand.interval)
        return {
            "method": "replay" if search is not None else "percentile",
            "max_slowdown": self.params.max_slowdown,
            "runs": len(runs),
            "needed_cpu_percent": None if search is None else search.cpu,
            "p95_at_needed": None if search is None else round(search.p95, 4),
            "replays": None if search is None else search.replays,
            "runs_peak_cpu_percent": round(100.0 * peak_cores / self.cores, 2) if runs else None,
            "runs_peak_memory_bytes": peak_memory if runs else None,
            "kept_current": kept,
            "why": None if runs else "no runs recorded",
        }

    def totals(
        self,
        trials: list[tuple[dict[Key, EntitySuggestion], PoolFit]],
        workspace: Workspace,
        history: History,
    ) -> list[dict[str, Side]]:
        """Per trial (suggestions and their pool), every run replayed with all the others under
        the current configuration and under the suggested one (the pool included): what the
        pool does to them, and each project's ``at_pool``. In-sample (the final suggestion over
        the whole history), unlike the entities' walk-forward. The current configuration is
        replayed once (beside the backtests when they ran first), the trials' on the cores."""
        if not self.demand.runs:
            return [{"current": Side(), "suggested": Side()} for _ in trials]
        hours = float(history.n_hours)
        current = self.current if workspace is self.workspace else None
        configs = [suggested_workspace(workspace, s, pool) for s, pool in trials]
        asked = configs if current is not None else [workspace, *configs]
        # the dynamic trial's replay is the longest (its rule must see every tick): first,
        # so the other worker takes the rest meanwhile
        costs = [4.0 if c.config.resource_sharing.strategy == "dynamic" else 1.0 for c in asked]
        done = fork_map(self._replay_all, asked, costs=costs)
        if current is None:
            current = done.pop(0)
            if workspace is self.workspace:
                self.current = current
        done.insert(0, current)
        found = []
        for (suggestions, pool), replayed in zip(trials, done[1:], strict=True):
            totals = {"current": Side(), "suggested": Side()}
            totals["current"].add(list(done[0].runs), pool.cpu, pool.memory_bytes, hours)
            totals["suggested"].add(
                list(replayed.runs),
                pool.suggested_cpu or pool.cpu,
                pool.suggested_memory or pool.memory_bytes,
                hours,
            )
            by_project = _project_stats(totals["suggested"].runs)
            for key, entry in suggestions.items():
                if not key[1]:
                    entry.at_pool = by_project.get(key[0])
            found.append(totals)
        return found


def suggested_workspace(
    workspace: Workspace, suggestions: dict[Key, EntitySuggestion], pool: PoolFit
) -> Workspace:
    """``workspace`` with the suggestions in force: the pool, ``custom`` project limits (under
    ``dynamic``: the pool shared by the weights, each project capped at its limit), the agents'
    own limits."""
    from dataclasses import replace

    from devloop.config.models import Limit

    config = workspace.config
    sharing = config.resource_sharing
    per_project = dict(sharing.per_project_limits)
    for (project, agent), entry in suggestions.items():
        if not agent and entry.cpu is not None and entry.memory_bytes is not None:
            per_project[project] = Limit(entry.cpu, entry.memory_bytes)
    limits = config.global_.resource_limits
    pool_cpu = pool.suggested_cpu or pool.cpu
    pool_memory = pool.suggested_memory or pool.memory_bytes
    profiles = dict(sharing.profiles)
    for name, (_, _, new_cpu, new_memory) in pool.profiles.items():
        if new_cpu is not None and new_memory is not None and name in profiles:
            profiles[name] = replace(
                profiles[name], cpu_limit=new_cpu, memory_limit_bytes=new_memory
            )
    new = replace(
        config,
        global_=replace(
            config.global_,
            resource_limits=replace(limits, max_cpu=pool_cpu, max_memory_bytes=pool_memory),
        ),
        resource_sharing=replace(
            sharing,
            strategy="dynamic" if pool.dynamic else "custom",
            overcommit_cpu=pool.overcommit,
            cpu_limit=None,
            memory_limit_bytes=None,
            per_project_limits=per_project,
            profiles=profiles,
            weights=dict(pool.weights) if pool.dynamic else sharing.weights,
            adaptation=replace(sharing.adaptation, enabled=True)
            if pool.dynamic
            else sharing.adaptation,
        ),
    )
    agents = {}
    for project, found in workspace.agents.items():
        changed = dict(found.agents)
        for agent_name, definition in found.agents.items():
            wanted = suggestions.get((project, agent_name))
            if wanted is not None and wanted.cpu is not None and wanted.memory_bytes is not None:
                changed[agent_name] = replace(
                    definition,
                    limits=replace(
                        definition.limits,
                        max_cpu=wanted.cpu,
                        max_memory_bytes=wanted.memory_bytes,
                    ),
                )
        cap = found.resource_limits
        own = suggestions.get((project, ""))
        if own is not None and own.cpu is not None and own.memory_bytes is not None:
            # agents.json's project cap, raised to the suggestion as the patch raises it
            cap = Limit(
                None if cap.cpu is None else max(cap.cpu, own.cpu),
                None if cap.memory_bytes is None else max(cap.memory_bytes, own.memory_bytes),
            )
        agents[project] = replace(found, agents=changed, resource_limits=cap)
    return replace(workspace, config=new, agents=agents)


def _choose_pool(
    suggestions: dict[Key, EntitySuggestion],
    workspace: Workspace,
    allocation: Allocation,
    history: History,
    params: TuneParameters,
    priorities: dict[str, int],
    governing: Collection[str],
    objective: _Objective,
    say: Callable[[str], None],
) -> tuple[dict[Key, EntitySuggestion], PoolFit, dict[str, Side]]:
    """The pool for the suggestions and every run replayed under it. When the projects need
    more CPU than ``--max-pool`` allows, three ways to live with it are replayed with every run
    together: the limits fit into the pool by priority; each project at its need with the pool
    enforced on their sum (``overcommitCpu``: it pays only where the projects' runs overlap);
    and the ``dynamic`` strategy, the pool shared in proportion to the needs, each project
    capped at its need, the shares moved to the busy projects as the runtime moves them. The
    best is suggested: fewer runs failing on memory or never finishing, then the smaller worst
    p95 slowdown of a project, then the smaller mean; a tie keeps the earlier of the three."""
    from dataclasses import replace

    modes: tuple[PoolMode, ...] = (
        POOL_MODES if _needs_overcommit(suggestions, allocation, workspace, params) else ("fit",)
    )
    best: tuple[Any, ...] | None = None
    compared: list[dict[str, Any]] = []
    chosen: tuple[dict[Key, EntitySuggestion], PoolFit, dict[str, Side]] | None = None
    trials = []
    for mode in modes:
        trial = {key: replace(entry) for key, entry in suggestions.items()}
        pool = _fit_pool(trial, workspace, allocation, history, params, priorities, governing,
                         mode=mode)  # fmt: skip
        _cap_agents_at_projects(trial)
        trials.append((trial, pool))
    if len(modes) > 1:
        say(f"the projects need more than --max-pool: replaying {', '.join(modes)} side by side")
    replayed = objective.totals(trials, workspace, history)
    for mode, (trial, pool), totals in zip(modes, trials, replayed, strict=True):
        score = _pool_score(trial)
        compared.append(
            {
                "limits": mode,
                "overcommit_cpu": mode == "overcommit",
                "failed_or_unfinished": int(score[0]),
                "worst_p95": _finite(score[1]),
                "mean_p95": _finite(score[2]),
            }
        )
        if best is None or score < best:
            best, chosen = score, (trial, pool, totals)
    assert chosen is not None
    if len(compared) > 1:
        chosen[1].compared = compared
    return chosen


def _learn_profile(
    suggestions: dict[Key, EntitySuggestion],
    pool: PoolFit,
    totals: dict[str, Side],
    workspace: Workspace,
    allocation: Allocation,
    history: History,
    params: TuneParameters,
    objective: _Objective,
) -> LearnedProfile | None:
    """The time-of-day profile learned from the runs' daily pattern (:mod:`profiles`), replayed
    with every run under the suggested configuration, and walked forward (learned on days
    1..k, day k+1's runs replayed); suggested when no project's runs fare worse in either
    (failed or unfinished, slowed over 2x, worst and mean p95): then the projects' ``at_pool``
    and the suggested totals are the replay's with it."""
    from devloop.tune.profiles import NAME, QUIET_SHARE, LearnedProfile, daily_pattern, learn

    demand = objective.demand
    if not demand.runs:
        return None
    config = workspace.config
    if config.resource_sharing.timed:
        return LearnedProfile(why="the workspace has time-of-day profiles of its own")
    if NAME in config.resource_sharing.profiles or NAME in config.resource_profiles:
        return LearnedProfile(why=f"the workspace has a profile named {NAME!r} already")
    pool_cpu = pool.suggested_cpu or pool.cpu
    limits = {}
    for name, share in allocation.projects.items():
        entry = suggestions.get((name, ""))
        cpu = entry.cpu if entry is not None and entry.cpu is not None else share.cpu
        limits[name] = min(cpu, pool_cpu)
    pattern = daily_pattern(demand.runs, history, interval=demand.interval,
                            cores=objective.cores, host_cores=demand.host_cores, limits=limits,
                            scaled=not pool.overcommit)  # fmt: skip
    floor = params.min_cpu * len(limits)
    found = learn(pattern, pool_cpu=pool_cpu, floor=floor)
    if not found.hours:
        return found
    suggested = suggested_workspace(workspace, suggestions, pool)
    replayed = objective._replay_all(with_profile(suggested, found))
    by_project = _project_stats(replayed.runs)
    at_pool = {name: by_project.get(name) for name in limits}
    before = _profile_score(entry.at_pool for key, entry in suggestions.items() if not key[1])
    after = _profile_score(at_pool.values())
    found.compared = {"without": _profile_json(before), "with": _profile_json(after)}
    if _worse(after, before):
        found.why = (
            f"not suggested: with the pool at {found.cpu:g}% in the quiet hours "
            f"({', '.join(found.times)}) the replayed runs fare worse"
        )
        return found
    found.walk_forward = _profile_walk_forward(
        demand, history, suggested, objective, lambda day: learn(
            pattern, pool_cpu=pool_cpu, floor=floor, until=day * 24)
    )  # fmt: skip
    late = [fold for fold in found.walk_forward if fold["worse"]]
    if late:
        found.why = (
            f"not suggested: learned on the days before it, the profile makes day "
            f"{late[0]['day'] + 1}'s runs fare worse (walk-forward: "
            f"{', '.join(late[0]['times'])} at {late[0]['cpu_percent']:g}%)"
        )
        return found
    found.suggested = True
    found.why = (
        f"learned profile {NAME!r}: the runs use at most {QUIET_SHARE:.0%} of the pool at "
        f"{', '.join(found.times)} (local time, every hour recorded on {min(found.days)}+ days): "
        f"the pool there can be {found.cpu:g}% (reserved on average {found.reserved_cpu:g}% "
        f"instead of {pool_cpu:g}%), no project's runs faring worse in the replay or walked "
        "forward"
    )
    for key, entry in suggestions.items():
        if not key[1]:
            entry.at_pool = at_pool.get(key[0])
    side = Side()
    side.add(list(replayed.runs), found.reserved_cpu,
             pool.suggested_memory or pool.memory_bytes, float(history.n_hours))  # fmt: skip
    totals["suggested"] = side
    return found


def _profile_walk_forward(
    demand: Demand,
    history: History,
    suggested: Workspace,
    objective: _Objective,
    learned_before: Callable[[int], LearnedProfile],
) -> list[dict[str, Any]]:
    """For each day k after the first two of the history, the profile learned on days 1..k
    (``learned_before(k)``) and day k+1's runs replayed under the suggested configuration
    with it and without it."""
    from devloop.tune.profiles import MIN_DAYS
    from devloop.tune.replay import replay

    folds = []
    origin = history.origin.timestamp()
    for day in range(MIN_DAYS, math.ceil(history.n_hours / 24)):
        start, stop = origin + day * 86_400, origin + (day + 1) * 86_400
        block = [run for run in demand.runs if start <= run.queued_at < stop]
        if not block:
            continue
        past = learned_before(day)
        if not past.hours:
            continue
        scores = []
        for config in (suggested, with_profile(suggested, past)):
            replayed = replay(block, config, cores=objective.cores, interval=demand.interval,
                              host_cores=demand.host_cores)  # fmt: skip
            scores.append(_profile_score(_project_stats(replayed.runs).values()))
        without, with_it = scores
        folds.append({
            "day": day, "runs": len(block), "times": past.times, "cpu_percent": past.cpu,
            "without": _profile_json(without), "with": _profile_json(with_it),
            "worse": _worse(with_it, without),
        })  # fmt: skip
    return folds


def _project_stats(runs: Iterable[ReplayedRun]) -> dict[str, dict[str, Any]]:
    """Per project of ``runs``, the summary of its runs' slowdowns (``at_pool``'s form)."""
    by_project: dict[str, list[ReplayedRun]] = {}
    for run in runs:
        by_project.setdefault(run.project, []).append(run)
    return {
        name: stats.to_json()
        for name, found in by_project.items()
        if (stats := slowdowns(found)) is not None
    }


def _profile_score(at_pools: Iterable[dict[str, Any] | None]) -> tuple[float, ...]:
    """:func:`_score` with the runs slowed more than 2x second: a profile is an extra, and
    must not make a run much slower that was not (a p95 can hide one such run)."""
    found = list(at_pools)
    failed, worst, mean = _score(found)
    return (failed, float(sum((f or {}).get("slowed_2x") or 0 for f in found)), worst, mean)


def _profile_json(score: tuple[float, ...]) -> dict[str, Any]:
    return {"failed_or_unfinished": int(score[0]), "slowed_2x": int(score[1]),
            "worst_p95": _finite(score[2]), "mean_p95": _finite(score[3])}  # fmt: skip


def _worse(score: tuple[float, ...], than: tuple[float, ...]) -> bool:
    """Whether any part of ``score`` is worse than ``than``'s."""
    return any(a > b + 1e-9 for a, b in zip(score, than, strict=True))


def with_profile(workspace: Workspace, learned: LearnedProfile) -> Workspace:
    """``workspace`` with the learned profile among its time-of-day profiles."""
    from dataclasses import replace

    from devloop.config.models import Profile
    from devloop.config.timewindow import parse_window
    from devloop.tune.profiles import NAME

    sharing = workspace.config.resource_sharing
    profile = Profile(NAME, cpu_limit=learned.cpu,
                      times=tuple(parse_window(text) for text in learned.times))  # fmt: skip
    config = replace(workspace.config, resource_sharing=replace(
        sharing, profiles={**sharing.profiles, NAME: profile}))  # fmt: skip
    return replace(workspace, config=config)


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def _needs_overcommit(
    suggestions: dict[Key, EntitySuggestion],
    allocation: Allocation,
    workspace: Workspace,
    params: TuneParameters,
) -> bool:
    """Whether the projects' suggested CPU, with the shares of the projects without one, is
    more than the largest pool allowed."""
    fitted = {key[0] for key, e in suggestions.items() if not key[1] and e.cpu is not None}
    needed = sum(e.cpu or 0.0 for key, e in suggestions.items() if not key[1])
    needed += sum(p.cpu for name, p in allocation.projects.items() if name not in fitted)
    base = workspace.config.pool
    current = base.cpu if base.cpu is not None else allocation.pool.cpu
    return needed > max(params.max_pool, current) + 1e-9


def _pool_score(suggestions: dict[Key, EntitySuggestion]) -> tuple[float, float, float]:
    """How bad the projects' runs fare with every project at once (lower is better)."""
    return _score(entry.at_pool for key, entry in suggestions.items() if not key[1])


def _score(at_pools: Iterable[dict[str, Any] | None]) -> tuple[float, float, float]:
    """Runs failing on memory or never finishing, the worst and the mean p95 slowdown over
    the projects' ``at_pool`` summaries (lower is better)."""
    failed, p95s = 0.0, []
    for found in at_pools:
        if not found:
            continue
        failed += (found.get("failed_memory") or 0) + (found.get("not_finished") or 0)
        p95 = found.get("p95")
        p95s.append(math.inf if p95 is None else float(p95))
    if not p95s:
        return (failed, 0.0, 0.0)
    return (failed, max(p95s), sum(p95s) / len(p95s))


def _mask(history: History, hours: range) -> Any:
    import numpy as np

    mask = np.zeros(history.n_hours, dtype=bool)
    mask[list(hours)] = True
    return mask


def _pool_patch(suggestions: Suggestions, workspace: Workspace) -> None:
    """Raise the pool in the patch when the suggested projects need more than it holds."""
    pool = suggestions.pool
    for name, (cpu, memory, new_cpu, new_memory) in pool.profiles.items():
        if new_cpu is None or new_memory is None:
            continue
        body = _grown(("cpuLimit", "memoryLimit"), cpu, memory, new_cpu, new_memory)
        if body:
            sharing_patch = suggestions.patch.setdefault("resource_sharing", {})
            sharing_patch.setdefault("profiles", {})[name] = body
    if pool.overcommit:
        suggestions.patch.setdefault("resource_sharing", {})["overcommitCpu"] = True
    if pool.learned is not None and pool.learned.suggested:
        from devloop.tune.profiles import NAME

        cpu = pool.learned.cpu
        sharing_patch = suggestions.patch.setdefault("resource_sharing", {})
        sharing_patch.setdefault("profiles", {})[NAME] = {
            "cpuLimit": json_number(cpu),
            "times": pool.learned.times,
        }
    if pool.dynamic:
        sharing_patch = suggestions.patch.setdefault("resource_sharing", {})
        current = workspace.config.resource_sharing
        sharing_patch.pop("strategy", None)
        if current.strategy != "dynamic":
            sharing_patch["strategy"] = "dynamic"
        sharing_patch["weights"] = {name: json_number(w) for name, w in pool.weights.items()}
        if not current.adaptation.enabled:
            sharing_patch["adaptation"] = {"enabled": True}
    if pool.suggested_cpu is None or pool.suggested_memory is None:
        return
    raised = _grown(("maxCpu", "maxMemory"), pool.cpu, pool.memory_bytes, pool.suggested_cpu,
                    pool.suggested_memory)  # fmt: skip
    if not raised:
        return
    # The pool is resource_sharing's cpuLimit/memoryLimit where given (never above the global
    # maxima), else the global maxima: raise both.
    suggestions.patch.setdefault("global", {})["resourceLimits"] = raised
    sharing = workspace.config.resource_sharing
    body = suggestions.patch.setdefault("resource_sharing", {})
    if sharing.cpu_limit is not None and "maxCpu" in raised:
        body["cpuLimit"] = raised["maxCpu"]
    if sharing.memory_limit_bytes is not None and "maxMemory" in raised:
        body["memoryLimit"] = raised["maxMemory"]
    if not body:
        del suggestions.patch["resource_sharing"]


def _grown(
    keys: tuple[str, str], cpu: float, memory: int, new_cpu: float, new_memory: int
) -> dict[str, Any]:
    """A pool's CPU and memory under ``keys`` as a patch writes them (a whole percent as an
    int, memory in whole MB), each only where it grew."""
    out: dict[str, Any] = {}
    if new_cpu > cpu + 1e-9:
        out[keys[0]] = json_number(new_cpu)
    if new_memory > memory:
        out[keys[1]] = f"{new_memory // MIB}MB"
    return out


def profiles_at(workspace: Workspace, moments: list[float]) -> set[str]:
    """The names of the time-of-day profiles (``resource_sharing.profiles`` with ``times``)
    in force at some of ``moments`` (epoch seconds, read in local time as the runtime reads
    them); ``""`` for moments under the base pool."""
    from devloop.config.allocation import select_profile

    config = workspace.config
    if not config.resource_sharing.timed:
        return {""} if moments else set()
    minutes = {datetime.fromtimestamp(moment).time().replace(second=0, microsecond=0)
               for moment in moments}  # fmt: skip
    return {select_profile(config, at=minute)[0] or "" for minute in minutes}


def _fit_all(
    history: History,
    allocation: Allocation,
    params: TuneParameters,
    reference: datetime,
    hours: range,
    held: dict[Key, float],
    runs: dict[Key, int],
) -> dict[Key, tuple[Fit, Any]]:
    import numpy as np

    mask = np.zeros(history.n_hours, dtype=bool)
    mask[list(hours)] = True
    out: dict[Key, tuple[Fit, Any]] = {}
    for key, entity in history.entities.items():
        current = _current(allocation, key)[1]
        result = fit(
            history,
            entity,
            mask,
            reference,
            params,
            current_memory=float(current) if current is not None else None,
            held_seconds=held.get(key, 0.0),
            runs=runs.get(key, 0),
        )
        if result.cpu is not None and result.memory_bytes is not None:
            result = Fit(
                round_cpu(result.cpu),
                round_memory(result.memory_bytes),
                result.ticks,
                result.seconds,
                result.censored_cpu,
                result.censored_memory,
                result.leak,
            )
        leak = find_leak(entity, mask, params) if hours.stop == history.n_hours else None
        out[key] = (result, leak)
    return out


def _current(allocation: Allocation, key: Key) -> tuple[float | None, int | None]:
    project, agent = key
    if agent:
        found = allocation.agents.get(f"{project}/{agent}")
        return (found.cpu, found.memory_bytes) if found else (None, None)
    p = allocation.projects.get(project)
    return (p.cpu, p.memory_bytes) if p else (None, None)


def _cap_agents(entities: dict[Key, tuple[Fit, Any]]) -> None:
    """An agent's limit never exceeds its project's."""
    for key, (result, leak) in list(entities.items()):
        project = entities.get((key[0], ""))
        if not key[1] or project is None or result.cpu is None or result.memory_bytes is None:
            continue
        top = project[0]
        if top.cpu is None or top.memory_bytes is None:
            continue
        capped = Fit(
            min(result.cpu, top.cpu),
            min(result.memory_bytes, top.memory_bytes),
            result.ticks,
            result.seconds,
            result.censored_cpu,
            result.censored_memory,
            result.leak,
            result.reason,
        )
        entities[key] = (capped, leak)


def _cap_agents_at_projects(suggestions: dict[Key, EntitySuggestion]) -> None:
    """After the pool: an agent's CPU and memory never exceed its project's (as suggested, or
    as the pool scaled it), which is what the runtime would hold it at anyway."""
    for (project, agent), entry in suggestions.items():
        top = suggestions.get((project, ""))
        if not agent or top is None or entry.cpu is None or top.cpu is None:
            continue
        capped = []
        if entry.cpu > top.cpu:
            entry.cpu = top.cpu
            capped.append(f"{top.cpu:g}% CPU")
        if (
            entry.memory_bytes is not None
            and top.memory_bytes is not None
            and entry.memory_bytes > top.memory_bytes
        ):
            entry.memory_bytes = top.memory_bytes
            capped.append(f"{format_size(top.memory_bytes)} memory")
        if capped:
            entry.rationale = (
                entry.rationale.rstrip(".") + f"; capped at its project's {' and '.join(capped)}."
            )


def _grant(
    wanted: dict[str, float], floors: dict[str, float], capacity: float, priorities: dict[str, int]
) -> dict[str, float]:
    """Fit ``wanted`` into ``capacity`` by priority: every project keeps its floor (or what it
    wants, if less); the rest is shared in proportion to what each wants times a priority
    weight (4 for priority 0, 3, 2, 1 for priority 3), never above what it wants (what a
    project cannot use goes round again to the others)."""
    granted = {name: min(wanted[name], floors[name]) for name in wanted}
    if sum(granted.values()) > capacity:  # not even the floors fit: all by weight
        granted = dict.fromkeys(wanted, 0.0)
    left = capacity - sum(granted.values())
    hungry = {name for name in wanted if wanted[name] > granted[name]}
    while hungry and left > 1e-9:
        weight = {n: wanted[n] * (4 - min(max(priorities.get(n, 2), 0), 3)) for n in hungry}
        total = sum(weight.values())
        if total <= 0:
            break
        given = 0.0
        for name in sorted(hungry):
            part = min(left * weight[name] / total, wanted[name] - granted[name])
            granted[name] += part
            given += part
        left -= given
        hungry = {n for n in hungry if wanted[n] - granted[n] > 1e-9}
        if given <= 1e-12:
            break
    return granted


def _fit_pool(
    suggestions: dict[Key, EntitySuggestion],
    workspace: Workspace,
    allocation: Allocation,
    history: History,
    params: TuneParameters,
    priorities: dict[str, int],
    governing: Collection[str] = (),
    *,
    mode: PoolMode = "fit",
) -> PoolFit:
    """The pool the projects' suggestions need. When the pool in force cannot hold them, the
    pool is raised to what they need, up to ``max_pool`` CPU; beyond that the CPU limits are fit
    into ``max_pool`` by priority (flagged ``scaled_to_pool``; the report shows the slowdown
    that leaves). Memory is never scaled under a suggestion (which is never under a peak): the
    pool is raised to hold it, and a note says when that is more than the machine should give."""
    from devloop.config.allocation import Pool

    base = workspace.config.pool
    pool = Pool(
        base.cpu if base.cpu is not None else allocation.pool.cpu,
        base.memory_bytes if base.memory_bytes is not None else allocation.pool.memory_bytes,
    )
    fitted = {
        key[0]: entry
        for key, entry in suggestions.items()
        if not key[1] and entry.cpu is not None and entry.memory_bytes is not None
    }
    # Projects without a suggestion keep their current share inside the pool.
    reserved_cpu = sum(p.cpu for name, p in allocation.projects.items() if name not in fitted)
    reserved_mem = sum(
        p.memory_bytes for name, p in allocation.projects.items() if name not in fitted
    )
    cpu_want = {n: float(e.cpu or 0.0) for n, e in fitted.items()}
    needed_cpu = sum(cpu_want.values()) + reserved_cpu
    needed_mem = int(sum(e.memory_bytes or 0 for e in fitted.values()) + reserved_mem)
    fits = needed_cpu <= pool.cpu + 1e-9 and needed_mem <= pool.memory_bytes
    result = PoolFit(pool.cpu, pool.memory_bytes, needed_cpu, needed_mem, fits)
    # The time-of-day profiles under which runs were triggered are pools for their hours:
    # one too small for the limits is raised like the base pool (a profile no run was
    # triggered under is left as it is: nothing says what it needs).
    short = []
    for name in sorted(n for n in governing if n):
        profile = workspace.config.resource_sharing.profiles[name]
        cpu = profile.cpu_limit if profile.cpu_limit is not None else pool.cpu
        memory = (
            profile.memory_limit_bytes
            if profile.memory_limit_bytes is not None
            else pool.memory_bytes
        )
        if needed_cpu <= cpu + 1e-9 and needed_mem <= memory:
            result.profiles[name] = (cpu, memory, None, None)
            continue
        top = max(params.max_pool, cpu)
        new_cpu = round_cpu(min(max(needed_cpu, cpu), top))
        new_memory = round_memory(max(needed_mem, memory))
        result.profiles[name] = (cpu, memory, new_cpu, new_memory)
        short.append(
            f"profile {name} ({cpu:g}% CPU and {format_size(memory)}, in force when runs were "
            f"triggered) to {new_cpu:g}% and {format_size(new_memory)}"
        )
    profile_note = f"; the patch raises the {', the '.join(short)}" if short else ""
    if fits:
        if short:
            result.fits = False
            result.note = (
                "the pool holds the limits the runs need (CPU "
                f"{needed_cpu:.1f}%, memory {format_size(needed_mem)})" + profile_note
            )
        return result
    top = max(params.max_pool, pool.cpu)
    result.suggested_cpu = round_cpu(min(max(needed_cpu, pool.cpu), top))
    result.suggested_memory = round_memory(max(needed_mem, pool.memory_bytes))
    parts = []
    if needed_cpu > pool.cpu + 1e-9:
        parts.append(f"CPU {needed_cpu:.1f}% against a pool of {pool.cpu:g}%")
    if needed_mem > pool.memory_bytes:
        parts.append(f"memory {format_size(needed_mem)} against {format_size(pool.memory_bytes)}")
    note = (
        "the pool is too small for the limits the runs need ("
        + " and ".join(parts)
        + f"): the patch raises it to {result.suggested_cpu:g}% CPU and "
        f"{format_size(result.suggested_memory)}"
    )
    if needed_cpu > top + 1e-9 and mode != "fit":
        for entry in fitted.values():
            if (entry.cpu or 0.0) > top:
                entry.needed_cpu = entry.cpu
                entry.cpu = round_cpu(top)
    if needed_cpu > top + 1e-9 and mode == "overcommit":
        result.overcommit = True
        note += (
            f", the largest allowed (--max-pool {top:g}%); the projects' CPU limits still "
            f"total {needed_cpu:.1f}%: overcommitCpu lets each keep what its runs need, the "
            "pool enforced on their sum (their runs overlap little in the replay; see each "
            "project's slowdown at the pool)"
        )
    elif needed_cpu > top + 1e-9 and mode == "dynamic":
        result.dynamic = True
        # Each project's share of the pool in proportion to its CPU need (a project without a
        # suggestion: its share now), capped at its need by perProjectLimits. The memory pool
        # splits by the same weights, so it is raised until every share holds its project's
        # memory need: the dynamic strategy never starts a project under a run's peak.
        memory_need = {n: e.memory_bytes or 0 for n, e in fitted.items()}
        for name, share in allocation.projects.items():
            if name not in fitted:
                cpu_want[name] = share.cpu
                memory_need[name] = share.memory_bytes
        result.weights = {n: max(round_cpu(w), 0.1) for n, w in sorted(cpu_want.items())}
        total = math.fsum(result.weights.values())
        raised = result.suggested_memory
        for name, weight in result.weights.items():
            share_needed = round_memory(math.ceil(memory_need[name] * total / weight))
            result.suggested_memory = max(result.suggested_memory, share_needed)
        if result.suggested_memory > raised:
            note = note.replace(
                f"% CPU and {format_size(raised)}",
                f"% CPU and {format_size(result.suggested_memory)} (the dynamic pool splits "
                "memory by the weights too: each project's share holds its memory limit)",
                1,
            )
        note += (
            f", the largest allowed (--max-pool {top:g}%); the projects' CPU limits still "
            f"total {needed_cpu:.1f}%: the dynamic strategy shares the pool in proportion to "
            "their needs and moves it to the projects that are busy (see each project's "
            "slowdown at the pool)"
        )
    elif needed_cpu > top + 1e-9:
        granted = _grant(
            cpu_want, {n: params.min_cpu for n in cpu_want}, top - reserved_cpu, priorities
        )
        for name, entry in fitted.items():
            new_cpu = math.floor(granted[name] * 10 + 1e-9) / 10
            if new_cpu < (entry.cpu or 0.0):
                entry.needed_cpu = entry.cpu
                entry.cpu = new_cpu
                entry.scaled = True
                result.scaled.append(name)
        note += (
            f", the largest allowed (--max-pool {top:g}%); even so the projects' CPU limits "
            "were fit into it by priority, and the runs are slower than the target: see "
            "each project's slowdown at the pool"
        )
    note += profile_note
    machine_mem = int(history.memory_total * params.machine_memory_share)
    if machine_mem and result.suggested_memory > machine_mem:
        note += (
            f"; memory {format_size(result.suggested_memory)} is more than "
            f"{params.machine_memory_share:.0%} of this machine's memory, but no limit is set "
            "under a peak its runs reached"
        )
    result.note = note
    return result


def _suggestion(
    history: History,
    key: Key,
    result: Fit,
    leak: Any,
    allocation: Allocation,
    params: TuneParameters,
    backtest: EntityBacktest | None,
    priorities: dict[str, int],
    runs: int = 0,
) -> EntitySuggestion:
    import numpy as np

    entity = history.entities[key]
    stats = entity.stats
    current_cpu, current_memory = _current(allocation, key)
    whole = np.ones(history.n_hours, dtype=bool)
    counts = entity.hist_count
    peaks = window_peaks(entity, whole, int(params.memory_window // 3600))
    cpu_evidence = {
        "samples": int(stats["ticks"].sum()),
        "p50": _q(entity.hist_bin, counts, 50),
        "p95": _q(entity.hist_bin, counts, 95),
        "p99": _q(entity.hist_bin, counts, 99),
        "max": round(float(stats["cpu_max"].max()), 4) if len(stats["cpu_max"]) else None,
        "mean": round(float(stats["cpu_sum"].sum() / max(stats["ticks"].sum(), 1)), 4),
    }
    memory_evidence: dict[str, Any] = {
        "samples": int(stats["ticks"].sum()),
        "window_seconds": params.memory_window,
        "windows": len(peaks),
    }
    if len(peaks):
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            memory_evidence[name] = int(np.percentile(peaks, q))
        memory_evidence["max"] = int(peaks.max())
        memory_evidence["peaks"] = [int(v) for v in np.sort(peaks)[::-1][:5]]
    level = confidence(result.seconds, result.ticks, params, runs)
    censoring = {
        "cpu_ticks": int(stats["cens_cpu"].sum()),
        "memory_ticks": int(stats["cens_mem"].sum()),
        "paused_ticks": int(stats["paused"].sum()),
        "pause_events": entity.pause_events,
    }
    leak_json = (
        None
        if leak is None
        else {
            "mb_per_hour": round(leak.mb_per_hour, 3),
            "tau": round(leak.tau, 3),
            "hours": leak.hours,
        }
    )
    return EntitySuggestion(
        project=key[0],
        agent=key[1],
        current_cpu=current_cpu,
        current_memory=current_memory,
        cpu=result.cpu,
        memory_bytes=result.memory_bytes,
        evidence={"cpu_percent": cpu_evidence, "memory_bytes": memory_evidence},
        confidence=level,
        censored_cpu=result.censored_cpu,
        censored_memory=result.censored_memory,
        leak=leak_json,
        censoring=censoring,
        backtest=backtest,
        rationale=_rationale(result, leak, current_memory, params, censoring),
        priority=priorities.get(key[0]) if not key[1] else None,
    )


def _q(bins: Any, counts: Any, q: float) -> float | None:
    value = weighted_percentile(bins, counts, q)
    return None if value is None else round(value, 4)


def _rationale(
    result: Fit,
    leak: Any,
    current_memory: int | None,
    params: TuneParameters,
    censoring: dict[str, Any],
) -> str:
    if result.cpu is None or result.memory_bytes is None:
        return f"No suggestion: {result.reason}."
    memory_rule = (
        "the max" if params.memory_percentile is None else f"p{params.memory_percentile:g}"
    )
    text = (
        f"CPU is the {_hl(params.half_life)}-half-life p{params.cpu_percentile:g} plus "
        f"{params.cpu_margin:.0%}, memory the {memory_rule} of "
        f"{params.memory_window / 3600:g} h peaks plus {params.memory_margin:.0%} (never below "
        f"the highest peak), over {result.ticks} samples"
    )
    if result.censored_cpu or result.censored_memory:
        what = []
        if censoring["paused_ticks"]:
            what.append(f"paused or throttled for {censoring['paused_ticks']} ticks")
        if censoring["cpu_ticks"] - censoring["paused_ticks"] > 0 or censoring["memory_ticks"]:
            what.append("at its limit")
        text += f"; raised because demand was hidden ({', '.join(what)})"
    if leak is not None:
        text += (
            f"; memory grows {leak.mb_per_hour:.1f} MB/h (a leak): fix it, the limit is not "
            "raised to feed it"
        )
    return text + "."


def _why(entry: EntitySuggestion, params: TuneParameters, *, pool: PoolFit | None = None) -> str:
    """One sentence of why, for an entity whose runs were replayed (else the percentile's)."""
    text = _why_alone(entry, params)
    if pool is not None and (pool.overcommit or pool.dynamic) and not entry.agent:
        p95 = (entry.at_pool or {}).get("p95")
        shown = "some never finish" if p95 is None else f"p95 slowdown {p95}x"
        how = (
            "the projects' limits overcommit the pool (overcommitCpu)"
            if pool.overcommit
            else "the dynamic strategy shares the pool in proportion to the projects' needs"
        )
        if entry.at_pool:
            text = text.rstrip(".") + f"; {how}: with every project at once, {shown}."
    return text


def _why_alone(entry: EntitySuggestion, params: TuneParameters) -> str:
    found = entry.objective or {}
    if found.get("method") != "replay" or entry.cpu is None or entry.memory_bytes is None:
        if found.get("why") and entry.cpu is not None:  # again after scaling: one prefix
            return "No runs recorded: " + entry.rationale.removeprefix("No runs recorded: ")
        return entry.rationale
    target = f"{params.max_slowdown:g}x"
    peak = found.get("runs_peak_memory_bytes")
    memory = f"memory {format_size(entry.memory_bytes)} holds the runs' peak of " + (
        format_size(peak) if peak else "0B"
    )
    if found.get("kept_current"):
        return f"Keeps its current limit: {found['kept_current']}{_flags(entry)}."
    if entry.scaled and entry.needed_cpu is not None:
        at_pool = entry.at_pool or {}
        slowdown = at_pool.get("p95")
        shown = "runs that never finish" if slowdown is None else f"p95 slowdown {slowdown}x"
        return (
            f"Its {found['runs']} runs need {entry.needed_cpu:g}% CPU for a p95 slowdown of "
            f"{target}, but the largest allowed pool grants {entry.cpu:g}% by priority: "
            f"{shown} with every project at once; {memory}{_flags(entry)}."
        )
    return (
        f"{entry.cpu:g}% CPU is the smallest limit under which the replayed p95 slowdown of its "
        f"{found['runs']} runs is at most {target} (their peak: "
        f"{found.get('runs_peak_cpu_percent')}%); {memory}{_flags(entry)}."
    )


def _flags(entry: EntitySuggestion) -> str:
    """The censoring and leak clauses of the percentile's sentence, for the replay's."""
    text = ""
    censoring = entry.censoring or {}
    if entry.censored_cpu or entry.censored_memory:
        what = []
        if censoring.get("paused_ticks"):
            what.append(f"paused or throttled for {censoring['paused_ticks']} ticks")
        cpu_ticks = censoring.get("cpu_ticks", 0) - censoring.get("paused_ticks", 0)
        if cpu_ticks > 0 or censoring.get("memory_ticks"):
            what.append("at its limit")
        text += f"; raised because demand was hidden ({', '.join(what)})"
    if entry.leak is not None:
        text += (
            f"; memory grows {entry.leak['mb_per_hour']:.1f} MB/h (a leak): fix it, the limit is "
            "not raised to feed it"
        )
    return text


def _hl(seconds: float) -> str:
    return f"{seconds / 3600:g} h"


__all__ = ["autotune", "round_cpu", "round_memory"]
