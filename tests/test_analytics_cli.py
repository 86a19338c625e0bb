"""Every report command in every format, and the bad-input messages, through the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from devloop.cli import cli
from tests.test_analytics_reports import GB, MB, build_store

pytestmark = pytest.mark.realtime


@pytest.fixture
def ws(tmp_path: Path) -> str:
    return str(build_store(tmp_path / ".devloop-workspace"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


REPORTS = [
    ["workspace", "analytics", "peak-usage"],
    ["workspace", "analytics", "bottlenecks", "--threshold", "80"],
    ["workspace", "analytics", "efficiency"],
    ["workspace", "health", "--detailed", "--memory-analysis", "--min-life", "5s"],
    ["audit", "query", "--agent", "*", "--metric", "memory"],
    ["workspace", "metrics", "--interval", "5s"],
    ["workspace", "metrics", "--detailed", "--compare-config"],
    ["workspace", "sql", "SELECT project, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1"],
]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("args", REPORTS, ids=[" ".join(a[:3]) for a in REPORTS])
def test_every_report_in_every_format(ws: str, args: list[str], fmt: str) -> None:
    code, out, err = run(*args, "--workspace-dir", ws, "--format", fmt)
    assert code == 0, err
    assert out.strip()
    if fmt == "json":
        json.loads(out)
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)


def test_metrics_table_looks_like_the_guide(ws: str) -> None:
    code, out, _ = run("workspace", "metrics", "--workspace-dir", ws)
    assert code == 0
    lines = out.splitlines()
    assert lines[:9] == [
        "Workspace Resource Usage",
        "═════════════════════════",
        "CPU:        15.0% / 60% limit",
        "Memory:     278MB / 2048MB limit",
        "",
        "Per-Project:",
        "api:  10.0% / 30% limit   150MB / 1024MB",
        "web:   5.0% / 30% limit   128MB / 1024MB",
        "",
    ]
    assert lines[9].startswith("Tick: 2026-01-05 10:00:09 UTC (")
    assert "no collector is running" in lines[9]


def test_metrics_json_keys(ws: str) -> None:
    _, out, _ = run("workspace", "metrics", "--workspace-dir", ws, "--format", "json")
    data = json.loads(out)
    assert data["workspace"]["cpu_limit"] == 60.0
    assert data["projects"]["api"] == {
        "cpu_percent": 10.0,
        "memory_mb": 150.0,
        "cpu_limit": 30.0,
        "memory_limit_mb": 1024.0,
        "memory_bytes": 150 * MB,
        "memory_limit_bytes": GB,
        "processes": 2,
    }
    assert data["stale"] is True


def test_export_csv_exact(ws: str, tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    code, out, err = run(
        "workspace",
        "metrics",
        "--workspace-dir",
        ws,
        "--format",
        "csv",
        "--start",
        "2026-01-05T10:00:00Z",
        "--interval",
        "5s",
        "--output",
        str(target),
    )
    assert code == 0 and out == "" and err == f"Wrote {target}\n"
    assert target.read_text() == (
        "interval_start,project,ticks,cpu_avg_percent,cpu_max_percent,memory_max_bytes,"
        "fds_max,threads_max\n"
        "2026-01-05T10:00:00Z,api,5,40.0,60.0,314572800,30,6\n"
        "2026-01-05T10:00:00Z,web,5,5.0,5.0,67108864,14,2\n"
        "2026-01-05T10:00:05Z,api,5,10.0,10.0,157286400,30,6\n"
        "2026-01-05T10:00:05Z,web,5,15.0,30.0,134217728,49,10\n"
    )


def test_peak_usage_json_exact(ws: str) -> None:
    _, out, _ = run(
        "workspace",
        "analytics",
        "peak-usage",
        "--workspace-dir",
        ws,
        "--format",
        "json",
        "--project",
        "api",
        "--agent",
        "tests",
    )
    data = json.loads(out)
    assert data["range"]["start"] == "2026-01-05T10:00:00Z"
    assert data["peaks"][0] == {
        "scope": "workspace",
        "project": None,
        "agent": None,
        "ticks": 10,
        "cpu_peak_percent": 50.0,
        "cpu_peak_at": "2026-01-05T10:00:02Z",
        "cpu_p95_percent": 50.0,
        "cpu_avg_percent": 15.0,
        "memory_peak_bytes": 200 * MB,
        "memory_peak_at": "2026-01-05T10:00:02Z",
        "fds_peak": 20,
        "threads_peak": 4,
    }


def test_bottlenecks_table_and_json(ws: str) -> None:
    code, out, _ = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", ws, "--min-duration", "3s"
    )
    assert code == 0
    assert "api/tests 83%; api/linter 17%" in out
    assert "web/tests" not in out  # 2 s: shorter than --min-duration
    _, out, _ = run(
        "workspace",
        "analytics",
        "bottlenecks",
        "--workspace-dir",
        ws,
        "--format",
        "json",
        "--resource",
        "cpu",
    )
    data = json.loads(out)
    assert [(i["rank"], i["project"], i["duration_seconds"]) for i in data["intervals"]] == [
        (1, "api", 3.0),
        (2, None, 3.0),
        (3, "web", 2.0),
    ]
    assert data["intervals"][0]["drivers"][0] == {
        "project": "api",
        "agent": "tests",
        "share_percent": 83.33,  # percents in JSON keep 2 decimals
    }


def test_efficiency_output_json_file(ws: str, tmp_path: Path) -> None:
    target = tmp_path / "efficiency-report.json"
    code, _, _ = run(
        "workspace", "analytics", "efficiency", "--workspace-dir", ws, "--output", str(target)
    )
    assert code == 0
    data = json.loads(target.read_text())
    assert data["workspace"]["cpu_allocated_percent"] == 60.0
    assert data["projects"][0]["pauses"] == 1


def test_audit_csv_exact(ws: str) -> None:
    _, out, _ = run(
        "audit",
        "query",
        "--workspace-dir",
        ws,
        "--agent",
        "linter",
        "--metric",
        "fds",
        "--format",
        "csv",
    )
    assert out == (
        "project,agent,metric,unit,ticks,processes,avg,min,p50,p95,max,max_at\n"
        "api,linter,fds,count,10,1,10.0,10.0,10.0,10.0,10.0,2026-01-05T10:00:00Z\n"
        "web,linter,fds,count,10,1,14.5,10.0,14.5,18.55,19.0,2026-01-05T10:00:09Z\n"
    )


def test_metrics_compare(ws: str, tmp_path: Path) -> None:
    from devloop.analytics import summarise

    summary = summarise(ws)
    base = json.loads(json.dumps(summary))
    base["system"]["cpu_percent"]["avg"] = 20.0
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "a.json").write_text(json.dumps(summary))
    code, out, err = run(
        "workspace",
        "metrics",
        "compare",
        str(tmp_path / "b.json"),
        str(tmp_path / "a.json"),
        "--format",
        "csv",
    )
    assert code == 0, err
    assert "system,cpu_percent,avg,20.0,25.0,5.0\n" in out
    code, out, _ = run(
        "workspace", "metrics", "compare", str(tmp_path / "b.json"), str(tmp_path / "a.json")
    )
    assert code == 0 and "cpu_percent" in out
    (tmp_path / "x.json").write_text("{}")
    code, _, err = run(
        "workspace", "metrics", "compare", str(tmp_path / "x.json"), str(tmp_path / "a.json")
    )
    assert code == 1
    assert err == (
        f"Error: {tmp_path / 'x.json'}: not a devloop metrics summary "
        '(no "kind": "devloop-metrics-summary")\n'
    )


@pytest.mark.slow
def test_metrics_baseline_records_the_machine_and_writes_a_summary(tmp_path: Path) -> None:
    """``metrics --baseline --duration N --output F`` runs the real Recorder for N seconds over
    every process (a tagged busy loop counts for its project, the rest as other)."""
    import os
    import subprocess
    import sys
    from datetime import datetime

    from devloop.analytics import compare_summaries, read_summary

    # A project name no other process on this shared machine is tagged with (a --all
    # recording sees every process, other test runs' tagged burners included).
    project = f"baseline-{os.getpid()}"
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (tmp_path / "api").mkdir()
    (folder / "workspace.json").write_text(
        json.dumps(
            {
                "projects": [{"name": project, "path": "api"}],
                "global": {"resourceLimits": {"checkInterval": 0.2}},
            }
        )
    )
    env = {**os.environ, "DEVLOOP_PROJECT": project, "DEVLOOP_AGENT": "burner"}
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    output = tmp_path / "baseline.json"
    try:
        code, out, err = run(
            "workspace", "metrics", "--baseline", "--duration", "2",
            "--output", str(output), "--workspace-dir", str(folder),
        )  # fmt: skip
    finally:
        burner.kill()
        burner.wait()
    assert code == 0, err
    assert "Recording a baseline for 2s" in err
    summary = read_summary(output)
    start = datetime.fromisoformat(summary["start"])
    end = datetime.fromisoformat(summary["end"])
    assert (end - start).total_seconds() >= 2.0
    assert summary["ticks"] >= 2
    assert summary["interval_seconds"] == pytest.approx(0.2, rel=0.5)
    assert summary["host"]["cores"] == os.cpu_count()
    assert summary["host"]["memory_total_bytes"] > 0
    system_cpu = summary["system"]["cpu_percent"]
    assert 0.0 <= system_cpu["avg"] <= system_cpu["max"] <= 100.0 + 1e-6
    assert summary["system"]["memory_used_bytes"]["max"] > 0
    assert set(summary["projects"]) == {project}
    api = summary["projects"][project]
    assert api["processes"]["max"] == 1.0  # the burner
    assert api["cpu_percent"]["max"] > 0
    assert summary["other"]["processes"]["max"] >= 1  # this test's own process, at least
    same = compare_summaries(summary, summary)
    assert same.height > 0
    assert same["difference"].drop_nulls().abs().max() == 0


def test_range_label_with_an_open_end_names_the_newest_tick(ws: str) -> None:
    code, out, _ = run("workspace", "analytics", "peak-usage", "--workspace-dir", ws)
    assert code == 0
    assert out.splitlines()[0] == "Range: 2026-01-05 10:00:00 UTC .. 2026-01-05 10:00:09 UTC"
    code, out, _ = run(
        "workspace", "analytics", "peak-usage", "--workspace-dir", ws,
        "--end", "2026-01-05T10:00:05.5Z",
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[0] == "Range: 2026-01-05 10:00:00 UTC .. 2026-01-05 10:00:05.5 UTC"


def test_metrics_help_shows_options_and_example() -> None:
    code, out, _ = run("workspace", "metrics", "--help")
    assert code == 0
    for text in (
        "--detailed",
        "--compare-config",
        "--interval",
        "--baseline",
        "Example",
        "compare",
    ):
        assert text in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-02-01", "--end", "2026-02-02T00:00Z"], None),
        (["--project", "shop"], "Error: unknown project 'shop' (known projects: api, web)\n"),
        (["--agent", "mypy"], "Error: unknown agent 'mypy' (known agents: linter, tests)\n"),
        (
            ["--start", "next tuesday"],
            "Error: Invalid value for --start: cannot read the time "
            "'next tuesday': expected a time like '2 hours ago', 'yesterday 09:00', 'today', "
            "'now', '2026-01-05T09:00' or a duration like '30m'\n",
        ),
        (
            ["--period", "soon"],
            "Error: Invalid value for --period: not a duration: 'soon' "
            "(expected something like 30s, 5m, 24h, 7d)\n",
        ),
    ],
)
def test_bad_input_messages(ws: str, args: list[str], message: str | None) -> None:
    code, out, err = run("workspace", "analytics", "peak-usage", "--workspace-dir", ws, *args)
    assert code in (1, 2) and out == ""
    if message is None:  # local midnight: only the message's shape is fixed
        assert err.startswith("Error: no samples between 2026-0")
        assert err.endswith("; record some with `devloop workspace collect`\n")
    else:
        assert err.endswith(message)


def test_empty_range_message_exact(ws: str) -> None:
    code, _, err = run(
        "audit", "query", "--workspace-dir", ws, "--start", "2026-02-01T00:00:00Z", "--period", "1h"
    )
    assert code == 1
    assert err == (
        "Error: no samples between 2026-02-01 00:00:00 UTC and 2026-02-01 01:00:00 "
        "UTC; record some with `devloop workspace collect`\n"
    )


def test_corrupt_file_warns_and_the_report_runs(ws: str) -> None:
    bad = Path(ws) / "metrics" / "samples" / "date=2026-01-05" / "hour=10" / "w-broken.parquet"
    bad.write_bytes(b"garbage")
    code, out, err = run(
        "workspace", "analytics", "peak-usage", "--workspace-dir", ws, "--format", "json"
    )
    assert code == 0
    assert err.startswith(f"Warning: skipping {bad}: not a readable Parquet file")
    assert json.loads(out)["peaks"][0]["cpu_peak_percent"] == 65.0
