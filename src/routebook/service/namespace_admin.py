"""Namespaces and their catalogs, as the admin API sees them, and per-namespace statistics."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from routebook.catalog import Catalog, out_of_bounds
from routebook.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from routebook.policyspec import models_named
from routebook.routefiles import NAME_PATTERN
from routebook.service.follower import StoreFollower
from routebook.service.namespaces import NamespaceDirectory
from routebook.store import examples as ex_store
from routebook.store import namespaces as ns_store
from routebook.store.db import Store, is_unique_violation
from routebook.store.tables import IndexGenerationRow, NamespaceRow, as_utc

log = logging.getLogger("routebook.namespaces")


@dataclass(frozen=True, slots=True)
class NamespaceView:
    name: str
    description: str
    catalog: Catalog
    catalog_version: int


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    namespace: str
    examples: int
    by_source: dict[str, int]
    by_model: dict[str, int]
    outcomes_by_model: dict[str, int]
    index_size: int
    index_generation: int
    index_kind: str
    last_reindex: str


class NamespaceAdmin:
    def __init__(
        self, store: Store, directory: NamespaceDirectory, follower: StoreFollower
    ) -> None:
        self._store = store
        self._directory = directory
        self._follower = follower

    def create(self, name: str, description: str, catalog: Catalog) -> NamespaceView:
        if not re.match(NAME_PATTERN, name):
            raise InvalidArgument(
                f"namespace name {name[:40]!r}: use letters, digits and _ . : - (at most 128)"
            )
        _check_catalog(catalog)
        exists = AlreadyExists(f"namespace {name!r} exists already; use UpdateCatalog")
        try:
            with self._store.write() as session:
                if ns_store.get_namespace(session, name) is not None:
                    raise exists
                # Always an insert: on PostgreSQL another create may have committed since the
                # check above, and only the unique name tells (a get-or-create would silently
                # replace that namespace's catalog and answer "created" twice).
                row = NamespaceRow(name=name, description=description)
                session.add(row)
                session.flush()
                ns_store.replace_catalog(session, row.id, catalog)
                session.flush()
                committed = NamespaceView(name, description, catalog, row.catalog_version)
        except IntegrityError as exc:
            if is_unique_violation(exc):  # another create of the name committed first
                raise exists from None
            raise
        return self._after_commit(committed, load=True)

    def get(self, name: str) -> NamespaceView:
        with self._store.read() as session:
            row = ns_store.get_namespace(session, name)
            if row is None:
                raise NotFound(f"namespace {name!r} does not exist")
            view = NamespaceView(
                row.name,
                row.description,
                ns_store.load_catalog(session, row.id),
                row.catalog_version,
            )
        _check_stored(view)
        return view

    def update_catalog(self, name: str, expected_version: int, catalog: Catalog) -> NamespaceView:
        _check_catalog(catalog)
        with self._store.write() as session:
            row = ns_store.get_namespace(session, name)
            if row is None:
                raise NotFound(f"namespace {name!r} does not exist")
            # Compare-and-set on the version: of two concurrent updates exactly one wins.
            bumped = session.execute(
                update(NamespaceRow)
                .where(NamespaceRow.id == row.id, NamespaceRow.catalog_version == expected_version)
                .values(catalog_version=NamespaceRow.catalog_version + 1)
            )
            if bumped.rowcount != 1:  # type: ignore[attr-defined]
                raise Aborted(
                    f"catalog of {name!r} changed since version {expected_version} (it is now "
                    f"{row.catalog_version}); read it again and reapply your change"
                )
            dangling = {
                model: where
                for model, where in models_named(ns_store.load_policy(row)).items()
                if model not in catalog
            }
            if dangling:
                listed = ", ".join(f"{m} ({w})" for m, w in sorted(dangling.items()))
                raise FailedPrecondition(
                    f"the policy of {name!r} names models this catalog drops: {listed}; keep "
                    "them, or change the policy in the route file first"
                )
            ns_store.replace_catalog(session, row.id, catalog)
            committed = NamespaceView(name, row.description, catalog, expected_version + 1)
        return self._after_commit(committed, load=False)

    def _after_commit(self, committed: NamespaceView, *, load: bool) -> NamespaceView:
        """Serve the committed change here at once and answer with it as stored. If the store
        goes away in between, the change still stands: answer with what was committed (the
        follower's next tick serves it) rather than tell the client nothing was changed."""
        try:
            for info in self._directory.refresh():
                if load and info.name == committed.name:
                    self._follower.load(info, strict=False)
            return self.get(committed.name)
        except OperationalError as exc:
            log.warning(
                "namespace %r: committed, this server serves it when the store answers: %s",
                committed.name,
                exc.orig,
            )
            return committed

    def stats(
        self, namespace: str | None, registry_size: dict[str, tuple[int, int, str]]
    ) -> list[NamespaceStats]:
        """`registry_size`: namespace → (index size, generation, kind) on this server."""
        infos = [self._directory.resolve(namespace)] if namespace else self._directory.all()
        result = []
        with self._store.read() as session:
            for info in sorted(infos, key=lambda i: i.name):
                by_source = ex_store.count_by(session, info.id, "source")
                published = session.scalars(
                    select(IndexGenerationRow.created_at)
                    .where(IndexGenerationRow.namespace_id == info.id)
                    .order_by(IndexGenerationRow.generation.desc())
                    .limit(1)
                ).one_or_none()
                size, generation, kind = registry_size.get(info.name, (0, 0, ""))
                result.append(
                    NamespaceStats(
                        namespace=info.name,
                        examples=sum(by_source.values()),
                        by_source=by_source,
                        by_model=ex_store.count_by(session, info.id, "best_model"),
                        outcomes_by_model=ex_store.outcome_counts(session, info.id),
                        index_size=size,
                        index_generation=generation,
                        index_kind=kind,
                        last_reindex=(
                            as_utc(published).isoformat() if published is not None else ""
                        ),
                    )
                )
        return result


def _check_catalog(catalog: Catalog) -> None:
    if len(catalog) == 0:
        raise InvalidArgument("the catalog is empty: give at least one model")
    for spec in catalog.models:
        if not re.match(NAME_PATTERN, spec.name):
            raise InvalidArgument(f"model name {spec.name[:40]!r} is not a valid name")
        problems = out_of_bounds(spec)
        if problems:
            raise InvalidArgument(f"model {spec.name!r}: {problems[0]}")


def _check_stored(view: NamespaceView) -> None:
    """Refuse to show a catalog stored before catalogs were bounded (a context window of 5e9,
    a price of 1e308) rather than answer INTERNAL (the contract's uint32 cannot carry some of
    it) or show other numbers than the store holds: say what is wrong and how to replace it."""
    problems = [
        f"model {spec.name!r}: {problem}"
        for spec in view.catalog.models
        for problem in out_of_bounds(spec)
    ]
    if problems:
        raise FailedPrecondition(
            f"namespace {view.name!r}: its stored catalog (version {view.catalog_version}) was "
            f"stored before catalogs were bounded and is out of bounds: {'; '.join(problems)}. "
            "Replace it: fix the route file and run `routebook routes sync`, or send "
            f"UpdateCatalog with expected_version {view.catalog_version}"
        )
