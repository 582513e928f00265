"""Load clients' counters and the snapshots `LoadGenerator.stats()` returns.

Latency goes into a histogram with the balancer's bucket bounds: memory stays
fixed however long the demo runs, clients' histograms add up, and quantiles
read the same as the balancer's and the dashboard's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from balancer.stats import LATENCY_BOUNDS_MS, quantile_ms

_BOUNDS_S = tuple(b / 1000 for b in LATENCY_BOUNDS_MS)


@dataclass(frozen=True)
class Latency:
    """A latency histogram over LATENCY_BOUNDS_MS (+Inf last), with its exact sum and max."""

    counts: tuple[int, ...]
    sum_s: float
    max_s: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile (0..1), interpolated inside its bucket; None when empty."""
        return quantile_ms(self.counts, q)

    def summary(self) -> dict[str, float | int | None]:
        """Count, mean, p50, p90, p99 and max, in ms (None when there was no call)."""
        count = self.count
        return {
            "count": count,
            "mean_ms": self.sum_s * 1000 / count if count else None,
            "p50_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": self.max_s * 1000 if count else None,
        }

    @staticmethod
    def merge(latencies: Iterable[Latency]) -> Latency:
        latencies = list(latencies)
        counts = [sum(c) for c in zip(*(x.counts for x in latencies), strict=True)]
        return Latency(
            counts=tuple(counts) or (0,) * (len(_BOUNDS_S) + 1),
            sum_s=sum(x.sum_s for x in latencies),
            max_s=max((x.max_s for x in latencies), default=0.0),
        )


@dataclass(frozen=True)
class ClientStats:
    """One client's counts since the generator started or was last reset.

    Every tick of the schedule is `attempted`: it is `sent` or `skipped` (the
    in-flight cap was reached). A sent call is `in_flight` until it ends with a
    status code in `codes`. `methods` counts sent calls by method; `pods`
    counts OK calls by the pod named in the answer. `latency` covers every
    ended call, failed ones included (a deadline is part of the experience).
    """

    name: str
    target: str
    attempted: int
    sent: int
    skipped: int
    in_flight: int
    codes: Mapping[str, int]
    methods: Mapping[str, int]
    pods: Mapping[str, int]
    latency: Latency

    @property
    def completed(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    @property
    def errors(self) -> int:
        return self.completed - self.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            **_totals(self),
            "codes": dict(self.codes),
            "methods": dict(self.methods),
            "pods": dict(self.pods),
            "latency_ms": self.latency.summary(),
        }


@dataclass(frozen=True)
class LoadStats:
    """All clients' counts over a window of `elapsed_s` (since start or reset)."""

    elapsed_s: float
    clients: tuple[ClientStats, ...]

    @property
    def attempted(self) -> int:
        return sum(c.attempted for c in self.clients)

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.clients)

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.clients)

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.clients)

    @property
    def completed(self) -> int:
        return sum(c.completed for c in self.clients)

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.clients)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.clients)

    @property
    def codes(self) -> dict[str, int]:
        return dict(_add(c.codes for c in self.clients))

    @property
    def methods(self) -> dict[str, int]:
        return dict(_add(c.methods for c in self.clients))

    @property
    def pods(self) -> dict[str, int]:
        """OK calls per pod, all clients together, sorted by pod name."""
        return dict(sorted(_add(c.pods for c in self.clients).items()))

    @property
    def latency(self) -> Latency:
        return Latency.merge(c.latency for c in self.clients)

    def client(self, name: str) -> ClientStats:
        """The named client's stats; raises KeyError."""
        for client in self.clients:
            if client.name == name:
                return client
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: totals, codes, methods, pods, latency, then each client."""
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            **_totals(self),
            "rate_per_s": round(self.completed / self.elapsed_s, 1) if self.elapsed_s else None,
            "codes": self.codes,
            "methods": self.methods,
            "pods": self.pods,
            "latency_ms": self.latency.summary(),
            "clients": [c.to_dict() for c in self.clients],
        }


def _totals(stats: ClientStats | LoadStats) -> dict[str, int]:
    names = ("attempted", "sent", "skipped", "in_flight", "completed", "ok", "errors")
    return {name: getattr(stats, name) for name in names}


def _add(counts: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return total


class ClientCounters:
    """A client's mutable counters; `snapshot()` freezes them into ClientStats."""

    def __init__(self) -> None:
        self.attempted = 0
        self.skipped = 0
        self.methods: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.pods: Counter[str] = Counter()
        self.latency_counts = [0] * (len(_BOUNDS_S) + 1)
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0

    def record(self, code: str, pod: str | None, latency_s: float) -> None:
        """One ended call: its status code name, the pod that answered (OK only), its latency."""
        self.codes[code] += 1
        if pod:
            self.pods[pod] += 1
        self.latency_counts[bisect_left(_BOUNDS_S, latency_s)] += 1
        self.latency_sum_s += latency_s
        self.latency_max_s = max(self.latency_max_s, latency_s)

    def snapshot(self, name: str, target: str, in_flight: int) -> ClientStats:
        return ClientStats(
            name=name,
            target=target,
            attempted=self.attempted,
            sent=sum(self.methods.values()),
            skipped=self.skipped,
            in_flight=in_flight,
            codes=dict(self.codes),
            methods=dict(self.methods),
            pods=dict(sorted(self.pods.items())),
            latency=Latency(tuple(self.latency_counts), self.latency_sum_s, self.latency_max_s),
        )
