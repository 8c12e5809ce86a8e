"""The policy envelope with plain values: each rule, budget states, and the explanations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from routebook.catalog import Catalog, ModelSpec
from routebook.decide.policy import (
    PolicyContext,
    evaluate_policy,
    explain_removals,
    has_tag,
    usd,
)
from routebook.errors import ConfigError
from routebook.policyspec import (
    Budget,
    Policy,
    Rule,
    models_named,
    policy_from_json,
    policy_to_json,
)
from routebook.routefiles import load_route_file

CATALOG = Catalog(
    [
        ModelSpec("small", "t", 0.1, 0.4, 300, 1000, {"region": "eu", "on-prem": "true"}),
        ModelSpec("mid", "t", 0.4, 1.6, 600, 100_000, {"region": "eu", "on-prem": "false"}),
        ModelSpec("big", "t", 3.0, 15.0, 1500, 200_000, {"region": "us"}),
    ]
)
TIERS = Policy(
    tiers={"free": "small", "pro": "mid"}, default_tier="pro", tenant_tiers={"acme": "free"}
)


def test_no_policy_allows_everything() -> None:
    envelope = evaluate_policy(Policy(), CATALOG, PolicyContext())
    assert envelope.allowed == ("small", "mid", "big")
    assert envelope.effects == () and envelope.budget_state == "ok" and envelope.forced is None


def test_tier_of_a_listed_tenant_and_the_default_tier() -> None:
    acme = evaluate_policy(TIERS, CATALOG, PolicyContext(tenant="acme"))
    assert acme.allowed == ("small",)
    assert [(e.rule, e.removed) for e in acme.effects] == [("tier", ("mid", "big"))]
    other = evaluate_policy(TIERS, CATALOG, PolicyContext(tenant="someone"))
    assert other.allowed == ("small", "mid")
    anonymous = evaluate_policy(TIERS, CATALOG, PolicyContext())
    assert anonymous.allowed == ("small", "mid")


def test_latency_sla_and_context_window() -> None:
    sla = evaluate_policy(Policy(), CATALOG, PolicyContext(max_latency_ms=600))
    assert sla.allowed == ("small", "mid")
    assert sla.effects[0].rule == "latency_sla"
    # 900 input + 200 output tokens = 1100 > small's 1000-token window.
    long = evaluate_policy(Policy(), CATALOG, PolicyContext(input_tokens=900, output_tokens=200))
    assert long.allowed == ("mid", "big")
    assert long.effects[0].rule == "context_window"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("region=eu", ("small", "mid")), ("region=us", ("big",)), ("on-prem", ("small",))],
)
def test_required_tags(tag: str, expected: tuple[str, ...]) -> None:
    envelope = evaluate_policy(Policy(), CATALOG, PolicyContext(required_tags=(tag,)))
    assert envelope.allowed == expected


def test_bare_tag_with_a_false_value_does_not_count() -> None:
    assert has_tag(CATALOG.get("small"), "on-prem")
    assert not has_tag(CATALOG.get("mid"), "on-prem")
    assert not has_tag(CATALOG.get("big"), "on-prem")


@pytest.mark.parametrize("value", ["off", "none", "disabled", "n", "", " No ", "NULL"])
def test_every_spelling_of_no_fails_a_bare_tag_closed(value: str) -> None:
    """`on-prem: "off"` used to count as on-prem, and PII queries went to that model."""
    spec = ModelSpec("m", "t", 0.1, 0.4, 300, 1000, {"on-prem": value})
    assert not has_tag(spec, "on-prem")
    for yes in ("true", "yes", "1", "eu-west"):
        assert has_tag(ModelSpec("m", "t", 0.1, 0.4, 300, 1000, {"on-prem": yes}), "on-prem")


def test_pii_adds_the_pii_tags() -> None:
    envelope = evaluate_policy(Policy(), CATALOG, PolicyContext(contains_pii=True))
    assert envelope.allowed == ("small",)
    assert "PII" in envelope.effects[0].detail


BUDGET = Policy(
    budget=Budget(usd_per_window=10.0, near_limit_fraction=0.8, near_limit_ceiling="mid"),
    tenant_budgets={"rich": 1000.0},
)


@pytest.mark.parametrize(
    ("tenant", "spent", "state", "allowed", "forced"),
    [
        ("t", 7.99, "ok", ("small", "mid", "big"), None),
        ("t", 8.0, "near", ("small", "mid"), None),  # 80% of $10
        ("t", 10.0, "exhausted", ("small",), "small"),  # nothing pricier stays reachable
        ("rich", 500.0, "ok", ("small", "mid", "big"), None),
        ("", 1e9, "ok", ("small", "mid", "big"), None),  # no tenant, no budget
    ],
)
def test_budget_states(
    tenant: str, spent: float, state: str, allowed: tuple[str, ...], forced: str | None
) -> None:
    envelope = evaluate_policy(BUDGET, CATALOG, PolicyContext(tenant=tenant, spent_usd=spent))
    assert (envelope.budget_state, envelope.allowed, envelope.forced) == (state, allowed, forced)


def test_past_the_budget_the_cheapest_model_not_cooling_is_the_only_one() -> None:
    context = PolicyContext(tenant="t", spent_usd=10.0, cooling=frozenset({"small"}))
    envelope = evaluate_policy(BUDGET, CATALOG, context)
    assert (envelope.allowed, envelope.forced) == (("mid",), "mid")
    assert [(e.rule, e.removed) for e in envelope.effects] == [("budget", ("small", "big"))]
    everything_cooling = replace(context, cooling=frozenset({"small", "mid", "big"}))
    assert evaluate_policy(BUDGET, CATALOG, everything_cooling).forced == "small"


def test_a_tier_ceiling_allows_every_model_at_its_prices() -> None:
    """Equally priced models were ordered by name: a ceiling at the first excluded the second,
    a ceiling at the second allowed both."""
    twins = Catalog([*CATALOG.models, ModelSpec("big-2", "t", 3.0, 15.0, 1500, 200_000)])
    for ceiling in ("big", "big-2"):
        policy = Policy(tiers={"top": ceiling}, default_tier="top")
        assert evaluate_policy(policy, twins, PolicyContext()).allowed == twins.names


def test_a_tier_whose_ceiling_left_the_catalog_fails_closed() -> None:
    renamed = Catalog([ModelSpec("nano-2", "t", 0.05, 0.2, 200, 8000), *CATALOG.models])
    envelope = evaluate_policy(TIERS, renamed, PolicyContext(tenant="acme"))  # free → "small"
    # "small" is still listed here; drop it to see the tier's ceiling vanish.
    gone = Catalog([m for m in renamed.models if m.name != "small"])
    closed = evaluate_policy(TIERS, gone, PolicyContext(tenant="acme"))
    assert envelope.allowed == ("nano-2", "small")
    assert closed.allowed == ("nano-2",)
    assert "not in the catalog" in closed.effects[0].detail


def test_models_named_by_a_policy() -> None:
    policy = Policy(
        tiers={"free": "small", "pro": "mid"},
        budget=Budget(usd_per_window=1.0, near_limit_ceiling="mid"),
        rules=(Rule(name="legal", keywords=("contract",), model="big"),),
    )
    assert models_named(policy) == {
        "small": "tier 'free'",
        "mid": "tier 'pro'",  # named twice: the first place is enough to say why
        "big": "rule 'legal'",
    }


def test_reject_action_forces_nothing() -> None:
    policy = Policy(budget=Budget(usd_per_window=1.0, when_exhausted="reject"))
    envelope = evaluate_policy(policy, CATALOG, PolicyContext(tenant="t", spent_usd=2.0))
    assert envelope.budget_state == "exhausted" and envelope.forced is None


def test_explain_removals_names_each_model_and_rule() -> None:
    envelope = evaluate_policy(TIERS, CATALOG, PolicyContext(tenant="acme", max_latency_ms=100))
    assert envelope.allowed == ()
    text = explain_removals(CATALOG, envelope)
    assert text.startswith("small: latency_sla")
    assert "mid: tier (tier 'free'" in text and "big: tier" in text


def test_policy_round_trips_through_json() -> None:
    policy = Policy(
        tiers={"free": "small"},
        default_tier="free",
        tenant_tiers={"a": "free"},
        budget=Budget(5.0, 12.0, 0.5, "small", "reject"),
        tenant_budgets={"a": 2.0},
        pii_tags=("on-prem", "region=eu"),
    )
    assert policy_from_json(policy_to_json(policy)) == policy
    assert policy_from_json(None) == Policy()


@pytest.mark.parametrize(
    ("policy_yaml", "words"),
    [
        ("  tiers: {free: gpt-9}\n", "tier 'free' names model 'gpt-9'"),
        ("  tiers: {free: small}\n  default_tier: gold\n", "default_tier 'gold'"),
        ("  tenants: {a: {tier: gold}}\n", "tenant 'a' has unknown tier 'gold'"),
        ("  budget: {usd_per_window: 0}\n", "usd_per_window"),
        ("  budget: {usd_per_window: 1, when_exhausted: panic}\n", "when_exhausted"),
        # Windows past a year would overflow the date arithmetic on every Decide.
        ("  budget: {usd_per_window: 1, window_hours: .inf}\n", "window_hours"),
        ("  budget: {usd_per_window: 1, window_hours: 1e8}\n", "window_hours"),
        ("  escalation_cap: {max_strong_share: 0.5, window_minutes: 1e12}\n", "window_minutes"),
    ],
)
def test_bad_policy_in_a_route_file_names_the_file(
    tmp_path: Path, policy_yaml: str, words: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "namespace: p\ncatalog:\n  - {name: small, provider: t, input_usd_per_mtok: 1, "
        "output_usd_per_mtok: 1, latency_ms: 1, context_window: 10}\npolicy:\n" + policy_yaml
    )
    with pytest.raises(ConfigError) as caught:
        load_route_file(path)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_past_the_budget_the_cheapest_model_for_this_request_is_forced() -> None:
    # "reader" is listed dearer (0.1 + 8.0) than "writer" (2.0 + 1.0) but costs less for a
    # long prompt with a short answer: past the budget that request goes to reader.
    catalog = Catalog(
        [
            ModelSpec("reader", "t", 0.1, 8.0, 300, 100_000),
            ModelSpec("writer", "t", 2.0, 1.0, 300, 100_000),
        ]
    )
    policy = Policy(budget=Budget(usd_per_window=1.0))
    spent = PolicyContext(tenant="t", spent_usd=2.0)
    long_prompt = replace(spent, input_tokens=20_000, output_tokens=10)
    long_answer = replace(spent, input_tokens=10, output_tokens=2_000)
    assert evaluate_policy(policy, catalog, long_prompt).forced == "reader"
    assert evaluate_policy(policy, catalog, long_answer).forced == "writer"


# "reader" is listed dearer (0.1 + 10) than "writer" (1 + 1); for a long document summarised
# in a few lines it costs a tenth as much.
CROSSED = Catalog(
    [
        ModelSpec("reader", "t", 0.1, 10.0, 500, 200_000, {"region": "eu"}),
        ModelSpec("writer", "t", 1.0, 1.0, 500, 200_000),
    ]
)
NEAR = PolicyContext(tenant="t", spent_usd=9.0, input_tokens=100_000, output_tokens=50)


def test_near_the_limit_the_cap_is_this_requests_cost_not_the_list_price() -> None:
    """Near its limit a tenant kept only the list-cheapest model, here 10x dearer for the
    request than the model it got once past the limit: the guard raised its spend."""
    policy = Policy(budget=Budget(usd_per_window=10.0, near_limit_fraction=0.8))
    near = evaluate_policy(policy, CROSSED, NEAR)
    past = evaluate_policy(policy, CROSSED, replace(NEAR, spent_usd=10.5))
    assert (near.budget_state, near.allowed) == ("near", ("reader",))
    assert past.forced == "reader"
    assert [(e.rule, e.removed) for e in near.effects] == [("budget", ("writer",))]
    assert "capped at reader's cost for this request" in near.effects[0].detail
    # A long answer to a short prompt turns the order round, and the cap with it.
    answer = replace(NEAR, input_tokens=50, output_tokens=2_000)
    assert evaluate_policy(policy, CROSSED, answer).allowed == ("writer",)
    # A named ceiling caps the cost for this request too: under writer, reader stays for the
    # long prompt (it costs less for it) and goes for the long answer.
    named = Policy(budget=Budget(10.0, near_limit_fraction=0.8, near_limit_ceiling="writer"))
    assert evaluate_policy(named, CROSSED, NEAR).allowed == ("writer", "reader")
    assert evaluate_policy(named, CROSSED, answer).allowed == ("writer",)


def test_near_the_limit_the_cheapest_is_among_the_models_the_other_rules_leave() -> None:
    """The default ceiling was the list-cheapest model before the tag rule ran: a request
    needing region=us was refused near the limit (everything under small removed, then small
    for its tag) and served past it."""
    policy = Policy(budget=Budget(usd_per_window=10.0, near_limit_fraction=0.8))
    context = PolicyContext(tenant="t", spent_usd=9.0, required_tags=("region=us",))
    near = evaluate_policy(policy, CATALOG, context)
    assert (near.budget_state, near.allowed) == ("near", ("big",))
    assert evaluate_policy(policy, CATALOG, replace(context, spent_usd=11.0)).forced == "big"


def test_models_at_the_same_prices_share_the_near_limit_cap() -> None:
    twins = Catalog([*CATALOG.models, ModelSpec("big-2", "t", 3.0, 15.0, 1500, 200_000)])
    policy = Policy(budget=Budget(10.0, near_limit_fraction=0.8, near_limit_ceiling="big"))
    context = PolicyContext(tenant="t", spent_usd=9.0, input_tokens=100, output_tokens=100)
    assert evaluate_policy(policy, twins, context).allowed == ("small", "mid", "big", "big-2")


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (50.0, "$50.00"),
        (1234.5678, "$1234.57"),
        (0.01, "$0.01"),
        (0.005, "$0.005"),
        (0.0041, "$0.0041"),
        (0.000125, "$0.000125"),
        (0.0, "$0.00"),
    ],
)
def test_usd_keeps_four_significant_digits(amount: float, shown: str) -> None:
    assert usd(amount) == shown


def test_budget_evidence_shows_a_budget_under_a_cent_as_it_is() -> None:
    """A $0.005 budget printed as "$0.01", below the $0.0060 spent beside it."""
    policy = Policy(budget=Budget(usd_per_window=0.005, window_hours=1, near_limit_fraction=0.5))
    near = evaluate_policy(policy, CATALOG, PolicyContext(tenant="acme", spent_usd=0.0041))
    assert "spent $0.0041 of $0.005 in 1h" in near.effects[0].detail
    past = evaluate_policy(policy, CATALOG, PolicyContext(tenant="acme", spent_usd=0.006))
    assert "has reached its $0.005 budget (spent $0.006)" in past.effects[0].detail


def test_at_exactly_the_budget_the_evidence_says_it_is_reached() -> None:
    """Black-box review 2, finding 10: at exactly the limit the evidence said "past its
    budget"; the budget counts as used up at equality, which is "reached"."""
    policy = Policy(budget=Budget(usd_per_window=0.01, window_hours=24))
    exact = evaluate_policy(policy, CATALOG, PolicyContext(tenant="acme", spent_usd=0.01))
    assert exact.budget_state == "exhausted" and exact.forced is not None
    assert "has reached its $0.01 budget (spent $0.01)" in exact.effects[0].detail
    assert "past" not in exact.effects[0].detail


