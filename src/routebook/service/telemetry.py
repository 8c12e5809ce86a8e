"""What an operator sees: Prometheus metrics and one JSON line per decision.

Each App has its own CollectorRegistry, so two servers in one process (as in the tests) count
separately. Query text never reaches the log unless `log_query_text` is on, and never for a
request marked `contains_pii`, nor for one whose text is a history example marked so (the
router's caller says which: service/routing.py; a line's `contains_pii` is then true).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from routebook.domain import Decision, Strategy
from routebook.embed.batcher import MicroBatcher
from routebook.embed.cache import CachedEmbedder
from routebook.errors import ConfigError
from routebook.index import IndexRegistry
from routebook.service.drift import DriftWatch
from routebook.service.heads import HeadBook

#: An outcome at or above this quality counts as a success in the per-model success metric.
SUCCESS_QUALITY = 0.5

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A Decide that policy refused, as the metrics and the decision log show it."""

    namespace: str
    #: The gRPC status code's name in lower case: resource_exhausted, failed_precondition or
    #: permission_denied.
    code: str
    #: The rules that refused it: `budget` past the budget, every rule that removed a model
    #: when none is left, the rules that removed an overridden model.
    rules: tuple[str, ...]
    #: The message the caller got.
    reason: str
    #: Every rule that acted on the request (those that refused it and any other that removed
    #: a model), each counted once in the policy-rule hits.
    acted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DecideTimings:
    """Where one Decide's time went, so an operator can tell a slow model from a slow index."""

    total_s: float
    embed_s: float
    search_s: float


