"""Readable defaults (issue 13): ``bottlenecks`` shows the 20 longest intervals (``--limit``,
``--all``, ``--min-duration``) and says how many it left out; numbers in the reports' JSON are
rounded to what they mean; ranges print as given, an open end as the newest tick.

On the hand-built store of ``test_analytics_reports`` (three CPU intervals at threshold 80: api
and the workspace 3 s, web 2 s) and on the sample recording."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from devloop.analytics import bottlenecks, peak_usage
from devloop.analytics.timerange import TimeRange
from devloop.cli import cli
from devloop.cli.render import round_to_units, to_json
from devloop.errors import UsageError
from devloop.store import write_table
from tests.helpers.stores import copy_without_cache
from tests.test_analytics_reports import MB, at, build_store

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / ".devloop-workspace"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return build_store(tmp_path / ".devloop-workspace")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def bottleneck_lines(ws: Path, *args: str) -> list[str]:
    code, out, err = run("workspace", "analytics", "bottlenecks", "--workspace-dir", str(ws), *args)
    assert code == 0, err
    return out.splitlines()


HEAD = [
    "Range: 2026-01-05 10:00:00 UTC .. 2026-01-05 10:00:09 UTC",
    "Threshold: 80% of the limit in force",
]
COLUMNS = (
    "rank  scope      project      resource  start                end                  "
    "duration  limit   peak  peak/limit  drivers"
)
API = (
    "   1  project    api          cpu       2026-01-05 10:00:02  2026-01-05 10:00:04        "
    "3s  30.0%  60.0%      200.0%  api/tests 83%; api/linter 17%"
)
WORKSPACE = (
    "   2  workspace  (workspace)  cpu       2026-01-05 10:00:02  2026-01-05 10:00:04        "
    "3s  60.0%  65.0%      108.3%  api/tests 77%; api/linter 15%; web/linter 8%"
)
WEB = (
    "   3  project    web          cpu       2026-01-05 10:00:07  2026-01-05 10:00:08        "
    "2s  30.0%  30.0%      100.0%  web/tests 83%; web/linter 17%"
)


# --- bottlenecks: how many, and what was left out ------------------------------------------


def test_every_interval_fits_under_the_default_limit(ws: Path) -> None:
    assert bottleneck_lines(ws) == [*HEAD, COLUMNS, API, WORKSPACE, WEB]
    assert bottleneck_lines(ws, "--all") == [*HEAD, COLUMNS, API, WORKSPACE, WEB]


def test_limit_says_how_many_were_left_out(ws: Path) -> None:
    assert bottleneck_lines(ws, "--limit", "2") == [
        *HEAD,
        COLUMNS,
        API,
        WORKSPACE,
        "2 of 3 intervals; --all shows every one",
    ]


def test_min_duration_says_how_many_were_shorter(ws: Path) -> None:
    assert bottleneck_lines(ws, "--min-duration", "3s") == [
        *HEAD,
        COLUMNS,
        API,
        WORKSPACE,
        "2 of 3 intervals; 1 shorter than 3s left out",
    ]
    assert bottleneck_lines(ws, "--min-duration", "3s", "--limit", "1")[-2:] == [
        "   1  project  api      cpu       2026-01-05 10:00:02  2026-01-05 10:00:04        "
        "3s  30.0%  60.0%      200.0%  api/tests 83%; api/linter 17%",
        "1 of 3 intervals; 1 shorter than 3s left out; --all shows the other 1",
    ]
    assert bottleneck_lines(ws, "--min-duration", "1m") == [
        *HEAD,
        "No bottleneck.",
        "0 of 3 intervals; 3 shorter than 1m left out",
    ]


def test_the_sample_recording_shows_the_20_longest(tmp_path: Path) -> None:
    sample = copy_without_cache(SAMPLE, tmp_path)
    lines = bottleneck_lines(sample)
    assert lines[0] == "Range: 2026-11-27 05:26:59 UTC .. 2026-11-27 05:48:19 UTC"
    assert [line.split()[0] for line in lines[3:-1]] == [str(rank) for rank in range(1, 21)]
    assert lines[-1] == "20 of 219 intervals; --all shows every one"
    assert len(bottleneck_lines(sample, "--all")) == 3 + 219
    code, out, _ = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", str(sample),
        "--min-duration", "5s", "--format", "json",
    )  # fmt: skip
    data = json.loads(out)
    assert (data["intervals_found"], len(data["intervals"])) == (219, 20)
    assert data["range"]["end"] == "2026-11-27T05:48:19Z"
    assert min(i["duration_seconds"] for i in data["intervals"]) >= 5


def test_bad_limits_are_refused(ws: Path) -> None:
    code, _, err = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", str(ws), "--limit", "2", "--all"
    )
    assert code == 2 and err.endswith("Error: give --limit or --all, not both\n")
    code, _, err = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", str(ws), "--limit", "0"
    )
    assert code == 2
    assert err.endswith("Error: Invalid value for '--limit': 0 is not in the range x>=1.\n")
    with pytest.raises(UsageError, match=r"^the limit must be at least 1, not 0$"):
        bottlenecks(ws, limit=0)


def test_the_library_keeps_every_interval_unless_limited(ws: Path) -> None:
    every = bottlenecks(ws, threshold=80)
    assert (every.found, every.lasting, every.limit, every.intervals.height) == (3, 3, None, 3)
    assert (every.shorter, every.beyond_limit) == (0, 0)
    first = bottlenecks(ws, threshold=80, limit=1)
    assert first.intervals.rows() == every.intervals.head(1).rows()  # drivers included
    assert (first.found, first.lasting, first.shorter, first.beyond_limit) == (3, 3, 0, 2)
    long = bottlenecks(ws, threshold=80, min_duration=3, limit=1)
    assert (long.found, long.lasting, long.shorter, long.beyond_limit) == (3, 2, 1, 1)
    assert long.to_json()["intervals_found"] == 3


# --- JSON numbers rounded to what they mean ------------------------------------------------


def test_bottlenecks_json_exact(ws: Path) -> None:
    code, out, _ = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", str(ws),
        "--limit", "2", "--format", "json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["range"] == {
        "start": "2026-01-05T10:00:00Z",
        "end": "2026-01-05T10:00:09Z",  # the newest tick, not 10:00:09.000001
        "interval_seconds": 1.0,
        "projects": ["api", "web"],
        "agents": None,
    }
    assert (data["threshold_percent"], data["min_duration_seconds"]) == (80.0, 0.0)
    assert data["intervals_found"] == 3
    assert data["intervals"][1] == {
        "rank": 2,
        "scope": "workspace",
        "project": None,
        "resource": "cpu",
        "start": "2026-01-05T10:00:02Z",
        "end": "2026-01-05T10:00:04Z",
        "ticks": 3,
        "duration_seconds": 3.0,
        "limit": 60.0,
        "peak": 65.0,
        "peak_percent_of_limit": 108.33,  # 108.333334 from float32 cores
        "avg_percent_of_limit": 108.33,
        "drivers": [
            {"project": "api", "agent": "tests", "share_percent": 76.92},
            {"project": "api", "agent": "linter", "share_percent": 15.38},
            {"project": "web", "agent": "linter", "share_percent": 7.69},
        ],
    }
    assert [d["share_percent"] for d in data["intervals"][0]["drivers"]] == [83.33, 16.67]
    assert data["notes"] == []


def test_memory_limits_and_peaks_are_whole_bytes(ws: Path) -> None:
    code, out, _ = run(
        "workspace", "analytics", "bottlenecks", "--workspace-dir", str(ws),
        "--threshold", "25", "--resource", "memory", "--format", "json",
    )  # fmt: skip
    assert code == 0
    (api,) = json.loads(out)["intervals"]
    assert (api["limit"], api["peak"]) == (1024 * MB, 300 * MB)
    assert isinstance(api["limit"], int) and isinstance(api["peak"], int)
    assert api["peak_percent_of_limit"] == 29.3  # 29.296875


def test_a_float32_percent_prints_rounded(ws: Path) -> None:
    # db/build at tick 9: 3.0 + 0.76000005 cores (the float32 above 0.76) of 4 cores.
    just_above = float(np.nextafter(np.float32(0.76), np.float32(1)))
    rows = [
        {
            "ts": at(9), "host": "h1", "project": "db", "agent": "build", "pid": pid,
            "start_time": at(-100), "cpu_cores": cores, "rss_bytes": 10 * MB, "fds": 5,
            "threads": 1, "state": "running",
        }
        for pid, cores in ((301, 3.0), (302, just_above))
    ]  # fmt: skip
    write_table(ws / "metrics", "samples", pa.Table.from_pylist(rows))
    processes = [
        {key: row[key] for key in ("ts", "host", "pid", "start_time", "project", "agent")}
        | {"name": "build", "cmdline": "build"}
        for row in rows
    ]
    write_table(ws / "metrics", "processes", pa.Table.from_pylist(processes))
    report = peak_usage(ws, projects=["db"], agents=["build"])
    assert report.to_json()["peaks"][2]["cpu_peak_percent"] == 94.000001  # what JSON showed
    code, out, _ = run(
        "workspace", "analytics", "peak-usage", "--workspace-dir", str(ws),
        "--project", "db", "--format", "json",
    )  # fmt: skip
    assert code == 0
    agent = json.loads(out)["peaks"][2]
    assert (agent["project"], agent["agent"]) == ("db", "build")
    assert {key: agent[key] for key in agent if key.startswith("cpu_")} == {
        "cpu_peak_percent": 94.0,
        "cpu_peak_at": "2026-01-05T10:00:09Z",
        "cpu_p95_percent": 94.0,
        "cpu_avg_percent": 94.0,
    }


def test_round_to_units() -> None:
    data = {
        "cpu_peak_percent": 94.000001,
        "cpu_idle_allocation_percent": -0.0001,
        "memory_used_avg_bytes": 215203424.324746,
        "cpu_over_limit_seconds": 1.0004,
        "peak_cores": 0.730001,
        "memory_mb": 338.8123,
        "tau": 0.572464,
        "ticks": 3,
        "system": {"cpu_percent": {"avg": 2.040816, "max": math.nan}},
        "agents": [{"unit": "bytes", "avg": 1.5}, {"unit": "count", "avg": 1.5}],
        "intervals": [{"resource": "memory", "limit": 214748364.8, "peak": 1.6}],
        "rows": [{"metric": "cpu_percent", "difference": 0.333333}],
    }
    rounded = round_to_units(data)
    assert rounded == {
        "cpu_peak_percent": 94.0,
        "cpu_idle_allocation_percent": 0.0,
        "memory_used_avg_bytes": 215203424,
        "cpu_over_limit_seconds": 1.0,
        "peak_cores": 0.73,
        "memory_mb": 338.8123,  # names no unit of the table
        "tau": 0.572464,
        "ticks": 3,
        "system": {"cpu_percent": {"avg": 2.04, "max": rounded["system"]["cpu_percent"]["max"]}},
        "agents": [{"unit": "bytes", "avg": 2}, {"unit": "count", "avg": 1.5}],
        "intervals": [{"resource": "memory", "limit": 214748365, "peak": 2}],
        "rows": [{"metric": "cpu_percent", "difference": 0.33}],
    }
    assert math.isnan(rounded["system"]["cpu_percent"]["max"])
    assert str(rounded["cpu_idle_allocation_percent"]) == "0.0"  # not -0.0
    assert to_json({"share_percent": 83.333333}) == '{\n  "share_percent": 83.333333\n}\n'
    assert to_json({"share_percent": 83.333333}, rounded=True) == (
        '{\n  "share_percent": 83.33\n}\n'
    )


# --- range ends as given -------------------------------------------------------------------


def test_shown_ends() -> None:
    first = datetime(2026, 1, 5, tzinfo=UTC)
    last = datetime(2026, 1, 6, tzinfo=UTC)
    hour = timedelta(hours=1)

    def shown(time_range: TimeRange) -> tuple[datetime, datetime]:
        return time_range.shown(*time_range.resolve(first, last), last)

    assert shown(TimeRange()) == (first, last)
    assert shown(TimeRange(period=hour)) == (last - hour, last)
    assert shown(TimeRange(start=first + hour)) == (first + hour, last)
    assert shown(TimeRange(end=last)) == (first, last)
    assert shown(TimeRange(start=first, period=hour)) == (first, first + hour)
    later = last + hour  # a start after the newest sample: nothing to close
    assert shown(TimeRange(start=later)) == (later, later)
    assert TimeRange().shown(first, first, None) == (first, first)


@pytest.mark.parametrize(
    ("args", "label", "start", "end"),
    [
        ([], "10:00:00 UTC .. 2026-01-05 10:00:09 UTC", "10:00:00Z", "10:00:09Z"),
        (["--period", "5s"], "10:00:04 UTC .. 2026-01-05 10:00:09 UTC", "10:00:04Z", "10:00:09Z"),
        (
            ["--start", "2026-01-05T10:00:03Z"],
            "10:00:03 UTC .. 2026-01-05 10:00:09 UTC",
            "10:00:03Z",
            "10:00:09Z",
        ),
        (
            ["--end", "2026-01-05T10:00:05.5Z"],
            "10:00:00 UTC .. 2026-01-05 10:00:05.5 UTC",
            "10:00:00Z",
            "10:00:05.500000Z",
        ),
    ],
)
def test_range_ends_print_as_given(
    ws: Path, args: list[str], label: str, start: str, end: str
) -> None:
    report = ["workspace", "analytics", "peak-usage", "--workspace-dir", str(ws), *args]
    code, out, _ = run(*report)
    assert code == 0
    assert out.splitlines()[0] == f"Range: 2026-01-05 {label}"
    code, out, _ = run(*report, "--format", "json")
    assert code == 0
    shown = json.loads(out)["range"]
    assert (shown["start"], shown["end"]) == (f"2026-01-05T{start}", f"2026-01-05T{end}")
