"""Shadow mode: a candidate rule decides beside the live one, is never answered, and the report
counts the disagreements exactly."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text as sql

from routebook import cli
from routebook.errors import ConfigError
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served
from tests.integration.test_heads import fill
from tests.integration.test_policy import POLICY_ROUTES

QUERIES = [
    "where is my parcel?",
    "my package never arrived",
    "I want a refund for my broken headphones",
    "summarise this meeting into action items",
    "my async Rust tasks deadlock on two mutexes",
    "refactor this Java monolith into services",
    "translate this Latin inscription into Welsh",
    "track my package please",
    "give me three bullet points from these reviews",
    "can I return the shoes I bought",
]


def test_shadow_candidate_is_recorded_never_answered_and_counted_exactly(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 1.0\n")  # nothing reaches it: always the strongest
    served = serve(sqlite_url, shadow_config=candidate)
    answers = [
        served.router.Decide(
            pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
        )
        for text in QUERIES
    ]
    # The live answers are the live rule's: target 0.8, cheap models where they suffice.
    assert {a.model for a in answers} >= {"small", "frontier"}
    assert all(a.quality_target == 0.8 for a in answers)
    # The candidate goes to frontier on every semantic decision and agrees on cascades (same
    # plan, same first step), so it differs exactly where a semantic answer is not frontier.
    expected = sum(
        1 for a in answers if a.strategy == pb.STRATEGY_SEMANTIC and a.model != "frontier"
    )
    assert 0 < expected < len(QUERIES)
    served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="o1", decision_id=answers[0].decision_id, model=answers[0].model, quality=0.9
        ),
        timeout=10,
    )
    served.app.decision_writer.flush()

    result = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["decisions"] == len(QUERIES)
    assert report["decisions"] - report["agreements"] == expected
    assert sum(report["disagreements"].values()) == expected
    assert all(pair.endswith("-> frontier") for pair in report["disagreements"])
    assert report["estimated_cost_candidate_usd"] > report["estimated_cost_live_usd"]
    assert (report["live_outcomes"], report["live_quality"]) == (1, 0.9)
    # Black-box review 2, finding 6: no outcome for the candidate's model is no quality, not 0.
    assert (report["candidate_outcomes"], report["candidate_quality"]) == (0, None)

    table = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url])
    assert f"{expected} differ" in table.output
    assert "live quality 0.900 (1), candidate n/a (0)" in table.output


def test_a_request_quality_target_applies_to_the_candidate_too(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """The candidate differs from live only in its target (1.0: always the strongest). A
    caller's own quality_target overrides both, so live and shadow then decide alike."""
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 1.0\n")
    served = serve(sqlite_url, shadow_config=candidate)
    for text in QUERIES:
        request = pb.DecideRequest(
            messages=[pb.Message(role="user", content=text)], quality_target=0.8
        )
        served.router.Decide(request, timeout=30)
    served.app.decision_writer.flush()
    result = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url, "--json"])
    report = json.loads(result.output)
    assert report["decisions"] == len(QUERIES) == report["agreements"]


def test_without_a_candidate_nothing_is_recorded(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    served.router.Decide(
        pb.DecideRequest(messages=[pb.Message(role="user", content=QUERIES[0])]), timeout=30
    )
    served.app.decision_writer.flush()
    result = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url, "--json"])
    report = json.loads(result.output)
    assert report["decisions"] == 0
    assert report["estimated_success_live"] is None and report["live_quality"] is None
    table = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url])
    assert "estimated success: live n/a, candidate n/a" in table.output
    assert "live quality n/a (0), candidate n/a (0)" in table.output


def test_a_candidate_with_its_own_rules(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 0.8\n")  # the live target: only the rules differ
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "namespace: default\n"
        "catalog:\n"
        "  - {name: mid, provider: t, input_usd_per_mtok: 1, output_usd_per_mtok: 1,"
        " latency_ms: 1, context_window: 100000}\n"
        "policy:\n  rules:\n    - {name: refunds-to-mid, keywords: [refund], model: mid}\n"
    )
    served = serve(sqlite_url, shadow_config=candidate, shadow_rules=rules)
    for text in QUERIES:
        served.router.Decide(
            pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
        )
    served.app.decision_writer.flush()
    result = CliRunner().invoke(cli.main, ["shadow", "report", "--db", sqlite_url, "--json"])
    report = json.loads(result.output)
    assert report["decisions"] == len(QUERIES)
    assert report["disagreements"] == {"small -> mid": 1}  # the one refund query


