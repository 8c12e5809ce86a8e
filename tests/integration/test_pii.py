"""Queries marked `contains_pii`: evidence, never shown; and no query text kept for ever.

Black-box review 2, finding 3: a query decided with contains_pii came back as a neighbour's
snippet on a later request of the same tenant that was not marked (and went to a US model),
and every Decide's text stayed in `decisions.query_text` with no retention. Real gRPC server,
real model, SQLite and PostgreSQL; the policy test routes, whose `small` is the on-prem model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from routebook.index import facts_file
from routebook.index import snapshot as snap
from routebook.routefiles import text_hash
from routebook.service.check import check_indexes
from routebook.service.decision_writer import DecisionWriter, PendingDecision
from routebook.service.retention import DecisionTextSweeper
from routebook.service.stats import routing_stats
from routebook.store.db import Store, make_engine
from routebook.store.migrate import upgrade
from routebook.store.namespaces import ensure_namespace
from routebook.store.spend import tenant_spend
from routebook.store.tables import DecisionRow, ExampleRow, OutcomeRow, TombstoneRow
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served, wait_until
from tests.integration.test_policy import POLICY_ROUTES

SECRET = "my SSN is 078-05-1120 and my card 4111 1111 1111 1111, why was I charged twice"
LATER = "why was I charged twice on my card"
PLAIN = "why was my card billed two times for one order"


def ask(served: Served, text: str, **fields: object) -> pb.DecideResponse:
    request = pb.DecideRequest(messages=[pb.Message(role="user", content=text)], **fields)
    response: pb.DecideResponse = served.router.Decide(request, timeout=10)
    return response


def report(served: Served, outcome_id: str, **fields: object) -> pb.RecordOutcomeResponse:
    fields.setdefault("quality", 1.0)
    if "text" in fields:
        fields["messages"] = [pb.Message(role="user", content=str(fields.pop("text")))]
    response: pb.RecordOutcomeResponse = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(outcome_id=outcome_id, **fields), timeout=10
    )
    return response


def neighbour(response: pb.DecideResponse, example_id: int) -> pb.Neighbour:
    found = [n for n in response.neighbours if n.example_id == example_id]
    assert found, f"example {example_id} is not among the neighbours"
    return found[0]


def test_a_pii_query_is_evidence_but_its_text_is_never_shown(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """The review's repro: decided with contains_pii, its outcome reported by decision_id,
    then the same tenant asks without the mark."""
    served = serve(db_url, routes_dir=POLICY_ROUTES)
    decided = ask(served, SECRET, tenant="acme", contains_pii=True)
    marked = report(served, "pii-1", decision_id=decided.decision_id, model=decided.model)
    assert marked.example_id and not marked.text_expired
    plain = report(served, "plain-1", text=PLAIN, tenant="acme", model="small")

    later = ask(served, LATER, tenant="acme")
    mine = neighbour(later, marked.example_id)
    assert (mine.text_snippet, mine.contains_pii) == ("", True)
    # Still evidence: its outcome is shown and weighs in the estimates.
    assert mine.weight > 0 and [(o.model, o.count) for o in mine.outcomes] == [(decided.model, 1)]
    # The tenant's unmarked history is shown as before.
    shown = neighbour(later, plain.example_id)
    assert (shown.text_snippet, shown.contains_pii) == (PLAIN, False)
    # Not to a marked request either, nor to another tenant, who is not even told of the mark
    # (it would say something about another tenant's queries).
    for fields in ({"tenant": "acme", "contains_pii": True}, {"tenant": "globex"}, {}):
        again = neighbour(ask(served, LATER, **fields), marked.example_id)  # type: ignore[arg-type]
        assert again.text_snippet == ""
        assert again.contains_pii is (fields.get("tenant") == "acme")

    served.app.decision_writer.flush()
    with served.app.store.read() as session:
        example = session.get(ExampleRow, marked.example_id)
        decision = session.get(DecisionRow, decided.decision_id)
        assert example is not None and example.contains_pii and example.text == SECRET
        assert decision is not None and decision.contains_pii
        unmarked = session.get(ExampleRow, plain.example_id)
        assert unmarked is not None and not unmarked.contains_pii


def test_a_later_report_marks_a_known_example_on_every_replica(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """A text first reported unmarked, then marked: the mark is written to the example it
    already has (never taken back by a later unmarked report), this server's index has it at
    once, and another replica on the store reads it with its next pass."""
    a = serve(db_url, routes_dir=POLICY_ROUTES, follow_interval_seconds=0.1)
    b = serve(db_url, routes_dir=POLICY_ROUTES, follow_interval_seconds=0.1)
    first = report(a, "by-messages-1", text=SECRET, tenant="acme", model="small")

    def b_shows(text: str) -> bool:
        found = [
            n for n in ask(b, LATER, tenant="acme").neighbours if n.example_id == first.example_id
        ]
        return bool(found) and found[0].text_snippet == text

    wait_until(lambda: b_shows(SECRET), 10, "replica b to show the unmarked example")

    second = report(a, "by-messages-2", text=SECRET, tenant="acme", model="mid", contains_pii=True)
    assert second.example_id == first.example_id  # the same example, now marked
    mine = neighbour(ask(a, LATER, tenant="acme"), first.example_id)
    assert (mine.text_snippet, mine.contains_pii) == ("", True)
    assert sorted((o.model, o.count) for o in mine.outcomes) == [("mid", 1), ("small", 1)]
    wait_until(lambda: b_shows(""), 10, "replica b to withhold the marked example")

    third = report(a, "by-messages-3", text=SECRET, tenant="acme", model="small")
    assert third.example_id == first.example_id
    assert neighbour(ask(a, LATER, tenant="acme"), first.example_id).contains_pii
    with a.app.store.read() as session:
        example = session.get(ExampleRow, first.example_id)
        assert example is not None and example.contains_pii
        tombstones = session.scalars(
            select(TombstoneRow.example_id).where(TombstoneRow.example_id == first.example_id)
        ).all()
        assert tombstones == [first.example_id]  # marked once; the example stays

    # CheckIndex holds a replica's mark to the store's, like a label.
    def b_agrees() -> bool:
        checks = check_indexes(b.app.store, b.app.directory, b.app.registry, "default")
        return all(c.consistent for c in checks)

    wait_until(b_agrees, 10, "replica b to read the third outcome")
    b.app.registry.get("default").revise_facts(
        first.example_id, lambda f: replace(f, contains_pii=False)
    )
    (check,) = check_indexes(b.app.store, b.app.directory, b.app.registry, "default")
    assert check.stale_labels == [first.example_id]


def test_a_marked_query_never_reaches_the_decision_log(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, decision_log=str(log), log_query_text=True)
    marked = ask(served, SECRET, tenant="acme", contains_pii=True)
    plain = ask(served, PLAIN, tenant="acme")
    lines = {r["decision_id"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert lines[plain.decision_id]["query"] == PLAIN
    assert lines[plain.decision_id]["contains_pii"] is False
    assert "query" not in lines[marked.decision_id]
    assert lines[marked.decision_id]["contains_pii"] is True
    assert "078-05" not in log.read_text()


def test_a_text_marked_once_stays_out_of_the_log_when_a_later_request_omits_the_mark(
    db_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """Black-box review 3, finding 9: a text reported with contains_pii, decided again
    without the mark, was logged in full. Its nearest neighbour is its own marked example, so
    the server knows: the decision line, a refused line and the decision row treat it as
    marked, for any tenant. Its routing still follows the request's own mark (the caller did
    not ask for on-prem models), and a text that is only similar is logged as before."""
    log = tmp_path / "decisions.jsonl"
    served = serve(db_url, routes_dir=POLICY_ROUTES, decision_log=str(log), log_query_text=True)
    marked = report(served, "pii-1", text=SECRET, tenant="acme", model="small", contains_pii=True)
    assert marked.example_id

    again = ask(served, SECRET, tenant="acme")
    other = ask(served, SECRET, tenant="globex")
    similar = ask(served, LATER, tenant="acme")
    with pytest.raises(grpc.RpcError) as refused:  # a free tenant may not override to frontier
        ask(served, SECRET, tenant="tiny", model_override="frontier")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by_id = {r["decision_id"]: r for r in lines if "decision_id" in r}
    for decided in (again, other):
        assert "query" not in by_id[decided.decision_id]
        assert by_id[decided.decision_id]["contains_pii"] is True
        # Routed as asked: no on-prem requirement came from the example's mark.
        assert "required_tags" not in [e.rule for e in decided.policy]
    assert by_id[similar.decision_id]["query"] == LATER  # similar, not the same text
    assert by_id[similar.decision_id]["contains_pii"] is False
    [refusal] = [r for r in lines if "refused" in r]
    assert refusal["contains_pii"] is True and "query" not in refusal
    assert "078-05" not in log.read_text()
    marked_request = ask(served, SECRET, tenant="acme", contains_pii=True)
    assert "required_tags" in [e.rule for e in marked_request.policy]

    served.app.decision_writer.flush()
    with served.app.store.read() as session:
        for decided in (again, other):
            row = session.get(DecisionRow, decided.decision_id)
            assert row is not None and row.contains_pii  # an example it makes is marked too
        row = session.get(DecisionRow, similar.decision_id)
        assert row is not None and not row.contains_pii


def test_a_decisions_text_is_cleared_after_the_window_and_its_outcome_still_counts(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """Past decision_text_hours a decision keeps its hash, not its text. An outcome reported
    then is recorded and charged; it joins the query's history example when one exists (the
    example holds the text) and otherwise teaches nothing, and says so."""
    served = serve(db_url, routes_dir=POLICY_ROUTES, decision_text_hours=1)
    lone = ask(served, SECRET, tenant="acme", contains_pii=True)
    known = ask(served, PLAIN, tenant="acme")
    first = report(served, "known-1", decision_id=known.decision_id, model=known.model)
    served.app.decision_writer.flush()
    with served.app.store.read() as session:
        texts = dict(session.execute(select(DecisionRow.id, DecisionRow.query_text)).all())
    assert texts == {lone.decision_id: SECRET, known.decision_id: PLAIN}

    sweeper = served.app.text_sweeper
    assert sweeper.sweep() == 0  # an hour has not passed
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(hours=1, minutes=1)) == 2
    with served.app.store.read() as session:
        rows = {r.id: r for r in session.scalars(select(DecisionRow))}
    assert {r.query_text for r in rows.values()} == {None}
    assert rows[lone.decision_id].query_hash == text_hash(
        SECRET
    )  # a late outcome finds its example

    late = report(served, "lone-1", decision_id=lone.decision_id, model=lone.model)
    assert (late.text_expired, late.example_id, late.duplicate) == (True, 0, False)
    assert late.cost_usd > 0  # charged all the same: Decide's own estimate
    assert late.cost_usd == pytest.approx(lone.estimated_cost_usd)
    again = report(served, "known-2", decision_id=known.decision_id, model=known.model)
    assert (again.text_expired, again.example_id) == (False, first.example_id)
    assert neighbour(ask(served, PLAIN, tenant="acme"), first.example_id).outcomes[0].count == 2

    with served.app.store.read() as session:
        stored = session.scalars(select(OutcomeRow).where(OutcomeRow.outcome_id == "lone-1")).one()
        assert (stored.example_id, stored.decision_id, stored.tenant) == (
            None,
            lone.decision_id,
            "acme",
        )
        assert not session.scalars(select(ExampleRow).where(ExampleRow.text == SECRET)).all()
        namespace_id = rows[lone.decision_id].namespace_id
        spent = tenant_spend(session, namespace_id, "acme", 1)
    assert spent == pytest.approx(late.cost_usd + first.cost_usd + again.cost_usd)
    (acme,) = routing_stats(served.app.store, 1, "default").by_tenant
    assert (acme.key, acme.outcomes) == ("acme", 3)
    # A retry of the late report reads back what was recorded.
    replayed = report(served, "lone-1", decision_id=lone.decision_id, model=lone.model)
    assert (replayed.duplicate, replayed.example_id, replayed.cost_usd) == (True, 0, late.cost_usd)


def test_with_no_hours_a_decisions_text_never_reaches_the_store(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, decision_text_hours=0)
    decided = ask(served, SECRET, tenant="acme")
    served.app.decision_writer.flush()
    with served.app.store.read() as session:
        row = session.get(DecisionRow, decided.decision_id)
        assert row is not None and row.query_text is None and row.query_hash == text_hash(SECRET)
    late = report(served, "late-1", decision_id=decided.decision_id, model=decided.model)
    assert late.text_expired and late.example_id == 0


def test_an_older_snapshot_without_marks_takes_them_from_the_store(
    sqlite_url: str,
    serve: Callable[..., Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot an older routebook wrote (format 2, no marks: a replica not yet upgraded
    reindexed) must not bring a marked example's text back on the server that loads it."""
    first = serve(sqlite_url, routes_dir=POLICY_ROUTES)
    decided = ask(first, SECRET, tenant="acme", contains_pii=True)
    marked = report(first, "pii-1", decision_id=decided.decision_id, model=decided.model)
    older = {k: v for k, v in facts_file._DTYPES.items() if k != "contains_pii"}
    with monkeypatch.context() as patch:  # the snapshot writer as format 2 had it
        patch.setattr(facts_file, "_DTYPES", older)
        patch.setattr(snap, "FORMAT_VERSION", 2)
        job = first.app.reindexer.start("default", None)
        assert first.app.reindexer.run(job, "default", None).generation == 1
    (path,) = (tmp_path / "snapshots").glob("store-*/default/gen-00000001")
    assert json.loads((path / "meta.json").read_text())["format_version"] == 2

    second = serve(sqlite_url, routes_dir=POLICY_ROUTES)
    assert second.app.registry.get("default").generation == 1  # loaded from that snapshot
    mine = neighbour(ask(second, LATER, tenant="acme"), marked.example_id)
    assert (mine.text_snippet, mine.contains_pii) == ("", True)


