"""Make sample_data's recording: real agents on three real projects, recorded by devloop.

Starts `devloop workspace collect` on sample_data/.devloop-workspace, then runs every agent of
every project (ruff, ruff format, mypy, pytest: the commands in each project's agents.json)
through `devloop run`, round after round with pauses between, like an editor's saves would,
until --minutes have passed. Then stops the collector (SIGINT: flush) and compacts the store.

Run from the repository root:  .venv/bin/python sample_data/record.py --minutes 22
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE / ".devloop-workspace"
DEVLOOP = [sys.executable, "-m", "devloop"]


def agents() -> list[tuple[str, Path, str, list[str]]]:
    config = json.loads((WORKSPACE / "workspace.json").read_text())
    out = []
    for project in config["projects"]:
        folder = (HERE / project["path"]).resolve()
        spec = json.loads((folder / ".devloop" / "agents.json").read_text())
        for name, agent in spec["agents"].items():
            if agent.get("enabled", True) and agent.get("command"):
                out.append((project["name"], folder, name, agent["command"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Agents' commands (ruff, mypy, pytest) come from the same environment as devloop.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    collector = subprocess.Popen(
        [*DEVLOOP, "workspace", "collect", "--workspace-dir", str(WORKSPACE),
         "--interval", args.interval],
        env=env,
    )  # fmt: skip
    time.sleep(3)
    if collector.poll() is not None:
        raise SystemExit("the collector did not start")
    deadline = time.monotonic() + args.minutes * 60
    runs = 0
    try:
        while time.monotonic() < deadline:
            batch = agents()
            rng.shuffle(batch)
            for project, folder, agent, command in batch:
                if time.monotonic() >= deadline:
                    break
                subprocess.run(
                    [*DEVLOOP, "run", "--workspace-dir", str(WORKSPACE), "--project", project,
                     "--agent", agent, "--cwd", str(folder), "--", *command],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=env,
                )  # fmt: skip
                runs += 1
                time.sleep(rng.uniform(0.5, 4.0))
            time.sleep(rng.uniform(5, 20))  # the developer is typing
    finally:
        collector.send_signal(signal.SIGINT)
        collector.wait(timeout=120)
    print(f"{runs} agent runs recorded", file=sys.stderr)
    subprocess.run([*DEVLOOP, "workspace", "compact", "--workspace-dir", str(WORKSPACE),
                    "--all-hours"], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
