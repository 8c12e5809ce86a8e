"""Drift watch: is today's traffic still like the traffic the router was tuned on?

Per namespace, the first `reference_size` decisions form the reference window and the last
`window` decisions the current one. Decisions on an empty index are left out (every one is
cold: a reference made of them could never look worse), and the reference starts again when the
namespace serves a new index generation (a reindex changes the similarities themselves) or when
an operator asks (`routebook admin drift --rebaseline`, after a deliberate change). A frozen
reference is kept in the store (service/drift_keeper.py), so a restart, or another replica,
compares with it instead of freezing a new one from traffic that may have drifted already; the
current window lives in memory and fills again after a restart. Compared: the distribution of
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from routebook.store.drift import StoredReference, new_token

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
    #: Set when a reference window is frozen (full, or adopted from the store): it names this
    #: reference, so a server can tell the stored row it holds from a new one.
    token: str = ""

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
        #: Per namespace: the token of the store's row when last read or written (None: no row).
        self._seen: dict[str, str | None] = {}
        #: Called (outside the lock) when a reference is frozen: the keeper writes it at once.
        self.on_freeze: Callable[[], None] = lambda: None
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
            froze = due = False
            if not reference.token:
                reference.similarity.append(top_similarity)
                reference.cold.append(cold)
                froze = len(reference.similarity) >= self._reference_size
                if froze:
                    reference.token = new_token()
            else:
                current.similarity.append(top_similarity)
                current.cold.append(cold)
                unchecked = self._unchecked.get(namespace, 0) + 1
                due = len(current.similarity) >= self._window and unchecked >= self._check_every
                self._unchecked[namespace] = 0 if due else unchecked
        if froze:
            self.on_freeze()
        elif due:
            self._check(namespace)

    def outcome(self, namespace: str, model: str, success: bool) -> None:
        with self._lock:
            reference, current = self._windows(namespace)
            target = current if reference.token else reference
            target.outcomes.setdefault(model, deque(maxlen=self._window)).append(success)

    def rebaseline(self, namespace: str, *, marker: str | None = None) -> None:
        """Start a new reference with the next decisions (after a deliberate change); `marker`
        is the token of the store's row that records the rebaseline."""
        with self._lock:
            self._forget(namespace)
            if marker is not None:
                self._seen[namespace] = marker
        log.info("namespace %s: drift reference starts again, as asked", namespace)

    # -- in step with the store (service/drift_keeper.py does the reading and writing) -----

    def held(self, namespace: str) -> str:
        """The token of the namespace's frozen reference; "" while it fills."""
        with self._lock:
            reference = self._reference.get(namespace)
            return reference.token if reference is not None else ""

    def reconcile(
        self, namespace: str, stored: StoredReference | None, generation: int
    ) -> StoredReference | None:
        """Bring the namespace's reference in step with the store's row for this server's
        embedding model, the namespace now serving index `generation`. Returns this server's
        frozen reference when it is to be written: there is no row, the row is a rebaseline
        marker this server knew of, or a reference of an older generation.

        A stored reference of the serving generation is adopted, even over one this server
        froze itself (the first written wins, so replicas compare with the same one); a new
        marker (a rebaseline on another server) starts the reference again here too."""
        with self._lock:
            seen = self._seen.get(namespace)
            self._seen[namespace] = stored.token if stored is not None else None
            mine = self._frozen(namespace, generation)
            if stored is None:
                return mine
            if mine is not None and mine.token == stored.token:
                return None
            if not stored.frozen:
                if stored.token != seen:
                    self._forget(namespace)
                    log.info(
                        "namespace %s: drift reference starts again: rebaselined elsewhere",
                        namespace,
                    )
                    return None
                return mine
            if stored.generation == generation:
                self._adopt(namespace, stored)
                return None
            return mine if stored.generation < generation else None

    def unsaved(self) -> bool:
        """Whether a frozen reference may not be in the store yet."""
        with self._lock:
            return any(
                reference.token and reference.token != self._seen.get(namespace)
                for namespace, reference in self._reference.items()
            )

    def saved(self, namespace: str, token: str) -> None:
        """The store's row now holds the reference named `token`."""
        with self._lock:
            self._seen[namespace] = token

    def _frozen(self, namespace: str, generation: int) -> StoredReference | None:
        reference = self._reference.get(namespace)
        if (
            reference is None
            or not reference.token
            or self._generation.get(namespace, generation) != generation
        ):
            return None
        return StoredReference(
            reference.token,
            generation,
            self._since[namespace],
            frozen=True,
            top_similarity=tuple(reference.similarity),
            cold=tuple(reference.cold),
            outcomes={m: tuple(v) for m, v in sorted(reference.outcomes.items())},
        )

    def _adopt(self, namespace: str, stored: StoredReference) -> None:
        if self._generation.get(namespace, stored.generation) != stored.generation:
            self._forget(namespace)  # windows of another generation: nothing to keep
        reference, current = self._windows(namespace)
        if not reference.token:
            # Decisions this server gathered for a reference of its own are recent ones: they
            # count in the current window.
            current.similarity.extend(reference.similarity)
            current.cold.extend(reference.cold)
            for model, successes in reference.outcomes.items():
                current.outcomes.setdefault(model, deque(maxlen=self._window)).extend(successes)
        self._reference[namespace] = _Window(
            deque(stored.top_similarity),
            deque(stored.cold),
            {m: deque(v, maxlen=self._window) for m, v in stored.outcomes.items()},
            token=stored.token,
        )
        self._since[namespace] = stored.since
        self._generation[namespace] = stored.generation
        self._warned.discard(namespace)
        log.info(
            "namespace %s: drift reference of %d decisions since %s taken from the store",
            namespace,
            len(stored.top_similarity),
            stored.since.isoformat(timespec="seconds"),
        )

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
