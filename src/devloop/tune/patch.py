"""The suggestions as RFC 7386 merge patches, and applying them to the files.

``build_patches`` writes into :class:`Suggestions` a patch for workspace.json (the projects'
limits as ``resource_sharing.perProjectLimits`` under the ``custom`` strategy, the one strategy
under which those numbers are the limits in force rather than caps or requests) and one per
project for its agents.json (``agents.<name>.resourceLimits``). Memory is written the way the
file already writes it (a size text, a bare number of MB, or ``*_bytes``). The patches name
projects, never paths.

``apply_tuning`` applies them to the workspace it is given: its own workspace.json names the
projects and their folders (:func:`resolve_targets`), a suggestions file made for a workspace
with another name or other projects is refused. The patched files are checked with the config
loader first. Key order, indent and unknown keys are kept (the parsed objects keep file order;
json-merge-patch changes values in place and appends new keys). A file with comments is
refused: a rewrite would lose them.

Every write (an apply, a rollback) is one transaction over all its files, in a folder of
``<workspace-dir>/tuning-backups/`` and under the lock ``tuning-backups/.lock``:

1. *stage*: the content before of each file goes into the folder (the backup), the content
   after next to the file as ``.<name>.tuning-<folder>.tmp``; all fsynced;
2. *commit*: the journal (``journal.json``; a rollback's is ``rollback.json``) lists them;
3. *publish*: each staged file is renamed over its file;
4. *complete*: ``journal.json`` becomes ``manifest.json`` (a rollback renames ``manifest.json``
   to ``manifest.json.restored`` and drops its journal).

A process killed on the way leaves a journal; the next apply-tuning or rollback (a dry run
included) first finishes it (every file published or still staged) or undoes it (a file was
changed by hand since: the published ones get their content before back), so the files are all
as before or all as after. It then deletes what killed runs leave: staged files, temp files in
the backup folders, backup folders that never got a journal.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devloop.errors import TuningError, UsageError
from devloop.tune.suggestions import WorkspaceIdentity
from devloop.units import MIB

if TYPE_CHECKING:
    from devloop.config import Workspace
    from devloop.config.models import AgentsConfig
    from devloop.store.lock import StoreLock
    from devloop.tune.suggestions import EntitySuggestion, Suggestions

BACKUP_DIR = "tuning-backups"
MANIFEST = "manifest.json"
RESTORED = "manifest.json.restored"
JOURNAL = "journal.json"
ROLLBACK_JOURNAL = "rollback.json"
LOCK_FILE = ".lock"
#: The name of a backup folder (a transaction's id): its UTC time.
STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
#: The version of a journal and a manifest; one without a version (written before) names
#: each file by absolute path.
MANIFEST_VERSION = 2


def _raw(path: Path) -> Any:
    from devloop.config import load_json

    return load_json(path, str(path))


def memory_fields(existing: dict[str, Any] | None, value: int) -> dict[str, Any]:
    """The memory keys to write for ``value`` bytes, in the file's own style."""
    existing = existing or {}
    out: dict[str, Any] = {}
    if "maxMemory_bytes" in existing:
        out["maxMemory_bytes"] = value
    if "maxMemory" in existing or not out:
        old = existing.get("maxMemory")
        whole = value % MIB == 0
        if isinstance(old, int | float) and not isinstance(old, bool) and whole:
            out["maxMemory"] = value // MIB
        else:
            out["maxMemory"] = f"{value // MIB}MB" if whole else f"{value}B"
    return out


def json_number(value: float) -> float | int:
    """A number as a patch writes it: a whole one as an int (``60``, not ``60.0``)."""
    return int(value) if float(value).is_integer() else value


def _limits(entry: EntitySuggestion, existing: dict[str, Any] | None) -> dict[str, Any]:
    assert entry.cpu is not None and entry.memory_bytes is not None
    return {"maxCpu": json_number(entry.cpu), **memory_fields(existing, entry.memory_bytes)}


