"""Kernel sources for the CPU of exited processes: BSD process accounting against wait4.

    sudo python bench/kernel_sources.py [--runs 30]

Issue 12 asks whether the kernel offers a cheaper exact source than the launcher's ``wait4`` for
processes that start and exit between ticks. Process accounting (``acct(2)``) writes one record
per exiting process, machine-wide, to a file; this runs ``--runs`` short CPU burners (10 ms to
0.5 s) with accounting on, and compares each record's CPU with ``wait4``'s for the same pid.
It needs root (CAP_SYS_PACCT) and prints why when it cannot run. Taskstats (netlink, per-pid
exit records with CAP_NET_ADMIN) is not measured: it needs the same privilege, which a developer
tool cannot assume.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import statistics
import struct
import subprocess
import sys
import tempfile

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
_RECORD = struct.Struct("<BBHIIIIIIfHH")  # struct acct_v3, up to ac_stime (64 bytes in all)
AHZ = 100  # acct_v3 times are comp_t in 1/100 s


def comp_t(value: int) -> int:
    """A comp_t: 13-bit mantissa, 3-bit base-8 exponent."""
    return (value & 0x1FFF) << (3 * (value >> 13))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    with tempfile.NamedTemporaryFile(prefix="devloop-acct-") as log:
        if libc.acct(log.name.encode()) != 0:
            print(f"acct(2) unavailable: {errno.errorcode.get(ctypes.get_errno())} (needs root)")
            return
        exact: dict[int, float] = {}
        try:
            for i in range(args.runs):
                seconds = [0.01, 0.02, 0.05, 0.1, 0.5][i % 5]
                child = subprocess.Popen([sys.executable, "-c", BURN.format(s=seconds)])
                _, _, usage = os.wait4(child.pid, 0)
                child.returncode = 0
                exact[child.pid] = usage.ru_utime + usage.ru_stime
        finally:
            libc.acct(None)
        data = open(log.name, "rb").read()
    accounted: dict[int, float] = {}
    for offset in range(0, len(data) - 63, 64):
        fields = _RECORD.unpack_from(data, offset)
        if fields[1] != 3:
            continue
        pid, utime, stime = fields[6], fields[10], fields[11]
        accounted[pid] = (comp_t(utime) + comp_t(stime)) / AHZ
    errors = [abs(accounted[pid] - cpu) for pid, cpu in exact.items() if pid in accounted]
    relative = [abs(accounted[pid] - cpu) / cpu for pid, cpu in exact.items() if pid in accounted]
    print(f"{len(errors)} of {len(exact)} processes have an accounting record")
    print(f"acct vs wait4 CPU: median error {statistics.median(errors) * 1000:.1f} ms "
          f"({statistics.median(relative):.1%}), worst {max(errors) * 1000:.1f} ms "
          f"({max(relative):.1%}); resolution: acct 1/{AHZ} s (comp_t), wait4 1 µs")  # fmt: skip


if __name__ == "__main__":
    main()
