"""Swapping index generations: what a swap must keep, and which snapshots a server may trust."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from routebook.domain import Message, OutcomeReport
from routebook.index.snapshot import store_folder
from routebook.service.examples import ExampleInput
from routebook.service.follower import SNAPSHOT_READ_ATTEMPTS
from routebook.service.requests import DecideQuery
from routebook.store.identity import store_id
from routebook.store.tables import ExampleRow, IndexGenerationRow
from routebook.wiring import App

QUERY = "how do I migrate a postgres 12 cluster to 16 with zero downtime"


def outcome(outcome_id: str) -> OutcomeReport:
    return OutcomeReport(outcome_id, "frontier", 1.0, messages=(Message("user", QUERY),))


def test_a_delete_survives_a_generation_swap_before_an_outcome_indexes_its_example(
    db_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RecordOutcome commits, then indexes. If meanwhile its example is deleted and a
    generation built after the delete is swapped in, the new index never removed the example
    itself; it must still refuse it (it used to serve the deleted query until a restart)."""
    app = make_app(db_url, follow_interval_seconds=3600)  # the test ticks the follower itself
    example = app.outcomes.record_outcome(outcome("o-1")).example_id
    assert example in app.registry.get("default")
    committed, go_on = threading.Event(), threading.Event()
    index_example = app.outcomes._index_example

    def paused_after_the_commit(*args: Any, **kwargs: Any) -> None:
        committed.set()
        assert go_on.wait(60)
        index_example(*args, **kwargs)

    monkeypatch.setattr(app.outcomes, "_index_example", paused_after_the_commit)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(app.outcomes.record_outcome, outcome("o-2"))
        assert committed.wait(60)
        assert app.examples.delete("default", [example])[0] == [example]
        job = app.reindexer.start("default", None)
        assert app.reindexer.run(job, "default", None).generation == 1
        app.follower.tick()
        assert app.registry.get("default").generation == 1  # swapped in, without the example
        go_on.set()
        assert second.result(60).example_id == example
    assert example not in app.registry.get("default")
    decided = app.routing.decide(DecideQuery(messages=(Message("user", QUERY),)))
    assert example not in [n.facts.example_id for n in decided.choice.neighbours]


# --------------------------------------------------------------------------------------------
# Whose snapshot is it?
# --------------------------------------------------------------------------------------------


def texts_of(app: App) -> set[str]:
    return {f.text for f in app.registry.get("default").all_facts()}


def store_texts(app: App) -> set[str]:
    with app.store.read() as session:
        return set(session.scalars(select(ExampleRow.text)))


def reindex(app: App, kind: str | None = None) -> int:
    status = app.reindexer.run(app.reindexer.start("default", kind), "default", kind)
    assert status.state == "succeeded"
    return status.generation


def published_path(app: App, generation: int) -> Path:
    with app.store.read() as session:
        return Path(
            session.scalars(
                select(IndexGenerationRow.snapshot_path).where(
                    IndexGenerationRow.generation == generation
                )
            ).one()
        )


