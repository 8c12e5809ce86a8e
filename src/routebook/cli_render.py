"""Rich tables for a decision and its evidence, for people at a terminal.

Every value from the store or a caller goes through `escape`: rich reads "[...]" as markup,
so a precedent's text like "a path like [/usr/bin]" would crash the command, and "[red]"
would be swallowed.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from routebook.service.stats import RoutingStats
from routebook.v1 import router_pb2 as pb

HIDDEN = "(hidden)"


def evidence_level(response: pb.DecideResponse) -> str:
    """The evidence level the server answered at, read off the response: a full decision
    always carries its reason in words, `summary` keeps only the reason code, `none` neither.
    Without this, a redacted decision printed as `est. $0.000000` and an empty `reason:`,
    which reads as a free model chosen for no reason."""
    if response.reason:
        return "full"
    return "summary" if response.reason_code != pb.REASON_CODE_UNSPECIFIED else "none"


def render_decision(response: pb.DecideResponse, console: Console | None = None) -> None:
    console = console or Console()
    level = evidence_level(response)
    strategy = pb.Strategy.Name(response.strategy).removeprefix("STRATEGY_")
    if level == "full":
        console.print(
            f"[bold]{escape(response.model)}[/bold]  {strategy}  confidence "
            f"{response.confidence:.2f}  est. ${response.estimated_cost_usd:.6f}  "
            f"route {escape(response.route or '-')}"
        )
        console.print(f"reason: {escape(response.reason)}")
        console.print(f"decision {response.decision_id}  generation {response.index_generation}")
    else:
        confidence = f"{response.confidence:.2f}" if level == "summary" else HIDDEN
        console.print(
            f"[bold]{escape(response.model)}[/bold]  {strategy}  confidence {confidence}  "
            f"est. $ {HIDDEN}  route {HIDDEN}"
        )
        code = pb.ReasonCode.Name(response.reason_code).removeprefix("REASON_CODE_").lower()
        console.print(f"reason: {code if level == 'summary' else HIDDEN}")
        generation = str(response.index_generation) if level == "summary" else HIDDEN
        console.print(f"decision {response.decision_id}  generation {generation}")
        console.print(
            f"evidence level {level}: this API key is not shown the estimates, precedents, "
            "cost or reason in words (the server's evidence_levels setting)"
        )
        if response.strategy == pb.STRATEGY_CASCADE:
            plan = " → ".join(step.model for step in response.cascade.steps)
            console.print(escape(f"cascade: {plan}; {response.cascade.acceptance}"))
        return
    estimates = Table(title="per-model estimates (cheapest first)")
    for column in ("model", "success", "support", "est. cost $", "meets target"):
        estimates.add_column(column)
    for e in response.estimates:
        estimates.add_row(
            escape(e.model),
            f"{e.success:.2f}",
            f"{e.support:.2f}",
            f"{e.estimated_cost_usd:.6f}",
            "yes" if e.meets_target else "no",
        )
    console.print(estimates)
    neighbours = Table(title="nearest precedents")
    for column in ("id", "similarity", "weight", "source", "route", "best / outcomes", "text"):
        neighbours.add_column(column)
    for n in response.neighbours:
        what = n.best_model or ", ".join(
            f"{o.model}={o.mean_quality:.2f}x{o.count}" for o in n.outcomes
        )
        neighbours.add_row(
            str(n.example_id),
            f"{n.similarity:.3f}",
            f"{n.weight:.2f}",
            pb.Source.Name(n.source).removeprefix("SOURCE_").lower(),
            escape(n.route or "-"),
            escape(what or "-"),
            escape(n.text_snippet[:80]) if not n.contains_pii else "(personal data, not shown)",
        )
    console.print(neighbours)
    if response.strategy == pb.STRATEGY_CASCADE:
        plan = " → ".join(step.model for step in response.cascade.steps)
        console.print(escape(f"cascade: {plan}; {response.cascade.acceptance}"))


def render_stats(stats: RoutingStats, console: Console | None = None) -> None:
    console = console or Console()
    scope = stats.namespace or "all namespaces"
    console.print(
        f"[bold]{escape(scope)}[/bold], last {stats.window_hours:g}h: {stats.decisions} decisions, "
        f"cold-start rate {stats.cold_start_rate:.1%}, escalation rate "
        f"{stats.escalation_rate:.1%}"
    )
    strategies = ", ".join(f"{k} {v}" for k, v in sorted(stats.decisions_by_strategy.items()))
    console.print(escape(f"by strategy: {strategies or '-'}"))
    for title, groups in (("per model", stats.by_model), ("per tenant", stats.by_tenant)):
        table = Table(title=f"outcomes {title}")
        for column in ("key", "outcomes", "mean quality", "success rate", "cost $"):
            table.add_column(column)
        for g in groups:
            table.add_row(
                escape(g.key or "(none)"),
                str(g.outcomes),
                f"{g.mean_quality:.3f}",
                f"{g.success_rate:.1%}",
                f"{g.cost_usd:.6f}",
            )
        console.print(table)
