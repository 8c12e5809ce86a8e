"""Failover over real gRPC: failures put models on cooldown (shared by replicas), decisions
carry fallbacks, the client walks them, and sessions stick to their model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select, update

from routebook.catalog import Catalog, ModelSpec
from routebook.client import AllModelsFailed, ModelFailure, RouterClient
from routebook.domain import Message, OutcomeReport
from routebook.service.requests import DecideQuery
from routebook.store.tables import (
    CooldownRow,
    DecisionRow,
    ExampleRow,
    ModelFailureRow,
    OutcomeRow,
    utcnow,
)
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import Served, wait_until

EASY = "where is my parcel, it has not arrived"
HARD = "my async Rust tasks deadlock while holding two mutexes, why?"


def ask(served: Served, text: str, **fields: object) -> pb.DecideResponse:
    request = pb.DecideRequest(messages=[pb.Message(role="user", content=text)], **fields)
    response: pb.DecideResponse = served.router.Decide(request, timeout=10)
    return response


def fail(
    served: Served, decision: pb.DecideResponse, model: str, outcome_id: str, **fields: object
) -> pb.RecordOutcomeResponse:
    response: pb.RecordOutcomeResponse = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id=outcome_id, decision_id=decision.decision_id, model=model, **fields
        ),
        timeout=10,
    )
    return response


def rows(served: Served, table: type) -> int:
    with served.app.store.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_decisions_carry_fallbacks_best_next_first(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    easy = ask(served, EASY)
    assert easy.model == "small"
    assert list(easy.fallbacks) == ["mid", "frontier"]  # both meet the target: cheapest first
    hard = ask(served, HARD)
    assert hard.model == "frontier"
    # Neither cheaper model meets the target: the likelier to succeed first, on a tie the stronger.
    assert list(hard.fallbacks) == ["mid", "small"]
    cold = ask(served, "translate this Latin tombstone inscription into Welsh")
    assert cold.strategy == pb.STRATEGY_CASCADE
    assert list(cold.fallbacks) == ["mid", "frontier"]
    limited = serve(sqlite_url, max_fallbacks=1)
    assert list(ask(limited, EASY).fallbacks) == ["mid"]


def test_rate_limit_with_retry_after_puts_the_model_on_cooldown_then_back(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    first = ask(served, EASY)
    assert first.model == "small"
    before_failure = time.monotonic()
    recorded = fail(
        served,
        first,
        "small",
        "rl-1",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=8.0,  # long enough for the checks below on a loaded machine
    )
    assert recorded.cooldown_seconds == pytest.approx(8.0)
    assert rows(served, ExampleRow) == 14 and rows(served, OutcomeRow) == 0  # not quality evidence

    avoided = ask(served, EASY)
    assert avoided.model == "mid"
    assert avoided.reason_code == pb.REASON_CODE_COOLDOWN
    assert "small is on cooldown" in avoided.reason
    cooldown = next(e for e in avoided.policy if e.rule == "cooldown")
    assert list(cooldown.removed_models) == ["small"] and "s left (rate limited)" in cooldown.detail
    assert "small" not in avoided.fallbacks

    wait_until(lambda: ask(served, EASY).model == "small", 60, "small back after its cooldown")
    assert time.monotonic() - before_failure >= 8.0  # not before the cooldown ran out
    back = ask(served, EASY)
    assert (back.model, back.reason_code) == ("small", pb.REASON_CODE_CHEAPEST_MEETS_TARGET)
    again = fail(
        served,
        first,
        "small",
        "rl-1",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=2.0,
    )
    assert again.duplicate and rows(served, ModelFailureRow) == 1


def test_a_cooldown_that_moved_nothing_is_not_the_decisions_reason(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Black-box review 2, finding 5: with every allowed model cooling, the decision kept the
    cooling model yet said REASON_CODE_COOLDOWN ("the decision moved to the next choice"); an
    override to a cooling model listed it as removed by the cooldown, though it was served."""
    served = serve(sqlite_url)
    first = ask(served, EASY)
    assert first.model == "small"
    fail(served, first, "small", "rl", failure=pb.FAILURE_KIND_RATE_LIMITED, retry_after_seconds=60)

    # A 400 ms SLA leaves only small (mid takes 600 ms): nothing to move to, so nothing moved.
    kept = ask(served, EASY, max_latency_ms=400)
    assert kept.model == "small"
    assert kept.reason_code == pb.REASON_CODE_CHEAPEST_MEETS_TARGET
    cooldown = next(e for e in kept.policy if e.rule == "cooldown")
    assert list(cooldown.removed_models) == []
    assert "every allowed model is on cooldown" in cooldown.detail
    assert "small is on cooldown" in kept.reason and "kept" in kept.reason

    overridden = ask(served, EASY, model_override="small")
    assert (overridden.model, overridden.reason_code) == ("small", pb.REASON_CODE_OVERRIDE)
    cooldown = next(e for e in overridden.policy if e.rule == "cooldown")
    assert list(cooldown.removed_models) == []  # served, not removed
    assert "small" in cooldown.detail and "override" in cooldown.detail
    assert "small" not in overridden.fallbacks

    moved = ask(served, EASY)  # the control: here the cooldown did move the decision
    assert (moved.model, moved.reason_code) == ("mid", pb.REASON_CODE_COOLDOWN)
    assert list(next(e for e in moved.policy if e.rule == "cooldown").removed_models) == ["small"]


