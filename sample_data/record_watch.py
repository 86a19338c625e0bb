"""Make sample_data's watch recording: `devloop watch` on the three sample projects, with edits
replayed at a human pace, recorded by devloop (issue 14's real recording for autotune).

Works on a copy (the repository at HEAD, by `git archive`, in --scratch/repo) so nothing of the
working tree is edited: starts `devloop watch` on the copy's sample workspace (it records one
tick per second and enforces the workspace's limits under --profile, as a user's watch
does), then edits the
copy's Python files like a person at the keyboard: a burst of 1-6 saves to one project's files,
5-40 s apart, then a pause of half a minute to six minutes (now and then 10-20 minutes away). An
edit appends a comment line to a file, or takes the last one off again, so every agent still
passes. After --minutes it stops the watch (SIGINT: it ends the running agents and flushes),
compacts the store and copies the workspace (workspace.json and metrics/) to --out.

A recording made in several sittings is one store: with --append, --out's metrics are copied
into the scratch workspace first, so the new sitting's hours join them.

Run from the repository root:
    .venv/bin/python sample_data/record_watch.py --minutes 100 --out sample_data/.devloop-watch
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEVLOOP = [sys.executable, "-m", "devloop"]
MARK = "\n\n# edited while recording\n"  # two blank lines: ruff format keeps passing


def checkout(scratch: Path) -> Path:
    """The repository at HEAD in ``scratch``/repo; returns the copy's sample workspace."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch = scratch / "repo"
    scratch.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    workspace = scratch / "sample_data" / ".devloop-workspace"
    shutil.rmtree(workspace / "metrics", ignore_errors=True)
    return workspace


def editable(workspace: Path) -> dict[str, list[Path]]:
    """Per project, the Python files an edit may touch (what its agents check)."""
    config = json.loads((workspace / "workspace.json").read_text())
    root = workspace.parent
    files: dict[str, list[Path]] = {}
    for project in config["projects"]:
        folder = (root / project["path"]).resolve()
        if project["name"] == "devloop":  # its type checker and tests look at these
            found = sorted((folder / "src" / "devloop" / "config").glob("*.py"))
            found += sorted((folder / "src" / "devloop" / "core").glob("*.py"))
        else:
            found = sorted(folder.glob("src/**/*.py")) + sorted(folder.glob("tests/*.py"))
        files[project["name"]] = found
    return files


def edit(path: Path) -> None:
    """Append the marker line, or take it off again if it is the file's last line."""
    text = path.read_text()
    path.write_text(text[: -len(MARK)] if text.endswith(MARK) else text + MARK)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=HERE / ".devloop-watch")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/devloop-watch-recording"))
    parser.add_argument("--append", action="store_true", help="add to --out's recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        default="peak",
        help="the watch's profile (the sample's idle one leaves a project ~100MB)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workspace = checkout(args.scratch)
    if args.append and (args.out / "metrics").exists():
        shutil.copytree(args.out / "metrics", workspace / "metrics")
    files = editable(workspace)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = open(args.scratch / "watch.log", "w")  # noqa: SIM115 - open while the watch runs
    watch = subprocess.Popen(
        [
            *DEVLOOP,
            "watch",
            # The copy's root: it holds all three projects (devloop's folder is the root
            # itself; watching sample_data alone would watch only that part of it). The
            # watch's log is outside it: the type checker, with no filePatterns, would run
            # again on every line the log gets.
            str(workspace.parent.parent),
            "--workspace-dir",
            str(workspace),
            "--interval",
            "1s",
            "--profile",
            args.profile,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workspace.parent.parent,
    )
    deadline = time.monotonic() + args.minutes * 60
    edits = 0
    try:
        time.sleep(5)
        if watch.poll() is not None:
            raise SystemExit(f"the watch did not start: see {args.scratch / 'watch.log'}")
        while time.monotonic() < deadline:
            project = rng.choices(list(files), weights=[1, 2, 2][: len(files)])[0]
            for _ in range(rng.randint(1, 6)):
                edit(rng.choice(files[project]))
                edits += 1
                time.sleep(rng.uniform(5, 40))
            away = rng.uniform(600, 1200) if rng.random() < 0.1 else rng.uniform(30, 360)
            time.sleep(min(away, max(deadline - time.monotonic(), 0)))
            print(f"{edits} edits, {(deadline - time.monotonic()) / 60:.0f} min left", flush=True)
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(120)
        log.close()
    subprocess.run(
        [*DEVLOOP, "workspace", "compact", "--workspace-dir", str(workspace)], check=True
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    shutil.copy2(workspace / "workspace.json", args.out / "workspace.json")
    shutil.copytree(
        workspace / "metrics",
        args.out / "metrics",
        ignore=shutil.ignore_patterns("_spool", "_runs", "*.lock", ".*lock"),
    )
    print(f"{edits} edits in {args.minutes:g} min; the recording is in {args.out}")


if __name__ == "__main__":
    main()
