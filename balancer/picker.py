"""Pickers: choose the endpoint for one request.

A picker is built from the READY endpoints with a positive effective weight
and rebuilt by the cluster whenever that set or a weight changes, so `pick`
does no filtering. Every policy gives each endpoint a share of new requests
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
    """Power of two choices: sample two endpoints by weight, keep the cheaper one.

    Sampling by weight (rather than uniformly) is what makes shares follow
    weights when the endpoints are idle and every cost ties; the cost divides by
    weight so that under load, too, a heavier endpoint carries more.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        cost: Callable[[Endpoint, float], float],
    ) -> None:
        self._sample = WeightedRandom(endpoints, rng)
        self._single = endpoints[0] if len(endpoints) == 1 else None
        self._empty = not endpoints
        self._cost = cost

    def pick(self, now_s: float) -> Endpoint | None:
        if self._empty:
            return None
        if self._single is not None:
            return self._single
        a = self._sample.pick(now_s)
        b = self._sample.pick(now_s)
        for _ in range(3):  # a second distinct candidate, most of the time
            if b is not a:
                break
            b = self._sample.pick(now_s)
        assert a is not None and b is not None
        cost = self._cost
        return b if cost(b, now_s) < cost(a, now_s) else a


def least_request_cost(ep: Endpoint, now_s: float) -> float:
    return (len(ep.calls) + 1) / ep.effective_weight


def peak_ewma_cost(ep: Endpoint, now_s: float) -> float:
    return ep.ewma.estimate_s(now_s) * (len(ep.calls) + 1) / ep.effective_weight


def build_picker(policy: str, endpoints: Sequence[Endpoint], rng: random.Random) -> Picker:
    """A picker for `policy` over `endpoints`, which must all have a positive weight."""
    if policy == "round_robin":
        return RoundRobin(endpoints, rng)
    if policy == "random":
        return WeightedRandom(endpoints, rng)
    if policy == "least_request":
        return PowerOfTwo(endpoints, rng, least_request_cost)
    if policy == "peak_ewma":
        return PowerOfTwo(endpoints, rng, peak_ewma_cost)
    raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
