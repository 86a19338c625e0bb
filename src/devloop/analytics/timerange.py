"""Time ranges as users write them: ``--start "2 hours ago" --end now``, ``--period 24h``.

Accepted moments (``parse_moment``):

* ``now``, ``today`` and ``yesterday`` (local midnight), optionally with a time of day:
  ``yesterday 09:00``, ``today 14:30:15``; a bare ``HH:MM`` is today at that time;
* ``2 hours ago``, ``30m ago``, ``1h30m ago``, and a bare duration (``24h``), which means the same;
* ISO 8601: ``2026-01-05``, ``2026-01-05T09:00``, ``2026-01-05 09:00:00Z``,
  ``2026-01-05T09:00+02:00``. Without a zone the local time zone is meant.

Durations (``--period``, ``--interval``) are :func:`devloop.units.parse_duration`'s: ``30s``,
``5m``, ``24h``, ``7d``, ``1h30m``.

A :class:`TimeRange` (defined with the rest of the question in :mod:`devloop.analytics.query`)
is half-open, ``start <= ts < end``, in UTC. How the three options combine:

=====================  =======================================================================
given                  range
=====================  =======================================================================
nothing                all data
start                  [start, after the newest sample)
end                    [oldest sample, end)
start, end             [start, end)
period                 the last ``period`` of recorded data: [newest - period, newest]
start, period          [start, start + period)
end, period            [end - period, end)
=====================  =======================================================================

Anchoring a bare ``--period`` on the newest sample (not on the clock) keeps "the last 24 hours"
meaningful for a store whose collector stopped a while ago. Reports print the range as given
(:meth:`TimeRange.shown`): an open end as the newest sample, not the microsecond after it that
closes the half-open range.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from devloop.analytics.query import TimeRange, format_moment
from devloop.errors import UsageError
from devloop.units import parse_duration

__all__ = ["TimeRange", "format_moment", "parse_moment", "parse_period", "parse_range"]

_CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_HINT = (
    "expected a time like '2 hours ago', 'yesterday 09:00', 'today', 'now', "
    "'2026-01-05T09:00' or a duration like '30m'"
)


def parse_moment(text: str, *, now: datetime | None = None, tz: tzinfo | None = None) -> datetime:
    """The aware UTC datetime ``text`` names (see the module doc for what is accepted).

    ``now`` (aware; default the clock) anchors relative times; ``tz`` is the zone of naive
    times and of ``today``/``yesterday`` (default the machine's local zone).
    Raises UsageError quoting ``text`` when it cannot be read.
    """
    stripped = " ".join(text.strip().lower().split())
    if not stripped:
        raise UsageError(f"empty time {text!r}: {_HINT}")
    clock_now = now if now is not None else datetime.now(UTC)
    zone = tz
    local_now = clock_now.astimezone(zone) if zone is not None else clock_now.astimezone()
    if stripped == "now":
        return clock_now.astimezone(UTC)
    day_words = {"today": 0, "yesterday": 1}
    head, _, rest = stripped.partition(" ")
    if head in day_words:
        day = local_now.date() - timedelta(days=day_words[head])
        clock = _clock(rest, text) if rest else time(0, 0)
        return _local(datetime.combine(day, clock), zone)
    if _CLOCK_RE.match(stripped):
        return _local(datetime.combine(local_now.date(), _clock(stripped, text)), zone)
    relative = stripped.removesuffix(" ago").removesuffix("ago").strip()
    if relative and relative[0].isdigit() and not re.match(r"^\d{4}-", relative):
        try:
            seconds = parse_duration(relative)
        except UsageError:
            raise UsageError(f"cannot read the time {text!r}: {_HINT}") from None
        return (clock_now - timedelta(seconds=seconds)).astimezone(UTC)
    return _iso(text, zone)


def _local(naive: datetime, zone: tzinfo | None) -> datetime:
    # Without a zone, astimezone() reads a naive time as local time, DST rules included.
    return (naive.replace(tzinfo=zone) if zone is not None else naive).astimezone(UTC)


def _clock(text: str, original: str) -> time:
    match = _CLOCK_RE.match(text.strip())
    if match is None:
        raise UsageError(f"cannot read the time {original!r}: {_HINT}")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise UsageError(f"cannot read the time {original!r}: no such time of day")
    return time(hours, minutes, seconds)


def _iso(text: str, zone: tzinfo | None) -> datetime:
    candidate = text.strip()
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        if len(candidate) == 10:
            parsed = datetime.combine(date.fromisoformat(candidate), time(0, 0))
        else:
            parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}: {_HINT}") from None
    if parsed.tzinfo is None:
        return _local(parsed, zone)
    return parsed.astimezone(UTC)


def parse_period(text: str) -> timedelta:
    """A positive duration (``24h``, ``7d``); UsageError quoting ``text`` otherwise."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise UsageError(f"the period must be positive, not {text!r}")
    return timedelta(seconds=seconds)


def parse_range(
    start: str | None = None,
    end: str | None = None,
    period: str | None = None,
    *,
    now: datetime | None = None,
    tz: tzinfo | None = None,
) -> TimeRange:
    """The :class:`TimeRange` of the ``--start``, ``--end`` and ``--period`` texts."""
    return TimeRange(
        start=parse_moment(start, now=now, tz=tz) if start is not None else None,
        end=parse_moment(end, now=now, tz=tz) if end is not None else None,
        period=parse_period(period) if period is not None else None,
    )
