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
