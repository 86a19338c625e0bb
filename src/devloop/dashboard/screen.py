"""The dashboard's screen as a pure function: :func:`build_screen` (data -> rich renderable).

Nothing here reads the store, the clock or the terminal: the width and the sections to show are
arguments, so tests render a screen into a string and assert on what it says. Bars and
sparklines are made of block characters, so they read the same without colour (NO_COLOR);
colour only repeats what the text says (green under 80 % of a limit, yellow under 100 %, red at
or over it).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from devloop.dashboard.data import DashboardData, Event, History, Run
from devloop.dashboard.snapshot import AgentStatus, Usage
from devloop.units import format_size

#: What ``--metrics`` may name: CPU and memory columns, and the agents, runs and events panels.
SECTIONS = ("cpu", "memory", "agents")

SPARKS = "▁▂▃▄▅▆▇█"
STATE_STYLES = {
    "running": "green",
    "paused": "bold red",
    "throttled": "yellow",
    "queued": "magenta",
    "idle": "dim",
}


def level_style(fraction: float | None) -> str:
    """The colour of a use at ``fraction`` of its limit."""
    if fraction is None:
        return "cyan"
    if fraction >= 1.0:
        return "bold red"
    if fraction >= 0.8:
        return "yellow"
    return "green"


def bar(fraction: float | None, width: int) -> Text:
    """``█████░░░░░``: ``fraction`` of ``width`` cells filled (capped at full; ``·`` = no limit)."""
    width = max(width, 1)
    if fraction is None:
        return Text("·" * width, style="dim")
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    text = Text("█" * filled, style=level_style(fraction))
    text.append("░" * (width - filled), style="dim")
    return text


def sparkline(values: Sequence[float | None], scale: float | None) -> Text:
    """One block character per value, full at ``scale`` (the limit; else the largest value);
    a space where no tick fell."""
    present = [v for v in values if v is not None]
    top = scale if scale else max(present, default=0.0)
    text = Text()
    for value in values:
        if value is None:
            text.append(" ")
            continue
        fraction = value / top if top > 0 else 0.0
        index = min(len(SPARKS) - 1, max(0, round(fraction * (len(SPARKS) - 1))))
        text.append(SPARKS[index], style=level_style(fraction if scale else None))
    return text


def _percent(value: float) -> str:
    return f"{value:.1f}%"


def _limit_cpu(limit: float | None) -> str:
    return f"{limit:g}%" if limit is not None else "-"


def _limit_memory(limit: int | None) -> str:
    return format_size(limit) if limit is not None else "-"


def _over(fraction: float | None) -> str:
    return " over" if fraction is not None and fraction >= 1.0 else ""


def cpu_text(usage: Usage) -> str:
    """``25.0% / 24%`` (`` over`` at or above the limit)."""
    over = _over(usage.cpu_of_limit)
    return f"{_percent(usage.cpu_percent)} / {_limit_cpu(usage.cpu_limit)}{over}"


def memory_text(usage: Usage) -> str:
    """``338.8MB / 819.2MB`` (`` over`` at or above the limit)."""
    over = _over(usage.memory_of_limit)
    return f"{format_size(usage.memory_bytes)} / {_limit_memory(usage.memory_limit_bytes)}{over}"


def cpu_cell(usage: Usage, width: int) -> Text:
    """A CPU bar ``width`` cells wide (none when 0) and :func:`cpu_text`."""
    cell = bar(usage.cpu_of_limit, width) + Text(" ") if width else Text()
    cell.append(cpu_text(usage), style=level_style(usage.cpu_of_limit))
    return cell


def memory_cell(usage: Usage, width: int) -> Text:
    """A memory bar ``width`` cells wide (none when 0) and :func:`memory_text`."""
    cell = bar(usage.memory_of_limit, width) + Text(" ") if width else Text()
    cell.append(memory_text(usage), style=level_style(usage.memory_of_limit))
    return cell


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def header(data: DashboardData) -> Group:
    """Two lines: workspace, tick time and age; strategy/profile, enforcement and collector.
    Each is cut short rather than wrapped on a narrow terminal."""
    snap = data.snapshot
    now = data.now if data.now is not None else time.time()
    title = Text("DevLoop ", style="bold")
    title.append(data.name, style="bold cyan")
    if snap.at is None:
        title.append("  waiting for the first tick")
    else:
        recent = abs(now - snap.at) < 86400
        stamp = datetime.fromtimestamp(snap.at, UTC).strftime(
            "%H:%M:%S UTC" if recent else "%Y-%m-%d %H:%M:%S UTC"
        )
        title.append(f"  tick {stamp} ({_age(max(now - snap.at, 0.0))})")
    status = Text()
    if snap.strategy:
        status.append(f"{snap.strategy}" + (f"/{snap.profile}" if snap.profile else "") + "  ")
    if snap.enforcement:
        status.append(f"enforcement {snap.enforcement}", style="bold")
        status.append("  ")
    status.append(f"collector: {data.collector}", style="dim")
    for line in (title, status):
        line.no_wrap, line.overflow = True, "ellipsis"
    return Group(title, status)


def workspace_panel(data: DashboardData, metrics: Collection[str], width: int) -> Table:
    """The workspace's CPU and memory bars against the pool, and the agents' states."""
    snap = data.snapshot
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    table.add_column("scope", style="bold", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("usage", no_wrap=True, overflow="ellipsis")
    paused = sum(1 for a in snap.agents if a.state == "paused")
    counts = Text(
        f"{len(snap.agents)} agent{'s' if len(snap.agents) != 1 else ''}: {paused} paused, "
        f"{len(snap.queue)} queued, {snap.pauses_total} pauses",
        style="dim",
    )
    rows: list[tuple[str, Text]] = []
    if "cpu" in metrics:
        rows.append(("CPU", cpu_cell(snap.workspace, width)))
    if "memory" in metrics:
        rows.append(("memory", memory_cell(snap.workspace, width)))
    for index, (label, cell) in enumerate(rows):
        table.add_row("Workspace" if index == 0 else "", label, cell)
    table.add_row("", "", counts)
    return table


def projects_table(
    data: DashboardData, metrics: Collection[str], bar_width: int, spark_width: int
) -> Table:
    """One row per project: usage/limit bars and a sparkline of the window (when it fits)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, expand=False)
    table.add_column("project", style="bold", no_wrap=True, overflow="ellipsis", max_width=24)
    if "cpu" in metrics:
        table.add_column("CPU / limit", no_wrap=True, overflow="ellipsis")
    if "memory" in metrics:
        table.add_column("memory / limit", no_wrap=True, overflow="ellipsis")
    table.add_column("procs", justify="right", no_wrap=True)
    spark_of = "cpu" if "cpu" in metrics or "memory" not in metrics else "memory"
    if spark_width:
        minutes = data.window / 60
        span = f"{minutes:g}m" if data.window >= 60 else f"{data.window:g}s"
        title = f"{'CPU' if spark_of == 'cpu' else 'mem'} {span}"
        table.add_column(title, no_wrap=True, overflow="crop", min_width=spark_width)
    for project in data.snapshot.projects:
        row: list[RenderableType] = [Text(project.name)]
        if "cpu" in metrics:
            row.append(cpu_cell(project.usage, bar_width))
        if "memory" in metrics:
            row.append(memory_cell(project.usage, bar_width))
        row.append(str(project.usage.processes))
        if spark_width:
            history = data.history.get(project.name, History((), ()))
            if spark_of == "cpu":
                values = resample(history.cpu_percent, spark_width, peak=False)
                row.append(sparkline(values, project.usage.cpu_limit))
            else:
                limit = project.usage.memory_limit_bytes
                values = resample(history.memory_bytes, spark_width, peak=True)
                row.append(sparkline(values, float(limit) if limit else None))
        table.add_row(*row)
    return table


