"""Explicit rules, first match wins: conditions on request metadata, keywords, a regular
expression and the query's token count.

A keyword matches whole words, case-insensitively; a keyword of several words ("credit card",
"e-mail") matches those words in a row, whatever separates them in the query. Symbols at the
edges of a keyword's words are part of them: "c++" and "c++ developer" match those, not the
letter "c", and ".net" does not match "net".

Chinese, Japanese, Thai, Lao, Khmer and Burmese are written without spaces between words, so a
whole sentence is one run of letters: a keyword in those scripts matches anywhere in the text
("退款" in "我要退款"). Latin and other spaced words next to such letters are still whole words
("iPhone" in "我想买iPhone").

Korean is written with spaces, but its particles and endings are part of the word ("환불은",
"환불해주세요": refund + a particle or an ending), so a whole-word "환불" almost never fired. A
Hangul word of a keyword matches at the start of a word, with any Hangul after it; its start
is still a word's ("불" is not found in "환불").

Regular expressions run with the `regex` module's timeout, so a hostile query cannot make a
rule backtrack for long: a rule whose match times out simply does not match (and is reported).

The token bounds count the query, the user message the keywords and the regular expression
see, not the system prompt or earlier turns: a "short questions to the small model" rule must
keep firing in a chat with a system prompt (what fits a model's context window is policy's
part, on the whole conversation).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import regex

from routebook.policyspec import Rule

#: Longest a rule's regular expression may run on one query.
REGEX_TIMEOUT_SECONDS = 0.01
#: Scripts written without spaces between words, and the Japanese marks of the "Common"
#: script used inside their words (ー, its half-width form, 〆). By script, not by script
#: extension, which is slower to scan a long query with.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\u30fc\uff70\u3006"
#: A letter or digit of a script with spaces: what a whole word is made of, and what must not
#: touch a keyword's edge.
_SPACED = rf"[^\W{_UNSPACED}]"
_WORD = regex.compile(_SPACED + "+")
_ANY_WORD = regex.compile(r"\w+")
_UNSPACED_LETTER = regex.compile(rf"(?=\w)[{_UNSPACED}]")
_HANGUL = regex.compile(r"\p{Hangul}")
_EDGES = regex.compile(r"^(\W*)(.*?)(\W*)$", regex.DOTALL)


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: Rule | None
    #: The model the rule routes to (its model, or its tier's ceiling model).
    model: str | None = None
    #: Rules whose regular expression ran out of time (treated as not matching).
    timed_out: tuple[str, ...] = ()


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


@dataclass(frozen=True, slots=True)
class QueryWords:
    """A query's spaced words, lower-cased: as a set for one-word keywords, and joined by
    single spaces (with one at each end) for keywords of several words. Keywords with symbols
    or in a script without spaces are searched in the text itself."""

    single: frozenset[str]
    joined: str
    text: str

    @classmethod
    def of(cls, text: str) -> QueryWords:
        # ASCII text has no letter of a script without spaces, and `\w+` scans it twice as
        # fast as `_WORD` (str.isascii takes constant time).
        words = [w.lower() for w in (_ANY_WORD if text.isascii() else _WORD).findall(text)]
        return cls(frozenset(words), " " + " ".join(words) + " ", text)

    def has(self, keyword: str) -> bool:
        pattern = _keyword_pattern(keyword)
        if pattern is not None:
            return pattern.search(self.text) is not None
        parts = tuple(w.lower() for w in _WORD.findall(keyword))
        if len(parts) == 1:
            return parts[0] in self.single
        return bool(parts) and " " + " ".join(parts) + " " in self.joined


@lru_cache(maxsize=4096)
def _keyword_parts(keyword: str) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """The keyword's whitespace-separated parts as (leading symbols, words, trailing symbols).
    Symbols between a part's words are separators ("e-mail" is "e mail"); a part of symbols
    alone belongs to its neighbour ("c ++" is "c++", ". net" is ".net")."""
    parts: list[tuple[str, tuple[str, ...], str]] = []
    pending = ""
    for chunk in keyword.split():
        edges = _EDGES.match(chunk)
        assert edges is not None  # the pattern matches any string
        lead, body, trail = edges.groups()
        words = tuple(_ANY_WORD.findall(body))
        if not words and parts:
            parts[-1] = (parts[-1][0], parts[-1][1], parts[-1][2] + chunk)
        elif not words:
            pending += chunk
        else:
            parts.append((pending + lead, words, trail))
            pending = ""
    return tuple(parts)


@lru_cache(maxsize=4096)
def _keyword_pattern(keyword: str) -> regex.Pattern[str] | None:
    """A search pattern for a keyword with symbols ("c++ developer"), in a script without
    spaces ("退款") or in Hangul ("환불"); None for a keyword of other spaced words only, which
    QueryWords matches by word.

    Each part keeps its own symbols, and parts are joined by any separator (none is needed
    next to a letter of a script without spaces). An edge of the keyword must not touch a
    spaced letter, unless it is itself a letter of a script without spaces: there a word can
    end anywhere. A word ending in Hangul may go on in Hangul (its particle or ending)."""
    parts = _keyword_parts(keyword)
    if not parts or (
        _UNSPACED_LETTER.search(keyword) is None
        and _HANGUL.search(keyword) is None
        and not any(p[0] or p[2] for p in parts)
    ):
        return None
    pattern, previous = "", ""
    for lead, words, trail in parts:
        for i, word in enumerate(words):
            piece = (lead if i == 0 else "") + word + (trail if i == len(words) - 1 else "")
            if previous:
                touching = _unspaced(previous) or _unspaced(piece[0])
                pattern += r"\W*" if touching else r"\W+"
            pattern += regex.escape(piece)
            if _HANGUL.match(piece[-1]):
                pattern += r"\p{Hangul}*"
            previous = piece[-1]
    if not _unspaced(keyword.strip()[0]):
        pattern = rf"(?<!{_SPACED})" + pattern
    if not _unspaced(previous):
        pattern += rf"(?!{_SPACED})"
    return regex.compile(pattern, regex.IGNORECASE)


def _unspaced(letter: str) -> bool:
    return _UNSPACED_LETTER.match(letter) is not None


def rule_matches(
    rule: Rule, text: str, words: QueryWords, metadata: Mapping[str, str], tokens: int
) -> bool:
    """Raises TimeoutError when the rule's regular expression runs out of time."""
    if any(metadata.get(key) != value for key, value in rule.metadata.items()):
        return False
    if rule.keywords and not any(words.has(k) for k in rule.keywords):
        return False
    if rule.min_tokens is not None and tokens < rule.min_tokens:
        return False
    if rule.max_tokens is not None and tokens > rule.max_tokens:
        return False
    if rule.regex is not None:
        return _compiled(rule.regex).search(text, timeout=REGEX_TIMEOUT_SECONDS) is not None
    return True


def first_match(
    rules: Sequence[Rule],
    text: str,
    metadata: Mapping[str, str],
    tokens: int,
    usable: Collection[str],
    tiers: Mapping[str, str],
) -> RuleMatch:
    """The first rule that matches and whose target model is usable (allowed by policy, not
    cooling down); a rule whose target is not usable is passed over."""
    words = QueryWords.of(text)
    timed_out: list[str] = []
    for rule in rules:
        try:
            matched = rule_matches(rule, text, words, metadata, tokens)
        except TimeoutError:
            timed_out.append(rule.name)
            continue
        target = rule.model or tiers.get(rule.tier or "")
        if matched and target is not None and target in usable:
            return RuleMatch(rule, target, tuple(timed_out))
    return RuleMatch(None, None, tuple(timed_out))
