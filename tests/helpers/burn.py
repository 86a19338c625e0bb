"""A small process for the collector tests: burns CPU, sleeps, holds files, or spawns children.

Every mode prints one line when it is ready and then waits for instructions on stdin; closing
stdin (or killing it) ends it, so a test that dies never leaves it behind.

    burn.py busy [CPU_SECONDS]    burn CPU (forever, or until it has used CPU_SECONDS)
    burn.py sleep                 block on stdin
    burn.py files N M             hold N open files and M extra threads
    burn.py rename NAME           set its comm to NAME, then sleep
    burn.py spawner               per stdin line "child SECONDS": run a busy child to its end,
                                  print "started PID" and "done CHILD_CPU_SECONDS";
                                  per line "sleeper": start an untagged sleeping child
    burn.py family N              burn CPU with N busy children ("ready PID CHILD..."); per
                                  stdin line "child" (or "child untagged", with an empty
                                  environment) one more, printing "child PID"; its children
                                  die with it (PR_SET_PDEATHSIG)
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import threading
import time


def say(*words: object) -> None:
    print(*words, flush=True)


def busy(cpu_seconds: float | None) -> None:
    say("ready", os.getpid())
    x = 0
    while cpu_seconds is None or time.process_time() < cpu_seconds:
        for _ in range(10000):
            x += 1


def wait_stdin() -> None:
    sys.stdin.read()


def files(n: int, m: int) -> None:
    held = [open(os.devnull, "rb") for _ in range(n)]  # noqa: SIM115 - held on purpose
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(m)]
    for thread in threads:
        thread.start()
    say("ready", len(os.listdir("/proc/self/fd")) - 1, threading.active_count())
    wait_stdin()
    stop.set()
    del held


def rename(name: str) -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    say("ready", os.getpid())
    wait_stdin()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spawner() -> None:
    say("ready", os.getpid())
    sleepers: list[subprocess.Popen[bytes]] = []
    for line in sys.stdin:
        words = line.split()
        if words[0] == "child":
            before = children_cpu()
            child = subprocess.Popen(
                [sys.executable, __file__, "busy", words[1]], stdout=subprocess.DEVNULL
            )
            say("started", child.pid)
            child.wait()
            say("done", f"{children_cpu() - before:.3f}")
        elif words[0] == "grandchild":
            # a child that runs a busy grandchild: both exit and are reaped between two ticks
            before = children_cpu()
            child = subprocess.Popen(
                [sys.executable, __file__, "relay", words[1]], stdout=subprocess.DEVNULL
            )
            say("started", child.pid)
            child.wait()
            say("done", f"{children_cpu() - before:.3f}")
        elif words[0] == "sleeper":
            # a scrubbed environment: the child can only be attributed by inheritance
            child = subprocess.Popen(
                [sys.executable, __file__, "sleep"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env={},
            )
            sleepers.append(child)
            say("sleeper", child.pid)
    for child in sleepers:
        child.kill()
        child.wait()


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "busy":
        busy(float(args[0]) if args else None)
    elif mode == "sleep":
        say("ready", os.getpid())
        wait_stdin()
    elif mode == "files":
        files(int(args[0]), int(args[1]))
    elif mode == "rename":
        rename(args[0])
    elif mode == "relay":
        subprocess.run([sys.executable, __file__, "busy", args[0]], stdout=subprocess.DEVNULL)
    elif mode == "spawner":
        spawner()
    elif mode == "family":
        family(int(args[0]))
    elif mode == "kin":
        kin(int(args[0]))
    else:
        raise SystemExit(f"unknown mode {mode}")


def kin(parent: int) -> None:
    """A busy child that dies with its parent, so a killed family leaves no burner behind."""
    libc = ctypes.CDLL(None)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return  # the parent died before the prctl
    busy(None)


def family(n: int) -> None:
    def child(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, __file__, "kin", str(os.getpid())]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env)

    kids = [child() for _ in range(n)]
    say("ready", os.getpid(), *(kid.pid for kid in kids))

    def serve() -> None:
        for line in sys.stdin:
            words = line.split()
            if words and words[0] == "child":
                kid = child({} if "untagged" in words else None)
                kids.append(kid)
                say("child", kid.pid)
        os._exit(0)  # stdin closed: the children die with us

    # a child dies when the thread that forked it ends: both threads live as long as we do
    threading.Thread(target=serve, daemon=True).start()
    x = 0
    while True:
        for _ in range(10000):
            x += 1


if __name__ == "__main__":
    main()
