"""``autotune``: suggested limits per project and agent from the recorded history, backtested.

The method is in docs/autotune.md; the pieces are :mod:`.history` (one pass over the store),
:mod:`.fit` (one entity's limits), :mod:`.backtest` (walk-forward), :mod:`.suggestions` (the
records it returns, and their JSON) and :mod:`.patch` (the workspace.json and agents.json merge
patches).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.tune.backtest import (
    EntityBacktest,
    Fold,
    Side,
    blocks,
    current_side,
    replay,
    suggested_side,
)
from devloop.tune.fit import Fit, confidence, find_leak, fit, weighted_percentile, window_peaks
from devloop.tune.history import History, Key, read_history
from devloop.tune.params import TuneParameters
from devloop.tune.suggestions import EntitySuggestion, PoolFit, Suggestions, sha256_file
from devloop.units import MIB, format_size

if TYPE_CHECKING:
    from devloop.analytics import Store, TimeRange
    from devloop.config import Workspace
    from devloop.config.allocation import Allocation


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
) -> Suggestions:
    """Suggested limits for every project and agent of the workspace, from the history in
    ``time_range`` (all of it by default), with a walk-forward backtest and the patches."""
    from devloop.analytics._db import open_store
    from devloop.config import WORKSPACE_FILE, load_workspace
    from devloop.config.allocation import allocate
    from devloop.tune.patch import build_patches

    params = params or TuneParameters()
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
    notes = [history.limits_note] if history.limits_note else []
    priorities = {p.name: p.priority for p in workspace.config.projects}

    entities = _fit_all(history, allocation, params, history.end, range(history.n_hours))
    pool = _fit_pool(entities, workspace, allocation, history, params, priorities)
    if pool.note:
        notes.append(pool.note)
    _cap_agents(entities)

    unit, count = blocks(history)
    folds: dict[Key, list[Fold]] = {key: [] for key in history.entities}
    for k in range(1, count):
        fitted = _fit_all(
            history, allocation, params, history.hour_start(k * unit), range(k * unit)
        )
        _fit_pool(fitted, workspace, allocation, history, params, priorities)
        _cap_agents(fitted)
        hours = min(unit, history.n_hours - k * unit)
        for key, (result, _) in fitted.items():
            if result.cpu is not None and result.memory_bytes is not None:
                folds[key].append(Fold(k * unit, hours, result.cpu, result.memory_bytes))
    replay(history, folds)

    suggestions: dict[Key, EntitySuggestion] = {}
    totals = {"current": Side(), "suggested": Side()}
    for key, (result, leak) in entities.items():
        entity_folds = folds[key]
        backtest = None
        if entity_folds:
            backtest = EntityBacktest(
                current_side(history, key, entity_folds),
                suggested_side(entity_folds),
                entity_folds,
            )
            if not key[1]:
                totals["current"].add(backtest.current)
                totals["suggested"].add(backtest.suggested)
        suggestions[key] = _suggestion(
            history, key, result, leak, allocation, params, backtest, priorities
        )
    for name in pool.scaled:
        suggestions[(name, "")].scaled = True
    if count < 2:
        notes.append("history too short for a backtest (it needs two hours)")
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
    return result_record


def _fit_all(
    history: History,
    allocation: Allocation,
    params: TuneParameters,
    reference: datetime,
    hours: range,
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
    entities: dict[Key, tuple[Fit, Any]],
    workspace: Workspace,
    allocation: Allocation,
    history: History,
    params: TuneParameters,
    priorities: dict[str, int],
) -> PoolFit:
    from devloop.config.allocation import Pool

    # The base pool: custom limits are checked against it (a profile's pool scales them).
    base = workspace.config.pool
    pool = Pool(
        base.cpu if base.cpu is not None else allocation.pool.cpu,
        base.memory_bytes if base.memory_bytes is not None else allocation.pool.memory_bytes,
    )
    fitted = {
        key[0]: result
        for key, (result, _) in entities.items()
        if not key[1] and result.cpu is not None and result.memory_bytes is not None
    }
    # Projects without a suggestion keep their current share inside the pool.
    reserved_cpu = sum(p.cpu for name, p in allocation.projects.items() if name not in fitted)
    reserved_mem = sum(
        p.memory_bytes for name, p in allocation.projects.items() if name not in fitted
    )
    cpu_want = {n: float(r.cpu or 0.0) for n, r in fitted.items()}
    mem_want = {n: float(r.memory_bytes or 0) for n, r in fitted.items()}
    needed_cpu = sum(cpu_want.values()) + reserved_cpu
    needed_mem = int(sum(mem_want.values()) + reserved_mem)
    fits = needed_cpu <= pool.cpu + 1e-9 and needed_mem <= pool.memory_bytes
    result = PoolFit(pool.cpu, pool.memory_bytes, needed_cpu, needed_mem, fits)
    if fits:
        return result
    cpu = _grant(
        cpu_want, {n: params.min_cpu for n in cpu_want}, pool.cpu - reserved_cpu, priorities
    )
    mem = _grant(
        mem_want,
        {n: float(params.min_memory) for n in mem_want},
        float(pool.memory_bytes - reserved_mem),
        priorities,
    )
    for name, original in fitted.items():
        new_cpu = math.floor(cpu[name] * 10 + 1e-9) / 10
        new_mem = math.floor(mem[name] / MIB + 1e-9) * MIB
        if new_cpu < (original.cpu or 0) or new_mem < (original.memory_bytes or 0):
            result.scaled.append(name)
        entities[(name, "")] = (
            Fit(
                min(new_cpu, original.cpu or 0),
                min(new_mem, original.memory_bytes or 0),
                original.ticks,
                original.seconds,
                original.censored_cpu,
                original.censored_memory,
                original.leak,
            ),
            entities[(name, "")][1],
        )
    machine_cpu = 100.0
    machine_mem = int(history.memory_total * params.machine_memory_share)
    result.suggested_cpu = round_cpu(min(max(needed_cpu, pool.cpu), machine_cpu))
    result.suggested_memory = min(round_memory(max(needed_mem, pool.memory_bytes)), machine_mem)
    short = []
    if needed_cpu > pool.cpu + 1e-9:
        short.append(f"CPU {needed_cpu:.1f}% against a pool of {pool.cpu:g}%")
    if needed_mem > pool.memory_bytes:
        short.append(f"memory {format_size(needed_mem)} against {format_size(pool.memory_bytes)}")
    fit_machine = needed_cpu <= machine_cpu and needed_mem <= machine_mem
    result.note = (
        "the pool itself is too small: the projects' suggested limits need "
        + " and ".join(short)
        + "; they were scaled down to fit it, by priority. Suggested pool: "
        f"{result.suggested_cpu:g}% CPU and {format_size(result.suggested_memory)} "
        "(global.resourceLimits maxCpu/maxMemory)"
        + ("" if fit_machine else ", as much as this machine allows, which is still short")
    )
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
    level = confidence(result.seconds, result.ticks, params)
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


def _hl(seconds: float) -> str:
    return f"{seconds / 3600:g} h"


__all__ = ["autotune", "round_cpu", "round_memory"]
