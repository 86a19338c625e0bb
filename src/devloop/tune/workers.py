"""Autotune's independent pieces (one entity's searches, its backtest, one in-sample replay) on
the machine's cores.

:func:`fork_map` runs a function over items in forked worker processes and returns the results
in the items' order. Fork rather than a fresh interpreter: a worker starts in milliseconds with
everything the parent computed (the recorded demand, the history, the replays already cached)
without pickling it; only the items' results come back. The parent holds DuckDB's threads when
it forks: a worker never touches the store (it replays and searches, pure Python and numpy)
and leaves with ``os._exit``, as multiprocessing's forked workers do.

The results are those of the same calls made one after the other: every piece is a pure
function of the state the worker was forked with. ``DEVLOOP_TUNE_WORKERS`` sets how many
workers (default: the cores this process may use, at most 2 and at most the items; 1: in
process, no fork), as does a platform without ``fork``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The most workers by default: autotune's pieces are few and uneven, and past two the
#: largest entity's share decides the time.
DEFAULT_MOST = 2

_TASK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None
_IN_WORKER = False


def workers(items: int) -> int:
    """How many processes :func:`fork_map` uses for ``items`` items."""
    if _IN_WORKER or not hasattr(os, "fork") or items < 2:
        return 1
    told = os.environ.get("DEVLOOP_TUNE_WORKERS", "").strip()
    if told:
        try:
            return max(1, min(int(told), items))
        except ValueError:
            return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, DEFAULT_MOST, items))


def fork_map(
    function: Callable[[T], R], items: Sequence[T], *, costs: Sequence[float] = ()
) -> list[R]:
    """``[function(item) for item in items]``, in forked workers when more than one may run.

    ``costs`` (as long as ``items``): the larger first, so the workers end together. A worker's
    exception is raised here."""
    count = workers(len(items))
    if count < 2:
        return [function(item) for item in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _TASK
    order = sorted(range(len(items)), key=lambda i: -costs[i]) if costs else list(range(len(items)))
    _TASK = (function, items)
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns about fork with threads: DuckDB's are idle, and the workers
            # never use them (see the module doc).
            warnings.simplefilter("ignore", DeprecationWarning)
            context = multiprocessing.get_context("fork")
            # an executor rather than a Pool: a worker that dies (killed for memory) raises
            # BrokenProcessPool here instead of leaving the map waiting for ever
            with ProcessPoolExecutor(count, mp_context=context, initializer=_enter) as pool:
                found = list(pool.map(_call, order))
    finally:
        _TASK = None
    results: list[Any] = [None] * len(items)
    for i, result in zip(order, found, strict=True):
        results[i] = result
    return results


def _enter() -> None:
    global _IN_WORKER
    _IN_WORKER = True


def _call(index: int) -> Any:
    assert _TASK is not None
    function, items = _TASK
    return function(items[index])


__all__ = ["fork_map", "workers"]
