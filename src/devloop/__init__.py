"""DevLoop Workspace: measure, share and enforce CPU and memory across many projects' agents.

The public surface is re-exported here; heavy modules (polars, duckdb, pyarrow) are imported
only by the functions that need them, so ``import devloop`` and ``devloop --help`` stay fast.
"""

from devloop.errors import (
    CollectorError,
    ConfigError,
    DevloopError,
    EnforcementError,
    NoSamplesError,
    QueueFull,
    QueueTimeout,
    SpawnError,
    SpoolCorruptError,
    StoreError,
    StoreLockedError,
    TuningError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CollectorError",
    "ConfigError",
    "DevloopError",
    "EnforcementError",
    "NoSamplesError",
    "QueueFull",
    "QueueTimeout",
    "SpawnError",
    "SpoolCorruptError",
    "StoreError",
    "StoreLockedError",
    "TuningError",
    "UsageError",
    "__version__",
]
