"""Reference examples: route-file sync as a diff by content hash, and the admin's upsert,
delete and list. History examples (learned from outcomes) are never touched by a sync.

Writes commit to the store and then ask the follower to catch this server's index up at once;
other replicas catch up on their own within a second. New texts are embedded before the write,
outside every lock, and committed with their vectors: catching an index up to them (under the
follower's lock, on every replica) then only reads the vectors back, so a bulk load never
holds up the follower, nor the admin writes that wait for it, for its embedding time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from routebook.domain import Source
from routebook.errors import InvalidArgument, Unavailable
from routebook.routefiles import NAME_PATTERN, RouteFile, text_hash
from routebook.service.follower import StoreFollower
from routebook.service.indexing import IndexBuilder
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.store import examples as ex_store
from routebook.store import namespaces as ns_store
from routebook.store.db import Store, is_unique_violation
from routebook.store.tables import ExampleRow

log = logging.getLogger("routebook.examples")

MAX_BATCH = 10_000
MAX_PAGE = 1000
#: Ids one DeleteExamples call may name: one statement's bind parameters stay well within
#: what SQLite and PostgreSQL accept.
MAX_DELETE_IDS = 10_000
#: Tries of one upsert batch that meets a concurrent insert of the same text.
UPSERT_ATTEMPTS = 3


#: Vectors in their stored form, by text hash.
Vectors = dict[str, bytes]

#: Where a reference example came from (ExampleRow.origin).
ROUTE_FILE = "routefile"
ADMIN = "admin"


@dataclass(slots=True)
class SyncReport:
    """What a sync did (or, on a dry run, would do) to one namespace."""

    namespace: str
    path: Path | None = None
    created_namespace: bool = False
    catalog_changed: bool = False
    policy_changed: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class ExampleInput:
    text: str
    route: str | None
    best_model: str


@dataclass(slots=True)
class UpsertResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    example_ids: list[int] = field(default_factory=list)

    def merge(self, other: UpsertResult) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.example_ids.extend(other.example_ids)


class ExampleService:
    def __init__(
        self,
        store: Store,
        directory: NamespaceDirectory,
        follower: StoreFollower,
        builder: IndexBuilder,
        max_text_chars: int,
    ) -> None:
        self._store = store
        self._directory = directory
        self._follower = follower
        self._builder = builder
        self._max_text_chars = max_text_chars

    # -- route files ----------------------------------------------------------------------

    def sync_routes(
        self,
        files: Sequence[tuple[Path | None, RouteFile]],
        *,
        prune: bool = False,
        together: bool = False,
    ) -> list[SyncReport]:
        """Every file is parsed and validated before this is called; each namespace is then
        written in one transaction, so a failure leaves nothing half-applied. `together`: all
        of them in one transaction (a first start's load: a start killed half-way must not
        leave some namespaces in the store, which would then count as loaded). A dry run is
        `preview_sync`, which needs no service."""
        vectors = self._embed_new_route_texts([rf for _, rf in files])

        def give(row: ExampleRow) -> None:
            self._give_vector(row, vectors)

        if together:
            with self._store.write() as session:
                reports = [_sync_one(path, rf, session, give, prune=prune) for path, rf in files]
        else:
            reports = []
            for path, route_file in files:
                with self._store.write() as session:
                    reports.append(_sync_one(path, route_file, session, give, prune=prune))
        self._refresh({r.namespace for r in reports})
        return reports

    def _embed_new_route_texts(self, files: Sequence[RouteFile]) -> Vectors:
        """`_embed_new` for every namespace the files name (one that does not exist yet has
        no vectors cached)."""
        vectors: Vectors = {}
        for route_file in files:
            with self._store.read() as session:
                row = ns_store.get_namespace(session, route_file.namespace)
            texts = {e.text_hash: e.text for e in route_file.reference_examples()}
            vectors.update(self._embed_new(None if row is None else row.id, texts, vectors))
        return vectors

    # -- admin ----------------------------------------------------------------------------

    def upsert(self, namespace: str, items: Sequence[ExampleInput]) -> UpsertResult:
        info = self._directory.resolve(namespace)
        if not items:
            raise InvalidArgument("examples is empty: send at least one example")
        if len(items) > MAX_BATCH:
            raise InvalidArgument(
                f"{len(items)} examples in one request; at most {MAX_BATCH} (stream larger loads)"
            )
        cleaned = [
            self._check(info.catalog.names, position, item) for position, item in enumerate(items)
        ]
        vectors = self._embed_new(info.id, {text_hash(item.text): item.text for item in cleaned})
        for attempt in range(UPSERT_ATTEMPTS):
            try:
                result = self._upsert_once(info, cleaned, vectors)
                break
            except IntegrityError as exc:
                # Another writer added one of these texts between our read and our insert (two
                # overlapping loads, or a retry while the first try was committing). Its row is
                # committed now: read again, and it is "unchanged" or "updated".
                if not is_unique_violation(exc):
                    raise
                if attempt == UPSERT_ATTEMPTS - 1:
                    raise Unavailable(
                        "other writers kept adding the same examples at the same time; "
                        "nothing of this batch was written, retry it"
                    ) from None
        self._index_committed(info)
        return result

    def _upsert_once(
        self, info: NamespaceInfo, cleaned: list[ExampleInput], vectors: Vectors
    ) -> UpsertResult:
        result = UpsertResult()
        # A text given twice is one example: the last label wins, every position gets its id.
        latest = {text_hash(item.text): item for item in cleaned}
        rows: dict[str, ExampleRow] = {}
        with self._store.write() as session:
            present = ex_store.reference_examples_by_hash(session, info.id, list(latest))
            for h, item in latest.items():
                existing = present.get(h)
                if existing is None:
                    # Inserted together at the end (one batched INSERT): a row-by-row flush kept
                    # a 10k-row transaction open for long.
                    row = _reference_row(info.id, h, item, ADMIN)
                    self._give_vector(row, vectors)
                    session.add(row)
                    result.added += 1
                elif (existing.route, existing.best_model) != (item.route, item.best_model):
                    row = ex_store.relabel_reference(
                        session, existing, item.route, item.best_model, ADMIN
                    )
                    self._give_vector(row, vectors)
                    result.updated += 1
                else:
                    row = existing
                    self._give_vector(row, vectors)
                    result.unchanged += 1
                rows[h] = row
            session.flush()
            result.example_ids = [rows[text_hash(item.text)].id for item in cleaned]
        return result

    def _embed_new(
        self, namespace_id: int | None, texts: dict[str, str], known: Vectors | None = None
    ) -> Vectors:
        """Vectors (stored form, by text hash) of those `texts` (by hash) whose reference
        example has no vector of this model cached, nor one in `known`: embedded here, before
        the write transaction and outside every lock. The write then reads the rows afresh
        and decides on those alone; a vector only follows its text, whatever happened to the
        example meanwhile (a text has the same vector in any row)."""
        cached: set[str] = set()
        if namespace_id is not None:
            with self._store.read() as session:
                cached = ex_store.hashes_with_vector(
                    session, namespace_id, list(texts), self._builder.model_id
                )
        wanted = [h for h in texts if h not in cached and h not in (known or {})]
        if not wanted:
            return {}
        embedded = self._builder.embed([texts[h] for h in wanted])
        return {h: ex_store.vector_bytes(v) for h, v in zip(wanted, embedded, strict=True)}

    def _give_vector(self, row: ExampleRow, vectors: Vectors) -> None:
        """Give `row` the vector made for its text, unless it has one of this model: a new
        row, or one another writer inserted or relabelled after `_embed_new` looked."""
        vector = vectors.get(row.text_hash)
        if vector is not None and (
            row.embedding is None or row.embedding_model != self._builder.model_id
        ):
            row.embedding, row.embedding_model = vector, self._builder.model_id

    def _index_committed(self, info: NamespaceInfo) -> None:
        """Bring this server's index up to a write that is committed. If the store goes away
        in between, the write still stands: it is acknowledged, and the follower's next tick
        brings the index up to it (an error here would tell the client nothing was changed).
        The same goes for any other failure of the catch-up: it is logged, and retried by the
        follower every tick."""
        try:
            self._follower.catch_up(info)
        except OperationalError as exc:
            log.warning(
                "namespace %r: committed, the index catches up when the store answers: %s",
                info.name,
                exc.orig,
            )
        except Exception:
            log.exception("namespace %r: committed, but catching the index up failed", info.name)

    def _check(self, catalog: Sequence[str], position: int, item: ExampleInput) -> ExampleInput:
        text = item.text.strip()
        where = f"examples[{position}]"
        if not text:
            raise InvalidArgument(f"{where}.text is empty")
        if "\x00" in text:
            raise InvalidArgument(f"{where}.text contains a NUL character")
        if len(text) > self._max_text_chars:
            raise InvalidArgument(
                f"{where}.text has {len(text)} characters; the limit is {self._max_text_chars}"
            )
        if item.best_model not in catalog:
            raise InvalidArgument(
                f"{where}.best_model {item.best_model!r} is not in the catalog "
                f"({', '.join(catalog)})"
            )
        route = (item.route or "").strip() or None
        if route is not None and not re.match(NAME_PATTERN, route):
            raise InvalidArgument(
                f"{where}.route {route[:40]!r}: use letters, digits and _ . : - (at most 128)"
            )
        return ExampleInput(text, route, item.best_model)

    def delete(self, namespace: str, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(deleted ids, ids that were not examples of this namespace)."""
        info = self._directory.resolve(namespace)
        if not ids:
            raise InvalidArgument("example_ids is empty")
        unique = list(dict.fromkeys(ids))
        if len(unique) > MAX_DELETE_IDS:
            raise InvalidArgument(
                f"example_ids holds {len(unique)} ids; delete at most {MAX_DELETE_IDS} per call"
            )
        with self._store.write() as session:
            deleted = ex_store.delete_examples(session, info.id, unique)
        self._index_committed(info)
        gone = set(deleted)
        return deleted, [i for i in unique if i not in gone]

    def list(
        self, namespace: str, flt: ex_store.ExampleFilter, page_size: int, page_token: str
    ) -> tuple[list[ExampleRow], dict[int, list[tuple[str, float, int]]], str]:
        info = self._directory.resolve(namespace)
        size = page_size or 100
        if not 1 <= size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be 1 to {MAX_PAGE}, got {page_size}")
        try:
            after = int(page_token) if page_token else 0
            if not 0 <= after < 2**63:
                raise ValueError(page_token)
        except ValueError:
            raise InvalidArgument(
                "page_token is not one this server gave out; pass next_page_token as it came"
            ) from None
        with self._store.read() as session:
            rows = ex_store.list_examples(session, info.id, flt, after, size + 1)
            page = rows[:size]
            means = ex_store.outcome_means(session, example_ids=[r.id for r in page])
        token = str(page[-1].id) if len(rows) > size else ""
        return page, means, token

    def _refresh(self, namespaces: set[str]) -> None:
        for info in self._directory.refresh():
            if info.name in namespaces:
                if self._follower.is_loaded(info.name):
                    self._follower.catch_up(info)
                else:
                    self._follower.load(info)


