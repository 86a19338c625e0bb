"""Enforcement: reaction time (limit crossed -> paused) and the manager loop's own CPU cost.

    python bench/enforcement_manager.py [--repeats 10] [--interval 1] [--agents 10,50]

Reaction: a tagged process that sleeps until told, then burns a whole core, in a project whose
CPU limit is 10 % of the machine; a real Recorder with enforcement ticks every ``--interval``
seconds in a thread. The clock starts when the process is told to burn (the moment its project
goes over) and stops when /proc shows it stopped (state T), polled every 2 ms. Repeated
``--repeats`` times; prints min, median, p90 and max next to the goal (checkInterval + 1 s).

Loop cost: ``ResourceManager.observe(tick)`` + ``check()`` on synthetic ticks of N agents with
10 processes each, all under their limits (the steady state: nothing to signal), including the
state-file write each check does. CPU per check, and % of one core at a 1 s and a 10 s check
interval.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from devloop.collector.model import Tick  # noqa: E402
from devloop.config.load import load_workspace  # noqa: E402
from devloop.core.resource_manager import ResourceManager  # noqa: E402
from devloop.runner.record import Recorder  # noqa: E402

BURN_ON_CUE = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\nwhile True: pass\n"


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _workspace(folder: Path, project: str, interval: float, agents: int = 1) -> Path:
    ws = folder / ".devloop-workspace"
    ws.mkdir(parents=True, exist_ok=True)
    data = {
        "workspace_name": "bench",
        "projects": [{"name": project, "path": "p"}, {"name": f"{project}-idle", "path": "q"}],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB",
                                      "checkInterval": interval, "enforcementAction": "pause"}},
        "resource_sharing": {"strategy": "custom", "perProjectLimits": {
            project: {"maxCpu": 10, "maxMemory": "1GB"},
            f"{project}-idle": {"maxCpu": 50, "maxMemory": "1GB"}}},
    }  # fmt: skip
    (ws / "workspace.json").write_text(json.dumps(data))
    return ws


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


def reaction(repeats: int, interval: float) -> list[float]:
    """Seconds from 'over the limit' to 'stopped', one per repeat."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            project = f"react-{uuid.uuid4().hex[:6]}"
            workspace = load_workspace(_workspace(Path(tmp) / str(i), project, interval))
            env = dict(os.environ, DEVLOOP_PROJECT=project, DEVLOOP_AGENT="burner")
            burner = subprocess.Popen(
                [sys.executable, "-c", BURN_ON_CUE], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, preexec_fn=_die_with_parent,
            )  # fmt: skip
            assert burner.stdout is not None and burner.stdin is not None
            burner.stdout.readline()
            recorder = Recorder(workspace, interval=interval, enforce=True, min_pause=3600)
            stop = threading.Event()
            thread = threading.Thread(target=recorder.run, kwargs={"stop": stop})
            thread.start()
            try:
                time.sleep(2 * interval + 0.5)  # the collector knows the idle process
                burner.stdin.write(b"go\n")
                burner.stdin.flush()
                start = time.monotonic()
                while _state(burner.pid) != "T":
                    if time.monotonic() - start > 60:
                        raise SystemExit("the burner was not paused within 60 s")
                    time.sleep(0.002)
                times.append(time.monotonic() - start)
            finally:
                stop.set()
                thread.join()
                recorder.close()
                burner.kill()
                burner.wait()
                burner.stdin.close()
                burner.stdout.close()
    return times


def _tick(agents: int, per_agent: int, project: str, ts: float) -> Tick:
    samples = []
    pid = 10_000_000  # no such pids: nothing is ever signalled
    for a in range(agents):
        for _ in range(per_agent):
            pid += 1
            samples.append((int(ts * 1e6), "bench", project, f"agent-{a}", pid, 1, 1, "python",
                            0.00002, 1.0, 1 << 20, 12, 2, None, None, "sleeping"))  # fmt: skip
    return Tick(int(ts * 1e6), samples, [], (int(ts * 1e6), "bench", 2, 0.1, 1, 1, 1))


def loop_cost(agents: int, checks: int = 300) -> float:
    """CPU seconds per observe + check."""
    with tempfile.TemporaryDirectory() as tmp:
        project = f"loop-{uuid.uuid4().hex[:6]}"
        workspace = load_workspace(_workspace(Path(tmp), project, 1.0))
        manager = ResourceManager(workspace)
        try:
            ticks = [_tick(agents, 10, project, time.time() + i) for i in range(checks)]
            manager.observe(ticks[0])
            manager.check()
            begin = time.process_time()
            for tick in ticks:
                manager.observe(tick)
                manager.check()
            return (time.process_time() - begin) / checks
        finally:
            manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--agents", default="10,50,200")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    times = reaction(args.repeats, args.interval)
    goal = args.interval + 1.0
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else times
    print(f"\nreaction time, limit crossed -> stopped (checkInterval {args.interval:g} s, "
          f"{len(times)} runs)")  # fmt: skip
    print(f"  min {min(times):.3f} s  median {statistics.median(times):.3f} s  "
          f"p90 {q[-1]:.3f} s  max {max(times):.3f} s   goal <= {goal:g} s "
          f"({'met' if max(times) <= goal else 'MISSED'} by every run)")  # fmt: skip

    print("\nmanager loop cost (observe + check + state file), 10 processes per agent")
    header = ("agents", "processes", "ms/check", "% core @1s", "% core @10s")
    print("  {:>6} {:>9} {:>9} {:>11} {:>12}".format(*header))
    for agents in (int(n) for n in args.agents.split(",")):
        cost = loop_cost(agents)
        print(f"  {agents:>6} {agents * 10:>9} {cost * 1e3:>9.3f} {cost * 100:>11.3f} "
              f"{cost * 10:>12.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
