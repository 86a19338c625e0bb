"""``workspace sql``: SQL over the store's views, for power users.

The views are ``samples``, ``processes``, ``system``, ``events`` and ``limits`` (columns in
:mod:`devloop.store.schema`, plus the partition columns ``date`` and ``hour``). A time range or
project/agent globs narrow every view that has those columns, so ``SELECT * FROM samples``
means "the samples of the range".
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.analytics._db import Store, open_store
from devloop.analytics.timerange import TimeRange
from devloop.errors import QueryError, UsageError
from devloop.store.schema import TABLES

if TYPE_CHECKING:
    import polars as pl


def run_sql(
    workspace_dir: Path | str | Store,
    sql: str,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> pl.DataFrame:
    """The result of ``sql`` (one statement) as a polars DataFrame.

    A DuckDB error in the statement is a UsageError quoting DuckDB's message.
    """
    if not sql.strip():
        raise UsageError("empty SQL statement")
    store = open_store(workspace_dir)
    narrowed = time_range is not None and time_range != TimeRange() or projects or agents
    if narrowed:
        selection = store.select(time_range, projects, agents, require_samples=False)
        ((database,),) = store.rows("SELECT current_database()")
        home = '"' + str(database).replace('"', '""') + '".main'
        for table, schema in TABLES.items():
            names = set(schema.names)
            conditions = [
                f"ts >= {_literal(selection.start)}",
                f"ts < {_literal(selection.end)}",
            ]
            if selection.project_filter and "project" in names:
                conditions.append(f"project IN ({_strings(selection.projects)})")
            if selection.agent_filter and "agent" in names:
                conditions.append(f"agent IN ({_strings(selection.agents)})")
            store.execute(
                f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM {home}.{table} "
                f"WHERE {' AND '.join(conditions)}"
            )
    try:
        return store.frame(sql)
    except QueryError as exc:
        raise UsageError(f"SQL error: {exc.__cause__}") from exc
    except AttributeError as exc:  # a statement that returns nothing (SET, CREATE ...)
        raise UsageError("the statement returned no rows to show") from exc


def _literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def _strings(values: tuple[str, ...]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values) or "NULL"
