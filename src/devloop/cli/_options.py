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
    from devloop.config import find_workspace_dir
    from devloop.config.load import WORKSPACE_DIR_NAME, WORKSPACE_FILE

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
