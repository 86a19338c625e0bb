"""Reports over the metrics store: the queries behind every analytics command.

Each function takes a workspace folder (or an open :class:`Store`), a
:class:`~devloop.analytics.timerange.TimeRange` and project/agent globs, and returns a frozen
record holding polars DataFrames with documented columns and a ``to_json()`` (the documented
JSON of the command). Definitions every report shares (CPU %, per-tick series, limits in
force) are in :mod:`devloop.analytics.query`. The reports read the store's per-hour rollups
(:mod:`devloop.store.rollups`, written by compaction) for closed hours and the views for the
rest; they never write into the store.

    metrics.py       workspace_metrics   the live view (newest tick)
    export.py        export_metrics      one row per interval and project/agent
    baseline.py      summarise, compare_summaries   metrics summaries
    peaks.py         peak_usage          peak / p95 per project, agent, workspace
    bottlenecks/     bottlenecks         intervals over a share of the limit in force
    efficiency.py    efficiency          allocated vs used
    health.py        health              leaks, restart loops, stopped, freshness, backlog
    audit.py         audit_query         per-agent statistics of one metric
    runs.py          runs, run_summary   one row per agent run (launched or estimated), per agent
    sql.py           run_sql             SQL over the views
    stats.py         theil_sen, ...      the statistics reports and autotune share
    timerange.py     parse_range, TimeRange   "2 hours ago", "yesterday 09:00", ISO 8601

Each name below is loaded from its module on first use (PEP 562): a command that runs one
report imports that report's modules, not every report's.
"""

from __future__ import annotations

from devloop._lazy import install

TYPE_CHECKING = False  # not typing's: nothing more is imported with the package
if TYPE_CHECKING:
    from devloop.analytics.audit import Audit, audit_query
    from devloop.analytics.baseline import compare_summaries, read_summary, summarise
    from devloop.analytics.bottlenecks import Bottlenecks, bottlenecks
    from devloop.analytics.efficiency import Efficiency, efficiency
    from devloop.analytics.export import MetricsExport, export_metrics
    from devloop.analytics.health import Health, health
    from devloop.analytics.metrics import WorkspaceMetrics, workspace_metrics
    from devloop.analytics.peaks import PeakUsage, peak_usage
    from devloop.analytics.query import Selection, Store, collected_warnings, reading, records
    from devloop.analytics.runs import run_summary, runs
    from devloop.analytics.sql import run_sql
    from devloop.analytics.stats import theil_sen
    from devloop.analytics.timerange import TimeRange, format_moment, parse_moment, parse_range
    from devloop.store.db import iso

#: Where each public name lives.
_MODULES: dict[str, str] = {
    "Selection": "query",
    "Store": "query",
    "collected_warnings": "query",
    "iso": "query",
    "reading": "query",
    "records": "query",
    "Audit": "audit",
    "audit_query": "audit",
    "compare_summaries": "baseline",
    "read_summary": "baseline",
    "summarise": "baseline",
    "Bottlenecks": "bottlenecks",
    "bottlenecks": "bottlenecks",
    "Efficiency": "efficiency",
    "efficiency": "efficiency",
    "MetricsExport": "export",
    "export_metrics": "export",
    "Health": "health",
    "health": "health",
    "WorkspaceMetrics": "metrics",
    "workspace_metrics": "metrics",
    "PeakUsage": "peaks",
    "peak_usage": "peaks",
    "run_summary": "runs",
    "runs": "runs",
    "run_sql": "sql",
    "theil_sen": "stats",
    "TimeRange": "timerange",
    "format_moment": "timerange",
    "parse_moment": "timerange",
    "parse_range": "timerange",
}

__all__ = [
    "Audit",
    "Bottlenecks",
    "Efficiency",
    "Health",
    "MetricsExport",
    "PeakUsage",
    "Selection",
    "Store",
    "TimeRange",
    "WorkspaceMetrics",
    "audit_query",
    "bottlenecks",
    "collected_warnings",
    "compare_summaries",
    "efficiency",
    "export_metrics",
    "format_moment",
    "health",
    "iso",
    "parse_moment",
    "parse_range",
    "peak_usage",
    "read_summary",
    "reading",
    "records",
    "run_sql",
    "run_summary",
    "runs",
    "summarise",
    "theil_sen",
    "workspace_metrics",
]


install(__name__, _MODULES)
