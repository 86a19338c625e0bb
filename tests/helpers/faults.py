"""The fault campaign (issue 15): SIGKILL every writer at seeded random points, restart, check.

One implementation for ``tests/test_faults.py`` (a few kills per writer) and ``bench/faults.py``
(twenty, and a table). Each writer is a function ``(Campaign, kills) -> list[Outcome]`` in
:data:`WRITERS`; it starts the real devloop processes, kills them, restarts them, and measures
the same invariants for every writer:

* rows lost: rows a writer had made durable (or, for compaction and retention, rows the store
  held before) that are missing after the restart, beyond the tick in flight;
* duplicates: rows present more than once;
* files unreadable: Parquet files that fail a full read with page checksums verified, damaged
  spool segments (``*.seg.bad``), and temporary files the restart left behind;
* processes left stopped: agents still in state T after the watchdog's bound;
* workspace.json invalid: a config file that is not valid JSON, or a set of files neither all
  old nor all new after recovery.

How a process is killed at a *point* rather than at a moment: the processes run with a
``sitecustomize`` (written by :func:`fault_site`, found through PYTHONPATH) that wraps the
``os`` functions that change files (write, fsync, fdatasync, replace, rename, unlink, mkdir...).
A process whose command line matches ``DEVLOOP_FAULT_MATCH`` appends each call to a trace file
(``pid n op path done``) after it returns; the one matching ``DEVLOOP_FAULT_KILL``
(``<argv part>:<n>``, comma-separated: the first part found) sends itself SIGKILL just before
its n-th call (only the first such process, when ``DEVLOOP_FAULT_ONCE`` names a marker: the
retry then succeeds). ``DEVLOOP_FAULT_FULL`` names a
flag file: while it exists the calls listed in ``DEVLOOP_FAULT_FULL_ON`` (``op:suffix`` of the
path) fail with ENOSPC, an injected disk full. The trace gives each killed run's acknowledged
ticks exactly: one ``fdatasync`` of a spool segment per tick.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
BURN = REPO / "tests" / "helpers" / "burn.py"
DEADLINE = 60.0  # generous: a loaded, shared 2-core machine is slow to start Python
BOUND = 20.0  # the watchdog's documented bound is 10 s; twice that on a loaded machine
INTERVAL = "0.1s"  # the collector's tick in the store campaigns

SITE = r'''
"""The fault campaign's injector (tests/helpers/faults.py): traced, killed, or refused calls."""
import os as _os

