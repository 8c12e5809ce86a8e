"""Rule keywords on plain values: whole words, several words in a row, symbols at the edges of
each word, substrings in scripts written without spaces, and Korean words with their endings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    # A keyword of several words keeps each word's symbols, not only the outer ones.
    ("c++ developer", "I need a C developer", False),
    ("c++ developer", "I need a C++ developer", True),
    ("c# tutorial", "a C tutorial for beginners", False),
    ("c# tutorial", "a C# tutorial for beginners", True),
    ("senior c++ developer", "senior C developer wanted", False),
    ("senior c++ developer", "Senior C++, developer wanted", True),
    ("learn .net core", "learn .NET Core today", True),
    ("learn .net core", "learn net core today", False),
    ("e-mail address", "your e mail address", True),
    # Scripts without spaces: a sentence is one run of letters, so a keyword is found inside it.
    ("退款", "我要退款", True),
    ("退款", "我要退货", False),
    ("返金", "注文の返金をお願いします", True),
    ("ラーメン", "美味しいラーメンが食べたい", True),
    ("คืนเงิน", "ฉันต้องการคืนเงิน", True),
    ("退款 申请", "我的退款申请", True),
    # Accented Latin text is read as words, as before.
    ("café", "un Café noir", True),
    ("café", "deux cafés", False),
    ("c++", "un café en C++", True),
    # Spaced words next to such letters are whole words of their own.
    ("iphone", "我想买iPhone", True),
    ("iphone", "我想买iPhones", False),
    ("c++", "我在学c++", True),
    ("c++", "我在学c", False),
    # Korean: particles and endings follow the word, so a Hangul keyword matches at the start
    # of a word, with Hangul after it; not inside a word.
    ("환불", "환불해주세요", True),
    ("환불", "환불은 언제 되나요?", True),
    ("환불", "주문을 환불", True),
    ("환불", "교환불가 상품", False),  # 환불 inside 교환불가 ("not exchangeable")
    ("불", "환불해주세요", False),
    ("환불", "환불request", False),
    ("환불 요청", "환불을 요청합니다", True),
    ("환불 요청", "요청 환불", False),
    ("iphone 환불", "iPhone 환불해 주세요", True),
    ("환불", "我要退款환불", True),
    ("refund", "환불refund", False),
]


@pytest.mark.parametrize(("keyword", "query", "expected"), CASES)
def test_a_keyword_matches_what_it_says(keyword: str, query: str, expected: bool) -> None:
    assert QueryWords.of(query).has(keyword) is expected


HAN = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)


@given(
    keyword=st.text(HAN, min_size=1, max_size=4),
    before=st.text(HAN, max_size=10),
    after=st.text(HAN, max_size=10),
)
def test_a_chinese_keyword_is_found_anywhere_in_a_chinese_sentence(
    keyword: str, before: str, after: str
) -> None:
    assert QueryWords.of(before + keyword + after).has(keyword)
    assert QueryWords.of(before + after).has(keyword) is (keyword in before + after)


#: A few syllables, so that keywords and words often share a start.
HANGUL = st.sampled_from("환불요청은해주세")
HANGUL_WORD = st.text(HANGUL, min_size=1, max_size=6)


@given(keyword=st.text(HANGUL, min_size=1, max_size=3), words=st.lists(HANGUL_WORD, max_size=6))
def test_a_korean_keyword_matches_exactly_the_words_that_start_with_it(
    keyword: str, words: list[str]
) -> None:
    """Hangul after the keyword is its ending; Hangul before it makes it part of another
    word."""
    found = QueryWords.of(" ".join(words)).has(keyword)
    assert found is any(word.startswith(keyword) for word in words)


@given(
    keyword=st.lists(st.text(HANGUL, min_size=1, max_size=3), min_size=2, max_size=3),
    endings=st.lists(st.text(HANGUL, max_size=3), min_size=3, max_size=3),
)
def test_each_word_of_a_korean_keyword_takes_its_own_ending(
    keyword: list[str], endings: list[str]
) -> None:
    sentence = " ".join(word + ending for word, ending in zip(keyword, endings, strict=False))
    assert QueryWords.of(f"네, {sentence}.").has(" ".join(keyword))
