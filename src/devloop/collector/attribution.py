"""Which agent a process belongs to.

A process is an agent's when, in this order:

1. its environment carries ``DEVLOOP_PROJECT`` and ``DEVLOOP_AGENT`` (devloop started it, or
   an ancestor devloop started: the environment is inherited);
2. its parent belongs to an agent (descendants inherit; this also covers a process whose
   environment cannot be read, such as another user's);
3. a project :class:`~devloop.collector.model.Rule` matches: its working directory is under the
   project's path and its command line runs the agent's command.

Otherwise it is nobody's, unless every process is recorded, in which case it goes to project
``"(other)"`` with its name as the agent. The decision is made once per process identity
``(pid, start_us)`` and cached, so a reused pid is judged afresh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from devloop.collector.model import TAG_AGENT, TAG_PROJECT, TAG_RUN, Rule

if TYPE_CHECKING:
    from devloop.config.models import Workspace

OTHER_PROJECT = "(other)"
"""The project of unattributed processes when every process is recorded."""

How = Literal["env", "inherited", "rule", "other"]

# interpreters and launchers whose first script or module argument names the real command
_INTERPRETER = re.compile(
    r"(python|pypy)[0-9.]*|node(js)?|bun|bunx|deno|npx|pnpx|uvx|pipx|ruby|perl|php|(ba|da|z)?sh"
)
# project runners whose "run" subcommand is followed by the real command
_RUNNERS = frozenset({"uv", "poetry", "pdm", "pipenv", "hatch", "rye", "conda", "npm", "yarn"})
_LAUNCHER_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "--require", "-r"})


@dataclass(frozen=True, slots=True)
class Attribution:
    """The project and agent a process is recorded under, how that was decided, and the devloop
    run it belongs to (``DEVLOOP_RUN_ID``, inherited like the tags; None when it has none)."""

    project: str
    agent: str
    how: How
    run_id: str | None = None


class Facts(Protocol):
    """What attribution may read about a process; each read happens at most once."""

    def environ_tags(self) -> dict[str, str] | None:
        """DEVLOOP_* variables, or None when the environment cannot be read."""

    def cmdline(self) -> list[str] | None:
        """The arguments, or None."""

    def cwd(self) -> str | None:
        """The working directory, or None."""


def command_name(command: str) -> str:
    """The basename of a command's first word: ``"/usr/bin/ruff check ."`` → ``"ruff"``."""
    words = command.split()
    return os.path.basename(words[0]) if words else ""


def command_matches(command: str, argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs ``command``.

    True when the executable's basename is the command's, when an interpreter runs it as a
    module (``python -m pytest``) or as a script (``python /venv/bin/pytest``, ``npx eslint``),
    or a project runner runs it (``uv run pytest``). Only the first non-option argument of an
    interpreter is looked at, so ``grep pytest log`` and ``python x.py pytest`` do not match.
    """
    want = command_name(command)
    if not want or not argv:
        return False
    launcher = os.path.basename(argv[0])
    if launcher == want:
        return True
    index = 1
    if launcher in _RUNNERS and len(argv) > 2 and argv[1] in ("run", "exec"):
        launcher, index = os.path.basename(argv[2]), 3
        if launcher == want:
            return True
    if not _INTERPRETER.fullmatch(launcher):
        return False
    while index < len(argv):
        arg = argv[index]
        if arg == "-m":
            module = argv[index + 1] if index + 1 < len(argv) else ""
            return module.split(".")[0] == want
        if arg in ("-c", "-e", "--eval"):
            return False  # inline code, no script names the command
        if arg.startswith("-"):
            index += 2 if arg in _LAUNCHER_OPTIONS_WITH_VALUE else 1
            continue
        return os.path.basename(arg) == want
    return False


def rules_for(workspace: Workspace) -> list[Rule]:
    """Project rules from every enabled agent that has a command: cwd under the project's
    folder and the agent's command in the command line."""
    rules = []
    for project in workspace.config.enabled_projects:
        agents = workspace.agents.get(project.name)
        if agents is None:
            continue
        folder = workspace.config.project_dir(project)
        for agent in agents.enabled_agents:
            if agent.command:
                rules.append(Rule(project.name, folder, agent.name, " ".join(agent.command)))
    return rules


def is_under(path: str, root: Path) -> bool:
    """Whether ``path`` is ``root`` or inside it (no file-system access: both are absolute)."""
    root_text = str(root).rstrip("/") or "/"
    return path == root_text or path.startswith(root_text if root_text == "/" else root_text + "/")


class Attributor:
    """Decides, once per process identity, the agent a process belongs to."""

    def __init__(self, rules: Iterable[Rule] = (), all_processes: bool = False) -> None:
        # paths are resolved once so a cwd (always resolved by the kernel) can be compared
        self.rules = [
            Rule(rule.project, Path(os.path.realpath(rule.path)), rule.agent, rule.command)
            for rule in rules
        ]
        self.all_processes = all_processes
        self._cache: dict[tuple[int, int], Attribution | None] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, key: tuple[int, int]) -> bool:
        """Whether the identity ``(pid, start_us)`` has been judged."""
        return key in self._cache

    def attribute(
        self,
        key: tuple[int, int],
        name: str,
        parent: Attribution | None,
        facts: Facts,
        kernel_thread: bool = False,
    ) -> Attribution | None:
        """The attribution of the process ``key = (pid, start_us)``; cached per identity.

        ``parent`` is the attribution of its parent process (None when the parent is nobody's
        or unknown); ``name`` is the agent name used for "(other)". A kernel thread is never
        "(other)": it is not a program anyone runs, and a machine has hundreds.
        """
        if key in self._cache:
            return self._cache[key]
        result = self._decide(name, parent, facts, kernel_thread)
        self._cache[key] = result
        return result

    def forget(self, key: tuple[int, int]) -> None:
        """Drop a process identity: it exited, or it exec'd and must be judged again."""
        self._cache.pop(key, None)

    def _decide(
        self, name: str, parent: Attribution | None, facts: Facts, kernel_thread: bool
    ) -> Attribution | None:
        env = facts.environ_tags()
        if env:
            project, agent = env.get(TAG_PROJECT), env.get(TAG_AGENT)
            if project and agent:
                return Attribution(project, agent, "env", env.get(TAG_RUN) or None)
        if parent is not None and parent.how != "other":
            return Attribution(parent.project, parent.agent, "inherited", parent.run_id)
        if self.rules:
            rule = self._match_rule(facts)
            if rule is not None:
                return Attribution(rule.project, rule.agent, "rule")
        if self.all_processes and not kernel_thread:
            return Attribution(OTHER_PROJECT, name, "other")
        return None

    def _match_rule(self, facts: Facts) -> Rule | None:
        argv = facts.cmdline()
        if not argv:
            return None
        candidates = [rule for rule in self.rules if command_matches(rule.command, argv)]
        if not candidates:
            return None
        cwd = facts.cwd()
        if cwd is None:
            return None
        # the deepest project path wins when projects nest
        matching = [rule for rule in candidates if is_under(cwd, rule.path)]
        return max(matching, key=lambda rule: len(str(rule.path)), default=None)
