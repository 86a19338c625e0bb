"""Autotune says what it is doing, step by step, on a terminal (a long history takes minutes);
a pipe or a file gets the same output as before, nothing more."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

from devloop.tune import autotune

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "sample_data" / ".devloop-watch"

#: The steps, in order, on the real recording (3.2 h over 5 hours of the clock).
STEPS = [
    "reading the history",
    "replaying 364 runs of 5 hours: the smallest limits that keep them within --max-slowdown",
    "walk-forward backtest: current and suggested limits side by side",
    "the pool: every run replayed together under the suggested limits",
]


def test_each_step_is_said_as_it_begins() -> None:
    said: list[str] = []
    autotune(RECORDING, progress=said.append)
    assert said[: len(STEPS)] == STEPS
    assert said[-1] == "a time-of-day profile from the daily pattern"
    assert len(said) in (len(STEPS) + 1, len(STEPS) + 2)  # + the pool's three ways, if asked


def test_the_cli_prints_the_steps_on_a_terminal_only(tmp_path: Path) -> None:
    devloop = shutil.which("devloop", path=str(Path(sys.executable).parent)) or "devloop"
    argv = [devloop, "workspace", "autotune", "--workspace-dir", str(RECORDING)]
    piped = subprocess.run(
        [*argv, "--output", str(tmp_path / "piped.json")], capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert "autotune" not in piped.stderr
    primary, replica = pty.openpty()
    try:
        on_terminal = subprocess.run(
            [*argv, "--output", str(tmp_path / "terminal.json")],
            stdout=subprocess.PIPE, stderr=replica, text=True,
        )  # fmt: skip
        os.close(replica)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    assert on_terminal.returncode == 0
    lines = b"".join(chunks).decode().splitlines()
    steps = [line.split("s  ", 1)[1] for line in lines if line.startswith("autotune ")]
    assert steps[: len(STEPS)] == STEPS, lines
    # the suggestions are the same either way (but for when they were made)
    assert _without_time(tmp_path / "terminal.json") == _without_time(tmp_path / "piped.json")


def _without_time(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if "generated_at" not in line)
