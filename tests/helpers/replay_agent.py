"""An agent with a fixed amount of work, for checking the replay against real enforced runs.

A limit stretches its duration instead of cutting its work short: it ends when its loop has
done its iterations, however long that takes.

    replay_agent.py calibrate               print the loop's iterations per CPU second
    replay_agent.py burn N [TAG]            N iterations, CPU-bound
    replay_agent.py mixed N BURSTS SLEEP FORK [TAG]
                                            BURSTS x (N iterations, then SLEEP seconds asleep);
                                            with FORK 1 every second burst runs in a forked
                                            child the agent waits for

TAG (``run=K``) is ignored: it names the run in the ``runs`` table's ``command``.
"""

from __future__ import annotations

import os
import sys
import time


def work(iterations: int) -> int:
    x = 0
    for _ in range(iterations):
        x += 1
    return x


def calibrate() -> float:
    """Iterations per CPU second (process time, so the machine's load does not count)."""
    n, used = 200_000, 0.0
    while used < 0.3:
        n *= 2
        before = time.process_time()
        work(n)
        used = time.process_time() - before
    return n / used


def mixed(iterations: int, bursts: int, sleep: float, fork: bool) -> None:
    for burst in range(bursts):
        if fork and burst % 2 == 1:
            pid = os.fork()
            if pid == 0:
                work(iterations)
                os._exit(0)
            os.waitpid(pid, 0)
        else:
            work(iterations)
        if burst < bursts - 1:
            time.sleep(sleep)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "calibrate":
        print(f"{calibrate():.0f}", flush=True)
    elif mode == "burn":
        work(int(args[0]))
    elif mode == "mixed":
        mixed(int(args[0]), int(args[1]), float(args[2]), args[3] == "1")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
