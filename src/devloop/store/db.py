"""The store's one door to DuckDB for everything above it: queries over the views, errors mapped.

Reports, the dashboard and the stress-test report ask the store questions in SQL; they never
hold a DuckDB connection or catch a DuckDB error themselves. :class:`Database` is a read-only
connection with the store's views (:func:`devloop.store.query.connect_listed`); every DuckDB
error raised while running or fetching a query becomes a :class:`~devloop.errors.QueryError`
(a StoreError) naming what was asked, here and nowhere else.

    with Database.open(workspace.metrics_dir) as db:
        rows = db.rows("SELECT project, max(ts) FROM samples GROUP BY ALL")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.errors import QueryError, QueryRefused, StoreError

if TYPE_CHECKING:
    import duckdb
    import numpy.typing as npt
    import polars as pl
    import pyarrow as pa

    from devloop.store.query import Listing


@contextmanager
def mapped(what: str = "query failed") -> Iterator[None]:
    """Turn a DuckDB error inside the block into a QueryError ``"<what>: <DuckDB's words>"``."""
    import duckdb

    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None  # Ctrl-C during a query: DuckDB took the SIGINT
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"{what}: {exc}") from exc
    except duckdb.Error as exc:
        raise QueryError(f"{what}: {exc}") from exc


class Database:
    """A DuckDB connection over the store's views whose errors are QueryErrors."""

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, listing: Listing, root: Path | str = ""
    ) -> None:
        self.connection = connection
        #: The store's folder, named in every error.
        self.root = Path(root)
        #: The files (and spool tables) the views read, as listed when they were made.
        self.listing = listing

    @classmethod
    def open(cls, root: Path | str, *, threads: int | None = None) -> Database:
        """The store at ``root`` (its ``metrics`` folder); StoreError when DuckDB fails."""
        from devloop.store.query import connect_listed

        connection, listing = connect_listed(root)
        db = cls(connection, listing, root)
        if threads is not None:
            db.execute(f"SET threads = {int(threads)}")
        try:
            connection.execute("SET enable_progress_bar = false")
        except Exception:  # noqa: BLE001 - a Jupyter kernel without ipywidgets refuses it;
            pass  # there DuckDB never draws a bar either, so there is nothing to turn off
        return db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement for its effect."""
        with mapped(self._failed):
            self.connection.execute(sql, list(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The result of ``sql`` as tuples."""
        with mapped(self._failed):
            return self.connection.sql(sql, params=list(params)).fetchall()

    def named_rows(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The result of ``sql``: its column names and its rows as tuples."""
        with mapped(self._failed):
            relation = self.connection.sql(sql, params=list(params))
            return list(relation.columns), relation.fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of ``sql``'s result, None when it has none."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """The result of ``sql`` as a polars DataFrame."""
        with mapped(self._failed):
            result: pl.DataFrame = self.connection.sql(sql, params=list(params)).pl()
            return result

    def numpy(self, sql: str, params: Sequence[Any] = ()) -> dict[str, npt.NDArray[Any]]:
        """The result of ``sql`` as a NumPy array per column (no polars, no pyarrow)."""
        with mapped(self._failed):
            return dict(self.connection.sql(sql, params=list(params)).fetchnumpy())

    def arrow(self, sql: str, params: Sequence[Any] = (), batch: int = 1 << 17) -> pa.Table:
        """The result of ``sql`` as an Arrow table (read ``batch`` rows at a time)."""
        with mapped(self._failed):
            return self.connection.sql(sql, params=list(params)).to_arrow_table(batch)

    @property
    def _failed(self) -> str:
        return f"a query over {self.root} failed" if self.root.parts else "query failed"

    @contextmanager
    def registered(self, tables: dict[str, Any]) -> Iterator[None]:
        """Arrow tables (or polars frames) visible to queries under these names in the block."""
        with mapped("cannot register a table"):
            for name, table in tables.items():
                self.connection.register(name, table)
        try:
            yield
        finally:
            for name in tables:
                try:
                    self.connection.unregister(name)
                except Exception:  # noqa: BLE001 - a closed connection has nothing to drop
                    pass

    def register(self, name: str, table: Any) -> None:
        """Make ``table`` (Arrow or polars) visible to queries as ``name`` until closed."""
        with mapped("cannot register a table"):
            self.connection.register(name, table)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Database", "QueryError", "QueryRefused", "StoreError", "mapped"]
