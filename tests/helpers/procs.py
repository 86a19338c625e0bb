"""Real processes for the collector tests, started from burn.py and always cleaned up."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BURN = Path(__file__).with_name("burn.py")
DEADLINE = 30.0  # generous: a loaded 2-core machine can be slow to start Python


class Helper:
    """A running burn.py (or any command) with line-based stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=cwd,
            bufsize=0,
        )
        self.pid = self.proc.pid

    def readline(self, timeout: float = DEADLINE) -> list[str]:
        """The next line's words; fails the test after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"helper {self.pid} said nothing within {timeout}s")
            char = self.proc.stdout.read(1)
            if not char:
                raise AssertionError(f"helper {self.pid} exited: {self.proc.poll()}")
            line += char
        return line.decode().split()

    def has_line(self) -> bool:
        """Whether a line (or EOF) is waiting."""
        assert self.proc.stdout is not None
        return bool(select.select([self.proc.stdout], [], [], 0)[0])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def helpers() -> Iterator[Callable[..., Helper]]:
    """A factory of helpers; every one is killed and reaped on exit."""
    started: list[Helper] = []

    def start(
        *args: str,
        tags: tuple[str, str] | None = None,
        cwd: Path | None = None,
        argv: list[str] | None = None,
        ready: bool = True,
    ) -> Helper:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
        if tags is not None:
            env["DEVLOOP_PROJECT"], env["DEVLOOP_AGENT"] = tags
        helper = Helper(argv or [sys.executable, str(BURN), *args], env, cwd)
        started.append(helper)
        if ready:
            words = helper.readline()
            assert words[0] == "ready", words
        return helper

    try:
        yield start
    finally:
        for helper in started:
            helper.stop()


def wait_until(
    predicate: Callable[[], bool], timeout: float = DEADLINE, step: float = 0.02
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, read independently of the collector."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_state(pid: int) -> str:
    """The state letter of a process (S sleeping, R running, ...)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


def wait_asleep(*pids: int) -> None:
    """Wait until the processes block (a loaded machine may not have run them there yet)."""
    wait_until(lambda: all(proc_state(pid) == "S" for pid in pids))


def vm_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
