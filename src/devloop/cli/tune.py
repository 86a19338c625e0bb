"""``devloop workspace autotune`` and ``devloop workspace apply-tuning``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from devloop.cli._options import (
    duration_value,
    echo_warnings,
    emit,
    engine_options,
    fleet_options,
    report_folder,
    resolve_workspace_dir,
    size_value,
    workspace_dir_option,
)

if TYPE_CHECKING:
    from devloop.analytics import Store, TimeRange
    from devloop.config import Workspace
    from devloop.tune import Suggestions
    from devloop.tune.replay import Demand


def percent_value(text: str | None, option: str) -> float | None:
    """A percent option (``15%`` or ``15``) as a fraction (0.15)."""
    if text is None:
        return None
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError as exc:
        raise click.BadParameter(
            f"expected a percent like 15%, got {text!r}", param_hint=option
        ) from exc
    if not 0 <= value <= 1000:
        raise click.BadParameter(f"must be from 0% to 1000%, got {text!r}", param_hint=option)
    return value / 100


def _record(loaded: Workspace, seconds: float, interval: float | None) -> None:
    """Record the workspace live for ``seconds`` with a progress bar (stderr)."""
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from devloop.runner.record import Recorder

    stop = threading.Event()
    with Recorder(loaded, interval=interval) as rec:
        console = Console(stderr=True)
        with Progress(
            TextColumn("recording"),
            BarColumn(),
            TextColumn("{task.fields[ticks]} ticks"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("record", total=seconds, ticks=0)

            def show(status: Any) -> None:
                progress.update(task, completed=min(status.elapsed, seconds), ticks=status.ticks)

            try:
                final = rec.run(duration=seconds, stop=stop, on_tick=show)
            except KeyboardInterrupt:
                stop.set()
                final = rec.status()
    click.echo(f"Recorded {final.ticks} ticks, {final.rows} samples.", err=True)


def _summary(suggestions: Suggestions) -> str:
    from devloop.cli.render import table

    def mb(value: int | None) -> str:
        return "" if value is None else f"{value / 1024**2:.0f}MB"

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}%"

    def x(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    rows = []
    for entry in [*suggestions.projects.values(), *suggestions.agents.values()]:
        data = entry.to_json()
        marks = [name for name in ("censored", "leak", "scaled_to_pool") if data["flags"][name]]
        bt = data["backtest"] or {}
        now, then = bt.get("current") or {}, bt.get("suggested") or {}
        rows.append(
            [
                entry.name,
                pct(entry.current_cpu),
                pct(entry.cpu),
                mb(entry.current_memory),
                mb(entry.memory_bytes),
                str((data["objective"] or {}).get("runs", "")),
                x(now.get("p95")),
                x(then.get("p95")),
                entry.confidence,
                ", ".join(marks),
            ]
        )
    text = table(
        [
            "scope",
            "cpu now",
            "cpu suggested",
            "memory now",
            "memory suggested",
            "runs",
            "p95 now",
            "p95 suggested",
            "confidence",
            "flags",
        ],
        rows,
        title="Suggested limits",
        right=(1, 2, 3, 4, 5, 6, 7),
    )
    text += f"(p95: backtested run slowdown; target {suggestions.params.max_slowdown:g}x)\n"
    text += "".join(f"Note: {note}\n" for note in _no_suggestion(suggestions))
    backtest = suggestions.to_json()["backtest"]
    totals = backtest["totals"]
    lines = []
    for side in ("current", "suggested"):
        t = totals[side]

        def slow(value: float | None, t: dict[str, Any] = t) -> str:
            # null with runs: a run that never finished (infinitely slow) reached this rank
            return "inf" if value is None and t["runs"] else x(value)

        lines.append(
            [
                side,
                str(t["runs"]),
                slow(t["p50"]),
                slow(t["p95"]),
                slow(t["max"]),
                str(t["slowed_2x"]),
                str(t["not_finished"]),
                str(t["failed_memory"]),
                pct(t["reserved_cpu_percent"]),
                mb(t["reserved_memory_bytes"]),
            ]
        )
    text += "\n" + table(
        ["limits", "runs", "p50", "p95", "max", "slowed >2x", "not finished", "failed memory",
         "pool cpu", "pool memory"],
        lines,
        title="Backtest, all projects (every run together, in-sample)",
        right=(1, 2, 3, 4, 5, 6, 7, 8, 9),
    )  # fmt: skip
    if backtest["note"]:
        text += f"Note: {backtest['note']}\n"
    for note in suggestions.notes:
        if backtest["note"] is None or note not in backtest["note"]:
            text += f"Note: {note}\n"
    return text


def _no_suggestion(suggestions: Suggestions) -> list[str]:
    """One note per reason an entry got no suggestion (the rationale, in the JSON only until
    now), naming the entries: ``no suggestion for api, api/job: too little history: ...``."""
    reasons: dict[str, list[str]] = {}
    for entry in [*suggestions.projects.values(), *suggestions.agents.values()]:
        if entry.cpu is None or entry.memory_bytes is None:
            why = entry.rationale.removeprefix("No suggestion: ").rstrip(".")
            reasons.setdefault(why, []).append(entry.name)
    return [f"no suggestion for {', '.join(names)}: {why}" for why, names in reasons.items()]


@click.command()
@workspace_dir_option
@fleet_options
@click.option("--period", metavar="DURATION", help="Analyse the last DURATION of history (7d).")
@click.option("--start", metavar="TIME", help='Start of the history to analyse ("7 days ago").')
@click.option("--end", metavar="TIME", help="End of the history to analyse.")
@click.option("--duration", metavar="DURATION", help="Record live this long first (1h, 3600).")
@click.option("--interval", metavar="DURATION", help="Tick interval while recording (1s).")
@click.option(
    "--group-by",
    type=click.Choice(["class", "cores", "host"]),
    help="A fleet: tune each machine class apart (hosts grouped by cores and memory, by "
    "cores, or each host alone); with several, one suggestions file (and report) per class, "
    "named FILE.<class>.json.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=Path("-"),
    show_default=True,
    help="Write suggestions.json here (- = standard output).",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML report here.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="table: print a summary (the JSON still goes to --output).",
)
@click.option(
    "--cpu-percentile",
    type=click.FloatRange(0, 100, min_open=True),
    default=95.0,
    show_default=True,
    help="Percentile of the decayed per-tick CPU.",
)
@click.option(
    "--half-life",
    default="24h",
    show_default=True,
    help="Half-life of the CPU percentile's time decay.",
)
@click.option("--cpu-margin", default="15%", show_default=True, help="Added to the CPU level.")
@click.option(
    "--memory-window",
    default="1h",
    show_default=True,
    help="Memory peaks are taken per window of this length (whole hours).",
)
@click.option(
    "--memory-percentile",
    default="99",
    show_default=True,
    help="Percentile of the window peaks, or 'max'.",
)
@click.option("--memory-margin", default="15%", show_default=True, help="Added to memory.")
@click.option(
    "--min-cpu",
    type=click.FloatRange(0, 100),
    default=1.0,
    show_default=True,
    help="Smallest CPU limit suggested (% of the machine).",
)
@click.option(
    "--min-memory", default="64MB", show_default=True, help="Smallest memory limit suggested."
)
@click.option(
    "--min-history", default="1h", show_default=True, help="Less history than this: no suggestion."
)
@click.option(
    "--censor-at",
    default="95%",
    show_default=True,
    help="A tick from this share of its limit (to 102 %) counts as held at the limit.",
)
@click.option(
    "--censor-raise",
    default="25%",
    show_default=True,
    help="How far above its limit a censored tick counts.",
)
@click.option(
    "--leak-threshold",
    type=click.FloatRange(0, min_open=True),
    default=5.0,
    show_default=True,
    help="MB per hour of steady growth that makes a leak.",
)
@click.option(
    "--max-slowdown",
    type=click.FloatRange(1.0),
    default=1.10,
    show_default=True,
    help="Target: p95 of the runs' replayed slowdown (replayed / recorded duration).",
)
@click.option(
    "--max-pool",
    type=click.FloatRange(0, 100, min_open=True),
    default=90.0,
    show_default=True,
    help="Largest pool a patch may set (CPU % of the machine; leave some for yourself).",
)
@click.option(
    "--min-samples",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Fewer samples than this (and fewer runs than --min-runs): no suggestion.",
)
@click.option(
    "--min-runs",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Fewer recorded runs than this (and fewer samples than --min-samples): no suggestion.",
)
@engine_options
def autotune(
    workspace_dir: Path | None,
    period: str | None,
    start: str | None,
    end: str | None,
    duration: str | None,
    interval: str | None,
    output: Path,
    report: Path | None,
    fmt: str,
    cpu_percentile: float,
    half_life: str,
    cpu_margin: str,
    memory_window: str,
    memory_percentile: str,
    memory_margin: str,
    min_cpu: float,
    min_memory: str,
    min_history: str,
    censor_at: str,
    censor_raise: str,
    leak_threshold: float,
    max_slowdown: float,
    max_pool: float,
    min_samples: int,
    min_runs: int,
    group_by: str | None,
    engine: str,
    spark_master: str,
) -> None:
    """Suggest CPU and memory limits per project and agent from the recorded history.

    CPU: the smallest limit under which the recorded runs, replayed, are slowed at most
    --max-slowdown at p95 (agents without runs: a decayed percentile of the per-tick use);
    memory: never below a peak seen, plus a margin. The pool is raised to hold the projects'
    limits, up to --max-pool. A walk-forward backtest replays the runs under the current and
    the suggested limits; a limit that would do worse is not suggested. docs/autotune.md.
    --engine spark reads the recorded runs' demand (their per-tick series) as a PySpark job;
    the per-tick history and the fit stay on DuckDB here.

    \b
    Example:
      devloop workspace autotune --workspace-dir .devloop-workspace --period 7d \\
          --output suggestions.json --report report.html
      devloop workspace autotune --duration 3600 --output suggestions.json --format table
      devloop workspace autotune --store s3://team-devloop/fleet --group-by class \\
          --output suggestions.json --format table
      devloop workspace autotune --store /mnt/fleet --engine spark --output suggestions.json
    """
    from devloop.analytics import Store, collected_warnings
    from devloop.cli.analytics import _range
    from devloop.cli.render import to_json
    from devloop.config import load_workspace
    from devloop.tune import TuneParameters
    from devloop.tune import autotune as run_autotune
    from devloop.tune.report import html_report

    if memory_percentile.strip().lower() == "max":
        memory_q: float | None = None
    else:
        try:
            memory_q = float(memory_percentile)
        except ValueError as exc:
            raise click.BadParameter(
                f"expected a percentile or 'max', got {memory_percentile!r}",
                param_hint="--memory-percentile",
            ) from exc
    params = TuneParameters(
        cpu_percentile=cpu_percentile,
        half_life=duration_value(half_life, "--half-life") or 0.0,
        cpu_margin=percent_value(cpu_margin, "--cpu-margin") or 0.0,
        memory_window=duration_value(memory_window, "--memory-window") or 0.0,
        memory_percentile=memory_q,
        memory_margin=percent_value(memory_margin, "--memory-margin") or 0.0,
        min_cpu=min_cpu,
        min_memory=size_value(min_memory, "--min-memory") or 0,
        min_history=duration_value(min_history, "--min-history") or 0.0,
        min_samples=min_samples,
        min_runs=min_runs,
        censor_at=percent_value(censor_at, "--censor-at") or 0.0,
        censor_raise=percent_value(censor_raise, "--censor-raise") or 0.0,
        leak_mb_per_hour=leak_threshold,
        max_slowdown=max_slowdown,
        max_pool=max_pool,
    )
    if engine == "spark" and duration is not None:
        raise click.UsageError("--engine spark reads recorded runs: not with --duration")
    time_range = _range(start, end, period)
    seconds = duration_value(duration, "--duration")
    every = duration_value(interval, "--interval")
    if seconds is not None and click.get_current_context().meta.get("devloop.store") is not None:
        raise click.UsageError("--duration records this machine: not with --store")
    folder = report_folder(workspace_dir, configured=True)
    if seconds is not None:
        loaded = load_workspace(folder)
        echo_warnings(loaded.warnings)
        _record(loaded, seconds, every)
    messages: list[str] = []
    if group_by is not None:
        from devloop.tune.fleet import autotune_fleet

        try:
            with (
                collected_warnings() as messages,
                _demand_engine(engine, spark_master, time_range) as read,
            ):
                groups = autotune_fleet(
                    folder, time_range, params, group_by=group_by, demand=read,
                    progress=_progress(),
                )  # fmt: skip
        finally:
            echo_warnings(messages)
        if len(groups) > 1:
            _emit_groups(groups, output, report, fmt)
            return
        suggestions = groups[0][1]
    else:
        try:
            with (
                collected_warnings() as messages,
                _demand_engine(engine, spark_master, time_range) as read,
            ):
                demand = None
                if read is not None:
                    with Store(folder) as store:
                        demand = read(store)
                suggestions = run_autotune(
                    folder, time_range, params, demand=demand, progress=_progress()
                )
        finally:
            echo_warnings(messages)
    text = to_json(suggestions.to_json())
    if str(output) != "-":
        emit(text, output)
    elif fmt == "json":
        click.echo(text, nl=False)
    if report is not None:
        emit(html_report(suggestions), report)
    if fmt == "table":
        click.echo(_summary(suggestions), nl=False)


def _progress() -> Callable[[str], None] | None:
    """On a terminal, a line on standard error as each step of autotune begins, with the
    seconds since it started (``autotune  12.3s  walk-forward backtest: ...``); elsewhere
    (a pipe, a file, a test) None: the output stays what it was."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def say(line: str) -> None:
        click.echo(f"autotune {time.monotonic() - started:6.1f}s  {line}", err=True)

    return say


