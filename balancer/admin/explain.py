"""Why each endpoint gets its share: the picker's inputs, read, never changed.

The admin API's snapshot carries, per endpoint, what the picker weighs (slow start's
factor, effective weight, the policy's load signal, peak EWMA's latency penalty), the
share of new requests that follows, and the ejection history. `expected_shares` is
the one formula for that share, which the dashboard's what-if preview uses too: every
policy gives a READY endpoint effective weight ÷ the sum (DESIGN.md "Weights"); for
least_request and peak_ewma that holds at equal load, and an endpoint carrying more
than its part, or slower, gets less.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balancer.picker import least_request_cost

if TYPE_CHECKING:
    from balancer.cluster import Cluster
    from balancer.endpoint import Endpoint

WEIGHTS = "weights"
AT_EQUAL_LOAD = "weights at equal load"
SHARE_BASIS = {
    "round_robin": WEIGHTS,
    "random": WEIGHTS,
    "least_request": AT_EQUAL_LOAD,
    "peak_ewma": AT_EQUAL_LOAD,
}
# Floor of a latency estimate decayed towards 0 (as the picker's): no division by 0.
_MIN_LATENCY_S = 1e-6


@dataclass(frozen=True, slots=True)
class Explanation:
    """One endpoint's "why". Times are the balancer's clock (seconds)."""

    slow_start_factor: float
    slow_start_ends_s: float | None
    expected_share: float
    load: float
    fast_failure_load: float
    latency_penalty: float
    last_ejected_s: float | None
    last_ejection_reason: str


def share_basis(policy: str) -> str:
    """How shares follow from weights under `policy`, in words."""
    return SHARE_BASIS.get(policy, WEIGHTS)


def expected_shares(weights: Mapping[str, float]) -> dict[str, float]:
    """Each key's share of new requests from its effective weight: weight ÷ the sum of
    the positive ones; 0 for a weight of 0 (or when no weight is positive)."""
    total = sum(w for w in weights.values() if w > 0)
    return {key: w / total if total > 0 and w > 0 else 0.0 for key, w in weights.items()}


def explain_cluster(cluster: Cluster, now_s: float) -> dict[str, Explanation]:
    """Every endpoint of `cluster` by id, as the picker sees it at `now_s`.

    An endpoint the picker routes to has a positive effective weight (`Cluster.rebuild`
    sets 0 for every other), so the shares come from the effective weights alone.
    """
    endpoints = list(cluster.endpoints.values())  # copied: a scrape thread may read this
    shares = expected_shares({ep.id: ep.effective_weight for ep in endpoints})
    routed = [ep for ep in endpoints if ep.effective_weight > 0]
    fastest_s = min((_latency_s(ep, now_s) for ep in routed), default=None)
    margin = 1 + cluster.config.peak_ewma.tolerance
    return {
        ep.id: Explanation(
            slow_start_factor=cluster.slow_start_factors.get(ep.id, 1.0),
            slow_start_ends_s=cluster.slow_start_ends_s(ep),
            expected_share=shares[ep.id],
            load=_load(cluster.policy, ep, now_s),
            fast_failure_load=ep.failure_load.value(now_s),
            latency_penalty=_penalty(cluster.policy, ep, now_s, fastest_s, margin),
            last_ejected_s=ep.last_ejected_s,
            last_ejection_reason=ep.last_ejection_reason,
        )
        for ep in endpoints
    }


def _latency_s(ep: Endpoint, now_s: float) -> float:
    return max(ep.ewma.estimate_s(now_s), _MIN_LATENCY_S)


def _load(policy: str, ep: Endpoint, now_s: float) -> float:
    """What the policy compares: see admin.proto's `EndpointSnapshot.load`."""
    if policy == "least_request":
        return least_request_cost(ep, now_s)
    if policy == "peak_ewma":
        return _latency_s(ep, now_s) * 1000 * (ep.in_flight + 1)
    return float(ep.in_flight)


def _penalty(
    policy: str, ep: Endpoint, now_s: float, fastest_s: float | None, margin: float
) -> float:
    """peak_ewma only: how much slower than the fastest routed endpoint, beyond the
    tolerance (`LoadWeighted._slowness`); 1 for the others."""
    if policy != "peak_ewma" or fastest_s is None:
        return 1.0
    return max(1.0, _latency_s(ep, now_s) / (fastest_s * margin))