def build_patches(suggestions: Suggestions, workspace: Workspace) -> None:
    """Fill ``suggestions.patch``, ``suggestions.agents_patches`` and the identity of the
    workspace they are for (``suggestions.identity``)."""
    raw = _raw(suggestions.workspace_file)
    suggestions.identity = WorkspaceIdentity.of(raw, (p.name for p in workspace.config.projects))
    sharing = raw.get("resource_sharing") if isinstance(raw, dict) else None
    sharing = sharing if isinstance(sharing, dict) else {}
    existing = sharing.get("perProjectLimits")
    existing = existing if isinstance(existing, dict) else {}
    per_project: dict[str, Any] = {}
    configured = {project.name for project in workspace.config.projects}
    for name, entry in suggestions.projects.items():
        if entry.cpu is None:
            continue
        if name not in configured:  # recorded, but no longer in workspace.json
            suggestions.notes.append(f"{name}: not in workspace.json, left out of the patch")
            continue
        old = existing.get(name)
        per_project[name] = _limits(entry, old if isinstance(old, dict) else None)
    patch: dict[str, Any] = {}
    if per_project:
        body: dict[str, Any] = {}
        if sharing.get("strategy") != "custom":
            body["strategy"] = "custom"
        body["perProjectLimits"] = per_project
        patch["resource_sharing"] = body
    suggestions.patch = patch
    for project, config in workspace.agents.items():
        if config.file is None:
            continue
        agents_raw = _raw(config.file)
        agents_patch: dict[str, Any] = {}
        raised = _raised_cap(suggestions.projects.get(project), config, agents_raw)
        if raised:
            agents_patch["global"] = {"resourceLimits": raised}
            suggestions.agents_patches[project] = {"patch": agents_patch}
        agents_node = agents_raw.get("agents") if isinstance(agents_raw, dict) else None
        if not isinstance(agents_node, dict):
            continue
        changes: dict[str, Any] = {}
        for agent_name in agents_node:
            found = suggestions.agents.get(f"{project}/{agent_name}")
            if found is None or found.cpu is None:
                continue
            old_entry = agents_node[agent_name]
            old = old_entry.get("resourceLimits") if isinstance(old_entry, dict) else None
            changes[agent_name] = {
                "resourceLimits": _limits(found, old if isinstance(old, dict) else None)
            }
        if changes:
            agents_patch["agents"] = changes
            suggestions.agents_patches[project] = {"patch": agents_patch}


def _raised_cap(entry: EntitySuggestion | None, config: AgentsConfig, raw: Any) -> dict[str, Any]:
    """agents.json's own project cap (``global.resourceLimits``) raised to the project's
    suggested limits where it is under them: the runtime holds a project at the smaller of the
    two, so a suggestion above the cap would not take effect."""
    if entry is None or entry.cpu is None or entry.memory_bytes is None:
        return {}
    cap = config.resource_limits
    node = raw.get("global") if isinstance(raw, dict) else None
    existing = node.get("resourceLimits") if isinstance(node, dict) else None
    out: dict[str, Any] = {}
    if cap.cpu is not None and cap.cpu < entry.cpu - 1e-9:
        out["maxCpu"] = json_number(entry.cpu)
    if cap.memory_bytes is not None and cap.memory_bytes < entry.memory_bytes:
        out.update(memory_fields(existing if isinstance(existing, dict) else None,
                                 entry.memory_bytes))  # fmt: skip
    return out


# --- the files of the target workspace -----------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The files apply-tuning may write in one workspace, resolved from that workspace's own
    workspace.json: the file itself and, per project, ``<project dir>/.devloop/agents.json``
    (whether it exists or not)."""

    workspace_file: Path
    agents: dict[str, Path]
    identity: WorkspaceIdentity

    def path(self, project: str | None) -> Path:
        """workspace.json (``project`` None) or the project's agents.json."""
        if project is None:
            return self.workspace_file
        try:
            return self.agents[project]
        except KeyError:
            raise TuningError(f"{self.workspace_file}: no project {project!r}") from None


