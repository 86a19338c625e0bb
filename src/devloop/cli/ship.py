"""``devloop workspace ship``: the store's closed hours to a fleet dataset (docs/fleet.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from devloop.cli._options import duration_value, resolve_workspace_dir, workspace_dir_option

if TYPE_CHECKING:
    from devloop.store.ship import Progress, ShipReport


@click.command("ship")
@workspace_dir_option
@click.option(
    "--to",
    "uri",
    required=True,
    metavar="URI",
    help="The fleet dataset: s3://BUCKET/PREFIX or file:///FOLDER.",
)
@click.option(
    "--endpoint-url",
    metavar="URL",
    help="An S3-compatible store (MinIO, Ceph, moto): http(s)://HOST:PORT. Default: "
    "AWS_ENDPOINT_URL, else AWS.",
)
@click.option("--host", help="The host=... folder (default: the host the store's rows name).")
@click.option("--retain", help="Also delete fleet hours (of every host) older than this (30d).")
@click.option(
    "--dry-run", is_flag=True, help="List what would be shipped and deleted; write nothing."
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Transfers at once.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def ship(
    workspace_dir: Path | None,
    uri: str,
    endpoint_url: str | None,
    host: str | None,
    retain: str | None,
    dry_run: bool,
    jobs: int,
    quiet: bool,
) -> None:
    """Copy every closed, compacted hour of the store, with its rollups, to a fleet dataset.

    Hours go to PREFIX/<table>/host=<host>/date=.../hour=.../, each published by a manifest
    once all its files are there, so readers never see half an hour. A killed ship resumes
    where it stopped; hours already published as they are are skipped. The spool and the
    current hour never ship (`devloop workspace compact` closes the others). S3 credentials
    come from the AWS environment, profile or instance role.

    \b
    Example:
      devloop workspace ship --to s3://fleet-metrics/devloop --retain 30d
      devloop workspace ship --to s3://metrics/devloop --endpoint-url http://127.0.0.1:9000
      devloop workspace ship --to file:///mnt/fleet --dry-run
    """
    from devloop.store.ship import parse_target
    from devloop.store.ship import ship as ship_store

    target = parse_target(uri, endpoint_url)
    retain_seconds = duration_value(retain, "--retain")
    root = resolve_workspace_dir(workspace_dir) / "metrics"
    with _progress(enabled=not quiet and not dry_run and sys.stderr.isatty()) as progress:
        report = ship_store(
            root, target, host=host, retain_seconds=retain_seconds, dry_run=dry_run, jobs=jobs,
            progress=progress,
        )  # fmt: skip
    _echo(report)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on stderr, started at the first hour to ship."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("Shipping {task.fields[hours]}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("ship", total=None, hours="")

    def report(done: int, total: int, sent: int) -> None:
        if total and not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total, hours=f"{done}/{total} hours")

    try:
        yield report
    finally:
        if bar.live.is_started:
            bar.stop()


def _echo(report: ShipReport) -> None:
    from devloop.units import format_size

    if report.dry_run:
        for hour in report.shipped:
            verb = "replace" if hour.replaced else "ship"
            click.echo(f"would {verb} {hour.partition}: {hour.files} files, "
                       f"{format_size(hour.bytes)}")  # fmt: skip
        for dropped in report.dropped:
            click.echo(f"would delete host={dropped.host} {dropped.partition}")
    summary = (
        f"{'Would ship' if report.dry_run else 'Shipped'} {len(report.shipped)} hours of "
        f"host={report.host} ({report.files} files, {format_size(report.bytes)}) to "
        f"{report.target}"
    )
    if not report.dry_run:
        sent = sum(hour.sent for hour in report.shipped)
        summary += f" in {report.seconds:.1f}s ({sent} files sent)"
    summary += f"; {report.unchanged} already there"
    if report.waiting:
        reasons = sorted({w.reason for w in report.waiting})
        summary += f"; {len(report.waiting)} closed hours waiting ({'; '.join(reasons)})"
    click.echo(summary)
    if report.dropped:
        verb = "Would delete" if report.dry_run else "Deleted"
        hosts = len({dropped.host for dropped in report.dropped})
        click.echo(f"{verb} {len(report.dropped)} fleet hours of {hosts} hosts (retention)")
