"""The store's pyarrow work in a short-lived child process, so the collector never loads pyarrow.

The collector runs for months and must stay small (60 MB RSS at most); pyarrow and Parquet alone
take ~55 MB, and a process never gives that back once they are imported. So the collector only
appends to the spool (pure Python, see spool.py) and hands each closed segment, and the hourly
compaction, to a child::

    python -m devloop.store.convert segments ROOT PARENT_PID SEGMENT...
    python -m devloop.store.convert compact ROOT PARENT_PID [max-age=S] [ship-to=URI] ...

which imports pyarrow, does the work with the same functions as in-process callers
(:func:`~devloop.store.recovery.convert_segment`; :func:`~devloop.store.compact.compact`, which
writes the closed hours' rollups in the same pass, then :func:`~devloop.store.ship.ship`
and retention when asked),
writes one JSON object per line on stdout (``{"segment": ...}`` per converted segment,
``{"warning": ...}``, ``{"compacted": ...}``, ``{"error": ...}`` before exiting 1) and exits.

A fresh interpreter rather than ``os.fork()``: it costs ~0.1 s more CPU per conversion (about
0.45 s against 0.35 s for a minute of 200 processes, both mostly importing pyarrow), but a fork
copies whatever the collector's other threads hold (``devloop run`` waits for its command in a
thread; Python 3.12 warns about fork with threads), and its state: descriptors, signal
handlers, warning filters. Crash safety is recovery.py's: the
child dies with the collector (``PR_SET_PDEATHSIG`` on Linux), which is a crash mid-conversion,
so the segment is still in the spool and the next child or the next start converts it. A
``segments`` child also keeps the writer lock's descriptor, so where there is no parent-death
signal, a new collector cannot start converting the same segments while an orphan still runs.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import devloop
from devloop.errors import DevloopError, StoreError
from devloop.store.layout import StoreWarning
from devloop.store.recovery import SegmentReport

_MODULE: Final = "devloop.store.convert"
_PR_SET_PDEATHSIG: Final = 1
_SIGKILL: Final = 9


def report_to_json(report: SegmentReport) -> dict[str, Any]:
    """A SegmentReport as JSON-able values."""
    return {
        "segment": str(report.segment),
        "rows": report.rows,
        "files_written": [str(path) for path in report.files_written],
        "torn_bytes": report.torn_bytes,
        "quarantined": report.quarantined,
        "skipped_bytes": report.skipped_bytes,
        "skipped_records": report.skipped_records,
    }


def report_from_json(data: dict[str, Any]) -> SegmentReport:
    """The SegmentReport that :func:`report_to_json` wrote."""
    return SegmentReport(
        segment=Path(data["segment"]),
        rows={str(table): int(rows) for table, rows in data["rows"].items()},
        files_written=tuple(Path(path) for path in data["files_written"]),
        torn_bytes=int(data["torn_bytes"]),
        quarantined=bool(data["quarantined"]),
        skipped_bytes=int(data.get("skipped_bytes", 0)),
        skipped_records=int(data.get("skipped_records", 0)),
    )


def _child_environment() -> dict[str, str]:
    """Our environment, plus the folder this devloop was imported from when it is not an
    installed one (a source checkout on sys.path), so the child runs this same code."""
    package_parent = Path(devloop.__file__).resolve().parent.parent
    installed = {Path(folder).resolve() for folder in site.getsitepackages()}
    if package_parent in installed:
        return dict(os.environ)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_parent), path]))}


class ChildJob:
    """One running child; :meth:`poll` never blocks, so the collector keeps ticking meanwhile."""

    def __init__(
        self,
        command: str,
        root: Path,
        segments: Sequence[Path | str] = (),
        *,
        keep_fds: Sequence[int] = (),
    ) -> None:
        """Start ``python -m devloop.store.convert command root <our pid> segments...``.

        ``keep_fds`` are handed down (the writer lock's descriptor); everything else is closed.
        Raises StoreError when the child cannot be started.
        """
        self.command = command
        env = _child_environment()
        argv = [sys.executable, "-m", _MODULE, command, str(root), str(os.getpid())]
        try:
            self.process = subprocess.Popen(
                [*argv, *map(str, segments)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=tuple(keep_fds),
                start_new_session=True,  # Ctrl-C in a terminal is for the collector, not for us
            )
        except OSError as exc:
            raise StoreError(f"cannot start the store's {command} process: {exc}") from exc
        assert self.process.stdout is not None
        self._stdout = self.process.stdout.fileno()
        os.set_blocking(self._stdout, False)
        self._output = bytearray()
        self.messages: list[dict[str, Any]] = []

    def poll(self) -> bool:
        """Read what the child wrote so far (a full pipe would block it); True once it exited."""
        self._drain()
        if self.process.poll() is None:
            return False
        self._drain()  # what it wrote between the read above and its exit
        self._finish()
        return True

    def wait(self) -> None:
        """Block until the child exits (at once if it already did)."""
        assert self.process.stdout is not None
        if self.process.stdout.closed:
            return
        os.set_blocking(self._stdout, True)
        self._drain()
        self.process.wait()
        self._finish()

    @property
    def failure(self) -> str | None:
        """Why the child failed, or None if it succeeded (call after it exited)."""
        errors = [str(message["error"]) for message in self.messages if "error" in message]
        if errors:
            return "; ".join(errors)
        code = self.process.returncode
        if code == 0:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"the store's {self.command} process {how}"

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._stdout, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._output += chunk

    def _finish(self) -> None:
        assert self.process.stdout is not None
        self.process.stdout.close()
        lines = bytes(self._output).splitlines()
        self._output.clear()
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a line cut short by the child's death
            if isinstance(message, dict):
                self.messages.append(message)

    def reports(self) -> list[SegmentReport]:
        """The segments the child converted."""
        return [report_from_json(m["segment"]) for m in self.messages if "segment" in m]

    def warning_messages(self) -> list[str]:
        """The StoreWarnings the child raised, to raise again in the parent."""
        return [str(m["warning"]) for m in self.messages if "warning" in m]


# -- the child --------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL us when the collector dies: an orphan conversion must never run
    beside the next collector's recovery of the same segment."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the call above
        os._exit(1)


class _NoPandas:
    """Makes pandas look not installed. pyarrow imports it, when it is, on its first conversion
    of a Python value (a sort key, a divisor): 0.3 s of CPU and 40 MB, more than a conversion
    costs. pyarrow treats pandas as optional, and the child never needs it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run(command: str, root: Path, segments: list[str]) -> None:
    if command == "segments":
        from devloop.store.recovery import convert_segment

        for name in segments:
            _emit({"segment": report_to_json(convert_segment(root, Path(name)))})
    elif command == "compact":
        from dataclasses import asdict

        from devloop.store.compact import compact

        _emit({"compacted": asdict(compact(root))})
        # Options ride along as "max-age=SECONDS", "max-bytes=N", "ship-to=URI" arguments.
        limits = dict(arg.split("=", 1) for arg in segments if "=" in arg)
        if "ship-to" in limits:  # before retention, so no hour is dropped unshipped
            _ship(root, limits["ship-to"], limits.get("ship-endpoint-url"))
        if "max-age" in limits or "max-bytes" in limits:
            from devloop.store.retention import retention

            report = retention(
                root,
                max_age_seconds=float(limits["max-age"]) if "max-age" in limits else None,
                max_bytes=int(limits["max-bytes"]) if "max-bytes" in limits else None,
            )
            _emit({"dropped": len(report.dropped), "reason": report.reason})
    else:
        raise StoreError(f"unknown command {command!r}")


def _ship(root: Path, uri: str, endpoint_url: str | None) -> None:
    """Ship the compacted hours; a failure (the store unreachable, another ship running) is a
    warning for the collector's log, and the next hour's child tries again."""
    from devloop.store.ship import parse_target, ship

    try:
        report = ship(root, parse_target(uri, endpoint_url))
    except DevloopError as exc:
        _emit({"warning": f"ship to {uri} skipped: {exc}"})
        return
    _emit({"shipped": len(report.shipped), "bytes": report.bytes})


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point (see the module doc); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or not args[2].isdigit():
        sys.stderr.write(f"usage: python -m {_MODULE} segments|compact ROOT PARENT_PID [SEG...]\n")
        return 2
    command, root, parent = args[0], Path(args[1]), int(args[2])
    _die_with_parent(parent)
    sys.meta_path.insert(0, _NoPandas())
    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        try:
            _run(command, root, args[3:])
        except DevloopError as exc:
            _emit({"error": str(exc)})
            code = 1
    for warning in caught:
        if issubclass(warning.category, StoreWarning):
            _emit({"warning": str(warning.message)})
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return code


if __name__ == "__main__":
    sys.exit(main())
