"""Autotune's forked workers (``devloop.tune.workers``): the same results as one process."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devloop.tune import TuneParameters, autotune
from devloop.tune.workers import fork_map, workers

TWO_CORES = len(os.sched_getaffinity(0)) >= 2


def _square_and_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def _fail(n: int) -> int:
    if n == 3:
        raise ValueError(f"no {n}")
    return n


def test_results_come_in_the_items_order_whatever_order_the_costs_give(monkeypatch):
    monkeypatch.delenv("DEVLOOP_TUNE_WORKERS", raising=False)
    found = fork_map(_square_and_pid, [1, 2, 3, 4, 5], costs=[1, 5, 2, 4, 3])
    assert [value for value, _ in found] == [1, 4, 9, 16, 25]
    if TWO_CORES:
        assert os.getpid() not in {pid for _, pid in found}


def test_one_worker_runs_in_process(monkeypatch):
    monkeypatch.setenv("DEVLOOP_TUNE_WORKERS", "1")
    assert workers(5) == 1
    assert fork_map(_square_and_pid, [2, 3]) == [(4, os.getpid()), (9, os.getpid())]


def test_a_workers_error_is_raised_in_the_parent(monkeypatch):
    monkeypatch.setenv("DEVLOOP_TUNE_WORKERS", "2")
    with pytest.raises(ValueError, match="no 3"):
        fork_map(_fail, [1, 2, 3, 4])


@pytest.mark.skipif(not TWO_CORES, reason="one core: autotune never forks")
def test_autotune_gives_the_same_suggestions_in_one_process_and_in_two(
    simulated_day: Path, monkeypatch
):
    params = TuneParameters(min_history=3600)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    found = {}
    for count in ("1", "2"):
        monkeypatch.setenv("DEVLOOP_TUNE_WORKERS", count)
        found[count] = autotune(simulated_day, params=params, now=now).to_json()
    assert found["1"] == found["2"]
    assert found["1"]["backtest"]["totals"]["current"]["runs"] > 0
