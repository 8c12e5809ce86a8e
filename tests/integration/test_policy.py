"""Policy over real gRPC and a real store: each rule alone changes the decision and is named in
the evidence; budgets spent through RecordOutcome; overrides; metrics; the decision log."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routebook.client import decide_request
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from tests.conftest import TESTS, Served

POLICY_ROUTES = TESTS / "data" / "policy_routes"
HARD = "my async Rust code deadlocks when two tasks hold mutexes, why?"
EASY = "where is my order, it has not arrived"


@pytest.fixture
def policy_server(db_url: str, serve: Callable[..., Served]) -> Served:
    return serve(db_url, routes_dir=POLICY_ROUTES)


def ask(served: Served, text: str, **fields: object) -> pb.DecideResponse:
    response: pb.DecideResponse = served.router.Decide(decide_request(text, **fields), timeout=10)
    return response


def report(
    served: Served, outcome_id: str, decision: pb.DecideResponse, model: str, **fields: object
) -> pb.RecordOutcomeResponse:
    """RecordOutcome for `decision`: quality 1 unless `fields` says otherwise."""
    fields.setdefault("quality", 1.0)
    request = pb.RecordOutcomeRequest(
        outcome_id=outcome_id, decision_id=decision.decision_id, model=model, **fields
    )
    response: pb.RecordOutcomeResponse = served.router.RecordOutcome(request, timeout=10)
    return response


def rules(response: pb.DecideResponse) -> dict[str, list[str]]:
    return {e.rule: list(e.removed_models) for e in response.policy}


def refused(served: Served, text: str, **fields: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        ask(served, text, **fields)
    return caught.value


def test_without_policy_effects_the_hard_query_goes_to_frontier(policy_server: Served) -> None:
    response = ask(policy_server, HARD, tenant="ent")
    assert (response.model, response.strategy) == ("frontier", pb.STRATEGY_SEMANTIC)
    assert list(response.policy) == []
    assert response.tenant == "ent"
    assert all(e.allowed for e in response.estimates)


def test_tier_caps_the_model(policy_server: Served) -> None:
    response = ask(policy_server, HARD, tenant="tiny")
    assert response.model == "small"
    assert rules(response) == {"tier": ["mid", "frontier"]}
    assert "tier 'free'" in response.policy[0].detail
    assert [e.allowed for e in response.estimates] == [True, False, False]
    # The evidence still shows that the neighbours wanted frontier.
    assert response.estimates[2].meets_target and not response.estimates[0].meets_target


def test_latency_sla_excludes_slow_models(policy_server: Served) -> None:
    response = ask(policy_server, HARD, tenant="ent", max_latency_ms=1000)
    assert response.model == "mid"
    assert response.reason_code == pb.REASON_CODE_NONE_MEETS_TARGET
    assert rules(response) == {"latency_sla": ["frontier"]}


def test_required_tag_filters_candidates(policy_server: Served) -> None:
    response = ask(policy_server, HARD, tenant="ent", required_tags=["region=eu"])
    assert response.model == "mid"
    assert rules(response) == {"required_tags": ["frontier"]}


def test_pii_requires_on_prem(policy_server: Served) -> None:
    response = ask(policy_server, HARD, tenant="ent", contains_pii=True)
    assert response.model == "small"
    assert rules(response) == {"required_tags": ["mid", "frontier"]}
    assert "PII" in response.policy[0].detail


def test_context_window_excludes_models_too_small_for_the_query(policy_server: Served) -> None:
    long_easy = EASY + ". " + "The tracking page shows nothing new. " * 120
    response = ask(policy_server, long_easy, tenant="ent")
    assert rules(response) == {"context_window": ["small"]}
    assert response.model == "mid"


def test_context_window_counts_a_chinese_character_as_a_token(policy_server: Served) -> None:
    """800 characters of Chinese were estimated at 200 tokens, so small (a 1,000-token window)
    was allowed a request of about 800 tokens plus its 256-token answer."""
    long_easy = "我的包裹还没有到，请帮我查一下物流状态。" * 40  # noqa: RUF001
    response = ask(policy_server, long_easy, tenant="ent")
    assert rules(response) == {"context_window": ["small"]}
    assert "about 1056 tokens exceed" in response.policy[0].detail


def test_no_candidate_left_names_every_rule(policy_server: Served) -> None:
    error = refused(policy_server, EASY, tenant="tiny", max_latency_ms=100)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details()
    assert "small: latency_sla" in details
    assert "mid: tier" in details and "frontier: tier" in details


def test_budget_spent_through_outcomes_caps_then_forces_the_cheapest(
    policy_server: Served,
) -> None:
    first = ask(policy_server, HARD, tenant="spender")
    assert first.model == "frontier"

    def spend(usd: float, outcome_id: str) -> None:
        report(policy_server, outcome_id, first, "frontier", cost_usd=usd)

    spend(0.0006, "spend-1")  # past half of the $0.001 budget: capped to small
    near = ask(policy_server, HARD, tenant="spender")
    assert near.model == "small"
    assert rules(near) == {"budget": ["mid", "frontier"]}
    assert "spent $0.0006 of $0.001 in 24h" in near.policy[0].detail
    assert near.strategy == pb.STRATEGY_SEMANTIC

    spend(0.0006, "spend-2")  # past the budget: policy picks the cheapest model
    over = ask(policy_server, HARD, tenant="spender")
    assert (over.model, over.strategy) == ("small", pb.STRATEGY_POLICY)
    assert over.reason_code == pb.REASON_CODE_BUDGET_EXHAUSTED
    assert "budget" in rules(over)

    other = ask(policy_server, HARD, tenant="ent")
    assert (other.model, other.strategy) == ("frontier", pb.STRATEGY_SEMANTIC)


def test_deleting_the_history_example_does_not_refund_the_spend(
    db_url: str, policy_server: Served, serve: Callable[..., Served]
) -> None:
    """Outcomes are what was spent as well as evidence: deleting the example they are about
    (an admin forgetting a query) detaches them but keeps them in the tenant's spend."""
    first = ask(policy_server, HARD, tenant="spender")
    recorded = report(policy_server, "spend-then-delete", first, "frontier", cost_usd=0.0012)
    deleted, _ = policy_server.app.examples.delete(recorded.namespace, [recorded.example_id])
    assert deleted == [recorded.example_id]

    fresh = serve(db_url, routes_dir=POLICY_ROUTES)  # no spend cached: read from the store
    over = ask(fresh, HARD, tenant="spender")
    assert (over.model, over.reason_code) == ("small", pb.REASON_CODE_BUDGET_EXHAUSTED)
    # A retry of the same report is still recognised, and says its example is gone.
    again = report(fresh, "spend-then-delete", first, "frontier", cost_usd=0.0012)
    assert (again.duplicate, again.example_id, again.cost_usd) == (True, 0, 0.0012)