def preview_sync(
    store: Store, files: Sequence[tuple[Path | None, RouteFile]], *, prune: bool = False
) -> list[SyncReport]:
    """What `ExampleService.sync_routes` would do, from the store and the files alone: each
    namespace's sync runs in a session that is never committed (closing it rolls back). A dry
    run needs no model, no index and no service, so it builds none of them: building them
    migrated the schema, and created a store at a mistyped path."""
    reports = []
    for path, route_file in files:
        with store.read() as session:
            reports.append(_sync_one(path, route_file, session, _no_vector, prune=prune))
    return reports


class _Labelled(Protocol):
    """An admin's ExampleInput or a route file's ReferenceExample."""

    @property
    def text(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def best_model(self) -> str: ...


def _reference_row(namespace_id: int, text_hash: str, item: _Labelled, origin: str) -> ExampleRow:
    """A new reference example, from an admin's upsert or a route file."""
    return ExampleRow(
        namespace_id=namespace_id,
        text=item.text,
        text_hash=text_hash,
        route=item.route,
        source=Source.REFERENCE.value,
        best_model=item.best_model,
        origin=origin,
    )


def _no_vector(_row: ExampleRow) -> None:
    """A dry run embeds nothing."""


def _sync_one(
    path: Path | None,
    route_file: RouteFile,
    session: Session,
    give_vector: Callable[[ExampleRow], None],
    *,
    prune: bool,
) -> SyncReport:
    """Bring one namespace to its route file in `session` (committed or not by the caller);
    `give_vector` hands each kept or new example the vector made for its text."""
    report = SyncReport(namespace=route_file.namespace, path=path)
    wanted = {e.text_hash: e for e in route_file.reference_examples()}
    row = ns_store.get_namespace(session, route_file.namespace)
    report.created_namespace = row is None
    row = ns_store.ensure_namespace(session, route_file.namespace, route_file.description)
    report.catalog_changed = ns_store.replace_catalog(session, row.id, route_file.to_catalog())
    report.policy_changed = ns_store.replace_policy(row, route_file.policy.to_policy())
    # The catalog version covers the policy too: both are read together by the servers.
    if (report.catalog_changed or report.policy_changed) and not report.created_namespace:
        row.catalog_version += 1
    present = ex_store.reference_examples_by_hash(session, row.id)
    for h, example in wanted.items():
        existing = present.get(h)
        if existing is None:
            report.added.append(example.text)
            added = _reference_row(row.id, h, example, ROUTE_FILE)
            give_vector(added)
            session.add(added)
        elif (existing.route, existing.best_model) != (example.route, example.best_model):
            report.changed.append(example.text)
            fresh = ex_store.relabel_reference(
                session, existing, example.route, example.best_model, ROUTE_FILE
            )
            give_vector(fresh)
        else:
            give_vector(existing)
            report.unchanged += 1
    if prune:  # what left the files; examples added through the Admin API stay
        gone = [e for h, e in present.items() if h not in wanted and e.origin != ADMIN]
        report.removed = [e.text for e in gone]
        ex_store.delete_examples(session, row.id, [e.id for e in gone])
    return report
