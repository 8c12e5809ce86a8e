"""A bulk upsert embeds its texts without holding up the follower, and without stale labels."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from routebook.embed import Embedder
from routebook.embed.protocol import EmbedderInFront
from routebook.service.examples import ExampleInput
from routebook.store.tables import ExampleRow
from routebook.wiring import App

BULK = "bulk load example"
#: A guard against a test hanging on a bug, never a measure of speed.
GUARD_SECONDS = 60


class HeldEmbedder(EmbedderInFront):
    """The real model, except that a call with a bulk text waits until the test lets it go:
    the test acts while the upsert is known to be embedding, however fast the machine is."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.embedding = threading.Event()
        self.let_go = threading.Event()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if any(t.startswith(BULK) for t in texts):
            self.embedding.set()
            self.let_go.wait()  # the test sets it in a `finally`
        return self.inner.embed(texts)


def bulk(count: int, best_model: str = "small") -> list[ExampleInput]:
    return [
        ExampleInput(f"{BULK} {n}: where is parcel {n}?", "bulk", best_model) for n in range(count)
    ]


def labels_in_store(app: App) -> dict[int, tuple[str, str | None]]:
    with app.store.read() as session:
        rows = session.execute(select(ExampleRow.id, ExampleRow.text, ExampleRow.best_model))
        return {row.id: (row.text, row.best_model) for row in rows}


def labels_in_index(app: App) -> dict[int, tuple[str, str | None]]:
    return {f.example_id: (f.text, f.best_model) for f in app.registry.get("default").all_facts()}


def test_a_bulk_upsert_does_not_hold_up_the_follower_while_it_embeds(
    db_url: str, make_app: Callable[..., App], embedder: Embedder, tmp_path: Path
) -> None:
    """The upsert used to commit, then catch the index up under the follower's lock, embedding
    every new text there: for the whole embedding (about a minute for 10,000 texts) the
    follower applied nothing, here a deletion made on another replica."""
    held = HeldEmbedder(embedder)
    app = make_app(db_url, embedder=held, follow_interval_seconds=3600)  # ticked by the test
    replica = make_app(db_url, snapshot_dir=tmp_path / "replica", follow_interval_seconds=3600)
    doomed = replica.examples.upsert(
        "default", [ExampleInput("an example the other replica deletes", None, "small")]
    ).example_ids[0]
    app.follower.tick()
    assert doomed in app.registry.get("default")

    with ThreadPoolExecutor(2) as pool:
        upsert = pool.submit(app.examples.upsert, "default", bulk(300))
        try:
            assert held.embedding.wait(GUARD_SECONDS)  # the upsert is embedding now
            assert replica.examples.delete("default", [doomed])[0] == [doomed]
            tick = pool.submit(app.follower.tick)
            ticked = threading.Event()
            tick.add_done_callback(lambda _future: ticked.set())
            assert ticked.wait(GUARD_SECONDS), "the follower waited for the upsert's embedding"
            tick.result()
            assert doomed not in app.registry.get("default")  # applied meanwhile
        finally:
            held.let_go.set()
        result = upsert.result(GUARD_SECONDS)
    assert result.added == 300
    index = app.registry.get("default")
    assert all(example_id in index for example_id in result.example_ids)
    assert labels_in_index(app) == labels_in_store(app)


def test_what_changes_while_a_bulk_upsert_embeds_is_read_afresh_when_it_writes(
    db_url: str, make_app: Callable[..., App], embedder: Embedder, tmp_path: Path
) -> None:
    """The texts are embedded before the write, so other writers act in between: the write
    must decide on the rows as they are then, not as they were before the embedding. Here
    one of its texts is relabelled elsewhere (in place, same id), another inserted
    elsewhere, and an example outside the batch deleted; every id the upsert returns is a
    live example with the batch's label, in the index as in the store, and nothing deleted
    comes back."""
    held = HeldEmbedder(embedder)
    app = make_app(db_url, embedder=held, follow_interval_seconds=3600)
    replica = make_app(db_url, snapshot_dir=tmp_path / "replica", follow_interval_seconds=3600)
    relabelled = "a text relabelled elsewhere while the bulk load embeds"
    before = app.examples.upsert(
        "default",
        [
            ExampleInput(relabelled, None, "small"),
            ExampleInput("an example deleted elsewhere while the bulk load embeds", None, "small"),
        ],
    ).example_ids
    batch = [*bulk(50), ExampleInput(relabelled, None, "small")]

    with ThreadPoolExecutor(1) as pool:
        upsert = pool.submit(app.examples.upsert, "default", batch)
        try:
            assert held.embedding.wait(GUARD_SECONDS)
            replica.examples.upsert(
                "default",
                [ExampleInput(relabelled, None, "mid"), ExampleInput(batch[0].text, "bulk", "mid")],
            )
            assert replica.examples.delete("default", [before[1]])[0] == [before[1]]
        finally:
            held.let_go.set()
        result = upsert.result(GUARD_SECONDS)
    assert (result.added, result.updated, result.unchanged) == (49, 2, 0)
    app.follower.tick()

    store, index = labels_in_store(app), labels_in_index(app)
    assert index == store
    for item, example_id in zip(batch, result.example_ids, strict=True):
        assert store[example_id] == (item.text, item.best_model)
    assert result.example_ids[-1] == before[0]  # relabelled twice, in place
    assert before[1] not in store  # deleted
    with app.store.read() as session:
        models = set(session.scalars(select(ExampleRow.embedding_model)))
    assert models == {embedder.model_id}  # every row has its vector cached