def test_budget_reject_action_refuses_with_resource_exhausted(policy_server: Served) -> None:
    first = ask(policy_server, HARD, namespace="strict", tenant="acme")
    report(policy_server, "strict-1", first, "frontier", cost_usd=0.002)
    error = refused(policy_server, HARD, namespace="strict", tenant="acme")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The $0.001 budget, not "$0.00" (rounded to the cent, below the $0.002 spent).
    assert "'acme' has reached its budget of $0.001 per 24h (spent $0.002)" in error.details()
    assert ask(policy_server, HARD, namespace="strict", tenant="other").model == "frontier"


def test_override_allowed_forbidden_and_unknown(policy_server: Served) -> None:
    allowed = ask(policy_server, EASY, tenant="ent", model_override="mid")
    assert (allowed.model, allowed.strategy) == ("mid", pb.STRATEGY_OVERRIDE)
    assert allowed.reason_code == pb.REASON_CODE_OVERRIDE
    assert len(allowed.neighbours) > 0  # the evidence is still there

    forbidden = refused(policy_server, EASY, tenant="tiny", model_override="frontier")
    assert forbidden.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "rule tier" in forbidden.details()

    unknown = refused(policy_server, EASY, tenant="ent", model_override="gpt-99")
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown model 'gpt-99'" in unknown.details()


