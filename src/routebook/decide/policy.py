"""The policy envelope: which models a request may use, before difficulty is considered.

Difficulty decides where a query lands; policy decides the ceiling it lands under. Each rule
removes models and says why, so a decision can name every rule that changed it, and a request
left with no model can be refused with the reason for each one.

Rules, in order: tenant tier (a ceiling model), latency SLA, required tags (and the PII tags),
context window, then budget (near the limit nothing dearer for this request than a ceiling
model; past it the cheapest model or a refusal). The budget comes last because "cheapest" is
this request's cost among the models the other rules leave: a ceiling picked before them could
be a model they remove, leaving nothing under it.

A catalog stored before catalogs were bounded (or written to the store directly) can hold a NaN
or infinite latency or price. Every comparison with NaN is false, so a check written "remove if
above the bound" let such a model through every bound: a 1 ms SLA went to the model whose
latency was NaN. Each check here keeps a model only when its number is known and within the
bound: an unknown latency meets no SLA, an unknown cost fits under no budget cap, and an
unknown price sits under no tier ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from routebook.catalog import Catalog, ModelSpec
from routebook.domain import PolicyEffect
from routebook.policyspec import Policy

BudgetState = Literal["ok", "near", "exhausted"]


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What one request brings to the policy."""

    tenant: str = ""
    required_tags: tuple[str, ...] = ()
    contains_pii: bool = False
    max_latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: The tenant's spend in the budget window so far (USD).
    spent_usd: float = 0.0
    #: Models on cooldown now: past the budget, the cheapest model not cooling is the one used.
    cooling: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Envelope:
    """The models left, cheapest first, and the rules that removed the others."""

    allowed: tuple[str, ...]
    effects: tuple[PolicyEffect, ...]
    budget_state: BudgetState = "ok"
    #: Set when policy alone picks the model (budget exhausted, action "cheapest").
    forced: str | None = None
    #: The tenant's spend the budget was judged on (USD), for the refusal's message.
    spent_usd: float = 0.0

    def removed_by(self, model: str) -> list[PolicyEffect]:
        return [e for e in self.effects if model in e.removed]


#: Tag values that say "no": a bare required tag (`on-prem`, a PII tag) is not met by them.
#: Compliance fails closed, so every common spelling of no counts, and an empty value too.
NEGATIVE_TAG_VALUES = frozenset(
    {"", "false", "no", "n", "0", "off", "none", "null", "disabled", "f", "not", "never"}
)


def has_tag(spec: ModelSpec, tag: str) -> bool:
    """`key=value` needs that value; a bare `key` needs the key with a value that is not a no."""
    key, _, value = tag.partition("=")
    if value:
        return spec.tags.get(key.strip()) == value.strip()
    present = spec.tags.get(key.strip())
    return present is not None and present.strip().lower() not in NEGATIVE_TAG_VALUES


def known_latency(spec: ModelSpec) -> bool:
    """A latency that can be compared with an SLA: a finite number, not negative."""
    return math.isfinite(spec.latency_ms) and spec.latency_ms >= 0


def known_prices(spec: ModelSpec) -> bool:
    """Prices a cost, a cap or a tier can be judged by: finite numbers, not negative."""
    return all(
        math.isfinite(price) and price >= 0
        for price in (spec.input_usd_per_mtok, spec.output_usd_per_mtok)
    )