def resolve_targets(workspace_dir: Path) -> Targets:
    """The :class:`Targets` of the workspace in ``workspace_dir``, from its workspace.json."""
    from devloop.config import AGENTS_FILE, WORKSPACE_FILE, parse_workspace

    file = workspace_dir / WORKSPACE_FILE
    raw = _raw(file)
    config = parse_workspace(raw, file)
    agents = {
        project.name: config.project_dir(project) / AGENTS_FILE for project in config.projects
    }
    return Targets(file, agents, WorkspaceIdentity.of(raw, agents))


# --- applying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file apply-tuning rewrites: its path, old and new text, and whose file it is
    (``project`` None: workspace.json)."""

    path: Path
    old: str
    new: str
    project: str | None = None

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.old.splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile=f"{self.path} (current)",
                tofile=f"{self.path} (tuned)",
            )
        )


@dataclass(frozen=True)
class ApplyResult:
    """What apply-tuning did (or, with ``dry_run``, would do)."""

    changes: tuple[FileChange, ...]
    backup: Path | None
    dry_run: bool
    skipped: tuple[str, ...]


def read_suggestions(path: Path) -> dict[str, Any]:
    """A suggestions.json, checked for its kind and version.

    Version 1 is refused: it named each file by absolute path, and those paths may be another
    workspace's (the one autotune ran on, when this one is a copy)."""
    from devloop.tune.suggestions import KIND, VERSION

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuningError(f"{path}: not a suggestions file: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise TuningError(f"{path}: not a suggestions file (kind is not {KIND!r})")
    if data.get("version") == 1:
        raise TuningError(
            f"{path}: version 1 names files by path, which may be another workspace's; run "
            f"`devloop workspace autotune` again for a version {VERSION} file"
        )
    if data.get("version") != VERSION:
        raise TuningError(f"{path}: version {data.get('version')!r} is not supported ({VERSION})")
    return data


def suggested_for(path: Path, data: dict[str, Any]) -> WorkspaceIdentity:
    """The identity of the workspace a suggestions file (read from ``path``) was made for."""
    recorded = data.get("workspace")
    name = recorded.get("name") if isinstance(recorded, dict) else None
    projects = recorded.get("projects") if isinstance(recorded, dict) else None
    if not (name is None or isinstance(name, str)) or not (
        isinstance(projects, list) and all(isinstance(p, str) for p in projects)
    ):
        raise TuningError(f"{path}: workspace.name and workspace.projects are missing or bad")
    return WorkspaceIdentity(name, tuple(projects))


def detect_indent(text: str) -> int | str | None:
    """The indent of a JSON text: spaces or a tab of its first indented line; None when it
    is on one line."""
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            lead = line[: len(line) - len(stripped)]
            return "\t" if lead.startswith("\t") else len(lead)
    return None


def _dump(data: Any, like: str) -> str:
    """``data`` as JSON laid out like the text ``like``: its indent, its final newline, and
    its one-line arrays and objects kept on one line (where that same text was in ``like``)."""
    indent = detect_indent(like)
    if indent is None:
        text = json.dumps(data, ensure_ascii=False)
    else:
        pad = indent if isinstance(indent, str) else " " * indent
        text = _render(data, pad, 0, like)
    return text + ("\n" if like.endswith("\n") else "")


def _render(value: Any, pad: str, level: int, like: str) -> str:
    if isinstance(value, dict | list) and value:
        inline = json.dumps(value, ensure_ascii=False)
        spaced = f"{inline[0]} {inline[1:-1]} {inline[-1]}"  # { "a": 1 } style
        for form in (inline, spaced):
            if form in like:
                return form
        inner = pad * (level + 1)
        if isinstance(value, dict):
            items = [
                f"{inner}{json.dumps(key, ensure_ascii=False)}: "
                + _render(item, pad, level + 1, like)
                for key, item in value.items()
            ]
            return "{\n" + ",\n".join(items) + "\n" + pad * level + "}"
        items = [f"{inner}{_render(item, pad, level + 1, like)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + pad * level + "]"
    return json.dumps(value, ensure_ascii=False)


def _filtered(
    patch: dict[str, Any],
    entries: dict[str, Any],
    min_change: float,
    skipped: list[str],
    path: tuple[str, ...],
    prefix: str = "",
) -> dict[str, Any]:
    """``patch`` without the limits that change by less than ``min_change`` (a fraction)."""
    patch = copy.deepcopy(patch)
    node: Any = patch
    for key in path[:-1]:
        node = node.get(key, {})
    targets = node.get(path[-1], {})
    for name in list(targets):
        limits = targets[name].get("resourceLimits", targets[name])
        entry = entries.get(prefix + name)
        if entry is None:
            continue
        current = entry["current"]
        suggested = entry["suggested"] or {}
        for key, old, new in (
            ("maxCpu", current.get("cpu_percent"), suggested.get("cpu_percent")),
            ("memory", current.get("memory_bytes"), suggested.get("memory_bytes")),
        ):
            if old is None or new is None or old == 0 or abs(new - old) / old >= min_change:
                continue
            keys = ["maxCpu"] if key == "maxCpu" else ["maxMemory", "maxMemory_bytes"]
            for k in keys:
                limits.pop(k, None)
            skipped.append(f"{prefix}{name}: {key} changes by {abs(new - old) / old:.1%}")
        if not limits:
            del targets[name]
    if not targets:
        node.pop(path[-1], None)
    return patch


def _already_applied(old: str, patch: dict[str, Any]) -> bool:
    """Whether ``old`` is what the patch would make of it (so applying changes nothing)."""
    import json_merge_patch

    try:
        parsed = json.loads(old)
    except json.JSONDecodeError:
        return False
    return _dump(json_merge_patch.merge(parsed, copy.deepcopy(patch)), old) == old


def plan_changes(
    targets: Targets,
    data: dict[str, Any],
    *,
    force: bool = False,
    min_change: float = 0.0,
    only: str | None = None,
) -> tuple[list[FileChange], list[str]]:
    """The files of ``targets`` the suggestions would change (checked, not written) and what
    was skipped. A file already as the suggestions want it is no change, whatever its
    sha256 (a re-apply after a finished one)."""
    import json_merge_patch

    from devloop.config import parse_agents, parse_workspace, strip_comments
    from devloop.tune.suggestions import sha256_file

    skipped: list[str] = []
    wanted: list[tuple[str | None, dict[str, Any], str | None]] = []
    recorded = data.get("workspace", {})
    if only in (None, "projects"):
        patch = _filtered(
            data.get("patch") or {},
            data.get("projects", {}),
            min_change,
            skipped,
            ("resource_sharing", "perProjectLimits"),
        )
        sharing = patch.get("resource_sharing", {})
        if set(sharing) <= {"strategy", "overcommitCpu"}:  # no project's limits left
            patch = {}
        if patch:
            wanted.append((None, patch, recorded.get("sha256")))
    if only in (None, "agents"):
        files = recorded.get("agents_files", {})
        for project, entry in (data.get("agents_patches") or {}).items():
            patch = _filtered(
                entry["patch"],
                data.get("agents", {}),
                min_change,
                skipped,
                ("agents",),
                prefix=f"{project}/",
            )
            if patch.get("agents"):
                wanted.append((project, patch, files.get(project, {}).get("sha256")))
    changes: list[FileChange] = []
    for project, patch, digest in wanted:
        path = targets.path(project)
        try:
            # bytes, decoded: the text is the file exactly (a rollback restores it byte for byte)
            old = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TuningError(f"{path}: cannot read: {exc}") from exc
        if not force and sha256_file(path) != digest:
            if _already_applied(old, patch):
                continue
            raise TuningError(
                f"{path} changed since the suggestions were made (sha256 differs); run "
                "`devloop workspace autotune` again, or pass --force to apply them anyway"
            )
        if strip_comments(old) != old:
            raise TuningError(
                f"{path} has comments, which rewriting it would lose; remove them (or apply "
                "the patch in the suggestions file by hand)"
            )
        try:
            parsed = json.loads(old)
        except json.JSONDecodeError as exc:
            raise TuningError(f"{path}: invalid JSON: {exc}") from exc
        merged = json_merge_patch.merge(copy.deepcopy(parsed), copy.deepcopy(patch))
        if project is None:
            parse_workspace(merged, path)
        else:
            parse_agents(merged, path)
        new = _dump(merged, old)
        if new != old:
            changes.append(FileChange(path, old, new, project))
    return changes, skipped


def apply_tuning(
    suggestions_file: Path | str,
    workspace_dir: Path | str,
    *,
    dry_run: bool = False,
    force: bool = False,
    min_change: float = 0.0,
    only: str | None = None,
    now: datetime | None = None,
    on_recovered: Callable[[str], None] | None = None,
) -> ApplyResult:
    """Apply a suggestions file to the files of the workspace in ``workspace_dir`` (see the
    module doc): refused when it was made for another workspace (another name, other
    projects), whatever ``force``. What recovery does first (a dry run included) is told to
    ``on_recovered``, a line at a time, even when the apply is then refused."""
    if only not in (None, "projects", "agents"):
        raise UsageError(f"--only must be projects or agents, not {only!r}")
    workspace_dir = Path(workspace_dir)
    source = Path(suggestions_file)
    data = read_suggestions(source)
    wanted = suggested_for(source, data)

    def plan() -> tuple[list[FileChange], list[str]]:
        targets = resolve_targets(workspace_dir)
        if not wanted.same_workspace(targets.identity):
            raise TuningError(
                f"{source} was made for workspace {wanted.describe()}, not for {workspace_dir}: "
                f"{targets.identity.describe()}; run `devloop workspace autotune` on it"
            )
        return plan_changes(targets, data, force=force, min_change=min_change, only=only)

    # Only a workspace with backups can hold a killed run's leftovers: one without them gets
    # its lock (and its tuning-backups folder) when there is something to write.
    lock = _lock(workspace_dir) if (workspace_dir / BACKUP_DIR).is_dir() else None
    try:
        if lock is not None:
            recover(workspace_dir, on_recovered)
        changes, skipped = plan()
        if not dry_run and changes and lock is None:
            lock = _lock(workspace_dir)
            recover(workspace_dir, on_recovered)
            changes, skipped = plan()  # as the files are now, under the lock
        if dry_run or not changes:
            return ApplyResult(tuple(changes), None, dry_run, tuple(skipped))
        backup = _new_backup(workspace_dir, now or datetime.now(UTC))
        steps = [
            _Step(
                change.project,
                change.path,
                backup=f"{index}-{change.path.name}",
                staged=_staged_name(change.path, backup.name),
                before=change.old,
                after=change.new,
            )
            for index, change in enumerate(changes)
        ]
        _commit(_Apply(backup), steps)
        return ApplyResult(tuple(changes), backup, False, tuple(skipped))
    finally:
        if lock is not None:
            lock.release()


def rollback(
    workspace_dir: Path | str, *, on_recovered: Callable[[str], None] | None = None
) -> tuple[Path, list[Path]]:
    """Restore the files of the newest backup (in one transaction, as an apply writes them),
    then mark it restored so the next rollback goes one further back. The files are resolved
    from the workspace's own workspace.json by the names in the backup's manifest. Returns
    the backup and the files restored; recovery first, as for :func:`apply_tuning`."""
    workspace_dir = Path(workspace_dir)
    base = workspace_dir / BACKUP_DIR
    if not base.is_dir():
        raise TuningError(f"no backup to roll back to in {base}")
    with _lock(workspace_dir):
        recover(workspace_dir, on_recovered)
        candidates = sorted(p for p in base.iterdir() if (p / MANIFEST).is_file())
        if not candidates:
            raise TuningError(f"no backup to roll back to in {base}")
        folder = candidates[-1]
        targets = resolve_targets(workspace_dir)
        steps = []
        restored = []
        for index, entry in enumerate(_read_entries(folder / MANIFEST)):
            project = _project_of(entry, targets, folder)
            path = targets.path(project)
            restored.append(path)
            try:
                before = path.read_bytes().decode("utf-8")
                after = (folder / entry["backup"]).read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise TuningError(f"cannot roll back {path} from {folder}: {exc}") from exc
            if before != after:
                steps.append(
                    _Step(
                        project,
                        path,
                        backup=f"current-{index}-{path.name}",
                        staged=_staged_name(path, f"{folder.name}-rollback"),
                        before=before,
                        after=after,
                    )
                )
        _commit(_Rollback(folder), steps)
    return folder, restored


def _lock(workspace_dir: Path) -> StoreLock:
    from devloop.errors import StoreError
    from devloop.store.lock import StoreLock

    try:
        return StoreLock(workspace_dir / BACKUP_DIR, LOCK_FILE, "apply-tuning", "running on")
    except StoreError as exc:
        raise TuningError(str(exc)) from exc


def _new_backup(workspace_dir: Path, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = workspace_dir / BACKUP_DIR / stamp
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise TuningError(f"cannot write the backup {folder}: {exc}; nothing changed") from exc
    return folder


def _staged_name(path: Path, transaction: str) -> str:
    return f".{path.name}.tuning-{transaction}.tmp"


# --- the transaction (see the module doc) --------------------------------------------------

State = Literal["published", "staged", "unstaged", "edited"]


def decide(states: Sequence[State]) -> Literal["forward", "undo"]:
    """Whether recovery finishes a committed transaction or undoes it, from the state of each
    of its files: ``published`` (the content after), ``staged`` (before, and after waits
    next to it), ``unstaged`` (before, nothing waiting), ``edited`` (neither: changed by hand).

    Forward when every file is published or staged, or when publishing was over (nothing
    staged or unstaged) and some were edited since; otherwise undo."""
    if all(state in ("published", "staged") for state in states):
        return "forward"
    if not any(state in ("staged", "unstaged") for state in states):
        return "forward"
    return "undo"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _target(project: str | None) -> dict[str, str]:
    return {"file": "workspace.json"} if project is None else {"project": project}


@dataclass(frozen=True)
class _Step:
    """One file of a transaction: ``before`` is kept in the transaction's folder as
    ``backup``, ``after`` is staged next to the file as ``staged``."""

    project: str | None
    path: Path
    backup: str
    staged: str
    before: str
    after: str

    def to_json(self) -> dict[str, Any]:
        return {
            **_target(self.project),
            "backup": self.backup,
            "staged": self.staged,
            "sha256_before": _sha(self.before),
            "sha256_after": _sha(self.after),
        }


@dataclass(frozen=True)
class _Apply:
    """An apply: a new backup folder, complete when its journal becomes its manifest."""

    folder: Path
    journal = JOURNAL
    what = "apply-tuning"

    def complete(self) -> None:
        from devloop._atomic import fsync_dir

        os.replace(self.folder / JOURNAL, self.folder / MANIFEST)
        fsync_dir(self.folder)

    def abort(self) -> None:
        """Forget it: a backup of files that were never changed is no backup."""
        shutil.rmtree(self.folder)


@dataclass(frozen=True)
class _Rollback:
    """A rollback, in the backup folder it restores: complete when the manifest is marked
    restored and the copies of the files as they were (``current-*``) are gone."""

    folder: Path
    journal = ROLLBACK_JOURNAL
    what = "rollback"

    def complete(self) -> None:
        if (self.folder / MANIFEST).is_file():
            os.replace(self.folder / MANIFEST, self.folder / RESTORED)
        self.abort()

    def abort(self) -> None:
        """Drop the journal and the copies; the backup stays as it was, to roll back to."""
        from devloop._atomic import fsync_dir

        for path in self.folder.glob("current-*"):
            path.unlink()
        (self.folder / ROLLBACK_JOURNAL).unlink(missing_ok=True)
        fsync_dir(self.folder)


def _write(path: Path, text: str, like: Path) -> None:
    """Write and fsync ``path``, with the mode of ``like`` (0644 if it does not exist)."""
    try:
        mode = like.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)


def _commit(kind: _Apply | _Rollback, steps: Sequence[_Step]) -> None:
    """Stage, commit, publish and complete ``steps`` (see the module doc)."""
    from devloop._atomic import atomic_write_text, fsync_dir

    folders = sorted({step.path.parent for step in steps})
    try:
        for step in steps:
            atomic_write_text(kind.folder / step.backup, step.before)
        for step in steps:
            _write(step.path.parent / step.staged, step.after, like=step.path)
        for folder in folders:
            fsync_dir(folder)
        journal = {"version": MANIFEST_VERSION, "files": [step.to_json() for step in steps]}
        atomic_write_text(kind.folder / kind.journal, json.dumps(journal, indent=2) + "\n")
    except OSError as exc:
        try:
            for step in steps:
                (step.path.parent / step.staged).unlink(missing_ok=True)
            kind.abort()
        except OSError:
            pass  # what is left is cleaned up by the next run
        raise TuningError(
            f"cannot stage the files in {kind.folder}: {exc}; nothing changed"
        ) from exc
    where = kind.folder
    try:
        for step in steps:
            where = step.path
            os.replace(step.path.parent / step.staged, step.path)
        where = kind.folder
        for folder in folders:
            fsync_dir(folder)  # every file published before the journal says so
        kind.complete()
    except OSError as exc:
        raise TuningError(
            f"cannot write {where}: {exc}; the next apply-tuning or --rollback finishes or "
            f"undoes the {kind.what} in {kind.folder}"
        ) from exc


def _read_entries(path: Path, *keys: str) -> list[dict[str, Any]]:
    """The ``files`` of a manifest or journal, each with the string ``keys``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuningError(f"{path}: cannot read: {exc}") from exc
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in keys)
        for entry in files
    ):
        raise TuningError(f"{path}: not a tuning manifest (files, {', '.join(keys)})")
    return files


def _project_of(entry: dict[str, Any], targets: Targets, folder: Path) -> str | None:
    """Whose file a manifest entry names: a project, or None for workspace.json. A manifest
    written before version 2 names an absolute path, accepted when it is one of the files
    of this workspace."""
    if isinstance(entry.get("project"), str):
        return str(entry["project"])
    if entry.get("file") == "workspace.json":
        return None
    if isinstance(entry.get("path"), str):
        path = Path(entry["path"])
        if path == targets.workspace_file.resolve():
            return None
        for project, agents in targets.agents.items():
            if path == agents:
                return project
        raise TuningError(
            f"{folder}: its manifest names {path}, which is not a file of "
            f"{targets.workspace_file.parent}; restore it by hand from {folder}"
        )
    raise TuningError(f"{folder}: a manifest entry names no file")


def recover(workspace_dir: Path, report: Callable[[str], None] | None = None) -> None:
    """Finish or undo each transaction a killed run left in ``workspace_dir``, then delete
    the leftovers of killed runs (see the module doc); ``report`` is told what was done, one
    line each. The caller holds the lock."""
    base = workspace_dir / BACKUP_DIR
    if not base.is_dir():
        return
    targets = resolve_targets(workspace_dir)
    tell = report if report is not None else (lambda line: None)
    for folder in sorted(p for p in base.iterdir() if STAMP.fullmatch(p.name) and p.is_dir()):
        for kind in (_Apply(folder), _Rollback(folder)):
            if not (folder / kind.journal).is_file():
                continue
            try:
                tell(_recover(kind, targets))
            except OSError as exc:
                raise TuningError(
                    f"cannot finish or undo the {kind.what} interrupted in {folder}: {exc}"
                ) from exc
    for line in _clean(base, targets):
        tell(line)


def _recover(kind: _Apply | _Rollback, targets: Targets) -> str:
    from devloop._atomic import fsync_dir
    from devloop.tune.suggestions import sha256_file

    entries = _read_entries(
        kind.folder / kind.journal, "backup", "staged", "sha256_before", "sha256_after"
    )
    files: list[tuple[dict[str, Any], Path, Path, State]] = []
    for entry in entries:
        path = targets.path(_project_of(entry, targets, kind.folder))
        staged = path.parent / entry["staged"]
        current = sha256_file(path)
        state: State
        if current == entry["sha256_after"]:
            state = "published"
        elif current != entry["sha256_before"]:
            state = "edited"
        elif sha256_file(staged) == entry["sha256_after"]:
            state = "staged"
        else:
            state = "unstaged"
        files.append((entry, path, staged, state))
    if decide([state for *_, state in files]) == "forward":
        for _, path, staged, state in files:
            if state == "staged":
                os.replace(staged, path)
        for folder in sorted({path.parent for _, path, _, _ in files}):
            fsync_dir(folder)
        kind.complete()
        return f"finished the {kind.what} interrupted in {kind.folder}"
    for entry, path, staged, state in files:
        staged.unlink(missing_ok=True)
        if state == "published":
            before = (kind.folder / entry["backup"]).read_bytes()
            if hashlib.sha256(before).hexdigest() != entry["sha256_before"]:
                raise TuningError(
                    f"cannot undo the {kind.what} interrupted in {kind.folder}: its copy of "
                    f"{path} ({entry['backup']}) is damaged; restore the files by hand"
                )
            undo = path.parent / _staged_name(path, f"{kind.folder.name}-undo")
            _write(undo, before.decode("utf-8"), like=path)
            os.replace(undo, path)
            fsync_dir(path.parent)
    kind.abort()
    edited = [str(path) for _, path, _, state in files if state == "edited"]
    kept = f" (kept {', '.join(edited)}: changed by hand since)" if edited else ""
    return f"undid the {kind.what} interrupted in {kind.folder}{kept}"


def _leftovers(base: Path, targets: Targets) -> Iterator[Path]:
    """What killed runs leave and no transaction uses (none is open: recovery ran)."""
    for folder in sorted(base.iterdir()):
        if not folder.is_dir() or not STAMP.fullmatch(folder.name):
            continue
        names = {path.name for path in folder.iterdir()}
        if not names & {MANIFEST, RESTORED, JOURNAL, ROLLBACK_JOURNAL}:
            yield folder  # killed before its journal: a backup of files never changed
            continue
        for name in sorted(names):
            if name.startswith(".") and name.endswith(".tmp"):
                yield folder / name
            elif name.startswith("current-") and ROLLBACK_JOURNAL not in names:
                yield folder / name
    for path in [targets.workspace_file, *targets.agents.values()]:
        yield from sorted(path.parent.glob(_staged_name(path, "*")))


def _clean(base: Path, targets: Targets) -> list[str]:
    files = folders = 0
    failed: list[str] = []
    for path in _leftovers(base, targets):
        try:
            if path.is_dir():
                shutil.rmtree(path)
                folders += 1
            else:
                path.unlink()
                files += 1
        except OSError as exc:
            failed.append(f"{path}: {exc}")
    done = []
    if files or folders:
        done.append(
            f"removed {files} temp file(s) and {folders} backup folder(s) without a journal or "
            "manifest, left by killed runs"
        )
    if failed:
        done.append(f"could not remove what killed runs left: {'; '.join(failed)}")
    return done
