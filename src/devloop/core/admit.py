"""Admission verdicts in a file, for launchers that must decide in a millisecond.

The workspace's recorder writes ``<workspace-dir>/.admission`` at every check, beside the state
file (:mod:`devloop.core.state`): the :class:`~devloop.core.resource_manager.ResourceManager`'s own
verdicts of whether each agent may start now, how many agents run and how many may. ``devloop
run`` beside a running collector reads it with :func:`verdict`, so it needs neither the config
models nor a sample of its own. Plain text, one ``key value`` per line, so that reading it
imports nothing (the json module alone costs a launcher 10 ms of CPU)::

    devloop-admission 1
    ts 1796307993.001
    interval 1
    running 2
    most 4                 (absent: no maxConcurrentAgents)
    api/linter 1           (1: may start now, 0: must wait)
    api/* 1                (an agent not in agents.json)
"""

from __future__ import annotations

import os

ADMISSION_NAME = ".admission"
_MAGIC = "devloop-admission 1"


def write(
    workspace_dir: str | os.PathLike[str],
    ts: float,
    interval: float,
    running: int,
    most: int | None,
    verdicts: dict[str, bool],
) -> None:
    """Replace the admission file (temp file and rename: readers never see half of it).
    Raises OSError."""
    lines = [_MAGIC, f"ts {ts!r}", f"interval {interval!r}", f"running {running}"]
    if most is not None:
        lines.append(f"most {most}")
    lines += [f"{key} {int(ok)}" for key, ok in verdicts.items() if " " not in key]
    final = os.path.join(workspace_dir, ADMISSION_NAME)
    temp = f"{final}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temp, final)


def read(workspace_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """The admission file's entries; None when it is missing or not one."""
    try:
        with open(os.path.join(workspace_dir, ADMISSION_NAME), encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(_MAGIC + "\n"):
        return None
    entries = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.rpartition(" ")
        entries[key] = value
    return entries


def verdict(
    workspace_dir: str | os.PathLike[str], project: str, agent: str, now: float
) -> bool | None:
    """True: ``project``/``agent`` may start now; False: it may not (it must queue or be
    refused); None: nothing fresh to decide from (no recorder, a stale file, an unknown
    project). Fresh means written within three check intervals (at least 5 s) of ``now``.
    """
    entries = read(workspace_dir)
    if entries is None:
        return None
    try:
        written = float(entries["ts"])
        interval = float(entries["interval"])
        running = int(entries["running"])
        most = int(entries["most"]) if "most" in entries else None
    except (KeyError, ValueError):
        return None
    if not 0 <= now - written <= max(3 * interval, 5.0):
        return None
    found = entries.get(f"{project}/{agent}", entries.get(f"{project}/*"))
    if found is None:
        return None
    if most is not None and running >= most:
        return False
    return found == "1"
