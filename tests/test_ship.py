"""``devloop workspace ship``: closed hours to a fleet dataset, exactly once (docs/fleet.md).

A real S3-compatible server (moto's server mode, HTTP on 127.0.0.1) and real stores: three
simulated hosts, compacted, shipped, read back file by file and with DuckDB, a ship SIGKILLed
at seeded random points, retention, a local folder as the target, and the errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from devloop.cli import cli
from devloop.store import compact
from devloop.store.files import write_table
from devloop.store.layout import Partition
from devloop.store.ship import (
    MANIFESTS_DIR,
    local_hours,
    parse_target,
    published,
    ship,
)
from tests.helpers.s3 import (
    BUCKET,
    HOSTS,
    HOURS,
    aws_env,
    free_port,
    moto,
    s3_endpoint,
    s3_fs,
    simulated_stores,
)

START = datetime(2026, 1, 5, tzinfo=UTC)  # simulate's first day


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server with the bucket ``fleet``; our environment has its keys."""
    with s3_endpoint(tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three hosts' compacted stores (2 simulated hours each, other seeds), by host."""
    return simulated_stores(tmp_path_factory)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local(store: Path, rel: str) -> Path:
    """The local file a remote name was shipped from."""
    parts = rel.split("/")
    host_at = next(i for i, part in enumerate(parts) if part.startswith("host="))
    return store / "metrics" / "/".join(parts[:host_at] + parts[host_at + 1 :])


def _remote_files(fs: Any, base: str) -> dict[str, bytes]:
    """Every file below ``base`` (directory markers aside), with its content."""
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == FileType.File:
            with fs.open_input_stream(info.path) as source:
                found[info.path[len(base) + 1 :]] = source.read()
    return found


def _count(fs: Any, base: str) -> int:
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
    return sum(1 for info in infos if info.type == FileType.File)


def _check_published(files: dict[str, bytes], stores: dict[str, Path]) -> set[str]:
    """Assert that every published hour is whole: each file its manifest lists is there with
    its size and SHA-256, equal to the local file's. The files listed (manifests included)."""
    listed = set()
    for rel, data in files.items():
        if not rel.startswith(f"{MANIFESTS_DIR}/"):
            continue
        manifest = json.loads(data)
        listed.add(rel)
        for entry in manifest["files"]:
            assert entry["path"] in files, f"{rel} lists {entry['path']}, not there"
            content = files[entry["path"]]
            assert len(content) == entry["size"]
            assert _sha(content) == entry["sha256"]
            assert _sha(_local(stores[manifest["host"]], entry["path"]).read_bytes()) == _sha(
                content
            )
            listed.add(entry["path"])
    return listed


def _ship_cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devloop", "workspace", "ship", "--workspace-dir", str(store)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=aws_env(), timeout=60)


def test_three_hosts_ship_and_read_back(
    endpoint: str, stores: dict[str, Path], tmp_path: Path
) -> None:
    uri = f"s3://{BUCKET}/three"
    runner = CliRunner()
    for host, store in stores.items():
        result = runner.invoke(cli, ["workspace", "ship", "--workspace-dir", str(store),
                                     "--to", uri, "--endpoint-url", endpoint])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"Shipped {HOURS} hours of host={host} (" in result.output
    fs = s3_fs(endpoint)
    files = _remote_files(fs, f"{BUCKET}/three")
    listed = _check_published(files, stores)
    assert set(files) == listed  # nothing beside the published hours' files
    hours = published(parse_target(uri, endpoint))
    assert [(h.host, h.partition.hour) for h in hours] == [
        (host, hour) for host in HOSTS for hour in range(HOURS)
    ]
    # every local file of every shipped hour is there once, under its own name
    for host, store in stores.items():
        ready, waiting = local_hours(store / "metrics", host)
        assert waiting == []
        local = {file.path for hour in ready for file in hour.files}
        assert local == {f.path for h in hours if h.host == host for f in h.files}
        assert len(local) == len({rel for rel in files if f"/host={host}/" in rel}) - HOURS

    # downloaded through pyarrow.fs, the fleet reads as plain hive-partitioned Parquet
    for h in hours:
        for file in h.files:
            target = tmp_path / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[file.path])  # as _remote_files read it through pyarrow.fs
            assert _sha(target.read_bytes()) == file.sha256
    remote = duckdb.sql(
        f"SELECT host, count(*) FROM read_parquet('{tmp_path}/samples/**/*.parquet', "
        "hive_partitioning = true) GROUP BY host ORDER BY host"
    ).fetchall()
    local_counts = [
        (host, duckdb.sql(f"SELECT count(*) FROM '{store}/metrics/samples/**/*.parquet'")
         .fetchall()[0][0])
        for host, store in stores.items()
    ]  # fmt: skip
    assert remote == local_counts
    assert all(count > 0 for _, count in remote)

    # a second ship finds every hour published as it is: nothing sent
    again = ship(stores["alpha"] / "metrics", parse_target(uri, endpoint))
    assert (again.shipped, again.unchanged) == ((), HOURS)


