"""cli.render.to_json writes exactly what json.dumps(indent=2) writes, rounding as it goes."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from devloop.analytics import bottlenecks, efficiency, export_metrics, health, peak_usage
from devloop.cli.render import round_to_units, to_json
from tests.test_analytics_reports import build_store

ODD: list[Any] = [
    {},
    [],
    {"a": {}, "b": [], "c": [{}], "d": [[]]},
    {"cpu_percent": 94.000001, "memory_bytes": 1023.6, "wait_seconds": -0.0001, "x": 1.0000001},
    {"unit": "percent", "value": 12.3456, "nested": {"peak": 1.23456}},
    {"resource": "memory", "limit": 2147483648.4, "peak": 12.7},
    {"metric": "cpu", "avg": 33.33333, "rows": [1, 2.5, None, True, False]},
    {"name": 'naïve \u2603 "quoted"\n\t\\', "emoji": "\U0001f600", "empty": ""},
    {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "cpu_percent": math.nan},
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    [1e-300, 1e300, -0.0, 0.1 + 0.2, 2**70, -(2**63)],
    ("tuple", ["inside", ("nested",)]),
]


@pytest.mark.parametrize("data", ODD)
@pytest.mark.parametrize("rounded", [False, True])
def test_the_text_is_json_dumps_indent_2(data: Any, rounded: bool) -> None:
    want = json.dumps(round_to_units(data) if rounded else data, indent=2) + "\n"
    assert to_json(data, rounded=rounded) == want


def test_random_documents() -> None:
    rng = random.Random(7)
    keys = ["cpu_percent", "memory_bytes", "ticks", "unit", "resource", "note", "wait_seconds"]

    def value(depth: int) -> Any:
        pick = rng.random()
        if depth < 3 and pick < 0.2:
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 4))}
        if depth < 3 and pick < 0.35:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice(
            [rng.uniform(-1e6, 1e6), rng.randint(-(10**9), 10**9), None, True, "percent",
             "memory", "cpu", "text", rng.random() * 1e-6]
        )  # fmt: skip

    for _ in range(300):
        data = value(0)
        for rounded in (False, True):
            want = json.dumps(round_to_units(data) if rounded else data, indent=2) + "\n"
            assert to_json(data, rounded=rounded) == want


def test_every_report_renders_as_before(tmp_path: Path) -> None:
    ws = build_store(tmp_path / ".devloop-workspace")
    for report in (
        peak_usage(ws),
        efficiency(ws),
        export_metrics(ws, interval=5.0, detailed=True),
        health(ws),
        bottlenecks(ws, threshold=10.0),
    ):
        document = report.to_json()
        assert to_json(document, rounded=True) == (
            json.dumps(round_to_units(document), indent=2) + "\n"
        )


def test_what_json_refuses_is_refused() -> None:
    with pytest.raises(TypeError):
        to_json({"when": object()})


def _python_text(exported: Any, fmt: str) -> str:
    """The export as rendered from its fetched rows, in Python (the text DuckDB must match)."""
    from devloop.cli.render_reports import render_export

    assert exported.result.rows is not None  # fetched: render_export takes the Python path
    assert exported.text(fmt) is None
    return render_export(exported, fmt)


@pytest.mark.parametrize("interval", [5.0, 0.4, 7.0, 3600.0])
@pytest.mark.parametrize("detailed", [False, True])
def test_duckdb_writes_the_export_as_python_does(
    tmp_path: Path, interval: float, detailed: bool
) -> None:
    from devloop.cli.render_reports import render_export

    ws = build_store(tmp_path / ".devloop-workspace")
    for fmt in ("json", "csv"):
        exported = export_metrics(ws, interval=interval, detailed=detailed)
        assert exported.text(fmt, {}, 1) is not None  # DuckDB writes it
        assert render_export(exported, fmt) == _python_text(
            export_metrics(ws, interval=interval, detailed=detailed), fmt
        )


def test_duckdb_writes_numbers_times_and_nulls_as_python_does(tmp_path: Path) -> None:
    """Ties at 2 and 6 places, float noise, -0, NaN, infinities, huge and tiny numbers,
    microseconds and nulls: the same digits as Python's round and repr."""
    from devloop.analytics.query import open_store
    from devloop.cli.render_reports import _csv_rows
    from devloop.store.db import Query

    ws = build_store(tmp_path / ".devloop-workspace")
    numbers = [0.125, 0.375, 2.675, 1.0049999996, 94.000001, -0.001, 1e-7, 1e-5, 123.4565,
               1e15 + 0.3, 1e16, 1e22, 0.1 + 0.2, 33.333333333, 12.0, float("nan"),
               float("inf"), float("-inf"), None]  # fmt: skip
    rows = ", ".join(
        f"(make_timestamptz({1_767_571_200_000_000 + i * 1_234_567}), 'p-{i}', {i}, ?)"
        for i in range(len(numbers))
    )
    kinds: dict[str, Any] = {"interval_start": "ts", "project": "str", "ticks": "i64",
                             "cpu_avg_percent": "f64"}  # fmt: skip
    sql = f"SELECT * FROM (VALUES {rows}, (NULL, NULL, NULL, 1.5)) t({', '.join(kinds)})"
    query = Query(open_store(ws).db, sql, tuple(numbers), kinds, "ticks NULLS LAST")
    fetched = query.fetch()
    want = to_json({"rows": fetched.records()}, rounded=True)
    assert '{\n  "rows": ' + str(query.json({"cpu_avg_percent": 2}, 1)) + "\n}\n" == want
    finite = Query(query.db, f"SELECT * FROM ({sql}) WHERE isfinite(cpu_avg_percent)"
                   " OR cpu_avg_percent IS NULL", query.params, kinds, query.order)  # fmt: skip
    assert finite.csv() == _csv_rows(finite.fetch())
    assert query.csv() is None  # Python writes inf and nan in CSV


@pytest.mark.parametrize("name", ['say "hi"', "a,b", "naïve", "back\\slash"])
def test_names_duckdb_cannot_write_are_left_to_python(tmp_path: Path, name: str) -> None:
    from devloop.analytics.query import open_store
    from devloop.store.db import Query

    ws = build_store(tmp_path / ".devloop-workspace")
    kinds: dict[str, Any] = {"project": "str", "ticks": "i64"}
    query = Query(open_store(ws).db, "SELECT ? AS project, 1 AS ticks", (name,), kinds, "ticks")
    assert query.json({}, 1) is None
    assert query.csv() is None
