"""The terminal tables show stored text as it is, whatever brackets it holds."""

from __future__ import annotations

from rich.console import Console

from routebook.cli_render import render_decision, render_stats
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
