"""Outcomes: what a model achieved on a query, idempotent on the client's outcome_id.

`write_outcomes` stores a batch of outcomes in the caller's transaction with a fixed number of
statements whatever the batch size (find the outcome ids already stored, create the new
history examples and find the known ones, insert the outcomes, read older examples' means), so
a group commit of many outcomes costs about what one did. (Two more, rarely: marking a known
example `contains_pii`.) RecordOutcome is the hottest write
path, so its statements are built once, here, and run on the Core connection: building a
select and its cache key per call cost more CPU than the database took to answer it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

from sqlalchemy import Connection, Table, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from routebook.domain import Source
from routebook.store.tables import DecisionRow, ExampleRow, OutcomeRow, TombstoneRow

Means = tuple[tuple[str, float, int], ...]

_EXAMPLES = cast(Table, ExampleRow.__table__)
_OUTCOMES = cast(Table, OutcomeRow.__table__)
_DECISIONS = cast(Table, DecisionRow.__table__)
_TOMBSTONES = cast(Table, TombstoneRow.__table__)
_examples, _outcomes, _decisions = _EXAMPLES.c, _OUTCOMES.c, _DECISIONS.c
_HISTORY = Source.HISTORY.value

_DECISION_SUBJECT = (
    select(
        _decisions.namespace_id,
        # The decision's own copy of the text until it is cleared (decision_text_hours), then
        # the history example's, when an outcome made one.
        func.coalesce(_decisions.query_text, _examples.text),
        _decisions.tenant,
        _decisions.model,
        _examples.id,
        _decisions.estimated_cost_usd,
        _decisions.offered,
        _decisions.input_tokens,
        _decisions.output_tokens,
        _decisions.contains_pii,
    )
    .select_from(
        _DECISIONS.outerjoin(
            _EXAMPLES,
            and_(
                _examples.namespace_id == _decisions.namespace_id,
                _examples.source == _HISTORY,
                _examples.text_hash == _decisions.query_hash,
            ),
        )
    )
    .where(_decisions.id == bindparam("decision_id"))
)
_HISTORY_EXAMPLE = select(_examples.id).where(
    _examples.namespace_id == bindparam("namespace_id"),
    _examples.source == _HISTORY,
    _examples.text_hash == bindparam("text_hash"),
)
_STORED_OUTCOMES = select(
    _outcomes.outcome_id,
    _outcomes.example_id,
    _outcomes.namespace_id,
    _outcomes.quality,
    _outcomes.cost_usd,
).where(_outcomes.outcome_id.in_(bindparam("outcome_ids", expanding=True)))
_HISTORY_EXAMPLES = select(
    _examples.namespace_id, _examples.text_hash, _examples.id, _examples.contains_pii
).where(
    _examples.namespace_id.in_(bindparam("namespace_ids", expanding=True)),
    _examples.source == _HISTORY,
    _examples.text_hash.in_(bindparam("text_hashes", expanding=True)),
)
# New history examples; a text stored meanwhile (by another replica) is skipped, not an error,
# and then found by the select that follows.
_INSERT_EXAMPLES = {
    name: dialect_insert(_EXAMPLES)
    .values(source=_HISTORY, route=None, best_model=None)
    .on_conflict_do_nothing()
    .returning(_examples.namespace_id, _examples.text_hash, _examples.id)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_INSERT_OUTCOMES = insert(_OUTCOMES)
# A history example a report marked `contains_pii` after it was made without the mark; the
# tombstone makes replicas read its facts again (as for a relabel).
_MARK_PII = (
    update(_EXAMPLES)
    .where(_examples.id.in_(bindparam("example_ids", expanding=True)))
    .values(contains_pii=True)
)
_INSERT_TOMBSTONES = insert(_TOMBSTONES)
_MEANS = (
    select(
        _outcomes.example_id,
        _outcomes.model,
        func.avg(_outcomes.quality),
        func.count(_outcomes.id),
    )
    .where(_outcomes.example_id.in_(bindparam("example_ids", expanding=True)))
    .group_by(_outcomes.example_id, _outcomes.model)
)


@dataclass(frozen=True, slots=True)
class DecisionSubject:
    """What an outcome by decision id is about, and its text's history example if stored."""

    namespace_id: int
    #: None when the decision's text was cleared and no history example holds it.
    query_text: str | None
    tenant: str | None
    model: str
    example_id: int | None
    #: What Decide estimated a call to `model` would cost (the whole conversation's tokens).
    estimated_cost_usd: float
    #: The models the decision offered, space-separated (None: written before they were kept).
    offered: str | None
    #: Decide's estimated input and output tokens for the call (None: written before they
    #: were kept).
    input_tokens: int | None
    output_tokens: int | None
    #: The request was marked `contains_pii`.
    contains_pii: bool