def report_of(url: str) -> dict[str, object]:
    result = CliRunner().invoke(cli.main, ["shadow", "report", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.output)
    return report


@pytest.mark.parametrize("own_rules", [False, True])
def test_rule_decisions_are_compared_only_against_rules_of_the_candidates_own(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path, own_rules: bool
) -> None:
    """With the live rules, the candidate matches the same rule: an agreement by construction,
    which would dilute the disagreement share, so such decisions are not compared."""
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 0.8\n")  # the live target: only rules may differ
    shadow_rules = {}
    if own_rules:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "namespace: ruled\ncatalog:\n"
            "  - {name: mid, provider: t, input_usd_per_mtok: 1, output_usd_per_mtok: 1,"
            " latency_ms: 1, context_window: 100000}\n"
            "policy:\n  rules:\n    - {name: contracts-to-mid, keywords: [contract], model: mid}\n"
        )
        shadow_rules = {"shadow_rules": rules}
    served = serve(sqlite_url, routes_dir=POLICY_ROUTES, shadow_config=candidate, **shadow_rules)
    texts = [
        "please review this contract",
        "the contract has a typo",
        "where is my order?",
        "my parcel has not arrived yet",
        "who pays for the lawsuit?",
    ]
    answers = [
        served.router.Decide(
            pb.DecideRequest(namespace="ruled", messages=[pb.Message(role="user", content=t)]),
            timeout=30,
        )
        for t in texts
    ]
    by_rule = sum(1 for a in answers if a.strategy == pb.STRATEGY_RULE)
    assert by_rule == 3
    served.app.decision_writer.flush()
    report = report_of(sqlite_url)
    if own_rules:  # contracts go to mid; no rule of the candidate's takes the lawsuit
        assert report["decisions"] == len(texts)
        assert report["disagreements"] == {"frontier -> mid": 2, "frontier -> small": 1}
    else:
        assert report["decisions"] == len(texts) - by_rule
        assert report["disagreements"] == {}


