"""Prometheus exposition of a workspace: per project and agent usage, limits, pauses, queue.

``devloop workspace exporter`` serves snapshots of the store's newest tick
(:class:`~devloop.dashboard.snapshot.StoreSnapshots`); ``devloop workspace collect --prometheus``
serves the ticks its recorder takes (:class:`~devloop.dashboard.snapshot.LiveSnapshots`). Both
share :func:`~devloop.exporter.metrics.metric_families`.

    metrics.py   metric_families (snapshot -> metric families), SnapshotCollector
    server.py    serve (HTTP, in a thread), parse_address
"""

from devloop.exporter.server import DEFAULT_HOST, DEFAULT_PORT, Exporter, parse_address, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Exporter", "parse_address", "serve"]
