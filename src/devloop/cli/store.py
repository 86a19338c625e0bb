"""``devloop workspace compact`` and ``devloop workspace store-info``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from devloop.cli._options import (
    duration_value,
    emit,
    format_option,
    output_option,
    resolve_workspace_dir,
    size_value,
    workspace_dir_option,
)


@click.command()
@workspace_dir_option
@click.option("--retention", help="Also drop data older than this (30d, 12h).")
@click.option("--max-size", help="Also drop the oldest hours until the store fits (2GB).")
@click.option(
    "--all-hours",
    is_flag=True,
    help="Compact the current hour too (when no collector is recording into it).",
)
def compact(
    workspace_dir: Path | None, retention: str | None, max_size: str | None, all_hours: bool
) -> None:
    """Compact every closed hour into one sorted zstd file per table, with its rollups; apply
    retention.

    \b
    Example:
      devloop workspace compact --workspace-dir .devloop-workspace --retention 30d --max-size 2GB
    """
    from devloop.store import compact as compact_store
    from devloop.store import retention as apply_retention
    from devloop.units import format_size

    max_age = duration_value(retention, "--retention")
    max_bytes = size_value(max_size, "--max-size", positive=True)
    root = resolve_workspace_dir(workspace_dir) / "metrics"
    now = datetime.now(UTC) + timedelta(hours=1) if all_hours else None
    report = compact_store(root, now=now)
    click.echo(
        f"Compacted {report.partitions} hour partitions: {report.files_in} files, "
        f"{report.rows} rows, {format_size(report.bytes_in)} -> {format_size(report.bytes_out)}"
        + (f"; repaired {report.repaired} leftover files" if report.repaired else "")
    )
    if report.rolled_up:
        click.echo(f"Rolled up {report.rolled_up} closed hours")
    if max_age is not None or max_bytes is not None:
        dropped = apply_retention(root, max_age_seconds=max_age, max_bytes=max_bytes)
        if dropped.dropped:
            click.echo(
                f"Dropped {len(dropped.dropped)} partitions ({dropped.rows} rows, "
                f"{format_size(dropped.bytes)}): {dropped.reason}"
            )
        else:
            click.echo("Retention: nothing to drop")


@click.command("store-info")
@workspace_dir_option
@format_option("table", "json")
@output_option
def store_info(workspace_dir: Path | None, fmt: str, output: Path) -> None:
    """Rows, files, bytes, bytes per row and time span of every table in the store.

    \b
    Example:
      devloop workspace store-info --workspace-dir .devloop-workspace --format json
    """
    from devloop.store import store_info as read_info
    from devloop.units import format_size

    info = read_info(resolve_workspace_dir(workspace_dir) / "metrics")
    if fmt == "json":
        data = {
            "root": str(info.root),
            "tables": {
                t.name: {
                    "rows": t.rows,
                    "files": t.files,
                    "bytes": t.bytes,
                    "bytes_per_row": t.bytes_per_row,
                    "first_ts": t.first_ts.isoformat() if t.first_ts else None,
                    "last_ts": t.last_ts.isoformat() if t.last_ts else None,
                }
                for t in info.tables
            },
            "spool_segments": info.spool_segments,
            "spool_bytes": info.spool_bytes,
            "skipped_files": [str(p) for p in info.skipped_files],
        }
        emit(json.dumps(data, indent=2), output)
        return
    from devloop.cli.render import table

    rows = [
        (
            t.name,
            t.rows,
            t.files,
            format_size(t.bytes),
            f"{t.bytes_per_row:.2f}" if t.bytes_per_row is not None else "-",
            f"{t.first_ts:%Y-%m-%d %H:%M:%S}" if t.first_ts else "-",
            f"{t.last_ts:%Y-%m-%d %H:%M:%S}" if t.last_ts else "-",
        )
        for t in info.tables
    ]
    text = table(["table", "rows", "files", "bytes", "B/row", "first (UTC)", "last (UTC)"], rows,
                 right=(1, 2, 3, 4))  # fmt: skip
    text += f"\nspool: {info.spool_segments} segments, {format_size(info.spool_bytes)} pending\n"
    emit(text, output)
