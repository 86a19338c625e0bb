"""The autotune HTML report: one self-contained page (inline SVG, no script, no network).

Per project: CPU and memory per hour over the history (hourly mean and max of the per-tick
series) with the current and suggested limits drawn across, the distribution of the per-tick
CPU (histogram) and of the memory window peaks; then the backtest table for projects, agents and
the totals.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from devloop.units import MIB

if TYPE_CHECKING:
    from devloop.tune.suggestions import EntitySuggestion, Suggestions

_W, _H, _PAD = 720, 180, 40
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.flag{color:#b00}.note{background:#fff6e0;padding:.5em 1em;border-left:4px solid #e0a000}
svg{background:#fafafa;border:1px solid #ddd;margin:.3em 0}
"""


def _polyline(values: list[float], top: float, colour: str) -> str:
    if not values or top <= 0:
        return ""
    step = (_W - 2 * _PAD) / max(len(values) - 1, 1)
    points = " ".join(
        f"{_PAD + i * step:.1f},{_H - _PAD / 2 - (v / top) * (_H - _PAD):.1f}"
        for i, v in enumerate(values)
    )
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{points}"/>'


def _hline(value: float | None, top: float, colour: str, label: str) -> str:
    if value is None or top <= 0:
        return ""
    y = _H - _PAD / 2 - (value / top) * (_H - _PAD)
    return (
        f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
        f'stroke-dasharray="6,3"/><text x="{_W - _PAD + 2}" y="{y + 4:.1f}" font-size="10" '
        f'fill="{colour}">{html.escape(label)}</text>'
    )


def _chart(
    title: str,
    lines: list[tuple[list[float], str]],
    limits: list[tuple[float | None, str, str]],
    unit: str,
    span: tuple[str, str],
) -> str:
    values = [v for series, _ in lines for v in series] + [v for v, _, _ in limits if v]
    top = max(values, default=1.0) * 1.1 or 1.0
    body = "".join(_polyline(series, top, colour) for series, colour in lines)
    body += "".join(_hline(value, top, colour, label) for value, colour, label in limits)
    body += (
        f'<text x="{_PAD}" y="{_H - 4}" font-size="10">{html.escape(span[0])}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 4}" font-size="10" text-anchor="end">'
        f"{html.escape(span[1])}</text>"
    )
    return (
        f'<svg width="{_W + 60}" height="{_H}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{_PAD}" y="14" font-size="12">{html.escape(title)} (max {top / 1.1:.4g} '
        f"{unit})</text>{body}</svg>"
    )


