"""Reading JSON config files with exact error locations.

A :class:`Node` wraps one JSON value with its file and JSON path, so every check can say
``<file>: <json.path>: <what is wrong>``. Objects track which keys were read; keys left unread
become warnings (unknown keys are tolerated, never fatal).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devloop.errors import ConfigError, UsageError
from devloop.units import parse_size


def strip_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments blanked out, outside strings.

    The guide's own examples carry ``// Critical`` comments; blanking (not deleting) keeps
    every line and column where it was, so JSON errors still point at the right place.
    """
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
        elif ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def load_json(path: Path, display: str) -> Any:
    """The parsed content of a JSON file (comments allowed), or a ConfigError with line/column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(display, "", "file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(display, "", "not UTF-8 text") from exc
    except OSError as exc:
        raise ConfigError(display, "", f"cannot read: {exc.strerror}") from exc
    try:
        return json.loads(strip_comments(text), object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            display, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}"
        ) from exc


class _Duplicated(dict[str, Any]):
    """A JSON object that spelled a key twice (json keeps the last): refused by
    :meth:`Node.obj`, which knows the object's path, as ambiguous."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    twice = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    if not twice:
        return dict(pairs)
    duplicated = _Duplicated(pairs)
    duplicated.duplicates = tuple(twice)
    return duplicated


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class Node:
    """One JSON value, where it came from, and the checks that read it."""

    def __init__(self, value: Any, file: str, path: str, warnings: list[str]) -> None:
        self.value = value
        self.file = file
        self.path = path
        self.warnings = warnings
        self._read: set[str] = set()

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.file, self.path or "(top level)", message)

    def child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    # --- objects -------------------------------------------------------------------------

    def obj(self) -> Node:
        if not isinstance(self.value, dict):
            raise self.error(f"must be an object, got {_type_name(self.value)}")
        if isinstance(self.value, _Duplicated):
            key = self.value.duplicates[0]
            raise Node(None, self.file, self.child_path(key), self.warnings).error(
                f"duplicate key {key!r} (JSON keeps only the last; give it once)"
            )
        return self

    def get(self, *spellings: str) -> Node | None:
        """The child under the first present spelling of a key (all spellings count as read)."""
        found: Node | None = None
        for key in spellings:
            self._read.add(key)
            if found is None and key in self.value:
                found = Node(self.value[key], self.file, self.child_path(key), self.warnings)
        return found

    def items(self) -> Iterator[tuple[str, Node]]:
        """Every (key, child) of an object whose keys are names (projects, agents, profiles)."""
        for key, value in self.value.items():
            self._read.add(key)
            yield key, Node(value, self.file, self.child_path(key), self.warnings)

    def done(self) -> None:
        """Warn about every key of this object that nothing read."""
        for key in self.value:
            if key not in self._read:
                self.warnings.append(f"{self.file}: {self.child_path(key)}: unknown key, ignored")

    # --- scalars -------------------------------------------------------------------------

    def number(
        self,
        minimum: float | None = None,
        maximum: float | None = None,
        *,
        exclusive_minimum: bool = False,
    ) -> float:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"must be a number, got {_type_name(value)} {json.dumps(value)}")
        if not math.isfinite(value):
            raise self.error("must be a finite number")
        low_fails = minimum is not None and (
            value <= minimum if exclusive_minimum else value < minimum
        )
        if low_fails or (maximum is not None and value > maximum):
            raise self.error(
                f"must be {_range_text(minimum, maximum, exclusive_minimum)}, got {_num(value)}"
            )
        return float(value)

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                f"must be a whole number, got {_type_name(self.value)} {json.dumps(self.value)}"
            )
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.error(f"must be {_range_text(minimum, maximum, False)}, got {value}")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(
                f"must be true or false, got {_type_name(self.value)} {json.dumps(self.value)}"
            )
        return self.value

    def string(self, *, non_empty: bool = False) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"must be a string, got {_type_name(self.value)}")
        if non_empty and not self.value.strip():
            raise self.error("must not be empty")
        return self.value

    def choice(self, choices: tuple[str, ...]) -> str:
        value = self.string()
        if value not in choices:
            raise self.error(f"must be one of {', '.join(choices)}, got {json.dumps(value)}")
        return value

    def strings(self) -> tuple[str, ...]:
        if not isinstance(self.value, list):
            raise self.error(f"must be a list of strings, got {_type_name(self.value)}")
        out = []
        for index, item in enumerate(self.value):
            if not isinstance(item, str):
                raise Node(item, self.file, self.child_path(index), self.warnings).error(
                    f"must be a string, got {_type_name(item)}"
                )
            out.append(item)
        return tuple(out)

    def size(self) -> int:
        """Bytes in a size: ``"512MB"``, ``"1.5GiB"``, or a bare number of MB."""
        if isinstance(self.value, bool) or not isinstance(self.value, str | int | float):
            raise self.error(f'must be a size like "512MB", got {_type_name(self.value)}')
        try:
            return parse_size(self.value)
        except UsageError as exc:
            raise self.error(str(exc)) from exc

    def list(self) -> list[Node]:
        if not isinstance(self.value, list):
            raise self.error(f"must be a list, got {_type_name(self.value)}")
        return [
            Node(item, self.file, self.child_path(i), self.warnings)
            for i, item in enumerate(self.value)
        ]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range_text(minimum: float | None, maximum: float | None, exclusive_minimum: bool) -> str:
    if minimum is not None and maximum is not None:
        if exclusive_minimum:
            return f"above {_num(minimum)} and at most {_num(maximum)}"
        return f"from {_num(minimum)} to {_num(maximum)}"
    if minimum is not None:
        return f"above {_num(minimum)}" if exclusive_minimum else f"at least {_num(minimum)}"
    return f"at most {_num(maximum or 0)}"
