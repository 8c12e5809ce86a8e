"""Decide and RecordOutcome over real gRPC on loopback, the real model, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from sqlalchemy import func, select

from routebook.catalog import Catalog
from routebook.client import ModelCall, RouterClient
from routebook.store.spend import tenant_spend
from routebook.store.tables import ExampleRow, OutcomeRow
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

UNSEEN = "translate this Latin inscription from a Roman tombstone into modern Welsh"
PARAPHRASE = "turn the Latin text on an old Roman gravestone into present-day Welsh"


def ask(served: Served, text: str, **fields: object) -> pb.DecideResponse:
    request = pb.DecideRequest(messages=[pb.Message(role="user", content=text)], **fields)
    response: pb.DecideResponse = served.router.Decide(request, timeout=10)
    return response


def count(served: Served, row: type[OutcomeRow] | type[ExampleRow]) -> int:
    with served.app.store.read() as session:
        return int(session.scalar(select(func.count()).select_from(row)) or 0)


def test_close_precedent_routes_semantically_with_evidence(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    response = ask(served, "where is my parcel, it hasn't arrived")
    assert response.strategy == pb.STRATEGY_SEMANTIC
    assert response.model == "small"
    assert response.route == "order_status"
    assert response.reason_code == pb.REASON_CODE_CHEAPEST_MEETS_TARGET
    assert response.namespace == "default"
    assert response.index_generation == 0  # no reindex has been published yet
    assert len(response.decision_id) == 32
    top = response.neighbours[0]
    assert top.source == pb.SOURCE_REFERENCE
    assert top.best_model == "small"
    assert top.similarity > 0.6
    similarities = [n.similarity for n in response.neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert [e.model for e in response.estimates] == ["small", "mid", "frontier"]
    assert response.estimates[0].meets_target and response.estimates[0].support > 0
    assert response.estimated_cost_usd == pytest.approx(response.estimates[0].estimated_cost_usd)
    assert response.estimated_cost_usd > 0


def test_hard_query_goes_to_the_model_its_neighbours_needed(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    response = ask(served, "my async Rust tasks deadlock while holding two mutexes, why?")
    assert response.strategy == pb.STRATEGY_SEMANTIC
    assert response.model == "frontier"
    assert response.route == "code_review"
    small = response.estimates[0]
    assert small.model == "small" and not small.meets_target


def test_a_cascades_bar_is_its_own_setting_and_a_callers_target_is_its_bar(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """calibrate may tune quality_target to 0.14 (a bar for estimates); a grader's answer of
    0.2 must not pass a cascade because of it: cascade_min_quality is the plan's bar."""
    served = serve(db_url, quality_target=0.14, cascade_min_quality=0.8)
    cold = ask(served, UNSEEN)
    assert cold.strategy == pb.STRATEGY_CASCADE
    assert cold.quality_target == pytest.approx(0.14)
    assert cold.cascade.min_quality == pytest.approx(0.8)
    assert "at least 0.80" in cold.cascade.acceptance
    own = ask(served, UNSEEN, quality_target=0.9)  # the caller's own target is its own bar
    assert own.cascade.min_quality == pytest.approx(0.9)


