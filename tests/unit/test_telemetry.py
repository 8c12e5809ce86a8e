"""Metrics stay bounded when clients send many tenant names; the decision log is JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from routebook.service.telemetry import OVERFLOW_TENANT_LABEL, DecisionLog, Telemetry


def _cost(telemetry: Telemetry, tenant_label: str) -> float | None:
    labels = {"namespace": "ns", "model": "small", "tenant": tenant_label}
    value: float | None = telemetry.registry.get_sample_value(
        "routebook_reported_cost_usd_total", labels
    )
    return value


def test_tenants_past_the_label_limit_are_counted_as_other() -> None:
    telemetry = Telemetry(DecisionLog(None), max_tenant_labels=3)
    for n, tenant in enumerate(["a", "b", "c", "d", "e", "a"]):
        telemetry.recorded("ns", "small", 1.0, float(n + 1), tenant, escalated=False)

    def cost(tenant: str) -> float | None:
        return _cost(telemetry, tenant)

    assert [cost(t) for t in ("a", "b", "c")] == [1.0 + 6.0, 2.0, 3.0]  # "a" keeps its label
    assert cost("d") is None and cost("e") is None
    assert cost(OVERFLOW_TENANT_LABEL) == 4.0 + 5.0


def test_no_tenant_shares_the_overflow_label() -> None:
    """Black-box review 2, finding 10: the overflow bucket was labelled "other", and a real
    tenant named "other" landed in the same series as the tenants past the cap."""
    telemetry = Telemetry(DecisionLog(None), max_tenant_labels=3)
    for n, tenant in enumerate(["other", "~other", "~~other", "late-1", "late-2"]):
        telemetry.recorded("ns", "small", 1.0, float(n + 1), tenant, escalated=False)
    assert _cost(telemetry, "other") == 1.0  # a tenant's own name, alone in its series
    assert _cost(telemetry, "~~other") == 2.0  # "~other", one "~" more
    assert _cost(telemetry, "~~~other") == 3.0
    assert _cost(telemetry, OVERFLOW_TENANT_LABEL) == 4.0 + 5.0  # only the tenants past the cap


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