def test_a_forbidden_override_is_permission_denied_even_with_no_model_left(
    policy_server: Served,
) -> None:
    """Black-box review 2, finding 8: with no other model left either, a forbidden override was
    FAILED_PRECONDITION ("policy leaves no model"), so the code a client got for the same
    override depended on unrelated models; router.proto promises PERMISSION_DENIED naming the
    rule."""
    # "tiny" is on the free tier (small only), and small is too slow for 100 ms: none is left.
    nothing_left = refused(policy_server, EASY, tenant="tiny", max_latency_ms=100)
    assert nothing_left.code() == grpc.StatusCode.FAILED_PRECONDITION
    for override, rule in (("mid", "rule tier"), ("small", "rule latency_sla")):
        error = refused(
            policy_server, EASY, tenant="tiny", max_latency_ms=100, model_override=override
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, override
        assert f"override to {override} is not allowed: {rule}" in error.details()


def test_refused_decides_are_counted_and_logged(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """Black-box review 2, findings 4 and 10: Decides refused by the budget or because policy
    left no model moved no metric and wrote no decision-log line, so an operator could not
    see them; and at exactly its budget a tenant was said to be "past" it."""
    log = tmp_path / "decisions.jsonl"
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, metrics_port=0, decision_log=str(log))
    first = ask(served, HARD, namespace="strict", tenant="acme")
    report(served, "exactly", first, "frontier", cost_usd=0.001)  # exactly the $0.001 budget
    over_budget = refused(served, HARD, namespace="strict", tenant="acme")
    assert over_budget.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'acme' has reached its budget of $0.001 per 24h (spent $0.001)" in (
        over_budget.details()
    )
    assert "past" not in over_budget.details()
    no_model = refused(served, EASY, tenant="tiny", max_latency_ms=100)
    assert no_model.code() == grpc.StatusCode.FAILED_PRECONDITION
    forbidden = refused(served, EASY, tenant="tiny", model_override="frontier")
    assert forbidden.code() == grpc.StatusCode.PERMISSION_DENIED

    m = scrape(served.running.metrics_port)

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    refusals = "routebook_decides_refused_total"
    strict, default = {"namespace": "strict"}, {"namespace": "default"}
    assert value(refusals, **strict, code="resource_exhausted", rule="budget", tenant="acme") == 1
    assert (
        value(
            refusals, **default, code="failed_precondition", rule="tier,latency_sla", tenant="tiny"
        )
        == 1
    )
    assert value(refusals, **default, code="permission_denied", rule="tier", tenant="tiny") == 1
    hits = "routebook_policy_rule_hits_total"
    assert value(hits, **strict, rule="budget") == 1
    assert value(hits, **default, rule="tier") == 2  # the refusal and the forbidden override
    assert value(hits, **default, rule="latency_sla") == 1
    decided = [v for (name, labels), v in m.items() if name == "routebook_decisions_total"]
    assert sum(decided) == 1  # refusals are not decisions

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line.get("refused") for line in lines] == [
        None,  # the first decision
        "resource_exhausted",
        "failed_precondition",
        "permission_denied",
    ]
    budget_line = lines[1]
    assert "decision_id" not in budget_line  # no decision was made
    assert budget_line["namespace"] == "strict" and budget_line["tenant"] == "acme"
    assert budget_line["rules"] == ["budget"]
    assert budget_line["reason"] == over_budget.details()
    assert budget_line["latency_ms"] > 0
    assert lines[2]["rules"] == ["tier", "latency_sla"]
    assert HARD not in log.read_text() and EASY not in log.read_text()  # no query text


