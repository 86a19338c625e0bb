import pytest

from unitconv import convert


def test_km_to_m() -> None:
    assert convert(1.5, "km", "m") == 1500.0


def test_mass_is_not_length() -> None:
    with pytest.raises(ValueError, match="mass to length"):
        convert(1, "kg", "m")
