"""What autotune suggests: the records :func:`~devloop.tune.suggest.autotune` returns, and
suggestions.json, their documented JSON (docs/autotune.md).

:mod:`.suggest` makes them, :mod:`.patch` writes their merge patches and applies a
suggestions.json, :mod:`.report` draws them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devloop.tune.backtest import EntityBacktest, Side, blocks
from devloop.units import format_size

if TYPE_CHECKING:
    from devloop.analytics import Selection
    from devloop.tune.history import History
    from devloop.tune.params import TuneParameters
    from devloop.tune.profiles import LearnedProfile

KIND = "devloop-autotune-suggestions"
#: Version 2 names projects, never paths. Version 1 named each file by its absolute path (so a
#: copy of the workspace was tuned through the original's files); apply-tuning refuses it.
VERSION = 2
#: Additions that keep version 2 readable: 1 = limits by run slowdown (``objective``,
#: ``at_pool``, run-based ``backtest``); 2 = ``group`` (fleet autotune's machine class),
#: ``pool.profiles``, ``not_finished`` in the backtest sides; 3 = ``pool.overcommit_cpu`` and
#: ``pool.compared``; 4 = ``pool.dynamic``, ``pool.weights`` and ``limits`` in each
#: ``pool.compared`` row (the ``dynamic`` strategy replayed beside the other two), and
#: ``pool.learned_profile`` (a time-of-day profile learned from the runs' daily pattern).
MINOR = 4
#: How limits the pool cannot hold are lived with: fit into it by priority, overcommitted
#: (``overcommitCpu``), or shared by the ``dynamic`` strategy.
PoolMode = Literal["fit", "overcommit", "dynamic"]
POOL_MODES: tuple[PoolMode, ...] = ("fit", "overcommit", "dynamic")


def sha256_file(path: Path) -> str | None:
    """The file's sha256 (hex), None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class WorkspaceIdentity:
    """Which workspace a suggestions file is for: the ``workspace_name`` written in its
    workspace.json (None when absent: the loader's default, the folder's parent, would change
    when the folder moves) and its project names, in file order. A copy or a move of the
    workspace folder keeps both; apply-tuning compares them as a name and a set."""

    name: str | None
    projects: tuple[str, ...]

    @classmethod
    def of(cls, raw: Any, project_names: Iterable[str]) -> WorkspaceIdentity:
        """The identity of a workspace from its parsed workspace.json (``raw``) and the names
        of the projects its loader read."""
        name = None
        if isinstance(raw, dict):
            name = raw["workspace_name"] if "workspace_name" in raw else raw.get("name")
        return cls(name if isinstance(name, str) else None, tuple(project_names))

    def same_workspace(self, other: WorkspaceIdentity) -> bool:
        """Same name, same set of projects."""
        return self.name == other.name and set(self.projects) == set(other.projects)

    def describe(self) -> str:
        """``'name' (projects a, b)``, as errors word it."""
        name = repr(self.name) if self.name is not None else "without a name"
        projects = ", ".join(self.projects) if self.projects else "none"
        return f"{name} (projects {projects})"


