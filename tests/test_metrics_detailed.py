"""``workspace metrics --detailed``: an agent without a process is ``idle`` in the data itself
(every output says the docs' word), and the profiles in force over the range are named with
their time span and the pool each set (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from devloop.analytics import workspace_metrics
from devloop.analytics.timerange import TimeRange
from devloop.cli import cli
from devloop.store import write_table
from tests.test_analytics_reports import GB, MB, at, build_store


def _limits(ts: int, profile: str | None, api: tuple[float, int], web: tuple[float, int]) -> list:
    """One write of the collector's limits: both projects and api's formatter (an agent that
    never ran)."""
    rows = [
        {"ts": at(ts), "host": "h1", "project": project, "agent": "", "cpu_limit_percent": cpu,
         "memory_limit_bytes": memory, "priority": 2, "strategy": "weighted",
         "profile": profile, "reason": "start" if ts < 0 else "profile"}
        for project, (cpu, memory) in (("api", api), ("web", web))
    ]  # fmt: skip
    rows.append({**rows[0], "agent": "formatter", "cpu_limit_percent": 5.0})
    return rows


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The tiny store of test_analytics_reports (ticks 0..9), recorded under the "idle"
    profile (20 % / 512MB) until tick 5, then "peak" (60 % / 2GB), rebalanced within the
    peak pool at tick 7; limits written after the newest tick are not in force."""
    folder = build_store(tmp_path / ".devloop-workspace", limits=False)
    rows = [
        *_limits(-60, "idle", (10.0, 256 * MB), (10.0, 256 * MB)),
        *_limits(5, "peak", (30.0, GB), (30.0, GB)),
        *_limits(7, "peak", (40.0, GB), (20.0, GB)),
        *_limits(60, None, (1.0, MB), (1.0, MB)),
    ]
    write_table(folder / "metrics", "limits", pa.Table.from_pylist(rows))
    return folder


def test_an_agent_without_a_process_is_idle_in_the_data_and_every_output(
    workspace: Path,
) -> None:
    view = workspace_metrics(workspace, detailed=True, now=at(10))
    assert view.agents is not None
    states = {(r["project"], r["agent"]): r["state"] for r in view.agents.iter_rows(named=True)}
    # api/formatter has a limit but no process; the others sleep at the newest tick
    assert states == {("api", "formatter"): "idle", ("api", "linter"): "idle",
                      ("api", "tests"): "idle", ("web", "linter"): "idle",
                      ("web", "tests"): "idle"}  # fmt: skip
    assert {row["state"] for row in view.to_json()["agents"]} == {"idle"}

    argv = ["workspace", "metrics", "--detailed", "--workspace-dir", str(workspace)]
    table = CliRunner().invoke(cli, argv)
    assert table.exit_code == 0, table.output
    formatter = [line for line in table.stdout.splitlines() if " formatter " in line]
    assert len(formatter) == 1 and formatter[0].endswith("  0  idle")
    assert "not running" not in table.stdout
    as_json = CliRunner().invoke(cli, [*argv, "--format", "json"])
    assert "not running" not in as_json.stdout
    assert {row["state"] for row in json.loads(as_json.stdout)["agents"]} == {"idle"}


def test_the_profiles_in_force_over_the_range_are_named_with_their_span_and_pool(
    workspace: Path,
) -> None:
    view = workspace_metrics(workspace, detailed=True, now=at(10))
    assert view.profiles is not None
    assert view.profiles.rows() == [
        ("idle", at(0), at(5), 20.0, 512 * MB),
        ("peak", at(5), at(9), 60.0, 2 * GB),
    ]
    # the workspace line is the pool in force at the tick: the last profile's
    assert (view.cpu_limit_percent, view.memory_limit_bytes) == (60.0, 2 * GB)
    assert view.to_json()["profiles"] == [
        {"profile": "idle", "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T10:00:05Z",
         "cpu_limit_percent": 20.0, "memory_limit_bytes": 512 * MB},
        {"profile": "peak", "start": "2026-01-05T10:00:05Z", "end": "2026-01-05T10:00:09Z",
         "cpu_limit_percent": 60.0, "memory_limit_bytes": 2 * GB},
    ]  # fmt: skip
    # a range that starts under "peak" shows only it, from the range's start
    later = workspace_metrics(workspace, TimeRange(start=at(6), end=at(10)), detailed=True)
    assert later.profiles is not None
    assert later.profiles.rows() == [("peak", at(6), at(9), 60.0, 2 * GB)]
    assert workspace_metrics(workspace, now=at(10)).profiles is None  # --detailed only

    argv = ["workspace", "metrics", "--detailed", "--workspace-dir", str(workspace)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text[text.index("Profiles in force") :].splitlines()[:5] == [
        "Profiles in force",
        "profile  start                end                  cpu_limit_percent  memory_limit_bytes",
        "idle     2026-01-05 10:00:00  2026-01-05 10:00:05              20.0%               512MB",
        "peak     2026-01-05 10:00:05  2026-01-05 10:00:09              60.0%              2048MB",
        "(the limits the collector recorded over the range; `workspace limits --at TIME` "
        "shows workspace.json's for a time of day)",
    ]
    data = json.loads(CliRunner().invoke(cli, [*argv, "--format", "json"]).stdout)
    assert [p["profile"] for p in data["profiles"]] == ["idle", "peak"]


def test_without_a_profile_the_base_pool_is_named(tmp_path: Path) -> None:
    folder = build_store(tmp_path / ".devloop-workspace")  # limits without a profile
    view = workspace_metrics(folder, detailed=True, now=at(10))
    assert view.profiles is not None
    assert view.profiles.rows() == [(None, at(0), at(9), 60.0, 2 * GB)]
    argv = ["workspace", "metrics", "--detailed", "--workspace-dir", str(folder)]
    text = CliRunner().invoke(cli, argv).stdout
    assert "\n(base pool)  2026-01-05 10:00:00  2026-01-05 10:00:09" in text
