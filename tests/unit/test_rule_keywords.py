"""Rule keywords on plain values: whole words, several words in a row, symbols at the edges."""

from __future__ import annotations

import pytest

from routebook.decide.rules import QueryWords

CASES = [
    ("credit card", "My Credit-Card was charged twice", True),
    ("credit card", "a card with credit", False),
    ("refund", "refunds please", False),  # whole words only
    ("c++", "Review my C++ lock-free queue", True),
    ("c++", "Which foods are rich in vitamin C?", False),
    ("c++", "Plan A failed, plan B failed, what is plan C?", False),
    ("c++", "Write a C# LINQ query", False),
    ("c#", "Write a C# LINQ query", True),
    ("c#", "I prefer C++ templates", False),
    (".net", "Is .NET 8 faster than Java?", True),
    (".net", "What is our net revenue this quarter?", False),
    ("e-mail", "send me an e mail", True),
]


@pytest.mark.parametrize(("keyword", "query", "expected"), CASES)
def test_a_keyword_matches_what_it_says(keyword: str, query: str, expected: bool) -> None:
    assert QueryWords.of(query).has(keyword) is expected
