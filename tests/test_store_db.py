"""devloop.store.db: the one place DuckDB's errors become devloop's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from devloop.analytics import run_sql
from devloop.errors import QueryError, StoreError, UsageError
from devloop.store import StoreWriter
from devloop.store.db import Database, mapped
from tests.test_store_support import T0, tick_rows


def test_queries_answer_over_the_views(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0))
    with Database.open(root, threads=1) as db:
        ((rows,),) = db.rows("SELECT count(*) FROM samples")
        assert rows == len(tick_rows(T0))
        assert db.one("SELECT count(*) FROM samples WHERE false") == (0,)
        assert db.frame("SELECT 41 + ? AS x", [1])["x"].to_list() == [42]
        assert db.arrow("SELECT 7 AS y").column("y").to_pylist() == [7]
        with db.registered({"extra": pa.table({"z": [1, 2, 3]})}):
            assert db.rows("SELECT sum(z) FROM extra") == [(6,)]
        with pytest.raises(QueryError, match="extra"):
            db.rows("SELECT * FROM extra")  # gone with the block


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.rows("SELECT no_such_column FROM samples"),
        lambda db: db.one("SELEC 1"),
        lambda db: db.frame("SELECT * FROM no_such_table"),
        lambda db: db.arrow("SELECT 1/0::INTEGER AS x FROM range(3) WHERE error('boom')"),
        lambda db: db.execute("CREATE VIEW samples AS SELECT 1"),
    ],
)
def test_every_duckdb_error_is_a_query_error_naming_the_store(
    tmp_path: Path, call: Callable[[Database], object]
) -> None:
    root = tmp_path / "metrics"
    with Database.open(root) as db, pytest.raises(QueryError) as caught:
        call(db)
    assert isinstance(caught.value, StoreError)
    assert str(caught.value).startswith(f"a query over {root} failed: ")
    assert caught.value.__cause__ is not None  # DuckDB's own error, kept as the cause


def test_mapped_words_the_error_and_passes_others_through() -> None:
    import duckdb

    with pytest.raises(QueryError, match=r"^reading the ticks: .*Parser Error"):
        with mapped("reading the ticks"):
            duckdb.connect().execute("SELEC")
    with pytest.raises(ZeroDivisionError), mapped("not mine"):
        _ = 1 / 0


def test_a_bad_user_query_is_a_usage_error_quoting_duckdb(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    with StoreWriter(ws / "metrics") as writer:
        writer.append("samples", tick_rows(T0))
    with pytest.raises(UsageError, match=r"^SQL error: .*no_such_table"):
        run_sql(ws, "SELECT * FROM no_such_table")


def test_ctrl_c_during_a_query_is_a_keyboard_interrupt_not_a_store_error() -> None:
    # DuckDB takes the SIGINT of a Ctrl-C typed while it runs a query and raises its own
    # InterruptException, a duckdb.Error: mapped as a QueryError, the dashboard showed it as a
    # store error and went on drawing (a loaded CI machine's test hung on it).
    import threading

    import duckdb

    connection = duckdb.connect()
    done = threading.Event()

    def interrupt() -> None:
        while not done.wait(0.05):
            connection.interrupt()

    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt), mapped("the dashboard's frame"):
            connection.execute("SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3")
    finally:
        done.set()
        thread.join()
        connection.close()
