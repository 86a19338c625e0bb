"""The fault campaign (issue 15): every writer SIGKILLed at seeded random points, restarted,
and checked for the same invariants (tests/helpers/faults.py; ``bench/faults.py`` runs it
longer and prints the table of BENCHMARKS.md).

Per writer, a few kills: ``devloop workspace collect`` at a random file call of a tick, its
conversion child (at start and at stop), ``compact``, retention, ``apply-tuning`` (and
``--rollback``), ``devloop run`` and ``devloop watch`` while their agent is paused or
throttled, and the exporter mid-scrape. After each: no unreadable Parquet file, no duplicate,
no row lost beyond the tick in flight, no process left stopped, workspace.json valid and all
old or all new, the pause journal and watchdog gone. Then a full disk (an injected ENOSPC)
during the spool append and during conversion. ``DEVLOOP_FAULT_SEED`` changes the points.
"""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from pathlib import Path

import pytest

from tests.helpers import faults

pytestmark = [pytest.mark.slow, pytest.mark.realtime]

SEED = int(os.environ.get("DEVLOOP_FAULT_SEED", "15"))

#: Kills per writer here (bench/faults.py: 20 each). run and watch alternate pause, throttle.
KILLS = {name: 2 for name in faults.WRITERS}


def _check(outcomes: list[faults.Outcome], kills: int) -> None:
    assert len(outcomes) == kills
    broken = [(o.writer, o.notes) for o in outcomes if not o.clean]
    assert broken == [], broken


@pytest.mark.parametrize("writer", list(faults.WRITERS))
def test_a_writer_killed_at_random_points_leaves_everything_intact(
    tmp_path: Path, writer: str
) -> None:
    with faults.campaign(tmp_path, SEED) as campaign:
        outcomes = faults.WRITERS[writer](campaign, KILLS[writer])
    _check(outcomes, KILLS[writer])
    assert any(o.killed for o in outcomes), "no kill point was reached"


@pytest.mark.parametrize("fault", list(faults.DISK_FULL))
def test_a_full_disk_is_said_and_recording_resumes_when_space_returns(
    tmp_path: Path, fault: str
) -> None:
    with faults.campaign(tmp_path, SEED) as campaign:
        outcomes = faults.DISK_FULL[fault](campaign, 1)
    _check(outcomes, 1)


def test_a_collector_whose_recovery_child_is_killed_still_starts(tmp_path: Path) -> None:
    """A conversion child killed at start (the OOM killer, say) no longer stops the collector,
    and so the enforcer, from starting: the segments stay in the spool and its next tick
    converts them. It used to exit 1 ("the store's segments process was killed by signal 9")."""
    plan = [[("workspace collect:30", 0), ("convert.py segments:1", 5)]]
    with faults.campaign(tmp_path, SEED) as campaign:
        [outcome] = faults._collector_chain(campaign, "recovery child", plan)
    assert outcome.killed
    assert outcome.clean, outcome.notes


def test_a_compaction_killed_while_saving_the_facts_leaves_no_temp_file(tmp_path: Path) -> None:
    """Found by the campaign (retention, killed at its 5th call): ``._facts.json.<pid>.tmp``
    stayed in the store root for good, one more per such kill; the next compaction removes it."""
    from devloop.store import compact

    with faults.campaign(tmp_path, SEED) as campaign:
        base = faults.maintenance_store(campaign.folder("base"))
        counting = campaign.folder("count") / base.name
        shutil.copytree(base, counting)
        trace = tmp_path / "trace"
        env = campaign.env(match="workspace compact", trace=trace)
        assert campaign.run_devloop("workspace", "compact", "--workspace-dir", counting,
                                    env=env) == 0  # fmt: skip
        [at] = [t.n for t in faults.read_trace(trace) if "/._facts.json." in t.path]
        ws = campaign.folder("killed") / base.name
        shutil.copytree(base, ws)
        env = campaign.env(match="workspace compact", kill=f"workspace compact:{at}")
        code = campaign.run_devloop("workspace", "compact", "--workspace-dir", ws, env=env)
        assert code == -signal.SIGKILL
        assert [p.name for p in (ws / "metrics").glob("._facts.json.*.tmp")] != []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compact(ws / "metrics")
        assert faults.unreadable_files(ws / "metrics") == []
