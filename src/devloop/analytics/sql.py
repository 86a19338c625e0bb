"""``workspace sql``: SQL over the store's views, for power users, read-only.

The views are ``samples``, ``processes``, ``system``, ``events``, ``limits`` and ``runs``
(columns in :mod:`devloop.store.schema`, plus the partition columns ``date`` and ``hour``). A
time range or project/agent globs narrow every view that has those columns, so
``SELECT * FROM samples`` means "the samples of the range".

The statement is the user's, so it runs read-only, in two layers:

* only one query runs: DuckDB's own parser must find a single statement of type SELECT (which
  covers ``WITH``, ``FROM``, ``VALUES``, ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE``), or an
  ``EXPLAIN [ANALYZE]`` of one. COPY, ATTACH, INSTALL/LOAD, CREATE, INSERT, SET, PRAGMA... are
  refused before the store is opened.
* DuckDB itself refuses every file outside the store: once the views exist, the connection is
  closed to the outside (``enable_external_access = false``, with the store's folder as its one
  ``allowed_directories``; no extension is installed or loaded on demand) and its configuration
  locked (``lock_configuration = true``), so no statement can open it again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from devloop.analytics.query import Store
from devloop.analytics.timerange import TimeRange
from devloop.errors import QueryError, QueryRefused, UsageError

if TYPE_CHECKING:
    import polars as pl

#: What every refusal starts with.
READ_ONLY = "workspace sql is read-only"

#: Settings applied, in this order, after the views exist (see the module doc). Setting
#: ``allowed_directories`` must come first: DuckDB refuses to change it once external access
#: is off.
LOCKDOWN = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)


def run_sql(
    workspace_dir: Path | str | Store,
    sql: str,
    time_range: TimeRange | None = None,
    projects: tuple[str, ...] | list[str] = (),
    agents: tuple[str, ...] | list[str] = (),
) -> pl.DataFrame:
    """The result of ``sql`` (one query) as a polars DataFrame, read-only (see the module doc).

    A statement that is not a query, or that reaches a file outside the store, is a
    UsageError ``"workspace sql is read-only: ..."``; any other DuckDB error in it is a
    UsageError quoting DuckDB's message. ``sql`` runs on a connection of its own (a Store
    passed in is only used for its folder), so the lockdown never reaches the caller's.
    """
    check_read_only(sql)
    folder = workspace_dir.workspace_dir if isinstance(workspace_dir, Store) else workspace_dir
    with Store(folder) as store:
        narrowed = time_range is not None and time_range != TimeRange() or projects or agents
        if narrowed:
            _narrow(store, time_range, projects, agents)
        _lock_down(store)
        try:
            return store.frame(sql)
        except QueryError as exc:
            raise _refusal(exc) from exc


def check_read_only(sql: str) -> None:
    """Refuse (UsageError) ``sql`` unless it is one query: a SELECT (``WITH``, ``FROM``,
    ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) or an ``EXPLAIN [ANALYZE]`` of one.

    The statement types are DuckDB's own parser's, never guessed from the text.
    """
    import duckdb

    from devloop.store.db import mapped

    if not sql.strip():
        raise UsageError("empty SQL statement")
    try:
        with mapped("cannot parse the statement"):
            statements = duckdb.extract_statements(sql)
            if len(statements) != 1:
                raise UsageError(f"{READ_ONLY}: one query runs, not {len(statements)} statements")
            kind = statements[0].type
            if kind == duckdb.StatementType.EXPLAIN:
                explained = _explained(sql)
                inner = duckdb.extract_statements(explained) if explained else []
                kind = inner[0].type if len(inner) == 1 else kind
    except QueryError as exc:
        raise UsageError(f"SQL error: {exc.__cause__}") from exc
    if kind != duckdb.StatementType.SELECT:
        name = kind.name.replace("_", " ")
        raise UsageError(
            f"{READ_ONLY}: only a query runs (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, "
            f"SUMMARIZE, EXPLAIN [ANALYZE] of a query), not a {name} statement"
        )


def _explained(sql: str) -> str | None:
    """The statement after ``EXPLAIN [ANALYZE]`` (EXPLAIN ANALYZE runs it), found with DuckDB's
    tokenizer; None for the ``EXPLAIN (options) ...`` form, which is not looked into."""
    import duckdb

    tokens = duckdb.tokenize(sql)
    ends = [start for start, _ in tokens[1:]] + [len(sql)]
    words = [
        (start, sql[start:end].strip().upper())
        for (start, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]
    skip = 2 if [word for _, word in words[1:2]] == ["ANALYZE"] else 1
    if len(words) <= skip or words[skip][1].startswith("("):
        return None
    return sql[words[skip][0] :]


def _narrow(
    store: Store,
    time_range: TimeRange | None,
    projects: tuple[str, ...] | list[str],
    agents: tuple[str, ...] | list[str],
) -> None:
    """Shadow every view by a temp view of the range and names (before the lockdown)."""
    from devloop.store.schema import TABLES  # pyarrow: only here, not at import

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


def _lock_down(store: Store) -> None:
    """Close the connection to everything but the store's folder, and lock its settings."""
    folder = str(store.root.resolve()).rstrip("/") + "/"
    store.execute(f"SET allowed_directories = [{_strings((folder,))}]")
    for statement in LOCKDOWN:
        store.execute(statement)


def _refusal(exc: QueryError) -> UsageError:
    """The UsageError of a query DuckDB failed: a permission refusal is the read-only one."""
    cause = exc.__cause__
    first = str(cause).splitlines()[0] if cause is not None else str(exc)
    if isinstance(exc, QueryRefused):
        return UsageError(f"{READ_ONLY}: {first.removeprefix('Permission Error: ')}")
    return UsageError(f"SQL error: {cause}")


def _literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def _strings(values: tuple[str, ...]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values) or "NULL"
