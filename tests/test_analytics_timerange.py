"""Time text as users write it, and how --start/--end/--period combine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devloop.analytics.timerange import TimeRange, format_moment, parse_moment, parse_range
from devloop.errors import UsageError

NOW = datetime(2026, 1, 7, 15, 30, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("2 hours ago", NOW - timedelta(hours=2)),
        ("30m ago", NOW - timedelta(minutes=30)),
        ("1h30m ago", NOW - timedelta(minutes=90)),
        ("24h", NOW - timedelta(hours=24)),
        ("today", datetime(2026, 1, 7, tzinfo=UTC)),
        ("yesterday", datetime(2026, 1, 6, tzinfo=UTC)),
        ("yesterday 09:00", datetime(2026, 1, 6, 9, tzinfo=UTC)),
        ("Today 14:30:15", datetime(2026, 1, 7, 14, 30, 15, tzinfo=UTC)),
        ("08:15", datetime(2026, 1, 7, 8, 15, tzinfo=UTC)),
        ("2026-01-05", datetime(2026, 1, 5, tzinfo=UTC)),
        ("2026-01-05T09:00", datetime(2026, 1, 5, 9, tzinfo=UTC)),
        ("2026-01-05 09:00:00Z", datetime(2026, 1, 5, 9, tzinfo=UTC)),
        ("2026-01-05T09:00+02:00", datetime(2026, 1, 5, 7, tzinfo=UTC)),
    ],
)
def test_moments_in_utc(text: str, expected: datetime) -> None:
    assert parse_moment(text, now=NOW, tz=UTC) == expected


def test_naive_and_day_words_use_the_zone() -> None:
    assert parse_moment("2026-01-05T09:00", now=NOW, tz=PLUS2) == datetime(
        2026, 1, 5, 7, tzinfo=UTC
    )
    assert parse_moment("yesterday 09:00", now=NOW, tz=PLUS2) == datetime(2026, 1, 6, 7, tzinfo=UTC)
    assert parse_moment("2026-01-05T09:00Z", now=NOW, tz=PLUS2) == datetime(
        2026, 1, 5, 9, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text", ["next tuesday", "", "yesterday 25:00", "2026-13-01", "5 parsecs ago"]
)
def test_bad_text_is_quoted(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_moment(text, now=NOW, tz=UTC)
    assert repr(text) in str(info.value)


def test_combinations() -> None:
    first, last = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    us = timedelta(microseconds=1)
    assert TimeRange().resolve(first, last) == (first, last + us)
    assert parse_range(period="1h").resolve(first, last) == (
        last + us - timedelta(hours=1),
        last + us,
    )
    r = parse_range(start="2026-01-05T10:00Z", period="2h", now=NOW, tz=UTC)
    assert r.bounded and r.resolve(None, None) == (
        datetime(2026, 1, 5, 10, tzinfo=UTC),
        datetime(2026, 1, 5, 12, tzinfo=UTC),
    )
    r = parse_range(end="2026-01-05T10:00Z", period="30m", now=NOW, tz=UTC)
    assert r.resolve(first, last)[0] == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    assert parse_range(start="2026-01-05T10:00Z", tz=UTC).resolve(first, last)[1] == last + us
    with pytest.raises(UsageError, match="is not before the end"):
        parse_range(start="today", end="yesterday", now=NOW, tz=UTC)
    with pytest.raises(UsageError, match="period must be positive"):
        parse_range(period="0s")


def test_format_moment() -> None:
    assert format_moment(datetime(2026, 1, 5, 9, tzinfo=PLUS2)) == "2026-01-05 07:00:00 UTC"
    assert format_moment(datetime(2026, 1, 5, 9, 0, 0, 500000, tzinfo=UTC)) == (
        "2026-01-05 09:00:00.5 UTC"
    )
