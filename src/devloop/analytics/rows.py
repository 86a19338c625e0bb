"""A report's rows as DuckDB returns them, and the polars DataFrame the Python API shows.

A report's query does the work (casts, order) and :func:`fetch` returns its rows as
:class:`Rows`; the CLI renders them as they are, so it never imports polars (nor pyarrow), and
the report's DataFrame is :meth:`Rows.frame` of them, made when first asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from math import isfinite
from typing import TYPE_CHECKING, Any

from devloop.analytics._db import Store, _plain

if TYPE_CHECKING:
    import polars as pl

    from devloop.store.columns import Kind


def fetch(store: Store, sql: str, params: Sequence[Any], kinds: Mapping[str, Kind]) -> Rows:
    """The result of ``sql`` as :class:`Rows` whose columns are ``kinds``'s, in its order
    (the query casts each column to its kind; other names are a bug: ValueError)."""
    columns, rows = store.db.named_rows(sql, params)
    if tuple(columns) != tuple(kinds):
        raise ValueError(f"query columns {columns}, expected {list(kinds)}")
    return Rows(tuple(kinds), tuple(kinds.values()), rows)


#: The SQL type of each kind a report's columns have.
_SQL_TYPES: dict[str, str] = {
    "str": "VARCHAR",
    "i32": "INTEGER",
    "i64": "BIGINT",
    "f64": "DOUBLE",
    "ts": "TIMESTAMPTZ",
}


def cast_columns(kinds: Mapping[str, Kind]) -> str:
    """The select list casting each column of ``kinds`` to its kind's SQL type, in order."""
    return ", ".join(
        f"CAST({name} AS {_SQL_TYPES[kind]}) AS {name}" for name, kind in kinds.items()
    )


def dtypes(kinds: Mapping[str, Kind]) -> dict[str, pl.DataType]:
    """The polars type of each column of ``kinds`` (the types of :meth:`Rows.frame`)."""
    import polars as pl

    types: dict[str, pl.DataType] = {
        "str": pl.String(),
        "i32": pl.Int32(),
        "i64": pl.Int64(),
        "f64": pl.Float64(),
        "ts": pl.Datetime("us", "UTC"),
    }
    return {name: types[kind] for name, kind in kinds.items()}


@dataclass(frozen=True)
class Rows:
    """A report's rows as DuckDB returned them: tuples in the report's order, and each column's
    kind (:data:`devloop.store.columns.Kind`: ``str``, ``i64``, ``f64``, ``ts``).

    The query does the work (casts, order); the CLI renders these as they are, without polars,
    and the Python API's DataFrame is :meth:`frame` of them (built when it is first asked for).
    """

    columns: tuple[str, ...]
    kinds: tuple[Kind, ...]
    rows: list[tuple[Any, ...]]

    def frame(self) -> pl.DataFrame:
        """The rows as a polars DataFrame, each column of its kind's type."""
        import polars as pl

        types = dtypes(dict(zip(self.columns, self.kinds, strict=True)))
        values = list(zip(*self.rows, strict=True)) or [()] * len(self.columns)
        return pl.DataFrame(
            [
                pl.Series(name, column, dtype=types[name], strict=True)
                for name, column in zip(self.columns, values, strict=True)
            ]
        )

    @property
    def numeric(self) -> tuple[int, ...]:
        """The indexes of the numeric columns."""
        return tuple(i for i, kind in enumerate(self.kinds) if kind in _NUMERIC)

    def records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts, as :func:`devloop.analytics.records` gives them of
        :meth:`frame` (converted a column at a time: a report may have 100,000 rows)."""
        names = self.columns
        columns: list[Any] = list(zip(*self.rows, strict=True)) or [()] * len(names)
        for index, kind in enumerate(self.kinds):
            if kind in _AS_IS:
                continue
            column = columns[index]
            if kind in ("f64", "f32"):
                columns[index] = [
                    None if v is None or not isfinite(v) else round(v, 6) + 0.0 for v in column
                ]
            elif kind == "ts":
                columns[index] = [
                    None if v is None else v.astimezone(UTC).isoformat().replace("+00:00", "Z")
                    for v in column
                ]
            else:
                columns[index] = [None if v is None else _plain(v) for v in column]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


_NUMERIC = frozenset({"i8", "i16", "i32", "i64", "i128", "f32", "f64"})
#: Kinds whose values JSON takes as they are.
_AS_IS = frozenset({"i8", "i16", "i32", "i64", "str"})