# -- the sweep, on the store alone ------------------------------------------------------------


def test_the_sweep_clears_old_texts_in_batches_and_only_those(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    store = Store(engine)
    writer = DecisionWriter(store, flush_interval=60, max_batch=5000)
    try:
        with store.write() as session:
            namespace_id = ensure_namespace(session, "sweep").id

        def write(count: int, text: str) -> None:
            for i in range(count):
                writer.add(
                    PendingDecision(
                        id=f"{text}-{i}",
                        namespace_id=namespace_id,
                        query_hash=text_hash(text),
                        query_text=text,
                        tenant="acme",
                        strategy="semantic",
                        model="small",
                        estimated_cost_usd=0.001,
                    )
                )
            writer.flush()

        write(2500, "old")
        cut = datetime.now(UTC)
        write(300, "new")
        sweeper = DecisionTextSweeper(store, hours=1, batch=1000)
        in_an_hour = cut + timedelta(hours=1)
        assert sweeper.sweep(now=in_an_hour) == 2500
        assert sweeper.sweep(now=in_an_hour) == 0

        def texts() -> dict[str | None, int]:
            with store.read() as session:
                counted = session.execute(
                    select(DecisionRow.query_text, func.count()).group_by(DecisionRow.query_text)
                ).all()
            return {text: int(n) for text, n in counted}

        assert texts() == {None: 2500, "new": 300}
        assert sweeper.sweep(now=datetime.now(UTC) + timedelta(hours=2)) == 300
        assert texts() == {None: 2800}
        with store.read() as session:
            assert session.scalar(select(func.count()).select_from(DecisionRow)) == 2800
    finally:
        writer.close()
        engine.dispose()
