"""Reading a fleet: ``--store URI`` and ``--host GLOB`` on every report (docs/fleet.md).

Three simulated hosts shipped to a real S3-compatible server (moto's server mode on
127.0.0.1): the reports over the fleet equal the same reports over one local store holding the
three hosts' files, ``--host`` equals a host's own store, a second read fetches nothing, a
half-published hour is invisible, ``file://`` works, and the errors are one line.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pyarrow.fs import FileSelector

from devloop.analytics import Store
from devloop.cli import cli
from devloop.store import StoreWriter
from devloop.store.db import DAY_PREFIX, KINDS, ROLLUPS_DIR, hours, resolve
from devloop.store.files import read_rows
from devloop.store.fleet import CACHE_ENV, HOST_SEPARATOR, cache_dir, sync
from devloop.store.layout import data_files, iter_partitions
from devloop.store.schema import TABLES as TABLES_SCHEMA
from devloop.store.ship import MANIFESTS_DIR, parse_target, published, ship
from tests.helpers.s3 import (
    BUCKET,
    HOSTS,
    HOURS,
    free_port,
    s3_endpoint,
    s3_fs,
    side_by_side,
    simulated_stores,
)

TABLES = ("samples", "processes", "system", "events", "limits", "runs")
RANGE = ("--start", "2026-01-05T00:00:00Z", "--end", "2026-01-05T02:00:00Z")
#: Each report as its command line, in JSON (or CSV).
REPORTS = {
    "peak-usage": ["workspace", "analytics", "peak-usage", "--format", "json"],
    "bottlenecks": ["workspace", "analytics", "bottlenecks", "--format", "json", "--all"],
    "efficiency": ["workspace", "analytics", "efficiency", "--format", "json"],
    "runs": ["workspace", "analytics", "runs", "--format", "json"],
    "runs-summary": ["workspace", "analytics", "runs", "--format", "json", "--summary"],
    "export": ["workspace", "metrics", "--format", "csv", "--interval", "5m"],
    "health": ["workspace", "health", "--format", "json"],
    "audit": ["audit", "query", "--format", "json", "--metric", "cpu"],
    "sql": [
        "workspace", "sql", "--format", "json",
        "SELECT host, count(*) AS n, max(rss_bytes) AS rss FROM samples GROUP BY ALL ORDER BY host",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_endpoint(tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return simulated_stores(tmp_path_factory)


@pytest.fixture(scope="module")
def fleet(endpoint: str, stores: dict[str, Path]) -> str:
    """The three hosts shipped to ``s3://fleet/read``; its URI."""
    uri = f"s3://{BUCKET}/read"
    for store in stores.values():
        assert len(ship(store / "metrics", parse_target(uri, endpoint)).shipped) == HOURS
    return uri