def test_killed_ship_resumes_exactly_once(endpoint: str, stores: dict[str, Path]) -> None:
    store, base = stores["bravo"], f"{BUCKET}/killed"
    fs = s3_fs(endpoint)
    ready, _ = local_hours(store / "metrics", "bravo")
    total = sum(len(hour.files) + 1 for hour in ready)  # files and a manifest per hour
    points = sorted(random.Random(16).sample(range(1, total), 5))
    args = ("--to", f"s3://{base}", "--endpoint-url", endpoint, "--jobs", "1", "--quiet")
    argv = [sys.executable, "-m", "devloop", "workspace", "ship", "--workspace-dir", str(store)]
    killed = 0
    for point in points:
        process = subprocess.Popen([*argv, *args], env=aws_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while process.poll() is None and _count(fs, base) < point:
            assert time.monotonic() < deadline, "the ship made no progress"
            time.sleep(0.002)  # a poll interval: leave the cores to the ship and the server
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=30)
        # after each kill: every published hour whole, the rest invisible
        _check_published(_remote_files(fs, base), stores)
    assert killed >= 4  # the last point may come after the ship's end on a fast machine
    finished = _ship_cli(store, *args)
    assert finished.returncode == 0, finished.stderr
    files = _remote_files(fs, base)
    assert set(files) == _check_published(files, stores)  # no half hour, no duplicate
    hours = published(parse_target(f"s3://{base}", endpoint))
    assert [(h.partition, h.digest) for h in hours] == [(h.partition, h.digest) for h in ready]
    assert len(files) == total


def _late_event(store: Path, host: str, moment: datetime) -> None:
    """A row arriving in a closed hour after it was compacted (a late spool segment)."""
    write_table(store / "metrics", "events", pa.table({
        "ts": pa.array([moment], pa.timestamp("us", tz="UTC")), "host": [host],
        "action": ["warn"], "scope": ["workspace"], "message": ["late"],
    }))  # fmt: skip


def test_changed_hour_is_replaced(endpoint: str, stores: dict[str, Path], tmp_path: Path) -> None:
    """A late row in a shipped hour: the next ship publishes the new version and deletes the
    old one's files."""
    store = tmp_path / "store"
    shutil.copytree(stores["charlie"], store)
    target = parse_target(f"s3://{BUCKET}/changed", endpoint)
    first = ship(store / "metrics", target)
    assert len(first.shipped) == HOURS
    _late_event(store, "charlie", START + timedelta(hours=1, minutes=30))
    waiting = ship(store / "metrics", target)
    assert [w.partition.hour for w in waiting.waiting] == [1]  # not compacted again yet
    compact(store / "metrics")
    second = ship(store / "metrics", target)
    assert [(h.partition.hour, h.replaced, h.sent) for h in second.shipped] == [(1, True, 1)]
    assert second.unchanged == HOURS - 1
    files = _remote_files(s3_fs(endpoint), f"{BUCKET}/changed")
    assert set(files) == _check_published(files, {"charlie": store})
    events = [rel for rel in files if rel.startswith("events/") and "/hour=1/" in rel]
    assert len(events) == 1 and _local(store, events[0]).exists()


