"""A report's rows as DuckDB returns them, and the polars DataFrame the Python API shows.

A report's query does the work (casts, order) and :func:`fetch` returns its rows as
:class:`Rows`; the CLI renders them as they are, so it never imports polars (nor pyarrow), and
the report's DataFrame is :meth:`Rows.frame` of them, made when first asked for.

A report of many rows (the export: 40,000 a week at 1m) keeps its query as a :class:`Query`,
run when the rows are first asked for; the CLI has DuckDB write them as JSON or CSV text
instead (:meth:`Query.json`, :meth:`Query.csv`), the same text, byte for byte, as the rows
rendered in Python, where building it cost more than the query.
"""

from __future__ import annotations

import json
import re
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
    "bool": "BOOLEAN",
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
        "bool": pl.Boolean(),
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


@dataclass(frozen=True, eq=False)
class Query:
    """A report's query, not run yet: ``sql`` (a relation with at least the columns of
    ``kinds``, in no order) over ``store``, its rows in the order ``order`` (column names).

    :meth:`fetch` gives its rows; :meth:`json` and :meth:`csv` have DuckDB write them as text,
    as :func:`devloop.cli.render.to_json` writes :meth:`Rows.records` (numbers rounded to a
    key's decimals) and as the CLI's CSV writes :attr:`Rows.rows`, or None when only Python can
    (a string that needs escaping or quoting, a kind without a rule below).
    """

    store: Store
    sql: str
    params: tuple[Any, ...]
    kinds: Mapping[str, Kind]
    order: str

    def fetch(self) -> Rows:
        """The rows, in order (see :func:`fetch`)."""
        sql = f"SELECT {cast_columns(self.kinds)} FROM ({self.sql}) ORDER BY {self.order}"
        return fetch(self.store, sql, self.params, self.kinds)

    def json(self, decimals: Mapping[str, int], depth: int) -> str | None:
        """The rows as ``json.dumps(records, indent=2)`` writes the list at ``depth``, each
        float rounded to ``decimals[key]`` places (``>= 1``; after :meth:`Rows.records`'s 6)
        where given: ``[]``, or ``[`` and one indented object per row, ``]`` at ``depth``."""
        row = "  " * (depth + 1)
        inside = "  " * (depth + 2)
        parts: list[str] = []
        values: list[str] = []
        plain: list[str] = []
        between = f"{row}{{\n{inside}"
        for name, kind in self.kinds.items():
            found = _cell(name, kind, decimals.get(name), as_json=True)
            if found is None:
                return None
            parts.append(f"{between}{json.dumps(name)}: ")
            values.append(found[0])
            plain.extend(found[1:])
            between = f",\n{inside}"
        parts.append(f"\n{row}}}")
        text = self._text(parts, values, plain, ",\n")
        if text is None:
            return None
        return f"[\n{text}\n{'  ' * depth}]" if text else "[]"

    def csv(self) -> str | None:
        """The rows as CSV (``csv.writer`` of :attr:`Rows.rows`, each float rounded to 6
        places, times in ISO 8601 UTC), header line first."""
        parts: list[str] = []
        values: list[str] = []
        plain: list[str] = []
        for index, (name, kind) in enumerate(self.kinds.items()):
            found = _cell(name, kind, None, as_json=False)
            if found is None or not _PLAIN_NAME.fullmatch(name):
                return None
            parts.append("," if index else "")
            values.append(found[0])
            plain.extend(found[1:])
        parts.append("")
        text = self._text(parts, values, plain, "\n")
        if text is None:
            return None
        return ",".join(self.kinds) + "\n" + (text + "\n" if text else "")

    def _text(
        self, parts: Sequence[str], values: Sequence[str], plain: Sequence[str], separator: str
    ) -> str | None:
        """``parts[0] value[0] parts[1] ... value[-1] parts[-1]`` per row, rows in order and
        joined by ``separator``; None when a row breaks one of the ``plain`` conditions."""
        pieces = [_literal(parts[0])]
        for value, part in zip(values, parts[1:], strict=True):
            pieces += [value, _literal(part)]
        line = f"concat({', '.join(pieces)})"
        broken = " OR ".join(f"NOT coalesce({condition}, true)" for condition in plain) or "false"
        casts = cast_columns(self.kinds)
        ((text, breaks),) = self.store.db.rows(
            f"""
            SELECT string_agg({line}, {_literal(separator)} ORDER BY {self.order}),
                   count(*) FILTER (WHERE {broken})
            FROM (SELECT {casts} FROM ({self.sql}))
            """,
            self.params,
        )
        if breaks:
            return None
        return text or ""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: A string written as it is, between double quotes in JSON and bare in CSV: printable ASCII
#: but for ``"``, ``\\`` and ``,`` (what needs no escaping in JSON and no quoting in CSV).
_PLAIN = r"[\x20\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*"
_PLAIN_NAME = re.compile(_PLAIN)
#: Microseconds since the epoch of 1000-01-01 and 10000-01-01: ``%Y`` writes four digits.
_YEARS = (-30_610_224_000_000_000, 253_402_300_800_000_000)


def _cell(name: str, kind: Kind, decimals: int | None, *, as_json: bool) -> tuple[str, ...] | None:
    """The SQL writing column ``name`` of ``kind`` as Python writes it (JSON or CSV), then
    the conditions under which it does; None for a kind without a rule."""
    null = "'null'" if as_json else "''"
    if kind == "str":
        text = f"'\"' || {name} || '\"'" if as_json else name
        return f"coalesce({text}, {null})", f"regexp_full_match({name}, '{_PLAIN}')"
    if kind in ("i8", "i16", "i32", "i64"):
        return f"coalesce(CAST({name} AS VARCHAR), {null})", "true"
    if kind == "ts":
        us = f"epoch_us({name})"
        moment = f"make_timestamp({us})"
        fraction = f"CASE WHEN {us} % 1000000 = 0 THEN '' ELSE strftime({moment}, '.%f') END"
        quote = "'\"'" if as_json else "''"
        text = f"{quote} || strftime({moment}, '%Y-%m-%dT%H:%M:%S') || {fraction} || 'Z' || {quote}"
        return f"coalesce({text}, {null})", f"{us} BETWEEN {_YEARS[0]} AND {_YEARS[1] - 1}"
    if kind == "f64":
        # Python's round(v, n) is correctly rounded, ties to even, as printf('%.nf') is;
        # a double cast to text is its shortest repr, as Python's (+ 0.0: no -0.0).
        text = f"CAST(printf('%.6f', {name}) AS DOUBLE)"
        if as_json and decimals is not None:
            if decimals < 1:
                return None
            text = f"CAST(printf('%.{decimals}f', {text}) AS DOUBLE)"
        text = f"CAST({text} + 0.0 AS VARCHAR)"
        if as_json:  # Rows.records: None for NaN and infinities
            return f"CASE WHEN isfinite({name}) THEN {text} ELSE 'null' END", "true"
        return f"CASE WHEN {name} IS NULL THEN '' ELSE {text} END", f"isfinite({name})"
    return None


_NUMERIC = frozenset({"i8", "i16", "i32", "i64", "i128", "f32", "f64"})
#: Kinds whose values JSON takes as they are.
_AS_IS = frozenset({"i8", "i16", "i32", "i64", "str", "bool"})