@dataclass(frozen=True, slots=True)
class NewOutcome:
    """One outcome to store, with the history example (namespace, text) it is about.

    `embedding` is given when the caller found no such example: it is needed to create one.
    `text` and `text_hash` are None when the query's text is gone (a decision past
    `decision_text_hours` whose query has no example): the outcome is then stored alone, as
    spend, about no example. `contains_pii` marks the example (made now or before).
    """

    outcome_id: str
    namespace_id: int
    text: str | None
    text_hash: str | None
    tenant: str | None
    embedding: bytes | None
    embedding_model: str
    decision_id: str | None
    model: str
    quality: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float | None
    contains_pii: bool = False


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """What the store holds for an outcome_id after the write.

    For a duplicate (the outcome_id was stored before, or earlier in the same batch) these are
    the first write's values, and `means` is empty. Otherwise `means` is the example's
    [(model, mean quality, count)] including this outcome, as the transaction saw it.
    """

    outcome_id: str
    #: None for a duplicate whose example was deleted since (the outcome itself stays), or
    #: for an outcome stored without a text (see NewOutcome).
    example_id: int | None
    namespace_id: int
    duplicate: bool
    quality: float
    cost_usd: float
    means: Means = ()
    #: The example is marked `contains_pii` (after this write); False for a duplicate.
    contains_pii: bool = False


class ExampleVanished(Exception):
    """The history example the caller found is gone (deleted meanwhile); look again, embed."""


def decision_subject(connection: Connection, decision_id: str) -> DecisionSubject | None:
    """The decision and its text's history example in one query (a decision's query_hash is
    the text_hash of its query text)."""
    row = connection.execute(_DECISION_SUBJECT, {"decision_id": decision_id}).one_or_none()
    # tuple(): SQLAlchemy types a row of ten or more columns as ten plus any number more.
    return None if row is None else DecisionSubject(*tuple(row))


def history_example_id(connection: Connection, namespace_id: int, text_hash: str) -> int | None:
    return connection.scalar(
        _HISTORY_EXAMPLE, {"namespace_id": namespace_id, "text_hash": text_hash}
    )


def write_outcomes(connection: Connection, batch: Sequence[NewOutcome]) -> list[StoredOutcome]:
    """Store each new outcome_id once, creating history examples as needed; one result per
    item, in order. A concurrent writer storing the same outcome_id or example first makes an
    insert raise IntegrityError (the transaction is then to be rolled back and retried)."""
    stored = _stored_outcomes(connection, list(dict.fromkeys(o.outcome_id for o in batch)))
    fresh: dict[str, NewOutcome] = {}
    for outcome in batch:
        if outcome.outcome_id not in stored:
            fresh.setdefault(outcome.outcome_id, outcome)  # the first of a repeated id wins
    if fresh:
        # Rows go in key order, so two batches committing at once on PostgreSQL wait for each
        # other's unique keys in the same order and never deadlock.
        outcomes = sorted(fresh.values(), key=lambda o: o.outcome_id)
        about = [o for o in outcomes if o.text_hash is not None]
        example_ids, created, marked = (
            _history_examples(connection, about) if about else ({}, set(), set())
        )
        connection.execute(
            _INSERT_OUTCOMES,
            [
                {
                    "outcome_id": o.outcome_id,
                    "namespace_id": o.namespace_id,
                    "example_id": _example_of(o, example_ids),
                    "decision_id": o.decision_id,
                    "tenant": o.tenant,
                    "model": o.model,
                    "quality": o.quality,
                    "input_tokens": o.input_tokens,
                    "output_tokens": o.output_tokens,
                    "cost_usd": o.cost_usd,
                    "latency_ms": o.latency_ms,
                }
                for o in outcomes
            ],
        )
        means = _means_after(connection, about, example_ids, created)
        for o in outcomes:
            example_id = _example_of(o, example_ids)
            stored[o.outcome_id] = StoredOutcome(
                outcome_id=o.outcome_id,
                example_id=example_id,
                namespace_id=o.namespace_id,
                duplicate=False,
                quality=o.quality,
                cost_usd=o.cost_usd,
                means=tuple(means.get(example_id, ())) if example_id is not None else (),
                contains_pii=example_id in marked,
            )
    results: list[StoredOutcome] = []
    answered: set[str] = set()
    for outcome in batch:
        first = stored[outcome.outcome_id]
        if outcome.outcome_id in answered and not first.duplicate:
            first = replace(first, duplicate=True, means=())  # a repeat within the batch
        answered.add(outcome.outcome_id)
        results.append(first)
    return results


