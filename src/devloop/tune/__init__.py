"""Autotune: better limits from the recorded history, backtested, applied as a merge patch.

    params.py      TuneParameters   every parameter and its default
    history.py     read_history     one pass over the store: per entity and hour, stats + CPU bins
    fit.py         fit              one entity's limits (decayed percentile, window peaks, leaks)
    backtest.py    walk-forward     fit on blocks 1..k, replay block k+1
    suggest.py     autotune         the whole run -> Suggestions
    suggestions.py Suggestions      the records and their JSON (suggestions.json)
    patch.py       apply_tuning     RFC 7386 patches to workspace.json / agents.json, rollback
    report.py      html_report      the self-contained HTML report
    replay.py      replay           recorded runs replayed under a configuration, through the
                                    enforcement policy itself: each run's start, end, slowdown
    fleet.py       autotune_fleet   a fleet's hosts by machine class, each class tuned apart

docs/autotune.md describes the method and the suggestions.json format; docs/replay.md the
replay.
"""

from devloop.errors import TuningError
from devloop.tune.params import TuneParameters
from devloop.tune.patch import ApplyResult, apply_tuning, read_suggestions, rollback
from devloop.tune.replay import Demand, Replay, ReplayedRun, RunDemand, replay, summarize
from devloop.tune.suggest import autotune
from devloop.tune.suggestions import Suggestions

__all__ = [
    "ApplyResult",
    "Demand",
    "Replay",
    "ReplayedRun",
    "RunDemand",
    "Suggestions",
    "TuneParameters",
    "TuningError",
    "apply_tuning",
    "autotune",
    "read_suggestions",
    "replay",
    "rollback",
    "summarize",
]
