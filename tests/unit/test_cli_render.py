"""The terminal tables show stored text as it is, whatever brackets it holds."""

from __future__ import annotations

from rich.console import Console

from routebook.cli_render import render_decision, render_stats
from routebook.server.convert import redact
from routebook.service.stats import Group, RoutingStats
from routebook.v1 import router_pb2 as pb

TRICKY = "match a path like [/usr/bin] or [red]this[/red]"


def test_a_precedents_text_is_printed_verbatim() -> None:
    response = pb.DecideResponse(
        model="small",
        reason="nearest precedents [k=10] agree",
        neighbours=[pb.Neighbour(example_id=7, similarity=0.9, text_snippet=TRICKY)],
    )
    console = Console(record=True, width=400)
    render_decision(response, console)
    shown = console.export_text()
    assert TRICKY in shown and "nearest precedents [k=10] agree" in shown


def test_a_precedent_marked_as_personal_data_says_why_it_has_no_text() -> None:
    response = pb.DecideResponse(
        model="small",
        reason="nearest precedents agree",
        neighbours=[
            pb.Neighbour(example_id=7, similarity=0.9, contains_pii=True),
            pb.Neighbour(example_id=8, similarity=0.8, text_snippet="where is my parcel"),
        ],
    )
    console = Console(record=True, width=400)
    render_decision(response, console)
    lines = console.export_text().splitlines()
    rows = {line.split()[1]: line for line in lines if line.split()[1:2] in (["7"], ["8"])}
    assert "(personal data, not shown)" in rows["7"]
    assert "where is my parcel" in rows["8"] and "personal data" not in rows["8"]


def test_a_tenant_name_is_printed_verbatim() -> None:
    stats = RoutingStats(
        namespace="default",
        window_hours=24,
        decisions=1,
        decisions_by_strategy={"semantic": 1},
        cold_start_rate=0.0,
        escalation_rate=0.0,
        by_model=[],
        by_tenant=[Group("[bold]acme[/]", 1, 1.0, 1.0, 0.01)],
    )
    console = Console(record=True, width=400)
    render_stats(stats, console)
    assert "[bold]acme[/]" in console.export_text()


def _full() -> pb.DecideResponse:
    return pb.DecideResponse(
        decision_id="d-1",
        model="small",
        strategy=pb.STRATEGY_SEMANTIC,
        confidence=0.98,
        estimated_cost_usd=0.000123,
        route="order_status",
        reason_code=pb.REASON_CODE_CHEAPEST_MEETS_TARGET,
        reason="small is the cheapest model whose estimate reaches 0.80",
        index_generation=3,
        estimates=[pb.ModelEstimate(model="small", success=0.98)],
    )


def test_a_summary_decision_says_what_is_hidden_instead_of_printing_zeros() -> None:
    """Under `summary` the CLI printed `est. $0.000000  route -` and an empty `reason:`: a free
    model chosen for no reason. Hidden fields now say so; the reason code stands in."""
    console = Console(record=True, width=400)
    render_decision(redact(_full(), "summary"), console)
    shown = console.export_text()
    assert "$0.000000" not in shown and "route -" not in shown
    assert "est. $ (hidden)  route (hidden)" in shown
    assert "confidence 0.98" in shown and "reason: cheapest_meets_target" in shown
    assert "generation 3" in shown and "evidence level summary" in shown
    assert "per-model estimates" not in shown  # no empty tables either


def test_a_none_decision_hides_the_confidence_and_reason_code_too() -> None:
    console = Console(record=True, width=400)
    render_decision(redact(_full(), "none"), console)
    shown = console.export_text()
    assert "confidence (hidden)" in shown and "reason: (hidden)" in shown
    assert "generation (hidden)" in shown and "evidence level none" in shown


def test_a_full_decision_is_printed_as_it_is() -> None:
    console = Console(record=True, width=400)
    render_decision(redact(_full(), "full"), console)
    shown = console.export_text()
    assert "est. $0.000123  route order_status" in shown and "(hidden)" not in shown
    assert "reason: small is the cheapest model" in shown