def test_learning_loop_cold_start_then_recorded_outcome_routes_paraphrase(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    cold = ask(served, UNSEEN)
    assert cold.strategy == pb.STRATEGY_CASCADE
    assert cold.reason_code == pb.REASON_CODE_COLD_LOW_SIMILARITY
    assert cold.route == ""
    assert [s.model for s in cold.cascade.steps] == ["small", "mid", "frontier"]
    costs = [s.estimated_cost_usd for s in cold.cascade.steps]
    assert costs == sorted(costs)
    assert cold.cascade.min_quality == pytest.approx(cold.quality_target)
    assert cold.model == "small"

    recorded = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="loop-1",
            decision_id=cold.decision_id,
            model="small",
            quality=0.95,
            input_tokens=40,
            output_tokens=60,
        ),
        timeout=10,
    )
    assert not recorded.duplicate and recorded.example_id > 0
    assert recorded.cost_usd == pytest.approx((40 * 0.10 + 60 * 0.40) / 1e6)

    warm = ask(served, PARAPHRASE)
    assert warm.strategy == pb.STRATEGY_SEMANTIC
    assert warm.model == "small"
    evidence = {n.example_id: n for n in warm.neighbours}
    assert recorded.example_id in evidence
    learned = evidence[recorded.example_id]
    assert learned.source == pb.SOURCE_HISTORY
    assert [(o.model, o.mean_quality, o.count) for o in learned.outcomes] == [("small", 0.95, 1)]
    assert warm.neighbours[0].example_id == recorded.example_id


def test_restart_gives_the_same_decision_without_rerecording(
    db_url: str, serve: Callable[..., Served]
) -> None:
    first = serve(db_url)
    cold = ask(first, UNSEEN)
    first.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="restart-1", decision_id=cold.decision_id, model="mid", success=True
        ),
        timeout=10,
    )
    before = ask(first, PARAPHRASE)
    outcomes_before, examples_before = count(first, OutcomeRow), count(first, ExampleRow)
    first.stop()

    second = serve(db_url)
    after = ask(second, PARAPHRASE)
    assert (
        (after.strategy, after.model)
        == (before.strategy, before.model)
        == (
            pb.STRATEGY_SEMANTIC,
            "mid",
        )
    )
    assert [n.example_id for n in after.neighbours] == [n.example_id for n in before.neighbours]
    assert count(second, OutcomeRow) == outcomes_before == 1
    assert count(second, ExampleRow) == examples_before


