"""The suggestions as RFC 7386 merge patches, and applying them to the files.

``build_patches`` writes into :class:`Suggestions` a patch for workspace.json (the projects'
limits as ``resource_sharing.perProjectLimits`` under the ``custom`` strategy, the one strategy
under which those numbers are the limits in force rather than caps or requests) and one per
project for its agents.json (``agents.<name>.resourceLimits``). Memory is written the way the
file already writes it (a size text, a bare number of MB, or ``*_bytes``).

``apply_tuning`` applies them: the patched files are checked with the config loader first, a
timestamped backup of every file it will touch goes to ``<workspace-dir>/tuning-backups/``,
then each file is written atomically (temp, fsync, rename). Key order, indent and unknown keys
are kept (the parsed objects keep file order; json-merge-patch changes values in place and
appends new keys). A file with comments is refused: a rewrite would lose them.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devloop.errors import TuningError, UsageError
from devloop.units import MIB

if TYPE_CHECKING:
    from devloop.config import Workspace
    from devloop.tune.suggestions import EntitySuggestion, Suggestions

BACKUP_DIR = "tuning-backups"
MANIFEST = "manifest.json"


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


def _limits(entry: EntitySuggestion, existing: dict[str, Any] | None) -> dict[str, Any]:
    assert entry.cpu is not None and entry.memory_bytes is not None
    cpu = int(entry.cpu) if float(entry.cpu).is_integer() else entry.cpu
    return {"maxCpu": cpu, **memory_fields(existing, entry.memory_bytes)}


def build_patches(suggestions: Suggestions, workspace: Workspace) -> None:
    """Fill ``suggestions.patch`` and ``suggestions.agents_patches``."""
    raw = _raw(suggestions.workspace_file)
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
            suggestions.agents_patches[project] = {
                "file": str(config.file),
                "patch": {"agents": changes},
            }


# --- applying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file apply-tuning rewrites: its path, old and new text."""

    path: Path
    old: str
    new: str

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
    """A suggestions.json, checked for its kind and version."""
    from devloop.tune.suggestions import KIND, VERSION

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuningError(f"{path}: not a suggestions file: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise TuningError(f"{path}: not a suggestions file (kind is not {KIND!r})")
    if data.get("version") != VERSION:
        raise TuningError(f"{path}: version {data.get('version')!r} is not supported ({VERSION})")
    return data


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


def plan_changes(
    workspace_dir: Path,
    data: dict[str, Any],
    *,
    force: bool = False,
    min_change: float = 0.0,
    only: str | None = None,
) -> tuple[list[FileChange], list[str]]:
    """The files the suggestions would change (checked, not written) and what was skipped."""
    import json_merge_patch

    from devloop.config import WORKSPACE_FILE, parse_agents, parse_workspace, strip_comments
    from devloop.tune.suggestions import sha256_file

    skipped: list[str] = []
    targets: list[tuple[Path, dict[str, Any], str | None]] = []
    workspace_file = workspace_dir / WORKSPACE_FILE
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
        if set(sharing) == {"strategy"}:
            patch = {}
        if patch:
            targets.append((workspace_file, patch, recorded.get("sha256")))
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
                path = Path(entry["file"])
                targets.append((path, patch, files.get(project, {}).get("sha256")))
    changes: list[FileChange] = []
    for path, patch, digest in targets:
        if not force and sha256_file(path) != digest:
            raise TuningError(
                f"{path} changed since the suggestions were made (sha256 differs); run "
                "`devloop workspace autotune` again, or pass --force to apply them anyway"
            )
        try:
            old = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TuningError(f"{path}: cannot read: {exc}") from exc
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
        if path == workspace_file:
            parse_workspace(merged, path)
        else:
            parse_agents(merged, path)
        new = _dump(merged, old)
        if new != old:
            changes.append(FileChange(path, old, new))
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
) -> ApplyResult:
    """Apply a suggestions file to the workspace's files (see the module doc)."""
    from devloop._atomic import atomic_write_text

    if only not in (None, "projects", "agents"):
        raise UsageError(f"--only must be projects or agents, not {only!r}")
    workspace_dir = Path(workspace_dir)
    data = read_suggestions(Path(suggestions_file))
    changes, skipped = plan_changes(
        workspace_dir, data, force=force, min_change=min_change, only=only
    )
    if dry_run or not changes:
        return ApplyResult(tuple(changes), None, dry_run, tuple(skipped))
    backup = _backup(workspace_dir, changes, now or datetime.now(UTC))
    for change in changes:
        try:
            atomic_write_text(change.path, change.new)
        except OSError as exc:
            raise TuningError(
                f"cannot write {change.path}: {exc}; the originals are in {backup}"
            ) from exc
    return ApplyResult(tuple(changes), backup, False, tuple(skipped))


def _backup(workspace_dir: Path, changes: list[FileChange], now: datetime) -> Path:
    from devloop._atomic import atomic_write_text

    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = workspace_dir / BACKUP_DIR / stamp
    try:
        folder.mkdir(parents=True, exist_ok=False)
        files = []
        for index, change in enumerate(changes):
            name = f"{index}-{change.path.name}"
            atomic_write_text(folder / name, change.old)
            files.append({"backup": name, "path": str(change.path.resolve())})
        atomic_write_text(folder / MANIFEST, json.dumps({"files": files}, indent=2) + "\n")
    except OSError as exc:
        raise TuningError(f"cannot write the backup {folder}: {exc}; nothing changed") from exc
    return folder


def rollback(workspace_dir: Path | str) -> tuple[Path, list[Path]]:
    """Restore the files of the newest backup (atomically each), then mark it restored so the
    next rollback goes one further back. Returns the backup and the files restored."""
    from devloop._atomic import atomic_write_text

    base = Path(workspace_dir) / BACKUP_DIR
    candidates = sorted(
        p for p in (base.iterdir() if base.is_dir() else []) if (p / MANIFEST).is_file()
    )
    if not candidates:
        raise TuningError(f"no backup to roll back to in {base}")
    folder = candidates[-1]
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    restored = []
    for entry in manifest["files"]:
        target = Path(entry["path"])
        atomic_write_text(target, (folder / entry["backup"]).read_text(encoding="utf-8"))
        restored.append(target)
    (folder / MANIFEST).rename(folder / f"{MANIFEST}.restored")
    return folder, restored
