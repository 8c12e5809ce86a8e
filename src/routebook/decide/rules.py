"""Explicit rules, first match wins: conditions on request metadata, keywords, a regular
expression and the token count.

A keyword matches whole words, case-insensitively; a keyword of several words ("credit card",
"e-mail") matches those words in a row, whatever separates them in the query. Symbols at a
keyword's edges are part of it: "c++" and "c#" match those, not the letter "c", and ".net"
does not match "net".

Regular expressions run with the `regex` module's timeout, so a hostile query cannot make a
rule backtrack for long: a rule whose match times out simply does not match (and is reported).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import regex

from routebook.policyspec import Rule

#: Longest a rule's regular expression may run on one query.
REGEX_TIMEOUT_SECONDS = 0.01
_WORD = regex.compile(r"\w+")
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
    """A query's words, lower-cased: as a set for one-word keywords, and joined by single
    spaces (with one at each end) for keywords of several words."""

    single: frozenset[str]
    joined: str
    text: str

    @classmethod
    def of(cls, text: str) -> QueryWords:
        words = [w.lower() for w in _WORD.findall(text)]
        return cls(frozenset(words), " " + " ".join(words) + " ", text)

    def has(self, keyword: str) -> bool:
        with_symbols = _symbol_pattern(keyword)
        if with_symbols is not None:
            return with_symbols.search(self.text) is not None
        parts = _keyword_words(keyword)
        if len(parts) == 1:
            return parts[0] in self.single
        return bool(parts) and " " + " ".join(parts) + " " in self.joined


@lru_cache(maxsize=4096)
def _keyword_words(keyword: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(keyword))


@lru_cache(maxsize=4096)
def _symbol_pattern(keyword: str) -> regex.Pattern[str] | None:
    """For a keyword with symbols at its edges ("c++", "c#", ".net"): its words in a row with
    those symbols, not inside a longer word. None for a keyword of words only."""
    edges = _EDGES.match(keyword.strip())
    assert edges is not None  # the pattern matches any string
    lead, trail = ("".join(part.split()) for part in (edges.group(1), edges.group(3)))
    if not lead and not trail:
        return None
    body = r"\W+".join(regex.escape(w) for w in _keyword_words(keyword))
    core = regex.escape(lead) + body + regex.escape(trail)
    return regex.compile(r"(?<!\w)" + core + r"(?!\w)", regex.IGNORECASE)


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
