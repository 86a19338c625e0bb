"""Option bundles shared by commands (as sqlite-utils does with ``output_options``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def workspace_dir_option(func: F) -> F:
    """``--workspace-dir D``: defaults to the nearest .devloop-workspace above the cwd."""
    return click.option(
        "--workspace-dir",
        "workspace_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="The .devloop-workspace folder (default: the nearest one above the current folder).",
    )(func)


def resolve_workspace_dir(workspace_dir: Path | None) -> Path:
    """The folder given, or the nearest .devloop-workspace above the current folder."""
    from devloop.config.folder import WORKSPACE_DIR_NAME, WORKSPACE_FILE, find_workspace_dir

    if workspace_dir is None:
        return find_workspace_dir()
    if not workspace_dir.is_dir():
        raise click.BadParameter(f"no such folder: {workspace_dir}", param_hint="--workspace-dir")
    # Accept the project root as well as the .devloop-workspace folder inside it.
    if (
        not (workspace_dir / WORKSPACE_FILE).is_file()
        and (workspace_dir / WORKSPACE_DIR_NAME / WORKSPACE_FILE).is_file()
    ):
        return workspace_dir / WORKSPACE_DIR_NAME
    return workspace_dir


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    """``--format``: how to render the result."""

    def decorate(func: F) -> F:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help="Output format.",
        )(func)

    return decorate


def output_option(func: F) -> F:
    """``--output FILE``: where to write (``-`` = standard output)."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
        default=Path("-"),
        show_default=True,
        help="Write to FILE instead of standard output (- = standard output).",
    )(func)


def emit(text: str, output: Path) -> None:
    """Write ``text`` to ``output`` (atomically for files) or to standard output."""
    if str(output) == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    from devloop._atomic import atomic_write_text

    atomic_write_text(output, text if text.endswith("\n") else text + "\n")
    click.echo(f"Wrote {output}", err=True)


def echo_warnings(warnings: tuple[str, ...] | list[str]) -> None:
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


def duration_value(text: str | None, option: str) -> float | None:
    """Seconds in a duration option (30s, 5m, 24h); must be above 0."""
    from devloop.errors import UsageError
    from devloop.units import parse_duration

    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
    if seconds <= 0:
        raise click.BadParameter(f"must be above 0, got {text!r}", param_hint=option)
    return seconds


def size_value(text: str | None, option: str, *, positive: bool = False) -> int | None:
    """Bytes in a size option (512MB, 2GB); with ``positive``, 0 is refused too (a store
    capped at 0 bytes would drop every hour it holds)."""
    from devloop.errors import UsageError
    from devloop.units import parse_size

    if text is None:
        return None
    try:
        size = parse_size(text)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
    if positive and size <= 0:
        raise click.BadParameter(f"must be above 0, got {text!r}", param_hint=option)
    return size


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (long-running commands stop
    cleanly and exit 0 instead of dying mid-write); the previous handlers come back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"devloop.{param.name}"] = value
    return value


def fleet_options(func: F) -> F:
    """``--store URI``, ``--endpoint-url URL``, ``--host GLOB``: what a report reads (kept in
    the context for :func:`report_folder`, so commands take no extra parameters)."""
    decorators = [
        click.option(
            "--store",
            "store",
            metavar="URI",
            expose_value=False,
            callback=_remember,
            help="Read this store instead of the workspace's: a fleet dataset "
            "(s3://BUCKET/PREFIX, file:///FOLDER, or a folder holding one), or a workspace "
            "folder.",
        ),
        click.option(
            "--endpoint-url",
            "endpoint_url",
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="An S3-compatible store's http(s)://HOST:PORT for --store s3://… "
            "(default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL).",
        ),
        click.option(
            "--host",
            "hosts",
            metavar="GLOB",
            multiple=True,
            expose_value=False,
            callback=_remember,
            help="Only hosts matching GLOB (repeatable).",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def report_folder(workspace_dir: Path | None, *, configured: bool = False) -> Path:
    """The workspace folder a report reads, after :func:`fleet_options`: the one given (or
    found) without ``--store``; with it, the fleet's mirror (synced now) or the store folder
    named. ``configured`` commands (autotune) keep their workspace for its configuration and
    read the ``--store`` data. ``--store`` and ``--host`` hold for every Store opened while
    the command runs."""
    from devloop.analytics import reading

    ctx = click.get_current_context()
    store: str | None = ctx.meta.get("devloop.store")
    endpoint: str | None = ctx.meta.get("devloop.endpoint_url")
    hosts: tuple[str, ...] = ctx.meta.get("devloop.hosts") or ()
    if store is None:
        if endpoint is not None:
            raise click.UsageError("--endpoint-url goes with --store s3://…")
        folder = resolve_workspace_dir(workspace_dir)
        if hosts:
            ctx.with_resource(reading(hosts=hosts))
        return folder
    if workspace_dir is not None and not configured:
        raise click.UsageError("give --workspace-dir or --store, not both")
    from devloop.store.fleet import reading_mirror, sync, target_of

    target = target_of(store, endpoint)
    if isinstance(target, Path):
        data = target
    else:
        mirror = sync(target, hosts)
        data = mirror.folder
        ctx.with_resource(reading_mirror(data))
        if mirror.fetched or mirror.removed:
            click.echo(
                f"Fleet {mirror.uri}: fetched {mirror.fetched} hours ({mirror.files} files, "
                f"{mirror.bytes / 1e6:.1f}MB), removed {mirror.removed}, {mirror.unchanged} "
                f"unchanged, in {mirror.seconds:.1f}s",
                err=True,
            )
    if configured:
        ctx.with_resource(reading(data / "metrics", hosts))
        return resolve_workspace_dir(workspace_dir)
    ctx.with_resource(reading(hosts=hosts))
    return data


def engine_options(func: F) -> F:
    """``--engine duckdb|spark`` and ``--spark-master URL``: which engine computes a report."""
    decorators = [
        click.option(
            "--engine",
            type=click.Choice(["duckdb", "spark"]),
            default="duckdb",
            show_default=True,
            help="spark: the same report as a PySpark job (the fleet extra and a JDK 17; on one "
            "machine DuckDB is faster: for data that outgrows it, docs/fleet.md).",
        ),
        click.option(
            "--spark-master",
            metavar="URL",
            default="local[2]",
            show_default=True,
            help="With --engine spark: local[N], spark://HOST:7077, yarn...",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func
