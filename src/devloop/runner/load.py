"""Load agents for ``devloop workspace stress-test``: processes that use a known amount of one
resource until told to stop.

    python -m devloop.runner.load cpu CORES       burn CORES cores (0.5 = half of one core;
                                                  2.5 = two busy processes and a half-busy one)
    python -m devloop.runner.load memory BYTES    allocate BYTES ("256MB" works too), write every
                                                  page so it is resident, and hold it
    python -m devloop.runner.load files N         hold N open file descriptors
    python -m devloop.runner.load threads N       run N extra (sleeping) threads

Each prints ``ready PID [BURNER...]`` once the load is in place and holds it until its standard
input reaches end of file or its parent dies; each line read from standard input sets a new amount
(the stress test ramps its loads up so). On Linux ``PR_SET_PDEATHSIG`` has the kernel SIGKILL it
(and each CPU burner it forks) when the process that started it exits, stopped or not, so a
killed stress test leaves no burner behind. SIGINT is ignored: the stress test stops its loads.
CPU below a whole core is a duty cycle: in every 50 ms window a burner spins until it has
*used* its share of CPU time (not merely of wall time), then sleeps.

The module imports nothing of devloop but the size parser, and nothing heavy: a load agent's own
footprint is one small Python interpreter.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import threading
import time
from typing import BinaryIO

WINDOW = 0.05  # seconds per duty cycle
_PR_SET_PDEATHSIG = 1
KINDS = ("cpu", "memory", "files", "threads")


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (its parent now) exits."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(0)


def burn(fraction: float) -> None:
    """Use ``fraction`` of one core, forever (1.0 = spin without a pause)."""
    if fraction >= 1.0:
        x = 0
        while True:
            for _ in range(10_000):
                x += 1
    while True:
        window_end = time.monotonic() + WINDOW
        budget = time.thread_time() + fraction * WINDOW
        x = 0
        while time.thread_time() < budget and time.monotonic() < window_end:
            for _ in range(1_000):
                x += 1
        left = window_end - time.monotonic()
        if left > 0:
            time.sleep(left)


def split_cores(cores: float) -> list[float]:
    """``cores`` as one fraction of a core per process: whole cores, then the remainder."""
    if cores <= 0:
        return []
    whole = math.floor(cores)
    parts = [1.0] * whole
    rest = round(cores - whole, 6)
    if rest > 0:
        parts.append(rest)
    return parts


class Load:
    """One kind of load, at a level that can be changed while it runs."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise SystemExit(f"unknown load kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.burners: list[int] = []
        self.blocks: list[bytearray] = []
        self.files: list[BinaryIO] = []
        self.threads: list[threading.Event] = []

    def set(self, amount: str) -> None:
        """Change the load to ``amount`` (cores, bytes or a count, as the kind says)."""
        if self.kind == "cpu":
            self._set_cpu(float(amount))
        elif self.kind == "memory":
            self._set_memory(memory_amount(amount))
        elif self.kind == "files":
            count = int(amount)
            while len(self.files) < count:
                self.files.append(open(os.devnull, "rb"))  # noqa: SIM115 - held on purpose
            while len(self.files) > count:
                self.files.pop().close()
        else:
            count = int(amount)
            while len(self.threads) < count:
                stop = threading.Event()
                threading.Thread(target=stop.wait, daemon=True).start()
                self.threads.append(stop)
            while len(self.threads) > count:
                self.threads.pop().set()

    def _set_cpu(self, cores: float) -> None:
        # Burners are forked children (one Python thread cannot use more than one core); the
        # process forks only from its one thread, so forking is safe.
        self._kill_burners()
        me = os.getpid()
        for fraction in split_cores(cores):
            pid = os.fork()
            if pid == 0:
                try:
                    die_with_parent(me)
                    burn(fraction)
                finally:
                    os._exit(0)
            self.burners.append(pid)

    def _set_memory(self, n_bytes: int) -> None:
        held = sum(len(b) for b in self.blocks)
        while self.blocks and held > n_bytes:
            held -= len(self.blocks.pop())
        if n_bytes > held:
            self.blocks.append(touch_memory(n_bytes - held))

    def _kill_burners(self) -> None:
        for pid in self.burners:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.burners = []

    def close(self) -> None:
        self._kill_burners()


def memory_amount(amount: str) -> int:
    """Bytes in ``amount``: a bare integer is bytes here (not MB, as in config files);
    ``"256MB"`` works too."""
    if amount.strip().isdigit():
        return int(amount)
    from devloop.units import parse_size

    return parse_size(amount)


def _say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def touch_memory(n_bytes: int) -> bytearray:
    """``n_bytes`` allocated and written page by page, so all of it is resident."""
    block = bytearray(n_bytes)
    page = os.sysconf("SC_PAGE_SIZE")
    for offset in range(0, n_bytes, page):
        block[offset] = 1
    return block


def run(kind: str, amount: str) -> None:
    """Put the load in place and say ``ready PID [BURNER...]``; then each line read from stdin
    is a new amount (``level AMOUNT [BURNER...]`` once applied), until stdin ends or the parent
    dies."""
    die_with_parent(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stress test decides when loads stop
    load = Load(kind)
    try:
        load.set(amount)
        _say("ready", os.getpid(), *load.burners)
        for line in sys.stdin:
            if line.strip():
                load.set(line.strip())
                _say("level", line.strip(), *load.burners)
    finally:
        load.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m devloop.runner.load cpu|memory|files|threads AMOUNT")
    from devloop.errors import DevloopError

    try:
        run(args[0], args[1])
    except (ValueError, DevloopError) as exc:
        raise SystemExit(f"bad amount {args[1]!r}: {exc}") from exc


if __name__ == "__main__":
    main()