def test_record_by_query_text_joins_the_index(db_url: str, serve: Callable[..., Served]) -> None:
    served = serve(db_url)
    recorded = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="by-text",
            messages=[pb.Message(role="user", content=UNSEEN)],
            model="frontier",
            quality=1.0,
        ),
        timeout=10,
    )
    response = ask(served, UNSEEN)
    assert response.neighbours[0].example_id == recorded.example_id
    assert response.neighbours[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert response.strategy == pb.STRATEGY_SEMANTIC


def test_repeated_outcome_id_returns_the_first_result_and_writes_once(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    decision = ask(served, UNSEEN)
    request = pb.RecordOutcomeRequest(
        outcome_id="same", decision_id=decision.decision_id, model="small", quality=0.3
    )
    first = served.router.RecordOutcome(request, timeout=10)
    request.quality = 0.9  # a retry that differs must not overwrite the first result
    again = served.router.RecordOutcome(request, timeout=10)
    assert not first.duplicate and again.duplicate
    assert (again.example_id, again.quality, again.namespace) == (
        first.example_id,
        0.3,
        "default",
    )
    assert count(served, OutcomeRow) == 1


def test_cascade_runner_reports_every_attempt_and_learns(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    answers = {"small": "Ave", "mid": "Gorffwys mewn hedd", "frontier": "unused"}
    called: list[str] = []

    def call_model(model: str) -> ModelCall[str]:
        called.append(model)
        return ModelCall(answers[model], input_tokens=30, output_tokens=10)

    with RouterClient(served.target, timeout=30) as client:
        decision = client.decide(UNSEEN)
        assert decision.strategy == pb.STRATEGY_CASCADE
        result = client.run_cascade(decision, call_model, accept=lambda a: len(a) > 5)
        assert called == ["small", "mid"]
        assert result.accepted and result.model == "mid" and result.answer == "Gorffwys mewn hedd"
        assert [(a.model, a.quality, a.accepted) for a in result.attempts] == [
            ("small", 0.0, False),
            ("mid", 1.0, True),
        ]
        # Running the same cascade again reports nothing new: outcome ids derive from the decision.
        client.run_cascade(decision, call_model, accept=lambda a: len(a) > 5)
        assert count(served, OutcomeRow) == 2

        warm = client.decide(PARAPHRASE)
    assert warm.strategy == pb.STRATEGY_SEMANTIC
    assert warm.model == "mid"
    small, mid = warm.estimates[0], warm.estimates[1]
    assert not small.meets_target and mid.meets_target


def test_quality_target_in_the_request_is_used(db_url: str, serve: Callable[..., Served]) -> None:
    served = serve(db_url)
    strict = ask(served, "where is my parcel, it hasn't arrived", quality_target=1.0)
    assert strict.quality_target == pytest.approx(1.0)
    assert strict.model == "frontier"
    assert strict.reason_code == pb.REASON_CODE_NONE_MEETS_TARGET


def test_concurrent_records_for_one_query_make_one_example_and_no_duplicates(
    db_url: str, serve: Callable[..., Served]
) -> None:
    import threading

    served = serve(db_url)
    decision = ask(served, UNSEEN)
    start = threading.Barrier(12)
    errors: list[BaseException] = []

    def record(outcome_id: str) -> None:
        start.wait()
        try:
            served.router.RecordOutcome(
                pb.RecordOutcomeRequest(
                    outcome_id=outcome_id,
                    decision_id=decision.decision_id,
                    model="small",
                    quality=1.0,
                ),
                timeout=30,
            )
        except grpc.RpcError as exc:
            errors.append(exc)

    # Eight distinct outcomes and four retries of one outcome id, all at once.
    ids = [f"c{n}" for n in range(8)] + ["same"] * 4
    threads = [threading.Thread(target=record, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(served, OutcomeRow) == 9
    with served.app.store.read() as session:
        history = session.scalars(select(ExampleRow.id).where(ExampleRow.source == "history")).all()
    assert len(history) == 1
    served.app.follower.catch_up(served.app.directory.resolve("default"))
    facts = served.app.registry.get("default").facts(history[0])
    assert [(o.model, o.count) for o in facts.outcomes] == [("small", 9)]


def test_an_outcome_without_usage_is_charged_as_decide_estimated(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """Charged from the last user message alone, a conversation with a long system prompt cost
    the tenant a fraction of Decide's estimate (4.4 times less here)."""
    served = serve(db_url)
    conversation = [
        pb.Message(role="system", content="You are a careful, patient assistant. " * 400),
        pb.Message(role="user", content="where is my order?"),
    ]
    decision = served.router.Decide(
        pb.DecideRequest(messages=conversation, model_override="frontier", tenant="t1")
    )
    by_id = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="by-id", decision_id=decision.decision_id, model="frontier", success=True
        )
    )
    assert by_id.cost_usd == pytest.approx(decision.estimated_cost_usd)
    by_messages = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="by-messages",
            messages=conversation,
            model="frontier",
            success=True,
            tenant="t1",
        )
    )
    assert by_messages.cost_usd == pytest.approx(decision.estimated_cost_usd)
    assert decision.estimated_cost_usd > 0.01  # the system prompt's 4,000 tokens count


def test_cascade_steps_and_fallbacks_without_usage_are_charged_the_plans_estimate(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """Black-box review 2, finding 1: a later cascade step (or a fallback) reported by
    decision_id without usage was charged as if only the last user message had been sent, a
    third of the plan's own estimate for it with a long system prompt, so budgets ran short."""
    served = serve(db_url)
    conversation = [
        pb.Message(role="system", content="You are a careful, patient assistant. " * 400),
        pb.Message(role="user", content=UNSEEN),
    ]
    cold = served.router.Decide(
        pb.DecideRequest(messages=conversation, tenant="t1", expected_output_tokens=700)
    )
    assert cold.strategy == pb.STRATEGY_CASCADE
    planned = {s.model: s.estimated_cost_usd for s in cold.cascade.steps}
    for model in ("small", "mid", "frontier"):
        charged = served.router.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id=f"step-{model}",
                decision_id=cold.decision_id,
                model=model,
                quality=0.5,
            )
        )
        assert charged.cost_usd == pytest.approx(planned[model]), model
    assert planned["frontier"] > 0.02  # the system prompt's 4,000 tokens count (0.012)

    warm = served.router.Decide(
        pb.DecideRequest(
            messages=[conversation[0], pb.Message(role="user", content="where is my order?")],
            tenant="t1",
        )
    )
    assert warm.strategy == pb.STRATEGY_SEMANTIC and warm.fallbacks
    fallback = warm.fallbacks[0]
    served.app.decision_writer.flush()  # read from the stored row, not the write-behind buffer
    estimate = next(e for e in warm.estimates if e.model == fallback)
    charged = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="fallback", decision_id=warm.decision_id, model=fallback, success=True
        )
    )
    assert charged.cost_usd == pytest.approx(estimate.estimated_cost_usd)
    with served.app.store.read() as session:
        namespace_id = served.app.directory.resolve("default").id
        spent = tenant_spend(session, namespace_id, "t1", 24)
    assert spent == pytest.approx(sum(planned.values()) + estimate.estimated_cost_usd)


