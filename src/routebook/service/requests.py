"""What a Decide request is, and the checks every request passes before any work is done."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from routebook.catalog import estimate_tokens
from routebook.domain import Message, routing_text
from routebook.errors import InvalidArgument

MAX_MESSAGES = 1000
MAX_METADATA_ENTRIES = 64
MAX_TAGS = 32
MAX_NAME_CHARS = 128
KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class DecideQuery:
    messages: tuple[Message, ...]
    namespace: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    quality_target: float | None = None
    expected_output_tokens: int | None = None
    tenant: str = ""
    model_override: str | None = None
    max_latency_ms: float | None = None
    required_tags: tuple[str, ...] = ()
    contains_pii: bool = False
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class RoutingLimits:
    k: int = 10
    max_query_chars: int = 20000
    default_output_tokens: int = 256
    max_fallbacks: int = 5


def conversation_tokens(messages: Sequence[Message]) -> int:
    """Input tokens a call with this conversation pays for: every message, not only the text
    routed on (a system prompt and earlier turns are sent too)."""
    return estimate_tokens(" ".join(m.content for m in messages))


def conversation_text(messages: Sequence[Message], max_chars: int) -> str:
    """The text to route on, or InvalidArgument saying what is wrong with the conversation."""
    if not messages:
        raise InvalidArgument("messages is empty: send at least one user message")
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages per request")
    for position, message in enumerate(messages):
        if message.role not in KNOWN_ROLES:
            raise InvalidArgument(
                f"messages[{position}].role is {message.role[:40]!r}; use one of "
                f"{', '.join(sorted(KNOWN_ROLES))}"
            )
    text = routing_text(tuple(messages))
    if not text:
        raise InvalidArgument("the conversation has no user message with text to route on")
    if "\x00" in text:
        raise InvalidArgument("the user message contains a NUL character")
    if len(text) > max_chars:
        raise InvalidArgument(
            f"the user message has {len(text)} characters; the limit is {max_chars} "
            "(setting max_query_chars)"
        )
    return text


def check_query_fields(query: DecideQuery) -> None:
    if len(query.metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"at most {MAX_METADATA_ENTRIES} metadata entries per request")
    target = query.quality_target
    if target is not None and (not math.isfinite(target) or not 0.0 < target <= 1.0):
        raise InvalidArgument(f"quality_target must be in (0, 1], got {target}")
    sla = query.max_latency_ms
    if sla is not None and (not math.isfinite(sla) or sla <= 0):
        raise InvalidArgument(f"max_latency_ms must be a positive number, got {sla}")
    if len(query.tenant) > MAX_NAME_CHARS:
        raise InvalidArgument(f"tenant is longer than {MAX_NAME_CHARS} characters")
    if len(query.required_tags) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} required_tags per request")
    if len(query.session_id) > MAX_NAME_CHARS:
        raise InvalidArgument(f"session_id is longer than {MAX_NAME_CHARS} characters")
    for tag in query.required_tags:
        if not tag.strip() or len(tag) > MAX_NAME_CHARS:
            raise InvalidArgument(f"required tag {tag[:40]!r} is empty or too long")