@contextmanager
def _demand_engine(
    engine: str, master: str, time_range: TimeRange | None
) -> Iterator[Callable[[Store], Demand] | None]:
    """With ``--engine spark``: one Spark session, and a reader of the recorded runs' demand
    autotune replays over a store (the workspace's, --store's, or one narrowed to a machine
    class's hosts), of the hosts it keeps, and the range autotune resolves on it; None with
    DuckDB."""
    if engine != "spark":
        yield None
        return
    from devloop.analytics import TimeRange
    from devloop.analytics.spark import run_demand_spark, spark_engine
    from devloop.tune.replay import demand_from_rows

    with spark_engine(master) as spark:

        def read(store: Store) -> Demand:
            selection = store.select(time_range)
            rows = run_demand_spark(
                spark,
                store.root,
                TimeRange(selection.start, selection.end),
                hosts=store.hosts or (),
            )
            return demand_from_rows(rows.found, rows.series, rows.machines, rows.interval)

        yield read


def _emit_groups(groups: list[Any], output: Path, report: Path | None, fmt: str) -> None:
    """Several machine classes: a suggestions file (and report) per class, FILE.<class>.json;
    on standard output one JSON document listing them; the table per class."""
    from devloop.cli.render import to_json
    from devloop.tune.report import html_report

    def per_class(path: Path, slug: str) -> Path:
        return path.with_name(f"{path.stem}.{slug}{path.suffix}")

    documents = []
    for machine, suggestions in groups:
        data = suggestions.to_json()
        documents.append(data)
        if str(output) != "-":
            emit(to_json(data), per_class(output, machine.slug))
        if report is not None:
            emit(html_report(suggestions), per_class(report, machine.slug))
    if str(output) == "-" and fmt == "json":
        fleet = {"kind": "devloop-autotune-fleet", "groups": documents}
        click.echo(to_json(fleet), nl=False)
    if fmt == "table":
        for machine, suggestions in groups:
            hosts = ", ".join(machine.hosts)
            click.echo(f"Machine class {machine.name} (hosts {hosts})")
            click.echo(_summary(suggestions))


