"""The tables and rollups of the metrics store as pyarrow schemas, built from
:mod:`devloop.store.columns`.

``columns.py`` is the contract (names, kinds, nullability, units, versions, sort keys); this
module is its Arrow form, for everything that reads or writes Parquet. The collector's process
never imports it (see ``columns.py``).
"""

from __future__ import annotations

import functools
from typing import Final

import pyarrow as pa

from devloop.store.columns import (
    ROLLUP_COLUMNS,
    SCHEMA_VERSION_KEY,
    SCHEMA_VERSIONS,
    SORT_KEYS,
    TABLE_COLUMNS,
    TABLE_KEY,
    Column,
    Kind,
)

__all__ = [
    "EVENTS",
    "LIMITS",
    "PROCESSES",
    "ROLLUPS",
    "RUNS",
    "SAMPLES",
    "SCHEMA_VERSIONS",
    "SCHEMA_VERSION_KEY",
    "SORT_KEYS",
    "SYSTEM",
    "TABLES",
    "TABLE_KEY",
    "arrow_type",
]

_ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    "ts": pa.timestamp("us", tz="UTC"),
    "str": pa.string(),
    "i8": pa.int8(),
    "i16": pa.int16(),
    "i32": pa.int32(),
    "i64": pa.int64(),
    "f32": pa.float32(),
    "f64": pa.float64(),
    "list_i32": pa.list_(pa.int32()),
    "i128": pa.decimal128(38, 0),
    "top_f64": pa.struct([("v", pa.float64()), ("n", pa.int64())]),
    "top_i64": pa.struct([("v", pa.int64()), ("n", pa.int64())]),
}


def arrow_type(kind: Kind) -> pa.DataType:
    """The Arrow type of a column kind."""
    return _ARROW_TYPES[kind]


def _schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in columns])


TABLES: Final[dict[str, pa.Schema]] = {
    name: _schema(columns) for name, columns in TABLE_COLUMNS.items()
}

#: The rollups' schemas, per kind (``columns.ROLLUP_COLUMNS``).
ROLLUPS: Final[dict[str, pa.Schema]] = {
    kind: _schema(columns) for kind, columns in ROLLUP_COLUMNS.items()
}

#: One row per attributed process per tick.
SAMPLES: Final = TABLES["samples"]
#: One row per process the first time it is seen.
PROCESSES: Final = TABLES["processes"]
#: Host totals, one row per tick.
SYSTEM: Final = TABLES["system"]
#: Enforcement and collector events.
EVENTS: Final = TABLES["events"]
#: Effective limits over time.
LIMITS: Final = TABLES["limits"]
#: One row per agent run started by devloop.
RUNS: Final = TABLES["runs"]


@functools.cache
def past_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Arrow schema of an earlier version's columns (``columns.PAST_COLUMNS``)."""
    return _schema(columns)