def resample(values: Sequence[float | None], width: int, *, peak: bool) -> list[float | None]:
    """``values`` squeezed (or stretched) to ``width`` cells: each cell the average (``peak``:
    the maximum) of the values it covers, None where it covers none."""
    n = len(values)
    if width <= 0 or n == 0:
        return [None] * max(width, 0)
    out: list[float | None] = []
    for cell in range(width):
        first = cell * n // width
        last = max((cell + 1) * n // width, first + 1)
        present = [v for v in values[first:last] if v is not None]
        if not present:
            out.append(None)
        else:
            out.append(max(present) if peak else sum(present) / len(present))
    return out


def agents_table(agents: Sequence[AgentStatus], metrics: Collection[str]) -> Table:
    """One row per agent: state, usage against its own limits, fds, threads, pauses."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("agent", no_wrap=True, overflow="ellipsis", max_width=36, min_width=12)
    table.add_column("state", no_wrap=True, min_width=9)
    if "cpu" in metrics:
        table.add_column("CPU / limit", justify="right", no_wrap=True)
    if "memory" in metrics:
        table.add_column("memory / limit", justify="right", no_wrap=True)
    table.add_column("fds", justify="right", no_wrap=True)
    table.add_column("thr", justify="right", no_wrap=True)
    table.add_column("pauses", justify="right", no_wrap=True)
    for agent in agents:
        usage = agent.usage
        row: list[RenderableType] = [
            Text(agent.key),
            Text(agent.state, style=STATE_STYLES.get(agent.state, "")),
        ]
        if "cpu" in metrics:
            row.append(Text(f"{_percent(usage.cpu_percent)} / {_limit_cpu(usage.cpu_limit)}",
                            style=level_style(usage.cpu_of_limit)))  # fmt: skip
        if "memory" in metrics:
            row.append(
                Text(
                    f"{format_size(usage.memory_bytes)} / "
                    f"{_limit_memory(usage.memory_limit_bytes)}",
                    style=level_style(usage.memory_of_limit),
                )
            )
        row += [str(usage.fds), str(usage.threads), str(agent.pauses)]
        table.add_row(*row)
    return table


def _event_text(event: Event) -> Text:
    who = "/".join(part for part in (event.project, event.agent) if part) or "workspace"
    text = Text(f"{_clock(event.ts)} ")
    style = {"pause": "bold red", "resume": "green", "warn": "yellow"}.get(event.action, "")
    text.append(f"{event.action:<10}", style=style)
    text.append(f" {who}")
    if event.metric and event.value is not None:
        if event.metric == "memory":
            value = format_size(event.value)
            limit = format_size(event.limit) if event.limit is not None else "-"
        else:
            value = f"{event.value:.1f}"
            limit = f"{event.limit:g}" if event.limit is not None else "-"
        unit = "%" if event.metric == "cpu" else ""
        text.append(f"  {event.metric} {value}{unit} / {limit}{unit}")
    if event.message:
        text.append(f"  {event.message}", style="dim")
    return text


def events_panel(events: Sequence[Event]) -> Group:
    """The newest enforcement events, newest first."""
    lines: list[RenderableType] = [Text("Latest events", style="bold")]
    if not events:
        lines.append(Text("  none recorded", style="dim"))
    for event in events:
        line = Text("  ") + _event_text(event)
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    return Group(*lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _run_text(run: Run) -> Text:
    text = Text(f"{_clock(run.started)} ")
    if run.status == "incomplete":
        outcome = "incomplete"
    elif run.signal is not None:
        outcome = f"signal {run.signal}"
    else:
        outcome = f"exit {run.exit_code}"
    text.append(f"{outcome:<10}", style="bold red" if run.failed else "green")
    duration = run.duration
    text.append(f" {_duration(duration) if duration is not None else '-':>7}")
    text.append(f"  {run.project}/{run.agent}")
    return text


def runs_panel(runs: Sequence[Run]) -> Group:
    """The last runs devloop launched, newest first: when, exit, duration, project/agent."""
    lines: list[RenderableType] = [Text("Last runs", style="bold")]
    for run in runs:
        line = Text("  ") + _run_text(run)
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    return Group(*lines)


def layout(data: DashboardData, metrics: Collection[str], width: int) -> tuple[int, int]:
    """Bar and sparkline widths of the project rows for ``width`` columns: the text of each
    row is kept whole; the sparkline gets about twice a bar, and goes first when short of room,
    then the bars shrink to none."""
    projects = data.snapshot.projects
    # Every column costs its padding and a separator (3); the table's edges 2 more.
    names = max((len(p.name) for p in projects), default=7)
    fixed = 2 + min(24, max(names, 7)) + 3 + 5 + 3
    shown = 0
    if "cpu" in metrics:
        shown += 1
        fixed += max((len(cpu_text(p.usage)) for p in projects), default=12) + 3
    if "memory" in metrics:
        shown += 1
        fixed += max((len(memory_text(p.usage)) for p in projects), default=16) + 3
    room = width - fixed - 3  # what the bars and the sparkline's column may take
    if not shown:
        spark = min(60, room)
        return 0, spark if spark >= 8 else 0
    bar_width = max(4, min(20, room // (shown + 2) - 1))
    spark = min(60, room - shown * (bar_width + 1))
    if spark >= 8:
        return bar_width, spark
    return 0, (min(60, room) if room >= 8 else 0)


def build_screen(
    data: DashboardData, *, width: int, metrics: Collection[str] = SECTIONS, refresh: float = 5.0
) -> RenderableType:
    """The whole screen for a terminal ``width`` columns wide, showing the ``metrics`` sections
    (see :data:`SECTIONS`)."""
    bar_width, spark_width = layout(data, metrics, width)
    parts: list[RenderableType] = [header(data)]
    if data.error:
        parts.append(Text(f"Error: {data.error}", style="bold red"))
    for note in data.snapshot.notes:
        parts.append(Text(f"Note: {note}", style="yellow"))
    if "cpu" in metrics or "memory" in metrics:
        parts.append(workspace_panel(data, metrics, max(bar_width, 10)))
    parts.append(projects_table(data, metrics, bar_width, spark_width))
    if "agents" in metrics:
        agents = data.snapshot.agents
        if agents:
            parts.append(agents_table(agents, metrics))
        else:
            parts.append(Text("No agent process in the newest tick.", style="dim"))
        if data.snapshot.queue:
            queued = ", ".join(f"{q.project}/{q.agent}" for q in data.snapshot.queue)
            parts.append(Text(f"Queue ({len(data.snapshot.queue)}): {queued}", style="magenta"))
        if data.runs:
            parts.append(runs_panel(data.runs))
        parts.append(events_panel(data.events))
    parts.append(Text(f"q quits · refresh {refresh:g}s", style="dim"))
    return Group(*parts)