@click.command("apply-tuning")
@click.argument("suggestions", required=False, type=click.Path(path_type=Path, dir_okay=False))
@workspace_dir_option
@click.option("--dry-run", is_flag=True, help="Show the diff only; change nothing.")
@click.option("--force", is_flag=True, help="Apply even if the files changed since autotune.")
@click.option(
    "--min-change",
    default="0%",
    show_default=True,
    help="Skip limits that change by less than this (10%).",
)
@click.option(
    "--only",
    type=click.Choice(["projects", "agents"]),
    help="Only workspace.json (projects) or only the agents.json files.",
)
@click.option("--rollback", is_flag=True, help="Restore the files of the last backup.")
def apply_tuning(
    suggestions: Path | None,
    workspace_dir: Path | None,
    dry_run: bool,
    force: bool,
    min_change: str,
    only: str | None,
    rollback: bool,
) -> None:
    """Apply a suggestions file (from autotune) to workspace.json and the agents.json files.

    The files are those of the workspace given, resolved from its own workspace.json; a
    suggestions file made for another workspace (another name, other projects) is refused.
    The patched files are validated first, keeping key order, indent and unknown keys; then
    all are written in one transaction (the originals in <workspace-dir>/tuning-backups/<time>/),
    which the next apply-tuning or --rollback finishes or undoes if it was killed. Refused
    when a file changed since the suggestions were made (unless --force) and for files with
    comments.

    \b
    Example:
      devloop workspace apply-tuning suggestions.json --workspace-dir .devloop-workspace --dry-run
      devloop workspace apply-tuning suggestions.json --min-change 10% --only projects
      devloop workspace apply-tuning --rollback
    """
    from devloop.tune import apply_tuning as run_apply
    from devloop.tune import rollback as run_rollback

    if rollback and suggestions is not None:
        raise click.UsageError("--rollback takes no SUGGESTIONS file")
    if not rollback and suggestions is None:
        raise click.UsageError("missing the SUGGESTIONS file (or give --rollback)")
    fraction = percent_value(min_change, "--min-change") or 0.0
    folder = resolve_workspace_dir(workspace_dir)

    def recovered(line: str) -> None:
        click.echo(f"Recovered: {line}", err=True)

    if suggestions is None:
        backup, restored = run_rollback(folder, on_recovered=recovered)
        for path in restored:
            click.echo(f"Restored {path} from {backup}")
        return
    result = run_apply(
        suggestions,
        folder,
        dry_run=dry_run,
        force=force,
        min_change=fraction,
        only=only,
        on_recovered=recovered,
    )
    for line in result.skipped:
        click.echo(f"Skipped {line}", err=True)
    if not result.changes:
        click.echo("Nothing to change.")
        return
    if dry_run:
        click.echo("".join(change.diff() for change in result.changes), nl=False)
        return
    for change in result.changes:
        click.echo(f"Wrote {change.path}")
    click.echo(f"Backup: {result.backup} (undo with `devloop workspace apply-tuning --rollback`)")
