"""The enforcement's live state file, ``<workspace-dir>/enforcement-state.json``: its format,
its writer and its reader, in one place.

The enforcer (:class:`~devloop.core.resource_manager.ResourceManager` with ``enforce``) replaces
it at every check (:func:`build`, then :func:`write`) and removes it when it stops; the
dashboard and the Prometheus exporter read it with :func:`read`, which refuses a file that is
not one, from another version, or left over by a writer that died. The shape (version 1)::

    {"version": 1, "ts": <epoch seconds>, "pid": <writer>, "interval": <checkInterval>,
     "strategy": ..., "profile": ..., "enforcement": "pause" | "warn" | "throttle",
     "workspace": {"cpu_percent", "memory_bytes", "cpu_limit", "memory_limit_bytes"},
     "projects": {name: {... as the workspace's, "priority"}},
     "agents": {"project/agent": {"project", "agent", "state", "pids", "cpu_percent",
                "memory_bytes", "fds", "threads", "cpu_limit", "memory_limit_bytes",
                "pauses", "resumes"}},
     "queue": [{"project", "agent", "since", ...}], "pauses_total": <int>}

CPU is percent of the whole machine, memory bytes; an agent's limits are null when it has none
of its own; ``state`` is running, paused, throttled, queued or idle.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop._proc import pid_alive

if TYPE_CHECKING:
    from devloop.core.policy import AgentKey, Policy, Usage

STATE_NAME = "enforcement-state.json"
STATE_VERSION = 1

#: A state file older than this many check intervals (and at least STALE_FLOOR seconds) is
#: left over from a writer that died without removing it.
STALE_INTERVALS = 30
STALE_FLOOR = 300.0


def build(
    policy: Policy,
    usage: Usage,
    *,
    now: float,
    interval: float,
    enforcement: str,
    agents: Iterable[AgentKey],
    queue: list[dict[str, Any]],
) -> dict[str, Any]:
    """The state at ``now``: the policy's limits and holds, ``usage``, every agent of
    ``agents`` (the enabled ones) and of the usage, and the overflow ``queue``."""
    allocation = policy.allocation
    pool = allocation.pool
    cpu, memory = policy.totals(usage)
    projects = {}
    for name, share in allocation.projects.items():
        p_cpu, p_memory = policy.totals(usage, name)
        projects[name] = {
            "cpu_percent": round(p_cpu, 3), "memory_bytes": p_memory,
            "cpu_limit": share.cpu, "memory_limit_bytes": share.memory_bytes,
            "priority": share.priority,
        }  # fmt: skip
    keys: set[AgentKey] = set(usage.agents) | set(policy.paused) | set(policy.counts)
    keys.update(agents)
    queued = {(q["project"], q["agent"]) for q in queue}
    agents_state = {}
    for key in sorted(keys):
        found = usage.agents.get(key)
        own = policy.agent_limits(*key)
        counts = policy.counts.get(key, [0, 0])
        state = policy.state_of(key, found)
        if state == "idle" and key in queued:
            state = "queued"
        agents_state["/".join(key)] = {
            "project": key[0], "agent": key[1], "state": state,
            "pids": [p[0] for p in found.processes] if found else [],
            "cpu_percent": round(found.cores / usage.cores * 100, 3) if found else 0.0,
            "memory_bytes": found.memory_bytes if found else 0,
            "fds": found.fds if found else 0,
            "threads": found.threads if found else 0,
            "cpu_limit": own[0] if own else None,
            "memory_limit_bytes": own[1] if own else None,
            "pauses": counts[0], "resumes": counts[1],
        }  # fmt: skip
    return {
        "version": STATE_VERSION,
        "ts": now,
        "pid": os.getpid(),
        "interval": interval,
        "strategy": allocation.strategy,
        "profile": allocation.profile,
        "enforcement": enforcement,
        "workspace": {
            "cpu_percent": round(cpu, 3),
            "memory_bytes": memory,
            "cpu_limit": pool.cpu,
            "memory_limit_bytes": pool.memory_bytes,
        },
        "projects": projects,
        "agents": agents_state,
        "queue": queue,
        "pauses_total": sum(c[0] for c in policy.counts.values()),
    }


def write(workspace_dir: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Replace the state file (temp file and rename, no fsync: it is live, not history).
    Raises OSError."""
    final = Path(workspace_dir) / STATE_NAME
    temp = final.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(state, separators=(",", ":")) + "\n")
    os.replace(temp, final)


def remove(workspace_dir: str | os.PathLike[str]) -> None:
    """Remove the state file (its writer stops enforcing)."""
    (Path(workspace_dir) / STATE_NAME).unlink(missing_ok=True)


def read(
    workspace_dir: str | os.PathLike[str], *, now: float | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The live state of ``workspace_dir``, and a note when a file was found but not used.

    Returns ``(None, None)`` when there is none; ``(None, note)`` when it is unreadable, not a
    state of this version, or left over (its writer is gone, or it is older than
    ``STALE_INTERVALS`` check intervals at ``now``)."""
    path = Path(workspace_dir) / STATE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
        ts, pid = float(data["ts"]), int(data["pid"])
        interval = float(data.get("interval") or 10.0)
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"ignored {path}: not an enforcement state ({exc})"
    now = time.time() if now is None else now
    if not pid_alive(pid):
        return None, f"ignored {path}: its writer (pid {pid}) is gone"
    if now - ts > max(STALE_INTERVALS * interval, STALE_FLOOR):
        return None, f"ignored {path}: written {now - ts:.0f}s ago"
    return data, None