_MATCH = _os.environ.get("DEVLOOP_FAULT_MATCH")
if _MATCH:
    import errno as _errno
    import signal as _signal
    import sys as _sys

    _OPS = ("write", "pwrite", "ftruncate", "fsync", "fdatasync", "replace", "rename", "link",
            "unlink", "rmdir", "mkdir", "chmod")
    _KILLS = [item.rpartition(":") for item in
              _os.environ.get("DEVLOOP_FAULT_KILL", "").split(",") if ":" in item]
    _TRACE = _os.environ.get("DEVLOOP_FAULT_TRACE")
    _ONCE = _os.environ.get("DEVLOOP_FAULT_ONCE")
    _FULL = _os.environ.get("DEVLOOP_FAULT_FULL")
    _FULL_ON = [item.split(":", 1) for item in
                _os.environ.get("DEVLOOP_FAULT_FULL_ON", "").split(",") if ":" in item]
    _real = {name: getattr(_os, name) for name in _OPS}
    _state = {"decided": False, "on": False, "kill": 0, "which": 0, "n": 0, "fd": None}

    def _decide():
        if not _state["decided"]:
            argv = " ".join(_sys.argv)
            _state["on"] = any(part in argv for part in _MATCH.split("|"))
            for which, (part, _, at) in enumerate(_KILLS):
                if at.isdigit() and part in argv:
                    _state["kill"], _state["which"] = int(at), which
                    break
            _state["decided"] = True
        return _state["on"]

    def _path(args):
        if not args:
            return "?"
        first = args[0]
        if isinstance(first, int):
            try:
                return _os.readlink(f"/proc/self/fd/{first}")
            except OSError:
                return "?"
        try:
            return _os.fsdecode(first)
        except TypeError:
            return "?"

    def _note(n, name, path, what):
        if not _TRACE:
            return
        if _state["fd"] is None:
            _state["fd"] = _os.open(_TRACE, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT
                                    | _os.O_CLOEXEC, 0o644)
        line = f"{_os.getpid()} {n} {name} {path.replace(' ', '_')} {what}\n"
        _real["write"](_state["fd"], line.encode())

    def _first():
        if not _ONCE:
            return True
        try:
            marker = f"{_ONCE}.{_state['which']}"
            _os.close(_os.open(marker, _os.O_CREAT | _os.O_EXCL | _os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True

    def _wrap(name):
        real = _real[name]

        def call(*args, **kwargs):
            if not _decide():
                return real(*args, **kwargs)
            _state["n"] += 1
            n = _state["n"]
            path = _path(args)
            if _FULL and any(name == op and path.endswith(suffix) for op, suffix in _FULL_ON):
                if _os.path.exists(_FULL):
                    _note(n, name, path, "full")
                    raise OSError(_errno.ENOSPC, _os.strerror(_errno.ENOSPC))
            if n == _state["kill"] and _first():
                _note(n, name, path, "kill")
                _os.kill(_os.getpid(), _signal.SIGKILL)
            result = real(*args, **kwargs)
            _note(n, name, path, "done")
            return result

        call.__name__ = name
        return call

    for _name in _OPS:
        setattr(_os, _name, _wrap(_name))
'''


def fault_site(folder: Path) -> Path:
    """Write the injector as ``folder/sitecustomize.py``; returns ``folder`` (for PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITE)
    return folder


@dataclass(frozen=True)
class TraceLine:
    """One call a traced process made (``what``: done, kill or full)."""

    pid: int
    n: int
    op: str
    path: str
    what: str


def read_trace(path: Path) -> list[TraceLine]:
    """The calls of a trace file (a line cut short by SIGKILL is dropped)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        words = line.split(" ")
        if len(words) == 5 and words[0].isdigit() and words[1].isdigit():
            found.append(TraceLine(int(words[0]), int(words[1]), words[2], words[3], words[4]))
    return found


def synced_ticks(trace: list[TraceLine], pid: int) -> int:
    """Ticks ``pid`` made durable: one fdatasync of a spool segment each."""
    return sum(
        1
        for t in trace
        if t.pid == pid and t.op == "fdatasync" and t.path.endswith(".seg") and t.what == "done"
    )


@dataclass
class Outcome:
    """What one kill (or one disk-full outage) left, after the restart."""

    writer: str
    killed: bool  # the kill point was reached (False: the process finished before it)
    rows_lost: int = 0
    unreadable: int = 0
    stopped: int = 0
    duplicates: int = 0
    workspace_invalid: int = 0
    #: enforcement state (pause journal, watchdog) or files of a reader left behind
    state_left: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Every invariant held."""
        return not (
            self.rows_lost or self.unreadable or self.stopped or self.duplicates
            or self.workspace_invalid or self.state_left
        )  # fmt: skip


# --- processes -------------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z", "X")


def tagged(project: str) -> list[int]:
    """Live processes whose environment tags them with ``project``."""
    marker = f"DEVLOOP_PROJECT={project}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env and not gone(int(name)):
            found.append(int(name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what or predicate}")
        time.sleep(0.02)


def watchdogs(folder: Path) -> list[int]:
    """The live watchdogs of a workspace folder."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"devloop.core.watchdog" in argv and str(folder).encode() in b" ".join(argv):
            if not gone(int(name)):
                found.append(int(name))
    return found


class Campaign:
    """A scratch folder, a seeded random source, and every process started, ended on exit."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.run = uuid.uuid4().hex[:6]
        self.site = fault_site(tmp / "_fault_site")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._projects: list[str] = []

    def project(self, name: str) -> str:
        """A project name unique to this campaign (its tagged processes are ended at exit)."""
        project = f"fault-{name}-{self.run}"
        self._projects.append(project)
        return project

    def folder(self, name: str) -> Path:
        """A fresh empty folder."""
        path = self.tmp / name.replace(" ", "-")
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def env(
        self,
        *,
        match: str = "devloop",
        kill: str = "",
        trace: Path | None = None,
        once: Path | None = None,
        full: Path | None = None,
        full_on: str = "",
        tags: tuple[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment of a devloop process under the injector."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
        if "DEVLOOP_TEST_SESSION" in os.environ:  # the suite's check for stray processes
            env["DEVLOOP_TEST_SESSION"] = os.environ["DEVLOOP_TEST_SESSION"]
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(self.site), str(REPO / "src"), os.environ.get("PYTHONPATH")])
        )
        env["DEVLOOP_FAULT_MATCH"] = match
        for key, value in (("KILL", kill), ("TRACE", trace), ("ONCE", once), ("FULL", full),
                           ("FULL_ON", full_on)):  # fmt: skip
            if value:
                env[f"DEVLOOP_FAULT_{key}"] = str(value)
        if tags is not None:
            env["DEVLOOP_PROJECT"], env["DEVLOOP_AGENT"] = tags
        return env

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a process (stdout and stderr to ``log``); ended at exit if still running."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self._procs.append(proc)
        return proc

    def devloop(
        self, *args: str | Path, env: dict[str, str], log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        return self.start([sys.executable, "-m", "devloop", *map(str, args)], env, log=log)

    def run_devloop(self, *args: str | Path, env: dict[str, str], log: Path | None = None) -> int:
        """Run a devloop command to its end; its exit code (negative: the signal)."""
        proc = self.devloop(*args, env=env, log=log)
        return proc.wait(DEADLINE * 2)

    def sleepers(self, project: str, count: int) -> list[int]:
        """``count`` sleeping processes tagged with ``project``."""
        env = self.env(tags=(project, "sleeper"))
        return [self.start(["sleep", "600"], env).pid for _ in range(count)]

    def close(self) -> None:
        """Kill and reap every process started, and every process tagged by a project."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for project in self._projects:
            for pid in tagged(project):
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
        for project in self._projects:
            wait_until(lambda p=project: tagged(p) == [], what=f"tagged {project} gone")  # type: ignore[misc]


@contextmanager
def campaign(tmp: Path, seed: int) -> Iterator[Campaign]:
    """A Campaign whose processes are all gone when the block ends."""
    c = Campaign(tmp, seed)
    try:
        yield c
    finally:
        c.close()


# --- the store's invariants ------------------------------------------------------------------

KEYS = {
    "samples": "host, pid, start_time, ts",
    "system": "host, ts",
    "processes": "host, pid, start_time, ts",  # once per collector that saw it first
}


def workspace(folder: Path, project: str, **limits: Any) -> Path:
    """``folder/.devloop-workspace/workspace.json`` with one project; returns the folder."""
    ws = folder / ".devloop-workspace"
    ws.mkdir(parents=True, exist_ok=True)
    data = {"workspace_name": "faults", "projects": [{"name": project, "path": "proj"}]}
    if limits:
        data["global"] = {"resourceLimits": limits}
    (ws / "workspace.json").write_text(json.dumps(data, indent=2))
    (folder / "proj").mkdir(exist_ok=True)
    return ws


def unreadable_files(root: Path) -> list[str]:
    """Parquet files that fail a full, checksum-verified read; damaged spool segments;
    temporary files and half-dropped hours left behind (after a restart: none)."""
    bad = []
    for path in sorted(root.rglob("*")):
        name = path.name
        if path.is_file() and name.endswith(".parquet"):
            try:
                pq.read_table(path, page_checksum_verification=True)
            except Exception as exc:  # noqa: BLE001 - any failure to read counts
                bad.append(f"{path.relative_to(root)}: {exc}")
        elif name.endswith((".seg.bad", ".corrupt", ".tmp")) or name.startswith(".drop-"):
            bad.append(str(path.relative_to(root)))
    return bad


def rows(root: Path, table: str, where: str = "") -> list[tuple[Any, ...]]:
    """Every row of ``table`` through the store's views (the spool's tail included)."""
    from devloop.store import connect

    with connect(root) as db:
        return db.execute(f"SELECT * FROM {table} {where}").fetchall()


def duplicates(root: Path) -> int:
    """Rows whose key appears more than once (samples, system, processes), plus rows present
    twice in the other tables."""
    from devloop.store import connect
    from devloop.store.schema import TABLES as ALL

    extra = 0
    with connect(root) as db:
        for table in ALL:
            key = KEYS.get(table, table)  # a table's name stands for its whole row
            found = db.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchone()
            extra += int(found[0]) if found else 0
    return extra


def multiset_difference(before: list[Any], after: list[Any]) -> tuple[int, int]:
    """(rows of ``before`` missing from ``after``, rows of ``after`` beyond ``before``)."""
    a, b = Counter(before), Counter(after)
    return sum((a - b).values()), sum((b - a).values())


def tick_times(root: Path) -> list[float]:
    """The ``system`` row times, in seconds, sorted (one row per collector tick)."""
    from devloop.store import connect

    with connect(root) as db:
        found = db.execute("SELECT epoch_us(ts) FROM system ORDER BY ts").fetchall()
    return [value / 1e6 for (value,) in found]


def stop_ticks(root: Path) -> list[int]:
    """The tick counts of the collectors that stopped cleanly (their ``stop`` events)."""
    from devloop.store import connect

    with connect(root) as db:
        found = db.execute(
            "SELECT message FROM events WHERE action = 'stop' ORDER BY ts"
        ).fetchall()
    return [int(message.split(" after ")[1].split()[0]) for (message,) in found]


# --- collector tick and spool conversion -----------------------------------------------------


@dataclass
class CollectorRun:
    """One collector process of a chain: when it ended and what it made durable."""

    pid: int
    ended: float  # wall time, after it exited
    code: int
    acked: int  # ticks made durable (from the trace); for a clean stop, its stop event says
    stopped: bool = False  # it stopped (exit 0, or 1 for a failed last conversion): it says


#: One collector run of a plan: (kill specs for DEVLOOP_FAULT_KILL, durable ticks after which
#: the test stops it with SIGTERM, 0: never, the kill ends it).
RunPlan = tuple[str, int]


def _collector_chain(c: Campaign, name: str, plan: list[list[RunPlan]]) -> list[Outcome]:
    """Collector runs on one store, ``plan[i]`` being the runs of kill ``i``, then a clean
    run; checks every run's durable ticks against the store. A collector that exits 1 at its
    stop because its conversion child was killed (said on stderr; the next start converts) is
    allowed; one that does not start is not."""
    base = c.folder(name)
    project = c.project(name)
    ws = workspace(base, project)
    metrics = ws / "metrics"
    sleepers = c.sleepers(project, 3)
    runs: list[CollectorRun] = []
    owner: list[int] = []  # the kill each run belongs to (-1: the final clean run)
    outcomes = [Outcome(name, killed=False) for _ in plan]
    steps = [(i, run) for i, group in enumerate(plan) for run in group] + [(-1, ("", 0))]
    for number, (kill, (spec, ticks)) in enumerate(steps):
        trace = base / f"run-{number}.trace"
        env = c.env(match="workspace collect|convert.py", kill=spec, trace=trace,
                    once=base / f"run-{number}.once")  # fmt: skip
        log = base / f"run-{number}.log"
        args = ["workspace", "collect", "--workspace-dir", ws, "--interval", INTERVAL]
        proc = c.devloop(*args, *(["--duration", "1s"] if kill < 0 else []), env=env, log=log)
        if ticks > 0:
            wait_until(
                lambda p=proc, t=trace, n=ticks: (
                    synced_ticks(read_trace(t), p.pid) >= n  # type: ignore[misc]
                    or p.poll() is not None
                ),
                what=f"{ticks} ticks of run {number}",
            )
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        code = proc.wait(DEADLINE * 2)
        lines = read_trace(trace)
        text = log.read_text(errors="replace")
        said = code == 1 and "Recording " in text and "Error: converting the spool" in text
        runs.append(CollectorRun(proc.pid, time.time(), code, synced_ticks(lines, proc.pid),
                                 stopped=code == 0 or said))  # fmt: skip
        owner.append(kill)
        if kill < 0:
            assert code == 0, text
            continue
        outcome = outcomes[kill]
        outcome.killed |= any(t.what == "kill" for t in lines)
        if said:
            # its conversion child killed at the stop: said, the segment kept for the next start
            outcome.notes.append(f"run {number}: the stop said its conversion child was killed")
        elif code not in (0, -signal.SIGKILL):
            outcome.notes.append(f"run {number} exited {code}: {text[-300:]}")
            outcome.state_left += 1  # a collector that does not start does not enforce

    # What every run made durable is in the store, once.
    ticks_stored = tick_times(metrics)
    clean = iter(stop_ticks(metrics))
    previous = 0.0
    last = Outcome(name, killed=False)
    for kill, run in zip(owner, runs, strict=True):
        present = sum(1 for t in ticks_stored if previous < t <= run.ended)
        # a clean stop says how many ticks it made; a stop whose conversion failed (exit 1)
        # made its ticks durable too, and so did a killed run up to its last fdatasync
        expected = next(clean) if run.stopped else run.acked
        target = outcomes[kill] if kill >= 0 else last
        target.rows_lost += max(0, expected - present)
        if present > expected + 1:  # more than the tick in flight: rows from nowhere
            target.notes.append(f"{present} ticks stored, {expected} synced")
        previous = run.ended
    final = outcomes[-1]
    final.rows_lost += last.rows_lost
    final.notes += last.notes
    final.duplicates += duplicates(metrics)
    bad = unreadable_files(metrics) + [p.name for p in (metrics / "_spool").glob("*.seg")]
    final.unreadable += len(bad)
    samples = rows(metrics, "samples", f"WHERE project = '{project}'")
    partial = sum(1 for n in Counter(row[0] for row in samples).values() if n != len(sleepers))
    final.rows_lost += partial * len(sleepers)  # a tick's rows are one record: all or none
    final.stopped += sum(1 for pid in sleepers if proc_state(pid) == "T")
    if bad or partial:
        final.notes.append(f"unreadable or left in the spool {bad}, partial ticks {partial}")
    return outcomes


def collector_tick(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop workspace collect`` SIGKILLed at its n-th file call (lock, spool create,
    append, fdatasync, ...), n random in 1..80 (start-up and the first 20 ticks or so), then
    restarted: the restart converts what it left."""
    return _collector_chain(
        c,
        "collector tick",
        [[(f"workspace collect:{c.rng.randint(1, 80)}", 0)] for _ in range(kills)],
    )


def conversion_child(c: Campaign, kills: int) -> list[Outcome]:
    """The collector's conversion child SIGKILLed at its n-th file call (n random in 1..24),
    either at start, converting the segment a SIGKILLed collector left (the collector starts
    all the same and its next tick retries), or at the collector's clean stop (SIGTERM),
    converting its last segment (the collector retries at once)."""
    plan: list[list[RunPlan]] = []
    for _ in range(kills):
        child = f"convert.py segments:{c.rng.randint(1, 24)}"
        ticks = c.rng.randint(3, 10)
        if c.rng.random() < 0.5:  # at start: the previous collector SIGKILLed after some ticks
            plan.append([(f"workspace collect:{c.rng.randint(20, 60)}", 0), (child, ticks)])
        else:
            plan.append([(child, ticks)])
    return _collector_chain(c, "conversion child", plan)


# --- compaction and retention ----------------------------------------------------------------

#: The maintenance store: four closed hours from 2024-03-04 10:00 UTC, a tick a minute, three
#: processes, segments rolled every 20 ticks (three files per hour and table to compact).
HOURS = 4


def maintenance_store(folder: Path) -> Path:
    """A workspace whose store holds :data:`HOURS` closed hours in small files; its folder."""
    from devloop.store import StoreWriter
    from tests.test_store_support import SECOND, T0, FakeClock, system_row, tick_rows

    ws = workspace(folder, "alpha")
    clock = FakeClock()
    with StoreWriter(ws / "metrics", segment_seconds=20, clock=clock) as writer:
        for tick in range(HOURS * 60):
            clock.now = tick
            ts = T0 + tick * 60 * SECOND
            writer.append("samples", tick_rows(ts))
            writer.append("system", [system_row(ts)])
            writer.flush()
    return ws


def _table_rows(metrics: Path, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    return {table: rows(metrics, table) for table in tables}


def _compare(outcome: Outcome, expected: dict[str, list[Any]], metrics: Path, when: str) -> None:
    """Add what ``metrics`` lost or holds twice, against ``expected``, to ``outcome``."""
    for table, before in expected.items():
        lost, extra = multiset_difference(before, rows(metrics, table))
        outcome.rows_lost += lost
        outcome.duplicates += extra
        if lost or extra:
            outcome.notes.append(f"{when}: {table} lost {lost}, extra {extra}")


def _maintenance_kills(
    c: Campaign,
    name: str,
    kills: int,
    base: Path,
    args: Callable[[], list[str]],
    restart: Callable[[Path], None],
    expected: dict[str, list[Any]],
    consistent_before_restart: bool,
) -> list[Outcome]:
    """Kill ``devloop workspace compact <args()>`` on copies of ``base`` at random file calls,
    restart with ``restart(metrics)``, and compare the store with ``expected``."""
    counting = c.folder(f"{name}-count")
    shutil.copytree(base, counting / base.name)
    trace = counting / "trace"
    code = c.run_devloop(
        "workspace", "compact", "--workspace-dir", counting / base.name, *args(),
        env=c.env(match="workspace compact", trace=trace), log=counting / "log",
    )  # fmt: skip
    assert code == 0, (counting / "log").read_text()
    calls = len(read_trace(trace))
    outcomes = []
    for i in range(kills):
        at = c.rng.randint(1, calls)
        scratch = c.folder(f"{name}-{i}")
        ws = scratch / base.name
        shutil.copytree(base, ws)
        metrics = ws / "metrics"
        code = c.run_devloop(
            "workspace", "compact", "--workspace-dir", ws, *args(),
            env=c.env(match="workspace compact", kill=f"workspace compact:{at}"),
            log=scratch / "log",
        )  # fmt: skip
        outcome = Outcome(name, killed=code == -signal.SIGKILL)
        if code not in (0, -signal.SIGKILL):
            outcome.notes.append(f"exit {code}: {(scratch / 'log').read_text()[-300:]}")
            outcome.unreadable += 1
        if consistent_before_restart:  # what readers see right after the kill
            _compare(outcome, expected, metrics, f"killed at call {at}, before the restart")
        restart(metrics)
        _compare(outcome, expected, metrics, f"killed at call {at}, after the restart")
        bad = unreadable_files(metrics)
        outcome.unreadable += len(bad)
        if bad:
            outcome.notes.append(f"killed at call {at}: {bad}")
        outcome.duplicates += duplicates(metrics)
        outcomes.append(outcome)
    return outcomes


def _quietly(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def compaction(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop workspace compact`` SIGKILLed at its n-th file call (n random over all of a
    clean run's calls: temps, fsyncs, renames, deletions of inputs, rollups); the restart is
    the next compaction. Readers must see every row exactly once even before it."""
    from devloop.store import compact

    base = maintenance_store(c.folder("compaction-base"))
    expected = _table_rows(base / "metrics", ("samples", "system"))
    return _maintenance_kills(
        c, "compaction", kills, base, list, lambda m: _quietly(compact, m), expected, True
    )


def retention_kills(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop workspace compact --retention`` (on a compacted store) SIGKILLed at its n-th
    file call: hours 10:00 and 11:00 of four are dropped, by rename then delete per table;
    the restart is the next retention run. Afterwards the store is what a clean run leaves."""
    from devloop.store import compact, retention
    from tests.test_store_support import HOUR, T0, T0_DT

    base = maintenance_store(c.folder("retention-base"))
    _quietly(compact, base / "metrics")
    cutoff = T0_DT.timestamp() + 2.5 * 3600  # mid-hour: seconds of drift change nothing
    keep = f"WHERE epoch_us(ts) >= {T0 + 2 * HOUR}"
    expected = {table: rows(base / "metrics", table, keep) for table in ("samples", "system")}

    def args() -> list[str]:
        return ["--retention", f"{time.time() - cutoff:.0f}s"]

    def restart(metrics: Path) -> None:  # as `compact --retention` does
        _quietly(compact, metrics)
        now = datetime.now(UTC)
        _quietly(retention, metrics, now.timestamp() - cutoff, now=now)

    return _maintenance_kills(c, "retention", kills, base, args, restart, expected, False)


# --- apply-tuning ----------------------------------------------------------------------------


def _config_state(ws: Path) -> dict[str, bytes]:
    """workspace.json and every agents.json, by path inside the workspace."""
    found = [ws / "workspace.json", *sorted(ws.glob("projects/*/.devloop/agents.json"))]
    return {str(path.relative_to(ws)): path.read_bytes() for path in found}


def _tuning_leftovers(ws: Path) -> list[str]:
    """Temp files, and backup folders without a manifest."""
    found = [str(path.relative_to(ws)) for path in ws.rglob("*.tmp")]
    backups = ws / "tuning-backups"
    for folder in backups.iterdir() if backups.is_dir() else ():
        if folder.is_dir() and not any(
            (folder / name).is_file() for name in ("manifest.json", "manifest.json.restored")
        ):
            found.append(str(folder.relative_to(ws)))
    return found


def _apply_in_process(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from devloop.cli import cli

    result = CliRunner().invoke(cli, ["workspace", "apply-tuning", *args])
    return result.exit_code, result.output


def apply_tuning(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop workspace apply-tuning`` (or ``--rollback``, at random) on a simulated
    workspace, SIGKILLed at its n-th file call (n random over a clean run's calls). Every
    config file must be valid JSON at once; after the next apply-tuning's recovery (a
    ``--dry-run``), all old or all new, and no temp file or backup without manifest left."""
    from click.testing import CliRunner

    from devloop.cli import cli
    from devloop.simulate import simulate

    base = c.folder("apply-base") / ".devloop-workspace"
    simulate(base, hours=3, interval=10.0, seed=1)
    suggestions = base.parent / "suggestions.json"
    tuned = CliRunner().invoke(
        cli, ["workspace", "autotune", "--workspace-dir", str(base), "--output", str(suggestions)]
    )
    assert tuned.exit_code == 0, tuned.output
    old = _config_state(base)
    applied = c.folder("apply-new") / base.name
    shutil.copytree(base, applied)
    commands = {"apply": [str(suggestions)], "rollback": ["--rollback"]}
    sources = {"apply": base, "rollback": applied}
    calls: dict[str, int] = {}
    for command, args in commands.items():  # a clean run of each, traced: its file calls
        trace = applied.parent / f"{command}.trace"
        code = c.run_devloop(
            "workspace", "apply-tuning", *args, "--workspace-dir", applied,
            env=c.env(match="apply-tuning", trace=trace), log=applied.parent / "log",
        )  # fmt: skip
        assert code == 0, (applied.parent / "log").read_text()
        calls[command] = len(read_trace(trace))
        if command == "apply":
            new = _config_state(applied)
            assert new != old
            shutil.copytree(applied, applied.parent / "after-apply")
    sources["rollback"] = applied.parent / "after-apply"
    outcomes = []
    for i in range(kills):
        command = c.rng.choice(sorted(commands))
        at = c.rng.randint(1, calls[command])
        ws = c.folder(f"apply-{i}") / base.name
        shutil.copytree(sources[command], ws)
        code = c.run_devloop(
            "workspace", "apply-tuning", *commands[command], "--workspace-dir", ws,
            env=c.env(match="apply-tuning", kill=f"apply-tuning:{at}"), log=ws.parent / "log",
        )  # fmt: skip
        outcome = Outcome("apply-tuning", killed=code == -signal.SIGKILL)
        where = f"{command} killed at call {at}"
        for name, data in _config_state(ws).items():
            try:
                json.loads(data)
            except ValueError:
                outcome.workspace_invalid += 1
                outcome.notes.append(f"{where}: {name} is not valid JSON")
        recovered, output = _apply_in_process(str(suggestions), "--workspace-dir", str(ws),
                                              "--dry-run")  # fmt: skip
        if recovered != 0:
            outcome.notes.append(f"{where}: recovery exited {recovered}: {output[-300:]}")
            outcome.workspace_invalid += 1
        if _config_state(ws) not in (old, new):
            outcome.workspace_invalid += 1
            outcome.notes.append(f"{where}: neither all old nor all new")
        left = _tuning_leftovers(ws)
        outcome.unreadable += len(left)
        if left:
            outcome.notes.append(f"{where}: left {left}")
        outcomes.append(outcome)
    return outcomes


# --- devloop run and devloop watch while their agents are held -------------------------------


def _journaled(ws: Path) -> list[int]:
    try:
        data = json.loads((ws / ".paused-processes.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [int(entry["pid"]) for entry in data["entries"]]


def enforcing_workspace(folder: Path, busy: str, calm: str, action: str) -> Path:
    """Two projects; ``busy`` may use 5 % of the machine, and is paused or throttled
    (``action``) when over; ``calm`` 20 %."""
    ws = folder / ".devloop-workspace"
    ws.mkdir(parents=True)
    data = {
        "workspace_name": "faults",
        "projects": [{"name": busy, "path": "busy"}, {"name": calm, "path": "calm"}],
        "global": {"resourceLimits": {"maxCpu": 60, "maxMemory": "2GB", "checkInterval": 1,
                                      "enforcementAction": action, "resumeThreshold": 0.8}},
        "resource_sharing": {
            "strategy": "custom",
            "perProjectLimits": {busy: {"maxCpu": 5, "maxMemory": "1GB"},
                                 calm: {"maxCpu": 20, "maxMemory": "1GB"}},
        },
    }  # fmt: skip
    (ws / "workspace.json").write_text(json.dumps(data, indent=2))
    burner = {"agents": {"burner": {"command": [sys.executable, str(BURN), "busy", "120"]}}}
    for name in ("busy", "calm"):
        (folder / name / ".devloop").mkdir(parents=True)
        (folder / name / ".devloop" / "agents.json").write_text(json.dumps(burner))
    return ws


def _runs_of(ws: Path, project: str) -> list[tuple[str, str]]:
    from devloop.store import connect

    with connect(ws / "metrics") as db:
        return db.execute(
            "SELECT agent, status FROM runs WHERE project = ? ORDER BY started", [project]
        ).fetchall()


def _held_kills(c: Campaign, kills: int, writer: str) -> list[Outcome]:
    """``devloop run`` or ``devloop watch`` (``writer``) SIGKILLed at a random moment (0-2 s)
    after its agent, a CPU burner over its project's limit, was first paused or throttled
    (alternately). The watchdog must continue it within the bound and leave no journal; the
    restarted writer records the killed run as incomplete."""
    return [_held_kill(c, writer, i, ("pause", "throttle")[i % 2]) for i in range(kills)]


def _held_kill(c: Campaign, writer: str, i: int, action: str) -> Outcome:
    """One kill of :func:`_held_kills`."""
    folder = c.folder(f"{writer}-{i}")
    busy, calm = c.project(f"{writer}-busy-{i}"), c.project(f"{writer}-calm-{i}")
    ws = enforcing_workspace(folder, busy, calm, action)
    env = c.env(match="")
    log = folder / "log"
    if writer == "run":
        proc = c.devloop("run", "--workspace-dir", ws, "-p", busy, "-a", "burner",
                         "--interval", "0.5s", "--", sys.executable, BURN, "busy", "120",
                         env=env, log=log)  # fmt: skip
    else:
        proc = c.devloop("watch", folder / "busy", "--workspace-dir", ws, "--debounce",
                         "0.2s", "--interval", "0.5s", env=env, log=log)  # fmt: skip
        wait_until(lambda: "Watching" in log.read_text() or proc.poll() is not None,
                   what="the watch")  # fmt: skip
        (folder / "busy" / "change.py").write_text("x = 1\n")

    def held(proc: subprocess.Popen[bytes] = proc) -> bool:
        pids = _journaled(ws)
        if action == "pause":
            return any(proc_state(pid) == "T" for pid in pids) or proc.poll() is not None
        return bool(pids) or proc.poll() is not None

    wait_until(held, what=f"{writer}'s agent {action}d")
    assert proc.poll() is None, log.read_text()
    time.sleep(c.rng.uniform(0.0, 2.0))  # the random moment of the kill, not a wait
    agents = set(_journaled(ws)) | set(tagged(busy))
    proc.kill()
    proc.wait(DEADLINE)
    outcome = Outcome(f"devloop {writer}", killed=True)
    stopped = sum(1 for pid in agents if proc_state(pid) == "T")
    outcome.notes.append(f"{action}: {stopped} of {len(agents)} stopped at the kill")
    try:
        wait_until(lambda: all(proc_state(pid) != "T" for pid in agents), BOUND,
                   what="agents continued")  # fmt: skip
        wait_until(lambda: watchdogs(ws) == [], BOUND, what="the watchdog gone")
    except AssertionError as exc:
        outcome.notes.append(str(exc))
    outcome.stopped += sum(1 for pid in agents if proc_state(pid) == "T")
    if (ws / ".paused-processes.json").exists() or watchdogs(ws):
        outcome.state_left += 1
        outcome.notes.append("a pause journal or a watchdog left")
    for pid in tagged(busy):  # the orphaned agents: nobody else ends them
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda b=busy: tagged(b) == [], what="the agents gone")  # type: ignore[misc]
    # The restart: the same writer again, briefly; it records the killed run.
    if writer == "run":
        code = c.run_devloop("run", "--workspace-dir", ws, "-p", calm, "-a", "probe",
                             "--interval", "0.5s", "--", sys.executable, "-c",
                             "import time; time.sleep(1)", env=env, log=log)  # fmt: skip
    else:
        code = c.run_devloop("watch", folder / "busy", "--workspace-dir", ws,
                             "--duration", "1s", "--interval", "0.5s", env=env,
                             log=log)  # fmt: skip
    if code != 0:
        outcome.notes.append(f"the restart exited {code}: {log.read_text()[-300:]}")
        outcome.state_left += 1
    runs = _runs_of(ws, busy)
    if runs != [("burner", "incomplete")]:
        outcome.rows_lost += 1
        outcome.notes.append(f"runs of the killed writer: {runs}")
    outcome.duplicates += duplicates(ws / "metrics")
    outcome.unreadable += len(unreadable_files(ws / "metrics"))
    return outcome


def devloop_run(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop run`` SIGKILLed while its command is paused or throttled."""
    return _held_kills(c, kills, "run")


def devloop_watch(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop watch`` SIGKILLed while its agent is paused or throttled."""
    return _held_kills(c, kills, "watch")


# --- the exporter ----------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def _url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    import re

    found: list[str] = []

    def announced() -> bool:
        found[:] = re.findall(r"http://\S+/metrics", log.read_text(errors="replace"))
        return bool(found) or proc.poll() is not None

    wait_until(announced, what="the exporter's address")
    assert found, log.read_text()
    return found[0]


def exporter(c: Campaign, kills: int) -> list[Outcome]:
    """``devloop workspace exporter`` SIGKILLed at a random moment while it is being scraped
    without pause; it must not have written anything, and a restarted one serves."""
    from devloop.simulate import simulate

    ws = c.folder("exporter") / ".devloop-workspace"
    simulate(ws, hours=1 / 3, projects=2, agents_per_project=2, interval=5, seed=1)
    outcomes = []
    for i in range(kills + 1):
        before = _snapshot(ws.parent)
        log = ws.parent / f"exporter-{i}.log"
        proc = c.devloop("workspace", "exporter", "--workspace-dir", ws, "--port", "0",
                         "--stale-after", "3650d", env=c.env(match=""), log=log)  # fmt: skip
        url = _url(log, proc)
        scrapes: list[int] = []
        stop = threading.Event()

        def scrape(
            url: str = url,
            scrapes: list[int] = scrapes,
            stop: threading.Event = stop,
            proc: subprocess.Popen[bytes] = proc,
        ) -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
                        response.read()
                        scrapes.append(response.status)
                except (OSError, urllib.error.URLError):
                    if stop.is_set() or proc.poll() is not None:
                        return

        threads = [threading.Thread(target=scrape, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_until(lambda s=scrapes: len(s) > 0, what="a first scrape")  # type: ignore[misc]
        if i == kills:  # the restart: it serves
            stop.set()
            for thread in threads:
                thread.join(DEADLINE)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(DEADLINE)
            if code != 0 or 200 not in scrapes:
                outcomes[-1].state_left += 1
                outcomes[-1].notes.append(f"the restarted exporter: exit {code}, {scrapes[:3]}")
            break
        time.sleep(c.rng.uniform(0.0, 0.5))  # the random moment of the kill, mid-scrape
        proc.kill()
        proc.wait(DEADLINE)
        stop.set()
        for thread in threads:
            thread.join(DEADLINE)
        outcome = Outcome("exporter", killed=True)
        after = _snapshot(ws.parent)
        written = sorted(
            name for name in set(before) | set(after)
            if before.get(name) != after.get(name) and not name.startswith("exporter-")
        )  # fmt: skip
        outcome.state_left += len(written)
        if written:
            outcome.notes.append(f"a reader wrote {written}")
        outcome.unreadable += len(unreadable_files(ws / "metrics"))
        outcomes.append(outcome)
    return outcomes


# --- disk full -------------------------------------------------------------------------------

FULL_LINE = "devloop: disk full, recording into "
NO_SPACE = "No space left on device"


def disk_full_spool(c: Campaign, outages: int) -> list[Outcome]:
    """A running collector whose spool appends fail with ENOSPC ``outages`` times, for a
    random 5-15 refused appends each: it warns once, keeps ticking, and when space returns
    writes every held tick, in order, and one ``disk-full`` event per outage."""
    folder = c.folder("disk-full-spool")
    project = c.project("full")
    ws = workspace(folder, project)
    c.sleepers(project, 2)
    trace, flag, log = folder / "trace", folder / "full", folder / "log"
    proc = c.devloop("workspace", "collect", "--workspace-dir", ws, "--interval", INTERVAL,
                     env=c.env(match="workspace collect", trace=trace, full=flag,
                               full_on="write:.seg"), log=log)  # fmt: skip

    def count(what: str) -> int:
        if what == "synced":
            return synced_ticks(read_trace(trace), proc.pid)
        return sum(1 for t in read_trace(trace) if t.what == "full")

    outcomes = []
    for _ in range(outages):
        synced = count("synced")
        wait_until(lambda n=synced: count("synced") >= n + 3, what="ticks")  # type: ignore[misc]
        refused = count("full")
        flag.touch()
        wanted = refused + c.rng.randint(5, 15)
        wait_until(lambda n=wanted: count("full") >= n, what="refused appends")  # type: ignore[misc]
        flag.unlink()
        outcomes.append(Outcome("disk full: spool append", killed=False))
    synced = count("synced")
    wait_until(lambda: count("synced") >= synced + 3, what="ticks after the outages")
    assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(DEADLINE)
    text = log.read_text(errors="replace")
    metrics = ws / "metrics"
    last = outcomes[-1]
    warned = [line for line in text.splitlines() if line.startswith(FULL_LINE)]
    if code != 0 or len(warned) != outages or not all(NO_SPACE in line for line in warned):
        last.notes.append(f"exit {code}, warnings {warned}: {text[-300:]}")
        last.state_left += 1
    [stopped_after] = stop_ticks(metrics)
    last.rows_lost += max(0, stopped_after - len(tick_times(metrics)))
    events = [m for (_, _, _, _, _, _, _, _, _, _, m, *_rest) in rows(metrics, "events")
              if m and m.startswith("spool append failed")]  # fmt: skip
    if len(events) != outages or not all(", 0 dropped" in m for m in events):
        last.notes.append(f"disk-full events: {events}")
        last.rows_lost += 1
    last.duplicates += duplicates(metrics)
    last.unreadable += len(unreadable_files(metrics))
    return outcomes


def disk_full_conversion(c: Campaign, outages: int) -> list[Outcome]:
    """A collector SIGKILLed after some ticks leaves a segment; the next one starts while the
    disk is full for its conversion child (the Parquet temp file's fsync fails with ENOSPC):
    it says so, keeps the segment, records; when space returns its stop converts it all."""
    folder = c.folder("disk-full-conversion")
    project = c.project("fullconv")
    ws = workspace(folder, project)
    c.sleepers(project, 2)
    metrics = ws / "metrics"
    flag = folder / "full"
    outcomes = []
    killed: list[CollectorRun] = []
    for i in range(outages):
        outcome = Outcome("disk full: conversion", killed=False)
        trace, log = folder / f"a-{i}.trace", folder / f"a-{i}.log"
        first = c.devloop("workspace", "collect", "--workspace-dir", ws, "--interval", INTERVAL,
                          env=c.env(match="workspace collect", trace=trace,
                                    kill=f"workspace collect:{c.rng.randint(20, 60)}"),
                          log=log)  # fmt: skip
        code = first.wait(DEADLINE)
        assert code == -signal.SIGKILL, log.read_text()
        killed.append(CollectorRun(first.pid, time.time(), code,
                                   synced_ticks(read_trace(trace), first.pid)))  # fmt: skip
        left = sorted(p.name for p in (metrics / "_spool").glob("*.seg"))
        flag.touch()
        trace, log = folder / f"b-{i}.trace", folder / f"b-{i}.log"
        second = c.devloop("workspace", "collect", "--workspace-dir", ws, "--interval", INTERVAL,
                           env=c.env(match="workspace collect|convert.py", trace=trace,
                                     full=flag, full_on="fsync:.tmp"), log=log)  # fmt: skip
        wait_until(lambda t=trace, p=second: synced_ticks(read_trace(t), p.pid) >= 5  # type: ignore[misc]
                   or p.poll() is not None, what="ticks on a full disk")  # fmt: skip
        text = log.read_text(errors="replace")
        kept = sorted(p.name for p in (metrics / "_spool").glob("*.seg"))
        if second.poll() is not None or "converting the spool" not in text or NO_SPACE not in text:
            outcome.notes.append(f"on a full disk: {text[-300:]}")
            outcome.state_left += 1
        if not set(left) <= set(kept):
            outcome.rows_lost += 1
            outcome.notes.append(f"segments {left} not kept: {kept}")
        flag.unlink()
        second.send_signal(signal.SIGTERM)
        code = second.wait(DEADLINE)
        if code != 0:
            outcome.notes.append(f"the stop after space returned: exit {code}: {text[-300:]}")
            outcome.state_left += 1
        killed.append(CollectorRun(second.pid, time.time(), code, 0, stopped=code == 0))
        outcomes.append(outcome)
    ticks = tick_times(metrics)
    clean = iter(stop_ticks(metrics))
    previous = 0.0
    last = outcomes[-1]
    for run in killed:
        present = sum(1 for t in ticks if previous < t <= run.ended)
        expected = next(clean) if run.stopped else run.acked
        last.rows_lost += max(0, expected - present)
        previous = run.ended
    left = [p.name for p in (metrics / "_spool").glob("*.seg")]
    last.unreadable += len(unreadable_files(metrics)) + len(left)
    last.duplicates += duplicates(metrics)
    return outcomes


#: Every writer of the campaign, in the order of the table.
WRITERS: dict[str, Callable[[Campaign, int], list[Outcome]]] = {
    "collector tick": collector_tick,
    "conversion child": conversion_child,
    "compaction": compaction,
    "retention": retention_kills,
    "apply-tuning": apply_tuning,
    "devloop run": devloop_run,
    "devloop watch": devloop_watch,
    "exporter": exporter,
}

#: The disk-full faults (each "kill" is an outage).
DISK_FULL: dict[str, Callable[[Campaign, int], list[Outcome]]] = {
    "disk full: spool append": disk_full_spool,
    "disk full: conversion": disk_full_conversion,
}
