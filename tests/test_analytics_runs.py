"""``analytics runs``: launched runs, estimated runs and the per-agent summary, on hand-built
stores with exact expected numbers.

The launched store (``launched``), one ``runs`` row per run, from 2026-01-05 10:00:00 UTC::

    run  project/agent  trigger  started  duration  end          cpu (user+system)  max RSS
    r1   api/tests      manual    0 s      2.5 s    exit 0       1.25 + 0.25        100MB
    r2   api/tests      watch    10 s      4.0 s    exit 1       2.0 + 0.5          200MB
    r3   api/linter     watch    20 s      1.0 s    exit 0       0.5 + 0.25          50MB
    r4   web/build      stress   30 s     10.0 s    signal 9     4.0 + 1.0          300MB
    r5   api/tests      manual   50 s      6.0 s    incomplete   -                   -
    r6   api/tests      manual   60 s      1.5 s    exit 0       1.0 + 0.0          150MB

The estimated store (``ticked``): collector ticks every 2 s (t = 0, 2, ... 38 s); cores per tick
of the processes no launched run owns::

    t (s)           2     4     6    ...   14    16   18   ...   24    26
    api/lsp        0.5   0.75  1.0         1.5   -    0.5
    web/linter                                                  0.25  0.25

api/lsp's 8 s gap after t=6 (more than two intervals) ends a span; its 4 s gap after t=14 (two
intervals) does not. api/tests has a process at t=2..10 too, but it belongs to the launched run
r-live (its ``processes`` row carries the run id), so it makes no estimated run.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from devloop.analytics import run_summary, runs
from devloop.analytics.runs import RUN_COLUMNS, SUMMARY_COLUMNS
from devloop.analytics.timerange import TimeRange
from devloop.cli import cli
from devloop.errors import UsageError
from devloop.store import write_table
from devloop.store.columns import PROCESSES, RUNS, SAMPLES

T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
MB = 1024**2


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(seconds: float) -> int:
    """Microseconds since the epoch of ``at(seconds)``."""
    return (at(seconds) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def row(columns: Any, **values: Any) -> dict[str, Any]:
    """A full row of a table: every column, null unless given (pyarrow reads the columns of a
    list of dicts from the first one)."""
    names = [column.name for column in columns]
    unknown = set(values) - set(names)
    assert not unknown, unknown
    return {name: values.get(name) for name in names}


def run_row(
    run_id: str,
    project: str,
    agent: str,
    trigger: str,
    started: float,
    ended: float,
    *,
    status: str = "complete",
    exit_code: int | None = 0,
    signal: int | None = None,
    cpu: tuple[float, float] | None = None,
    max_rss: int | None = None,
    **more: Any,
) -> dict[str, Any]:
    return row(
        RUNS,
        ts=at(started),
        host="h1",
        run_id=run_id,
        project=project,
        agent=agent,
        trigger=trigger,
        status=status,
        command=f"{agent} --all",
        started=at(started),
        ended=at(ended),
        exit_code=exit_code,
        signal=signal,
        cpu_user_seconds=cpu[0] if cpu else None,
        cpu_system_seconds=cpu[1] if cpu else None,
        max_rss_bytes=max_rss,
        **more,
    )


LAUNCHED = [
    run_row("r1", "api", "tests", "manual", 0, 2.5, cpu=(1.25, 0.25), max_rss=100 * MB,
            queued=at(-0.5), queue_wait_seconds=0.5, paused_seconds=0.25, throttled_seconds=0.0,
            peak_cores=1.5, peak_rss_bytes=120 * MB, ticks=2, tick_cpu_seconds=1.0,
            log_path="/tmp/r1.log"),
    run_row("r2", "api", "tests", "watch", 10, 14, exit_code=1, cpu=(2.0, 0.5), max_rss=200 * MB),
    run_row("r3", "api", "linter", "watch", 20, 21, cpu=(0.5, 0.25), max_rss=50 * MB),
    run_row("r4", "web", "build", "stress", 30, 40, exit_code=None, signal=9, cpu=(4.0, 1.0),
            max_rss=300 * MB),
    run_row("r5", "api", "tests", "manual", 50, 56, status="incomplete", exit_code=None),
    run_row("r6", "api", "tests", "manual", 60, 61.5, cpu=(1.0, 0.0), max_rss=150 * MB),
]  # fmt: skip


@pytest.fixture
def launched(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    write_table(folder / "metrics", "runs", pa.Table.from_pylist(LAUNCHED))
    return folder


def ids(frame: pl.DataFrame) -> list[str]:
    return frame["run_id"].to_list()


# --- launched runs ---------------------------------------------------------------------------


def test_one_row_per_launched_run_with_exact_figures(launched: Path) -> None:
    frame = runs(launched)
    assert frame.columns == list(RUN_COLUMNS)
    assert ids(frame) == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert frame["duration_seconds"].to_list() == [2.5, 4.0, 1.0, 10.0, 6.0, 1.5]
    assert frame["cpu_seconds"].to_list() == [1.5, 2.5, 0.75, 5.0, None, 1.0]
    assert frame["failed"].to_list() == [False, True, False, True, True, False]
    assert frame["estimated"].to_list() == [False] * 6
    assert frame.row(0, named=True) == {
        "run_id": "r1", "host": "h1", "project": "api", "agent": "tests", "trigger": "manual",
        "status": "complete", "command": "tests --all", "started": at(0), "ended": at(2.5),
        "duration_seconds": 2.5, "exit_code": 0, "signal": None, "failed": False,
        "queue_wait_seconds": 0.5, "paused_seconds": 0.25, "throttled_seconds": 0.0,
        "cpu_seconds": 1.5, "cpu_user_seconds": 1.25, "cpu_system_seconds": 0.25,
        "max_rss_bytes": 100 * MB, "peak_cores": 1.5, "peak_rss_bytes": 120 * MB, "ticks": 2,
        "log_path": "/tmp/r1.log", "estimated": False,
    }  # fmt: skip
    r4 = frame.row(3, named=True)
    assert (r4["exit_code"], r4["signal"], r4["status"]) == (None, 9, "complete")
    r5 = frame.row(4, named=True)
    assert (r5["status"], r5["cpu_user_seconds"], r5["max_rss_bytes"]) == ("incomplete", None, None)


def test_filters_by_name_trigger_failure_and_length(launched: Path) -> None:
    assert ids(runs(launched, trigger="watch")) == ["r2", "r3"]
    assert ids(runs(launched, project="web")) == ["r4"]
    assert ids(runs(launched, agent="lint*")) == ["r3"]
    assert ids(runs(launched, project=["web", "api"], agent="tests")) == ["r1", "r2", "r5", "r6"]
    assert ids(runs(launched, failed=True)) == ["r2", "r4", "r5"]
    assert ids(runs(launched, failed=False)) == ["r1", "r3", "r6"]
    # the N longest, longest first
    assert ids(runs(launched, slowest=2)) == ["r4", "r5"]
    assert ids(runs(launched, slowest=3, failed=True)) == ["r4", "r5", "r2"]
    assert ids(runs(launched, slowest=2, project="api", trigger="manual")) == ["r5", "r1"]
    assert ids(runs(launched, trigger="rule")) == []


def test_the_range_is_by_start_and_a_period_ends_at_the_newest_start(launched: Path) -> None:
    assert ids(runs(launched, TimeRange(start=at(10), end=at(50)))) == ["r2", "r3", "r4"]
    # the newest run started at 60 s: the last 15 s are (45 s, 60 s]
    assert ids(runs(launched, TimeRange(period=timedelta(seconds=15)))) == ["r5", "r6"]
    assert ids(runs(launched, TimeRange(start=at(61)))) == []


def test_bad_filters_are_refused(launched: Path) -> None:
    with pytest.raises(UsageError, match=r"^unknown trigger 'cron' \(use manual, watch, "
                       r"stress, rule\)$"):  # fmt: skip
        runs(launched, trigger="cron")
    with pytest.raises(UsageError, match=r"^--slowest must be at least 1, not 0$"):
        runs(launched, slowest=0)
    with pytest.raises(UsageError, match=r"^unknown project 'nope' \(known projects: api, web\)$"):
        run_summary(launched, project="nope")


def test_an_empty_store_has_no_runs(tmp_path: Path) -> None:
    frame = runs(tmp_path)
    assert frame.columns == list(RUN_COLUMNS) and frame.is_empty()
    assert frame.schema["started"] == pl.Datetime("us", "UTC")
    summary = run_summary(tmp_path)
    assert summary.columns == list(SUMMARY_COLUMNS) and summary.is_empty()


def test_summary_per_agent_with_percentiles_by_hand(launched: Path) -> None:
    summary = run_summary(launched)
    assert summary.columns == list(SUMMARY_COLUMNS)
    assert summary.rows() == [
        ("api", "linter", 1, 0, 0, 1.0, 1.0, 0.75, 0.75, 50 * MB),
        # durations 1.5 2.5 4 6: p50 = (2.5 + 4) / 2, p95 at rank 0.95 x 3 = 2.85 between
        # 4 and 6; CPU 1.0 1.5 2.5 (r5's unknown): mean 5 / 3, p95 at rank 1.9 between 1.5
        # and 2.5
        ("api", "tests", 4, 2, 0, 3.25, pytest.approx(4 + 0.85 * 2), pytest.approx(5 / 3),
         pytest.approx(1.5 + 0.9 * 1.0), 200 * MB),
        ("web", "build", 1, 1, 0, 10.0, 10.0, 5.0, 5.0, 300 * MB),
    ]  # fmt: skip
    # the same filters as the runs: the failed runs of api/tests are r2 and r5
    failed = run_summary(launched, failed=True, agent="tests")
    assert failed.rows() == [("api", "tests", 2, 2, 0, 5.0, pytest.approx(4 + 0.95 * 2), 2.5,
                              2.5, 200 * MB)]  # fmt: skip


# --- estimated runs --------------------------------------------------------------------------


@pytest.fixture
def ticked(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    root = folder / "metrics"
    write_table(
        root,
        "system",
        pa.Table.from_pylist([{"ts": at(t), "host": "h1", "cores": 4} for t in range(0, 40, 2)]),
    )
    lsp = [(2, 300, 0.5, 100), (4, 300, 0.5, 100), (4, 301, 0.25, 50), (6, 300, 1.0, 120),
           (14, 300, 1.5, 100), (18, 300, 0.5, 90)]  # fmt: skip
    samples = [
        row(SAMPLES, ts=at(t), host="h1", project="api", agent="lsp", pid=pid,
            start_time=at(-100), cpu_cores=cores, rss_bytes=rss * MB)
        for t, pid, cores, rss in lsp
    ] + [
        row(SAMPLES, ts=at(t), host="h1", project="web", agent="linter", pid=500,
            start_time=at(23), cpu_cores=0.25, rss_bytes=30 * MB)
        for t in (24, 26)
    ] + [
        row(SAMPLES, ts=at(t), host="h1", project="api", agent="tests", pid=400,
            start_time=at(1), cpu_cores=2.0, rss_bytes=500 * MB)
        for t in (2, 4, 6, 8, 10)
    ]  # fmt: skip
    write_table(root, "samples", pa.Table.from_pylist(samples))
    # pid 301 has no processes row: a process nobody launched
    processes = [
        row(PROCESSES, ts=at(2), host="h1", pid=300, start_time=at(-100), project="api",
            agent="lsp"),
        row(PROCESSES, ts=at(24), host="h1", pid=500, start_time=at(23), project="web",
            agent="linter"),
        row(PROCESSES, ts=at(2), host="h1", pid=400, start_time=at(1), project="api",
            agent="tests", run_id="r-live"),
    ]  # fmt: skip
    write_table(root, "processes", pa.Table.from_pylist(processes))
    live = run_row("r-live", "api", "tests", "manual", 1, 10.5, cpu=(9.0, 1.0), max_rss=600 * MB)
    write_table(root, "runs", pa.Table.from_pylist([live]))
    return folder


def test_estimated_runs_are_spans_of_ticks_split_at_gaps(ticked: Path) -> None:
    frame = runs(ticked)
    assert ids(frame) == [
        f"est-api-lsp-{us(0)}",
        "r-live",
        f"est-api-lsp-{us(12)}",
        f"est-web-linter-{us(22)}",
    ]
    columns = ["trigger", "status", "started", "ended", "duration_seconds", "cpu_seconds",
               "peak_cores", "peak_rss_bytes", "ticks", "max_rss_bytes", "failed",
               "estimated"]  # fmt: skip
    # a span starts one interval (2 s) before its first tick; its CPU is the cores x 2 s
    assert frame.select(columns).rows() == [
        ("rule", "estimated", at(0), at(6), 6.0, 4.5, 1.0, 150 * MB, 3, None, False, True),
        ("manual", "complete", at(1), at(10.5), 9.5, 10.0, None, None, None, 600 * MB, False,
         False),
        ("rule", "estimated", at(12), at(18), 6.0, 4.0, 1.5, 100 * MB, 2, None, False, True),
        ("rule", "estimated", at(22), at(26), 4.0, 1.0, 0.25, 30 * MB, 2, None, False, True),
    ]  # fmt: skip
    assert frame.filter(pl.col("estimated"))["command"].to_list() == [None, None, None]


def test_estimated_runs_follow_the_filters_and_the_range(ticked: Path) -> None:
    assert ids(runs(ticked, estimated=False)) == ["r-live"]
    assert ids(runs(ticked, trigger="rule", project="web")) == [f"est-web-linter-{us(22)}"]
    assert ids(runs(ticked, trigger="manual")) == ["r-live"]
    assert ids(runs(ticked, failed=True)) == []
    assert ids(runs(ticked, slowest=1)) == ["r-live"]
    # the range cuts a span: only api/lsp's tick at 18 s is in [16 s, 40 s)
    cut = runs(ticked, TimeRange(start=at(16), end=at(40)))
    assert cut.select("run_id", "started", "cpu_seconds").rows() == [
        (f"est-api-lsp-{us(16)}", at(16), 1.0),
        (f"est-web-linter-{us(22)}", at(22), 1.0),
    ]
    summary = run_summary(ticked, agent="lsp")
    # durations 6 and 6; CPU 4.5 and 4.0: mean 4.25, p95 = 4.0 + 0.95 x 0.5
    assert summary.rows() == [("api", "lsp", 2, 0, 2, 6.0, 6.0, 4.25, pytest.approx(4.475), None)]


# --- the command -----------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["workspace", "analytics", "runs", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_command_in_json_csv_and_table(launched: Path) -> None:
    ws = str(launched)
    code, out, err = invoke("--workspace-dir", ws, "--format", "json", "--slowest", "2")
    assert code == 0, err
    data = json.loads(out)
    assert [(r["run_id"], r["duration_seconds"], r["failed"]) for r in data["runs"]] == [
        ("r4", 10.0, True),
        ("r5", 6.0, True),
    ]
    assert data["runs"][0]["started"] == "2026-01-05T10:00:30Z"
    assert list(data["runs"][0]) == list(RUN_COLUMNS)
    code, out, err = invoke("--workspace-dir", ws, "--format", "json", "--summary",
                            "--project", "web", "--failed")  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {
        "summary": [
            {"project": "web", "agent": "build", "runs": 1, "failed": 1, "estimated": 0,
             "duration_p50_seconds": 10.0, "duration_p95_seconds": 10.0,
             "cpu_mean_seconds": 5.0, "cpu_p95_seconds": 5.0, "max_rss_bytes": 300 * MB}
        ]
    }  # fmt: skip
    code, out, err = invoke("--workspace-dir", ws, "--format", "csv", "--trigger", "watch")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(RUN_COLUMNS)
    assert [r[0] for r in rows[1:]] == ["r2", "r3"]
    code, out, err = invoke("--workspace-dir", ws, "--agent", "tests", "--start",
                            "2026-01-05T10:00:00Z", "--end", "2026-01-05T10:00:05Z")  # fmt: skip
    assert code == 0, err
    header, line = out.splitlines()
    assert header.split() == ["started", "project", "agent", "trigger", "status", "exit",
                              "signal", "duration", "queued", "cpu", "peak_cores", "max_rss",
                              "peak_rss", "run_id"]  # fmt: skip
    assert line.split() == ["2026-01-05", "10:00:00", "api", "tests", "manual", "complete", "0",
                            "2.5s", "0.5s", "1.5s", "1.5", "100MB", "120MB", "r1"]  # fmt: skip


def test_the_command_table_of_the_summary_and_of_nothing(ticked: Path) -> None:
    code, out, err = invoke("--workspace-dir", str(ticked), "--summary")
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["project", "agent", "runs", "failed", "estimated", "duration_p50", "duration_p95",
         "cpu_mean", "cpu_p95", "max_rss"],
        ["api", "lsp", "2", "0", "2", "6.0s", "6.0s", "4.2s", "4.5s"],
        ["api", "tests", "1", "0", "0", "9.5s", "9.5s", "10.0s", "10.0s", "600MB"],
        ["web", "linter", "1", "0", "1", "4.0s", "4.0s", "1.0s", "1.0s"],
    ]  # fmt: skip
    code, out, _ = invoke("--workspace-dir", str(ticked))
    assert code == 0 and out.endswith(
        'Note: runs of trigger "rule" are estimated from the ticks (agents devloop did not '
        "launch); --no-estimated leaves them out\n"
    )
    code, out, _ = invoke("--workspace-dir", str(ticked), "--failed")
    assert (code, out) == (0, "No runs started in the range.\n")


def test_the_command_refuses_bad_input(launched: Path) -> None:
    code, _, err = invoke("--workspace-dir", str(launched), "--project", "nope")
    assert code == 1
    assert "Error: unknown project 'nope' (known projects: api, web)" in err
    code, _, err = invoke("--workspace-dir", str(launched), "--slowest", "0")
    assert code == 2 and "Invalid value for '--slowest': 0 is not in the range x>=1." in err
    code, _, err = invoke("--workspace-dir", str(launched), "--trigger", "cron")
    assert code == 2 and "Invalid value for '--trigger'" in err


def test_estimated_runs_read_the_agent_rollups_where_no_launched_process_ran(
    ticked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hour 10 (the ticked store) has a launched process: its estimated runs come from its raw
    samples less that process's. Hour 11 gets api/lsp ticks and none launched: its runs come
    from the hour's ``agent`` rollup. Same runs as from raw rows, in batches of any size; a
    rollup doubled shows in hour 11's run only (so it is what is read there, and only there)."""
    import importlib

    import pyarrow.parquet as pq

    from devloop.analytics import Store
    from devloop.store import write_rollups
    from devloop.store.db import ROLLUPS_DIR

    root = ticked / "metrics"
    hour = 3600
    write_table(
        root,
        "system",
        pa.Table.from_pylist(
            [{"ts": at(hour + t), "host": "h1", "cores": 4} for t in range(0, 40, 2)]
        ),
    )
    write_table(
        root,
        "samples",
        pa.Table.from_pylist([
            row(SAMPLES, ts=at(hour + t), host="h1", project="api", agent="lsp", pid=300,
                start_time=at(-100), cpu_cores=0.5, rss_bytes=80 * MB)
            for t in (4, 6, 8, 20)
        ]),
    )  # fmt: skip
    with Store(ticked) as store:
        store.use_rollups = False
        raw = runs(store)
    write_rollups(root)
    hours = {p.parent.name for p in (root / ROLLUPS_DIR / "agent").rglob("hour=*/*.parquet")}
    assert hours == {"hour=10", "hour=11"}
    assert runs(ticked).rows() == raw.rows()
    # an agent a batch (the module, not the function the package names ``runs``)
    monkeypatch.setattr(importlib.import_module("devloop.analytics.runs"), "BATCH_SAMPLES", 1)
    assert runs(ticked).rows() == raw.rows()
    assert run_summary(ticked).rows() == run_summary(ticked, estimated=True).rows()
    # hour 11: api/lsp's ticks at 4-8 s and at 20 s are two runs of 0.5 cores x 2 s a tick
    late = raw.filter(pl.col("started") >= at(hour)).select("run_id", "cpu_seconds", "ticks")
    assert late.rows() == [
        (f"est-api-lsp-{us(hour + 2)}", 3.0, 3),
        (f"est-api-lsp-{us(hour + 18)}", 1.0, 1),
    ]
    for entry in (root / ROLLUPS_DIR / "agent").rglob("*.parquet"):
        table = pq.read_table(entry)
        index = table.schema.get_field_index("cpu")
        doubled = pa.array(table.column("cpu").to_numpy() * 2, table.schema.field(index).type)
        pq.write_table(table.set_column(index, table.schema.field(index), doubled), entry)
    cpu = {r: c for r, c in runs(ticked).select("run_id", "cpu_seconds").rows()}
    assert cpu == {
        **{r: c for r, c in raw.select("run_id", "cpu_seconds").rows()},
        f"est-api-lsp-{us(hour + 2)}": 6.0,
        f"est-api-lsp-{us(hour + 18)}": 2.0,
    }
