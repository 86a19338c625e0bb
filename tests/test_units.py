import pytest

from devloop.errors import UsageError
from devloop.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2147483648),
        ("500MB", 524288000),
        ("512MB", 536870912),
        ("1.5GiB", 1610612736),
        ("1.5gb", 1610612736),
        ("128", 134217728),
        (128, 134217728),
        (0.5, 524288),
        ("64KB", 65536),
        ("1TB", 1024**4),
        ("100B", 100),
        (" 2 GB ", 2147483648),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2XB", "unknown size unit 'XB' in '2XB' (use B, KB, MB, GB, TB)"),
        ("-5MB", "size must not be negative: '-5MB'"),
        ("", "not a size: '' (expected a number and a unit, like '512MB')"),
        ("lots", "not a size: 'lots' (expected a number and a unit, like '512MB')"),
        (-1, "not a size: -1 (must be a non-negative number of MB)"),
    ],
)
def test_parse_size_rejects(text, message):
    with pytest.raises(UsageError) as caught:
        parse_size(text)
    assert str(caught.value) == message


def test_guide_figures_are_binary():
    two_gb = parse_size("2GB")
    assert format_size(two_gb * 2 / 5) == "819.2MB"
    assert format_size(two_gb / 5) == "409.6MB"
    assert format_size(two_gb / 3) == "682.7MB"
    assert format_size(two_gb) == "2GB"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("0.5s", 0.5),
     ("250ms", 0.25), (10, 10), ("2 hours", 7200)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "5m later"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError):
        parse_duration(text)