def test_a_candidate_with_a_head_is_measured_with_it_on_a_server_without_one(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """head_enabled is on by default: served live, this candidate would train a head and weigh
    it. The live server has heads off, yet trains one for the candidate and decides without."""
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 0.8\n")  # the live rule, but with a head
    served = serve(sqlite_url, shadow_config=candidate, head_enabled=False, head_check_seconds=3600)
    fill(served)
    assert served.app.heads.refresh("default", force=True) is not None
    answers = [
        served.router.Decide(
            pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
        )
        for text in QUERIES
    ]
    assert not any(a.HasField("head") for a in answers)  # the live rule has no head
    served.app.decision_writer.flush()
    report = report_of(sqlite_url)
    assert report["decisions"] == len(QUERIES)
    # Without the head the candidate is the live rule exactly, and every estimate is equal.
    assert report["estimated_success_candidate"] != report["estimated_success_live"]


def test_a_candidate_reading_other_head_features_is_refused_at_start(
    sqlite_url: str, make_app: Callable[..., object], tmp_path: Path
) -> None:
    """The candidate decides with the live server's head: a file asking for another kind of
    head would be measured with the wrong one."""
    candidate = tmp_path / "candidate.toml"
    candidate.write_text('k = 20\nhead_features = "layers"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r'head_features = "layers" .* but the server runs'):
        make_app(sqlite_url, shadow_config=candidate)
    # A candidate that gives the head's success part no weight never reads it: accepted.
    candidate.write_text('k = 20\nhead_features = "layers"\nhead_strength = 0\n', "utf-8")
    make_app(sqlite_url, shadow_config=candidate)


#: Two models whose prices cross: which is cheaper depends on the answer length. chatty is the
#: cheaper by list price, so a label on it says longform answers well too.
CROSSING = """namespace: default
catalog:
  - {name: chatty, provider: t, input_usd_per_mtok: 0.1, output_usd_per_mtok: 5.0,
     latency_ms: 1, context_window: 100000}
  - {name: longform, provider: t, input_usd_per_mtok: 10.0, output_usd_per_mtok: 0.1,
     latency_ms: 1, context_window: 100000}
routes:
  - name: orders
    best_model: chatty
    utterances:
      - where is my order?
      - my parcel has not arrived yet
      - track my package please
      - when will my delivery come
      - has my order shipped yet
"""


def test_the_candidate_decides_at_its_own_default_output_tokens(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """The candidate decided at the live server's default_output_tokens whatever its file
    said, so a candidate that changed only that agreed with live on every decision, though
    served it would pick other models. Its recorded cost is priced at the live length, as
    the eval gate prices both sides: assuming short answers does not make it cheaper."""
    routes = tmp_path / "crossing.yaml"
    routes.write_text(CROSSING)
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("default_output_tokens = 1\n")
    served = serve(sqlite_url, routes_dir=routes, shadow_config=candidate)
    asked = [pb.Message(role="user", content="where is my order?")]
    live = served.router.Decide(pb.DecideRequest(messages=asked), timeout=30)
    # 256 output tokens: longform's dear input costs less than chatty's dear output.
    assert (live.strategy, live.model) == (pb.STRATEGY_SEMANTIC, "longform")
    chatty = next(e for e in live.estimates if e.model == "chatty")
    assert chatty.meets_target and chatty.estimated_cost_usd > live.estimated_cost_usd
    # A caller's own answer length applies to both sides: then they agree.
    short = served.router.Decide(
        pb.DecideRequest(messages=asked, expected_output_tokens=1), timeout=30
    )
    assert short.model == "chatty"
    served.app.decision_writer.flush()
    with served.app.store.engine.connect() as connection:
        rows = {
            row.id: (row.shadow_model, row.shadow_estimated_cost_usd)
            for row in connection.execute(
                sql(
                    "SELECT id, shadow_model, shadow_estimated_cost_usd FROM decisions "
                    "WHERE id IN (:live, :short)"
                ),
                {"live": live.decision_id, "short": short.decision_id},
            )
        }
    assert rows[live.decision_id] == ("chatty", pytest.approx(chatty.estimated_cost_usd))
    assert rows[short.decision_id] == ("chatty", pytest.approx(short.estimated_cost_usd))
    report = report_of(sqlite_url)
    assert report["disagreements"] == {"longform -> chatty": 1}
    costs = (report["estimated_cost_candidate_usd"], report["estimated_cost_live_usd"])
    assert isinstance(costs[0], float) and isinstance(costs[1], float) and costs[0] > costs[1]


def test_a_candidate_changing_only_the_cascade_bar_is_said_unmeasured(
    sqlite_url: str,
    serve: Callable[..., Served],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Black-box review 3, finding 6: a candidate that changes only `cascade_min_quality`
    read "every decision agrees", while the gate finds it changes the quality and cost of
    every cold query. Shadow compares decisions and the bar changes none (only which cascade
    answers are accepted), so the start and the report say it is not measured, and send the
    reader to the gate; a candidate with the live bar gets no such warning."""
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("cascade_min_quality = 0.95\n")  # live: none, so the target, 0.8
    same_bar = tmp_path / "same-bar.toml"
    same_bar.write_text("quality_target = 0.9\ncascade_min_quality = 0.8\n")
    with caplog.at_level(logging.WARNING, logger="routebook"):
        served = serve(sqlite_url, shadow_config=candidate)
    [warning] = [r.getMessage() for r in caplog.records if "cascade bar" in r.getMessage()]
    assert "0.95, the live one 0.8" in warning and "eval --baseline" in warning
    answers = [
        served.router.Decide(
            pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
        )
        for text in QUERIES
    ]
    assert any(a.strategy == pb.STRATEGY_CASCADE for a in answers)
    served.app.decision_writer.flush()

    def report(shadow_config: Path, *flags: str) -> str:
        live = tmp_path / "live.toml"
        live.write_text(f'shadow_config = "{shadow_config}"\n')
        args = ["shadow", "report", "--db", sqlite_url, "--config", str(live), *flags]
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 0, result.output
        return result.output

    as_json = json.loads(report(candidate, "--json"))
    assert as_json["agreements"] == as_json["decisions"] == len(QUERIES)  # what it cannot see
    [said] = as_json["warnings"]
    assert "cascade bar" in said and "does not measure it" in said
    table = report(candidate)
    assert table.startswith("warning: the shadow candidate's cascade bar")
    assert f"{len(QUERIES)} agree" in table

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="routebook"):
        serve(sqlite_url, shadow_config=same_bar)
    assert not [r for r in caplog.records if "cascade bar" in r.getMessage()]
    assert json.loads(report(same_bar, "--json"))["warnings"] == []
    assert "warning" not in report(same_bar)
