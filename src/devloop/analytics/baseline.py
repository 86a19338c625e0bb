"""Metrics summaries: ``metrics --baseline``, ``watch --metrics-output`` and ``metrics compare``.

A summary describes the machine over a stretch of recording (``metrics --baseline`` records it
with :func:`devloop.runner.record.record_baseline`). Its JSON shape (version 1) is
what ``devloop workspace metrics --baseline --output baseline.json`` and
``devloop watch --metrics-output active.json`` write, and what ``metrics compare`` reads::

    {
      "kind": "devloop-metrics-summary", "version": 1,
      "start": "2026-01-05T09:00:00Z", "end": "2026-01-05T09:01:00Z",
      "ticks": 60, "interval_seconds": 1.0,
      "host": {"cores": 8, "memory_total_bytes": 17179869184},
      "system": {"cpu_percent": STATS, "memory_used_bytes": STATS},
      "agents": {"cpu_percent": STATS, "memory_bytes": STATS, "processes": STATS},
      "projects": {"api": {"cpu_percent": STATS, "memory_bytes": STATS, "processes": STATS}},
      "other": {"cpu_percent": STATS, "memory_bytes": STATS, "processes": STATS}
    }

with ``STATS = {"avg": float, "p95": float, "max": float}`` over the ticks. ``system`` is the
whole machine (``system.cpu_busy_cores`` and ``mem_used_bytes``); ``agents`` sums every process
attributed to a project; ``other`` the unattributed processes a ``--all`` recording keeps
(project "(other)"); all CPU is percent of the whole machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.analytics.query import Store, open_store, project_series, workspace_series
from devloop.analytics.timerange import TimeRange
from devloop.errors import UsageError
from devloop.store.db import iso

if TYPE_CHECKING:
    import polars as pl

SUMMARY_KIND = "devloop-metrics-summary"
SUMMARY_VERSION = 1
OTHER = "(other)"

#: Columns of :func:`compare_summaries`' result.
COMPARE_COLUMNS = ("scope", "metric", "statistic", "baseline", "active", "difference")


def summarise(
    workspace_dir: Path | str | Store, time_range: TimeRange | None = None
) -> dict[str, Any]:
    """The summary (shape in the module doc) of the store over ``time_range``."""
    import polars as pl

    store = open_store(workspace_dir)
    selection = store.select(time_range)
    where, params = store.where(selection, names=False)
    system = store.frame(
        f"SELECT s.ts, 100.0 * s.cpu_busy_cores / s.cores AS cpu_percent, "
        f"CAST(s.mem_used_bytes AS DOUBLE) AS memory_used_bytes, s.cores, s.mem_total_bytes "
        f"FROM system s WHERE {where}",
        params,
    )
    series = project_series(store, selection).with_columns(pl.col("rss_bytes").cast(pl.Float64))
    ours = series.filter(pl.col("project") != OTHER)
    other = series.filter(pl.col("project") == OTHER)

    def stats(column: pl.Series) -> dict[str, float | None]:
        if column.len() == 0:
            return {"avg": None, "p95": None, "max": None}
        values = (
            column.mean(),
            column.quantile(0.95, interpolation="linear"),
            column.max(),
        )
        return {
            key: (round(float(v), 6) + 0.0 if v is not None and not math.isnan(float(v)) else None)  # type: ignore[arg-type]
            for key, v in zip(("avg", "p95", "max"), values, strict=True)
        }

    def usage(frame: pl.DataFrame) -> dict[str, Any]:
        return {
            "cpu_percent": stats(frame["cpu_percent"]),
            "memory_bytes": stats(frame["rss_bytes"]),
            "processes": stats(frame["processes"].cast(pl.Float64)),
        }

    agents_total = workspace_series(ours) if not ours.is_empty() else ours
    projects = {
        name: usage(part)
        for (name,), part in sorted(ours.partition_by("project", as_dict=True).items())
    }
    return {
        "kind": SUMMARY_KIND,
        "version": SUMMARY_VERSION,
        "start": iso(selection.start),
        "end": iso(selection.end),
        "ticks": system.height,
        "interval_seconds": selection.interval,
        "host": {
            "cores": int(system["cores"].max()) if system.height else None,  # type: ignore[arg-type]
            "memory_total_bytes": int(system["mem_total_bytes"].max())  # type: ignore[arg-type]
            if system.height and system["mem_total_bytes"].null_count() < system.height
            else None,
        },
        "system": {
            "cpu_percent": stats(system["cpu_percent"]),
            "memory_used_bytes": stats(system["memory_used_bytes"]),
        },
        "agents": usage(agents_total) if not ours.is_empty() else usage(ours),
        "projects": projects,
        "other": usage(workspace_series(other) if not other.is_empty() else other),
    }


def read_summary(path: Path | str) -> dict[str, Any]:
    """A summary file, checked for its kind and version; UsageError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != SUMMARY_KIND:
        raise UsageError(f'{path}: not a devloop metrics summary (no "kind": "{SUMMARY_KIND}")')
    if data.get("version") != SUMMARY_VERSION:
        raise UsageError(f"{path}: summary version {data.get('version')!r} is not supported")
    return data


def compare_summaries(baseline: dict[str, Any], active: dict[str, Any]) -> pl.DataFrame:
    """What the agents add: one row per scope, metric and statistic present in either summary.

    Columns: scope ("system", "agents", "other" or "project:NAME"), metric, statistic (avg,
    p95, max), baseline, active, difference (active - baseline; null when either is missing).
    """
    import polars as pl

    def flatten(summary: dict[str, Any]) -> dict[tuple[str, str, str], float | None]:
        out: dict[tuple[str, str, str], float | None] = {}
        scopes: list[tuple[str, Any]] = [
            ("system", summary.get("system", {})),
            ("agents", summary.get("agents", {})),
            ("other", summary.get("other", {})),
        ]
        scopes += [(f"project:{name}", v) for name, v in summary.get("projects", {}).items()]
        for scope, metrics in scopes:
            for metric, stats in (metrics or {}).items():
                for statistic, value in (stats or {}).items():
                    out[(scope, metric, statistic)] = value
        return out

    left, right = flatten(baseline), flatten(active)
    keys = list(dict.fromkeys([*left, *right]))
    rows = []
    for key in keys:
        b, a = left.get(key), right.get(key)
        rows.append((*key, b, a, a - b if a is not None and b is not None else None))
    return pl.DataFrame(
        rows,
        schema={
            "scope": pl.String,
            "metric": pl.String,
            "statistic": pl.String,
            "baseline": pl.Float64,
            "active": pl.Float64,
            "difference": pl.Float64,
        },
        orient="row",
    )
