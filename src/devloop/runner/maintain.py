"""The collector's hourly maintenance child: compaction and retention, then the hours' rollups.

    python -m devloop.runner.maintain compact ROOT PARENT_PID [max-age=S] [max-bytes=N]

A recorder starts it once an hour (:meth:`devloop.runner.record.Recorder`) and reaps it without
waiting. It runs the store's own compaction child (:mod:`devloop.store.convert`: one sorted file
per closed hour, then retention) and then writes the rollups of the hours just closed and drops
those of the hours retention removed (:func:`devloop.analytics.warm_cache`), so reports on a
live workspace read rollups for its closed hours, and the reports themselves never write. It
lives here, above both, because the store may not import the analytics that define the rollups.
Its output is the store child's: one JSON object per line, ``{"error": ...}`` on failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from devloop.errors import DevloopError
from devloop.store.convert import main as store_main


def main(argv: Sequence[str] | None = None) -> int:
    """Compact (and apply retention), then roll up; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = store_main(args)
    if code != 0 or not args or args[0] != "compact":
        return code
    from devloop.analytics import warm_cache

    try:
        hours = warm_cache(Path(args[1]))
    except DevloopError as exc:
        sys.stdout.write(json.dumps({"error": f"rolling up: {exc}"}) + "\n")
        return 1
    sys.stdout.write(json.dumps({"rolled_up": hours}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
