"""Pickers: choose the endpoint for one request.

A picker is built from the READY endpoints with a positive effective weight
(in panic, from every non-drained endpoint that can connect: see
`Cluster.rebuild`) and rebuilt by the cluster whenever that set or a weight
changes, so `pick` does no filtering. Every policy gives each endpoint a share of new requests
that follows effective weight / sum of effective weights.
"""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Protocol

from balancer.endpoint import Endpoint

POLICIES = ("round_robin", "least_request", "peak_ewma", "random")


class Picker(Protocol):
    def pick(self, now_s: float) -> Endpoint | None:
        """Returns the endpoint for the next request, or None when there is none."""


class RoundRobin:
    """Smooth weighted round robin as earliest-deadline-first (Envoy's EDF scheduler).

    Each endpoint is due every 1/weight; the earliest deadline goes next. Equal
    weights give plain round robin; 1:2:5 interleaves instead of bursting.
    A random start offset keeps replicas of the balancer from all starting on
    the same endpoint.
    """

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._heap = [(rng.random() / ep.effective_weight, i, ep) for i, ep in enumerate(endpoints)]
        heapq.heapify(self._heap)

    def pick(self, now_s: float) -> Endpoint | None:
        if not self._heap:
            return None
        deadline, i, ep = self._heap[0]
        heapq.heapreplace(self._heap, (deadline + 1 / ep.effective_weight, i, ep))
        return ep


class WeightedRandom:
    """Picks endpoint i with probability weight_i / sum of weights."""

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._endpoints = list(endpoints)
        self._cumulative = list(itertools.accumulate(ep.effective_weight for ep in endpoints))
        self._total = self._cumulative[-1] if self._cumulative else 0.0
        self._random = rng.random

    def pick(self, now_s: float) -> Endpoint | None:
        if not self._endpoints:
            return None
        i = bisect_right(self._cumulative, self._random() * self._total)
        return self._endpoints[min(i, len(self._endpoints) - 1)]


class PowerOfTwo:
    """Power of two choices over equally weighted endpoints: of two random ones, the cheaper.

    Used only when every weight is equal: two choices cannot honour unequal
    weights (an endpoint with more than half the weight would have to be in
    more than every pair), so `LoadWeighted` takes over then, as Envoy's least
    request switches to a weighted scheduler.

    The second candidate must be cheaper by more than `tolerance` (a fraction)
    to win; otherwise the first, drawn uniformly, goes. See `PeakEwmaConfig`.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        cost: Callable[[Endpoint, float], float],
        tolerance: float = 0.0,
    ) -> None:
        self._endpoints = list(endpoints)
        self._randrange = rng.randrange
        self._cost = cost
        self._margin = 1 + tolerance

    def pick(self, now_s: float) -> Endpoint | None:
        endpoints = self._endpoints
        n = len(endpoints)
        if n < 2:
            return endpoints[0] if endpoints else None
        i = self._randrange(n)
        j = self._randrange(n - 1)
        a, b = endpoints[i], endpoints[j + (j >= i)]  # two distinct endpoints, uniformly
        return b if self._cost(b, now_s) * self._margin < self._cost(a, now_s) else a


class LoadWeighted:
    """Unequal weights: weighted random by weight ÷ load, the load computed at each pick.

    Load is what an endpoint carries beyond its fair part of the calls in flight
    (`weight / total weight × all in flight`), with one call of slack, per unit of
    weight. Measuring it against the fair part, rather than against zero, keeps
    shares on the weights at light load, where one call in flight on a light
    endpoint is already more than its fraction of a call (a penalty from zero
    measured 0.024 off at 1:2:5). A backed-up endpoint still gets less. With
    `latency` (peak EWMA), one slower than the fastest by more than `tolerance`
    also gets less, in proportion. `load` is what an endpoint carries (calls in
    flight; least_request adds its recent fast failures). O(n) per pick: fine for
    a service's pods.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        latency: Callable[[Endpoint, float], float] | None = None,
        tolerance: float = 0.0,
        load: Callable[[Endpoint, float], float] | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        self._weights = [ep.effective_weight for ep in endpoints]
        total = sum(self._weights)
        self._fractions = [w / total for w in self._weights]
        self._per_weight = [total / len(endpoints) / w for w in self._weights]
        self._random = rng.random
        self._latency = latency
        self._margin = 1 + tolerance
        self._load = load or calls_in_flight

    def _slowness(self, now_s: float) -> list[float]:
        """Per endpoint: its latency ÷ the fastest's (with the margin), at least 1."""
        if self._latency is None:
            return [1.0] * len(self._endpoints)
        latencies = [self._latency(ep, now_s) for ep in self._endpoints]
        floor = min(latencies) * self._margin
        return [max(1.0, latency / floor) for latency in latencies]

    def pick(self, now_s: float) -> Endpoint | None:
        calls = [self._load(ep, now_s) for ep in self._endpoints]
        in_flight = sum(calls)
        shares = [
            w / (slow * (1 + max(0.0, n - in_flight * fraction - 1) * k))
            for w, n, fraction, k, slow in zip(
                self._weights, calls, self._fractions, self._per_weight, self._slowness(now_s),
                strict=True,
            )
        ]  # fmt: skip
        target = self._random() * sum(shares)
        for ep, share in zip(self._endpoints, shares, strict=True):
            target -= share
            if target < 0:
                return ep
        return self._endpoints[-1]


def calls_in_flight(ep: Endpoint, now_s: float) -> float:
    return len(ep.calls)


def least_request_cost(ep: Endpoint, now_s: float) -> float:
    """Calls in flight plus recent fast failures: a pod failing fast must not look idle."""
    return len(ep.calls) + ep.failure_load.value(now_s)


def peak_ewma_cost(ep: Endpoint, now_s: float) -> float:
    return _latency(ep, now_s) * (len(ep.calls) + 1)


def _latency(ep: Endpoint, now_s: float) -> float:
    # Floored: an estimate decayed towards 0 over a long idle time must not divide by 0.
    return max(ep.ewma.estimate_s(now_s), 1e-6)


def build_picker(
    policy: str, endpoints: Sequence[Endpoint], rng: random.Random, *, tolerance: float = 0.0
) -> Picker:
    """A picker for `policy` over `endpoints`, which must all have a positive weight.

    `tolerance` applies to peak_ewma: latency costs within that fraction count as equal.
    """
    if policy == "round_robin":
        return RoundRobin(endpoints, rng)
    if policy == "random":
        return WeightedRandom(endpoints, rng)
    equal = len({ep.effective_weight for ep in endpoints}) <= 1
    if policy == "least_request":
        if equal:
            return PowerOfTwo(endpoints, rng, least_request_cost)
        return LoadWeighted(endpoints, rng, load=least_request_cost)
    if policy == "peak_ewma":
        if equal:
            return PowerOfTwo(endpoints, rng, peak_ewma_cost, tolerance)
        return LoadWeighted(endpoints, rng, _latency, tolerance)
    raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
