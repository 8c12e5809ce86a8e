"""`routebook check`: does this server's index agree with the store?

Differences younger than the follower's settle window can be writes still on their way; an
operator runs the check again before acting on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from routebook.index import IndexRegistry
from routebook.service.namespaces import NamespaceDirectory
from routebook.store import examples as ex_store
from routebook.store.db import Store
from routebook.store.tables import ExampleRow


@dataclass(slots=True)
class IndexCheck:
    namespace: str
    store_examples: int
    index_examples: int
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    stale_outcomes: list[int] = field(default_factory=list)
    #: Examples whose route, best model or PII mark in the index is not the store's: a
    #: relabel (or a mark) this server never applied.
    stale_labels: list[int] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not (self.missing or self.extra or self.stale_outcomes or self.stale_labels)


def check_indexes(
    store: Store,
    directory: NamespaceDirectory,
    registry: IndexRegistry,
    namespace: str | None = None,
) -> list[IndexCheck]:
    infos = [directory.resolve(namespace)] if namespace else directory.all()
    result = []
    for info in sorted(infos, key=lambda i: i.name):
        with store.read() as session:
            labels = {
                row.id: (row.route, row.best_model, bool(row.contains_pii))
                for row in session.execute(
                    select(
                        ExampleRow.id,
                        ExampleRow.route,
                        ExampleRow.best_model,
                        ExampleRow.contains_pii,
                    ).where(ExampleRow.namespace_id == info.id)
                )
            }
            means = ex_store.outcome_means(session, namespace_id=info.id)
        stored = labels.keys()
        facts = {f.example_id: f for f in registry.get(info.name).all_facts()}
        stale = [
            example_id
            for example_id, f in facts.items()
            if example_id in stored
            and sorted((o.model, round(o.mean_quality, 9), o.count) for o in f.outcomes)
            != sorted((m, round(q, 9), c) for m, q, c in means.get(example_id, []))
        ]
        result.append(
            IndexCheck(
                namespace=info.name,
                store_examples=len(stored),
                index_examples=len(facts),
                missing=sorted(stored - facts.keys()),
                extra=sorted(facts.keys() - stored),
                stale_outcomes=sorted(stale),
                stale_labels=sorted(
                    example_id
                    for example_id, f in facts.items()
                    if example_id in labels
                    and labels[example_id] != (f.route, f.best_model, f.contains_pii)
                ),
            )
        )
    return result
