"""Metrics stay bounded when clients send many tenant names."""

from __future__ import annotations

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
