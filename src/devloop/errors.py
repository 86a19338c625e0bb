"""The exception tree of devloop.

Every error devloop raises on purpose derives from :class:`DevloopError`; the CLI turns it
into one line ``Error: <message>`` and a non-zero exit. Third-party errors (duckdb, pyarrow,
psutil, OSError) are wrapped where they are raised, ``raise X(...) from exc``.

    DevloopError
    ├── ConfigError           a workspace.json / agents.json problem, with file and JSON path
    ├── UsageError            a bad argument, not a config file's fault (size, duration, time)
    ├── StoreError            the metrics store cannot be read or written
    │   ├── StoreLockedError  another collector holds the workspace's store
    │   ├── NoSamplesError    the store (or the asked range) holds no samples
    │   ├── QueryError        DuckDB refused or failed a query over the store (mapped in
    │   │   │                 devloop.store.db, the one place that catches DuckDB's errors)
    │   │   └── QueryRefused  DuckDB's permission error (a read-only connection's refusal)
    │   ├── DiskFullError     the disk holding the spool is full (the collector holds ticks)
    │   ├── CorruptFileError  a store file failed its page checksums (quarantined)
    │   ├── SpoolCorruptError a spool record passed its CRC check but does not decode
    │   └── ShipError         the fleet's remote store cannot be reached, read or written
    ├── CollectorError        the collector cannot sample
    ├── EnforcementError      a signal could not be sent or a limit cannot be enforced
    │   ├── QueueFull         an agent can neither start nor wait in the overflow queue
    │   └── QueueTimeout      an agent waited in the overflow queue longer than maxWaitTime
    └── TuningError           autotune's suggestions cannot be applied

    OSError
    └── SpawnError            a command cannot be executed (not found, not executable)

SpawnError is an OSError, not a DevloopError: it carries the ``errno`` its callers word their
own error from (``devloop run``: a UsageError; ``devloop watch``: the run's failure reason).
"""

from __future__ import annotations


class DevloopError(Exception):
    """Base class of every error devloop raises on purpose."""


class ConfigError(DevloopError):
    """A configuration file is malformed or inconsistent."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(f"{file}: {path}: {message}" if path else f"{file}: {message}")


class UsageError(DevloopError):
    """An argument (size, duration, time of day) cannot be understood."""


class StoreError(DevloopError):
    """The metrics store cannot be read or written."""


class StoreLockedError(StoreError):
    """Another collector already holds the workspace's store."""


class NoSamplesError(StoreError):
    """The store, or the asked time range, holds no samples."""


class QueryError(StoreError):
    """DuckDB refused or failed a query over the store (see :mod:`devloop.store.db`)."""


class QueryRefused(QueryError):
    """DuckDB refused a query for lack of permission (``workspace sql``'s read-only settings)."""


class DiskFullError(StoreError):
    """The disk (or quota) holding the spool is full: the record was not written."""


class CorruptFileError(StoreError):
    """A store file failed its page checksums or could not be decoded."""


class SpoolCorruptError(StoreError):
    """A spool record passed its CRC check but cannot be decoded (a bug or a version skew)."""


class ShipError(StoreError):
    """The fleet's remote store cannot be reached, read or written (``workspace ship``)."""


class CollectorError(DevloopError):
    """The collector cannot sample processes."""


class EnforcementError(DevloopError):
    """A limit cannot be enforced."""


class QueueFull(EnforcementError):
    """An agent could not start and could not wait: the queue is full or overflow is off."""


class QueueTimeout(EnforcementError):
    """An agent waited in the overflow queue longer than ``maxWaitTime``."""


class TuningError(DevloopError):
    """The suggestions cannot be applied (changed files, bad suggestions, comments)."""


class SpawnError(OSError):
    """The command could not be executed (not found, not executable)."""
