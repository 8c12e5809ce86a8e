"""Metrics stay bounded when clients send many tenant names; the decision log is JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from routebook.service.telemetry import DecisionLog, Telemetry


def test_tenants_past_the_label_limit_are_counted_as_other() -> None:
    telemetry = Telemetry(DecisionLog(None), max_tenant_labels=3)
    for n, tenant in enumerate(["a", "b", "c", "d", "e", "a"]):
        telemetry.recorded("ns", "small", 1.0, float(n + 1), tenant, escalated=False)

    def cost(tenant: str) -> float | None:
        labels = {"namespace": "ns", "model": "small", "tenant": tenant}
        value: float | None = telemetry.registry.get_sample_value(
            "routebook_reported_cost_usd_total", labels
        )
        return value

    assert [cost(t) for t in ("a", "b", "c")] == [1.0 + 6.0, 2.0, 3.0]  # "a" keeps its label
    assert cost("d") is None and cost("e") is None
    assert cost("other") == 4.0 + 5.0


def _strict(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_a_decision_log_line_is_strict_json_even_with_a_non_finite_number(
    tmp_path: Path,
) -> None:
    """An infinite estimated cost was written as Infinity, which no JSON reader accepts."""
    path = tmp_path / "decisions.log"
    log = DecisionLog(str(path))
    log.write({"model": "small", "estimated_cost_usd": math.inf, "estimates": [{"p": math.nan}]})
    log.write({"model": "small", "estimated_cost_usd": 0.5})
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed = [json.loads(line, parse_constant=_strict) for line in lines]
    assert parsed[0] == {"model": "small", "estimated_cost_usd": None, "estimates": [{"p": None}]}
    assert parsed[1]["estimated_cost_usd"] == 0.5
