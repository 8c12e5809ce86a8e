"""The columnar facts table and its binary file: what goes in comes out, whatever the churn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import facts_file
from routebook.index.facts_table import FactsColumns, FactsTable


def facts(example_id: int, tag: str = "") -> ExampleFacts:
    """Every field varies with the id, including None, unicode and empty outcomes."""
    return ExampleFacts(
        example_id=example_id,
        text=f"quéstion {example_id}{tag} “quoted”\n" * (example_id % 3),
        route=None if example_id % 3 == 0 else f"route-{example_id % 5}",
        source=Source.HISTORY if example_id % 2 else Source.REFERENCE,
        best_model=None if example_id % 4 == 0 else "medium",
        outcomes=tuple(
            ObservedOutcome(model, 0.1 + example_id / 1e4 + j / 7, 1 + j)
            for j, model in enumerate(("small", "large", "médium")[: example_id % 4])
        ),
        tenant=None if example_id % 5 else f"tenant-{example_id}",
        contains_pii=example_id % 2 == 1 and example_id % 3 == 1,
    )


def test_put_get_replace_and_remove() -> None:
    table = FactsTable()
    table.put([])
    assert len(table) == 0 and 1 not in table
    table.put(facts(i) for i in range(1, 101))
    assert len(table) == 100 and 1 in table and 101 not in table
    assert all(table.get(i) == facts(i) for i in range(1, 101))
    table.put([facts(7, " again"), facts(200)])
    assert table.get(7) == facts(7, " again") and table.get(200) == facts(200)
    table.remove([8, 8, 999])
    assert 8 not in table and len(table) == 100
    with pytest.raises(KeyError):
        table.get(8)
    assert sorted(f.example_id for f in table) == [*range(1, 8), *range(9, 101), 200]


def test_a_repeated_id_within_one_put_keeps_the_last() -> None:
    table = FactsTable()
    table.put([facts(1), facts(1, " last")])
    assert len(table) == 1 and table.get(1) == facts(1, " last")


def test_churn_compacts_and_keeps_every_live_example() -> None:
    table = FactsTable()
    table.put(facts(i) for i in range(1, 501))
    for round_ in range(40):  # texts that grow every round move, and are compacted away
        table.put(facts(i, "x" * round_) for i in range(1, 501))
    table.remove(range(1, 501, 2))
    assert len(table) == 250
    assert all(table.get(i) == facts(i, "x" * 39) for i in range(2, 501, 2))
    live = table.packed()
    assert live.rows == 250
    assert table.nbytes < 4 * sum(a.nbytes for a in live.columns.values()) + 200_000


def test_get_many_gives_each_example_in_the_order_asked() -> None:
    """After churn the rows' texts and outcomes sit out of order in their buffers: a search's
    results must still come back each with its own facts, repeats and all."""
    table = FactsTable()
    table.put(facts(i) for i in range(1, 201))
    table.put(facts(i, " grown") for i in range(1, 201, 3))  # these move to the buffers' end
    table.remove([5, 6])
    asked = [200, 1, 7, 7, 4, 150, 2, 3]  # outcome counts 0 to 3, moved and unmoved rows
    expected = [facts(i, " grown" if i % 3 == 1 else "") for i in asked]
    assert table.get_many(asked) == expected
    assert table.get_many([]) == []
    assert [table.get(i) for i in asked] == expected
    with pytest.raises(KeyError):
        table.get_many([1, 5])


def test_updates_of_the_same_size_happen_in_place() -> None:
    """What every reported outcome does: new means and counts, same text; nothing grows."""
    table = FactsTable()
    table.put(facts(i) for i in range(1, 2001))
    before = table.nbytes
    for round_ in range(20):
        for i in range(1, 2001):
            f = facts(i)
            outcomes = tuple(
                ObservedOutcome(o.model, o.mean_quality / (round_ + 1), o.count + round_)
                for o in f.outcomes
            )
            table.put([ExampleFacts(i, f.text, "other", f.source, None, outcomes, "t")])
    assert table.nbytes == before
    assert table.get(7).outcomes[0].count == facts(7).outcomes[0].count + 19
    assert (table.get(7).route, table.get(7).best_model, table.get(7).tenant) == (
        "other",
        None,
        "t",
    )


def test_a_pii_mark_is_updated_in_place_and_survives_packing() -> None:
    """A later report marks a known example; its facts keep the mark through a snapshot."""
    table = FactsTable()
    table.put(facts(i) for i in range(1, 101))
    assert table.get(7).contains_pii and not table.get(5).contains_pii
    before = table.nbytes
    table.put([replace(facts(5), contains_pii=True), replace(facts(7), contains_pii=False)])
    assert table.nbytes == before
    assert table.get(5).contains_pii and not table.get(7).contains_pii
    copy = FactsTable(table.packed())
    assert [f.contains_pii for f in copy.get_many([5, 7, 13])] == [True, False, True]


def test_packed_round_trips_and_drops_unused_strings() -> None:
    table = FactsTable()
    table.put(facts(i) for i in range(1, 60))
    table.put([ExampleFacts(99, "gone", "only-here", Source.HISTORY, "only-model")])
    table.remove([99])
    packed = table.packed()
    assert "only-here" not in packed.strings and "only-model" not in packed.strings
    copy = FactsTable(packed)
    assert list(copy) == list(table) == [facts(i) for i in range(1, 60)]
    copy.put([facts(1, " changed")])  # the copy is independent and still growable
    assert table.get(1) == facts(1) and copy.get(1) == facts(1, " changed")


def test_an_empty_table_packs_and_loads() -> None:
    packed = FactsTable().packed()
    assert packed.rows == 0 and packed.strings == ()
    assert len(FactsTable(packed)) == 0


def test_file_round_trip_with_labels() -> None:
    table = FactsTable()
    table.put(facts(i) for i in range(1, 40))
    labels = np.arange(100, 139, dtype=np.int64)
    data = b"".join(bytes(chunk) for chunk in facts_file.encode(table.packed(), labels))
    packed, read_labels = facts_file.decode(data)
    assert read_labels.tolist() == labels.tolist()
    loaded = FactsTable(packed)
    assert [loaded.get(i) for i in range(1, 40)] == [facts(i) for i in range(1, 40)]


def packed_of(n: int) -> FactsColumns:
    table = FactsTable()
    table.put(facts(i) for i in range(1, n + 1))
    return table.packed()


def test_inconsistent_columns_are_refused() -> None:
    good = packed_of(10)
    cases = {
        "example_id": good.columns["example_id"][:-1],  # a row short
        "text_end": good.columns["text_end"][::-1].copy(),  # not cumulative
        "outcome_model": good.columns["outcome_model"][:-1],
        "route": np.full(10, 50, dtype=np.int32),  # no such string
        "source": np.full(10, 9, dtype=np.int8),
    }
    for name, bad in cases.items():
        with pytest.raises(ValueError, match="facts column"):
            FactsTable(FactsColumns({**good.columns, name: bad}, good.strings))
    repeated = good.columns["example_id"].copy()
    repeated[1] = repeated[0]
    with pytest.raises(ValueError, match="twice"):
        FactsTable(FactsColumns({**good.columns, "example_id": repeated}, good.strings))


def test_malformed_files_are_refused() -> None:
    labels = np.arange(10, dtype=np.int64)
    data = b"".join(bytes(c) for c in facts_file.encode(packed_of(10), labels))
    with pytest.raises(ValueError, match="magic"):
        facts_file.decode(b"NOTFACTS" + data[8:])
    with pytest.raises(ValueError, match="outside the file"):
        facts_file.decode(data[:-200])
    with pytest.raises(ValueError, match="header"):
        facts_file.decode(data[:16] + b"x" + data[17:])
