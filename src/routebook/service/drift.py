"""Drift watch: is today's traffic still like the traffic the router was tuned on?

Per namespace, the first `reference_size` decisions after start form the reference window and
the last `window` decisions the current one. Decisions on an empty index are left out (every one
is cold: a reference made of them could never look worse), and the reference starts again when
the namespace serves a new index generation (a reindex changes the similarities themselves) or
when an operator asks (`routebook admin drift --rebaseline`, after a deliberate change). The
windows live in memory: a restart starts a new reference. Compared: the distribution of
top-neighbour similarity (population stability index and Kolmogorov-Smirnov statistic), the
cold-start rate, and per-model success from outcomes. Crossing a level logs one warning saying
what moved ("cold-start rate 4% → 19% since 09:12; top similarity median 0.71 → 0.52"); it
warns again only after the figures came back under the level.

Only the harmful direction counts: cold starts up, similarity down, success down. The index
grows with every reported outcome, so on unchanged traffic similarity rises and cold starts
fall as the router learns; that is the product working, not drift.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

log = logging.getLogger("routebook.drift")


def psi(reference: Sequence[float], current: Sequence[float], bins: int | None = None) -> float:
    """Population stability index over the reference's quantile bins (0: same; > 0.2: moved).
    Small windows get fewer bins (about 25 values a bin), or sampling noise alone reads as
    drift."""
    if bins is None:
        bins = max(3, min(10, min(len(reference), len(current)) // 25))
    if len(reference) < bins or len(current) == 0:
        return 0.0
    edges = np.unique(np.quantile(np.asarray(reference), np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float:
    """The largest gap between the two empirical distribution functions, in [0, 1]."""
    if not reference or not current:
        return 0.0
    a, b = np.sort(np.asarray(reference)), np.sort(np.asarray(current))
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(
        b, points, side="right"
    ) / len(b)
    return float(np.max(np.abs(gap)))


#: Critical value of the two-sample KS test and of the two-proportion z test at alpha = 0.01.
KS_C_ALPHA = 1.628
Z_ALPHA = 2.576


def ks_significant(ks: float, n: int, m: int) -> bool:
    return n > 0 and m > 0 and ks >= KS_C_ALPHA * float(np.sqrt((n + m) / (n * m)))


def rates_differ(p1: float, n: int, p2: float, m: int) -> bool:
    """Two-proportion z test: is the change of rate more than sampling noise?"""
    if n == 0 or m == 0:
        return False
    pooled = (p1 * n + p2 * m) / (n + m)
    spread = float(np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m)))
    return spread > 0 and abs(p1 - p2) / spread >= Z_ALPHA


@dataclass(frozen=True, slots=True)
class DriftLevels:
    psi: float = 0.2
    cold_start_delta: float = 0.10
    success_delta: float = 0.15


@dataclass(frozen=True, slots=True)
class WindowStats:
    decisions: int
    cold_start_rate: float
    top_similarity_median: float
    success_by_model: dict[str, float]
    #: How many outcomes each success rate is over (models with 10 or more).
    outcomes_by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriftReport:
    namespace: str
    reference: WindowStats
    current: WindowStats
    psi: float
    ks: float
    drifted: bool
    moved: list[str]
    reference_since: str


@dataclass(slots=True)
class _Window:
    similarity: deque[float]
    cold: deque[bool]
    outcomes: dict[str, deque[bool]] = field(default_factory=dict)

    def stats(self) -> WindowStats:
        n = len(self.similarity)
        return WindowStats(
            decisions=n,
            cold_start_rate=(sum(self.cold) / n) if n else 0.0,
            top_similarity_median=float(np.median(self.similarity)) if n else 0.0,
            success_by_model={
                m: sum(v) / len(v) for m, v in sorted(self.outcomes.items()) if len(v) >= 10
            },
            outcomes_by_model={m: len(v) for m, v in sorted(self.outcomes.items()) if len(v) >= 10},
        )


class DriftWatch:
    def __init__(
        self, reference_size: int = 500, window: int = 500, levels: DriftLevels | None = None
    ) -> None:
        self._reference_size = reference_size
        self._window = window
        self._levels = levels or DriftLevels()
        self._reference: dict[str, _Window] = {}
        self._current: dict[str, _Window] = {}
        self._since: dict[str, datetime] = {}
        #: The index generation each namespace's windows were observed on.
        self._generation: dict[str, int] = {}
        self._warned: set[str] = set()
        # A full report sorts both windows: run it every `check_every` decisions, not on each.
        self._check_every = max(1, window // 20)
        self._unchecked: dict[str, int] = {}
        self._lock = threading.Lock()

    def _windows(self, namespace: str) -> tuple[_Window, _Window]:
        if namespace not in self._reference:
            self._reference[namespace] = _Window(deque(), deque())
            self._current[namespace] = _Window(
                deque(maxlen=self._window), deque(maxlen=self._window)
            )
            self._since[namespace] = datetime.now(UTC)
            self._unchecked.pop(namespace, None)
            self._warned.discard(namespace)
        return self._reference[namespace], self._current[namespace]

    def _forget(self, namespace: str) -> None:
        for windows in (self._reference, self._current, self._since, self._generation):
            windows.pop(namespace, None)

    def observe(
        self,
        namespace: str,
        top_similarity: float,
        cold: bool,
        *,
        generation: int = 0,
        empty_index: bool = False,
    ) -> None:
        """One decision, made on index `generation` of the namespace."""
        if empty_index:
            return
        with self._lock:
            if self._generation.get(namespace, generation) != generation:
                log.info(
                    "namespace %s: drift reference starts again: now serving index generation %d",
                    namespace,
                    generation,
                )
                self._forget(namespace)
            self._generation[namespace] = generation
            reference, current = self._windows(namespace)
            if len(reference.similarity) < self._reference_size:
                reference.similarity.append(top_similarity)
                reference.cold.append(cold)
                return
            current.similarity.append(top_similarity)
            current.cold.append(cold)
            unchecked = self._unchecked.get(namespace, 0) + 1
            due = len(current.similarity) >= self._window and unchecked >= self._check_every
            self._unchecked[namespace] = 0 if due else unchecked
        if due:
            self._check(namespace)

    def outcome(self, namespace: str, model: str, success: bool) -> None:
        with self._lock:
            reference, current = self._windows(namespace)
            target = reference if len(reference.similarity) < self._reference_size else current
            target.outcomes.setdefault(model, deque(maxlen=self._window)).append(success)

    def rebaseline(self, namespace: str) -> None:
        """Start a new reference with the next decisions (after a deliberate change)."""
        with self._lock:
            self._forget(namespace)
        log.info("namespace %s: drift reference starts again, as asked", namespace)

    def report(self, namespace: str) -> DriftReport:
        """The figures so far; reading them changes nothing (a scrape starts no window)."""
        with self._lock:
            reference = self._reference.get(namespace) or _Window(deque(), deque())
            current = self._current.get(namespace) or _Window(deque(), deque())
            ref, cur = reference.stats(), current.stats()
            score = psi(list(reference.similarity), list(current.similarity))
            ks = ks_statistic(list(reference.similarity), list(current.similarity))
            since = self._since.get(namespace)
        # A figure has moved when it is past its level AND past sampling noise (alpha 0.01).
        moved = []
        n, m = ref.decisions, cur.decisions
        if (
            m
            and cur.cold_start_rate - ref.cold_start_rate >= self._levels.cold_start_delta
            and rates_differ(ref.cold_start_rate, n, cur.cold_start_rate, m)
        ):
            moved.append(f"cold-start rate {ref.cold_start_rate:.0%} → {cur.cold_start_rate:.0%}")
        if (
            score >= self._levels.psi
            and ks_significant(ks, n, m)
            and cur.top_similarity_median < ref.top_similarity_median
        ):
            moved.append(
                f"top similarity median {ref.top_similarity_median:.2f} → "
                f"{cur.top_similarity_median:.2f} (PSI {score:.2f})"
            )
        for model, success in cur.success_by_model.items():
            before = ref.success_by_model.get(model)
            if (
                before is not None
                and before - success >= self._levels.success_delta
                and rates_differ(
                    before, ref.outcomes_by_model[model], success, cur.outcomes_by_model[model]
                )
            ):
                moved.append(f"{model} success {before:.0%} → {success:.0%}")
        return DriftReport(
            namespace,
            ref,
            cur,
            score,
            ks,
            bool(moved),
            moved,
            since.isoformat(timespec="seconds") if since is not None else "",
        )

    def _check(self, namespace: str) -> None:
        report = self.report(namespace)
        with self._lock:
            already = namespace in self._warned
            if report.drifted and not already:
                self._warned.add(namespace)
            elif not report.drifted:
                self._warned.discard(namespace)
        if report.drifted and not already:
            log.warning(
                "namespace %s drifted: %s since %s",
                namespace,
                "; ".join(report.moved),
                report.reference_since,
            )
