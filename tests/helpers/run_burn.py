"""An agent run for the runs tests: burns CPU, part of it in a forked child that exits at once.

    run_burn.py SECONDS OUT.json [PIDFILE]

Burns SECONDS of CPU in all: first a forked child burns a share (at most 0.25 s, so it usually
lives and dies between two ticks) and exits, then this process burns the rest. It then writes
what the kernel says it used, children included (``getrusage`` of itself and of its children:
the counters ``os.times`` reads, at microseconds instead of its 10 ms ticks), to OUT.json and
leaves at once (``os._exit``: nothing runs after the measurement). With PIDFILE it writes its
pid there first and sleeps instead of ending (a run whose launcher the test kills).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for _ in range(1000):
            x += 1


def main() -> None:
    total, out = float(sys.argv[1]), sys.argv[2]
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
        os._exit(0)
    share = min(0.3 * total, 0.25)
    pid = os.fork()
    if pid == 0:
        burn(share)
        os._exit(0)
    os.waitpid(pid, 0)
    burn(total - share)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    with open(out, "w") as f:
        f.write(json.dumps({"cpu": cpu}))
    os._exit(0)


if __name__ == "__main__":
    main()