def test_one_rate_limit_report_cools_a_model_for_at_most_the_cap(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Any caller could report retry-after 86400 s: two reports took the cheap models from
    every tenant of the namespace for a day."""
    served = serve(sqlite_url, max_retry_after_seconds=120)
    decision = ask(served, EASY)
    recorded = fail(
        served,
        decision,
        "small",
        "day-long",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=86_400,
    )
    assert recorded.cooldown_seconds == pytest.approx(120)
    avoided = ask(served, EASY)
    cooldown = next(e for e in avoided.policy if e.rule == "cooldown")
    left = float(cooldown.detail.split("s left")[0].split()[-1])
    assert 60 < left <= 120, cooldown.detail


def test_repeated_errors_past_the_threshold_start_a_cooldown(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, failure_threshold=2, cooldown_seconds=60)
    decisions = [ask(served, EASY) for _ in range(3)]  # three calls, each failing once
    for n in range(2):
        assert (
            fail(
                served, decisions[n], "small", f"e{n}", failure=pb.FAILURE_KIND_SERVER_ERROR
            ).cooldown_seconds
            == 0
        )
    assert ask(served, EASY).model == "small"
    third = fail(served, decisions[2], "small", "e2", failure=pb.FAILURE_KIND_TIMEOUT)
    assert third.cooldown_seconds == 60
    assert ask(served, EASY).model == "mid"


def report_failures_at_once(app: App, namespace: str, how_many: int) -> None:
    """`how_many` server errors for model small, each from a decision of its own, sent together
    from as many threads."""
    start = threading.Barrier(how_many)
    errors: list[BaseException] = []
    decisions = [
        app.routing.decide(
            DecideQuery(messages=(Message("user", f"question {i}"),), namespace=namespace)
        )
        for i in range(how_many)
    ]

    def report(i: int) -> None:
        start.wait()
        try:
            app.outcomes.record_outcome(
                OutcomeReport(
                    outcome_id=f"{namespace}-{i}",
                    model="small",
                    quality=0.0,
                    decision_id=decisions[i].decision_id,
                    failure="server_error",
                )
            )
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(how_many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_burst_of_failures_past_the_threshold_always_starts_a_cooldown(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """Four failures at once with a threshold of three: each report used to count the failures
    committed before it, so simultaneous ones missed each other and often none started the
    cooldown (PostgreSQL: every round). Now each counts inside the write that stores it."""
    app = make_app(db_url, failure_threshold=3, cooldown_seconds=60, head_enabled=False)
    catalog = Catalog(
        [ModelSpec("small", "t", 0.1, 0.4, 300, 128_000), ModelSpec("big", "t", 3, 15, 900, 1)]
    )
    for burst in range(5):
        namespace = f"burst-{burst}"
        app.namespaces.create(namespace, "", catalog)
        report_failures_at_once(app, namespace, 4)
        namespace_id = app.directory.resolve(namespace).id
        assert "small" in app.outcomes._cooldowns.active(namespace_id), f"burst {burst}"


def test_rate_limits_do_not_count_towards_the_failure_threshold(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """A provider's short 429s cool the model for their retry-after only; they must not make
    the next single error start a full cooldown."""
    served = serve(sqlite_url, failure_threshold=2, cooldown_seconds=60)
    decision = ask(served, EASY)
    for n in range(3):
        limited = fail(
            served,
            decision,
            "small",
            f"r{n}",
            failure=pb.FAILURE_KIND_RATE_LIMITED,
            retry_after_seconds=0.001,
        )
        assert limited.cooldown_seconds == pytest.approx(0.001)
    one_error = fail(
        served, decision, "small", "e0", failure=pb.FAILURE_KIND_SERVER_ERROR, cost_usd=1.23
    )
    assert one_error.cooldown_seconds == 0
    assert one_error.cost_usd == 0  # failures are not charged: no echo of a cost not stored


def test_only_failures_of_calls_a_decision_offered_cool_a_model(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Four failure reports by messages (no decision, no call) cooled a model for every tenant
    of the namespace, and repeating them kept it cooling. Failures are still recorded, but only
    those reported against a decision that offered the model count, each decision once."""
    served = serve(sqlite_url, max_fallbacks=1)  # an easy query's decision offers small, mid

    def by_messages(n: int, **fields: object) -> pb.RecordOutcomeResponse:
        request = pb.RecordOutcomeRequest(
            outcome_id=f"fake-{n}",
            messages=[pb.Message(role="user", content="x")],
            model="small",
            tenant="mallory",
            **fields,  # type: ignore[arg-type]
        )
        response: pb.RecordOutcomeResponse = served.router.RecordOutcome(request, timeout=10)
        return response

    for n in range(6):
        assert by_messages(n, failure=pb.FAILURE_KIND_SERVER_ERROR).cooldown_seconds == 0
    limited = by_messages(6, failure=pb.FAILURE_KIND_RATE_LIMITED, retry_after_seconds=600)
    assert limited.cooldown_seconds == 0 and not limited.duplicate
    assert rows(served, ModelFailureRow) == 7  # recorded, all the same
    # One decision's call reported failing six times is one failed call.
    one = ask(served, EASY, tenant="mallory")
    for n in range(6):
        fail(served, one, "small", f"again-{n}", failure=pb.FAILURE_KIND_SERVER_ERROR)
    # Nor does a failure of a model the decision never offered (frontier: not its model, not
    # among its fallbacks), however many decisions report it.
    others = [ask(served, EASY, tenant="mallory") for _ in range(4)]
    assert all((d.model, list(d.fallbacks)) == ("small", ["mid"]) for d in others)
    for n, decision in enumerate(others):
        unrelated = fail(
            served, decision, "frontier", f"never-offered-{n}", failure=pb.FAILURE_KIND_TIMEOUT
        )
        assert unrelated.cooldown_seconds == 0
    victim = ask(served, EASY, tenant="victim-co")
    assert victim.model == "small" and "cooldown" not in [e.rule for e in victim.policy]
    # Failed calls to small from more than 3 decisions (the threshold) are evidence: `one`
    # and three of the others cool it. These decisions are read back from the store now, as
    # a replica that did not make them reads them; the last as a row written before decisions
    # kept their offers, which offered their own model.
    served.app.decision_writer.flush()
    with served.app.store.write() as session:
        session.execute(
            update(DecisionRow).where(DecisionRow.id == others[3].decision_id).values(offered=None)
        )
    started = [
        fail(served, d, "small", f"real-{n}", failure=pb.FAILURE_KIND_SERVER_ERROR).cooldown_seconds
        for n, d in enumerate(others)
    ]
    assert started == [0, 0, 30, 30]
    assert ask(served, EASY, tenant="victim-co").model == "mid"
    fail(served, others[3], "mid", "old-row-fallback", failure=pb.FAILURE_KIND_SERVER_ERROR)
    with served.app.store.read() as session:
        counted = session.scalars(
            select(ModelFailureRow.outcome_id).where(ModelFailureRow.counted.is_(True))
        ).all()
    assert sorted(counted) == [f"again-{n}" for n in range(6)] + [f"real-{n}" for n in range(4)]


def test_one_cooldown_is_counted_once_and_answered_as_it_stands(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Failures past the threshold extend the cooldown in force: the metric of cooldowns
    started counts one, and a rate limit meanwhile answers the cooldown that holds (60 s),
    not its own retry-after."""
    served = serve(sqlite_url, failure_threshold=2, cooldown_seconds=60)
    decisions = [ask(served, EASY) for _ in range(8)]
    for n, decision in enumerate(decisions):
        fail(served, decision, "small", f"e{n}", failure=pb.FAILURE_KIND_SERVER_ERROR)
    limited = fail(
        served,
        decisions[0],
        "small",
        "limited",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=1.0,
    )
    assert 30 < limited.cooldown_seconds <= 60  # the 60 s cooldown, less the calls since
    registry = served.app.telemetry.registry
    labels = {"namespace": "default", "model": "small"}
    assert registry.get_sample_value("routebook_cooldowns_total", labels) == 1.0


def test_a_cooldown_set_through_one_replica_is_honoured_by_another(
    postgres_url: str, serve: Callable[..., Served]
) -> None:
    a = serve(postgres_url)
    b = serve(postgres_url)
    decision = ask(a, EASY)
    fail(
        a,
        decision,
        "small",
        "shared-1",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=30,
    )
    time.sleep(0.3)  # B reads cooldowns from the store at most every 0.25 s
    assert ask(b, EASY).model == "mid"


def test_call_with_fallbacks_reports_two_failures_and_one_success(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    called: list[str] = []

    def call_model(model: str) -> str:
        called.append(model)
        if model == "small":
            raise ModelFailure("rate_limited", retry_after=300)  # outlasts the test
        if model == "mid":
            raise TimeoutError("no answer in 30 s")
        return "answer from frontier"

    with RouterClient(served.target, timeout=30) as client:
        decision = client.decide(EASY)
        answer, attempts = client.call_with_fallbacks(decision, call_model)
    assert (answer, called) == ("answer from frontier", ["small", "mid", "frontier"])
    assert [(a.model, a.failure, a.accepted) for a in attempts] == [
        ("small", "rate_limited", False),
        ("mid", "timeout", False),
        ("frontier", None, True),
    ]
    assert rows(served, ModelFailureRow) == 2 and rows(served, OutcomeRow) == 1

    with RouterClient(served.target, timeout=30) as client:
        hard = client.decide(HARD)
        with pytest.raises(AllModelsFailed) as caught:
            client.call_with_fallbacks(hard, lambda model: 1 / 0)
    # small is still cooling down from its rate limit, so only two models are tried.
    assert [a.model for a in caught.value.attempts] == ["frontier", "mid"]
    assert "server_error" in str(caught.value)


def test_cascade_runner_treats_a_failure_as_a_failure_not_a_quality_miss(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)

    def call_model(model: str) -> str:
        if model == "small":
            raise ModelFailure("content_filter")
        return "Gorffwys mewn hedd"

    with RouterClient(served.target, timeout=30) as client:
        decision = client.decide("translate this Latin tombstone inscription into Welsh")
        result = client.run_cascade(decision, call_model, accept=lambda answer: 0.9)
    assert result.model == "mid" and result.accepted
    assert [(a.model, a.failure) for a in result.attempts] == [
        ("small", "content_filter"),
        ("mid", None),
    ]
    with served.app.store.read() as session:
        models = session.scalars(select(OutcomeRow.model)).all()
    assert models == ["mid"]  # no quality outcome for small


def test_cascade_runner_fails_over_a_decided_models_failure_but_not_a_poor_answer(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """A semantic decision's fallbacks stand in when its model's call fails (here: an outage
    of small); a poor answer from the model that did answer is final, not escalated."""
    served = serve(sqlite_url)
    called: list[str] = []

    def call_model(model: str) -> str:
        called.append(model)
        if model == "small":
            raise ModelFailure("server_error")
        return f"from {model}"

    with RouterClient(served.target, timeout=30) as client:
        decision = client.decide(EASY)
        assert (decision.strategy, decision.model) == (pb.STRATEGY_SEMANTIC, "small")
        assert list(decision.fallbacks) == ["mid", "frontier"]
        result = client.run_cascade(decision, call_model, accept=lambda answer: 0.2)
    assert called == ["small", "mid"]
    assert (result.answer, result.model, result.accepted) == ("from mid", "mid", False)
    assert [(a.model, a.failure) for a in result.attempts] == [
        ("small", "server_error"),
        ("mid", None),
    ]
    assert result.attempts[1].outcome_id == f"{decision.decision_id}:1:mid"
    assert rows(served, ModelFailureRow) == 1
    with served.app.store.read() as session:
        assert session.scalars(select(OutcomeRow.model)).all() == ["mid"]


@pytest.mark.parametrize(
    ("grader", "why"),
    [
        (lambda answer: None, "grader: returned None"),
        (lambda answer: 1 / 0, "grader: ZeroDivisionError: division by zero"),
        (lambda answer: 7.5, "grader: returned 7.5"),
    ],
)
def test_a_grader_that_cannot_grade_keeps_the_paid_answer_and_stops_the_walk(
    sqlite_url: str,
    serve: Callable[..., Served],
    grader: Callable[[str], float],
    why: str,
) -> None:
    """The answer was paid for: a grader that raises or gives no quality must not lose it (it
    used to raise out of run_cascade), nor buy one from every step of the plan, nor record a
    quality nobody measured."""
    served = serve(sqlite_url)
    called: list[str] = []

    def call_model(model: str) -> str:
        called.append(model)
        return f"from {model}"

    with RouterClient(served.target, timeout=30) as client:
        cold = client.decide("translate this Latin tombstone inscription into Welsh")
        assert cold.strategy == pb.STRATEGY_CASCADE
        result = client.run_cascade(cold, call_model, accept=grader)
    assert called == ["small"]
    assert (result.answer, result.model, result.accepted) == ("from small", "small", False)
    [attempt] = result.attempts
    assert attempt.error.startswith(why) and attempt.failure is None
    assert attempt.report_error == "not reported: the answer could not be graded"
    assert rows(served, OutcomeRow) == 0


def test_a_session_keeps_its_model_until_a_cooldown_moves_it(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    first = ask(served, EASY, session_id="conv-1")
    assert first.model == "small"
    kept = ask(served, HARD, session_id="conv-1")
    assert (kept.model, kept.strategy, kept.reason_code) == (
        "small",
        pb.STRATEGY_STICKY,
        pb.REASON_CODE_STICKY,
    )
    assert ask(served, HARD, session_id="conv-2").model == "frontier"
    overridden = ask(served, HARD, session_id="conv-1", model_override="mid")
    assert overridden.strategy == pb.STRATEGY_OVERRIDE

    fail(served, first, "mid", "s-rl", failure=pb.FAILURE_KIND_RATE_LIMITED, retry_after_seconds=30)
    moved = ask(served, HARD, session_id="conv-1")
    assert moved.model == "frontier" and moved.strategy == pb.STRATEGY_SEMANTIC
    assert ask(served, EASY, session_id="conv-1").strategy == pb.STRATEGY_STICKY


def test_a_session_belongs_to_its_tenant(sqlite_url: str, serve: Callable[..., Served]) -> None:
    """Two tenants using the same session id (a counter, "chat-42") neither share a model nor
    learn each other's: the session used to be keyed by its id alone."""
    served = serve(sqlite_url)
    pinned = ask(served, HARD, session_id="chat-42", tenant="beta", model_override="frontier")
    assert pinned.model == "frontier"
    assert ask(served, EASY, session_id="chat-42", tenant="beta").strategy == pb.STRATEGY_STICKY
    other = ask(served, EASY, session_id="chat-42", tenant="acme")
    assert (other.model, other.strategy) == ("small", pb.STRATEGY_SEMANTIC)
    assert ask(served, HARD, session_id="chat-42", tenant="acme").model == "small"  # acme's own


def test_a_cold_start_does_not_pin_the_session_to_its_first_cascade_step(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    cold = ask(served, "translate this Latin tombstone inscription into Welsh", session_id="c")
    assert (cold.strategy, cold.model) == (pb.STRATEGY_CASCADE, "small")
    # The caller may have rejected small's answer: the next turn is decided afresh.
    after = ask(served, HARD, session_id="c")
    assert (after.strategy, after.model) == (pb.STRATEGY_SEMANTIC, "frontier")
    assert ask(served, EASY, session_id="c").strategy == pb.STRATEGY_STICKY  # now it sticks


def test_session_forgets_after_idle(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url, session_idle_seconds=0.5)
    assert ask(served, EASY, session_id="s").model == "small"
    time.sleep(0.6)
    assert ask(served, HARD, session_id="s").strategy == pb.STRATEGY_SEMANTIC


def test_bad_failure_reports(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url)
    decision = ask(served, EASY)
    with pytest.raises(grpc.RpcError) as caught:
        fail(
            served,
            decision,
            "small",
            "x",
            failure=pb.FAILURE_KIND_RATE_LIMITED,
            retry_after_seconds=-1.0,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "retry_after_seconds" in caught.value.details()


KEYS = {"default": ["k-full", "k-summary", "k-none", "k-plain"]}
LEVELS = {"k-full": "full", "k-summary": "summary", "k-none": "none"}


def test_evidence_levels_per_api_key(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url, router_api_keys=KEYS, evidence_levels=LEVELS, admin_token="adm")

    def as_key(key: str) -> pb.DecideResponse:
        request = pb.DecideRequest(messages=[pb.Message(role="user", content=EASY)])
        response: pb.DecideResponse = served.router.Decide(
            request, metadata=[("authorization", f"Bearer {key}")], timeout=10
        )
        return response

    full = as_key("k-full")
    assert full.neighbours and full.estimates and full.reason and full.route == "order_status"
    assert full.neighbours[0].text_snippet
    for key in ("k-summary", "k-plain"):  # a key without a listed level gets summary
        summary = as_key(key)
        assert (summary.model, summary.strategy) == ("small", pb.STRATEGY_SEMANTIC)
        assert summary.confidence > 0 and summary.reason_code == full.reason_code
        assert summary.decision_id and list(summary.fallbacks) == ["mid", "frontier"]
        assert not summary.neighbours and not summary.estimates
        assert (summary.reason, summary.route, summary.top_similarity) == ("", "", 0.0)
    none = as_key("k-none")
    assert none.model == "small" and none.decision_id
    assert none.confidence == 0.0 and none.reason_code == pb.REASON_CODE_UNSPECIFIED
    assert not none.neighbours and not none.estimates and none.reason == ""
    assert as_key("adm").neighbours  # the admin token sees everything

    # Every level keeps what running the decision needs: on a cold start, the cascade plan
    # and its bar, so run_cascade walks the whole plan and rejects a poor answer.
    cold_text = "translate this Latin tombstone inscription into Welsh"
    for key in ("k-summary", "k-none"):
        request = pb.DecideRequest(messages=[pb.Message(role="user", content=cold_text)])
        cold = served.router.Decide(request, metadata=[("authorization", f"Bearer {key}")])
        full_cold = served.router.Decide(request, metadata=[("authorization", "Bearer k-full")])
        assert cold.strategy == pb.STRATEGY_CASCADE == full_cold.strategy
        assert cold.cascade == full_cold.cascade and len(cold.cascade.steps) == 3
        assert cold.quality_target == full_cold.quality_target > 0
        assert not cold.neighbours


def test_another_tenants_history_text_is_never_shown(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    secret = "translate the Latin inscription on the Smith family tombstone into Welsh"
    recorded = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="acme-1",
            tenant="acme",
            model="small",
            quality=1.0,
            messages=[pb.Message(role="user", content=secret)],
        ),
        timeout=10,
    )
    paraphrase = "turn the Latin text on the Smith family gravestone into Welsh"
    for tenant, visible in (("acme", True), ("globex", False), ("", False)):
        response = ask(served, paraphrase, tenant=tenant)
        mine = [n for n in response.neighbours if n.example_id == recorded.example_id]
        assert mine and mine[0].source == pb.SOURCE_HISTORY
        assert (mine[0].text_snippet == secret) is visible
        assert visible or mine[0].text_snippet == ""


def test_escalation_guard_caps_one_tenant_not_another(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    from tests.integration.test_policy import POLICY_ROUTES

    served = serve(sqlite_url, routes_dir=POLICY_ROUTES)
    for _ in range(4):
        assert ask(served, HARD, namespace="guarded", tenant="abuser").model == "frontier"
    capped = ask(served, HARD, namespace="guarded", tenant="abuser")
    assert capped.model == "mid"
    guard = next(e for e in capped.policy if e.rule == "escalation_guard")
    assert list(guard.removed_models) == ["frontier"] and "100%" in guard.detail
    # An explicit override is no way round the cap; to a cheaper model it is still fine.
    with pytest.raises(grpc.RpcError) as refused:
        ask(served, HARD, namespace="guarded", tenant="abuser", model_override="frontier")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "escalation_guard" in (refused.value.details() or "")
    cheaper = ask(served, HARD, namespace="guarded", tenant="abuser", model_override="mid")
    assert (cheaper.model, cheaper.strategy) == ("mid", pb.STRATEGY_OVERRIDE)
    honest = ask(served, HARD, namespace="guarded", tenant="honest", model_override="frontier")
    assert honest.model == "frontier"
    # While frontier cools down an override may still name it, but not round the cap. (The
    # rate limit is reported on a decision that offered frontier: the abuser's no longer do.)
    cooling = fail(
        served,
        honest,
        "frontier",
        "guard-rl",
        failure=pb.FAILURE_KIND_RATE_LIMITED,
        retry_after_seconds=60,
    )
    assert cooling.cooldown_seconds == pytest.approx(60)
    with pytest.raises(grpc.RpcError) as refused:
        ask(served, HARD, namespace="guarded", tenant="abuser", model_override="frontier")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_fallbacks_to_another_model_do_not_count_as_escalations(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """The guard caps calls to the strongest model. During an outage of the cheap model the
    recommended flow (report the failure, answer with the next fallback) reports outcomes for
    another model than decided: those are not calls to the strongest model."""
    from tests.integration.test_policy import POLICY_ROUTES

    served = serve(sqlite_url, routes_dir=POLICY_ROUTES)
    hard = ask(served, HARD, namespace="guarded", tenant="acme")
    assert hard.model == "frontier"
    unrelated = ["what is the capital of France", "convert 5 miles to km", "a haiku on rain"]
    for n, text in enumerate(unrelated):
        decision = ask(served, text, namespace="guarded", tenant="acme")
        assert decision.model != "frontier"
        fallback = "mid" if decision.model == "small" else "small"
        fail(served, decision, decision.model, f"down-{n}", failure=pb.FAILURE_KIND_SERVER_ERROR)
        answered = fail(served, decision, fallback, f"fallback-{n}", quality=1.0)
        assert not answered.duplicate
    again = ask(served, HARD, namespace="guarded", tenant="acme")
    assert again.model == "frontier"  # 1 of 4 calls went to frontier, under the 50% cap
    assert "escalation_guard" not in [e.rule for e in again.policy]


OUTAGE = """
namespace: outage
catalog:
  - {name: small, provider: openai, input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.4,
     latency_ms: 300, context_window: 128000}
  - {name: mid, provider: openai, input_usd_per_mtok: 0.4, output_usd_per_mtok: 1.6,
     latency_ms: 600, context_window: 128000}
  - {name: frontier, provider: anthropic, input_usd_per_mtok: 3, output_usd_per_mtok: 15,
     latency_ms: 1500, context_window: 200000}
policy:
  escalation_cap: {max_strong_share: 0.3, window_minutes: 60, min_decisions: 5}
routes:
  - name: order_status
    best_model: small
    utterances:
      - where is my order?
      - my parcel has not arrived yet
      - track my package please
      - when will my delivery come
      - has my order shipped yet
  - name: code_review
    best_model: frontier
    utterances:
      - find the race condition in this multithreaded C++ lock-free queue
      - why does my async Rust code deadlock when two tasks hold mutexes
"""
#: Queries far from every route and from each other: each is a cold start (a cascade).
COLD = (
    "translate this Latin tombstone inscription into Welsh",
    "write a sonnet about a lighthouse keeper's cat",
    "what was the population of Byzantium in the sixth century",
    "which sourdough hydration suits a humid kitchen",
    "explain the rules of curling to a child",
    "how do violin makers choose spruce for the top plate",
    "plan a three day hiking route in the Dolomites",
)


def outage_routes(tmp_path: Path) -> Path:
    routes = tmp_path / "outage-routes"
    routes.mkdir()
    (routes / "outage.yaml").write_text(OUTAGE)
    return routes


def openai_down(model: str) -> str:
    if model != "frontier":
        raise ModelFailure("server_error", message="the provider is down")
    return f"from {model}"


def test_an_outage_of_the_cheaper_models_leaves_the_tenant_the_strongest(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """Black-box review finding 1: during an outage of small and mid's provider, the
    documented flow (the decided model fails, the fallbacks fail, frontier answers) counted
    every answer as an escalation. Past the cap the guard took frontier, the one model still
    up, from the tenant, and every later call ended in AllModelsFailed. A cascade's steps
    reached the same way are fallbacks too; one reached past poor answers still counts."""
    served = serve(sqlite_url, routes_dir=outage_routes(tmp_path), failure_threshold=1000)
    with RouterClient(served.target, timeout=30) as client:
        for n in range(8):
            if n % 2:
                decision = client.decide(COLD[n // 2], namespace="outage", tenant="acme")
                assert decision.strategy == pb.STRATEGY_CASCADE
                result = client.run_cascade(decision, openai_down, accept=lambda answer: 1.0)
                answer, attempts = result.answer, result.attempts
            else:
                text = f"where is my order number {1000 + n}? it has not arrived"
                decision = client.decide(text, namespace="outage", tenant="acme")
                assert (decision.model, list(decision.fallbacks)) == ("small", ["mid", "frontier"])
                answer, attempts = client.call_with_fallbacks(decision, openai_down)
            assert "escalation_guard" not in [e.rule for e in decision.policy], n
            assert answer == "from frontier"
            assert [(a.model, a.failure, a.report_error) for a in attempts] == [
                ("small", "server_error", ""),
                ("mid", "server_error", ""),
                ("frontier", None, ""),
            ]
        # Escalating past answers graded poor is what the cap is for: three cold starts
        # walked to frontier that way are 3 of 6 calls, past 30%.
        for text in COLD[4:]:
            decision = client.decide(text, namespace="outage", tenant="picky")
            assert decision.strategy == pb.STRATEGY_CASCADE
            result = client.run_cascade(
                decision, lambda model: f"from {model}", accept=lambda a: a == "from frontier"
            )
            assert result.model == "frontier" and len(result.attempts) == 3
    capped = ask(served, HARD, namespace="outage", tenant="picky")
    assert capped.model == "mid" and "escalation_guard" in [e.rule for e in capped.policy]
    assert ask(served, HARD, namespace="outage", tenant="acme").model == "frontier"


@pytest.mark.parametrize("session", ["", "chat-1"])
def test_decisions_a_cooldown_sends_to_the_strongest_do_not_count_towards_the_cap(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path, session: str
) -> None:
    """The same outage once its failures cool small and mid: decisions go to frontier, the
    only model left. Counted as strong, they tripped the cap, and when the cooldowns ended
    (the outage going on) the guard took frontier: the next call ended in AllModelsFailed.
    In a session the turns after the first stuck to frontier, and that stickiness, chosen
    among the models not cooling down, counted them as strong again."""
    served = serve(sqlite_url, routes_dir=outage_routes(tmp_path), cooldown_seconds=5)
    with RouterClient(served.target, timeout=30) as client:
        decided = []
        for n in range(8):
            text = f"where is my order number {n}? it has not arrived"
            decision = client.decide(text, namespace="outage", tenant="acme", session_id=session)
            answer, _ = client.call_with_fallbacks(decision, openai_down)
            assert answer == "from frontier"
            decided.append(decision.model)
        # Failed calls from more than 3 decisions cooled small and mid (for 5 s).
        assert decided == ["small"] * 4 + ["frontier"] * 4

        def cooling() -> bool:
            with served.app.store.read() as session:
                until = select(func.count()).where(CooldownRow.until > utcnow())
                return bool(session.scalar(until))

        wait_until(lambda: not cooling(), 30, "the cooldowns to end")
        decision = client.decide("has my order 99 shipped yet", namespace="outage", tenant="acme")
        assert "escalation_guard" not in [e.rule for e in decision.policy]
        answer, attempts = client.call_with_fallbacks(decision, openai_down)
    assert answer == "from frontier" and attempts[-1].model == "frontier"


def test_what_counts_as_an_escalation_reads_every_replicas_failures(
    postgres_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """An outcome for frontier is a fallback, not an escalation, when each model its decision
    offered ahead of it was reported failed on that decision, through any replica, before the
    outcome. Skipping a fallback that did not fail, or reporting the answer before the
    failures, counts (docs/failover.md)."""
    routes = outage_routes(tmp_path)
    deciding = serve(postgres_url, routes_dir=routes, failure_threshold=1000)
    answering = serve(postgres_url, routes_dir=routes, failure_threshold=1000)
    down = pb.FAILURE_KIND_SERVER_ERROR
    for tenant in ("walker", "skipper", "hasty"):
        for n in range(5):
            text = f"where is my order number {n}? it has not arrived"
            decision = ask(deciding, text, namespace="outage", tenant=tenant)
            assert list(decision.fallbacks) == ["mid", "frontier"]
            ahead = ["small"] if tenant == "skipper" else ["small", "mid"]
            if tenant == "hasty":
                fail(answering, decision, "frontier", f"{tenant}-{n}", quality=1.0)
            for model in ahead:
                fail(deciding, decision, model, f"{tenant}-{n}-{model}", failure=down)
            if tenant != "hasty":
                fail(answering, decision, "frontier", f"{tenant}-{n}", quality=1.0)
    # The answering replica counted no escalation of the walker's: it is not capped there.
    walker = ask(answering, HARD, namespace="outage", tenant="walker")
    assert walker.model == "frontier" and not walker.policy
    for tenant in ("skipper", "hasty"):  # five escalations of five calls there
        capped = ask(answering, HARD, namespace="outage", tenant=tenant)
        assert capped.model == "mid", tenant
        assert [e.rule for e in capped.policy] == ["escalation_guard"]


TWO_AT_THE_TOP = """
namespace: twins
catalog:
  - {name: small, provider: t, input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.4,
     latency_ms: 300, context_window: 128000}
  - {name: mid, provider: t, input_usd_per_mtok: 0.4, output_usd_per_mtok: 1.6,
     latency_ms: 600, context_window: 128000}
  - {name: frontier-a, provider: t, input_usd_per_mtok: 3, output_usd_per_mtok: 15,
     latency_ms: 900, context_window: 128000}
  - {name: frontier-b, provider: t, input_usd_per_mtok: 3, output_usd_per_mtok: 15,
     latency_ms: 900, context_window: 128000}
policy:
  escalation_cap: {max_strong_share: 0.5, window_minutes: 60, min_decisions: 4}
routes:
  - name: code_review
    best_model: frontier-a
    utterances:
      - why does my async Rust code deadlock when two tasks hold mutexes
      - find the race condition in this multithreaded C++ lock-free queue
  - name: order_status
    best_model: small
    utterances: [where is my parcel, it has not arrived, track my package please]
"""


def test_the_escalation_cap_holds_every_model_at_the_top_price(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """With two models at the top price only the one listed last (by name) was guarded: a
    tenant sent every call to the other, escalated to it, and could override to either."""
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "twins.yaml").write_text(TWO_AT_THE_TOP)
    served = serve(sqlite_url, routes_dir=routes)
    for _ in range(4):
        assert ask(served, HARD, namespace="twins", tenant="abuser").model == "frontier-a"
    capped = ask(served, HARD, namespace="twins", tenant="abuser")
    assert capped.model == "mid"
    guard = next(e for e in capped.policy if e.rule == "escalation_guard")
    assert list(guard.removed_models) == ["frontier-a", "frontier-b"]
    assert "calls to frontier-a or frontier-b" in guard.detail
    for top in ("frontier-a", "frontier-b"):
        with pytest.raises(grpc.RpcError) as refused:
            ask(served, HARD, namespace="twins", tenant="abuser", model_override=top)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Escalations to either count: four cheap decisions escalated to frontier-a are half of
    # this tenant's eight calls, so its next hard query is capped too.
    for n in range(4):
        cheap = ask(served, EASY, namespace="twins", tenant="escalator")
        assert cheap.model == "small"
        fail(served, cheap, "frontier-a", f"escalated-{n}", quality=1.0)
    assert ask(served, HARD, namespace="twins", tenant="escalator").model == "mid"


def test_an_outcome_the_router_refuses_does_not_cost_the_caller_its_answer(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """The answer was paid for: a router that cannot take the report (here: another store,
    which does not know the decision) leaves the answer with the caller and says why."""
    deciding = serve(sqlite_url)
    elsewhere = serve(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with RouterClient(deciding.target, timeout=30) as client:
        decision = client.decide(EASY)
    with RouterClient(elsewhere.target, timeout=30) as client:
        answer, attempts = client.call_with_fallbacks(decision, lambda model: f"from {model}")
        result = client.run_cascade(decision, lambda model: f"from {model}", lambda a: 0.9)
    assert answer == "from small" and len(attempts) == 1
    assert attempts[0].report_error.startswith("NOT_FOUND: ")
    assert (result.answer, result.model, result.accepted) == ("from small", "small", True)
    assert result.attempts[0].report_error.startswith("NOT_FOUND: ")
    with RouterClient(deciding.target, timeout=30) as client:
        answer, attempts = client.call_with_fallbacks(decision, lambda model: f"from {model}")
    assert attempts[0].report_error == ""  # the router that made the decision takes it


def test_usage_the_report_cannot_carry_does_not_cost_the_answer(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """`len(prompt) / 4` is a float: the report cannot be built, but the answer was paid for
    and the fallback walk must not call another model for it."""
    from routebook.client import ModelCall

    served = serve(sqlite_url)
    calls: list[str] = []

    def call_model(model: str) -> ModelCall[str]:
        calls.append(model)
        return ModelCall(f"from {model}", input_tokens=len(EASY) / 4)  # type: ignore[arg-type]

    with RouterClient(served.target, timeout=30) as client:
        decision = client.decide(EASY)
        answer, attempts = client.call_with_fallbacks(decision, call_model)
    assert answer == f"from {decision.model}" and calls == [decision.model]
    assert attempts[0].report_error.startswith("the report could not be built")


def test_long_model_names_still_make_valid_outcome_ids() -> None:
    from routebook.client import _outcome_id

    decision = "0" * 32
    long_name = "vendor/" + "m" * 121  # 128 characters, the longest name the catalog allows
    made = _outcome_id(decision, "fallback:3", long_name)
    assert len(made) <= 128 and made == _outcome_id(decision, "fallback:3", long_name)
    assert made != _outcome_id(decision, "fallback:3", long_name[:-1] + "n")
    assert _outcome_id(decision, "0", "small") == f"{decision}:0:small"  # short names unchanged
