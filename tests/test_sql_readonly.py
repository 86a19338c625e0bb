"""``workspace sql`` is read-only: every way to write, to reach a file outside the store, to
install or load code or to undo the lockdown is refused with one line, and nothing is written;
every view still answers, narrowed or not, from Parquet and from the spool.

The store is ``test_analytics_reports``'s hand-built one (10 ticks from 10:00:00, projects api
and web, 35 samples).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from devloop.analytics import Store, parse_range, run_sql
from devloop.analytics.sql import READ_ONLY
from devloop.cli import cli
from devloop.errors import UsageError
from tests.test_analytics_reports import T0, build_store

ONLY_QUERIES = (
    f"{READ_ONLY}: only a query runs (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, "
    "EXPLAIN [ANALYZE] of a query), not a {} statement"
)
NO_ACCESS = f'{READ_ONLY}: Cannot access file "{{}}" - file system operations are disabled by ' \
    "configuration"  # fmt: skip

#: (id, statement, the one-line refusal). ``{tmp}``: a folder beside the workspace (outside the
#: store); ``{ws}``: the workspace folder, ``{store}`` its store (``{ws}/metrics``).
REFUSED = [
    ("copy-to-a-file", "COPY samples TO '{tmp}/out.csv'", ONLY_QUERIES.format("COPY")),
    ("copy-into-the-store", "COPY samples TO '{store}/samples/x.parquet' (FORMAT parquet)",
     ONLY_QUERIES.format("COPY")),
    ("copy-from", "COPY samples FROM '/etc/passwd'", ONLY_QUERIES.format("COPY")),
    ("explain-analyze-copy", "EXPLAIN ANALYZE COPY samples TO '{store}/x.csv'",
     ONLY_QUERIES.format("COPY")),
    ("attach", "ATTACH '{tmp}/other.db' AS other", ONLY_QUERIES.format("ATTACH")),
    ("detach", "DETACH memory", ONLY_QUERIES.format("DETACH")),
    ("install", "INSTALL httpfs", ONLY_QUERIES.format("LOAD")),
    ("load", "LOAD httpfs", ONLY_QUERIES.format("LOAD")),
    ("create-table", "CREATE TABLE copy AS SELECT * FROM samples", ONLY_QUERIES.format("CREATE")),
    ("replace-a-view", "CREATE OR REPLACE TEMP VIEW samples AS SELECT 1 AS x",
     ONLY_QUERIES.format("CREATE")),
    ("insert", "INSERT INTO samples SELECT * FROM samples", ONLY_QUERIES.format("INSERT")),
    ("update", "UPDATE samples SET pid = 0", ONLY_QUERIES.format("UPDATE")),
    ("delete", "DELETE FROM samples", ONLY_QUERIES.format("DELETE")),
    ("drop", "DROP VIEW samples", ONLY_QUERIES.format("DROP")),
    ("export", "EXPORT DATABASE '{tmp}/export'", ONLY_QUERIES.format("EXPORT")),
    ("set-external-access", "SET enable_external_access = true", ONLY_QUERIES.format("SET")),
    ("reset-the-lock", "RESET lock_configuration", ONLY_QUERIES.format("SET")),
    ("pragma-profiling-output", "PRAGMA profiling_output = '{tmp}/profile.json'",
     ONLY_QUERIES.format("SET")),  # DuckDB parses PRAGMA x = y as SET
    ("pragma-enable-profiling", "PRAGMA enable_profiling", ONLY_QUERIES.format("PRAGMA")),
    ("pragma-import-database", "PRAGMA import_database('{tmp}')", ONLY_QUERIES.format("PRAGMA")),
    ("checkpoint", "CHECKPOINT", ONLY_QUERIES.format("CALL")),
    ("a-query-then-a-write", "SELECT 1; COPY samples TO '{tmp}/out.csv'",
     f"{READ_ONLY}: one query runs, not 2 statements"),
    ("read-csv-etc-passwd", "SELECT * FROM read_csv('/etc/passwd')",
     NO_ACCESS.format("/etc/passwd")),
    ("read-text-etc-hostname", "SELECT * FROM read_text('/etc/hostname')",
     NO_ACCESS.format("/etc/hostname")),
    ("glob-etc", "SELECT * FROM glob('/etc/*')", NO_ACCESS.format("/etc/*")),
    ("read-parquet-outside-the-store", "SELECT * FROM read_parquet('{tmp}/outside.parquet')",
     NO_ACCESS.format("{tmp}/outside.parquet")),
    ("the-workspace-config", "SELECT * FROM read_text('{ws}/workspace.json')",
     NO_ACCESS.format("{ws}/workspace.json")),
    ("out-of-the-store-by-dotdot", "SELECT * FROM read_text('{store}/../workspace.json')",
     NO_ACCESS.format("{store}/../workspace.json")),
]  # fmt: skip


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time, by relative path."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    """The store, and a Parquet file outside it that DuckDB could read if it were let."""
    ws = build_store(tmp_path / ".devloop-workspace")
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"secret": [42]}), outside / "outside.parquet")
    return {"tmp": str(outside), "ws": str(ws), "store": str(ws / "metrics")}


@pytest.mark.parametrize(("statement", "message"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])  # fmt: skip
def test_a_statement_that_writes_or_reaches_outside_the_store_is_refused(
    places: dict[str, str], tmp_path: Path, statement: str, message: str
) -> None:
    before = tree(tmp_path)
    with pytest.raises(UsageError) as refused:
        run_sql(places["ws"], statement.format(**places))
    assert str(refused.value) == message.format(**places)
    assert tree(tmp_path) == before  # nothing written, in the store or beside it


@pytest.mark.parametrize("case", ["copy-to-a-file", "read-csv-etc-passwd", "install"])
def test_the_command_refuses_with_one_line_and_exit_1(
    places: dict[str, str], tmp_path: Path, case: str
) -> None:
    _, statement, message = next(c for c in REFUSED if c[0] == case)
    before = tree(tmp_path)
    result = CliRunner().invoke(
        cli, ["workspace", "sql", statement.format(**places), "--workspace-dir", places["ws"]]
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message.format(**places)}\n"
    assert result.stdout == ""
    assert tree(tmp_path) == before


VIEW_ROWS = {"samples": 35, "processes": 4, "system": 10, "events": 1, "limits": 2, "runs": 0}


def test_every_view_answers_and_files_of_the_store_may_be_read(
    places: dict[str, str], tmp_path: Path
) -> None:
    before = tree(tmp_path)
    for view, rows in VIEW_ROWS.items():
        assert run_sql(places["ws"], f"SELECT count(*) AS n FROM {view}")["n"].to_list() == [rows]
    described = run_sql(places["ws"], "DESCRIBE samples")
    assert "cpu_cores" in described["column_name"].to_list()
    plan = run_sql(places["ws"], "EXPLAIN /* how */ ANALYZE SELECT count(*) FROM samples")
    assert plan.columns == ["explain_key", "explain_value"]
    inside = run_sql(
        places["ws"], f"SELECT count(*) AS n FROM read_parquet('{places['store']}/samples/**')"
    )
    assert inside["n"].to_list() == [35]
    assert tree(tmp_path) == before


def test_narrowing_still_works_under_the_lockdown(places: dict[str, str]) -> None:
    ws = places["ws"]
    start, end = T0.isoformat(), T0.replace(second=5).isoformat()
    window = parse_range(start, end)
    narrowed = {
        view: run_sql(ws, f"SELECT count(*) AS n FROM {view}", window, projects=["api"]).item()
        for view in VIEW_ROWS
    }
    # ticks 0-4 of api's two agents; the pause at tick 3; processes (stamped at their last
    # tick, 9) and limits (from 09:59) outside
    assert narrowed == {"samples": 10, "processes": 0, "system": 5, "events": 1, "limits": 0,
                        "runs": 0}  # fmt: skip
    assert run_sql(ws, "SELECT count(*) AS n FROM samples", parse_range(period="2s"),
                   projects=["api"])["n"].to_list() == [4]  # fmt: skip
    # ... and the narrowed views cannot be replaced either
    with pytest.raises(UsageError, match="not a CREATE statement"):
        run_sql(ws, "CREATE OR REPLACE TEMP VIEW samples AS SELECT 1", parse_range(period="2s"))
    result = CliRunner().invoke(cli, [
        "workspace", "sql", "SELECT project, count(*) AS n FROM samples GROUP BY 1",
        "--workspace-dir", ws, "--start", start, "--end", end, "--project", "web",
        "--format", "json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"project": "web"' in result.stdout and '"n": 5' in result.stdout


def test_the_spool_tail_is_read_under_the_lockdown(tmp_path: Path) -> None:
    from tests.test_analytics_spool import HOUR, _build

    ws = tmp_path / ".devloop-workspace"
    writer = _build(ws, T0 + HOUR)  # the 11:00 hour only in an open writer's spool
    assert writer is not None
    try:
        counts = run_sql(ws, "SELECT count(*) AS n, count(DISTINCT hour) AS hours FROM system")
        assert counts.row(0) == (20, 2)
    finally:
        writer.close()


def test_a_store_passed_in_keeps_its_own_connection_open(places: dict[str, str]) -> None:
    with Store(places["ws"]) as store:
        assert run_sql(store, "SELECT count(*) AS n FROM events")["n"].to_list() == [1]
        # the lockdown was on run_sql's own connection, not on the caller's
        store.execute("SET threads = 1")
        outside = store.rows("SELECT count(*) FROM read_parquet(?)", [places["tmp"] + "/*"])
        assert outside == [(1,)]


def test_json_gives_decimals_as_numbers(places: dict[str, str]) -> None:
    """DuckDB's sum of an integer column is a DECIMAL(38, 0): JSON has it as an integer, and a
    fractional DECIMAL as a float (it used to stop with 'Decimal is not JSON serializable')."""
    result = CliRunner().invoke(cli, [
        "workspace", "sql", "SELECT sum(rss_bytes) AS total, 2.50::DECIMAL(5, 2) AS d FROM samples",
        "--workspace-dir", places["ws"], "--format", "json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    total = run_sql(places["ws"], "SELECT sum(rss_bytes)::BIGINT AS t FROM samples").item()
    assert row == {"total": total, "d": 2.5} and isinstance(row["total"], int)
