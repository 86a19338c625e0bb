"""The Spark engine (issue 16): the same records as the DuckDB engine on the same dataset.

Three simulated hosts (tests/helpers/s3.py), compacted, shipped to a folder (``file://``, the
layout a cluster reads: ``<table>/host=H/date=D/hour=H/``) and copied side by side into one
store (a fleet mirror's layout: ``metrics/<table>/date=D/hour=H/<host>--<name>.parquet``).
DuckDB reads the store; Spark reads the shipped dataset and the store. Every record is compared
key by key, floats to 1e-9 relative. A second store has idle gaps (an agent that stops for ten
minutes an hour: project series filled with zeros, estimated runs split in two) and first-tick
CPU readings that are null. A third ties each run to its root process (``processes.run_id``,
null in a simulated store), so autotune's run demand has per-tick series to join.

One Spark session (local[2]) for the module: starting the JVM is most of the time.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devloop.analytics import (
    TimeRange,
    export_metrics,
    parse_moment,
    peak_usage,
    records,
    run_summary,
    runs,
)
from devloop.store.ship import ship
from tests.helpers.s3 import side_by_side, simulated_stores

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a JDK: no `java` here"),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from devloop.analytics.spark import spark_session

    # A short-lived JVM on a small machine: the quick JIT only and one GC thread.
    session = spark_session("local[2]", java_options="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return simulated_stores(tmp_path_factory)


@pytest.fixture(scope="module")
def shipped(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three hosts shipped to one folder, as to a bucket."""
    folder = tmp_path_factory.mktemp("shipped")
    for store in stores.values():
        ship(store / "metrics", f"file://{folder}")
    assert sorted(p.name for p in (folder / "samples").iterdir()) == [
        "host=alpha", "host=bravo", "host=charlie"
    ]  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def merged(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace holding the three hosts' files side by side, as a fleet mirror does."""
    return side_by_side(stores, tmp_path_factory.mktemp("merged") / ".devloop-workspace")


@pytest.fixture(scope="module")
def holes(merged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``merged`` with proj-1's linter idle from minute 10 to 19 of each hour, and
    proj-2's formatter's CPU reading null every seventh minute (a process's first tick)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    workspace = tmp_path_factory.mktemp("holes") / ".devloop-workspace"
    shutil.copytree(merged, workspace)
    for path in sorted((workspace / "metrics" / "samples").rglob("*.parquet")):
        table = pq.read_table(path)
        metadata = pq.read_metadata(path).metadata
        minute = pc.remainder(pc.divide(pc.cast(table["ts"], pa.int64()), 60_000_000), 60)
        idle = pc.and_(
            pc.and_(pc.equal(table["project"], "proj-1"), pc.equal(table["agent"], "linter")),
            pc.and_(pc.greater_equal(minute, 10), pc.less(minute, 20)),
        )
        table = table.filter(pc.invert(idle))
        tick = pc.divide(pc.cast(table["ts"], pa.int64()), 10_000_000)
        unread = pc.and_(
            pc.and_(pc.equal(table["project"], "proj-2"), pc.equal(table["agent"], "formatter")),
            pc.equal(pc.remainder(tick, 42), 0),
        )
        index = table.schema.get_field_index("cpu_cores")
        cpu = pc.if_else(unread, pa.scalar(None, pa.float32()), table["cpu_cores"])
        table = table.set_column(index, table.schema.field(index), cpu)
        pq.write_table(table.replace_schema_metadata(metadata), path)
    return workspace


@pytest.fixture(scope="module")
def tagged(merged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``merged`` with each run's root process tagged with its run id in ``processes``: the
    samples of the process from its run's start on are the run's (a simulated process idles
    on after its run, some ticks held stopped by the enforcement)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    workspace = tmp_path_factory.mktemp("tagged") / ".devloop-workspace"
    shutil.copytree(merged, workspace)

    def roots(table: pa.Table) -> list[tuple[Any, ...]]:
        return [
            tuple(row.values()) for row in table.select(["host", "pid", "start_time"]).to_pylist()
        ]

    runs = pq.read_table(workspace / "metrics" / "runs")
    run_of = dict(zip(roots(runs), runs["run_id"].to_pylist(), strict=True))
    for path in sorted((workspace / "metrics" / "processes").rglob("*.parquet")):
        table = pq.read_table(path)
        metadata = pq.read_metadata(path).metadata
        index = table.schema.get_field_index("run_id")
        field = table.schema.field(index)
        ids = pa.array([run_of.get(key) for key in roots(table)], field.type)
        table = table.set_column(index, field, ids)
        pq.write_table(table.replace_schema_metadata(metadata), path)
    return workspace


def _same(spark_side: Any, duckdb_side: Any, where: str = "") -> None:
    """Equal key by key (dicts), item by item (lists); floats to 1e-9 relative."""
    if isinstance(duckdb_side, dict):
        assert isinstance(spark_side, dict), where
        assert list(spark_side) == list(duckdb_side), where
        for key, value in duckdb_side.items():
            _same(spark_side[key], value, f"{where}.{key}")
    elif isinstance(duckdb_side, list):
        assert isinstance(spark_side, list), where
        assert len(spark_side) == len(duckdb_side), where
        for i, (a, b) in enumerate(zip(spark_side, duckdb_side, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(duckdb_side, float) and not isinstance(spark_side, bool):
        assert isinstance(spark_side, int | float), where
        assert math.isclose(spark_side, duckdb_side, rel_tol=1e-9, abs_tol=1e-12), (
            where, spark_side, duckdb_side
        )  # fmt: skip
    else:
        assert spark_side == duckdb_side, (where, spark_side, duckdb_side)


def test_peak_usage_equals_duckdb(spark: Any, shipped: Path, merged: Path) -> None:
    from devloop.analytics.spark import peak_usage_spark

    expected = peak_usage(merged).to_json()
    assert len(expected["peaks"]) == 7  # the workspace, 2 projects, 4 agents
    assert expected["range"]["hosts"] == ["alpha", "bravo", "charlie"]
    _same(peak_usage_spark(spark, shipped).to_json(), expected, "shipped")
    # a range cutting an hour, one project, one host, from the store's layout
    asked = TimeRange(parse_moment("2026-01-05T00:30:00Z"), parse_moment("2026-01-05T01:10:00Z"))
    expected = peak_usage(merged, asked, projects=["proj-2"]).to_json()
    found = peak_usage_spark(spark, merged, asked, projects=["proj-2"])
    _same(found.to_json(), expected, "store")
    # the report the CLI renders: the same columns and kinds as DuckDB's
    duckdb_rows = peak_usage(merged, asked, projects=["proj-2"]).result
    assert (found.result.columns, found.result.kinds) == (duckdb_rows.columns, duckdb_rows.kinds)
    assert [type(v) for v in found.result.rows[0]] == [type(v) for v in duckdb_rows.rows[0]]


def test_runs_summary_equals_duckdb(spark: Any, shipped: Path, merged: Path) -> None:
    from devloop.analytics.spark import run_summary_spark

    expected = records(run_summary(merged))
    assert expected and any(row["estimated"] for row in expected)
    assert any(row["estimated"] < row["runs"] for row in expected)  # launched runs too
    found = run_summary_spark(spark, shipped)
    assert found.schema == run_summary(merged).schema  # the frame the CLI renders
    _same(records(found), expected, "summary")
    _same(
        records(run_summary_spark(spark, shipped, agent="lint*", estimated=False)),
        records(run_summary(merged, agent="lint*", estimated=False)),
        "launched linters",
    )


def test_runs_equal_duckdb(spark: Any, shipped: Path, merged: Path) -> None:
    from devloop.analytics.spark import runs_spark

    expected = runs(merged)
    # 12 estimated (each host's four agents: one span over the two hours), 11 launched
    assert (expected.height, expected["estimated"].sum()) == (23, 12)
    found = runs_spark(spark, shipped)
    assert found.schema == expected.schema  # the frame the CLI renders
    # the same rows in the same order (by start, then run id and host), datetimes included;
    # the filters (shared with the summary, above) and --slowest are in the CLI case below
    _same(found.rows(named=True), expected.rows(named=True), "runs")


def test_export_equals_duckdb(spark: Any, shipped: Path, merged: Path) -> None:
    from devloop.analytics.spark import export_spark

    expected = export_metrics(merged, interval=60).to_json()
    assert len(expected["rows"]) == 2 * 120  # 2 projects x 120 minutes
    _same(export_spark(spark, shipped, interval=60).to_json(), expected, "export")
    detailed = export_metrics(merged, interval=300, detailed=True).to_json()
    _same(export_spark(spark, shipped, interval=300, detailed=True).to_json(), detailed, "agents")


def test_idle_ticks_and_unread_cpu(spark: Any, holes: Path) -> None:
    from devloop.analytics.spark import export_spark, peak_usage_spark, run_summary_spark

    found = peak_usage_spark(spark, holes).to_json()
    expected = peak_usage(holes).to_json()
    linter = next(r for r in found["peaks"] if r["project"] == "proj-1" and r["agent"] == "linter")
    assert linter["ticks"] == 2160 - 3 * 2 * 60  # 10 minutes of 6 ticks, 2 hours, 3 hosts
    # The tick of a CPU peak is where the peak is, not a tick whose CPU is unknown (DuckDB's
    # arg_max over {v, n} structs took a null v as the largest until agent_hour and
    # project_hour version 2): the unread minutes of proj-2's formatter are never named.
    _same(found, expected, "holes")
    _same(records(run_summary_spark(spark, holes)), records(run_summary(holes)), "holes summary")
    _same(export_spark(spark, holes).to_json(), export_metrics(holes).to_json(), "holes export")


def test_the_cli_says_what_spark_needs(monkeypatch: pytest.MonkeyPatch, merged: Path) -> None:
    import sys

    from click.testing import CliRunner

    from devloop.cli import cli

    args = ["workspace", "analytics", "efficiency", "--workspace-dir", str(merged),
            "--engine", "spark"]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pyspark", None)  # as if it were not installed
        found = CliRunner().invoke(cli, args)
    assert (found.exit_code, found.output) == (
        1, "Error: the Spark engine needs pyspark: pip install 'devloop-workspace[fleet]'\n"
    )  # fmt: skip
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    found = CliRunner().invoke(cli, args)
    assert (found.exit_code, found.output) == (
        1, "Error: the Spark engine needs a Java runtime (JDK 17 or later) on the PATH\n"
    )  # fmt: skip
    found = CliRunner().invoke(cli, ["workspace", "metrics", "--workspace-dir", str(merged),
                                     "--engine", "spark"])  # fmt: skip
    assert found.exit_code == 2
    assert "Error: --engine spark runs the export only (--interval or --format csv)" in found.output


def test_the_cli_runs_peak_usage_on_spark(spark: Any, merged: Path) -> None:
    from click.testing import CliRunner

    from devloop.cli import cli

    args = ["workspace", "analytics", "peak-usage", "--workspace-dir", str(merged),
            "--format", "json"]  # fmt: skip
    on_duckdb = CliRunner().invoke(cli, [*args, "--host", "bravo"])
    on_spark = CliRunner().invoke(cli, [*args, "--engine", "spark", "--host", "bravo"])
    assert on_duckdb.exit_code == 0 and on_spark.exit_code == 0, on_spark.output
    _same(json.loads(on_spark.output), json.loads(on_duckdb.output), "cli")
    # --host held: one host's ticks, not the fleet's
    fleet = json.loads(CliRunner().invoke(cli, args).output)
    assert fleet["range"]["hosts"] == ["alpha", "bravo", "charlie"]
    ticks = json.loads(on_spark.output)["peaks"][0]["ticks"]
    assert ticks * 3 == fleet["peaks"][0]["ticks"]
    # The command ran in this process's session and left it running (it stops only its own).
    assert spark.range(3).count() == 3


_CUT = ["--start", "2026-01-05T00:30:00Z", "--end", "2026-01-05T01:10:00Z"]


@pytest.mark.parametrize(
    ("store", "command", "facts"),
    [
        ("merged", ["metrics", "--interval", "5m", "--detailed", "--host", "bravo"],
         lambda out: len(out["rows"]) == 24 * 4),
        ("merged", ["analytics", "runs", "--summary", "--agent", "lint*", "--host", "bravo"],
         lambda out: [row["agent"] for row in out["summary"]] == ["linter", "linter"]),
        # the six estimated linters last the two hours from one start (a tie: by run id, then
        # host), then the two longest launched ones
        ("merged", ["analytics", "runs", "--agent", "lint*", "--slowest", "8"],
         lambda out: [(r["project"], r["host"], r["duration_seconds"]) for r in out["runs"]]
         == [(p, h, 7200.0) for p in ("proj-1", "proj-2") for h in ("alpha", "bravo", "charlie")]
         + [("proj-1", "charlie", 14.899), ("proj-2", "alpha", 13.735)]),
        # efficiency and bottlenecks: their only Spark runs here (each costs seconds), on the
        # three hosts with idle ticks and unread CPU; efficiency over a range cutting an hour
        ("holes", ["analytics", "efficiency", *_CUT],
         lambda out: out["range"]["hosts"] == ["alpha", "bravo", "charlie"]
         and [(p["ticks"], p["pauses"]) for p in out["projects"]] == [(720, 0), (720, 6)]
         and out["projects"][1]["cpu_over_limit_seconds"] == 1650.0 and len(out["notes"]) == 4),
        # every interval: projects and the workspace, CPU and memory (the longest: first), up
        # to three drivers
        ("holes", ["analytics", "bottlenecks", "--threshold", "10", "--all"],
         lambda out: out["intervals_found"] == len(out["intervals"]) == 53
         and out["intervals"][0]["resource"] == "memory"
         and {(i["scope"], i["resource"]) for i in out["intervals"]}
         == {("project", "cpu"), ("project", "memory"), ("workspace", "cpu")}
         and max(len(i["drivers"]) for i in out["intervals"]) == 3),
    ],
    ids=["export", "runs-summary", "runs", "efficiency", "bottlenecks"],
)  # fmt: skip
def test_the_cli_runs_on_spark(
    spark: Any,
    request: pytest.FixtureRequest,
    store: str,
    command: list[str],
    facts: Callable[[dict[str, Any]], bool],
) -> None:
    from click.testing import CliRunner

    from devloop.cli import cli

    folder = request.getfixturevalue(store)
    args = ["workspace", *command, "--workspace-dir", str(folder), "--format", "json"]
    on_duckdb = CliRunner().invoke(cli, args)
    on_spark = CliRunner().invoke(cli, [*args, "--engine", "spark"])
    assert on_duckdb.exit_code == 0, (on_duckdb.output, on_duckdb.exception)
    assert on_spark.exit_code == 0, (on_spark.output, on_spark.exception)
    expected = json.loads(on_duckdb.output)
    assert facts(expected), expected
    _same(json.loads(on_spark.output), expected, "cli")


def _demand(rows: Any) -> dict[str, Any]:
    """The Spark engine's rows made into autotune's Demand, as plain data for :func:`_same`."""
    from devloop.tune.replay import demand_from_rows

    return _plain(demand_from_rows(rows.found, rows.series, rows.machines, rows.interval))


def _plain(demand: Any) -> dict[str, Any]:
    return {
        "runs": [{**vars(run), "cores": list(run.cores), "rss_bytes": list(run.rss_bytes)}
                 for run in demand.runs],
        "interval": demand.interval,
        "cores": demand.cores,
        "host_cores": dict(sorted(demand.host_cores.items())),
    }  # fmt: skip


def test_run_demand_equals_duckdb(spark: Any, shipped: Path, merged: Path, tagged: Path) -> None:
    from datetime import datetime

    from devloop.analytics.spark import run_demand_spark
    from devloop.tune.replay import demand_from_store

    expected = _plain(demand_from_store(merged))
    assert len(expected["runs"]) == 11 and expected["interval"] == 10.0
    assert expected["host_cores"] == {"alpha": 2, "bravo": 2, "charlie": 2}
    # no run's processes are tagged: each run is its kernel CPU spread over its length, in
    # 10-s intervals from its start, the last one part of an interval
    assert [len(run["cores"]) for run in expected["runs"]] == [1, 1, 1, 2, 2, 2, 1, 2, 2, 1, 2]
    assert expected["runs"][0]["last"] == pytest.approx(0.254917)  # a run of 2.549170 s
    rows = run_demand_spark(spark, shipped)
    assert [type(v) for v in rows.found[0]] == [str, str, str, float, datetime, datetime,
                                                 float, float, int, str]  # fmt: skip
    _same(_demand(rows), expected, "shipped")
    # the join: each run's process ticks, less the 14 it was held stopped using nothing; a
    # range cutting two hours, from the store's layout
    asked = TimeRange(parse_moment("2026-01-05T00:40:00Z"), parse_moment("2026-01-05T01:30:00Z"))
    expected = _plain(demand_from_store(tagged, asked.start, asked.end))
    # (the first two's processes outlive them: their ticks as they fell; the third on its
    # own clock)
    assert [len(run["cores"]) for run in expected["runs"]] == [237, 21, 2]
    _same(_demand(run_demand_spark(spark, tagged, asked)), expected, "tagged")


def test_the_cli_runs_autotune_on_spark(
    spark: Any, stores: dict[str, Path], tagged: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from devloop.cli import cli

    # alpha's workspace (its configuration) over the three hosts' tagged store
    args = ["workspace", "autotune", "--workspace-dir", str(stores["alpha"]), "--store",
            str(tagged), "--format", "json"]  # fmt: skip
    on_duckdb = CliRunner().invoke(cli, args)
    on_spark = CliRunner().invoke(cli, [*args, "--engine", "spark"])
    assert on_duckdb.exit_code == 0, (on_duckdb.output, on_duckdb.exception)
    assert on_spark.exit_code == 0, (on_spark.output, on_spark.exception)
    expected = json.loads(on_duckdb.output)
    found = json.loads(on_spark.output)
    assert [p["objective"]["runs"] for p in expected["projects"].values()] == [7, 4]
    assert found.pop("generated_at") and expected.pop("generated_at")
    _same(found, expected, "autotune")
    # a fleet: each host its own class, its demand read on Spark from its own rows
    for engine in ("duckdb", "spark"):
        out = tmp_path / engine / "s.json"
        out.parent.mkdir()
        grouped = ["--group-by", "host", "--engine", engine, "-o", str(out)]
        done = CliRunner().invoke(cli, [*args, *grouped])
        assert done.exit_code == 0, (done.output, done.exception)
    files = sorted(p.name for p in (tmp_path / "duckdb").iterdir())
    assert files == ["s.alpha.json", "s.bravo.json", "s.charlie.json"]
    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == files
    runs = []
    for name in files:
        expected = json.loads((tmp_path / "duckdb" / name).read_text())
        found = json.loads((tmp_path / "spark" / name).read_text())
        assert found.pop("generated_at") and expected.pop("generated_at")
        assert expected["group"]["hosts"] == [name.split(".")[1]]
        runs.append(sum(p["objective"]["runs"] for p in expected["projects"].values()))
        _same(found, expected, name)
    assert sum(runs) == 11, runs  # every host's runs, each in its own class
    refused = CliRunner().invoke(cli, [*args, "--engine", "spark", "--duration", "1h"])
    assert refused.exit_code == 2
    assert "Error: --engine spark reads recorded runs: not with --duration" in refused.output
