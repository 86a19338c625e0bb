"""Word frequencies of plain text."""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return _WORD.findall(text.lower())


def top(text: str, n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` most frequent words with their counts, ties broken alphabetically."""
    counts = Counter(words(text))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
