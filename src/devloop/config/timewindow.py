"""Daily time windows such as ``"09:00-17:00"`` and ``"17:00-09:00"`` (crossing midnight)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from devloop.errors import UsageError

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


@dataclass(frozen=True)
class TimeWindow:
    """A half-open daily window [start, end); ``end <= start`` means it crosses midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """Whether ``moment`` (local time of day) falls in the window."""
        if self.start == self.end:
            return True  # "00:00-00:00": all day
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _clock(hours: str, minutes: str, text: str) -> time:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return time(0, 0)
    if h > 23 or m > 59:
        raise UsageError(f"not a time of day in {text!r} (hours 00-23, minutes 00-59)")
    return time(h, m)


def parse_window(text: str) -> TimeWindow:
    """A window from ``"HH:MM-HH:MM"``."""
    match = _WINDOW_RE.match(text)
    if match is None:
        raise UsageError(f"not a time window: {text!r} (expected HH:MM-HH:MM, like 09:00-17:00)")
    h1, m1, h2, m2 = match.groups()
    return TimeWindow(_clock(h1, m1, text), _clock(h2, m2, text))


def parse_time_of_day(text: str) -> time:
    """A local time of day from ``"17:30"`` or ``"17:30:05"``."""
    match = _TIME_RE.match(text)
    if match is None:
        raise UsageError(f"not a time of day: {text!r} (expected HH:MM, like 17:30)")
    hours, minutes, seconds = match.groups()
    moment = _clock(hours, minutes, text)
    return moment.replace(second=int(seconds or 0) % 60)