def test_file_target(stores: dict[str, Path], tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    runner = CliRunner()
    args = ["workspace", "ship", "--workspace-dir", str(stores["alpha"]), "--to", f"file://{fleet}"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    files = _remote_files(pafs.LocalFileSystem(), str(fleet))
    assert set(files) == _check_published(files, stores)
    assert not [rel for rel in files if rel.rpartition("/")[2].startswith(".")]
    assert [h.partition.hour for h in published(f"file://{fleet}")] == list(range(HOURS))
    again = runner.invoke(cli, args)
    assert f"Shipped 0 hours of host=alpha (0 files, 0B) to file://{fleet} in " in again.output
    assert again.output.endswith(f"(0 files sent); {HOURS} already there\n")


def test_dry_run_writes_nothing(endpoint: str, stores: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "store"
    shutil.copytree(stores["alpha"], store)
    (store / "metrics" / ".ship.lock").unlink(missing_ok=True)
    before = sorted(path for path in store.rglob("*"))
    for uri, extra in ((f"s3://{BUCKET}/dry", ["--endpoint-url", endpoint]),
                       (f"file://{tmp_path}/dry", [])):  # fmt: skip
        args = ["--to", uri, "--dry-run", "--retain", "400d", *extra]
        result = runner.invoke(cli, ["workspace", "ship", "--workspace-dir", str(store), *args])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert [line.split(":")[0] for line in lines[:HOURS]] == [
            f"would ship 2026-01-05 hour={hour}" for hour in range(HOURS)
        ]
        assert lines[HOURS].startswith(f"Would ship {HOURS} hours of host=alpha (")
    assert _count(s3_fs(endpoint), f"{BUCKET}/dry") == 0
    assert not (tmp_path / "dry").exists()
    assert sorted(path for path in store.rglob("*")) == before


def test_retention_deletes_only_old_hours(endpoint: str, stores: dict[str, Path]) -> None:
    base = f"{BUCKET}/retained"
    target = parse_target(f"s3://{base}", endpoint)
    ship(stores["bravo"] / "metrics", target)
    fs = s3_fs(endpoint)
    orphan = f"{base}/samples/host=zulu/date=2026-01-05/hour=0/c-1.parquet"  # never published
    with fs.open_output_stream(orphan) as sink:
        sink.write(b"orphan")
    now = datetime.now(UTC)
    keep_from = START + timedelta(hours=HOURS - 1)  # the hours before the last have ended
    seconds = int((now - keep_from).total_seconds())
    result = CliRunner().invoke(cli, [
        "workspace", "ship", "--workspace-dir", str(stores["alpha"]), "--to", f"s3://{base}",
        "--endpoint-url", endpoint, "--retain", f"{seconds}s",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Deleted {HOURS} fleet hours of 2 hosts (retention)" in result.output
    files = _remote_files(fs, base)
    assert set(files) == _check_published(files, stores)
    last = HOURS - 1
    assert {rel.split("/hour=")[1].split("/")[0] for rel in files} == {str(last)}
    assert [(h.host, h.partition.hour) for h in published(target)] == [
        ("alpha", last),
        ("bravo", last),
    ]
    assert result.output.startswith("Shipped 1 hours of host=alpha (")  # not the expired ones


def test_errors_are_one_line(endpoint: str, stores: dict[str, Path]) -> None:
    store = stores["alpha"]
    runner = CliRunner()

    def error(*args: str) -> str:
        result = runner.invoke(cli, ["workspace", "ship", "--workspace-dir", str(store), *args])
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1
        return result.output

    assert error("--to", "http://bucket/x") == (
        "Error: bad URI 'http://bucket/x': expected s3://BUCKET/PREFIX or file:///ABSOLUTE/FOLDER\n"
    )
    assert error("--to", "s3:///prefix") == (
        "Error: bad URI 's3:///prefix': no bucket name (expected s3://BUCKET/PREFIX or "
        "file:///ABSOLUTE/FOLDER)\n"
    )
    assert error("--to", "file:///tmp/x", "--endpoint-url", endpoint) == (
        "Error: --endpoint-url is for s3:// targets only\n"
    )
    assert error("--to", "s3://nope/x", "--endpoint-url", endpoint) == (
        "Error: s3://nope/x: bucket 'nope' does not exist\n"
    )
    # a real process: one line on stderr, no traceback
    port = free_port()  # nothing listens there
    unreachable = _ship_cli(store, "--to", "s3://fleet/x", "--endpoint-url",
                            f"http://127.0.0.1:{port}")  # fmt: skip
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(
        f"Error: s3://fleet/x: cannot look up the target: cannot reach http://127.0.0.1:{port} ("
    )
    assert unreachable.stderr.count("\n") == 1, unreachable.stderr
    collect = runner.invoke(cli, ["workspace", "collect", "--workspace-dir", str(store),
                                  "--ship-to", "ftp://x/y"])  # fmt: skip
    assert collect.exit_code == 1
    assert collect.output.startswith("Error: bad URI 'ftp://x/y': ")


def test_refused_credentials_are_one_line(stores: dict[str, Path], tmp_path: Path) -> None:
    """A server that checks signatures (moto with IAM on): unknown keys are refused."""
    with moto(tmp_path / "server.log", INITIAL_NO_AUTH_ACTION_COUNT="0") as url:
        refused = _ship_cli(stores["alpha"], "--to", "s3://fleet/x", "--endpoint-url", url)
    assert refused.returncode == 1
    assert refused.stderr == (
        "Error: s3://fleet/x: cannot look up the target: access denied: check the credentials "
        "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials)\n"
    )


def test_collector_child_ships_after_compacting(stores: dict[str, Path], tmp_path: Path) -> None:
    """``collect --ship-to``: the hourly compaction child compacts, then ships."""
    store = tmp_path / "store"
    shutil.copytree(stores["charlie"], store)
    _late_event(store, "charlie", START + timedelta(minutes=30))  # hour 0 is not compacted any more
    fleet = tmp_path / "fleet"
    child = subprocess.run(
        [sys.executable, "-m", "devloop.store.convert", "compact", str(store / "metrics"),
         str(os.getpid()), f"ship-to=file://{fleet}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    messages = [json.loads(line) for line in child.stdout.splitlines()]
    assert messages[0]["compacted"]["partitions"] == 1
    assert messages[1:] == [{"shipped": HOURS, "bytes": messages[-1]["bytes"]}]
    hours = published(f"file://{fleet}")
    assert [(h.host, h.partition) for h in hours] == [
        ("charlie", Partition("2026-01-05", hour)) for hour in range(HOURS)
    ]
    files = _remote_files(pafs.LocalFileSystem(), str(fleet))
    assert set(files) == _check_published(files, {"charlie": store})


def test_recorder_ships_in_its_hourly_child(stores: dict[str, Path], tmp_path: Path) -> None:
    """The collector hands ``ship-to`` to the hourly compaction child and ships nothing
    itself: the closed hours are in the fleet once the child is done."""
    from devloop.config import load_workspace
    from devloop.runner.record import Recorder

    workspace = tmp_path / ".devloop-workspace"
    shutil.copytree(stores["alpha"], workspace)
    fleet = tmp_path / "fleet"
    with Recorder(load_workspace(workspace), interval=1.0, ship_to=f"file://{fleet}") as rec:
        rec.tick()
        rec.tick()
        rec._compacted_hour -= 1  # as if the hour had just turned
        rec._maybe_compact()
        assert rec._compactor is not None
        assert rec._compactor.process.args[-1] == f"ship-to=file://{fleet}"
    hours = published(f"file://{fleet}")
    assert [(h.host, h.partition.hour) for h in hours] == [("alpha", h) for h in range(HOURS)]
