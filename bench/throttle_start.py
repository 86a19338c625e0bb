"""The start of a throttle hold: CPU of real burners from the moment ``Throttler.hold`` is called.

    python bench/throttle_start.py [--repeat 2]

Trees of one and of two busy processes (``while True: pass``) held at 0.1, 0.25 and 0.5 cores;
their CPU read from /proc (utime + stime) every 0.5 s for 6 s, printed as a multiple of the
target: the first 2 s (the controller converging) and the 4 s after. Issue 14's replay holds a
run at its cap from the first tick; this says whether the runtime's hold leaks at its start.
Run it alone: on a busy machine a burner gets less than its share and the figures say so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from devloop.core import signals
from devloop.core.throttle import Throttler

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def hold(width: int, target: float) -> list[float]:
    """CPU per 0.5 s over 6 s from the hold's start, as multiples of ``target``."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(width)]
    try:
        time.sleep(0.5)
        refs = [ref for ref in (signals.ref(p.pid) for p in burners) if ref is not None]
        with Throttler(cores=os.cpu_count() or 1) as throttler:
            used = sum(cpu_seconds(p.pid) for p in burners)
            at = time.monotonic()
            throttler.hold("bench", project="bench", agent="burner", roots=refs,
                           target_cores=target, started=refs)  # fmt: skip
            series = []
            for _ in range(12):
                time.sleep(0.5)
                now, total = time.monotonic(), sum(cpu_seconds(p.pid) for p in burners)
                series.append((total - used) / (now - at) / target)
                used, at = total, now
        return series
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| processes | target (cores) | first 2 s | 2-6 s | per 0.5 s |")
    print("|---|---|---|---|---|")
    for width in (1, 2):
        for target in (0.1, 0.25, 0.5):
            for _ in range(args.repeat):
                series = hold(width, target)
                first, later = sum(series[:4]) / 4, sum(series[4:]) / 8
                shown = " ".join(f"{x:.2f}" for x in series)
                print(f"| {width} | {target} | {first:.2f}x | {later:.2f}x | {shown} |")


if __name__ == "__main__":
    main()