class DecisionLog:
    """Appends JSON lines to a stream or a file; `None` target means off."""

    def __init__(self, target: str | None) -> None:
        self._lock = threading.Lock()
        self._owned: TextIO | None = None
        self._stream: TextIO | None
        if not target:
            self._stream = None
        elif target == "-":
            self._stream = sys.stderr
        else:
            try:
                self._owned = self._stream = open(target, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(
                    f"decision_log {target!r} cannot be opened for appending: {exc.strerror}; "
                    "give a file in an existing folder, - (stderr) or '' (off)"
                ) from None

    def write(self, record: dict[str, object]) -> None:
        if self._stream is None:
            return
        try:
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN or infinity, which JSON has not: a reader would refuse the line
            line = json.dumps(_finite(record), ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float made null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


#: Distinct tenants a process labels its cost metrics with; later ones are counted as
#: OVERFLOW_TENANT_LABEL. Tenant names come from clients, and each label value is a time
#: series kept for good.
MAX_TENANT_LABELS = 1000
#: The label of the tenants past the cap. A tenant may be named anything (up to 128
#: characters), so no plain name is safe from a real tenant ("other" was one): a tenant whose
#: name starts with "~" is labelled with one more "~", which leaves "~other" to the overflow.
OVERFLOW_TENANT_LABEL = "~other"


class Telemetry:
    def __init__(
        self,
        decision_log: DecisionLog,
        log_query_text: bool = False,
        max_tenant_labels: int = MAX_TENANT_LABELS,
    ) -> None:
        self.registry = CollectorRegistry()
        self._log = decision_log
        self._log_query_text = log_query_text
        self._max_tenant_labels = max_tenant_labels
        self._tenant_labels: set[str] = set()
        self._tenant_lock = threading.Lock()
        r = self.registry
        self.decisions = Counter(
            "routebook_decisions",
            "Decisions made.",
            ["namespace", "strategy", "model"],
            registry=r,
        )
        self.cold_starts = Counter(
            "routebook_cold_starts",
            "Decisions that were cold starts (CASCADE).",
            ["namespace"],
            registry=r,
        )
        self.overrides = Counter(
            "routebook_overrides",
            "Explicit overrides allowed.",
            ["namespace", "model"],
            registry=r,
        )
        self.policy_hits = Counter(
            "routebook_policy_rule_hits",
            "Policy rules that acted on a Decide: removed models from its candidates, or "
            "refused it (a refused Decide's rules count too).",
            ["namespace", "rule"],
            registry=r,
        )
        self.refusals = Counter(
            "routebook_decides_refused",
            "Decides refused by policy, by gRPC code (resource_exhausted: past the budget with "
            "when_exhausted reject; failed_precondition: policy leaves no model; "
            "permission_denied: a forbidden override) and the rules that refused them "
            "(comma-separated).",
            ["namespace", "code", "rule", "tenant"],
            registry=r,
        )
        self.estimated_cost = Counter(
            "routebook_estimated_cost_usd",
            "Estimated cost of the decided calls.",
            ["namespace", "model", "tenant"],
            registry=r,
        )
        self.reported_cost = Counter(
            "routebook_reported_cost_usd",
            "Cost reported with outcomes.",
            ["namespace", "model", "tenant"],
            registry=r,
        )
        self.outcomes = Counter(
            "routebook_outcomes",
            "Outcomes reported, by result (quality >= 0.5 is success).",
            ["namespace", "model", "result"],
            registry=r,
        )
        self.escalations = Counter(
            "routebook_escalations",
            "Outcomes for another model than the decision chose (a cascade or fallback step).",
            ["namespace", "model"],
            registry=r,
        )
        self.rule_regex_timeouts = Counter(
            "routebook_rule_regex_timeouts",
            "Rule regular expressions that ran out of time.",
            ["namespace", "rule"],
            registry=r,
        )
        self.failures = Counter(
            "routebook_failures",
            "Failed model calls reported, by kind.",
            ["namespace", "model", "kind"],
            registry=r,
        )
        self.cooldowns = Counter(
            "routebook_cooldowns",
            "Cooldowns started.",
            ["namespace", "model"],
            registry=r,
        )
        self.history_expired_examples = Counter(
            "routebook_history_examples_expired",
            "History examples deleted because their newest outcome was older than "
            "history_days (by this server's sweep; their outcomes stay, detached).",
            ["namespace"],
            registry=r,
        )
        self.decide_latency = Histogram(
            "routebook_decide_latency_seconds",
            "Time to answer Decide, in the server.",
            ["namespace"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decide_stage = Histogram(
            "routebook_decide_stage_seconds",
            "Time of one stage of Decide: embed (the cache, the wait for a micro-batch and the "
            "model) or search (the index).",
            ["namespace", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_indexes(self, registry: IndexRegistry) -> None:
        """Index sizes are read at scrape time, for every namespace the registry holds."""
        registry_ref = registry

        class _Sizes(Collector):
            def collect(self) -> Iterable[Metric]:
                family = GaugeMetricFamily(
                    "routebook_index_size",
                    "Examples in the namespace's index.",
                    labels=["namespace"],
                )
                for namespace in registry_ref.namespaces():
                    family.add_metric([namespace], float(len(registry_ref.get(namespace))))
                yield family

        self.registry.register(_Sizes())

    def watch_embedder(self, batcher: MicroBatcher, cache: CachedEmbedder | None) -> None:
        """Query-embedding counters are read at scrape time: nothing is added to a Decide."""
        batcher_ref, cache_ref = batcher, cache

        class _Embedding(Collector):
            def collect(self) -> Iterable[Metric]:
                calls = CounterMetricFamily(
                    "routebook_embed_model_calls",
                    "Model calls made for query texts (one per micro-batch).",
                )
                calls.add_metric([], batcher_ref.batches)
                texts = CounterMetricFamily(
                    "routebook_embed_texts",
                    "Query texts the model embedded; over model calls, the mean micro-batch size.",
                )
                texts.add_metric([], batcher_ref.texts)
                yield calls
                yield texts
                if cache_ref is not None:
                    lookups = CounterMetricFamily(
                        "routebook_embed_cache_lookups",
                        "Query texts looked up in the embedding cache, by result.",
                        labels=["result"],
                    )
                    lookups.add_metric(["hit"], cache_ref.hits)
                    lookups.add_metric(["miss"], cache_ref.misses)
                    yield lookups

        self.registry.register(_Embedding())

    def watch_heads(self, heads: HeadBook) -> None:
        """Learned heads' failed trainings, read at scrape time: a head that cannot train keeps
        its old one (or none) and backs off, and this is where an operator sees it."""
        heads_ref = heads

        class _Heads(Collector):
            def collect(self) -> Iterable[Metric]:
                failures = CounterMetricFamily(
                    "routebook_head_training_failures",
                    "Trainings of a namespace's learned head that failed (the old head is kept).",
                    labels=["namespace"],
                )
                in_a_row = GaugeMetricFamily(
                    "routebook_head_failures_in_a_row",
                    "Failed trainings of the namespace's head since it last trained; while above "
                    "0 it is tried again only after a back-off, or when its data changes.",
                    labels=["namespace"],
                )
                for namespace, (total, now) in sorted(heads_ref.failures().items()):
                    failures.add_metric([namespace], total)
                    in_a_row.add_metric([namespace], now)
                yield failures
                yield in_a_row

        self.registry.register(_Heads())

    def watch_drift(self, drift: DriftWatch, registry: IndexRegistry) -> None:
        """Drift figures are computed at scrape time from the watch's windows."""
        drift_ref, registry_ref = drift, registry

        class _Drift(Collector):
            def collect(self) -> Iterable[Metric]:
                psi = GaugeMetricFamily(
                    "routebook_drift_psi",
                    "PSI of top similarity, current vs reference.",
                    labels=["namespace"],
                )
                cold = GaugeMetricFamily(
                    "routebook_drift_cold_start_rate",
                    "Cold-start rate per drift window.",
                    labels=["namespace", "window"],
                )
                for namespace in registry_ref.namespaces():
                    report = drift_ref.report(namespace)
                    psi.add_metric([namespace], report.psi)
                    cold.add_metric([namespace, "reference"], report.reference.cold_start_rate)
                    cold.add_metric([namespace, "current"], report.current.cold_start_rate)
                yield psi
                yield cold

        self.registry.register(_Drift())

    def decided(
        self,
        decision: Decision,
        tenant: str,
        timings: DecideTimings,
        query_text: str,
        contains_pii: bool = False,
    ) -> None:
        """Count the decision and log it. The query text goes in only with `log_query_text`,
        and never for a request marked `contains_pii` (a log often leaves the premises)."""
        choice = decision.choice
        ns = decision.namespace
        self.decisions.labels(ns, choice.strategy.value, choice.model).inc()
        if choice.strategy is Strategy.CASCADE:
            self.cold_starts.labels(ns).inc()
        if choice.strategy is Strategy.OVERRIDE:
            self.overrides.labels(ns, choice.model).inc()
        for effect in choice.policy:
            if not effect.removed:
                continue  # named in the evidence (every model cooling), but it removed nothing
            self.policy_hits.labels(ns, effect.rule).inc()
        self.estimated_cost.labels(ns, choice.model, self._tenant_label(tenant)).inc(
            choice.estimated_cost_usd
        )
        self.decide_latency.labels(ns).observe(timings.total_s)
        self.decide_stage.labels(ns, "embed").observe(timings.embed_s)
        self.decide_stage.labels(ns, "search").observe(timings.search_s)
        record: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "decision_id": decision.decision_id,
            "namespace": ns,
            "tenant": tenant,
            "strategy": choice.strategy.value,
            "model": choice.model,
            "route": choice.route,
            "top_similarity": round(choice.top_similarity, 4),
            "confidence": round(choice.confidence, 4),
            "rules": [effect.rule for effect in choice.policy],
            "reason_code": choice.reason_code.value,
            "reason": choice.reason,
            "latency_ms": round(timings.total_s * 1000, 3),
            "embed_ms": round(timings.embed_s * 1000, 3),
            "search_ms": round(timings.search_s * 1000, 3),
            "estimated_cost_usd": choice.estimated_cost_usd,
            "index_generation": decision.index_generation,
            "contains_pii": contains_pii,
        }
        self._write(record, query_text, contains_pii)

    def refused(
        self,
        refusal: Refusal,
        tenant: str,
        latency_s: float,
        query_text: str,
        contains_pii: bool = False,
    ) -> None:
        """A Decide policy refused: counted, its rules' hits too, and one log line. The line has
        `refused` (the gRPC code, lower case) and no decision_id: no decision was made. Its
        query text, as a decision's, only with `log_query_text` and never when marked PII."""
        ns = refusal.namespace
        self.refusals.labels(
            ns, refusal.code, ",".join(refusal.rules), self._tenant_label(tenant)
        ).inc()
        for rule in refusal.acted:
            self.policy_hits.labels(ns, rule).inc()
        record: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "refused": refusal.code,
            "namespace": ns,
            "tenant": tenant,
            "rules": list(refusal.rules),
            "reason": refusal.reason,
            "latency_ms": round(latency_s * 1000, 3),
            "contains_pii": contains_pii,
        }
        self._write(record, query_text, contains_pii)

    @property
    def logs_query_text(self) -> bool:
        """Whether an unmarked request's log line shows its text (`log_query_text`)."""
        return self._log_query_text

    def _write(self, record: dict[str, object], query_text: str, contains_pii: bool) -> None:
        """One log line; the query text in it only with `log_query_text`, never when PII."""
        if self._log_query_text and not contains_pii:
            record["query"] = query_text
        self._log.write(record)

    def rule_timeouts(self, namespace: str, rules: tuple[str, ...]) -> None:
        for rule in rules:
            self.rule_regex_timeouts.labels(namespace, rule).inc()

    def failed(self, namespace: str, model: str, kind: str, *, started: bool) -> None:
        """`started`: this failure started a cooldown (extending one is not another)."""
        self.failures.labels(namespace, model, kind).inc()
        if started:
            self.cooldowns.labels(namespace, model).inc()

    def recorded(
        self,
        namespace: str,
        model: str,
        quality: float,
        cost_usd: float,
        tenant: str,
        escalated: bool,
    ) -> None:
        result = "success" if quality >= SUCCESS_QUALITY else "failure"
        self.outcomes.labels(namespace, model, result).inc()
        self.reported_cost.labels(namespace, model, self._tenant_label(tenant)).inc(cost_usd)
        if escalated:
            self.escalations.labels(namespace, model).inc()

    def history_expired(self, namespace: str, count: int) -> None:
        self.history_expired_examples.labels(namespace).inc(count)

    def _tenant_label(self, tenant: str) -> str:
        """The tenant as a label value: the first `max_tenant_labels` distinct ones keep their
        name (the decision log and `routebook stats` always have it; one starting with "~"
        gets another "~" in front), the rest are OVERFLOW_TENANT_LABEL, which no tenant's
        label can equal."""
        label = "~" + tenant if tenant.startswith("~") else tenant
        with self._tenant_lock:
            if tenant in self._tenant_labels:
                return label
            if len(self._tenant_labels) < self._max_tenant_labels:
                self._tenant_labels.add(tenant)
                return label
        return OVERFLOW_TENANT_LABEL