def _with(name: str, **numbers: float) -> Catalog:
    """CATALOG with one model's numbers replaced, as a store written before the bounds (or
    by hand) can hold them."""
    return Catalog(replace(m, **numbers) if m.name == name else m for m in CATALOG.models)


@pytest.mark.parametrize("latency", [float("nan"), float("inf"), -1.0])
def test_a_model_of_unknown_latency_meets_no_latency_sla(latency: float) -> None:
    """A stored NaN latency compared as "not above" every SLA: a 1 ms SLA went to that model."""
    catalog = _with("big", latency_ms=latency)
    for sla in (1.0, 400.0, 1e9):
        envelope = evaluate_policy(Policy(), catalog, PolicyContext(max_latency_ms=sla))
        assert "big" not in envelope.allowed, (latency, sla)
        assert "latency unknown" in " ".join(e.detail for e in envelope.removed_by("big"))
    tight = evaluate_policy(Policy(), catalog, PolicyContext(max_latency_ms=1))
    assert tight.allowed == ()
    without_sla = evaluate_policy(Policy(), catalog, PolicyContext())
    assert "big" in without_sla.allowed  # no SLA asked: the model still routes


@pytest.mark.parametrize("price", [float("nan"), float("inf")])
def test_a_model_of_unknown_price_fits_under_no_budget_cap(price: float) -> None:
    """Near the budget, a model whose cost is NaN compared as "not above" the cap."""
    catalog = _with("mid", input_usd_per_mtok=price)
    policy = Policy(budget=Budget(usd_per_window=10.0, near_limit_ceiling="big"))
    near = PolicyContext(tenant="t", spent_usd=9.0, input_tokens=100, output_tokens=100)
    envelope = evaluate_policy(policy, catalog, near)
    assert envelope.budget_state == "near"
    assert "mid" not in envelope.allowed and {"small", "big"} <= set(envelope.allowed)
    # A ceiling of unknown price caps at the cheapest for the request, not at nothing.
    unknown_cap = Policy(budget=Budget(usd_per_window=10.0, near_limit_ceiling="mid"))
    assert evaluate_policy(unknown_cap, catalog, near).allowed == ("small",)
    # Past the budget the cheapest is a model of known cost.
    exhausted = replace(near, spent_usd=11.0)
    assert evaluate_policy(policy, _with("small", output_usd_per_mtok=price), exhausted).forced == (
        "mid"
    )


@pytest.mark.parametrize("price", [float("nan"), float("inf")])
def test_a_model_of_unknown_price_is_under_no_tier_ceiling(price: float) -> None:
    """A NaN price has no place in the price order, so its tier said nothing of its strength."""
    catalog = _with("big", output_usd_per_mtok=price)
    envelope = evaluate_policy(TIERS, catalog, PolicyContext(tenant="someone"))
    assert envelope.allowed == ("small", "mid")
    # A ceiling of unknown price: fail closed, the cheapest model of known price only.
    pricey_ceiling = _with("mid", output_usd_per_mtok=price)
    acme_pro = evaluate_policy(TIERS, pricey_ceiling, PolicyContext(tenant="someone"))
    assert acme_pro.allowed == ("small",)
    assert "of unknown price" in acme_pro.effects[0].detail


def test_a_context_window_that_is_not_a_number_fits_no_request() -> None:
    catalog = _with("big", context_window=float("nan"))  # type: ignore[arg-type]
    envelope = evaluate_policy(Policy(), catalog, PolicyContext(input_tokens=10))
    assert "big" not in envelope.allowed
