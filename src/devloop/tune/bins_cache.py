"""A per-hour cache of autotune's fine bins, so a run reads ~1/100 of the per-tick rows.

For every closed UTC hour (before the current one) wholly inside the analysed range, and per
level (``project``, ``agent``), one Parquet file holds what :func:`devloop.tune.history` groups
from the hour's per-tick sums: per entity (project, agent) and CPU/memory bin, the tick count,
CPU and rss sums and extremes, censoring, pause and over-limit counts and the sums of the
limits in force. ::

    <store root>/_cache/tune/<level>/date=YYYY-MM-DD/hour=H/<key>.parquet

``key`` hashes everything the hour's rows depend on: the cache format, the level, the names,
sizes and mtimes of the hour's ``samples`` files, every host's core count, the censoring
parameters, the selected names, and the limit and pause intervals clipped to the hour. Any
change (a late file, a compaction, a new limit in force during the hour, other parameters)
gives another key: the entry no longer matches and the hour is recomputed. One that cannot be
read is recomputed. The hours cut by the range, the current hour and an hour with rows still in
the spool (not yet in its files) are never read from an entry.

Autotune only reads entries: a report never writes into the store (DESIGN.md, "Storage
contract"), and the entries depend on the run's parameters, so no writer of whole hours makes
them ahead; today nothing writes them (issue 13: this cache goes, autotune reads the rollups).
The cache is derived data: deleting ``_cache/tune`` changes no suggestion.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devloop.analytics._cache import whole_parquet

if TYPE_CHECKING:
    import polars as pl

    from devloop.analytics import Selection, Store
    from devloop.tune.params import TuneParameters

CACHE_PATH: Final = ("_cache", "tune")
#: Bumped whenever what an entry holds changes, so old entries stop matching.
FORMAT: Final = "1"
HOUR_US: Final = 3_600_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: The columns of an entry (and of the fine frame history.py aggregates), with their types.
COLUMNS: Final = {
    "project": "str",
    "agent": "str",
    "ah": "int",  # hour since the epoch
    "b": "int",
    "cb": "int",
    "mb": "int",
    "ticks": "int",
    "cpu_sum": "float",
    "cpu_max": "float",
    "rss_max": "float",
    "rss_min": "float",
    "rss_sum": "float",
    "cens_cpu": "int",
    "cens_mem": "int",
    "paused": "int",
    "cpu_over": "int",
    "mem_over": "int",
    "any_over": "int",
    "cpu_limit_sum": "float",
    "mem_limit_sum": "float",
    "limit_ticks": "int",
}

#: ``compute(selection)``: the fine frame of the hours of ``selection`` (COLUMNS).
Compute = Callable[["Selection"], "pl.DataFrame"]


def cache_root(root: Path) -> Path:
    """``<store root>/_cache/tune``."""
    return root.joinpath(*CACHE_PATH)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly COLUMNS, in order, typed (str, Int64, Float64)."""
    import polars as pl

    types = {"str": pl.String, "int": pl.Int64, "float": pl.Float64}
    return frame.select(pl.col(name).cast(types[kind]) for name, kind in COLUMNS.items())