def test_a_call_to_a_model_retired_since_its_decision_is_recorded_and_charged(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """Black-box review finding 11: the decision offered small and mid, an admin retired them
    while the calls ran, and their reports were INVALID_ARGUMENT ("unknown model"): money
    already spent never reached the tenant's budget."""
    served = serve(db_url)
    decision = ask(served, "where is my order?", tenant="acme")
    assert (decision.model, list(decision.fallbacks)) == ("small", ["mid", "frontier"])
    view = served.app.namespaces.get("default")
    frontier = [m for m in view.catalog.models if m.name == "frontier"]
    served.app.namespaces.update_catalog("default", view.catalog_version, Catalog(frontier))

    def report(outcome_id: str, model: str, **fields: object) -> pb.RecordOutcomeResponse:
        response: pb.RecordOutcomeResponse = served.router.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id=outcome_id, decision_id=decision.decision_id, model=model, **fields
            ),
            timeout=10,
        )
        return response

    # Its prices are gone: without a reported cost, the decision's own estimate is charged.
    decided = report("decided", "small", success=True, input_tokens=40, output_tokens=60)
    assert decided.cost_usd == pytest.approx(decision.estimated_cost_usd) and decided.example_id
    failed = report("mid-down", "mid", failure=pb.FAILURE_KIND_TIMEOUT)
    assert not failed.duplicate and failed.cost_usd == 0
    paid = report("mid-answer", "mid", quality=0.7, cost_usd=0.002)
    assert paid.cost_usd == pytest.approx(0.002)
    with served.app.store.read() as session:
        namespace_id = served.app.directory.resolve("default").id
        charged = tenant_spend(session, namespace_id, "acme", 24)
        stored = session.scalars(select(OutcomeRow.model).order_by(OutcomeRow.id)).all()
    assert charged == pytest.approx(decision.estimated_cost_usd + 0.002)
    assert stored == ["small", "mid"]
    # Only a model the decision offered: any other, or one reported by messages, is refused.
    for refused in (
        pb.RecordOutcomeRequest(
            outcome_id="never", decision_id=decision.decision_id, model="gpt-x", success=True
        ),
        pb.RecordOutcomeRequest(
            outcome_id="by-text",
            messages=[pb.Message(role="user", content="where is my order?")],
            model="small",
            success=True,
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            served.router.RecordOutcome(refused, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown model" in (caught.value.details() or "")
    # The index holds outcomes of models out of the catalog; they move no estimate.
    again = ask(served, "where is my order?", tenant="acme")
    assert again.model == "frontier" and [e.model for e in again.estimates] == ["frontier"]
    history = [n for n in again.neighbours if n.example_id == decided.example_id]
    assert history and {o.model for o in history[0].outcomes} == {"small", "mid"}
