"""An S3-compatible server for the fleet tests (moto's server mode on 127.0.0.1), and three
simulated hosts' compacted stores to ship to it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from devloop.simulate import simulate
from devloop.store import compact
from devloop.store.files import read_rows, write_table
from devloop.store.layout import data_files, iter_partitions

HOSTS = ("alpha", "bravo", "charlie")
HOURS = 2
BUCKET = "fleet"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_env() -> dict[str, str]:
    """This process's environment with the server's keys and no other AWS endpoint."""
    env = {**os.environ, **CREDENTIALS}
    for name in _UNSET:
        env.pop(name, None)
    return env


def s3_fs(url: str, *, create: bool = False) -> Any:
    """A pyarrow filesystem on the server at ``url``."""
    netloc = url.removeprefix("http://")
    return pafs.S3FileSystem(endpoint_override=netloc, scheme="http", region="us-east-1",
                             allow_bucket_creation=create)  # fmt: skip


@contextmanager
def moto(log: Path, **env: str) -> Iterator[str]:
    """moto's S3 in server mode (its own process, so it has a core of its own) on a free port
    of 127.0.0.1; its URL."""
    port = free_port()
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            env={**aws_env(), **env},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, "moto's server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's server did not start in 30 s"
                time.sleep(0.05)  # a poll interval, not a wait for something
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait(timeout=30)


@contextmanager
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the bucket ``fleet``, and our environment holding its keys: the body of
    a module-scoped ``endpoint`` fixture."""
    with moto(tmp_path_factory.mktemp("moto") / "server.log") as url:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in CREDENTIALS.items():
                patch.setenv(name, value)
            for name in _UNSET:
                patch.delenv(name, raising=False)
            s3_fs(url, create=True).create_dir(BUCKET)
            yield url


def simulated_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three hosts' compacted stores (``HOURS`` simulated hours each, other seeds), by host:
    their workspace folders."""
    found = {}
    for seed, host in enumerate(HOSTS, start=1):
        out = tmp_path_factory.mktemp(host) / ".devloop-workspace"
        simulate(out, hours=HOURS, interval=10, projects=2, agents_per_project=2, seed=seed)
        rename_host(out / "metrics", host)
        found[host] = out
    return found


TABLES = ("samples", "processes", "system", "events", "limits", "runs")


def side_by_side(stores: dict[str, Path], workspace: Path) -> Path:
    """One workspace folder holding the hosts' files side by side (no rollups), as a fleet's
    mirror lays them out; returns it."""
    from devloop.store.fleet import HOST_SEPARATOR

    for host, store in stores.items():
        for table in TABLES:
            for _, directory in iter_partitions(store / "metrics", table):
                target = workspace / directory.relative_to(store)
                target.mkdir(parents=True, exist_ok=True)
                for path in data_files(directory):
                    shutil.copy2(path, target / f"{host}{HOST_SEPARATOR}{path.name}")
    return workspace


def rename_host(root: Path, host: str) -> None:
    """Rewrite every row's ``host`` (simulate names one host), then compact: what that host's
    collector would have left."""
    for table in ("samples", "system", "processes", "events", "limits", "runs"):
        for _, directory in iter_partitions(root, table):
            for path in data_files(directory):
                rows = read_rows(path, table)
                field = rows.schema.field("host")
                column = pa.array([host] * rows.num_rows, field.type)
                path.unlink()
                write_table(root, table, rows.set_column(rows.schema.get_field_index("host"),
                                                         field, column))  # fmt: skip
    shutil.rmtree(root / "_rollups")
    (root / "_facts.json").unlink(missing_ok=True)
    compact(root)
