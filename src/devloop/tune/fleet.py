"""Fleet autotune: the hosts of a store grouped into machine classes, each class tuned from its
own hosts' runs (each host replayed as its own machine, under the same limits).

A limit is a share of one machine, so hosts are tuned together only when their machines are
alike: ``class`` groups them by cores and memory (memory to the nearest GiB, so 15.6GB and 16GB
machines are one class), ``cores`` by cores alone, ``host`` tunes each host apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.errors import UsageError
from devloop.tune.suggestions import MachineClass
from devloop.units import GIB

if TYPE_CHECKING:
    from devloop.analytics import Store, TimeRange
    from devloop.tune.params import TuneParameters
    from devloop.tune.replay import Demand
    from devloop.tune.suggestions import Suggestions

#: How ``--group-by`` may group hosts.
GROUPINGS = ("class", "cores", "host")


def machine_classes(store: Store, group_by: str = "class") -> list[MachineClass]:
    """The hosts of ``store`` (its ``system`` rows: cores and memory per host, the largest
    seen) grouped by ``group_by`` (:data:`GROUPINGS`), in name order."""
    if group_by not in GROUPINGS:
        raise UsageError(f"--group-by must be one of {', '.join(GROUPINGS)}, not {group_by!r}")
    rows = store.rows(
        "SELECT host, max(cores), max(mem_total_bytes) FROM system GROUP BY host ORDER BY host"
    )
    groups: dict[str, list[tuple[str, int | None, int | None]]] = {}
    for host, cores, memory in rows:
        gib = None if memory is None else max(1, round(memory / GIB))
        if group_by == "host":
            name = str(host)
        elif group_by == "cores":
            name = f"{cores} cores"
        else:
            name = f"{cores} cores, {gib}GB"
        groups.setdefault(name, []).append((str(host), cores, memory))
    classes = []
    for name, members in sorted(groups.items()):
        cores = {c for _, c, _ in members if c is not None}
        memory = [m for _, _, m in members if m is not None]
        classes.append(
            MachineClass(
                name,
                tuple(host for host, _, _ in members),
                min(cores) if len(cores) == 1 else None,
                min(memory) if memory else None,
            )
        )
    return classes


def autotune_fleet(
    workspace_dir: Path | str,
    time_range: TimeRange | None = None,
    params: TuneParameters | None = None,
    *,
    group_by: str = "class",
    demand: Callable[[Store], Demand] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[MachineClass, Suggestions]]:
    """Per machine class of the store's hosts, the suggestions from that class's hosts alone
    (:func:`~devloop.tune.suggest.autotune` on a store narrowed to them); each names its class
    (``Suggestions.group``). One class: one entry, as a plain autotune of the whole store.

    ``demand``: reads a class's recorded runs elsewhere (the Spark engine), given the store
    narrowed to the class's hosts; default: from that store. ``progress``: as autotune's, each
    line after the class it is about."""
    from devloop.analytics import Store
    from devloop.tune.suggest import autotune

    with Store(workspace_dir) as store:
        classes = machine_classes(store, group_by)
    if not classes:
        raise UsageError("no host in the store: nothing recorded (no system rows)")
    found = []
    for machine in classes:
        with Store(workspace_dir, hosts=machine.hosts) as narrowed:
            runs = None if demand is None else demand(narrowed)
            say = None if progress is None else _prefixed(progress, machine.name)
            suggestions = autotune(narrowed, time_range, params, demand=runs, progress=say)
        suggestions.group = machine
        found.append((machine, suggestions))
    return found


def _prefixed(progress: Callable[[str], None], name: str) -> Callable[[str], None]:
    """``progress`` with ``name: `` before each line."""
    return lambda line: progress(f"{name}: {line}")


__all__ = ["GROUPINGS", "MachineClass", "autotune_fleet", "machine_classes"]
