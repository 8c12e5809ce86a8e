"""Policy as configured for a namespace: tenant tiers, budgets, PII tags. Plain values, read
from route files and the store; `decide.policy` applies them to a request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Budget:
    """Spend per tenant over a rolling window, from reported outcome costs."""

    usd_per_window: float
    window_hours: float = 24.0
    near_limit_fraction: float = 0.8
    #: Near the limit, models dearer than this one for the request are removed (default: the
    #: cheapest model for the request that the other rules allow).
    near_limit_ceiling: str | None = None
    #: Past the limit: route to the cheapest allowed model, or refuse (RESOURCE_EXHAUSTED).
    when_exhausted: Literal["cheapest", "reject"] = "cheapest"


@dataclass(frozen=True, slots=True)
class EscalationCap:
    """Per tenant: at most this share of decisions may go to the strongest model or escalate
    in a cascade, over a rolling window; past it, the strongest model is left out."""

    max_strong_share: float
    window_minutes: float = 60.0
    #: Below this many decisions in the window the cap does not apply yet.
    min_decisions: int = 20


@dataclass(frozen=True, slots=True)
class Rule:
    """An explicit routing rule: when every condition given holds, route to `model` (or to the
    ceiling model of `tier`). Rules are tried in order after policy; the first match wins."""

    name: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    keywords: tuple[str, ...] = ()
    regex: str | None = None
    #: Bounds on the query's estimated tokens (the user message keywords and regex see; not the
    #: system prompt nor earlier turns).
    min_tokens: int | None = None
    max_tokens: int | None = None
    model: str | None = None
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    #: tier name → the priciest model that tier may use.
    tiers: Mapping[str, str] = field(default_factory=dict)
    #: The tier of tenants not listed in `tenant_tiers` (None: no tier rule for them).
    default_tier: str | None = None
    tenant_tiers: Mapping[str, str] = field(default_factory=dict)
    #: The budget every tenant gets unless `tenant_budgets` names another amount.
    budget: Budget | None = None
    tenant_budgets: Mapping[str, float] = field(default_factory=dict)
    #: Tags a model must carry to see a query the caller marks as containing PII.
    pii_tags: tuple[str, ...] = ("on-prem",)
    escalation_cap: EscalationCap | None = None
    rules: tuple[Rule, ...] = ()

    def tier_of(self, tenant: str) -> str | None:
        return self.tenant_tiers.get(tenant, self.default_tier) if tenant else self.default_tier

    def names(self, tenant: str) -> bool:
        """The policy lists this tenant (a tier or a budget of its own)."""
        return tenant in self.tenant_tiers or tenant in self.tenant_budgets

    def budget_of(self, tenant: str) -> float | None:
        if self.budget is None or not tenant:
            return None
        return self.tenant_budgets.get(tenant, self.budget.usd_per_window)


def models_named(policy: Policy) -> dict[str, str]:
    """Model → where the policy names it (a tier's ceiling, the near-limit ceiling, a rule):
    a catalog without these models would leave those parts of the policy pointing nowhere."""
    named: dict[str, str] = {}
    for tier, model in policy.tiers.items():
        named.setdefault(model, f"tier {tier!r}")
    near = policy.budget.near_limit_ceiling if policy.budget is not None else None
    if near:
        named.setdefault(near, "the budget's near_limit_ceiling")
    for rule in policy.rules:
        if rule.model:
            named.setdefault(rule.model, f"rule {rule.name!r}")
    return named


def policy_to_json(policy: Policy) -> dict[str, Any]:
    data = asdict(policy)
    data["tiers"], data["tenant_tiers"] = dict(policy.tiers), dict(policy.tenant_tiers)
    data["tenant_budgets"], data["pii_tags"] = dict(policy.tenant_budgets), list(policy.pii_tags)
    data["rules"] = [
        {**asdict(rule), "metadata": dict(rule.metadata), "keywords": list(rule.keywords)}
        for rule in policy.rules
    ]
    return data


def policy_from_json(data: Mapping[str, Any] | None) -> Policy:
    if not data:
        return Policy()
    budget = data.get("budget")
    return Policy(
        tiers=dict(data.get("tiers", {})),
        default_tier=data.get("default_tier"),
        tenant_tiers=dict(data.get("tenant_tiers", {})),
        budget=Budget(**budget) if budget else None,
        tenant_budgets={k: float(v) for k, v in data.get("tenant_budgets", {}).items()},
        pii_tags=tuple(data.get("pii_tags", ("on-prem",))),
        escalation_cap=EscalationCap(**cap) if (cap := data.get("escalation_cap")) else None,
        rules=tuple(
            Rule(**{**r, "metadata": dict(r["metadata"]), "keywords": tuple(r["keywords"])})
            for r in data.get("rules", [])
        ),
    )
