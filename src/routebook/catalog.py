"""The model catalog of a namespace: what each model costs, and their order by price.

Price order doubles as strength order: a `best_model = M` label means M and every pricier model
answer well, and "the strongest model" is the priciest. Models listed at the same prices are one
tier: a label on one says nothing of the other, since neither is stronger, a tier ceiling at one
allows the other, and the escalation cap holds every model of the top tier. A catalog is
immutable; editing one makes a new one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from routebook.errors import InvalidArgument

#: Rough characters per token for English text; good enough for a cost estimate.
CHARS_PER_TOKEN = 4

#: Scripts written without spaces, where a character is about a token or more (GPT-style and
#: most other tokenizers): CJK ideographs and punctuation, kana, Hangul, Thai, full-width forms.
_TOKEN_PER_CHAR = re.compile(
    "[\u0e00-\u0e7f\u1100-\u11ff\u3000-\u30ff\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0003134f]+"
)


#: Bounds on a catalog model's numbers, from a route file or the Admin API alike. A price past
#: a dollar a token or a latency past a day is a typo (an extra zero, 1e308), and the extremes
#: do harm: an infinite cost was "the cheapest" and broke the decision log's JSON. The context
#: window is an int32 column in the store.
MAX_USD_PER_MTOK = 1_000_000.0
MAX_LATENCY_MS = 86_400_000.0
MAX_CONTEXT_WINDOW = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    latency_ms: float
    context_window: int
    tags: Mapping[str, str] = field(default_factory=dict)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000

    @property
    def price_key(self) -> tuple[float, float, str]:
        """The catalog's order. An unknown price (NaN, from a catalog stored before prices were
        bounded) sorts as the dearest: NaN in a sort key leaves the other models out of
        order, and a tier ceiling then let a model ten times its price through."""
        total = self.input_usd_per_mtok + self.output_usd_per_mtok
        output = self.output_usd_per_mtok
        return (
            total if not math.isnan(total) else math.inf,
            output if not math.isnan(output) else math.inf,
            self.name,
        )


def out_of_bounds(spec: ModelSpec) -> list[str]:
    """What of a model's numbers lies outside the bounds above, each as "FIELD is VALUE; give
    a number from LOW to HIGH": empty for a model every write path accepts."""
    problems = [
        f"{name} is {value}; give a number from 0 to {most:g}"
        for name, value, most in (
            ("input_usd_per_mtok", spec.input_usd_per_mtok, MAX_USD_PER_MTOK),
            ("output_usd_per_mtok", spec.output_usd_per_mtok, MAX_USD_PER_MTOK),
            ("latency_ms", spec.latency_ms, MAX_LATENCY_MS),
        )
        if not (math.isfinite(value) and 0 <= value <= most)
    ]
    if not 0 < spec.context_window <= MAX_CONTEXT_WINDOW:
        problems.append(
            f"context_window is {spec.context_window}; give a number from 1 to {MAX_CONTEXT_WINDOW}"
        )
    return problems


class Catalog:
    """Models cheapest first, looked up by name."""

    __slots__ = ("_by_name", "_models", "_names", "_rank", "_strongest", "_tier")

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        ordered = tuple(sorted(models, key=lambda m: m.price_key))
        self._models = ordered
        self._by_name = {m.name: m for m in ordered}
        if len(self._by_name) != len(ordered):
            raise InvalidArgument("the catalog names a model twice")
        # Kept ready: every Decide asks for ranks and names dozens of times (per neighbour and
        # model), which made building them on each call a sixth of a cached Decide's profile.
        self._names = tuple(m.name for m in ordered)
        self._rank = {name: i for i, name in enumerate(self._names)}
        self._tier: dict[str, int] = {}
        tier = -1
        for i, model in enumerate(ordered):
            if i == 0 or model.price_key[:2] != ordered[i - 1].price_key[:2]:
                tier += 1  # a new price (unknown prices sort as one, the dearest)
            self._tier[model.name] = tier
        self._strongest = frozenset(n for n, t in self._tier.items() if t == tier)

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return self._models

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> ModelSpec:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise InvalidArgument(
                f"unknown model {name!r}: this namespace's catalog has {known}"
            ) from None

    def rank(self, name: str) -> int:
        """0 for the cheapest model; higher is pricier (and taken as stronger)."""
        if name not in self._rank:
            self.get(name)  # raises InvalidArgument naming the catalog's models
        return self._rank[name]

    def tier(self, name: str) -> int:
        """0 for the cheapest price; models listed at the same prices share a tier."""
        if name not in self._tier:
            self.get(name)
        return self._tier[name]

    @property
    def strongest(self) -> ModelSpec:
        return self._models[-1]

    @property
    def strongest_tier(self) -> frozenset[str]:
        """Every model at the top price: the one `strongest` names is not stronger than the
        others at its prices, so a cap on strong calls must count and hold all of them."""
        return self._strongest


def estimate_tokens(text: str) -> int:
    """Tokens a text costs: a token per character of Chinese, Japanese, Korean or Thai, and
    CHARS_PER_TOKEN characters per token for the rest. Counting those scripts as English made
    them about 4x short, so the context-window rule let through requests too long for a model
    and outcomes without usage were charged a quarter of the call."""
    if text.isascii():
        return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))
    rest = _TOKEN_PER_CHAR.sub("", text)
    return max(1, len(text) - len(rest) + math.ceil(len(rest) / CHARS_PER_TOKEN))
