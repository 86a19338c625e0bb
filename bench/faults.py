"""The fault campaign, longer (issue 15): every writer SIGKILLed ``--kills`` times at seeded
random points, restarted, checked; then ``--outages`` disk-full outages of the spool append and
of the conversion. Prints one row per writer.

    python bench/faults.py [--kills 20] [--outages 3] [--seed 15] [--only WRITER]

The machinery is tests/helpers/faults.py, the same as tests/test_faults.py (which runs two
kills per writer). Columns: kills reached (of those asked: a kill point past the end of a
short run is not reached), rows lost beyond the tick in flight, files unreadable (Parquet
failing a verified read, damaged segments, temp files left after the restart), processes left
stopped, duplicates, workspace.json invalid (or mixed after recovery), and enforcement state
or reader-written files left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tests.helpers import faults  # noqa: E402

COLUMNS = ("writer", "kills", "rows lost", "files unreadable", "left stopped", "duplicates",
           "workspace.json invalid", "state left", "seconds")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per writer")
    parser.add_argument("--outages", type=int, default=3, help="disk-full outages per kind")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--only", action="append", help="run only this writer (repeatable)")
    args = parser.parse_args()
    table: list[tuple[str, ...]] = []
    notes: list[str] = []
    kinds = [(name, run, args.kills) for name, run in faults.WRITERS.items()]
    kinds += [(name, run, args.outages) for name, run in faults.DISK_FULL.items()]
    for name, run, count in kinds:
        if args.only and name not in args.only:
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="devloop-faults-") as tmp:
            with faults.campaign(Path(tmp), args.seed) as campaign:
                outcomes = run(campaign, count)
        took = time.monotonic() - started
        reached = sum(o.killed for o in outcomes)
        shown = f"{reached}/{count}" if name in faults.WRITERS else f"{count} outages"
        table.append((
            name, shown, *(str(sum(getattr(o, field) for o in outcomes)) for field in
                           ("rows_lost", "unreadable", "stopped", "duplicates",
                            "workspace_invalid", "state_left")),
            f"{took:.0f}",
        ))  # fmt: skip
        notes += [f"{name}: {note}" for o in outcomes if not o.clean for note in o.notes]
        print(f"{name}: done in {took:.0f}s", file=sys.stderr, flush=True)
    widths = [max(len(row[i]) for row in [COLUMNS, *table]) for i in range(len(COLUMNS))]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    for note in notes:
        print(f"- {note}")
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
