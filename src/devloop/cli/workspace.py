"""``devloop workspace ...``: the workspace's configuration, limits and schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from devloop.cli._options import (
    echo_warnings,
    emit,
    format_option,
    output_option,
    resolve_workspace_dir,
    workspace_dir_option,
)

if TYPE_CHECKING:
    from devloop.config.allocation import AgentAllocation


@click.group()
def workspace() -> None:
    """Configure a workspace, see its limits, record and analyse what agents use.

    \b
    Example:
      devloop workspace validate --workspace-dir .devloop-workspace
    """


@workspace.command()
@click.argument("root", type=click.Path(path_type=Path, file_okay=False), default=".")
@click.option("--name", help="Workspace name (default: the root folder's name).")
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="NAME=PATH",
    help="A project and its folder relative to ROOT. Repeat for each project.",
)
@click.option(
    "--strategy",
    type=click.Choice(["equal", "weighted", "priority", "dynamic", "custom"]),
    default="equal",
    show_default=True,
    help="How projects share the pool.",
)
@click.option(
    "--max-cpu",
    type=click.FloatRange(0, 100, min_open=True),
    default=60.0,
    show_default=True,
    help="Workspace CPU ceiling, percent of the machine.",
)
@click.option(
    "--max-memory", default="2GB", show_default=True, help='Workspace memory ceiling, e.g. "2GB".'
)
@click.option("--force", is_flag=True, help="Overwrite an existing workspace.json.")
def init(
    root: Path,
    name: str | None,
    projects: tuple[str, ...],
    strategy: str,
    max_cpu: float,
    max_memory: str,
    force: bool,
) -> None:
    """Write ROOT/.devloop-workspace/workspace.json.

    \b
    Example:
      devloop workspace init . --name shop --project api=services/api \\
          --project web=services/web --strategy weighted
    """
    from devloop.config.init import init_workspace

    pairs = []
    for item in projects:
        name_part, sep, path_part = item.partition("=")
        if not sep or not name_part.strip() or not path_part.strip():
            raise click.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--project")
        pairs.append((name_part.strip(), path_part.strip()))
    written = init_workspace(
        root,
        name=name,
        projects=pairs,
        strategy=strategy,
        max_cpu=max_cpu,
        max_memory=max_memory,
        force=force,
    )
    click.echo(f"Wrote {written}")


@workspace.command()
@workspace_dir_option
@format_option("table", "json")
def validate(workspace_dir: Path | None, fmt: str) -> None:
    """Check workspace.json and every project's agents.json, and show what was read.

    \b
    Example:
      devloop workspace validate --workspace-dir .devloop-workspace
    """
    from devloop.config import load_workspace
    from devloop.config.summary import workspace_summary

    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    summary = workspace_summary(loaded)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
        return
    from devloop.cli.render import table
    from devloop.units import format_size

    pool = summary["pool"]
    click.echo(
        f"OK {summary['file']}: workspace {summary['workspace_name']!r}, "
        f"{len(summary['projects'])} projects, strategy {summary['strategy']}, "
        f"pool {pool['maxCpu']:g}% CPU / {format_size(pool['maxMemory_bytes'])}"
    )
    rows = [
        (
            p["name"],
            p["path"],
            "yes" if p["enabled"] else "no",
            p["priority"],
            p["agents_file"] or "(none)",
            ", ".join(p["agents"]) or "-",
        )
        for p in summary["projects"]
    ]
    click.echo(table(["project", "path", "enabled", "priority", "agents.json", "agents"], rows),
               nl=False)  # fmt: skip


@workspace.command()
@workspace_dir_option
@click.option("--profile", help="Show the limits of this profile (default: the one in force).")
@click.option("--at", "at", metavar="HH:MM", help="Show the limits in force at this local time.")
@format_option("table", "json")
@output_option
def limits(
    workspace_dir: Path | None, profile: str | None, at: str | None, fmt: str, output: Path
) -> None:
    """Show the effective limits of every project and agent.

    The profile in force comes from --profile, else DEVLOOP_RESOURCE_PROFILE, else the
    resource_sharing.profiles entry whose times hold the current (or --at) time.

    \b
    Example:
      devloop workspace limits --at 17:30 --format json
    """
    from devloop.config import load_workspace, parse_time_of_day
    from devloop.config.allocation import allocate
    from devloop.config.load import environment_profile
    from devloop.errors import UsageError

    moment = None
    if at is not None:
        try:
            moment = parse_time_of_day(at)
        except UsageError as exc:
            raise click.BadParameter(str(exc), param_hint="--at") from exc
    loaded = load_workspace(resolve_workspace_dir(workspace_dir))
    echo_warnings(loaded.warnings)
    allocation = allocate(loaded, profile=profile or environment_profile(), at=moment)
    if fmt == "json":
        emit(json.dumps(allocation.to_json(), indent=2), output)
        return
    from devloop.cli.render import table
    from devloop.units import format_size

    head = (
        f"Strategy: {allocation.strategy}   Profile: {allocation.profile or '(base)'}   "
        f"Pool: {allocation.pool.cpu:g}% CPU, {format_size(allocation.pool.memory_bytes)}\n\n"
    )
    projects = table(
        ["project", "priority", "cpu", "memory", "note"],
        [
            (p.name, p.priority, f"{p.cpu:.4g}%", format_size(p.memory_bytes), p.note or "")
            for p in allocation.projects.values()
        ],
        right=(1, 2, 3),
    )
    agents = ""
    if allocation.agents:
        agents = "\n" + table(
            ["agent", "cpu", "memory", "file handles", "threads", "from"],
            [
                (key, f"{a.cpu:.4g}%", format_size(a.memory_bytes),
                 a.max_file_handles or "-", a.max_threads or "-", _limit_source(a))
                for key, a in allocation.agents.items()
            ],
            right=(1, 2, 3, 4),
        )  # fmt: skip
    notes = "".join(f"\nNote: {n}" for n in allocation.notes)
    emit(head + projects + agents + notes, output)


def _limit_source(agent: AgentAllocation) -> str:
    """Whose limit is in force, per resource when the agent's CPU and memory differ."""
    if agent.cpu_source == agent.memory_source:
        return agent.cpu_source
    return f"cpu: {agent.cpu_source}, memory: {agent.memory_source}"


@workspace.command()
@click.argument("which", type=click.Choice(["all", "workspace", "agents"]), default="all")
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write workspace.schema.json and agents.schema.json into this folder.",
)
def schema(which: str, output_dir: Path | None) -> None:
    """Print the JSON Schema of workspace.json and agents.json.

    \b
    Example:
      devloop workspace schema workspace > workspace.schema.json
      devloop workspace schema --output-dir schemas/
    """
    from devloop._atomic import atomic_write_text
    from devloop.config.schema import agents_schema, workspace_schema

    schemas = {"workspace.schema.json": workspace_schema(), "agents.schema.json": agents_schema()}
    if output_dir is not None:
        for filename, content in schemas.items():
            atomic_write_text(output_dir / filename, json.dumps(content, indent=2) + "\n")
            click.echo(f"Wrote {output_dir / filename}")
        return
    if which == "workspace":
        click.echo(json.dumps(schemas["workspace.schema.json"], indent=2))
    elif which == "agents":
        click.echo(json.dumps(schemas["agents.schema.json"], indent=2))
    else:
        click.echo(json.dumps(schemas, indent=2))