def test_a_snapshot_another_store_wrote_at_the_same_path_is_not_loaded(
    db_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """Before each store had a folder of its own, two deployments with their own databases
    and one snapshot folder both published generation 1 of `default` into the same folder;
    the one restarted afterwards served the other store's examples (and lost its own). Such
    a folder, still named by the row, is refused: the server builds from its own store."""
    shared = tmp_path / "shared-snapshots"
    mine = make_app(db_url, snapshot_dir=shared)
    other = make_app(f"sqlite:///{tmp_path / 'other.db'}", snapshot_dir=shared)
    mine.examples.upsert("default", [ExampleInput("mine: reset my password", None, "small")])
    other.examples.upsert(
        "default", [ExampleInput("other: write a sonnet about tax law", None, "frontier")]
    )
    assert reindex(mine) == 1
    assert reindex(other) == 1
    ours = published_path(mine, 1)
    mine.close()
    shutil.rmtree(ours)  # what the other store's save did to it in the old layout
    shutil.copytree(published_path(other, 1), ours)

    restarted = make_app(db_url, snapshot_dir=shared)
    index = restarted.registry.get("default")
    assert texts_of(restarted) == store_texts(restarted)  # built from its own store
    assert "other: write a sonnet about tax law" not in texts_of(restarted)
    assert index.generation == 1
    with restarted.store.read() as session:
        for example in session.scalars(select(ExampleRow)):
            assert index.facts(example.id).text == example.text  # no id carries the other's


def test_two_stores_sharing_a_snapshot_folder_each_restart_from_their_own_snapshot(
    db_url: str,
    make_app: Callable[..., App],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two deployments with their own databases and one snapshot folder used to write the
    same `<namespace>/gen-…` folders: each reindex clobbered the other store's snapshot, so
    the other refused it and rebuilt from its store at every start. Each store now writes
    into a folder of its own."""
    shared = tmp_path / "shared-snapshots"
    urls = {"mine": db_url, "other": f"sqlite:///{tmp_path / 'other.db'}"}
    texts = {"mine": "mine: reset my password", "other": "other: write a sonnet about tax law"}
    for name, url in urls.items():
        app = make_app(url, snapshot_dir=shared)
        app.examples.upsert("default", [ExampleInput(texts[name], None, "small")])
        assert reindex(app, "hnsw") == 1
        app.close()

    with caplog.at_level(logging.WARNING, logger="routebook.follower"):
        restarted = {name: make_app(url, snapshot_dir=shared) for name, url in urls.items()}
    assert caplog.records == []  # both loaded their own snapshot; neither rebuilt
    for name, app in restarted.items():
        index = app.registry.get("default")
        assert (index.generation, index.kind) == (1, "hnsw")
        assert texts_of(app) == store_texts(app)
        assert texts[name] in texts_of(app)


def test_a_snapshot_published_before_store_folders_still_loads(
    db_url: str, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading: the rows of generations published before store folders name snapshots at
    `<snapshot_dir>/<namespace>/gen-…`. They load from there, without a rebuild; the next
    reindex writes into the store's own folder and leaves the old one alone."""
    app = make_app(db_url)
    assert reindex(app, "hnsw") == 1
    snapshots = Path(app.settings.snapshot_dir)
    old_place = snapshots / "default" / published_path(app, 1).name
    old_place.parent.mkdir()
    published_path(app, 1).rename(old_place)
    with app.store.write() as session:
        session.execute(update(IndexGenerationRow).values(snapshot_path=str(old_place.resolve())))
    app.close()

    with caplog.at_level(logging.WARNING, logger="routebook.follower"):
        restarted = make_app(db_url)
        index = restarted.registry.get("default")
        assert (index.generation, index.kind) == (1, "hnsw")
    assert caplog.records == []  # loaded, not rebuilt
    assert texts_of(restarted) == store_texts(restarted)
    assert reindex(restarted) == 2
    own = store_folder(snapshots, store_id(restarted.store))
    assert published_path(restarted, 2) == (own / "default" / "gen-00000002").resolve()
    assert (old_place / "meta.json").is_file()  # not pruned by a save elsewhere


def test_a_snapshot_from_before_store_ids_still_loads(
    db_url: str, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    """Snapshots written before store ids have none in their meta: they load when they are
    what the store's row describes (generation, marks and size), without a rebuild."""
    app = make_app(db_url)
    assert reindex(app, "hnsw") == 1
    app.close()
    meta_file = published_path(app, 1) / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta.pop("store_id")
    meta_file.write_text(json.dumps(meta))

    with caplog.at_level(logging.WARNING, logger="routebook.follower"):
        restarted = make_app(db_url)
        assert restarted.registry.get("default").generation == 1
    assert caplog.records == []  # loaded, not rebuilt
    assert texts_of(restarted) == store_texts(restarted)


# --------------------------------------------------------------------------------------------
# A published snapshot this server cannot read
# --------------------------------------------------------------------------------------------


def test_a_replica_that_cannot_read_the_snapshot_builds_the_generation_of_its_kind(
    db_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """Replicas on other hosts may not see the folder the reindexing server wrote: they try
    again for a few ticks, then build that generation from the store, of the published kind
    (they used to stay on the old generation until restarted, then build a flat index)."""
    writer = make_app(db_url, snapshot_dir=tmp_path / "a", follow_interval_seconds=3600)
    replica = make_app(db_url, snapshot_dir=tmp_path / "b", follow_interval_seconds=3600)
    assert replica.registry.get("default").kind == "flat"
    assert reindex(writer, "hnsw") == 1
    (tmp_path / "a").rename(tmp_path / "a-on-another-host")
    for _ in range(SNAPSHOT_READ_ATTEMPTS - 1):
        replica.follower.tick()
        assert replica.registry.get("default").generation == 0  # trying the snapshot again
    replica.follower.tick()
    index = replica.registry.get("default")
    assert (index.generation, index.kind) == (1, "hnsw")
    assert texts_of(replica) == store_texts(replica)

    added = "an example added after the replica built the generation itself"
    writer.examples.upsert("default", [ExampleInput(added, None, "small")])
    replica.follower.tick()
    assert added in texts_of(replica)  # it follows the store from the built marks

    replica.close()
    restarted = make_app(db_url, snapshot_dir=tmp_path / "b", follow_interval_seconds=3600)
    index = restarted.registry.get("default")
    assert (index.generation, index.kind) == (1, "hnsw")
    assert texts_of(restarted) == store_texts(restarted)


def test_a_snapshot_that_shows_up_late_is_loaded(
    db_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """A folder missing for a tick (a shared filesystem lagging behind) is not given up on."""
    writer = make_app(db_url, snapshot_dir=tmp_path / "a", follow_interval_seconds=3600)
    replica = make_app(db_url, snapshot_dir=tmp_path / "b", follow_interval_seconds=3600)
    assert reindex(writer, "hnsw") == 1
    (tmp_path / "a").rename(tmp_path / "a-later")
    replica.follower.tick()
    assert replica.registry.get("default").generation == 0
    (tmp_path / "a-later").rename(tmp_path / "a")
    replica.follower.tick()
    index = replica.registry.get("default")
    assert (index.generation, index.kind) == (1, "hnsw")
    assert texts_of(replica) == store_texts(replica)


# --------------------------------------------------------------------------------------------
# Pruning: a deleted text must leave the snapshot folder
# --------------------------------------------------------------------------------------------

SECRET = "ship to OKAPIBLUE at 44 King Road, phone 555-0199, SSN 078-05-1120"


def folders_holding(snapshots: Path, text: str) -> list[str]:
    """The snapshot folders with a file holding `text` (facts.bin keeps texts as UTF-8)."""
    needle = text.encode("utf-8")
    return sorted(
        str(f.parent.relative_to(snapshots))
        for f in snapshots.rglob("*")
        if f.is_file() and needle in f.read_bytes()
    )


def test_a_deleted_marked_text_leaves_every_snapshot_at_the_second_reindex_after(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """admin.proto promises that deleting a `contains_pii` example forgets its text. Every
    generation published while it existed holds it in facts.bin; old-layout snapshots (from
    before store folders) were never pruned at all. After the delete, the next reindex keeps
    the generation before it (a replica may still be loading it); the one after deletes
    every generation that held the text, the old-layout one included, while a replica
    following along keeps serving."""
    app = make_app(db_url)
    replica = make_app(db_url, follow_interval_seconds=3600)  # ticked by the test
    marked = OutcomeReport(
        "o-pii", "frontier", 1.0, messages=(Message("user", SECRET),), contains_pii=True
    )
    example = app.outcomes.record_outcome(marked).example_id
    snapshots = Path(app.settings.snapshot_dir)
    assert reindex(app) == 1
    old_place = snapshots / "default" / "gen-00000001"  # where routebook used to write it
    old_place.parent.mkdir()
    published_path(app, 1).rename(old_place)
    with app.store.write() as session:
        session.execute(update(IndexGenerationRow).values(snapshot_path=str(old_place.resolve())))
    assert reindex(app) == 2
    assert folders_holding(snapshots, SECRET) == [
        "default/gen-00000001",
        f"store-{store_id(app.store)}/default/gen-00000002",
    ]

    assert app.examples.delete("default", [example])[0] == [example]
    assert reindex(app) == 3
    replica.follower.tick()
    assert replica.registry.get("default").generation == 3
    # Generation 1 is two behind and goes; 2, the one before the newest, stays.
    own = store_folder(snapshots, store_id(app.store)) / "default"
    assert folders_holding(snapshots, SECRET) == [f"{own.relative_to(snapshots)}/gen-00000002"]
    assert not old_place.exists()

    assert reindex(app) == 4
    replica.follower.tick()
    assert replica.registry.get("default").generation == 4
    assert folders_holding(snapshots, SECRET) == []
    assert sorted(p.name for p in own.glob("gen-*")) == ["gen-00000003", "gen-00000004"]
    assert texts_of(replica) == store_texts(replica)


def test_pruning_keeps_what_a_server_may_load_and_saves_not_yet_published(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """What to keep is read from the store's rows, not counted in the folder: a folder newer
    than every published generation (a save whose publish failed, or one under way) counted
    as one of the two kept, so the generation before the newest, which a replica may still be
    loading, was deleted."""
    app = make_app(db_url)
    for generation in (1, 2):
        assert reindex(app) == generation
    own = store_folder(Path(app.settings.snapshot_dir), store_id(app.store)) / "default"
    shutil.copytree(own / "gen-00000002", own / "gen-00000009")  # never published
    assert reindex(app) == 3
    assert sorted(p.name for p in own.glob("gen-*")) == [
        "gen-00000002",
        "gen-00000003",
        "gen-00000009",
    ]
    restarted = make_app(db_url)
    assert restarted.registry.get("default").generation == 3