@pytest.fixture(scope="module")
def merged(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local workspace holding the three hosts' files side by side (no rollups)."""
    return side_by_side(stores, tmp_path_factory.mktemp("merged") / ".devloop-workspace")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's mirrors in a folder of its own."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _run(*args: str) -> Result:
    ranged = args[1] not in ("sql", "autotune")
    return CliRunner().invoke(cli, [*args, *RANGE] if ranged else list(args))


def _unclocked(text: str) -> str:
    """``text`` without health's clock readings (how long ago the newest tick was)."""
    text = re.sub(r'"age_seconds": [0-9.]+', '"age_seconds": N', text)
    return re.sub(r"\b\d+s ago\b", "Ns ago", text)


def _ok(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _error(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_reports_over_s3_equal_one_local_store(fleet: str, endpoint: str, merged: Path) -> None:
    store = ["--store", fleet, "--endpoint-url", endpoint]
    for name, args in REPORTS.items():
        remote = _ok(*args, *store)
        local = _ok(*args, "--workspace-dir", str(merged))
        assert _unclocked(remote) == _unclocked(local), name
    peaks = json.loads(_ok(*REPORTS["peak-usage"], *store))
    assert peaks["range"]["hosts"] == list(HOSTS)
    runs = json.loads(_ok(*REPORTS["runs"], *store))["runs"]
    assert {run["host"] for run in runs} == set(HOSTS)
    rows = json.loads(_ok(*REPORTS["sql"], *store))
    assert [row["host"] for row in rows] == list(HOSTS) and all(row["n"] > 0 for row in rows)
    # the same folder named by --store reads as --workspace-dir does
    assert _ok(*REPORTS["peak-usage"], "--store", str(merged)) == _ok(
        *REPORTS["peak-usage"], "--workspace-dir", str(merged)
    )


def test_host_filter_equals_the_host_own_store(
    fleet: str, endpoint: str, stores: dict[str, Path], merged: Path
) -> None:
    own = str(stores["bravo"])
    for name in ("peak-usage", "bottlenecks", "efficiency", "runs", "export"):
        args = REPORTS[name]
        expected = _ok(*args, "--workspace-dir", own)
        assert _ok(*args, "--store", fleet, "--endpoint-url", endpoint, "--host", "bravo") == (
            expected
        ), name
        assert _ok(*args, "--workspace-dir", str(merged), "--host", "b*") == expected, name
        assert _ok(*args, "--workspace-dir", own, "--host", "bravo") == expected, name
    assert "hosts" not in json.loads(_ok(*REPORTS["peak-usage"], "--workspace-dir", own))["range"]
    two = json.loads(_ok(*REPORTS["peak-usage"], "--workspace-dir", str(merged),
                         "--host", "alpha", "--host", "charlie"))  # fmt: skip
    assert two["range"]["hosts"] == ["alpha", "charlie"]
    assert _error(*REPORTS["runs"], "--workspace-dir", own, "--host", "zulu*") == (
        f"Error: no host matches 'zulu*' in the store {own}/metrics (hosts: bravo)"
    )


def test_host_filter_reads_the_spool_of_its_hosts(stores: dict[str, Path], tmp_path: Path) -> None:
    """A running collector's rows still in the spool are filtered as the files are."""
    workspace = tmp_path / "ws"
    shutil.copytree(stores["bravo"], workspace)
    root = workspace / "metrics"
    writer = StoreWriter(root, segment_seconds=3600)
    try:
        for table in ("system", "samples"):
            (_, directory), *_ = iter_partitions(root, table)
            rows = read_rows(data_files(directory)[0], table).slice(0, 4).to_pylist()
            for host in ("bravo", "zed"):
                spooled = [{**row, "ts": row["ts"] + timedelta(hours=2), "host": host}
                           for row in rows]  # fmt: skip
                writer.append(table, [tuple(_us(row[name]) for name in TABLES_SCHEMA[table].names)
                                      for row in spooled])  # fmt: skip
        writer.flush()
        count = "SELECT host, count(*) FROM samples GROUP BY ALL ORDER BY host"
        with Store(workspace) as every:
            ((_, files), _) = every.rows(count)
        with Store(workspace, hosts=["bravo"]) as store:
            assert store.rows(count) == [("bravo", files)]
            assert store.hosts == ("bravo",)
        with Store(workspace, hosts=["z*"]) as store:
            assert store.rows(count) == [("zed", 4)]
            assert store.host_names() == ("zed",)
    finally:
        writer.close()


def _us(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return value


def test_autotune_over_a_host_of_the_fleet(
    fleet: str, endpoint: str, stores: dict[str, Path]
) -> None:
    """The suggestions from the fleet's hours of one host are that host's own (the workspace
    gives the configuration, the fleet the history)."""
    args = ["workspace", "autotune", "--workspace-dir", str(stores["bravo"]), "--format", "json"]
    own = json.loads(_ok(*args))
    remote = json.loads(_ok(*args, "--store", fleet, "--endpoint-url", endpoint, "--host", "bravo"))
    assert own.pop("generated_at") != remote.pop("generated_at")
    assert remote == own


def test_second_read_fetches_nothing(fleet: str, endpoint: str, _cache: Path) -> None:
    target = parse_target(fleet, endpoint)
    first = sync(target, ["a*", "charlie"])
    assert (first.hosts, first.fetched, first.removed) == (("alpha", "charlie"), 2 * HOURS, 0)
    tables = {h.host: 0 for h in published(target)}
    shipped = dict(tables)
    for hour in published(target):
        tables[hour.host] += sum(1 for f in hour.files if f.table in TABLES)
        shipped[hour.host] += len(hour.files)  # the tables' files and the rollups
    assert first.files == shipped["alpha"] + shipped["charlie"]
    assert first.folder == cache_dir(target) and first.folder.parent == _cache
    second = sync(target)
    assert (second.fetched, second.unchanged) == (HOURS, 2 * HOURS)  # bravo's hours only
    third = sync(target)
    assert (third.fetched, third.files, third.bytes, third.removed) == (0, 0, 0, 0)
    assert third.unchanged == len(HOSTS) * HOURS
    result = _run(*REPORTS["peak-usage"], "--store", fleet, "--endpoint-url", endpoint)
    assert result.exit_code == 0 and "Fleet " not in result.stderr  # nothing fetched
    metrics = first.folder / "metrics"
    files = sorted(p.name for p in metrics.rglob("*") if p.is_file())
    assert not [name for name in files if name.startswith(".")]
    rolled = sorted(p.name for p in (metrics / ROLLUPS_DIR).rglob("*") if p.is_file())
    assert len(files) == sum(tables.values()) + len(rolled) + 1  # and _facts.json
    # every hour of the three hosts is read from the rollups the sync made of theirs
    sources = resolve(metrics, hours(metrics))
    assert len(sources.partitions) == HOURS and not sources.raw
    # an entry per hour and kind, and per kind the day's file (its two hours are all it has)
    assert len(rolled) == (HOURS + 1) * len(KINDS)
    assert sum(name.startswith(DAY_PREFIX) for name in rolled) == len(KINDS)


def test_half_published_and_removed_hours(
    endpoint: str, stores: dict[str, Path], merged: Path
) -> None:
    uri = f"s3://{BUCKET}/half"
    target = parse_target(uri, endpoint)
    for store in stores.values():
        ship(store / "metrics", target)
    fs = s3_fs(endpoint)
    # another machine's hour being shipped: its files, no manifest yet
    for path in data_files(stores["alpha"] / "metrics" / "samples" / "date=2026-01-05" / "hour=0"):
        with fs.open_output_stream(
            f"{BUCKET}/half/samples/host=delta/date=2026-01-05/hour=0/{path.name}"
        ) as sink:
            sink.write(path.read_bytes())
    store = ["--store", uri, "--endpoint-url", endpoint]
    assert _ok(*REPORTS["peak-usage"], *store) == _ok(
        *REPORTS["peak-usage"], "--workspace-dir", str(merged)
    )
    assert sync(target).hosts == HOSTS
    assert _error(*REPORTS["runs"], *store, "--host", "delta") == (
        f"Error: no host matches 'delta' in {uri} (hosts: {', '.join(HOSTS)})"
    )
    # an hour unpublished on the fleet (a new version on its way) leaves the mirror
    below = f"{BUCKET}/half/{MANIFESTS_DIR}/host=charlie/date=2026-01-05/hour=1"
    manifests = fs.get_file_info(FileSelector(below, recursive=True))
    (manifest,) = [info.path for info in manifests]
    fs.delete_file(manifest)
    again = sync(target)
    assert (again.fetched, again.removed, again.unchanged) == (0, 1, len(HOSTS) * HOURS - 1)
    system = again.folder / "metrics" / "system" / "date=2026-01-05" / "hour=1"
    assert sorted(p.name.partition(HOST_SEPARATOR)[0] for p in system.iterdir()) == [
        "alpha",
        "bravo",
    ]


def test_file_uri_and_folder(stores: dict[str, Path], merged: Path, tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    for store in stores.values():
        ship(store / "metrics", f"file://{folder}")
    expected = _ok(*REPORTS["efficiency"], "--workspace-dir", str(merged))
    assert _ok(*REPORTS["efficiency"], "--store", f"file://{folder}") == expected
    assert _ok(*REPORTS["efficiency"], "--store", str(folder)) == expected


def test_killed_sync_leaves_whole_hours(stores: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    ship(stores["alpha"] / "metrics", f"file://{folder}")
    mirror = sync(f"file://{folder}")
    # what a sync killed mid-hour leaves: an hour's manifest gone, a file of it, a temp
    (manifest,) = (mirror.folder / MANIFESTS_DIR).glob("host=alpha/date=*/hour=1/*.json")
    manifest.unlink()
    hour = mirror.folder / "metrics" / "samples" / "date=2026-01-05" / "hour=1"
    (hour / ".alpha--c-1.parquet.1.tmp").write_bytes(b"half")
    (mirror.folder / ".syncing").touch()
    again = sync(f"file://{folder}")
    (_, second) = published(f"file://{folder}")
    sent = len(second.files)
    assert (again.fetched, again.files, again.unchanged) == (1, sent, HOURS - 1)
    assert [p.name for p in hour.iterdir()] == [
        f"alpha{HOST_SEPARATOR}{p.name}" for p in data_files(_hour_dir(stores["alpha"]))
    ]
    assert not (mirror.folder / ".syncing").exists()
    metrics = mirror.folder / "metrics"  # every hour's rollups made again
    assert len(resolve(metrics, hours(metrics)).partitions) == HOURS


def test_an_hour_without_every_hosts_rollups_is_read_from_rows(
    stores: dict[str, Path], merged: Path, tmp_path: Path
) -> None:
    from devloop.store.fleet import HOST_ROLLUPS_DIR, _combine_rollups
    from devloop.store.layout import Partition

    folder = tmp_path / "fleet"
    for store in stores.values():
        ship(store / "metrics", f"file://{folder}")
    mirror = sync(f"file://{folder}")
    metrics = mirror.folder / "metrics"
    expected = {
        name: _ok(*REPORTS[name], "--workspace-dir", str(merged))
        for name in ("peak-usage", "efficiency", "export")
    }
    # bravo's hour 1 without one kind of rollup (as from a devloop with other kinds): the
    # mirror's hour 1 is read from its rows, hour 0 from the rollups, the reports unchanged
    hour = Partition("2026-01-05", 1)
    (lost,) = (mirror.folder / HOST_ROLLUPS_DIR / "agent_cpu" / hour.relative_dir).glob("bravo--*")
    lost.unlink()
    _combine_rollups(mirror.folder, {hour})
    sources = resolve(metrics, hours(metrics))
    assert sources.partitions == (Partition("2026-01-05", 0),)
    assert sorted(p.name.partition(HOST_SEPARATOR)[0] for p in sources.raw) == list(HOSTS)
    assert not (metrics / ROLLUPS_DIR / "agent" / hour.relative_dir).exists()
    for name, text in expected.items():
        assert _ok(*REPORTS[name], "--workspace-dir", str(mirror.folder)) == text, name


def _hour_dir(store: Path) -> Path:
    return store / "metrics" / "samples" / "date=2026-01-05" / "hour=1"


def test_errors_are_one_line(endpoint: str, tmp_path: Path) -> None:
    peak = REPORTS["peak-usage"]
    assert _error(*peak, "--store", "s3://").startswith("Error: bad URI 's3://': no bucket name")
    assert _error(*peak, "--store", "http://x/y").startswith("Error: bad URI 'http://x/y'")
    assert _error(*peak, "--store", str(tmp_path)) == (
        f"Error: --store: {tmp_path} is neither a fleet dataset (no _manifests/) nor a store "
        "(no metrics/)"
    )
    missing = _error(*peak, "--store", "s3://nobucket/x", "--endpoint-url", endpoint)
    assert missing == "Error: s3://nobucket/x: bucket 'nobucket' does not exist"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = _error(*peak, "--store", f"s3://{BUCKET}/read", "--endpoint-url", dead)
    assert unreachable.startswith(f"Error: s3://{BUCKET}/read: cannot look up the target: "
                                  f"cannot reach {dead}")  # fmt: skip
    usage = _run(*peak, "--endpoint-url", endpoint)
    assert usage.exit_code == 2
    assert usage.output.endswith("Error: --endpoint-url goes with --store s3://…\n")
    usage = _run(*peak, "--store", str(tmp_path), "--workspace-dir", str(tmp_path))
    assert usage.exit_code == 2
    assert usage.output.endswith("Error: give --workspace-dir or --store, not both\n")