def _hour_index(moment: datetime) -> int:
    return int((moment - _EPOCH) // timedelta(hours=1))


def _hour_start(index: int) -> datetime:
    return _EPOCH + timedelta(hours=index)


def _sample_files(root: Path, index: int) -> list[str]:
    """``name:bytes:mtime_ns`` of every Parquet file of the hour's ``samples`` partition."""
    start = _hour_start(index)
    directory = root / "samples" / f"date={start:%Y-%m-%d}" / f"hour={start.hour}"
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found: list[str] = []
    for entry in entries:
        if entry.name.endswith(".parquet") and not entry.name.startswith("."):
            facts = entry.stat()
            found.append(f"{entry.name}:{facts.st_size}:{facts.st_mtime_ns}")
    return sorted(found)


def _clipped(
    intervals: Sequence[tuple[Any, ...]], begin: datetime, stop: datetime
) -> list[list[Any]]:
    """The intervals ``(..., start, stop)`` (start and stop last) overlapping the hour,
    clipped to it, as JSON-ready lists."""
    out: list[list[Any]] = []
    for *rest, first, last in intervals:
        if first < stop and begin < last:
            out.append([*rest, max(first, begin).isoformat(), min(last, stop).isoformat()])
    return out


def fine_bins(
    store: Store,
    selection: Selection,
    params: TuneParameters,
    level: str,
    limits: Sequence[dict[str, Any]],
    pauses: Sequence[dict[str, Any]],
    keys: Sequence[tuple[str, str]],
    compute: Compute,
    *,
    now: datetime | None = None,
) -> pl.DataFrame:
    """The fine frame (COLUMNS) of ``selection`` at ``level``: closed hours wholly inside it
    from their cache entries where they exist, the other hours computed. Writes nothing."""
    import polars as pl

    first = _hour_index(selection.start)
    last = _hour_index(selection.end - timedelta(microseconds=1))
    current = _hour_index(now or datetime.now(UTC))
    root = store.root
    base = cache_root(root) / level
    cores = store.rows("SELECT host, arg_max(cores, ts) FROM system GROUP BY host ORDER BY host")
    # Both lists come in a fixed order (hosts, entities, time).
    limit_spans = [
        (r["host"], r["project"], r["agent"], r["cpu"], r["mem"], r["start"], r["stop"])
        for r in limits
    ]
    pause_spans = [(*keys[r["e"]], r["start"], r["stop"]) for r in pauses]
    common = [
        FORMAT,
        level,
        [[host, float(count)] for host, count in cores],
        [params.censor_at, params.censor_raise],
        [list(selection.projects), list(selection.agents)],
        [selection.project_filter, selection.agent_filter],
    ]
    # An hour with rows still in the spool is not whole in its files: computed, not cached.
    spooled = {_hour_index(partition.start) for partition in store.spooled_hours()}
    entries: dict[int, Path] = {}
    for index in range(first, last + 1):
        begin, stop = _hour_start(index), _hour_start(index + 1)
        if index >= current or begin < selection.start or stop > selection.end:
            continue
        if index in spooled:
            continue
        text = json.dumps(
            [
                *common,
                _sample_files(root, index),
                _clipped(limit_spans, begin, stop),
                _clipped(pause_spans, begin, stop),
            ],
            default=str,
        )
        key = hashlib.sha256(text.encode()).hexdigest()[:24]
        entries[index] = base / f"date={begin:%Y-%m-%d}" / f"hour={begin.hour}" / f"{key}.parquet"

    parts: list[pl.DataFrame] = []
    missing: list[int] = []
    for index in range(first, last + 1):
        path = entries.get(index)
        if path is not None and whole_parquet(path):
            try:
                parts.append(conform(pl.read_parquet(path)))
                continue
            except (OSError, pl.exceptions.PolarsError):
                pass
        missing.append(index)
    if missing:
        parts.append(_compute_runs(selection, missing, compute))
    if not parts:
        return conform(compute(selection).clear())
    return pl.concat(parts, how="vertical")


def _compute_runs(selection: Selection, hours: list[int], compute: Compute) -> pl.DataFrame:
    """The fine frame of ``hours`` (sorted), one query per run of consecutive hours."""
    import dataclasses

    import polars as pl

    runs: list[list[int]] = []
    for index in hours:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    frames = []
    for run in runs:
        part = dataclasses.replace(
            selection,
            start=max(selection.start, _hour_start(run[0])),
            end=min(selection.end, _hour_start(run[-1] + 1)),
        )
        frames.append(conform(compute(part)))
    frame = pl.concat(frames, how="vertical")
    return frame.filter(pl.col("ah").is_in(hours))
