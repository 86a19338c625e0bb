"""Shared builders for the analytics tests: store copies and the drivers recomputed in polars."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import polars as pl

from devloop.store.db import ROLLUPS_DIR


def copy_without_cache(workspace: Path, tmp_path: Path) -> Path:
    """A copy of ``workspace`` (a .devloop-workspace folder) in ``tmp_path``, without its
    rollups: each test starts cold and may change the copy freely."""
    target = tmp_path / ".devloop-workspace"
    shutil.copytree(workspace, target)
    shutil.rmtree(target / "metrics" / ROLLUPS_DIR, ignore_errors=True)
    return target


def top_drivers(
    agents: pl.DataFrame,
    start: datetime | pl.Expr,
    end: datetime | pl.Expr,
    resource: str,
    project: str | None = None,
) -> pl.DataFrame:
    """The three agents that used most of ``resource`` over ``[start, end]`` (of ``project``,
    or of the workspace when None), with their share in percent, as bottlenecks ranks them:
    ``agents`` holds per-tick sums (ts, project, agent, cpu, memory)."""
    part = agents.filter(pl.col("ts") >= start, pl.col("ts") <= end)
    if project is not None:
        part = part.filter(pl.col("project") == project)
    used = part.group_by("project", "agent").agg(pl.col(resource).sum().alias("used"))
    return (
        used.with_columns((100.0 * pl.col("used") / pl.col("used").sum()).alias("share"))
        .sort(["share", "project", "agent"], descending=[True, False, False])
        .head(3)
    )