def _distribution(entry: EntitySuggestion, suggestions: Suggestions) -> str:
    """Share of ticks per CPU level on a log scale (0.01 % to 100 %), square-root heights (so
    the rare busy ticks show next to the idle ones), both limits marked."""
    import math

    import numpy as np

    from devloop.tune.history import bin_upper

    entity = suggestions.history.entities[(entry.project, entry.agent)]
    if not len(entity.hist_bin):
        return ""
    low, high, buckets = -2.0, 2.0, 80
    values = np.log10(np.maximum(bin_upper(entity.hist_bin), 10**low))
    index = np.clip(((values - low) / (high - low) * buckets).astype(int), 0, buckets - 1)
    counts = np.bincount(index, weights=entity.hist_count, minlength=buckets)
    share = np.sqrt(counts / max(counts.sum(), 1))
    width = (_W - 2 * _PAD) / buckets
    top = float(share.max()) or 1.0
    bars = "".join(
        f'<rect x="{_PAD + i * width:.1f}" y="{_H - _PAD - c / top * (_H - 1.5 * _PAD):.1f}" '
        f'width="{max(width - 1, 1):.1f}" height="{c / top * (_H - 1.5 * _PAD):.1f}" '
        'fill="#89a"/>'
        for i, c in enumerate(share.tolist())
    )

    def x(value: float) -> float:
        position = (math.log10(max(value, 10**low)) - low) / (high - low)
        return _PAD + position * (_W - 2 * _PAD)

    marks = ""
    for value, colour in ((entry.current_cpu, "#c33"), (entry.cpu, "#2a2")):
        if value:
            marks += (
                f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{_PAD / 2}" '
                f'y2="{_H - _PAD}" stroke="{colour}" stroke-dasharray="4,2"/>'
            )
    ticks = "".join(
        f'<text x="{x(v) - 8:.1f}" y="{_H - _PAD / 2 + 2}" font-size="10">{v:g}%</text>'
        for v in (0.01, 0.1, 1, 10, 100)
    )
    title = f"{entry.name}: CPU per tick, % of the machine (log scale; height: sqrt of share)"
    return (
        f'<svg width="{_W + 60}" height="{_H}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{_PAD}" y="14" font-size="12">{html.escape(title)}</text>'
        f"{bars}{marks}{ticks}</svg>"
    )


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "MB":
        return f"{value / MIB:.0f}MB"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def _backtest_rows(name: str, data: dict[str, Any] | None, why: str | None = None) -> str:
    if not data or not data.get("folds") and "folds" in data:
        reason = (data or {}).get("reason") or why or "no runs recorded"
        return f"<tr><td>{html.escape(name)}</td><td colspan=14>{html.escape(reason)}</td></tr>"
    cells = []
    for side in ("current", "suggested"):
        s = data[side]
        cells += [
            _fmt(s["runs"]),
            _fmt(s["p50"], "x"),
            _fmt(s["p95"], "x"),
            _fmt(s["max"], "x"),
            _fmt(s["slowed_2x"]),
            _fmt(s["failed_memory"]),
            _fmt(s["reserved_cpu_percent"], "%"),
        ]
    return (
        "<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    )


def _slowdown_plot(name: str, backtest: dict[str, Any] | None) -> str:
    """p50 / p95 / max run slowdown, current (red) and suggested (green), on a log scale from
    1x to 100x (a run that never finished drawn at the top)."""
    import math

    if not backtest or not backtest.get("folds"):
        return ""
    width, height, left = 360, 90, 50
    bars = []
    for row, label in enumerate(("p50", "p95", "max")):
        for column, (side, colour) in enumerate((("current", "#c33"), ("suggested", "#2a2"))):
            value = backtest[side][label]
            length = 1.0 if value is None else min(math.log10(max(value, 1.0)) / 2, 1.0)
            y = 8 + row * 26 + column * 10
            text = "never" if value is None else f"{value:.2f}x"
            bars.append(
                f'<rect x="{left}" y="{y}" width="{max(length * (width - left - 60), 1):.1f}" '
                f'height="8" fill="{colour}"/><text x="{width - 55}" y="{y + 8}" '
                f'font-size="9">{text}</text>'
            )
        bars.append(f'<text x="4" y="{20 + row * 26}" font-size="10">{label}</text>')
    return (
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{html.escape(name)}: run slowdown, current red, suggested green (log, 1x to "
        f"100x)</title>{''.join(bars)}</svg>"
    )


def _pool_section(pool: dict[str, Any]) -> str:
    """The pool: current, needed and suggested, and when the projects need more than the
    largest pool allowed, how every run fared with the limits fit into it, overcommitted and
    shared by the dynamic strategy."""
    suggested = pool["suggested"] or pool["current"]
    how = " (overcommitCpu)" if pool["overcommit_cpu"] else ""
    if pool.get("dynamic"):
        weights = ", ".join(f"{html.escape(n)} {w:g}" for n, w in (pool["weights"] or {}).items())
        how = f" (dynamic, weights {weights})"
    text = (
        "<h2>Pool</h2><table><tr><th></th><th>CPU</th><th>memory</th></tr>"
        f"<tr><td>current</td><td>{_fmt(pool['current']['cpu_percent'], '%')}</td>"
        f"<td>{_fmt(pool['current']['memory_bytes'], 'MB')}</td></tr>"
        f"<tr><td>the projects' limits need</td><td>{_fmt(pool['needed']['cpu_percent'], '%')}"
        f"</td><td>{_fmt(pool['needed']['memory_bytes'], 'MB')}</td></tr>"
        f"<tr><td>suggested{how}</td>"
        f"<td>{_fmt(suggested['cpu_percent'], '%')}</td>"
        f"<td>{_fmt(suggested['memory_bytes'], 'MB')}</td></tr></table>"
    )
    if pool["compared"]:
        text += (
            "<p>The projects need more CPU than the largest pool allowed: every run replayed "
            "together with the limits fit into the pool by priority, overcommitted (each at "
            "its need, the pool enforced on their sum) and under the dynamic strategy (the "
            "pool shared in proportion to the needs, moved to the busy projects).</p><table>"
            "<tr><th>limits</th><th>worst project p95</th><th>mean project p95</th><th>runs "
            "failed or never finished</th></tr>"
        )
        chosen_mode = (
            "dynamic" if pool.get("dynamic") else "overcommit" if pool["overcommit_cpu"] else "fit"
        )
        for row in pool["compared"]:
            mode = row.get("limits") or ("overcommit" if row["overcommit_cpu"] else "fit")
            name = _POOL_MODE_NAMES[mode]
            text += (
                f"<tr><td>{name}{' (suggested)' if mode == chosen_mode else ''}</td>"
                f"<td>{_p95(row['worst_p95'])}</td><td>{_p95(row['mean_p95'])}</td>"
                f"<td>{row['failed_or_unfinished']}</td></tr>"
            )
        text += "</table>"
    learned = pool.get("learned_profile")
    if learned and learned.get("times"):
        verdict = "suggested" if learned["suggested"] else "not suggested"
        text += (
            f"<p>Learned time-of-day profile <code>{html.escape(learned['name'])}</code> "
            f"({verdict}): pool {learned['cpu_percent']:g}% at "
            f"{html.escape(', '.join(learned['times']))} (local time). "
            f"{html.escape(learned['why'])}.</p>"
        )
    elif learned:
        text += f"<p>No time-of-day profile learned: {html.escape(learned['why'])}.</p>"
    return text


_POOL_MODE_NAMES = {"fit": "fit into the pool", "overcommit": "overcommitted", "dynamic": "dynamic"}


def _p95(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}x"


def html_report(suggestions: Suggestions) -> str:
    """The whole report as one HTML document."""
    data = suggestions.to_json()
    history = suggestions.history
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>devloop autotune</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>devloop autotune</h1>",
        f"<p>History {html.escape(data['period']['start'])} to "
        f"{html.escape(data['period']['end'])} ({data['period']['hours']:g} h, one tick every "
        f"{data['period']['interval_seconds']:g} s). Generated "
        f"{html.escape(str(data['generated_at']))}. Red dashed: current limit; green: "
        "suggested.</p>",
    ]
    for note in data["notes"]:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append(
        "<h2>Summary</h2><table><tr><th>project / agent</th><th>CPU now</th>"
        "<th>CPU suggested</th><th>memory now</th><th>memory suggested</th>"
        "<th>confidence</th><th>flags</th></tr>"
    )
    for entry in [*suggestions.projects.values(), *suggestions.agents.values()]:
        flags = [k for k, v in entry.to_json()["flags"].items() if v and k != "censored"]
        parts.append(
            f"<tr><td>{html.escape(entry.name)}</td><td>{_fmt(entry.current_cpu, '%')}</td>"
            f"<td>{_fmt(entry.cpu, '%')}</td><td>{_fmt(entry.current_memory, 'MB')}</td>"
            f"<td>{_fmt(entry.memory_bytes, 'MB')}</td><td>{entry.confidence}</td>"
            f"<td class='flag'>{html.escape(', '.join(flags))}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_pool_section(data["pool"]))
    parts.append("<h2>Projects</h2>")
    ticks = history.system_ticks
    hours = [i for i in range(history.n_hours) if ticks[i] > 0]
    span = (
        (
            history.hour_start(hours[0]).strftime("%Y-%m-%d %H:00"),
            history.hour_start(hours[-1]).strftime("%Y-%m-%d %H:00 UTC"),
        )
        if hours
        else ("", "")
    )
    for entry in suggestions.projects.values():
        stats = history.entities[(entry.project, "")].stats
        with_ticks = ticks > 0
        cpu_mean = (stats["cpu_sum"][with_ticks] / ticks[with_ticks]).tolist()
        cpu_max = stats["cpu_max"][with_ticks].tolist()
        rss_max = (stats["rss_max"][with_ticks] / MIB).tolist()
        parts.append(f"<h3>{html.escape(entry.name)}</h3><p>{html.escape(entry.rationale)}</p>")
        parts.append(
            _chart(
                "CPU % of the machine per hour (mean blue, max grey)",
                [(cpu_max, "#bbb"), (cpu_mean, "#36c")],
                [(entry.current_cpu, "#c33", "now"), (entry.cpu, "#2a2", "suggested")],
                "%",
                span,
            )
        )
        parts.append(
            _chart(
                "memory per hour, MB (max)",
                [(rss_max, "#36c")],
                [
                    (entry.current_memory / MIB if entry.current_memory else None, "#c33", "now"),
                    (entry.memory_bytes / MIB if entry.memory_bytes else None, "#2a2", "suggested"),
                ],
                "MB",
                span,
            )
        )
        entry_json = data["projects"][entry.name]
        objective = entry_json["objective"] or {}
        peak = objective.get("runs_peak_memory_bytes")
        parts.append(
            f"<p>Run slowdown in the backtest (current red, suggested green); memory: runs' "
            f"peak {_fmt(peak, 'MB')} against the suggested limit "
            f"{_fmt(entry.memory_bytes, 'MB')}.</p>"
            + _slowdown_plot(entry.name, entry_json["backtest"])
        )
        parts.append(_distribution(entry, suggestions))
    header = (
        "<th>runs</th><th>p50</th><th>p95</th><th>max</th><th>slowed &gt;2x</th>"
        "<th>failed memory</th><th>reserved CPU</th>"
    )
    parts.append(
        "<h2>Backtest</h2><p>Walk-forward: fit on blocks 1..k, replay the runs of block k+1, "
        "each project or agent alone under its limit "
        f"({data['backtest']['block_hours']} h blocks, {data['backtest']['folds']} folds). The "
        "total: every run together, under the current configuration and the suggested one (pool "
        "included), in-sample.</p>"
        + (
            f"<p class='note'>{html.escape(data['backtest']['note'])}</p>"
            if data["backtest"]["note"]
            else ""
        )
        + "<table><tr><th rowspan=2>scope</th><th colspan=7>current limits</th>"
        "<th colspan=7>suggested limits</th></tr><tr>" + header * 2 + "</tr>"
    )
    totals = data["backtest"]["totals"]
    parts.append(_backtest_rows("total (projects)", {**totals, "folds": [1]}))
    for group in ("projects", "agents"):
        for name, entry_json in data[group].items():
            why = (entry_json["objective"] or {}).get("why")
            parts.append(_backtest_rows(name, entry_json["backtest"], why))
    parts.append("</table></body></html>\n")
    return "".join(parts)
