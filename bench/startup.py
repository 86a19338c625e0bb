"""How long `devloop --help` takes, against a bare `python -c pass` in the same run.

Goal (issue 2): under 0.3 s, with no polars/duckdb/pyarrow imported.
Run: .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    devloop = str(Path(sys.executable).with_name("devloop"))
    cases = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "devloop --help": [devloop, "--help"],
        "devloop workspace --help": [devloop, "workspace", "--help"],
    }
    for argv in cases.values():
        timed(argv)  # warm the page cache
    baseline = None
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'vs baseline':>12}")
    for label, argv in cases.items():
        times = [timed(argv) for _ in range(RUNS)]
        median = statistics.median(times)
        baseline = baseline or median
        print(f"{label:32} {median:9.3f} {min(times):7.3f} {median / baseline:11.1f}x")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, devloop.cli; "
         "print(sorted({'polars','duckdb','pyarrow'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(f"heavy modules imported by devloop.cli: {heavy}")


if __name__ == "__main__":
    main()