def test_a_refused_pii_query_stays_out_of_the_log_even_with_query_text_on(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, decision_log=str(log), log_query_text=True)
    plain = refused(served, EASY, tenant="tiny", max_latency_ms=100)
    marked = refused(served, HARD, tenant="tiny", max_latency_ms=100, contains_pii=True)
    assert plain.code() == marked.code() == grpc.StatusCode.FAILED_PRECONDITION
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["query"] == EASY and first["contains_pii"] is False
    assert "query" not in second and second["contains_pii"] is True
    assert HARD not in log.read_text()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_endpoint_counts_a_known_sequence(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, metrics_port=0)
    port = served.running.metrics_port
    assert port
    first = ask(served, EASY, tenant="ent")
    second = ask(served, EASY, tenant="ent")
    cold = ask(served, "translate this Latin tombstone inscription into Welsh", tenant="ent")
    assert cold.strategy == pb.STRATEGY_CASCADE
    ask(served, EASY, tenant="ent", model_override="mid")
    ask(served, HARD, tenant="tiny")
    report(served, "m1", cold, "small", quality=0.2, cost_usd=0.01)
    report(served, "m2", cold, "mid", quality=0.9, cost_usd=0.02)
    m = scrape(port)

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    ns = {"namespace": "default"}
    assert value("routebook_decisions_total", **ns, strategy="semantic", model="small") == 3
    assert value("routebook_decisions_total", **ns, strategy="cascade", model="small") == 1
    assert value("routebook_decisions_total", **ns, strategy="override", model="mid") == 1
    assert value("routebook_cold_starts_total", **ns) == 1
    assert value("routebook_overrides_total", **ns, model="mid") == 1
    assert value("routebook_policy_rule_hits_total", **ns, rule="tier") == 1
    assert value("routebook_outcomes_total", **ns, model="small", result="failure") == 1
    assert value("routebook_outcomes_total", **ns, model="mid", result="success") == 1
    assert value("routebook_escalations_total", **ns, model="mid") == 1
    assert value("routebook_reported_cost_usd_total", **ns, model="mid", tenant="ent") == 0.02
    assert value("routebook_decide_latency_seconds_count", **ns) == 5
    assert value("routebook_decide_stage_seconds_count", **ns, stage="embed") == 5
    assert value("routebook_decide_stage_seconds_count", **ns, stage="search") == 5
    stages = sum(
        value("routebook_decide_stage_seconds_sum", **ns, stage=stage)
        for stage in ("embed", "search")
    )
    assert 0 < stages < value("routebook_decide_latency_seconds_sum", **ns)
    # Five Decides (EASY three times, the cold query, HARD) and the outcome that puts the cold
    # query in the index: three texts new to the cache, three seen before.
    assert value("routebook_embed_cache_lookups_total", result="miss") == 3
    assert value("routebook_embed_cache_lookups_total", result="hit") == 3
    assert value("routebook_embed_texts_total") == 3  # only the misses reach the model
    assert value("routebook_embed_model_calls_total") == 3  # one at a time: nothing to batch
    assert value("routebook_index_size", **ns) == 7  # 6 route utterances + 1 learned query
    # The three decisions for "ent" that chose small (the override chose mid, "tiny" is another
    # tenant), each at the estimate it answered with.
    estimated = value("routebook_estimated_cost_usd_total", **ns, model="small", tenant="ent")
    assert [r.model for r in (first, second, cold)] == ["small"] * 3
    assert estimated == pytest.approx(sum(r.estimated_cost_usd for r in (first, second, cold)))
    assert estimated > 0


def test_decision_log_has_one_json_line_per_decision(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, decision_log=str(log))
    first = ask(served, EASY, tenant="ent")
    ask(served, HARD, tenant="tiny")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["decision_id"] == first.decision_id
    assert lines[0]["tenant"] == "ent" and lines[0]["strategy"] == "semantic"
    assert lines[1]["rules"] == ["tier"] and lines[1]["model"] == "small"
    assert {"top_similarity", "reason", "latency_ms", "embed_ms", "search_ms"} <= set(lines[0])
    assert 0 < lines[0]["embed_ms"] + lines[0]["search_ms"] < lines[0]["latency_ms"]
    assert "estimated_cost_usd" in lines[0]
    assert "query" not in lines[0] and EASY not in log.read_text()


def test_decision_log_includes_the_query_only_when_enabled(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, decision_log=str(log), log_query_text=True)
    ask(served, EASY)
    assert json.loads(log.read_text())["query"] == EASY


