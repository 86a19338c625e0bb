"""Prometheus exposition of a workspace: per project and agent usage, limits, pauses, queue.

``devloop workspace exporter`` serves the store's newest tick (:class:`StoreReadings`, which
only reads); ``devloop workspace collect --prometheus`` serves the ticks its recorder takes
(:class:`LiveReadings`). Both share :func:`~devloop.exporter.metrics.metric_families`, and
both export usage only while the tick is live (``devloop_up 1``, see liveness.py).

    sources.py   Reading: a snapshot, the collector's interval and whether it runs
    liveness.py  judge (pure): is the tick fresh and its collector running -> devloop_up
    metrics.py   metric_families (snapshot, liveness -> metric families), SnapshotCollector
    server.py    serve (HTTP, in a thread), parse_address
"""

from devloop.exporter.liveness import STALE_FLOOR, STALE_INTERVALS, Liveness, judge, stale_bound
from devloop.exporter.server import DEFAULT_HOST, DEFAULT_PORT, Exporter, parse_address, serve
from devloop.exporter.sources import LiveReadings, Reading, ReadingSource, StoreReadings

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "STALE_FLOOR",
    "STALE_INTERVALS",
    "Exporter",
    "LiveReadings",
    "Liveness",
    "Reading",
    "ReadingSource",
    "StoreReadings",
    "judge",
    "parse_address",
    "serve",
    "stale_bound",
]
