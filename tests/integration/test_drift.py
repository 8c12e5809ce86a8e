"""Drift watch on real traffic: queries from CLINC150 against an index of CLINC150, then from
Banking77. Same data again: stable. Another dataset: the figures cross the level and the
warning says what moved."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from routebook import cli
from routebook.service.drift import ks_statistic, psi
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

DATASETS = Path(
    os.environ.get("ROUTEBOOK_DATASETS", Path(__file__).parents[3] / "shared" / "datasets")
)
TOKEN = "drift-token"


def rows(name: str) -> list[dict[str, str]]:
    path = DATASETS / name
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_psi_and_ks_on_plain_numbers() -> None:
    same = [float(i) for i in range(100)]
    assert psi(same, same) == pytest.approx(0.0, abs=1e-9)
    assert ks_statistic(same, same) == 0.0
    shifted = [x + 50 for x in same]  # half the mass moves past the reference's range
    assert psi(same, shifted) > 1.0 and ks_statistic(same, shifted) == pytest.approx(0.5)


@pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")
def test_drift_is_seen_for_another_dataset_and_not_for_the_same_one(
    sqlite_url: str,
    serve: Callable[..., Served],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    train = [r for r in rows("clinc150/train.jsonl") if r["label"] != "oos"]
    intents = sorted({r["label"] for r in train})[:25]
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "clinc.yaml").write_text(
        yaml.safe_dump(
            {
                "namespace": "default",
                "catalog": [
                    {
                        "name": "small",
                        "provider": "t",
                        "input_usd_per_mtok": 0.1,
                        "output_usd_per_mtok": 0.4,
                        "latency_ms": 300,
                        "context_window": 8000,
                    }
                ],
                "routes": [
                    {
                        "name": intent,
                        "best_model": "small",
                        "utterances": [r["text"] for r in train if r["label"] == intent][:12],
                    }
                    for intent in intents
                ],
            }
        )
    )
    served = serve(
        sqlite_url, routes_dir=routes, admin_token=TOKEN, drift_reference_size=60, drift_window=60
    )
    clinc = [r["text"] for r in rows("clinc150/val.jsonl") if r["label"] in intents]
    random.Random(7).shuffle(clinc)  # the file is sorted by intent: sample it evenly
    banking = [r["text"] for r in rows("banking77/train.dev_test.jsonl")]

    def feed(texts: list[str]) -> None:
        for text in texts:
            served.router.Decide(
                pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
            )

    def drift() -> admin_pb.NamespaceDrift:
        stub = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
        response = stub.GetDrift(
            admin_pb.GetDriftRequest(namespace="default"),
            metadata=[("authorization", f"Bearer {TOKEN}")],
            timeout=10,
        )
        return response.namespaces[0]

    caplog.set_level(logging.WARNING, logger="routebook.drift")
    feed(clinc[:60])  # the reference window
    feed(clinc[60:120])  # the same kind of traffic
    steady = drift()
    assert (steady.reference.decisions, steady.current.decisions) == (60, 60)
    assert not steady.drifted and list(steady.moved) == []
    assert not [r for r in caplog.records if "drifted" in r.getMessage()]

    feed(banking[:60])  # another dataset
    moved = drift()
    assert moved.drifted and moved.psi > 0.2
    assert moved.current.top_similarity_median < moved.reference.top_similarity_median
    warnings = [r.getMessage() for r in caplog.records if "drifted" in r.getMessage()]
    assert len(warnings) == 1
    assert "top similarity median" in warnings[0] or "cold-start rate" in warnings[0]
    assert "→" in warnings[0]

    verdict = CliRunner().invoke(cli.main, ["drift", "--target", served.target, "--token", TOKEN])
    assert verdict.exit_code == 1 and "default: DRIFTED" in verdict.output

    # The operator accepts the new traffic: the report still says what moved, then the next
    # decisions make a new reference.
    accepted = CliRunner().invoke(
        cli.main, ["drift", "--target", served.target, "--token", TOKEN, "--rebaseline"]
    )
    assert accepted.exit_code == 1 and "default: DRIFTED" in accepted.output
    fresh = drift()
    assert (fresh.reference.decisions, fresh.current.decisions, fresh.drifted) == (0, 0, False)
    assert fresh.reference_since == ""
    feed(banking[60:70])
    assert drift().reference.decisions == 10


def test_a_model_success_change_counts_only_past_sampling_noise() -> None:
    """80% → 60% success over 10 outcomes each is noise (z about 1); over 400 each it is not."""
    from routebook.service.drift import DriftWatch

    def watched(outcomes: int) -> DriftWatch:
        watch = DriftWatch(reference_size=5, window=outcomes)
        for i in range(outcomes):  # while the reference window fills: 80% success
            watch.outcome("ns", "mid", i % 5 != 0)
        for _ in range(5):
            watch.observe("ns", 0.9, False)  # the reference is full; the rest is current
        watch.observe("ns", 0.9, False)
        for i in range(outcomes):
            watch.outcome("ns", "mid", i % 5 in (1, 2, 3))  # current: 60% success
        return watch

    few = watched(10).report("ns")
    assert (few.reference.success_by_model, few.current.success_by_model) == (
        {"mid": 0.8},
        {"mid": 0.6},
    )
    assert not few.drifted and few.moved == []
    many = watched(400).report("ns")
    assert many.drifted and many.moved == ["mid success 80% → 60%"]


def test_a_router_that_learns_is_not_drifting() -> None:
    """Outcomes join the index, so on the same traffic similarity rises, cold starts fall and
    success rises: all improvements, none of them an alarm. The reverse is one."""
    from routebook.service.drift import DriftWatch

    def watched(before: tuple[float, bool, bool], after: tuple[float, bool, bool]) -> DriftWatch:
        watch = DriftWatch(reference_size=400, window=400)
        for i in range(400):
            similarity, cold, success = before
            watch.observe("ns", similarity + (i % 40) / 400, cold and i % 2 == 0)
            watch.outcome("ns", "mid", success or i % 2 == 0)
        for i in range(400):
            similarity, cold, success = after
            watch.observe("ns", similarity + (i % 40) / 400, cold and i % 2 == 0)
            watch.outcome("ns", "mid", success or i % 2 == 0)
        return watch

    cold_and_unsure, known_and_good = (0.40, True, False), (0.85, False, True)
    learning = watched(cold_and_unsure, known_and_good).report("ns")
    assert not learning.drifted and learning.moved == []
    worsening = watched(known_and_good, cold_and_unsure).report("ns")
    assert worsening.drifted
    assert [m.split(" ")[0] for m in worsening.moved] == ["cold-start", "top", "mid"]


def test_decisions_on_an_empty_index_do_not_make_the_reference() -> None:
    """A namespace decided on before its examples arrived: every decision cold. Such a
    reference could never look worse, so the watch was blind for good; they are left out."""
    from routebook.service.drift import DriftWatch

    watch = DriftWatch(reference_size=50, window=50)
    for _ in range(50):
        watch.observe("ns", 0.0, True, empty_index=True)
    assert watch.report("ns").reference.decisions == 0
    for i in range(50):
        watch.observe("ns", 0.8 + (i % 10) / 100, False)  # served well: the reference
    for i in range(50):
        watch.observe("ns", 0.1 + (i % 10) / 100, True)  # then traffic the index does not know
    report = watch.report("ns")
    assert report.reference.cold_start_rate == 0.0 and report.current.cold_start_rate == 1.0
    assert report.drifted


def test_a_new_index_generation_or_a_rebaseline_starts_a_new_reference() -> None:
    from routebook.service.drift import DriftWatch

    watch = DriftWatch(reference_size=50, window=50)
    for _ in range(100):
        watch.observe("ns", 0.9, False, generation=1)
    for _ in range(50):
        watch.observe("ns", 0.5, True, generation=1)
    assert watch.report("ns").drifted
    # A reindex changed the similarities themselves: what came before is no reference.
    watch.observe("ns", 0.5, True, generation=2)
    after_reindex = watch.report("ns")
    assert (after_reindex.reference.decisions, after_reindex.current.decisions) == (1, 0)
    assert not after_reindex.drifted
    for _ in range(49):
        watch.observe("ns", 0.5, True, generation=2)
    watch.rebaseline("ns")  # an operator pruned the index on purpose
    assert watch.report("ns").reference.decisions == 0


def test_reading_the_figures_starts_no_window() -> None:
    """A metrics scrape reads every namespace's figures: the reference must start with the
    namespace's first decision, not with the first scrape."""
    from routebook.service.drift import DriftWatch

    watch = DriftWatch(reference_size=5, window=5)
    assert watch.report("ns").reference_since == ""
    assert watch.report("ns").reference.decisions == 0
    watch.observe("ns", 0.9, False)
    assert watch.report("ns").reference_since != ""