@dataclass
class EntitySuggestion:
    """The suggestion for one project (``agent`` "") or agent."""

    project: str
    agent: str
    current_cpu: float | None
    current_memory: int | None
    cpu: float | None
    memory_bytes: int | None
    evidence: dict[str, Any]
    confidence: str
    censored_cpu: bool
    censored_memory: bool
    leak: dict[str, Any] | None
    censoring: dict[str, Any]
    backtest: EntityBacktest | None
    rationale: str
    scaled: bool = False
    priority: int | None = None
    #: How the CPU limit was found (see docs/autotune.md, suggestions.json).
    objective: dict[str, Any] | None = None
    #: The project's runs replayed with every project at once under the suggested pool.
    at_pool: dict[str, Any] | None = None
    #: What the runs need when the pool could not hold it (``cpu`` is what it grants).
    needed_cpu: float | None = None

    @property
    def name(self) -> str:
        return f"{self.project}/{self.agent}" if self.agent else self.project

    def to_json(self) -> dict[str, Any]:
        backtest = None if self.backtest is None else self.backtest.to_json()
        suggested = (
            None
            if self.cpu is None or self.memory_bytes is None
            else {
                "cpu_percent": self.cpu,
                "memory_bytes": self.memory_bytes,
                "memory": format_size(self.memory_bytes),
            }
        )
        return {
            "current": {
                "cpu_percent": self.current_cpu,
                "memory_bytes": self.current_memory,
                "memory": format_size(self.current_memory) if self.current_memory else None,
            },
            "suggested": suggested,
            "evidence": self.evidence,
            "confidence": self.confidence,
            "flags": {
                "censored": self.censored_cpu or self.censored_memory,
                "censored_cpu": self.censored_cpu,
                "censored_memory": self.censored_memory,
                "leak": self.leak is not None,
                "scaled_to_pool": self.scaled,
            },
            "censoring": self.censoring,
            "leak": self.leak,
            "objective": self.objective,
            "at_pool": self.at_pool,
            "needed_cpu_percent": self.needed_cpu,
            "backtest": backtest,
            "rationale": self.rationale,
        }


@dataclass
class PoolFit:
    """Whether the projects' suggestions fit the pool, and the pool they would need."""

    cpu: float
    memory_bytes: int
    needed_cpu: float
    needed_memory: int
    fits: bool
    suggested_cpu: float | None = None
    suggested_memory: int | None = None
    note: str | None = None
    scaled: list[str] = field(default_factory=list)
    #: Time-of-day profiles in force when recorded runs were triggered: name -> (current CPU %,
    #: current memory, suggested CPU % or None, suggested memory or None). A profile is a pool
    #: of its own for its hours, raised like the base pool when it cannot hold the limits.
    profiles: dict[str, tuple[float, int, float | None, int | None]] = field(default_factory=dict)
    #: The projects' CPU limits total more than the pool (``overcommitCpu``): each keeps what
    #: its runs need and the pool is enforced on their sum.
    overcommit: bool = False
    #: The ``dynamic`` strategy: the pool shared in proportion to ``weights`` (the projects'
    #: CPU needs), each project capped at its need, shares moved to busy projects live.
    dynamic: bool = False
    weights: dict[str, float] = field(default_factory=dict)
    #: The time-of-day profile learned from the runs' daily pattern (``tune/profiles.py``):
    #: the candidate, whether it is suggested and why (None without runs).
    learned: LearnedProfile | None = None
    #: When the projects need more than ``--max-pool``: the three ways (limits fit into the
    #: pool, overcommitted, dynamic) replayed with every run together, how their runs fared.
    compared: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        suggested = None
        if self.suggested_cpu is not None and self.suggested_memory is not None:
            suggested = {
                "cpu_percent": self.suggested_cpu,
                "memory_bytes": self.suggested_memory,
                "memory": format_size(self.suggested_memory),
            }
        profiles = {
            name: {
                "current": {"cpu_percent": cpu, "memory_bytes": memory},
                "suggested": None
                if new_cpu is None or new_memory is None
                else {
                    "cpu_percent": new_cpu,
                    "memory_bytes": new_memory,
                    "memory": format_size(new_memory),
                },
            }
            for name, (cpu, memory, new_cpu, new_memory) in self.profiles.items()
        }
        return {
            "profiles": profiles,
            "current": {"cpu_percent": self.cpu, "memory_bytes": self.memory_bytes},
            "needed": {
                "cpu_percent": round(self.needed_cpu, 4),
                "memory_bytes": self.needed_memory,
            },
            "fits": self.fits,
            "suggested": suggested,
            "overcommit_cpu": self.overcommit,
            "dynamic": self.dynamic,
            "weights": self.weights or None,
            "learned_profile": None if self.learned is None else self.learned.to_json(),
            "compared": self.compared,
            "note": self.note,
        }


