from wordfreq import top, words


def test_words_lowercases_and_splits() -> None:
    assert words("The cat, the HAT.") == ["the", "cat", "the", "hat"]


def test_top_breaks_ties_alphabetically() -> None:
    assert top("b a b c a", 2) == [("a", 2), ("b", 2)]