def _stored_outcomes(connection: Connection, outcome_ids: list[str]) -> dict[str, StoredOutcome]:
    rows = connection.execute(_STORED_OUTCOMES, {"outcome_ids": outcome_ids}).all()
    return {
        outcome_id: StoredOutcome(outcome_id, example_id, namespace_id, True, quality, cost)
        for outcome_id, example_id, namespace_id, quality, cost in rows
    }


def _key(outcome: NewOutcome) -> tuple[int, str]:
    """The (namespace id, text hash) of an outcome's history example; it has a text."""
    assert outcome.text_hash is not None
    return outcome.namespace_id, outcome.text_hash


def _example_of(outcome: NewOutcome, example_ids: dict[tuple[int, str], int]) -> int | None:
    return None if outcome.text_hash is None else example_ids[_key(outcome)]


def _history_examples(
    connection: Connection, outcomes: list[NewOutcome]
) -> tuple[dict[tuple[int, str], int], set[int], set[int]]:
    """(namespace id, text hash) → history example id for every outcome, creating the missing
    examples (one per text, however many outcomes share it); the ids created; and the ids
    marked `contains_pii` once this transaction commits.

    An outcome carries a vector when its caller found no example, so those texts are inserted
    straight away and only the others (and any inserted meanwhile by another writer) are
    looked up: the usual batch of new texts costs one statement, not two. A text any outcome
    of the batch marks is created marked; a known example it marks is marked now (rare: a
    text reported unmarked before), with a tombstone so replicas read its facts again.
    """
    wanted = {_key(o) for o in outcomes}
    pii = {_key(o) for o in outcomes if o.contains_pii}
    carriers: dict[tuple[int, str], NewOutcome] = {}
    for o in outcomes:
        if o.embedding is not None:
            carriers.setdefault(_key(o), o)
    found: dict[tuple[int, str], int] = {}
    if carriers:
        inserted = connection.execute(
            _INSERT_EXAMPLES[connection.dialect.name],
            [
                {
                    "namespace_id": o.namespace_id,
                    "text": o.text,
                    "text_hash": o.text_hash,
                    "embedding": o.embedding,
                    "embedding_model": o.embedding_model,
                    "tenant": o.tenant,
                    "contains_pii": key in pii,
                }
                for key, o in sorted(carriers.items())
            ],
        ).all()
        found = {(n, h): i for n, h, i in inserted}
    created = set(found.values())
    marked = {i for key, i in found.items() if key in pii}
    rest = wanted - found.keys()
    if rest:
        rows = connection.execute(
            _HISTORY_EXAMPLES,
            {
                "namespace_ids": sorted({n for n, _ in rest}),
                "text_hashes": sorted({h for _, h in rest}),
            },
        ).all()
        for n, h, i, is_marked in rows:
            if (n, h) in rest:
                found[n, h] = i
                if is_marked:
                    marked.add(i)
    if found.keys() != wanted:
        raise ExampleVanished()  # an example a caller found was deleted before this commit
    unmarked = sorted((key, found[key]) for key in pii if found[key] not in marked)
    if unmarked:
        connection.execute(_MARK_PII, {"example_ids": [i for _, i in unmarked]})
        connection.execute(
            _INSERT_TOMBSTONES, [{"namespace_id": n, "example_id": i} for (n, _), i in unmarked]
        )
        marked.update(i for _, i in unmarked)
    return found, created, marked


def _means_after(
    connection: Connection,
    outcomes: list[NewOutcome],
    example_ids: dict[tuple[int, str], int],
    created: set[int],
) -> dict[int, list[tuple[str, float, int]]]:
    """Each example's [(model, mean quality, count)] now. An example created in this
    transaction has only this batch's outcomes, so only older examples cost a query."""
    means: dict[int, list[tuple[str, float, int]]] = {}
    older = sorted(set(example_ids.values()) - created)
    if older:
        for example_id, model, mean, count in connection.execute(_MEANS, {"example_ids": older}):
            means.setdefault(example_id, []).append((model, float(mean), int(count)))
    sums: dict[int, dict[str, tuple[float, int]]] = {}
    for o in outcomes:
        example_id = example_ids[_key(o)]
        if example_id in created:
            total, count = sums.setdefault(example_id, {}).get(o.model, (0.0, 0))
            sums[example_id][o.model] = (total + o.quality, count + 1)
    for example_id, by_model in sums.items():
        means[example_id] = [(m, t / c, c) for m, (t, c) in by_model.items()]
    for entries in means.values():
        entries.sort()
    return means