@dataclass(frozen=True)
class MachineClass:
    """Hosts tuned together: ``name`` says what they share (``4 cores, 16GB``)."""

    name: str
    hosts: tuple[str, ...]
    cores: int | None
    memory_bytes: int | None

    @property
    def slug(self) -> str:
        """The name as a file-name part: ``4-cores-16gb``."""
        kept = "".join(c if c.isalnum() else "-" for c in self.name.lower())
        return "-".join(part for part in kept.split("-") if part)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hosts": list(self.hosts),
            "cores": self.cores,
            "memory_bytes": self.memory_bytes,
        }


@dataclass
class Suggestions:
    """What autotune found: per project and agent, the pool, the backtest totals, the patches.

    ``workspace_file`` and ``agents_files`` are where autotune read the files; suggestions.json
    holds no path: ``identity`` (filled by :func:`~devloop.tune.patch.build_patches`) says
    which workspace it is for, and the agents files and patches are keyed by project, so
    apply-tuning finds the files in the workspace it is given.
    """

    generated_at: datetime
    selection: Selection
    params: TuneParameters
    workspace_file: Path
    workspace_sha256: str | None
    agents_files: dict[str, tuple[Path, str | None]]
    strategy: str
    projects: dict[str, EntitySuggestion]
    agents: dict[str, EntitySuggestion]
    pool: PoolFit
    totals: dict[str, Side]
    block_hours: int
    history: History
    notes: list[str] = field(default_factory=list)
    #: The machine class the suggestions are for (fleet autotune), None for a whole store.
    group: MachineClass | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    agents_patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    identity: WorkspaceIdentity | None = None

    def backtest_note(self) -> str | None:
        """Why the backtest has no fold, or its totals no run (None when neither): the
        history is too short for two blocks, no run was recorded, or no block after the first
        had runs and a fit before them."""
        count = blocks(self.history)[1]
        reasons = []
        if count < 2:
            reasons.append("history too short for a backtest (it needs two hours)")
        current = self.totals.get("current")
        if current is None or not current.runs:
            reasons.append("nothing to replay: no runs recorded, so the totals are empty")
        elif count >= 2 and not any(
            entry.backtest is not None and entry.backtest.folds
            for entry in [*self.projects.values(), *self.agents.values()]
        ):
            reasons.append(
                "no fold replayed: no block after the first had runs and a fit before it"
            )
        return "; ".join(reasons) or None

    def to_json(self) -> dict[str, Any]:
        """The documented suggestions.json (docs/autotune.md)."""
        from devloop.analytics import iso

        return {
            "kind": KIND,
            "version": VERSION,
            "minor": MINOR,
            "generated_at": iso(self.generated_at),
            "period": {
                "start": iso(self.selection.start),
                "end": iso(self.selection.end),
                "hours": round(
                    (self.selection.end - self.selection.start).total_seconds() / 3600, 4
                ),
                "interval_seconds": self.selection.interval,
            },
            "group": None if self.group is None else self.group.to_json(),
            "parameters": self.params.to_json(),
            "workspace": {
                "name": None if self.identity is None else self.identity.name,
                "projects": [] if self.identity is None else list(self.identity.projects),
                "sha256": self.workspace_sha256,
                "strategy": self.strategy,
                "agents_files": {
                    project: {"sha256": digest}
                    for project, (_, digest) in self.agents_files.items()
                },
            },
            "pool": self.pool.to_json(),
            "projects": {name: s.to_json() for name, s in self.projects.items()},
            "agents": {name: s.to_json() for name, s in self.agents.items()},
            "backtest": {
                "block_hours": self.block_hours,
                "folds": max(0, blocks(self.history)[1] - 1),
                "totals": {side: total.to_json() for side, total in self.totals.items()},
                "totals_note": "every run replayed with all the others under the current "
                "configuration and under the suggested one (pool included), in-sample",
                "note": self.backtest_note(),
            },
            "notes": list(self.notes),
            "patch": self.patch,
            "agents_patches": self.agents_patches,
        }
