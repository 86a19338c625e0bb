"""Serving the exposition format over HTTP: :func:`serve` and :func:`parse_address`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from devloop.errors import UsageError
from devloop.exporter.sources import ReadingSource

#: The default listening address: this machine only, unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
#: The port registered for devloop's exporter in this project (the README's examples use it).
DEFAULT_PORT = 9464


@dataclass
class Exporter:
    """A running HTTP server answering every path with the metrics (``/metrics`` by custom)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(
    source: ReadingSource,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stale_after: float | None = None,
) -> Exporter:
    """Serve ``source``'s readings on ``host:port`` (port 0: any free one) in a thread.

    ``stale_after`` (seconds) replaces the default staleness bound of ``devloop_up``
    (:func:`~devloop.exporter.liveness.stale_bound`). Raises UsageError for a bound that is
    not above 0, and when the address cannot be bound (in use, not this machine's).
    """
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from devloop.exporter.metrics import SnapshotCollector

    if stale_after is not None and not stale_after > 0:
        raise UsageError(f"the staleness bound must be above 0 seconds, got {stale_after:g}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source, stale_after=stale_after))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return Exporter(host, int(server.server_address[1]), server, thread)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1) as (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"expected HOST:PORT or PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range (0-65535) in {text!r}")
    return host, port