def evaluate_policy(policy: Policy, catalog: Catalog, context: PolicyContext) -> Envelope:
    left = list(catalog.models)
    effects: list[PolicyEffect] = []

    def remove(rule: str, drop: list[ModelSpec], detail: str) -> None:
        if drop:
            effects.append(PolicyEffect(rule, tuple(m.name for m in drop), detail))
            for m in drop:
                left.remove(m)

    tier = policy.tier_of(context.tenant)
    if tier is not None and tier in policy.tiers:
        named = policy.tiers[tier]
        who = f"tier {tier!r} of tenant {context.tenant or '(none)'!r}"
        if named in catalog and known_prices(catalog.get(named)):
            ceiling = catalog.tier(named)  # models at its prices are no stronger: allowed too
            # A model of unknown prices has no place in the price order: not under the ceiling.
            remove(
                "tier",
                [
                    m
                    for m in left
                    if m.name != named and (not known_prices(m) or catalog.tier(m.name) > ceiling)
                ],
                f"{who} allows models up to {named}",
            )
        else:  # a catalog changed under the policy: fail closed, never open
            why = "which is not in the catalog" if named not in catalog else "of unknown price"
            priced = [m for m in left if known_prices(m)]
            keep = min(priced, key=lambda m: m.price_key) if priced else None
            remove(
                "tier",
                [m for m in left if m is not keep],
                f"{who} names {named}, {why}: only the cheapest model",
            )

    state: BudgetState = "ok"
    limit = policy.budget_of(context.tenant)
    if policy.budget is not None and limit is not None:
        if context.spent_usd >= limit:
            state = "exhausted"
        elif context.spent_usd >= policy.budget.near_limit_fraction * limit:
            state = "near"

    if context.max_latency_ms is not None:
        sla = context.max_latency_ms
        remove(
            "latency_sla",
            [m for m in left if known_latency(m) and not m.latency_ms <= sla],
            f"typical latency above the {sla:g} ms SLA",
        )
        remove(
            "latency_sla",
            [m for m in left if not known_latency(m)],
            f"typical latency unknown (not a finite number in the catalog), so it cannot be "
            f"shown to meet the {sla:g} ms SLA",
        )

    wanted = list(context.required_tags)
    if context.contains_pii:
        wanted += [t for t in policy.pii_tags if t not in wanted]
    for tag in wanted:
        why = "required for PII" if context.contains_pii and tag in policy.pii_tags else "required"
        remove("required_tags", [m for m in left if not has_tag(m, tag)], f"tag {tag!r} {why}")

    tokens = context.input_tokens + context.output_tokens
    remove(
        "context_window",
        [m for m in left if not m.context_window >= tokens],  # false for NaN too
        f"about {tokens} tokens exceed the context window",
    )

    tokens_in, tokens_out = context.input_tokens, context.output_tokens

    def request_cost(m: ModelSpec) -> tuple[float, int]:
        """This request's cost; on a tie (no tokens, or crossing prices) the list's tier. An
        unknown cost (NaN or infinite prices) counts as the dearest: never the cheapest, never
        under a cap (NaN would compare as neither above nor below anything)."""
        cost = m.cost_usd(tokens_in, tokens_out) if known_prices(m) else math.inf
        return (cost if math.isfinite(cost) else math.inf), catalog.tier(m.name)

    forced = None
    if state == "near" and left:
        assert policy.budget is not None and limit is not None
        cap_name = policy.budget.near_limit_ceiling
        if (
            cap_name is not None
            and cap_name in catalog
            and math.isfinite(request_cost(catalog.get(cap_name))[0])
        ):
            cap = catalog.get(cap_name)
        else:  # none named, one that left the catalog or of unknown price: fail closed
            cap = min(left, key=request_cost)
        remove(
            "budget",
            [
                m
                for m in left
                if not math.isfinite(request_cost(m)[0]) or request_cost(m) > request_cost(cap)
            ],
            f"tenant {context.tenant!r} spent {usd(context.spent_usd)} of {usd(limit)} in "
            f"{policy.budget.window_hours:g}h; capped at {cap.name}'s cost for this request",
        )
    if state == "exhausted" and left:
        assert policy.budget is not None and limit is not None
        if policy.budget.when_exhausted == "cheapest":
            # Past the budget only one model is allowed: overrides, rules and fallbacks
            # cannot reach a pricier one. It is the cheapest for this request not on
            # cooldown, if any is.
            ready = [m for m in left if m.name not in context.cooling] or left
            forced = min(ready, key=request_cost).name
            remove(
                "budget",
                [m for m in left if m.name != forced],
                f"tenant {context.tenant!r} has reached its {usd(limit)} budget (spent "
                f"{usd(context.spent_usd)}); routed to the cheapest allowed model",
            )
    return Envelope(tuple(m.name for m in left), tuple(effects), state, forced, context.spent_usd)


def usd(amount: float) -> str:
    """Dollars to four significant digits and at least the cent: budgets of a fraction of a
    cent printed to the cent read as $0.00, or below the spend beside them."""
    if not math.isfinite(amount) or amount == 0:
        return f"${amount:.2f}"
    decimals = min(12, max(2, 3 - math.floor(math.log10(abs(amount)))))
    whole, _, cents = f"{amount:.{decimals}f}".partition(".")
    return f"${whole}.{cents[:2]}{cents[2:].rstrip('0')}"


def explain_removals(catalog: Catalog, envelope: Envelope) -> str:
    """'model: rule (detail); …' for every model the envelope removed."""
    parts = []
    for spec in catalog.models:
        causes = envelope.removed_by(spec.name)
        if causes:
            parts.append(f"{spec.name}: " + "; ".join(f"{c.rule} ({c.detail})" for c in causes))
    return ", ".join(parts)
