"""Reference examples: syncing route files into the store as a diff by content hash.

A sync is idempotent: the same files twice change nothing the second time. History examples
(learned from outcomes) are never touched here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete

from routebook.domain import Source
from routebook.routefiles import RouteFile
from routebook.service.indexing import IndexMaintainer
from routebook.service.namespaces import NamespaceDirectory
from routebook.store import examples as ex_store
from routebook.store import namespaces as ns_store
from routebook.store.db import Store
from routebook.store.tables import ExampleRow


@dataclass(slots=True)
class SyncReport:
    """What a sync did (or, on a dry run, would do) to one namespace."""

    namespace: str
    path: Path | None = None
    created_namespace: bool = False
    catalog_changed: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def touched(self) -> bool:
        return bool(
            self.created_namespace
            or self.catalog_changed
            or self.added
            or self.changed
            or self.removed
        )


class ExampleService:
    def __init__(
        self, store: Store, directory: NamespaceDirectory, indexes: IndexMaintainer
    ) -> None:
        self._store = store
        self._directory = directory
        self._indexes = indexes

    def sync_routes(
        self,
        files: Sequence[tuple[Path | None, RouteFile]],
        *,
        dry_run: bool = False,
        prune: bool = False,
    ) -> list[SyncReport]:
        reports = []
        for path, route_file in files:
            report = self._sync_one(route_file, dry_run=dry_run, prune=prune)
            report.path = path
            reports.append(report)
        if not dry_run:
            for info in self._directory.refresh():
                if any(r.namespace == info.name and r.touched for r in reports):
                    self._indexes.rebuild(info.name, info.id)
        return reports

    def _sync_one(self, route_file: RouteFile, *, dry_run: bool, prune: bool) -> SyncReport:
        report = SyncReport(namespace=route_file.namespace)
        wanted = {e.text_hash: e for e in route_file.reference_examples()}
        # A dry run works in a session that is never committed: closing it rolls back.
        with self._store.read() if dry_run else self._store.write() as session:
            row = ns_store.get_namespace(session, route_file.namespace)
            report.created_namespace = row is None
            row = ns_store.ensure_namespace(session, route_file.namespace, route_file.description)
            catalog_changed = ns_store.replace_catalog(session, row.id, route_file.to_catalog())
            policy_changed = ns_store.replace_policy(row, route_file.policy.to_policy())
            report.catalog_changed = catalog_changed or policy_changed
            present = ex_store.reference_examples_by_hash(session, row.id)
            for h, example in wanted.items():
                existing = present.get(h)
                if existing is None:
                    report.added.append(example.text)
                    session.add(
                        ExampleRow(
                            namespace_id=row.id,
                            text=example.text,
                            text_hash=h,
                            route=example.route,
                            source=Source.REFERENCE.value,
                            best_model=example.best_model,
                        )
                    )
                elif (existing.route, existing.best_model) != (example.route, example.best_model):
                    report.changed.append(example.text)
                    existing.route = example.route
                    existing.best_model = example.best_model
                else:
                    report.unchanged += 1
            if prune:
                gone = [e for h, e in present.items() if h not in wanted]
                report.removed = [e.text for e in gone]
                if gone:
                    session.execute(
                        delete(ExampleRow).where(ExampleRow.id.in_([e.id for e in gone]))
                    )
        return report
