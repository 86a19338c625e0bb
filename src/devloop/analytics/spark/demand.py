"""autotune's run demand on Spark: the recorded runs and their per-tick series (the join of
``samples`` with ``processes`` on the process identity), as :func:`devloop.tune.replay.
demand_from_store` reads them with DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devloop.analytics.spark.dataset import Dataset, _from_us, _select, _us
from devloop.analytics.timerange import TimeRange


@dataclass(frozen=True)
class RunDemandRows:
    """The recorded runs of a range and what they used, as plain data (the tune layer makes
    them a ``Demand`` with :func:`devloop.tune.replay.demand_from_rows`).

    ``found``: one tuple per run that ended, in trigger order (``queued``, else ``started``;
    then ``run_id``): ``(run_id, project, agent, queued_at, started, ended, duration_seconds,
    cpu_seconds, max_rss_bytes, host)``, ``queued_at`` in epoch seconds, ``started`` and
    ``ended`` aware UTC datetimes, ``duration_seconds`` less the seconds it was paused,
    ``cpu_seconds`` user plus system (None when unknown). ``series``: per run id the ticks
    that saw a process of the run (but those where all were stopped and used nothing), oldest
    first, as its cores and its memory (bytes) summed over its processes, 0 where none
    reported one, and the ticks' times (epoch microseconds); a run no tick saw has none.
    ``machines``: each host's core count (the largest of its ``system`` rows). ``interval``:
    the tick interval in seconds."""

    found: tuple[tuple[Any, ...], ...]
    series: dict[str, tuple[list[float], list[int], list[int]]]
    machines: dict[str, int]
    interval: float


def run_demand_spark(
    spark: Any,
    root: Path | str,
    time_range: TimeRange | None = None,
    *,
    hosts: Sequence[str] = (),
) -> RunDemandRows:
    """The runs that ended and started in the range (resolved as :meth:`Store.select
    <devloop.analytics.Store.select>` resolves it: all of the data by default) with their
    per-tick series, over the dataset at ``root``: what ``demand_from_store(store, start,
    end)`` reads for that range's ends, as autotune asks it. Ticks where every process of
    the run was stopped and used nothing (held paused by the enforcement) are left out.
    ``hosts``: globs of the hosts whose rows count."""
    data = Dataset(spark, root, hosts)
    selection = _select(data, time_range, (), (), require_samples=False, known={})
    start, end = selection.start, selection.end
    # a row is written when its run ends: never before its start (ts and date prune files)
    runs = data.sql(
        f"""
        SELECT run_id, project, agent, unix_micros(coalesce(queued, started)) / 1e6 AS queued_at,
               unix_micros(started) AS started_us, unix_micros(ended) AS ended_us,
               (unix_micros(ended) - unix_micros(started)) / 1e6 - coalesce(paused_seconds, 0)
                   AS duration_seconds,
               cpu_user_seconds + cpu_system_seconds AS cpu_seconds, max_rss_bytes, host
        FROM {{runs}}
        WHERE ended IS NOT NULL
          AND unix_micros(started) >= {_us(start)} AND unix_micros(started) < {_us(end)}
          AND unix_micros(ts) >= {_us(start)}
          AND date >= DATE'{start.astimezone(UTC).date().isoformat()}'
        """,
        runs=data.table("runs"),
    )
    found = tuple(
        (run_id, project, agent, queued, _from_us(started), _from_us(ended), duration, cpu,
         max_rss, host)
        for run_id, project, agent, queued, started, ended, duration, cpu, max_rss, host in
        runs.orderBy("queued_at", "run_id").collect()
    )  # fmt: skip
    series: dict[str, tuple[list[float], list[int], list[int]]] = {}
    if found:
        first = min(row[4] for row in found)
        last = max(row[5] for row in found) + timedelta(seconds=2 * selection.interval)
        series = {
            str(run_id): ([float(c) for c in cores], [int(m) for m in rss], [int(t) for t in ts])
            for run_id, cores, rss, ts in _series(data, runs, first, last)
        }
    machines = {
        str(host): int(cores)
        for host, cores in data.sql(
            "SELECT host, max(cores) FROM {system} GROUP BY host", system=data.table("system")
        ).collect()
        if cores is not None
    }
    return RunDemandRows(found, series, machines, selection.interval)


def _series(data: Dataset, runs: Any, first: datetime, last: datetime) -> list[Any]:
    """Per run of ``runs``, its ticks' cores, memory and times (epoch microseconds) in time
    order (a tick whose CPU or memory no process reported: 0), from the samples between
    ``first`` and ``last``."""
    found: list[Any] = data.sql(
        f"""
        WITH p AS (
            SELECT DISTINCT host, pid, start_time, run_id FROM {{processes}}
            WHERE run_id IN (SELECT run_id FROM {{runs}})
        ),
        t AS (
            SELECT p.run_id, s.ts, coalesce(sum(s.cpu_cores), 0.0D) AS cores,
                   coalesce(sum(s.rss_bytes), 0) AS rss
            FROM {{samples}} s JOIN p
              ON s.host = p.host AND s.pid = p.pid AND s.start_time = p.start_time
            WHERE unix_micros(s.ts) >= {_us(first)} AND unix_micros(s.ts) <= {_us(last)}
              AND s.date >= DATE'{first.astimezone(UTC).date().isoformat()}'
              AND s.date <= DATE'{last.astimezone(UTC).date().isoformat()}'
            GROUP BY p.run_id, s.ts
            HAVING NOT (bool_and(coalesce(s.state = 'stopped', false))
                        AND coalesce(sum(s.cpu_cores), 0) = 0)
        ),
        ordered AS (
            SELECT run_id, sort_array(collect_list(struct(ts, cores, rss))) AS ticks
            FROM t GROUP BY run_id
        )
        SELECT run_id, transform(ticks, x -> x.cores), transform(ticks, x -> x.rss),
               transform(ticks, x -> unix_micros(x.ts))
        FROM ordered
        """,
        processes=data.table("processes"),
        runs=runs,
        samples=data.table("samples"),
    ).collect()
    return found