def test_stats_over_a_known_sequence(db_url: str, serve: Callable[..., Served]) -> None:
    from click.testing import CliRunner

    from routebook import cli

    served = serve(db_url, routes_dir=POLICY_ROUTES)
    easy = ask(served, EASY, tenant="ent")
    ask(served, EASY, tenant="ent")
    cold = ask(served, "translate this Latin tombstone inscription into Welsh", tenant="ent")
    ask(served, HARD, tenant="tiny")
    for outcome_id, decision, model, quality, cost in (
        ("s1", cold, "small", 0.2, 0.01),
        ("s2", cold, "mid", 0.9, 0.02),
        ("s3", easy, "small", 1.0, 0.005),
    ):
        report(served, outcome_id, decision, model, quality=quality, cost_usd=cost)
    served.app.decision_writer.flush()  # decisions are written behind; make them visible now
    result = CliRunner().invoke(cli.main, ["stats", "--db", db_url, "--json", "--window", "1h"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["decisions"] == 4
    assert stats["decisions_by_strategy"] == {"semantic": 3, "cascade": 1}
    assert stats["cold_start_rate"] == pytest.approx(0.25)
    assert stats["escalation_rate"] == pytest.approx(0.5)  # 1 of the 2 decisions with outcomes
    by_model = {g["key"]: g for g in stats["by_model"]}
    assert by_model["small"]["outcomes"] == 2
    assert by_model["small"]["mean_quality"] == pytest.approx(0.6)
    assert by_model["small"]["success_rate"] == pytest.approx(0.5)
    assert by_model["small"]["cost_usd"] == pytest.approx(0.015)
    assert by_model["mid"]["cost_usd"] == pytest.approx(0.02)
    assert [(g["key"], g["outcomes"]) for g in stats["by_tenant"]] == [("ent", 3)]
    assert stats["by_tenant"][0]["cost_usd"] == pytest.approx(0.035)

    table = CliRunner().invoke(cli.main, ["stats", "--db", db_url, "--namespace", "default"])
    assert "cold-start rate 25.0%" in table.output and "escalation rate 50.0%" in table.output
    bad = CliRunner().invoke(cli.main, ["stats", "--db", db_url, "--window", "soon"])
    assert bad.exit_code == 2 and "--window" in bad.output
    endless = CliRunner().invoke(cli.main, ["stats", "--db", db_url, "--window", "1e9d"])
    assert endless.exit_code == 2 and "at most 3660d" in endless.output


def test_update_catalog_refuses_to_drop_a_model_the_policy_names(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Renaming `small` would silently switch off the free tier (its ceiling) and the budget's
    near-limit cap: the update is refused and the catalog stays as it was."""
    policy_server = serve(sqlite_url, routes_dir=POLICY_ROUTES, admin_token="policy-admin")
    admin = admin_pb2_grpc.AdminStub(policy_server.channel)  # type: ignore[no-untyped-call]
    token = [("authorization", "Bearer policy-admin")]
    current = admin.GetNamespace(admin_pb.GetNamespaceRequest(name="default"), metadata=token)
    renamed = [
        admin_pb.CatalogModel(
            name="small-2" if m.name == "small" else m.name,
            provider=m.provider,
            input_usd_per_mtok=m.input_usd_per_mtok,
            output_usd_per_mtok=m.output_usd_per_mtok,
            latency_ms=m.latency_ms,
            context_window=m.context_window,
        )
        for m in current.catalog
    ]
    with pytest.raises(grpc.RpcError) as refused:
        admin.UpdateCatalog(
            admin_pb.UpdateCatalogRequest(
                namespace="default", expected_version=current.catalog_version, catalog=renamed
            ),
            metadata=token,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "small (tier 'free')" in (refused.value.details() or "")
    after = admin.GetNamespace(admin_pb.GetNamespaceRequest(name="default"), metadata=token)
    assert after.catalog_version == current.catalog_version
    assert [m.name for m in after.catalog] == ["small", "mid", "frontier"]
    assert ask(policy_server, HARD, tenant="tiny").model == "small"  # the free tier still holds


def test_past_the_budget_no_override_reaches_a_pricier_model(policy_server: Served) -> None:
    first = ask(policy_server, HARD, tenant="spender")
    report(policy_server, "over-1", first, "frontier", cost_usd=0.01)  # 10 x the $0.001 budget
    over = ask(policy_server, HARD, tenant="spender")
    assert (over.model, over.strategy, list(over.fallbacks)) == ("small", pb.STRATEGY_POLICY, [])
    with pytest.raises(grpc.RpcError) as refused:
        ask(policy_server, HARD, tenant="spender", model_override="frontier")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "rule budget" in (refused.value.details() or "")
    assert "has reached its $0.001 budget" in (refused.value.details() or "")


def test_an_outcome_without_usage_charges_decides_estimate(policy_server: Served) -> None:
    """A client that reports only the answer's grade (no tokens, no cost) still moves the
    tenant's budget: by what Decide estimated for that model."""
    decision = ask(policy_server, HARD, tenant="spender")
    recorded = report(policy_server, "no-usage-1", decision, "frontier")
    assert decision.model == "frontier"
    assert recorded.cost_usd == pytest.approx(decision.estimated_cost_usd)
    assert recorded.cost_usd > 0
    # That is past its $0.001 budget: the tenant gets the cheapest model now.
    assert ask(policy_server, HARD, tenant="spender").model == "small"
    tokens = report(policy_server, "tokens-1", decision, "frontier", input_tokens=1000)
    assert tokens.cost_usd == pytest.approx(1000 * 3.00 / 1e6)  # given usage wins


def test_a_key_bound_to_a_tenant_cannot_act_for_another(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """With api_key_tenants the tenant (its tier, its budget) comes from the key, not from what
    the caller writes in the request."""
    keys = {"default": ["k-tiny", "k-open"]}
    served = serve(
        sqlite_url,
        routes_dir=POLICY_ROUTES,
        router_api_keys=keys,
        api_key_tenants={"k-tiny": "tiny"},  # tenant tiny: tier free, small only
    )

    def ask_as(key: str, **fields: object) -> pb.DecideResponse:
        response: pb.DecideResponse = served.router.Decide(
            decide_request(HARD, **fields), metadata=[("authorization", f"Bearer {key}")]
        )
        return response

    bound = ask_as("k-tiny")
    assert (bound.model, bound.tenant) == ("small", "tiny")
    assert ask_as("k-tiny", tenant="tiny").model == "small"
    with pytest.raises(grpc.RpcError) as refused:
        ask_as("k-tiny", tenant="enterprise-co")  # would escape the free tier
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bound to tenant 'tiny'" in (refused.value.details() or "")
    assert ask_as("k-open", tenant="enterprise-co").model == "frontier"  # unbound: as sent
    with pytest.raises(grpc.RpcError) as outcome:
        served.router.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id="bound-1",
                messages=[pb.Message(role="user", content=HARD)],
                model="frontier",
                quality=1.0,
                cost_usd=5.0,
                tenant="enterprise-co",  # charging someone else's budget
            ),
            metadata=[("authorization", "Bearer k-tiny")],
        )
    assert outcome.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_key_bound_to_a_tenant_cannot_report_on_another_tenants_decision(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """An outcome by decision_id charges the decision's tenant: a key bound to another tenant
    must not spend it (nor teach it, nor fail its models) with a decision id it has seen."""
    keys = {"default": ["k-acme", "k-globex"]}
    served = serve(
        sqlite_url,
        routes_dir=POLICY_ROUTES,
        router_api_keys=keys,
        api_key_tenants={"k-acme": "acme", "k-globex": "globex"},
    )

    def as_key(key: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {key}")]

    made = served.router.Decide(decide_request(HARD), metadata=as_key("k-acme"))
    assert made.tenant == "acme"
    charged = pb.RecordOutcomeRequest(quality=1.0, cost_usd=50.0)
    failed = pb.RecordOutcomeRequest(failure=pb.FAILURE_KIND_SERVER_ERROR)
    for i, report in enumerate((charged, failed)):
        report.outcome_id = f"from-globex-{i}"
        report.decision_id = made.decision_id
        report.model = made.model
        with pytest.raises(grpc.RpcError) as refused:
            served.router.RecordOutcome(report, metadata=as_key("k-globex"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "made for another tenant" in (refused.value.details() or "")
    own = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="from-acme",
            decision_id=made.decision_id,
            model=made.model,
            quality=1.0,
            cost_usd=0.5,
        ),
        metadata=as_key("k-acme"),
    )
    assert own.cost_usd == 0.5


def test_a_tenant_bound_to_an_unchecked_key_stops_the_server_at_start(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    from routebook.errors import ConfigError

    with pytest.raises(ConfigError, match="not in router_api_keys"):
        serve(sqlite_url, router_api_keys={"default": ["k1"]}, api_key_tenants={"k2": "t"})


def test_an_empty_key_list_stops_the_server_at_start(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """`{"default": []}` used to switch the Router's key checks off altogether (no key known,
    so none required): anyone could decide and read the full evidence."""
    from routebook.errors import ConfigError

    with pytest.raises(ConfigError, match=r"router_api_keys\['default'\] is empty"):
        serve(sqlite_url, router_api_keys={"default": []})
    with pytest.raises(ConfigError, match="holds an empty key"):
        serve(sqlite_url, router_api_keys={"default": ["k1", " "]})


def test_a_key_or_token_no_caller_can_send_stops_the_server_at_start(
    sqlite_url: str, serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token configured with trailing whitespace (a Docker --env-file line, a secrets file's
    newline) was accepted at start, and every call sending exactly that value was answered
    UNAUTHENTICATED: callers' Bearer values are read without it. The message names the
    setting, never the secret."""
    from routebook.errors import ConfigError

    monkeypatch.setenv("ROUTEBOOK_ADMIN_TOKEN", "change-me ")
    with pytest.raises(ConfigError) as refused:
        serve(sqlite_url)
    assert "admin_token has leading or trailing whitespace" in str(refused.value)
    assert "change-me" not in str(refused.value)
    monkeypatch.delenv("ROUTEBOOK_ADMIN_TOKEN")

    with pytest.raises(ConfigError) as refused:
        serve(sqlite_url, router_api_keys={"default": ["k1", "key-123\n"]})
    assert "key 2 of router_api_keys['default'] has leading or trailing" in str(refused.value)
    assert "key-123" not in str(refused.value)
    with pytest.raises(ConfigError, match="holds a character gRPC metadata cannot carry"):
        serve(sqlite_url, router_api_keys={"default": ["clé-1"]})
    with pytest.raises(ConfigError, match="the evidence_levels key for level 'full' has"):
        serve(sqlite_url, router_api_keys={"default": ["k1"]}, evidence_levels={" k1": "full"})


@pytest.mark.postgres
def test_a_stored_catalog_out_of_bounds_is_warned_about_and_its_nan_latency_meets_no_sla(
    postgres_url: str, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """A catalog stored before the bounds (here written straight to the store) started without a
    word in the log, and a NaN latency passed every latency SLA: `max_latency_ms = 1` went to
    the NaN model. PostgreSQL, since SQLite stores NaN as NULL."""
    from sqlalchemy import create_engine, text

    serve(postgres_url).stop()  # creates the store and the namespace from the route files
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE catalog_models SET latency_ms = 'NaN' WHERE name = 'frontier'")
        )
        connection.execute(
            text("UPDATE catalog_models SET input_usd_per_mtok = 5e12 WHERE name = 'mid'")
        )
    engine.dispose()
    with caplog.at_level("WARNING", logger="routebook"):
        served = serve(postgres_url)
    warned = [r.getMessage() for r in caplog.records if "out of bounds" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith("namespace default: its stored catalog is out of bounds"), warned
    for said in (
        "model 'frontier': latency_ms is nan",
        "model 'mid': input_usd_per_mtok is 5000000000000.0",
        "`routebook routes sync`",
        "UpdateCatalog",
    ):
        assert said in warned[0], (said, warned[0])

    hard = "find the race condition in this multithreaded C++ lock-free queue"
    assert ask(served, hard).model == "frontier"  # no SLA: it still routes
    response = ask(served, hard, max_latency_ms=400)
    assert response.model == "small", response
    assert [(e.rule, list(e.removed_models)) for e in response.policy] == [
        ("latency_sla", ["mid"]),
        ("latency_sla", ["frontier"]),
    ]
    assert "typical latency unknown" in response.policy[1].detail
    error = refused(served, hard, max_latency_ms=1)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "frontier: latency_sla (typical latency unknown" in (error.details() or "")
